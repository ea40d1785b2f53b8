// CPU step kernels: one fused pass over the rows of a step. Rows are split
// across threads with at::parallel_for; within a row the loop over hidden
// units is plain arithmetic from cells.h that the compiler turns into SIMD
// code, built for AVX-512, AVX2 and baseline x86-64 and picked at load time.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>
#include <type_traits>

// For the cell math below (cells.h included after this line): finite-math-only
// and no-signed-zeros let the clamps inside exp_ become single min/max
// instructions instead of compare-and-blend pairs, which makes the cell loops
// several times faster. Finite results are unchanged.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("finite-math-only", "no-signed-zeros")
#endif
#include "../step_registration.h"
#include "layer_loop_cpu.h"
#include "lstm_row_avx512.h"

// x86-64-v4 is AVX-512, v3 AVX2 + FMA; GCC picks the clone by CPU features
// (clones named after a CPU model would be picked by model, not features).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define RNNKIT_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNNKIT_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RNNKIT_SIMD_CLONES
#endif

// On the loops over a row's units below: the gate blocks of a row (k * H + j)
// never overlap, but with H known only at run time GCC checks each pair of
// blocks written for overlap before it vectorises, and gives up past ten
// pairs (the LSTM backward row writes eight blocks: scalar code, several
// times slower). ivdep tells it the iterations are independent.
#if defined(__GNUC__) && !defined(__clang__)
#define RNNKIT_UNITS_INDEPENDENT _Pragma("GCC ivdep")
#else
#define RNNKIT_UNITS_INDEPENDENT
#endif

namespace rnnkit {
namespace {

// Enough hidden units per task that a thread's start-up cost is repaid.
constexpr int64_t kUnitsPerTask = 16384;

template <class Fn>
void for_rows(const StepShape& s, int64_t units_per_row, const Fn& fn) {
  int64_t grain = std::max<int64_t>(1, kUnitsPerTask / std::max<int64_t>(1, units_per_row));
  if (s.B <= grain) return fn(0, s.B);  // one task: skip the thread pool's bookkeeping
  at::parallel_for(0, s.B, grain, [&](int64_t b0, int64_t b1) { fn(b0, b1); });
}

template <class T>
void copy_row(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  std::memcpy(dst, src, n * sizeof(T));
}

// Pulls a row that the next step will read into cache while this step runs:
// the input projections were written long before, by the big GEMM, and come
// from memory otherwise.
template <class T>
void prefetch_row(const T* row, int64_t n) {
  constexpr int64_t kLine = 64 / sizeof(T);
  for (int64_t k = 0; k < n; k += kLine) __builtin_prefetch(row + k, 0, 2);
}

// The pointer to unit u0 of a row, or null for an absent buffer.
template <class T>
T* from_unit(T* p, int64_t u0) {
  return p ? p + u0 : nullptr;
}

template <class T>
void zero_row(T* dst, int64_t n) {
  std::memset(static_cast<void*>(dst), 0, n * sizeof(T));
}

// ---- forward -------------------------------------------------------------

// The forward rows below run units [0, n) of a row whose pointers start at
// the first of them. Gate k of unit j sits at k * H + j in b_hh and saved, at
// k * X + j in gx and at k * S + j in gh (X = S = H for the driver's buffers;
// a thread's own block of units in the CPU time loop has its own strides).
template <class T, bool Save, bool Project>
RNNKIT_SIMD_CLONES void lstm_forward_row(int64_t n, int64_t H, int64_t X, int64_t S,
                                         const T* __restrict__ gx, const T* __restrict__ gh,
                                         const T* __restrict__ b_hh, T* __restrict__ c,
                                         T* __restrict__ h_next, T* __restrict__ y,
                                         T* __restrict__ saved) {
  using A = at::opmath_type<T>;
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) {
    A i, f, g, o, c_new, h;
    lstm_forward<A>(A(gx[j]) + A(gh[j]) + A(b_hh[j]),
                    A(gx[X + j]) + A(gh[S + j]) + A(b_hh[H + j]),
                    A(gx[2 * X + j]) + A(gh[2 * S + j]) + A(b_hh[2 * H + j]),
                    A(gx[3 * X + j]) + A(gh[3 * S + j]) + A(b_hh[3 * H + j]),
                    A(c[j]), i, f, g, o, c_new, h);
    c[j] = T(c_new);
    h_next[j] = T(h);  // with a projection this is r, the GEMM's input
    if (!Project) y[j] = T(h);
    if (Save) {
      saved[j] = T(i);
      saved[H + j] = T(f);
      saved[2 * H + j] = T(g);
      saved[3 * H + j] = T(o);
      saved[4 * H + j] = T(c_new);
    }
  }
}

template <class T, bool Save>
RNNKIT_SIMD_CLONES void gru_forward_row(int64_t units, int64_t H, int64_t X, int64_t S,
                                        const T* __restrict__ gx, const T* __restrict__ gh,
                                        const T* __restrict__ b_hh, const T* __restrict__ h_prev,
                                        T* __restrict__ h_next, T* __restrict__ y,
                                        T* __restrict__ saved) {
  using A = at::opmath_type<T>;
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < units; ++j) {
    A h_n = A(gh[2 * S + j]) + A(b_hh[2 * H + j]);
    A r, z, n, h;
    gru_forward<A>(A(gx[j]), A(gx[X + j]), A(gx[2 * X + j]), A(gh[j]) + A(b_hh[j]),
                   A(gh[S + j]) + A(b_hh[H + j]), h_n, A(h_prev[j]), r, z, n, h);
    h_next[j] = T(h);
    y[j] = T(h);
    if (Save) {
      saved[j] = T(r);
      saved[H + j] = T(z);
      saved[2 * H + j] = T(n);
      saved[3 * H + j] = T(h_n);
    }
  }
}

