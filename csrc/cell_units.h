// One hidden unit of one row at one step: what every kernel on every device
// does for a unit (load the gates, the cell math of cells.h, store h, c, y
// and what backward keeps), and the layout of what training keeps. A kernel
// only picks rows, times and units; the CPU rows, the CUDA step kernels and
// the persistent kernels all call these.
//
// The *Row structs hold pointers at unit 0 of one row (or of the block of
// units a caller owns); gate k of unit j sits at k * stride + j.
#pragma once

#include <ATen/OpMathType.h>

#include <type_traits>

#include "cells.h"
#include "step.h"

namespace rnnkit {

// ---- what training keeps for backward, per (time, row) ------------------
// LSTM: i, f, g, o, c (H each), then h (P); GRU: r, z, n, W_hn h + b_hn (H
// each), then h; RNN: h. The hidden state is kept here rather than read back
// from the output, so that a caller may change the output in place before
// backward (as torch.nn allows).
RNNKIT_HD int64_t saved_gate_count(CellKind kind) {
  return kind == CellKind::LSTM ? 5 : kind == CellKind::GRU ? 4 : 0;
}
RNNKIT_HD int64_t saved_h_offset(CellKind kind, int64_t H) { return saved_gate_count(kind) * H; }
RNNKIT_HD int64_t saved_width(CellKind kind, int64_t H, int64_t P) {
  return saved_h_offset(kind, H) + P;
}

// The bias a cell adds, `cell_bias_width` values: for each gate the sum of
// what goes beside gx + gh (b_hh, plus b_ih where gx was computed without
// it); GRU's n gate takes b_hn inside r * (...), and its input-side b_in
// follows the G gate values (zero where gx already holds it).
RNNKIT_HD int64_t cell_bias_width(CellKind kind, int64_t H) {
  return (gate_count(kind) + (kind == CellKind::GRU ? 1 : 0)) * H;
}

// Where one step's gates sit for a block of units: row b at time t starts at
// data + (t * rows_per_time + b) * row, and gate k of the block's unit j is k
// * gate + j from there. rows_per_time is B for a time-ordered (T, B, G)
// buffer and 0 for a buffer that holds only the current step.
template <class T>
struct GateRows {
  T* data;
  int64_t row, gate, rows_per_time;
  RNNKIT_HD T* at(int64_t t, int64_t b) const { return data + (t * rows_per_time + b) * row; }
};

// ---- forward ---------------------------------------------------------------

template <class T>
struct ForwardRow {
  const T* gx;      // input projections, gate stride gx_gate
  const T* gh;      // h_prev W_hh^T, gate stride gh_gate
  const T* bias;    // cell_bias_width values, gate stride H
  const T* h_prev;  // GRU: the state the step starts from
  const T* c_prev;  // LSTM: the cell state the step starts from ...
  T* c;             // ... and where the new one goes (the same buffer, or not)
  T* h;             // the new state; with a projection o * tanh(c), the GEMM's input
  T* y;             // this time's output (unused with a projection)
  T* saved;         // this time's saved row, or null when nothing is kept
  int64_t gx_gate, gh_gate, H;
};

template <class T, CellKind K, bool Save, bool Project>
RNNKIT_HD void forward_unit(const ForwardRow<T>& r, int64_t j) {
  using A = at::opmath_type<T>;
  const int64_t H = r.H, X = r.gx_gate, S = r.gh_gate;
  if constexpr (K == CellKind::LSTM) {
    A i, f, g, o, c, h;
    lstm_forward<A>(A(r.gx[j]) + A(r.gh[j]) + A(r.bias[j]),
                    A(r.gx[X + j]) + A(r.gh[S + j]) + A(r.bias[H + j]),
                    A(r.gx[2 * X + j]) + A(r.gh[2 * S + j]) + A(r.bias[2 * H + j]),
                    A(r.gx[3 * X + j]) + A(r.gh[3 * S + j]) + A(r.bias[3 * H + j]),
                    A(r.c_prev[j]), i, f, g, o, c, h);
    r.c[j] = T(c);
    r.h[j] = T(h);
    if (!Project) r.y[j] = T(h);
    if (Save) {
      r.saved[j] = T(i);
      r.saved[H + j] = T(f);
      r.saved[2 * H + j] = T(g);
      r.saved[3 * H + j] = T(o);
      r.saved[4 * H + j] = T(c);
      if (!Project) r.saved[5 * H + j] = T(h);  // with a projection: project_unit
    }
  } else if constexpr (K == CellKind::GRU) {
    const A h_n = A(r.gh[2 * S + j]) + A(r.bias[2 * H + j]);
    A rr, z, n, h;
    gru_forward<A>(A(r.gx[j]), A(r.gx[X + j]), A(r.gx[2 * X + j]) + A(r.bias[3 * H + j]),
                   A(r.gh[j]) + A(r.bias[j]), A(r.gh[S + j]) + A(r.bias[H + j]), h_n,
                   A(r.h_prev[j]), rr, z, n, h);
    r.h[j] = T(h);
    r.y[j] = T(h);
    if (Save) {
      r.saved[j] = T(rr);
      r.saved[H + j] = T(z);
      r.saved[2 * H + j] = T(n);
      r.saved[3 * H + j] = T(h_n);
      r.saved[4 * H + j] = T(h);
    }
  } else {
    const A h = rnn_forward<A>(K, A(r.gx[j]) + A(r.gh[j]) + A(r.bias[j]));
    r.h[j] = T(h);
    r.y[j] = T(h);
    if (Save) r.saved[j] = T(h);
  }
}

// A finished row carries its state: h (and c, left in place) stay as they
// were. Not with a projection, where project_unit does it.
template <class T>
RNNKIT_HD void carry_forward_unit(const T* h_prev, T* h, int64_t j) {
  h[j] = h_prev[j];
}

// After the projection GEMM wrote h = r W_hr^T (P wide) for every row: a
// running row keeps it as its output (and saved state), a finished row puts
// its state back. One row, unit j of P.
template <class T>
struct ProjectRow {
  bool running;
  const T* h_prev;
  T* h;
  T* y;        // this time's output (running rows)
  T* saved_h;  // this time's saved state, or null
};

template <class T>
RNNKIT_HD ProjectRow<T> project_row(const ProjectStep& a, int64_t b) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, P = s.P, t = time_of(s, b), tb = (t < 0 ? 0 : t) * B + b;
  T* saved = static_cast<T*>(a.saved);
  return {t >= 0, static_cast<const T*>(a.h_prev) + b * P, static_cast<T*>(a.h_next) + b * P,
          static_cast<T*>(a.y) + tb * P,
          saved ? saved + tb * saved_width(s.kind, s.H, P) + saved_h_offset(s.kind, s.H) : nullptr};
}

