// CUDA step kernels: one fused launch per step kernel call, on the current
// stream, no allocation and no host sync (so a whole sequence can be captured
// in a CUDA graph). Semantics follow csrc/cpu/step_cpu.cpp element for
// element: which rows have finished, what is written where, and what is
// zeroed or copied for finished rows.
//
// Work layout: a 2-D grid of 2-D blocks. threadIdx.x / blockIdx.x run over
// the hidden units of a row (coalesced: consecutive threads touch consecutive
// addresses of every gate block), threadIdx.y / blockIdx.y over the rows.
// Both dimensions are grid-stride loops with 64-bit indices, so any size
// works with a capped grid and no index overflows past 2^31 elements. Each
// row computes its time index once, outside the loop over units.
//
// Half types are stored as T and computed in at::opmath_type<T> (float).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>

#include "../step_registration.h"
#include "gemm_cuda.h"

namespace rnnkit {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridX = 65535;  // grid-stride beyond this
constexpr int64_t kMaxGridY = 65535;  // hardware limit for gridDim.y

struct Launch {
  dim3 grid, block;
};

// Threads along x cover `cols` units (a multiple of a warp, at most
// kThreads); the rest of the block takes further rows, so that small hidden
// sizes still fill a block.
Launch launch_for(int64_t rows, int64_t cols) {
  const int64_t warps = (cols + 31) / 32;
  const int tx = static_cast<int>(std::min<int64_t>(kThreads, std::max<int64_t>(1, warps) * 32));
  const int ty = kThreads / tx;
  const int64_t gx = std::min<int64_t>(kMaxGridX, (cols + tx - 1) / tx);
  const int64_t gy = std::min<int64_t>(kMaxGridY, (rows + ty - 1) / ty);
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(tx, ty)};
}

// Loop helpers: rows over y, units over x, both grid-stride and 64-bit.
__device__ __forceinline__ int64_t row_begin() {
  return static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
}
__device__ __forceinline__ int64_t row_stride() {
  return static_cast<int64_t>(gridDim.y) * blockDim.y;
}
__device__ __forceinline__ int64_t col_begin() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t col_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---- forward -------------------------------------------------------------

template <class T, CellKind K>
__global__ void forward_kernel(const ForwardStep a) {
  using A = at::opmath_type<T>;
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, G = gate_count(K) * H;
  const int64_t W = saved_count(K) * H;
  const bool project = a.r != nullptr;
  const T* __restrict__ gx = static_cast<const T*>(a.gx);
  const T* __restrict__ gh = static_cast<const T*>(a.gh);
  const T* __restrict__ b_hh = static_cast<const T*>(a.b_hh);
  const T* __restrict__ h_prev = static_cast<const T*>(a.h_prev);
  T* __restrict__ h_next = static_cast<T*>(a.h_next);
  T* __restrict__ r = static_cast<T*>(a.r);
  T* __restrict__ c = static_cast<T*>(a.c);
  T* __restrict__ y = static_cast<T*>(a.y);
  T* __restrict__ saved = static_cast<T*>(a.saved);

  for (int64_t b = row_begin(); b < B; b += row_stride()) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: the state stays as it was (c is left in place)
      if (!project) {
        for (int64_t j = col_begin(); j < P; j += col_stride()) h_next[b * P + j] = h_prev[b * P + j];
      }
      continue;
    }
    const int64_t tb = t * B + b;
    const T* gx_row = gx + tb * G;
    const T* gh_row = gh + b * G;
    T* y_row = y + tb * P;
    T* saved_row = saved ? saved + tb * W : nullptr;
    for (int64_t j = col_begin(); j < H; j += col_stride()) {
      if constexpr (K == CellKind::LSTM) {
        A i, f, g, o, c_new, h;
        lstm_forward<A>(A(gx_row[j]) + A(gh_row[j]) + A(b_hh[j]),
                        A(gx_row[H + j]) + A(gh_row[H + j]) + A(b_hh[H + j]),
                        A(gx_row[2 * H + j]) + A(gh_row[2 * H + j]) + A(b_hh[2 * H + j]),
                        A(gx_row[3 * H + j]) + A(gh_row[3 * H + j]) + A(b_hh[3 * H + j]),
                        A(c[b * H + j]), i, f, g, o, c_new, h);
        c[b * H + j] = T(c_new);
        if (project) {
          r[b * H + j] = T(h);  // the projection GEMM's input
        } else {
          h_next[b * P + j] = T(h);
          y_row[j] = T(h);
        }
        if (saved_row) {
          saved_row[j] = T(i);
          saved_row[H + j] = T(f);
          saved_row[2 * H + j] = T(g);
          saved_row[3 * H + j] = T(o);
          saved_row[4 * H + j] = T(c_new);
        }
      } else if constexpr (K == CellKind::GRU) {
        const A h_n = A(gh_row[2 * H + j]) + A(b_hh[2 * H + j]);
        A rr, z, n, h;
        gru_forward<A>(A(gx_row[j]), A(gx_row[H + j]), A(gx_row[2 * H + j]),
                       A(gh_row[j]) + A(b_hh[j]), A(gh_row[H + j]) + A(b_hh[H + j]), h_n,
                       A(h_prev[b * P + j]), rr, z, n, h);
        h_next[b * P + j] = T(h);
        y_row[j] = T(h);
        if (saved_row) {
          saved_row[j] = T(rr);
          saved_row[H + j] = T(z);
          saved_row[2 * H + j] = T(n);
          saved_row[3 * H + j] = T(h_n);
        }
      } else {
        const A h = rnn_forward<A>(K, A(gx_row[j]) + A(gh_row[j]) + A(b_hh[j]));
        h_next[b * P + j] = T(h);
        y_row[j] = T(h);
      }
    }
  }
}