template <class T, bool Relu>
RNNKIT_SIMD_CLONES void rnn_forward_row(int64_t n, const T* __restrict__ gx,
                                        const T* __restrict__ gh, const T* __restrict__ b_hh,
                                        T* __restrict__ h_next, T* __restrict__ y) {
  using A = at::opmath_type<T>;
  const CellKind kind = Relu ? CellKind::RNN_RELU : CellKind::RNN_TANH;
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) {
    A h = rnn_forward<A>(kind, A(gx[j]) + A(gh[j]) + A(b_hh[j]));
    h_next[j] = T(h);
    y[j] = T(h);
  }
}

// Rows [b0, b1), units [u0, u1) of one forward step, the gates where gx and
// gh say (GateRows, layer_loop_cpu.h).
template <class T>
void forward_block(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                   GateRows<T> gx, GateRows<T> gh) {
  const StepShape& s = a.shape;
  const int64_t H = s.H, P = s.P;
  const int64_t W = saved_count(s.kind) * H;
  const int64_t n = u1 - u0;
  const bool project = a.r != nullptr;
  const T* b_hh = from_unit(static_cast<const T*>(a.b_hh), u0);
  const T* h_prev = from_unit(static_cast<const T*>(a.h_prev), u0);
  T* h_next = from_unit(static_cast<T*>(a.h_next), u0);
  T* r = from_unit(static_cast<T*>(a.r), u0);
  T* c = from_unit(static_cast<T*>(a.c), u0);
  T* y = from_unit(static_cast<T*>(a.y), u0);
  T* saved = from_unit(static_cast<T*>(a.saved), u0);
  LstmForwardRowF32 lstm_avx512 = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    if (s.kind == CellKind::LSTM) lstm_avx512 = lstm_forward_row_avx512(saved != nullptr, project);
  }
  const int64_t X = gx.gate, S = gh.gate;

  for (int64_t b = b0; b < b1; ++b) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: the state stays as it was
      if (!project) copy_row(h_next + b * P, h_prev + b * P, n);
      continue;
    }
    const int64_t tb = t * s.B + b;
    const int64_t t_next = s.reverse ? t - 1 : t + 1;
    if (gx.rows_per_time != 0 && t_next >= 0 && t_next < s.T) {
      for (int64_t k = 0; k < gate_count(s.kind); ++k) prefetch_row(gx.at(t_next, b) + k * X, n);
    }
    const T* gx_row = gx.at(t, b);
    const T* gh_b = gh.at(t, b);
    T* y_row = y + tb * P;
    T* saved_row = saved ? saved + tb * W : nullptr;
    switch (s.kind) {
      case CellKind::LSTM: {
        T* out = project ? r + b * H : h_next + b * P;
        T* cb = c + b * H;
        if constexpr (std::is_same_v<T, float>) {
          if (lstm_avx512) {
            lstm_avx512(n, H, X, S, gx_row, gh_b, b_hh, cb, out, y_row, saved_row);
            break;
          }
        }
        if (saved && project) lstm_forward_row<T, true, true>(n, H, X, S, gx_row, gh_b, b_hh, cb, out, y_row, saved_row);
        else if (saved) lstm_forward_row<T, true, false>(n, H, X, S, gx_row, gh_b, b_hh, cb, out, y_row, saved_row);
        else if (project) lstm_forward_row<T, false, true>(n, H, X, S, gx_row, gh_b, b_hh, cb, out, y_row, saved_row);
        else lstm_forward_row<T, false, false>(n, H, X, S, gx_row, gh_b, b_hh, cb, out, y_row, saved_row);
        break;
      }
      case CellKind::GRU:
        if (saved) gru_forward_row<T, true>(n, H, X, S, gx_row, gh_b, b_hh, h_prev + b * P, h_next + b * P, y_row, saved_row);
        else gru_forward_row<T, false>(n, H, X, S, gx_row, gh_b, b_hh, h_prev + b * P, h_next + b * P, y_row, saved_row);
        break;
      case CellKind::RNN_TANH:
        rnn_forward_row<T, false>(n, gx_row, gh_b, b_hh, h_next + b * P, y_row);
        break;
      case CellKind::RNN_RELU:
        rnn_forward_row<T, true>(n, gx_row, gh_b, b_hh, h_next + b * P, y_row);
        break;
    }
  }
}

