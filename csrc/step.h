// What the sequence driver hands a device for one time step, and how the
// devices register their step kernels. Raw pointers only: the CUDA side
// compiles without torch/extension.h, and no step allocates.
//
// Layouts (all contiguous, row-major):
//   time-ordered  (T, B, X): indexed by each row's own time t
//   step buffers  (B, X):    the rows as the recurrent GEMM sees them
// A row b at step s works on time t = time_of(...): s going forward,
// len_b - 1 - s in reverse; once s >= len_b the row has finished and only
// carries its state (forward) or its gradient (backward) through.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

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
  const void* gx;      // (T,B,G) x W_ih^T + b_ih
  const void* gh;      // (B,G)   h_prev W_hh^T
  const void* b_hh;    // (G) or null
  const void* h_prev;  // (B,P)
  void* h_next;        // (B,P)   written here unless there is a projection
  void* r;             // (B,H)   projection only: o * tanh(c), the GEMM's input
  void* c;             // (B,H)   LSTM cell state, updated in place
  void* y;             // (T,B,P) written here unless there is a projection
  void* saved;         // (T,B,saved_count*H) for backward, or null
};

// After the projection GEMM wrote h_next = r W_hr^T for every row: copy it to
// y for running rows, and put h_prev back for finished ones.
struct ProjectStep {
  StepShape shape;
  const void* h_prev;  // (B,P)
  void* h_next;        // (B,P)
  void* y;             // (T,B,P)
};

struct BackwardStep {
  StepShape shape;
  const void* dy;      // (T,B,P) or null
  const void* dh;      // (B,P) gradient reaching h from later steps
  const void* dr;      // (B,H) projection only: gradient of o*tanh(c); replaces dh + dy
  void* dc;            // (B,H) LSTM, updated in place
  const void* h0;      // (B,P) GRU: h before step 0
  const void* c0;      // (B,H) LSTM: c before step 0
  const void* y;       // (T,B,P) GRU/RNN: the hidden states
  const void* saved;   // (T,B,saved_count*H)
  void* dgx;           // (T,B,G) gradient of the input-side pre-activations
  void* dgh;           // (T,B,G) GRU hidden side; same pointer as dgx otherwise
  void* dg_step;       // (B,G)   this step's hidden-side gradients, for dh_prev
  void* dh_next;       // (B,P)   direct part of dh_prev; the driver adds dg_step W_hh
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

// The GEMM the time loop runs every step with the same weight:
// out (M,N) = in (M,K) · op(W), or += when accumulate; op(W) = W^T for a
// (N,K) weight (forward), W for a (K,N) one (backward). All contiguous.
struct StepGemm {
  c10::ScalarType dtype;
  int64_t M, N, K;
  const void* in;
  const void* weight;
  bool transposed;
  void* out;
  bool accumulate;
};

// A whole forward time loop that a device runs by itself (the CPU splits the
// hidden units across its threads, one barrier per step). `step` holds the
// pointers as for one step, but for h_prev, h_next and gh, which the loop
// sets: it reads h0 from h_cur and leaves the final state there; h_spare and
// gh are scratch. With step.gx null, the loop computes each step's input
// projections itself from x and w_ih, x_t W_ih^T with no bias, or returns
// false where it would not.
struct ForwardLoop {
  ForwardStep step;
  void* h_cur;       // (B,P)
  void* h_spare;     // (B,P)
  void* gh;          // (B,G)
  const void* w_hh;  // (G,P) contiguous
  const void* x;     // (T,B,I) contiguous
  const void* w_ih;  // (G,I) contiguous
  int64_t I;
};

// The backward time loop a device runs by itself, the mirror of ForwardLoop
// (no projection). `step` holds the pointers as for one step, but for dh,
// dh_next and dg_step, which the loop sets: it reads grad_hn from dh_cur and
// leaves the gradient of h0 there; dh_spare and the two dg buffers are
// scratch (one step's gate gradients are read while the next step's are
// written).
struct BackwardLoop {
  BackwardStep step;
  void* dh_cur;         // (B,P)
  void* dh_spare;       // (B,P)
  void* dg_step[2];     // (B,G) each
  const void* w_hh;     // (G,P) contiguous
};

struct StepKernels {
  void (*forward)(const ForwardStep&);
  void (*project)(const ProjectStep&);
  void (*backward)(const BackwardStep&);
  void (*project_backward)(const ProjectBackwardStep&);
  // A device's own call for the step GEMM, or null to use ATen's mm.
  void (*gemm)(const StepGemm&);
  // Runs the forward time loop and returns true, or returns false where it
  // does not apply (the driver then runs it step by step); may be null.
  bool (*forward_loop)(const ForwardLoop&);
  // Likewise for the backward time loop; may be null.
  bool (*backward_loop)(const BackwardLoop&);
};

// Each device file registers its kernels at load time.
void register_step_kernels(c10::DeviceType device, const StepKernels* kernels);
const StepKernels& step_kernels_for(c10::DeviceType device);

}  // namespace rnnkit
