// The float32 LSTM forward row of step_cpu.cpp, written with AVX-512
// intrinsics. The compiler's vectorisation of cells.h spends a divide and a
// bit-built exp per gate; here exp scales by 2^k with one instruction and 1/x
// is a 14-bit estimate and one Newton step: about half the instructions, and
// measured at B=64, H=256 the cell went from 2.6-2.9 to 2.4 ms a sequence
// (the rest is loads and stores). Same arguments as lstm_forward_row.
#pragma once

#include <cstdint>

namespace rnnkit {

using LstmForwardRowF32 = void (*)(int64_t n, int64_t H, int64_t X, int64_t S, const float* gx,
                                   const float* gh, const float* b_hh, float* c, float* h_next,
                                   float* y, float* saved);

// The row for this CPU, or null where it has no AVX-512 (or not x86-64).
LstmForwardRowF32 lstm_forward_row_avx512(bool save, bool project);

}  // namespace rnnkit