template <class T>
void forward_step_typed(const ForwardStep& a) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, G = gate_count(s.kind) * H;
  const GateRows<T> gx{static_cast<const T*>(a.gx), G, H, B};  // time-ordered
  const GateRows<T> gh{static_cast<const T*>(a.gh), G, H, 0};
  for_rows(s, G, [&](int64_t b0, int64_t b1) { forward_block<T>(a, b0, b1, 0, H, gx, gh); });
}

template <class T>
void project_step_typed(const ProjectStep& a) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, P = s.P;
  const T* h_prev = static_cast<const T*>(a.h_prev);
  T* h_next = static_cast<T*>(a.h_next);
  T* y = static_cast<T*>(a.y);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t t = time_of(s, b);
    if (t < 0) copy_row(h_next + b * P, h_prev + b * P, P);
    else copy_row(y + (t * B + b) * P, h_next + b * P, P);
  }
}

// ---- backward ------------------------------------------------------------

// Like the forward rows: units [0, n) of a row whose pointers start at the
// first of them, gate k of unit j at k * H + j.

template <class T, bool HasDy, bool Project>
RNNKIT_SIMD_CLONES void lstm_backward_row(int64_t n, int64_t H, const T* __restrict__ dh_in,
                                          const T* __restrict__ dy, const T* __restrict__ saved,
                                          const T* __restrict__ c_prev, T* __restrict__ dc,
                                          T* __restrict__ dgx, T* __restrict__ dg_step,
                                          T* __restrict__ r_seq) {
  using A = at::opmath_type<T>;
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) {
    A dh = A(dh_in[j]);
    if (HasDy) dh += A(dy[j]);
    A d_i, d_f, d_g, d_o, dc_prev, h;
    lstm_backward<A>(dh, A(dc[j]), A(saved[j]), A(saved[H + j]), A(saved[2 * H + j]),
                     A(saved[3 * H + j]), A(saved[4 * H + j]), A(c_prev[j]), d_i, d_f, d_g,
                     d_o, dc_prev, h);
    dc[j] = T(dc_prev);
    dgx[j] = dg_step[j] = T(d_i);
    dgx[H + j] = dg_step[H + j] = T(d_f);
    dgx[2 * H + j] = dg_step[2 * H + j] = T(d_g);
    dgx[3 * H + j] = dg_step[3 * H + j] = T(d_o);
    if (Project) r_seq[j] = T(h);
  }
}

