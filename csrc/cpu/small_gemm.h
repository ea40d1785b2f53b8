// Small GEMMs on weights as they stand (row-major, unpacked), for the steps
// that run too few times to repay packing the weights: a single step (cells,
// decoding one step at a time) and short sequences. float and double.
#pragma once

#include <cstdint>

namespace rnnkit {

// C (M, N) = A (M, K) · W^T, or += when accumulating; W (N, K) row-major:
// one dot product per output, the rows of W split across the threads where
// the product is large enough.
template <class T>
void small_gemm_nt(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* W,
                   int64_t ldw, T* C, int64_t ldc, bool accumulate);

// C (M, N) = A (M, K) · W, or += ; W (K, N) row-major: rows of W scaled and
// added, the columns split across the threads where the product is large enough.
template <class T>
void small_gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* W,
                   int64_t ldw, T* C, int64_t ldc, bool accumulate);

}  // namespace rnnkit
