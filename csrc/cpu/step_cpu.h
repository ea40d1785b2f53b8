// The CPU's step kernels (step_cpu.cpp): one fused pass over the rows of a
// step, rows split across threads, the units of a row in SIMD code. The CPU
// time loops (fused_loop_cpu.cpp) call the same per-block work for the units
// each thread owns.
#pragma once

#include <memory>

#include "../cell_units.h"
#include "../step.h"

namespace rnnkit {

std::unique_ptr<StepKernels> make_cpu_step_kernels();

// The cell work of rows [b0, b1) and units [u0, u1) of one float32 forward
// step; gx and gh point at unit u0 of their blocks.
void forward_block_float(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                         GateRows<const float> gx, GateRows<const float> gh);

// The cell work of rows [b0, b1) and units [u0, u1) of one float32 backward step.
void backward_block_float(const BackwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1);

// The step GEMM on the CPU: for a few calls the small GEMMs on the weight as
// it stands (small_gemm.h); for more, MKL's packed GEMM in float32 where torch
// carries MKL (the weight packed once per call); ATen's mm otherwise.
std::unique_ptr<StepGemm> cpu_step_gemm(const at::Tensor& weight, bool transposed, int64_t rows,
                                        int64_t calls);

}  // namespace rnnkit
