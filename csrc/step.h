// What one time step of a layer looks like to a device's step kernels, and
// the kernels a device provides for the step loop (step_loop.cpp). Raw
// pointers only: the CUDA side compiles without torch/extension.h, and no
// step allocates.
//
// Layouts (all contiguous, row-major):
//   time-ordered  (T, B, X): indexed by each row's own time t
//   step buffers  (B, X):    the rows as the recurrent GEMM sees them
// A row b at step s works on time t = time_of(...): s going forward,
// len_b - 1 - s in reverse; once s >= len_b the row has finished and only
// carries its state (forward) or its gradient (backward) through.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "cells.h"

namespace rnnkit {

struct StepShape {
  CellKind kind;
  c10::ScalarType dtype;
  int64_t step, T, B, H, P;  // P: width of h (proj_size, else H)
  bool reverse;
  const int64_t* lengths;    // (B) on the device, or null: every row runs T steps
};

// Time index of row b at step s, or -1 once the row has finished.
RNNKIT_HD int64_t time_of(const StepShape& s, int64_t b) {
  int64_t len = s.lengths ? s.lengths[b] : s.T;
  len = len > s.T ? s.T : len;
  if (s.step >= len) return -1;
  return s.reverse ? len - 1 - s.step : s.step;
}

struct ForwardStep {
  StepShape shape;
  const void* gx;      // (T,B,G) input projections
  const void* gh;      // (B,G)   h_prev W_hh^T
  const void* bias;    // the cell's bias (cell_units.h: cell_bias_width)
  const void* h_prev;  // (B,P)
  void* h_next;        // (B,P)   written here unless there is a projection
  void* r;             // (B,H)   projection only: o * tanh(c), the GEMM's input
  void* c;             // (B,H)   LSTM cell state, updated in place ...
  const void* c_prev;  // (B,H)   ... or, where given, read from here and written to c
  void* y;             // (T,B,P) written here unless there is a projection
  void* saved;         // (T,B,saved_width) for backward, or null
};

// After the projection GEMM wrote h_next = r W_hr^T for every row: copy it to
// y (and the saved state) for running rows, put h_prev back for finished ones.
struct ProjectStep {
  StepShape shape;
  const void* h_prev;  // (B,P)
  void* h_next;        // (B,P)
  void* y;             // (T,B,P)
  void* saved;         // (T,B,saved_width) or null
};

struct BackwardStep {
  StepShape shape;
  const void* dy;      // (T,B,P) or null
  const void* dh;      // (B,P) gradient reaching h from later steps
  const void* dr;      // (B,H) projection only: gradient of o*tanh(c); replaces dh + dy
  void* dc;            // (B,H) LSTM, updated in place
  const void* h0;      // (B,P) GRU: h before step 0
  const void* c0;      // (B,H) LSTM: c before step 0
  const void* saved;   // (T,B,saved_width)
  void* dgx;           // (T,B,G) gradient of the input-side pre-activations
  void* dgh;           // (T,B,G) GRU hidden side; same pointer as dgx otherwise
  void* dg_step;       // (B,G)   this step's hidden-side gradients, for dh_prev
  void* dh_next;       // (B,P)   direct part of dh_prev; the loop adds dg_step W_hh
  void* r_seq;         // (T,B,H) projection only: o*tanh(c) for dW_hr
};

// With a projection: dhp = dh + dy for running rows, kept time-ordered for
// dW_hr and as a step buffer for dr = dhp W_hr.
struct ProjectBackwardStep {
  StepShape shape;
  const void* dy;      // (T,B,P) or null
  const void* dh;      // (B,P)
  void* dhp_seq;       // (T,B,P)
  void* dhp_step;      // (B,P)
};

// The GEMM a time loop runs every step with the same weight, prepared once
// per call (packed, or its library handle looked up): out (rows, N) =
// in (rows, K) · W^T for a (N, K) weight (forward), · W for a (K, N) one
// (backward); or += when accumulating.
class StepGemm {
 public:
  virtual ~StepGemm() = default;
  virtual void run(const at::Tensor& in, at::Tensor& out, bool accumulate) const = 0;
};

// A device's kernels for the step loop: one fused pass over the rows of a
// step for each job, and its step GEMM.
class StepKernels {
 public:
  virtual ~StepKernels() = default;
  virtual void forward(const ForwardStep& step) const = 0;
  virtual void project(const ProjectStep& step) const = 0;
  virtual void backward(const BackwardStep& step) const = 0;
  virtual void project_backward(const ProjectBackwardStep& step) const = 0;
  // `calls`: how many times the loop will run it (packing pays only for many).
  virtual std::unique_ptr<StepGemm> step_gemm(const at::Tensor& weight, bool transposed,
                                              int64_t rows, int64_t calls) const = 0;
};

// ATen's mm: the step GEMM of a device with none of its own.
std::unique_ptr<StepGemm> aten_step_gemm(const at::Tensor& weight, bool transposed);

}  // namespace rnnkit