template <class T, bool HasDy>
RNNKIT_SIMD_CLONES void gru_backward_row(int64_t n, int64_t H, const T* __restrict__ dh_in,
                                         const T* __restrict__ dy, const T* __restrict__ saved,
                                         const T* __restrict__ h_prev, T* __restrict__ dgx,
                                         T* __restrict__ dgh, T* __restrict__ dg_step,
                                         T* __restrict__ dh_next) {
  using A = at::opmath_type<T>;
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) {
    A dh = A(dh_in[j]);
    if (HasDy) dh += A(dy[j]);
    A d_r, d_z, dx_n, dh_n, direct;
    gru_backward<A>(dh, A(saved[j]), A(saved[H + j]), A(saved[2 * H + j]), A(saved[3 * H + j]),
                    A(h_prev[j]), d_r, d_z, dx_n, dh_n, direct);
    dgx[j] = dgh[j] = dg_step[j] = T(d_r);
    dgx[H + j] = dgh[H + j] = dg_step[H + j] = T(d_z);
    dgx[2 * H + j] = T(dx_n);
    dgh[2 * H + j] = dg_step[2 * H + j] = T(dh_n);
    dh_next[j] = T(direct);
  }
}

template <class T, bool HasDy, bool Relu>
RNNKIT_SIMD_CLONES void rnn_backward_row(int64_t n, const T* __restrict__ dh_in,
                                         const T* __restrict__ dy, const T* __restrict__ h,
                                         T* __restrict__ dgx, T* __restrict__ dg_step) {
  using A = at::opmath_type<T>;
  const CellKind kind = Relu ? CellKind::RNN_RELU : CellKind::RNN_TANH;
  RNNKIT_UNITS_INDEPENDENT
  for (int64_t j = 0; j < n; ++j) {
    A dh = A(dh_in[j]);
    if (HasDy) dh += A(dy[j]);
    dgx[j] = dg_step[j] = T(rnn_backward<A>(kind, dh, A(h[j])));
  }
}

