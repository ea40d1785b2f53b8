// What a caller hands the persistent kernels: raw pointers, sizes, strides.
// One launch runs one layer's whole time loop for one or both directions.
//
// Layouts follow the engine: weights (G, H) row-major with the gates in blocks
// of H (gate k of unit j is row k*H + j); sequences (T, B, X) time-major and
// indexed by each row's own time; per-row states (B, H). Every pointer holds
// elements of the launch's dtype except `lengths` (int64 on the device). The
// caller computes the input projections gx = x W_ih^T + b_ih before the loop,
// and dW/dx/db from dgx/dgh after it.
#pragma once

#include "types.h"

namespace rnnkit {
namespace persistent {

// One direction of a forward launch.
struct ForwardDirection {
  const void* gx;      // (T, B, G) input projections, b_ih included
  const void* w_hh;    // (G, H)
  const void* b_hh;    // (G), or null for none
  const void* h0;      // (B, H)
  const void* c0;      // (B, H), LSTM only
  void* y;             // (T, B, y_stride): h_t at [t][b][0, H); zero past a row's end
  int64_t y_stride;    // H for a plain output, 2H for one half of a bidirectional one
  void* h_n;           // (B, H) final state (each row's own last step)
  void* c_n;           // (B, H) LSTM only
  // Training only; null for inference (nothing is saved). Per unit j of row b
  // at time t, at [t][b][k*H + j]: LSTM i, f, g, o, c; GRU r, z, n, W_hn h + b_hn.
  void* saved;
  int64_t saved_stride;  // >= saved_count(cell) * H
  void* h_saved;         // (T, B, h_saved_stride): h_t of every step, or null
  int64_t h_saved_stride;
  bool reverse;
};

struct ForwardArgs {
  CellKind cell;
  DType dtype;
  int64_t T, B, H;
  const int64_t* lengths;  // (B) on the device, or null: every row runs T steps
  int32_t dirs;            // 1, or 2 for both directions of a layer in one launch
  ForwardDirection dir[2];
  // A software barrier that waits longer than this many SM clock cycles sets
  // the error record and ends the launch (0: the default, about 2 s).
  int64_t watchdog_cycles;
};

// One direction of a backward launch.
struct BackwardDirection {
  const void* w_hh;     // (G, H)
  const void* dy;       // (T, B, dy_stride) gradient of y, or null
  int64_t dy_stride;
  const void* grad_hn;  // (B, H), or null for zero
  const void* grad_cn;  // (B, H) LSTM, or null for zero
  const void* h0;       // (B, H) GRU: the state before a row's first step
  const void* c0;       // (B, H) LSTM
  const void* saved;    // what the forward saved (ForwardDirection::saved)
  int64_t saved_stride;
  const void* h_seq;    // (T, B, h_seq_stride) h_t of every step (y or h_saved): GRU, RNN
  int64_t h_seq_stride;
  // (T, B, G) gradients of the pre-activations, zero past a row's end. dgx is
  // the input side (for dx, dW_ih, db_ih); dgh the hidden side (for dW_hh,
  // db_hh), which differs only for GRU's n gate: null except for GRU.
  void* dgx;
  void* dgh;
  void* dh0;  // (B, H) gradient of h0
  void* dc0;  // (B, H) LSTM: gradient of c0
  bool reverse;
};

struct BackwardArgs {
  CellKind cell;
  DType dtype;
  int64_t T, B, H;
  const int64_t* lengths;
  int32_t dirs;
  BackwardDirection dir[2];
  int64_t watchdog_cycles;
};

}  // namespace persistent
}  // namespace rnnkit
