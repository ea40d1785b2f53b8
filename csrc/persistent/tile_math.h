// One tile of a block's recurrent product: out (tile_m x tile_n) = W rows .
// X rows over a K range, both operands in shared memory with K contiguous
// (W[m][k], X[n][k]). `first` starts the sum at zero, else it continues the
// partial already in `out` (a K slice that spans two staging passes).
//
// FFMA: one thread a 4 x 4 tile, on CUDA cores (strict fp32; fp64 on the CPU).
// TF32 / MMA16: one warp a 16 x 8 tile with mma.sync (m16n8k8 tf32,
// m16n8k16 f16/bf16), float32 accumulators. On the CPU, or compiled for an
// architecture without mma.sync, the same tile is computed by one caller
// with the same operand rounding (tf32 round-to-nearest-away, 16-bit inputs),
// so the CPU tests check the tiling, padding and operand layout.
#pragma once

#include <string.h>

#include <type_traits>

#include "geometry.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define RNNKIT_UNROLL _Pragma("unroll")
#else
#define RNNKIT_UNROLL
#endif

namespace rnnkit {
namespace persistent {

template <class T, MathKind M>
struct TileMath;

template <class T>
struct TileMath<T, MathKind::FFMA> {
  using A = acc_t<T>;
  static constexpr int kM = 4, kN = 4, kLanes = 1;

  // x holds K columns from x_k0 on; k_begin/k_end are global K indices.
  RNNKIT_HD static void tile(const T* w, int64_t ldw, const T* x, int64_t ldx, int64_t x_k0,
                             int64_t k_begin, int64_t k_end, A* out, int64_t ldo, bool first,
                             int /*lane*/) {
    A acc[kM][kN];
    RNNKIT_UNROLL
    for (int i = 0; i < kM; ++i) {
      RNNKIT_UNROLL
      for (int j = 0; j < kN; ++j) acc[i][j] = first ? A(0) : out[i * ldo + j];
    }
    for (int64_t k = k_begin; k < k_end; ++k) {
      A wv[kM], xv[kN];
      RNNKIT_UNROLL
      for (int i = 0; i < kM; ++i) wv[i] = to_acc(w[i * ldw + k]);
      RNNKIT_UNROLL
      for (int j = 0; j < kN; ++j) xv[j] = to_acc(x[j * ldx + (k - x_k0)]);
      RNNKIT_UNROLL
      for (int i = 0; i < kM; ++i) {
        RNNKIT_UNROLL
        for (int j = 0; j < kN; ++j) acc[i][j] += wv[i] * xv[j];
      }
    }
    RNNKIT_UNROLL
    for (int i = 0; i < kM; ++i) {
      RNNKIT_UNROLL
      for (int j = 0; j < kN; ++j) out[i * ldo + j] = acc[i][j];
    }
  }
};

// float -> tf32 as cvt.rna.tf32.f32 does: nearest, ties away from zero.
RNNKIT_HD float round_tf32(float v) {
  uint32_t b;
  memcpy(&b, &v, 4);
  if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & 0xffffe000u;
  memcpy(&v, &b, 4);
  return v;
}

// The tensor-core tiles. T: float for TF32; __half or __nv_bfloat16 (on the
// CPU any type convertible to float) for MMA16.
template <class T, MathKind M>
struct TileMath {
  static_assert(M == MathKind::TF32 || M == MathKind::MMA16, "tensor-core tile");
  using A = float;
  static constexpr int kM = 16, kN = 8, kLanes = 32;
  static constexpr int kStep = M == MathKind::TF32 ? 8 : 16;