template <class T>
RNNKIT_HD void project_unit(const ProjectRow<T>& r, int64_t j) {
  if (!r.running) {
    r.h[j] = r.h_prev[j];
    return;
  }
  r.y[j] = r.h[j];
  if (r.saved_h) r.saved_h[j] = r.h[j];
}

// The pointers of row b at time t (t >= 0) of a forward step, units from u0
// on; gx and gh already point at unit u0 of their blocks.
template <class T>
RNNKIT_HD ForwardRow<T> forward_row(const ForwardStep& a, GateRows<const T> gx, GateRows<const T> gh,
                                    int64_t b, int64_t t, int64_t u0) {
  const StepShape& s = a.shape;
  const int64_t H = s.H, P = s.P, tb = t * s.B + b;
  const int64_t W = saved_width(s.kind, H, P);
  const bool project = a.r != nullptr;
  T* saved = static_cast<T*>(a.saved);
  return {gx.at(t, b),
          gh.at(t, b),
          static_cast<const T*>(a.bias) + u0,
          static_cast<const T*>(a.h_prev) + b * P + u0,
          a.c ? static_cast<const T*>(a.c_prev ? a.c_prev : a.c) + b * H + u0 : nullptr,
          a.c ? static_cast<T*>(a.c) + b * H + u0 : nullptr,
          project ? static_cast<T*>(a.r) + b * H + u0 : static_cast<T*>(a.h_next) + b * P + u0,
          static_cast<T*>(a.y) + tb * P + u0,
          saved ? saved + tb * W + u0 : nullptr,
          gx.gate,
          gh.gate,
          H};
}

