#include "thread_gemm.h"

#include <ATen/Context.h>
#include <ATen/native/CPUBlas.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "mkl_packed.h"

namespace rnnkit {
namespace {

int64_t whole_lines(int64_t floats) { return (floats + 15) / 16 * 16; }

bool brgemm_usable() {
#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(__x86_64__) && defined(__GNUC__)
  // ATen runs oneDNN's brgemm from AVX2 on, and MKL's plain GEMM (unpacked,
  // slower than MKL's packed one) below that or when oneDNN is turned off.
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         at::globalContext().userEnabledMkldnn();
#else
  return false;
#endif
}

GemmBackend choose_backend() {
  const char* asked = std::getenv("RNNKIT_GEMM");
  const bool brgemm = brgemm_usable(), mkl = mkl::packing_available();
  if (asked && *asked) {
    const std::string name(asked);
    TORCH_CHECK_VALUE(name == "brgemm" || name == "mkl", "rnnkit: RNNKIT_GEMM must be 'brgemm' or 'mkl', got '", name, "'");
    TORCH_CHECK_VALUE(name == "brgemm" ? brgemm : mkl, "rnnkit: RNNKIT_GEMM=", name,
                      " but that GEMM is not available with this torch on this CPU");
    return name == "brgemm" ? GemmBackend::kBrgemm : GemmBackend::kMklPacked;
  }
  return brgemm ? GemmBackend::kBrgemm : mkl ? GemmBackend::kMklPacked : GemmBackend::kNone;
}

}  // namespace

GemmBackend thread_gemm_backend() { return choose_backend(); }

const char* gemm_backend_name(GemmBackend backend) {
  switch (backend) {
    case GemmBackend::kBrgemm: return "brgemm";
    case GemmBackend::kMklPacked: return "mkl";
    case GemmBackend::kNone: return "none";
  }
  return "none";
}

ThreadGemm::ThreadGemm(int64_t M, int64_t N, int64_t K)
    : backend_(thread_gemm_backend()), M_(M), N_(N), K_(K) {
  TORCH_CHECK(backend_ != GemmBackend::kNone, "rnnkit: no single-thread GEMM back-end here");
}

int64_t ThreadGemm::packed_floats() const {
  if (backend_ == GemmBackend::kMklPacked) return whole_lines(mkl::packed_b_floats(M_, N_, K_));
  return whole_lines(K_ * N_);
}

void ThreadGemm::pack_transposed(const float* w, float* packed) const {
  if (backend_ == GemmBackend::kMklPacked) {
    cblas_sgemm_pack(mkl::kRowMajor, mkl::kBMatrix, mkl::kTrans, M_, N_, K_, 1.0f, w, K_, packed);
    return;
  }
  // (K, N) row-major: column n of R is row n of W. Blocks of rows keep both
  // sides in cache.
  constexpr int64_t kBlock = 16;
  for (int64_t n0 = 0; n0 < N_; n0 += kBlock)
    for (int64_t k0 = 0; k0 < K_; k0 += kBlock)
      for (int64_t n = n0; n < std::min(N_, n0 + kBlock); ++n)
        for (int64_t k = k0; k < std::min(K_, k0 + kBlock); ++k) packed[k * N_ + n] = w[n * K_ + k];
}

void ThreadGemm::pack_plain(const float* w, int64_t ldw, float* packed) const {
  if (backend_ == GemmBackend::kMklPacked) {
    cblas_sgemm_pack(mkl::kRowMajor, mkl::kBMatrix, mkl::kNoTrans, M_, N_, K_, 1.0f, w, ldw, packed);
    return;
  }
  for (int64_t k = 0; k < K_; ++k) std::memcpy(packed + k * N_, w + k * ldw, N_ * sizeof(float));
}

void ThreadGemm::run(const float* a, int64_t lda, const float* packed, float* c, int64_t ldc,
                     bool accumulate) const {
  if (backend_ == GemmBackend::kMklPacked) {
    cblas_sgemm_compute(mkl::kRowMajor, mkl::kNoTrans, mkl::kPacked, M_, N_, K_, a, lda, packed, N_,
                        accumulate ? 1.0f : 0.0f, c, ldc);
    return;
  }
#if defined(CPUBLAS_BRGEMM_F32F32F32)
  at::native::cpublas::brgemm(M_, N_, K_, lda, N_, ldc, accumulate, a, packed, c, false);
#endif
}

}  // namespace rnnkit
