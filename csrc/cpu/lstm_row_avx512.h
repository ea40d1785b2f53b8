// The float32 LSTM forward units of step_cpu.cpp, written with AVX-512
// intrinsics: a fast special case of cell_units.h's forward_unit (tested
// against it). The compiler's vectorisation of cells.h spends a divide and a
// bit-built exp per gate; here exp scales by 2^k with one instruction and 1/x
// is a 14-bit estimate and one Newton step.
#pragma once

#include <cstdint>

#include "../cell_units.h"

namespace rnnkit {

using LstmForwardUnits = void (*)(ForwardRow<float> row, int64_t n);

// The units for this CPU, or null where it has no AVX-512 (or not x86-64).
LstmForwardUnits lstm_forward_units_avx512(bool save, bool project);

// Largest difference between these units and forward_unit over n units of
// random pre-activations (a test hook: -1 where there is no AVX-512 here).
double lstm_forward_units_avx512_max_error(int64_t n, uint32_t seed);

}  // namespace rnnkit
