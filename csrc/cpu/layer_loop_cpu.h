// The forward time loop on the CPU in one parallel region: the hidden units
// are split across the threads, each thread keeps the rows of W_hh for its
// units packed in its own cache and runs the GEMM and the cell math for them,
// and the threads meet once per step (the next step's GEMM reads every unit
// of h). Against a step at a time, this saves two fork/joins per step and
// reads each gate the GEMM wrote while it is still in cache.
#pragma once

#include "../step.h"

namespace rnnkit {

// The cell math of rows [b0, b1) and units [u0, u1) of one float32 forward
// step, gh in the layout described at forward_block (step_cpu.cpp).
void forward_block_float(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                         const float* gh, int64_t gh_row, int64_t gh_gate);

// StepKernels::forward_loop for the CPU: float32 without a projection, where
// torch runs ATen's parallel_for on OpenMP and carries MKL.
bool forward_loop_cpu(const ForwardLoop& loop);

}  // namespace rnnkit