// After h_next = r W_hr^T: running rows copy it to y, finished rows put
// h_prev back.
template <class T>
__global__ void project_kernel(const ProjectStep a) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, P = s.P;
  const T* __restrict__ h_prev = static_cast<const T*>(a.h_prev);
  T* __restrict__ h_next = static_cast<T*>(a.h_next);
  T* __restrict__ y = static_cast<T*>(a.y);
  for (int64_t b = row_begin(); b < B; b += row_stride()) {
    const int64_t t = time_of(s, b);
    if (t < 0) {
      for (int64_t p = col_begin(); p < P; p += col_stride()) h_next[b * P + p] = h_prev[b * P + p];
    } else {
      T* y_row = y + (t * B + b) * P;
      for (int64_t p = col_begin(); p < P; p += col_stride()) y_row[p] = h_next[b * P + p];
    }
  }
}

// ---- backward ------------------------------------------------------------

template <class T, CellKind K>
__global__ void backward_kernel(const BackwardStep a) {
  using A = at::opmath_type<T>;
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, G = gate_count(K) * H;
  const int64_t W = saved_count(K) * H;
  const bool project = a.dr != nullptr;
  const bool has_dy = a.dy != nullptr && !project;  // with a projection dy is inside dr
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const T* __restrict__ dh = static_cast<const T*>(a.dh);
  const T* __restrict__ dr = static_cast<const T*>(a.dr);
  T* __restrict__ dc = static_cast<T*>(a.dc);
  const T* __restrict__ h0 = static_cast<const T*>(a.h0);
  const T* __restrict__ c0 = static_cast<const T*>(a.c0);
  const T* __restrict__ y = static_cast<const T*>(a.y);
  const T* __restrict__ saved = static_cast<const T*>(a.saved);
  // dgh is the same buffer as dgx except for GRU: no __restrict__ on these.
  T* dgx = static_cast<T*>(a.dgx);
  T* dgh = static_cast<T*>(a.dgh);
  T* __restrict__ dg_step = static_cast<T*>(a.dg_step);
  T* __restrict__ dh_next = static_cast<T*>(a.dh_next);
  T* __restrict__ r_seq = static_cast<T*>(a.r_seq);

  StepShape prev = s;
  prev.step = s.step - 1;
  for (int64_t b = row_begin(); b < B; b += row_stride()) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: its gradient passes through untouched
      for (int64_t j = col_begin(); j < G; j += col_stride()) dg_step[b * G + j] = T(0);
      for (int64_t p = col_begin(); p < P; p += col_stride()) dh_next[b * P + p] = dh[b * P + p];
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

    if constexpr (K == CellKind::LSTM) {
      const T* c_prev = t_prev < 0 ? c0 + b * H : saved + (t_prev * B + b) * W + 4 * H;
      for (int64_t j = col_begin(); j < H; j += col_stride()) {
        A g_h = A(dh_row[j]);
        if (has_dy) g_h += A(dy_row[j]);
        A d_i, d_f, d_g, d_o, dc_prev, h;
        lstm_backward<A>(g_h, A(dc[b * H + j]), A(saved_row[j]), A(saved_row[H + j]),
                         A(saved_row[2 * H + j]), A(saved_row[3 * H + j]),
                         A(saved_row[4 * H + j]), A(c_prev[j]), d_i, d_f, d_g, d_o, dc_prev, h);
        dc[b * H + j] = T(dc_prev);
        dgx_row[j] = step_row[j] = T(d_i);
        dgx_row[H + j] = step_row[H + j] = T(d_f);
        dgx_row[2 * H + j] = step_row[2 * H + j] = T(d_g);
        dgx_row[3 * H + j] = step_row[3 * H + j] = T(d_o);
        if (project) r_seq[tb * H + j] = T(h);
      }
      for (int64_t p = col_begin(); p < P; p += col_stride()) dh_next[b * P + p] = T(0);
    } else if constexpr (K == CellKind::GRU) {
      const T* h_prev = t_prev < 0 ? h0 + b * P : y + (t_prev * B + b) * P;
      T* dgh_row = dgh + tb * G;
      for (int64_t j = col_begin(); j < H; j += col_stride()) {
        A g_h = A(dh_row[j]);
        if (has_dy) g_h += A(dy_row[j]);
        A d_r, d_z, dx_n, dh_n, direct;
        gru_backward<A>(g_h, A(saved_row[j]), A(saved_row[H + j]), A(saved_row[2 * H + j]),
                        A(saved_row[3 * H + j]), A(h_prev[j]), d_r, d_z, dx_n, dh_n, direct);
        dgx_row[j] = dgh_row[j] = step_row[j] = T(d_r);
        dgx_row[H + j] = dgh_row[H + j] = step_row[H + j] = T(d_z);
        dgx_row[2 * H + j] = T(dx_n);
        dgh_row[2 * H + j] = step_row[2 * H + j] = T(dh_n);
        dh_next[b * P + j] = T(direct);
      }
    } else {
      const T* h_row = y + tb * P;
      for (int64_t j = col_begin(); j < H; j += col_stride()) {
        A g_h = A(dh_row[j]);
        if (has_dy) g_h += A(dy_row[j]);
        dgx_row[j] = step_row[j] = T(rnn_backward<A>(K, g_h, A(h_row[j])));
      }
      for (int64_t p = col_begin(); p < P; p += col_stride()) dh_next[b * P + p] = T(0);
    }
  }
}

