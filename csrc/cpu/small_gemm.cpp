#include "small_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

// x86-64-v4 is AVX-512, v3 AVX2 + FMA; GCC picks the clone by CPU features.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define RNNKIT_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RNNKIT_SIMD_CLONES
#endif

namespace rnnkit {
namespace {

// Below this many multiply-adds the product stays on the calling thread:
// starting and joining the others costs more (far more where they wait for
// a busy core).
constexpr int64_t kParallelMacs = int64_t(1) << 20;
// Columns (rows of W) per task: whole cache lines of the output row.
constexpr int64_t kColumnsAlign = 16;
// From this many rows of A on, the products broadcast W against rows of A
// (columns()) rather than take dot products (dots()).
constexpr int64_t kRowsForColumns = 4;

template <class Fn>
void over_columns(int64_t M, int64_t N, int64_t K, const Fn& fn) {
  if (M * N * K < kParallelMacs || at::in_parallel_region() || at::get_num_threads() == 1) {
    return fn(0, N);
  }
  const int64_t threads = at::get_num_threads();
  const int64_t grain = ((N + threads - 1) / threads + kColumnsAlign - 1) / kColumnsAlign * kColumnsAlign;
  at::parallel_for(0, N, grain, fn);
}

// The dot products of columns [n0, n1) for a single row of A (or a few): a
// row of W is read once and met by every row of A while it is in L1.
template <class T>
RNNKIT_SIMD_CLONES void dots(int64_t M, int64_t n0, int64_t n1, int64_t K, const T* A, int64_t lda,
                             const T* W, int64_t ldw, T* C, int64_t ldc, bool accumulate) {
  for (int64_t n = n0; n < n1; ++n) {
    const T* w = W + n * ldw;
    for (int64_t m = 0; m < M; ++m) {
      const T* a = A + m * lda;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < K; ++k) acc += a[k] * w[k];
      C[m * ldc + n] = accumulate ? C[m * ldc + n] + acc : acc;
    }
  }
}

// Rows of A at a time in columns() (its accumulators live in registers).
constexpr int64_t kRowsAtOnce = 16;
constexpr int64_t kColumnsAtOnce = 4;

// The same products for many rows of A, with A transposed first (at, K x M):
// every entry of W is broadcast against a vector of rows, four columns at a
// time, with no horizontal sums (which cost more than the products at these
// sizes).
template <class T>
RNNKIT_SIMD_CLONES void columns(int64_t M, int64_t n0, int64_t n1, int64_t K, const T* at,
                                const T* W, int64_t ldw, T* C, int64_t ldc, bool accumulate) {
  for (int64_t m0 = 0; m0 < M; m0 += kRowsAtOnce) {
    const int64_t mb = std::min(kRowsAtOnce, M - m0);
    int64_t n = n0;
    for (; n + kColumnsAtOnce <= n1; n += kColumnsAtOnce) {
      T acc[kColumnsAtOnce][kRowsAtOnce] = {};
      const T* w = W + n * ldw;
      for (int64_t k = 0; k < K; ++k) {
        const T* a = at + k * M + m0;
        const T w0 = w[k], w1 = w[ldw + k], w2 = w[2 * ldw + k], w3 = w[3 * ldw + k];
#pragma omp simd
        for (int64_t m = 0; m < kRowsAtOnce; ++m) {
          const T v = m < mb ? a[m] : T(0);
          acc[0][m] += w0 * v;
          acc[1][m] += w1 * v;
          acc[2][m] += w2 * v;
          acc[3][m] += w3 * v;
        }
      }
      for (int64_t c = 0; c < kColumnsAtOnce; ++c)
        for (int64_t m = 0; m < mb; ++m) {
          T* out = C + (m0 + m) * ldc + n + c;
          *out = accumulate ? *out + acc[c][m] : acc[c][m];
        }
    }
    for (; n < n1; ++n) {  // the last columns, one at a time
      T acc[kRowsAtOnce] = {};
      const T* w = W + n * ldw;
      for (int64_t k = 0; k < K; ++k) {
        const T* a = at + k * M + m0;
#pragma omp simd
        for (int64_t m = 0; m < kRowsAtOnce; ++m) acc[m] += w[k] * (m < mb ? a[m] : T(0));
      }
      for (int64_t m = 0; m < mb; ++m) {
        T* out = C + (m0 + m) * ldc + n;
        *out = accumulate ? *out + acc[m] : acc[m];
      }
    }
  }
}

// Columns [n0, n1) of A · W: each row of W, scaled by A's entries, is added
// into the rows of C.
template <class T>
RNNKIT_SIMD_CLONES void axpys(int64_t M, int64_t n0, int64_t n1, int64_t K, const T* A, int64_t lda,
                              const T* W, int64_t ldw, T* C, int64_t ldc, bool accumulate) {
  for (int64_t m = 0; m < M; ++m) {
    T* c = C + m * ldc;
    if (!accumulate) std::fill(c + n0, c + n1, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T a = A[m * lda + k];
      const T* w = W + k * ldw;
#pragma omp simd
      for (int64_t n = n0; n < n1; ++n) c[n] += a * w[n];
    }
  }
}

}  // namespace

template <class T>
void small_gemm_nt(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* W,
                   int64_t ldw, T* C, int64_t ldc, bool accumulate) {
  if (M < kRowsForColumns) {
    over_columns(M, N, K, [&](int64_t n0, int64_t n1) {
      dots<T>(M, n0, n1, K, A, lda, W, ldw, C, ldc, accumulate);
    });
    return;
  }
  std::vector<T> at(K * M);  // A transposed: K x M
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) at[k * M + m] = A[m * lda + k];
  over_columns(M, N, K, [&](int64_t n0, int64_t n1) {
    columns<T>(M, n0, n1, K, at.data(), W, ldw, C, ldc, accumulate);
  });
}

template <class T>
void small_gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* W,
                   int64_t ldw, T* C, int64_t ldc, bool accumulate) {
  over_columns(M, N, K, [&](int64_t n0, int64_t n1) {
    axpys<T>(M, n0, n1, K, A, lda, W, ldw, C, ldc, accumulate);
  });
}

template void small_gemm_nt<float>(int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                                   int64_t, float*, int64_t, bool);
template void small_gemm_nt<double>(int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                                    int64_t, double*, int64_t, bool);
template void small_gemm_nn<float>(int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                                   int64_t, float*, int64_t, bool);
template void small_gemm_nn<double>(int64_t, int64_t, int64_t, const double*, int64_t, const double*,
                                    int64_t, double*, int64_t, bool);

}  // namespace rnnkit