  RNNKIT_HD static void tile(const T* w, int64_t ldw, const T* x, int64_t ldx, int64_t x_k0,
                             int64_t k_begin, int64_t k_end, A* out, int64_t ldo, bool first,
                             int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    device_tile(w, ldw, x, ldx, x_k0, k_begin, k_end, out, ldo, first, lane);
#else
    (void)lane;
    for (int i = 0; i < kM; ++i) {
      for (int j = 0; j < kN; ++j) {
        float acc = first ? 0.0f : out[i * ldo + j];
        for (int64_t k = k_begin; k < k_end; ++k) {
          float a = to_acc(w[i * ldw + k]);
          float b = to_acc(x[j * ldx + (k - x_k0)]);
          if (M == MathKind::TF32) {
            a = round_tf32(a);
            b = round_tf32(b);
          }
          acc += a * b;
        }
        out[i * ldo + j] = acc;
      }
    }
#endif
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // Fragments after the PTX ISA's mma.sync layouts: lane = 4 * group + tig;
  // C rows group and group + 8, columns 2 * tig and 2 * tig + 1.
  __device__ static void device_tile(const T* w, int64_t ldw, const T* x, int64_t ldx,
                                     int64_t x_k0, int64_t k_begin, int64_t k_end, float* out,
                                     int64_t ldo, bool first, int lane) {
    const int grp = lane >> 2, tig = lane & 3;
    float c[4];
    c[0] = first ? 0.f : out[grp * ldo + 2 * tig];
    c[1] = first ? 0.f : out[grp * ldo + 2 * tig + 1];
    c[2] = first ? 0.f : out[(grp + 8) * ldo + 2 * tig];
    c[3] = first ? 0.f : out[(grp + 8) * ldo + 2 * tig + 1];
    const T* w_lo = w + grp * ldw;
    const T* w_hi = w + (grp + 8) * ldw;
    const T* x_row = x + grp * ldx;  // column k of X sits at x_row[k - x_k0]
    for (int64_t k = k_begin; k < k_end; k += kStep) {
      if constexpr (M == MathKind::TF32) {
        // m16n8k8: A (g, t) (g+8, t) (g, t+4) (g+8, t+4); B (k=t, n=g) (k=t+4, n=g).
        const uint32_t a0 = to_tf32(w_lo[k + tig]), a1 = to_tf32(w_hi[k + tig]);
        const uint32_t a2 = to_tf32(w_lo[k + tig + 4]), a3 = to_tf32(w_hi[k + tig + 4]);
        const uint32_t b0 = to_tf32(x_row[k - x_k0 + tig]), b1 = to_tf32(x_row[k - x_k0 + tig + 4]);
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
      } else {
        // m16n8k16: each register two consecutive k; A rows g, g+8 at k 2t and
        // 2t+8; B column g at k 2t and 2t+8.
        const uint32_t a0 = pair(w_lo + k + 2 * tig), a1 = pair(w_hi + k + 2 * tig);
        const uint32_t a2 = pair(w_lo + k + 2 * tig + 8), a3 = pair(w_hi + k + 2 * tig + 8);
        const uint32_t b0 = pair(x_row + (k - x_k0) + 2 * tig), b1 = pair(x_row + (k - x_k0) + 2 * tig + 8);
        if constexpr (std::is_same<T, __half>::value) {
          asm volatile(
              "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
              "{%8,%9}, {%0,%1,%2,%3};\n"
              : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
              : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
        } else {
          asm volatile(
              "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
              "{%8,%9}, {%0,%1,%2,%3};\n"
              : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
              : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
        }
      }
    }
    out[grp * ldo + 2 * tig] = c[0];
    out[grp * ldo + 2 * tig + 1] = c[1];
    out[(grp + 8) * ldo + 2 * tig] = c[2];
    out[(grp + 8) * ldo + 2 * tig + 1] = c[3];
  }

  __device__ static uint32_t to_tf32(float v) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
  }
  // Two consecutive 16-bit elements (an even K index: rows are 16-byte aligned).
  __device__ static uint32_t pair(const T* p) { return *reinterpret_cast<const uint32_t*>(p); }
#endif
};

}  // namespace persistent
}  // namespace rnnkit
