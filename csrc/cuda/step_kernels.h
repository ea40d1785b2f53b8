// The bodies of the CUDA step kernels: what one thread of the grid does, as
// host-device functions over cell_units.h. step_cuda.cu launches them;
// cpu/cuda_emulated.cpp runs every block and thread of the same grid on the
// CPU, so that the tests check the CUDA kernels' indexing where no GPU is.
//
// Work layout: a 2-D grid of 2-D blocks. x runs over the hidden units of a
// row (consecutive threads touch consecutive addresses of every gate block),
// y over the rows. Both are grid-stride loops with 64-bit indices, so any
// size works with a capped grid. Each row computes its time index once.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../cell_units.h"

namespace rnnkit {
namespace cuda_steps {

constexpr int64_t kThreads = 256;
constexpr int64_t kMaxGridX = 65535;  // grid-stride beyond this
constexpr int64_t kMaxGridY = 65535;  // hardware limit for gridDim.y

// A launch: grid (x, y) of blocks (x, y).
struct Launch {
  int64_t grid_x, grid_y, block_x, block_y;
};

// Threads along x cover `cols` units (a multiple of a warp, at most
// kThreads); the rest of the block takes further rows, so that small hidden
// sizes still fill a block.
inline Launch launch_for(int64_t rows, int64_t cols) {
  const int64_t warps = (cols + 31) / 32;
  const int64_t tx = std::min<int64_t>(kThreads, std::max<int64_t>(1, warps) * 32);
  const int64_t ty = kThreads / tx;
  return {std::min<int64_t>(kMaxGridX, (cols + tx - 1) / tx),
          std::min<int64_t>(kMaxGridY, (rows + ty - 1) / ty), tx, ty};
}

// One thread's start and stride in the row (y) and unit (x) loops.
struct ThreadPlace {
  int64_t row0, row_stride, col0, col_stride;
};

template <class T, CellKind K>
RNNKIT_HD void forward_thread(const ForwardStep& a, const ThreadPlace& p) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, G = gate_count(K) * H;
  const bool project = a.r != nullptr, save = a.saved != nullptr;
  const GateRows<const T> gx{static_cast<const T*>(a.gx), G, H, B};
  const GateRows<const T> gh{static_cast<const T*>(a.gh), G, H, 0};
  const T* h_prev = static_cast<const T*>(a.h_prev);
  T* h_next = static_cast<T*>(a.h_next);
  // Where c is read from one buffer and written to another, a finished row copies it.
  const T* c_prev = a.c_prev && a.c_prev != a.c ? static_cast<const T*>(a.c_prev) : nullptr;
  T* c = static_cast<T*>(a.c);
  for (int64_t b = p.row0; b < B; b += p.row_stride) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: the state stays as it was (with a projection: project_thread)
      if (!project) {
        for (int64_t j = p.col0; j < P; j += p.col_stride) carry_forward_unit(h_prev + b * P, h_next + b * P, j);
      }
      if (c_prev) {
        for (int64_t j = p.col0; j < H; j += p.col_stride) carry_forward_unit(c_prev + b * H, c + b * H, j);
      }
      continue;
    }
    const ForwardRow<T> row = forward_row<T>(a, gx, gh, b, t, 0);
    for (int64_t j = p.col0; j < H; j += p.col_stride) {
      if (save) {
        if (project) forward_unit<T, K, true, true>(row, j);
        else forward_unit<T, K, true, false>(row, j);
      } else {
        if (project) forward_unit<T, K, false, true>(row, j);
        else forward_unit<T, K, false, false>(row, j);
      }
    }
  }
}

template <class T>
RNNKIT_HD void project_thread(const ProjectStep& a, const ThreadPlace& p) {
  for (int64_t b = p.row0; b < a.shape.B; b += p.row_stride) {
    const ProjectRow<T> row = project_row<T>(a, b);
    for (int64_t j = p.col0; j < a.shape.P; j += p.col_stride) project_unit(row, j);
  }
}

template <class T, CellKind K>
RNNKIT_HD void backward_thread(const BackwardStep& a, const ThreadPlace& p) {
  const StepShape& s = a.shape;
  const int64_t B = s.B, H = s.H, P = s.P, G = gate_count(K) * H;
  const bool project = a.dr != nullptr, has_dy = a.dy != nullptr && !project;
  const T* dh = static_cast<const T*>(a.dh);
  T* dh_next = static_cast<T*>(a.dh_next);
  T* dg_step = static_cast<T*>(a.dg_step);
  for (int64_t b = p.row0; b < B; b += p.row_stride) {
    const int64_t t = time_of(s, b);
    if (t < 0) {  // finished: its gradient passes through untouched
      for (int64_t j = p.col0; j < H; j += p.col_stride)
        carry_backward_unit(K, H, project, dh + b * P, dg_step + b * G, dh_next + b * P, j);
      if (project) {
        for (int64_t j = p.col0; j < P; j += p.col_stride) dh_next[b * P + j] = dh[b * P + j];
      }
      continue;
    }
    const BackwardRow<T> row = backward_row<T>(a, b, t, 0);
    for (int64_t j = p.col0; j < H; j += p.col_stride) {
      if (project) backward_unit<T, K, false, true>(row, j);
      else if (has_dy) backward_unit<T, K, true, false>(row, j);
      else backward_unit<T, K, false, false>(row, j);
    }
    if (project) {
      for (int64_t j = p.col0; j < P; j += p.col_stride) dh_next[b * P + j] = T(0);
    }
  }
}

template <class T>
RNNKIT_HD void project_backward_thread(const ProjectBackwardStep& a, const ThreadPlace& p) {
  for (int64_t b = p.row0; b < a.shape.B; b += p.row_stride) {
    const ProjectBackwardRow<T> row = project_backward_row<T>(a, b);
    for (int64_t j = p.col0; j < a.shape.P; j += p.col_stride) project_backward_unit(row, j);
  }
}

}  // namespace cuda_steps
}  // namespace rnnkit
