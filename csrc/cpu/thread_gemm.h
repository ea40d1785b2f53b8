// The GEMM one thread of a CPU time loop runs every step against its own
// block of weights: C (M, N) = A (M, K) · R, or += , single-threaded, with R
// packed once per call for the back-end at hand:
//   - oneDNN's brgemm (through ATen's cpublas), which JIT-compiles its
//     kernels for the CPU it runs on (the kernels torch.nn's oneDNN LSTM
//     runs), where torch carries it and the CPU has AVX2;
//   - MKL's packed GEMM otherwise (its fastest code paths are chosen by CPU
//     vendor, not features: far below brgemm on AMD).
#pragma once

#include <cstdint>

namespace rnnkit {

enum class GemmBackend { kBrgemm, kMklPacked, kNone };

// The back-end of this process (RNNKIT_GEMM=brgemm|mkl chooses where both exist).
GemmBackend thread_gemm_backend();
const char* gemm_backend_name(GemmBackend backend);

class ThreadGemm {
 public:
  ThreadGemm(int64_t M, int64_t N, int64_t K);

  // Floats the packed R takes (whole cache lines).
  int64_t packed_floats() const;
  // R = W^T for W (N, K) row-major and contiguous (rows gathered by the caller).
  void pack_transposed(const float* w, float* packed) const;
  // R = W for W (K, N) with leading dimension ldw.
  void pack_plain(const float* w, int64_t ldw, float* packed) const;
  void run(const float* a, int64_t lda, const float* packed, float* c, int64_t ldc,
           bool accumulate) const;

 private:
  GemmBackend backend_;
  int64_t M_, N_, K_;
};

}  // namespace rnnkit