// With a projection: dhp = dh + dy for running rows, time-ordered and as a
// step buffer; zero in the step buffer for finished rows.
template <class T>
__global__ void project_backward_kernel(const ProjectBackwardStep a) {
  using A = at::opmath_type<T>;
  const StepShape& s = a.shape;
  const int64_t B = s.B, P = s.P;
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const T* __restrict__ dh = static_cast<const T*>(a.dh);
  T* __restrict__ dhp_seq = static_cast<T*>(a.dhp_seq);
  T* __restrict__ dhp_step = static_cast<T*>(a.dhp_step);
  for (int64_t b = row_begin(); b < B; b += row_stride()) {
    const int64_t t = time_of(s, b);
    T* out = dhp_step + b * P;
    if (t < 0) {
      for (int64_t p = col_begin(); p < P; p += col_stride()) out[p] = T(0);
      continue;
    }
    const int64_t tb = t * B + b;
    for (int64_t p = col_begin(); p < P; p += col_stride()) {
      const A v = A(dh[b * P + p]) + (dy ? A(dy[tb * P + p]) : A(0));
      out[p] = dhp_seq[tb * P + p] = T(v);
    }
  }
}

// ---- launchers -----------------------------------------------------------

// Calls launch with the cell kind as a compile-time constant.
template <class Launch>
void with_kind(CellKind kind, const Launch& launch) {
  using K = CellKind;
  switch (kind) {
    case K::LSTM: return launch(std::integral_constant<K, K::LSTM>{});
    case K::GRU: return launch(std::integral_constant<K, K::GRU>{});
    case K::RNN_TANH: return launch(std::integral_constant<K, K::RNN_TANH>{});
    case K::RNN_RELU: return launch(std::integral_constant<K, K::RNN_RELU>{});
  }
}

template <class T>
void forward_typed(const ForwardStep& a) {
  const StepShape& s = a.shape;
  if (s.B == 0 || s.H == 0) return;
  const Launch l = launch_for(s.B, std::max(s.H, s.P));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_kind(s.kind, [&](auto kind) {
    forward_kernel<T, decltype(kind)::value><<<l.grid, l.block, 0, stream>>>(a);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T>
void project_typed(const ProjectStep& a) {
  const StepShape& s = a.shape;
  if (s.B == 0 || s.P == 0) return;
  const Launch l = launch_for(s.B, s.P);
  project_kernel<T><<<l.grid, l.block, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T>
void backward_typed(const BackwardStep& a) {
  const StepShape& s = a.shape;
  if (s.B == 0 || s.H == 0) return;
  // Finished rows zero G = gates * H values; size x by H, the loops stride.
  const Launch l = launch_for(s.B, std::max(s.H, s.P));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_kind(s.kind, [&](auto kind) {
    backward_kernel<T, decltype(kind)::value><<<l.grid, l.block, 0, stream>>>(a);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T>
void project_backward_typed(const ProjectBackwardStep& a) {
  const StepShape& s = a.shape;
  if (s.B == 0 || s.P == 0) return;
  const Launch l = launch_for(s.B, s.P);
  project_backward_kernel<T><<<l.grid, l.block, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

RNNKIT_REGISTER_STEP_KERNELS(CUDA, forward_typed, project_typed, backward_typed, project_backward_typed,
                             step_gemm_cuda, nullptr, nullptr)

}  // namespace
}  // namespace rnnkit