// ---- backward --------------------------------------------------------------

template <class T>
struct BackwardRow {
  const T* dh;      // gradient reaching h from later steps (with a projection: dr)
  const T* dy;      // gradient of this time's output, or null
  T* dc;            // LSTM: gradient of c, updated in place
  const T* saved;   // this time's saved row
  const T* c_prev;  // LSTM: c the step started from
  const T* h_prev;  // GRU: h the step started from
  T* dgx;           // gradient of the input-side pre-activations (time-ordered)
  T* dgh;           // GRU: hidden side (time-ordered); the same as dgx otherwise
  T* dg_step;       // this step's hidden-side gradients, the dh_prev GEMM's input
  T* dh_prev;       // the direct part of dh_prev: GRU's z * dh, zero otherwise
  T* r_seq;         // projection: o * tanh(c), for dW_hr
  int64_t H;
};

template <class T, CellKind K, bool HasDy, bool Project>
RNNKIT_HD void backward_unit(const BackwardRow<T>& r, int64_t j) {
  using A = at::opmath_type<T>;
  const int64_t H = r.H;
  A dh = A(r.dh[j]);
  if (HasDy) dh += A(r.dy[j]);
  if constexpr (K == CellKind::LSTM) {
    A d_i, d_f, d_g, d_o, dc_prev, h;
    lstm_backward<A>(dh, A(r.dc[j]), A(r.saved[j]), A(r.saved[H + j]), A(r.saved[2 * H + j]),
                     A(r.saved[3 * H + j]), A(r.saved[4 * H + j]), A(r.c_prev[j]), d_i, d_f, d_g,
                     d_o, dc_prev, h);
    r.dc[j] = T(dc_prev);
    r.dgx[j] = r.dg_step[j] = T(d_i);
    r.dgx[H + j] = r.dg_step[H + j] = T(d_f);
    r.dgx[2 * H + j] = r.dg_step[2 * H + j] = T(d_g);
    r.dgx[3 * H + j] = r.dg_step[3 * H + j] = T(d_o);
    if (Project) r.r_seq[j] = T(h);
    else r.dh_prev[j] = T(0);  // with a projection the caller zeroes the P-wide row
  } else if constexpr (K == CellKind::GRU) {
    A d_r, d_z, dx_n, dh_n, direct;
    gru_backward<A>(dh, A(r.saved[j]), A(r.saved[H + j]), A(r.saved[2 * H + j]),
                    A(r.saved[3 * H + j]), A(r.h_prev[j]), d_r, d_z, dx_n, dh_n, direct);
    r.dgx[j] = r.dgh[j] = r.dg_step[j] = T(d_r);
    r.dgx[H + j] = r.dgh[H + j] = r.dg_step[H + j] = T(d_z);
    r.dgx[2 * H + j] = T(dx_n);
    r.dgh[2 * H + j] = r.dg_step[2 * H + j] = T(dh_n);
    r.dh_prev[j] = T(direct);
  } else {
    r.dgx[j] = r.dg_step[j] = T(rnn_backward<A>(K, dh, A(r.saved[j])));
    r.dh_prev[j] = T(0);
  }
}

// A finished row passes its gradient through untouched and gives the
// recurrent GEMM nothing. Units j < H of the gate gradients; with a
// projection the P-wide dh is copied by the caller.
template <class T>
RNNKIT_HD void carry_backward_unit(CellKind kind, int64_t H, bool project, const T* dh,
                                   T* dg_step, T* dh_prev, int64_t j) {
  for (int64_t k = 0; k < gate_count(kind); ++k) dg_step[k * H + j] = T(0);
  if (!project) dh_prev[j] = dh[j];
}

