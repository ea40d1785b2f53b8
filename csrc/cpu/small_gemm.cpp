#include "small_gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>

// x86-64-v4 is AVX-512, v3 AVX2 + FMA; GCC picks the clone by CPU features.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define RNNKIT_SIMD_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RNNKIT_SIMD_CLONES
#endif

namespace rnnkit {
namespace {

// Below this many multiply-adds the product stays on the calling thread.
constexpr int64_t kParallelMacs = int64_t(1) << 16;
// Columns (rows of W) per task: whole cache lines of the output row.
constexpr int64_t kColumnsAlign = 16;

template <class Fn>
void over_columns(int64_t M, int64_t N, int64_t K, const Fn& fn) {
  if (M * N * K < kParallelMacs || at::in_parallel_region() || at::get_num_threads() == 1) {
    return fn(0, N);
  }
  const int64_t threads = at::get_num_threads();
  const int64_t grain = ((N + threads - 1) / threads + kColumnsAlign - 1) / kColumnsAlign * kColumnsAlign;
  at::parallel_for(0, N, grain, fn);
}

// The dot products of columns [n0, n1): a row of W is read once and met by
// every row of A while it is in L1.
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
  over_columns(M, N, K, [&](int64_t n0, int64_t n1) {
    dots<T>(M, n0, n1, K, A, lda, W, ldw, C, ldc, accumulate);
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