// Rows [b0, b1), units [u0, u1) of one backward step. With a projection
// only the whole of H: dh and dh_next are then P wide, the cell's units H.
template <class T>
void backward_block(const BackwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, G = gate_count(s.kind) * H;
  const int64_t W = saved_count(s.kind) * H;
  const int64_t n = u1 - u0;
  const bool project = a.dr != nullptr;
  const int64_t dh_width = project ? P : n;
  const bool has_dy = a.dy != nullptr && !project;  // with a projection dy is inside dr
  const T* dy = from_unit(static_cast<const T*>(a.dy), u0);
  const T* dh = from_unit(static_cast<const T*>(a.dh), u0);
  const T* dr = from_unit(static_cast<const T*>(a.dr), u0);
  T* dc = from_unit(static_cast<T*>(a.dc), u0);
  const T* h0 = from_unit(static_cast<const T*>(a.h0), u0);
  const T* c0 = from_unit(static_cast<const T*>(a.c0), u0);
  const T* y = from_unit(static_cast<const T*>(a.y), u0);
  const T* saved = from_unit(static_cast<const T*>(a.saved), u0);
  T* dgx = from_unit(static_cast<T*>(a.dgx), u0);
  T* dgh = from_unit(static_cast<T*>(a.dgh), u0);
  T* dg_step = from_unit(static_cast<T*>(a.dg_step), u0);
  T* dh_next = from_unit(static_cast<T*>(a.dh_next), u0);
  T* r_seq = from_unit(static_cast<T*>(a.r_seq), u0);

  StepShape prev = s;
  prev.step = s.step - 1;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: its gradient passes through untouched
      for (int64_t k = 0; k < gate_count(s.kind); ++k) zero_row(dg_step + b * G + k * H, n);
      copy_row(dh_next + b * P, dh + b * P, dh_width);
      continue;
    }
    const int64_t tb = t * B + b;
    // The state this step started from: the row's previous time, or h0/c0.
    const int64_t t_prev = s.step == 0 ? -1 : time_of(prev, b);
    const T* dh_row = project ? dr + b * H : dh + b * P;
    const T* dy_row = has_dy ? dy + tb * P : nullptr;
    const T* saved_row = saved + tb * W;
    T* dgx_row = dgx + tb * G;
    T* step_row = dg_step + b * G;
    switch (s.kind) {
      case CellKind::LSTM: {
        const T* c_prev = t_prev < 0 ? c0 + b * H : saved + (t_prev * B + b) * W + 4 * H;
        T* r_row = project ? r_seq + tb * H : nullptr;
        T* dcb = dc + b * H;
        if (has_dy) lstm_backward_row<T, true, false>(n, H, dh_row, dy_row, saved_row, c_prev, dcb, dgx_row, step_row, r_row);
        else if (project) lstm_backward_row<T, false, true>(n, H, dh_row, dy_row, saved_row, c_prev, dcb, dgx_row, step_row, r_row);
        else lstm_backward_row<T, false, false>(n, H, dh_row, dy_row, saved_row, c_prev, dcb, dgx_row, step_row, r_row);
        zero_row(dh_next + b * P, dh_width);
        break;
      }
      case CellKind::GRU: {
        const T* h_prev = t_prev < 0 ? h0 + b * P : y + (t_prev * B + b) * P;
        if (has_dy) gru_backward_row<T, true>(n, H, dh_row, dy_row, saved_row, h_prev, dgx_row, dgh + tb * G, step_row, dh_next + b * P);
        else gru_backward_row<T, false>(n, H, dh_row, dy_row, saved_row, h_prev, dgx_row, dgh + tb * G, step_row, dh_next + b * P);
        break;
      }
      case CellKind::RNN_TANH:
      case CellKind::RNN_RELU: {
        const T* h = y + tb * P;
        const bool relu = s.kind == CellKind::RNN_RELU;
        if (has_dy && relu) rnn_backward_row<T, true, true>(n, dh_row, dy_row, h, dgx_row, step_row);
        else if (has_dy) rnn_backward_row<T, true, false>(n, dh_row, dy_row, h, dgx_row, step_row);
        else if (relu) rnn_backward_row<T, false, true>(n, dh_row, dy_row, h, dgx_row, step_row);
        else rnn_backward_row<T, false, false>(n, dh_row, dy_row, h, dgx_row, step_row);
        zero_row(dh_next + b * P, dh_width);
        break;
      }
    }
  }
}

template <class T>
void backward_step_typed(const BackwardStep& a) {
  const StepShape& s = a.shape;
  for_rows(s, gate_count(s.kind) * s.H,
           [&](int64_t b0, int64_t b1) { backward_block<T>(a, b0, b1, 0, s.H); });
}

template <class T>
void project_backward_step_typed(const ProjectBackwardStep& a) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, P = s.P;
  const T* dy = static_cast<const T*>(a.dy);
  const T* dh = static_cast<const T*>(a.dh);
  T* dhp_seq = static_cast<T*>(a.dhp_seq);
  T* dhp_step = static_cast<T*>(a.dhp_step);
  using A = at::opmath_type<T>;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t t = time_of(s, b);
    T* out = dhp_step + b * P;
    if (t < 0) {
      zero_row(out, P);
      continue;
    }
    const int64_t tb = t * B + b;
    for (int64_t j = 0; j < P; ++j) {
      A v = A(dh[b * P + j]) + (dy ? A(dy[tb * P + j]) : A(0));
      out[j] = dhp_seq[tb * P + j] = T(v);
    }
  }
}

}  // namespace

void forward_block_float(const ForwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1,
                         GateRows<float> gx, GateRows<float> gh) {
  forward_block<float>(a, b0, b1, u0, u1, gx, gh);
}

void backward_block_float(const BackwardStep& a, int64_t b0, int64_t b1, int64_t u0, int64_t u1) {
  backward_block<float>(a, b0, b1, u0, u1);
}

namespace {

// No step GEMM of its own: the driver's RecurrentGemm packs W once for MKL.
RNNKIT_REGISTER_STEP_KERNELS(CPU, forward_step_typed, project_step_typed, backward_step_typed,
                             project_backward_step_typed, nullptr, forward_loop_cpu,
                             backward_loop_cpu)

}  // namespace
}  // namespace rnnkit