// With a projection, before the cell: dhp = dh + dy for a running row, kept
// time-ordered for dW_hr and as this step's GEMM input (dr = dhp W_hr);
// zero for a finished row. One row, unit j of P.
template <class T>
struct ProjectBackwardRow {
  bool running;
  const T* dh;
  const T* dy;  // or null
  T* dhp_seq;
  T* dhp_step;
};

template <class T>
RNNKIT_HD ProjectBackwardRow<T> project_backward_row(const ProjectBackwardStep& a, int64_t b) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, P = s.P, t = time_of(s, b), tb = (t < 0 ? 0 : t) * B + b;
  const T* dy = static_cast<const T*>(a.dy);
  return {t >= 0, static_cast<const T*>(a.dh) + b * P, dy ? dy + tb * P : nullptr,
          static_cast<T*>(a.dhp_seq) + tb * P, static_cast<T*>(a.dhp_step) + b * P};
}

template <class T>
RNNKIT_HD void project_backward_unit(const ProjectBackwardRow<T>& r, int64_t j) {
  using A = at::opmath_type<T>;
  if (!r.running) {
    r.dhp_step[j] = T(0);
    return;
  }
  const A v = A(r.dh[j]) + (r.dy ? A(r.dy[j]) : A(0));
  r.dhp_step[j] = r.dhp_seq[j] = T(v);
}

// The pointers of row b at time t (t >= 0) of a backward step, units from
// u0 on (with a projection only u0 = 0).
template <class T>
RNNKIT_HD BackwardRow<T> backward_row(const BackwardStep& a, int64_t b, int64_t t, int64_t u0) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, G = gate_count(s.kind) * H, tb = t * B + b;
  const int64_t W = saved_width(s.kind, H, P);
  const bool project = a.dr != nullptr;
  // The state the step started from: the row's previous time, or h0 / c0.
  StepShape prev = s;
  prev.step = s.step - 1;
  const int64_t t_prev = s.step == 0 ? -1 : time_of(prev, b);
  const T* saved = static_cast<const T*>(a.saved);
  const T* c_prev = nullptr;
  const T* h_prev = nullptr;
  if (s.kind == CellKind::LSTM) {
    c_prev = t_prev < 0 ? static_cast<const T*>(a.c0) + b * H : saved + (t_prev * B + b) * W + 4 * H;
  } else if (s.kind == CellKind::GRU) {
    h_prev = t_prev < 0 ? static_cast<const T*>(a.h0) + b * P
                        : saved + (t_prev * B + b) * W + saved_h_offset(s.kind, H);
  }
  const T* dy = static_cast<const T*>(a.dy);
  return {project ? static_cast<const T*>(a.dr) + b * H + u0
                  : static_cast<const T*>(a.dh) + b * P + u0,
          dy && !project ? dy + tb * P + u0 : nullptr,  // with a projection dy is inside dr
          a.dc ? static_cast<T*>(a.dc) + b * H + u0 : nullptr,
          saved + tb * W + u0,
          c_prev ? c_prev + u0 : nullptr,
          h_prev ? h_prev + u0 : nullptr,
          static_cast<T*>(a.dgx) + tb * G + u0,
          static_cast<T*>(a.dgh) + tb * G + u0,
          static_cast<T*>(a.dg_step) + b * G + u0,
          static_cast<T*>(a.dh_next) + b * P + u0,
          project ? static_cast<T*>(a.r_seq) + tb * H + u0 : nullptr,
          H};
}

// Calls fn with the cell kind as a compile-time constant (host code).
template <class Fn>
inline void with_kind(CellKind kind, const Fn& fn) {
  using K = CellKind;
  switch (kind) {
    case K::LSTM: return fn(std::integral_constant<K, K::LSTM>{});
    case K::GRU: return fn(std::integral_constant<K, K::GRU>{});
    case K::RNN_TANH: return fn(std::integral_constant<K, K::RNN_TANH>{});
    case K::RNN_RELU: return fn(std::integral_constant<K, K::RNN_RELU>{});
  }
}

}  // namespace rnnkit
