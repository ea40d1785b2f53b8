// The forward time loop on the CPU in one parallel region: the hidden units
// are split across the threads, each thread keeps the rows of W_hh for its
// units packed in its own cache and runs the GEMM and the cell math for them,
// and the threads meet once per step (the next step's GEMM reads every unit
// of h). Against a step at a time, this saves two fork/joins per step and
// reads each gate the GEMM wrote while it is still in cache. Where it can,
// each thread also computes the next step's input projections for its units
// (x_t W_ih^T) while the others finish the step, instead of one T*B*G GEMM
// written to memory and read back. The backward loop is the mirror image:
// each thread runs the cell for its units, the threads meet, and each
// computes its units of dh_prev from the whole step's gate gradients.
#pragma once

#include "../step.h"

namespace rnnkit {

// Where one step's gates sit for a block of units: row b at time t starts at
// data + (t * rows_per_time + b) * row, and gate k of the block's unit j is
// k * gate + j from there. rows_per_time is B for a time-ordered (T, B, G)
// buffer and 0 for a buffer that holds only the current step.
template <class T>
struct GateRows {
  const T* data;
  int64_t row, gate, rows_per_time;
  const T* at(int64_t t, int64_t b) const { return data + (t * rows_per_time + b) * row; }
};

// The cell math of rows [b0, b1) and units [u0, u1) of one float32 forward
// step (step_cpu.cpp); gx and gh start at unit u0.
void forward_block_float(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                         GateRows<float> gx, GateRows<float> gh);

// The cell math of rows [b0, b1) and units [u0, u1) of one float32 backward
// step (step_cpu.cpp).
void backward_block_float(const BackwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1);

// StepKernels::forward_loop and backward_loop for the CPU: float32 without a
// projection, where torch runs ATen's parallel_for on OpenMP and carries MKL.
bool forward_loop_cpu(const ForwardLoop& loop);
bool backward_loop_cpu(const BackwardLoop& loop);

}  // namespace rnnkit
