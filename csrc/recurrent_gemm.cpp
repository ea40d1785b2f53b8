#include "recurrent_gemm.h"

#include <limits>

// MKL's packed-GEMM entry points, exported by torch's CPU library on builds
// that carry MKL. Weak, so that rnnkit loads (and falls back to at::mm) on
// builds without them.
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc)
    __attribute__((weak));
// The C entry point (the lower-case names are the Fortran ones, taking int*).
int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));
}

namespace rnnkit {
namespace {

// CBLAS enum values (mkl_cblas.h).
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

bool mkl_packing_available() {
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
         cblas_sgemm_compute != nullptr;
}

bool fits_int(int64_t v) { return v <= std::numeric_limits<int>::max(); }

// Below this many multiply-adds a step's GEMM is done sooner by one thread
// than split across threads that must then meet again (batch-1 inference).
constexpr int64_t kSingleThreadMacs = int64_t(1) << 18;

}  // namespace

RecurrentGemm::RecurrentGemm(const at::Tensor& weight, bool transposed, int64_t rows,
                             void (*device_gemm)(const StepGemm&))
    : weight_(weight.contiguous()), transposed_(transposed), device_gemm_(device_gemm) {
  n_ = transposed ? weight_.size(0) : weight_.size(1);
  k_ = transposed ? weight_.size(1) : weight_.size(0);
  m_ = rows;
  const bool use_packed = weight_.device().is_cpu() && weight_.scalar_type() == at::kFloat &&
                          mkl_packing_available() && m_ > 0 && n_ > 0 && k_ > 0 &&
                          fits_int(m_) && fits_int(n_) && fits_int(k_);
  if (!use_packed) return;
  const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, m_, n_, k_);
  packed_ = at::empty({static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float))},
                      weight_.options());
  cblas_sgemm_pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, m_, n_, k_, 1.0f,
                   weight_.data_ptr<float>(), weight_.size(1), packed_.data_ptr<float>());
}

void RecurrentGemm::run(at::Tensor& out, const at::Tensor& in, bool accumulate) const {
  if (packed_.defined()) {
    const bool one_thread = m_ * n_ * k_ < kSingleThreadMacs && MKL_Set_Num_Threads_Local;
    const int before = one_thread ? MKL_Set_Num_Threads_Local(1) : 0;
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, in.data_ptr<float>(), k_,
                        packed_.data_ptr<float>(), n_, accumulate ? 1.0f : 0.0f,
                        out.data_ptr<float>(), n_);
    if (one_thread) MKL_Set_Num_Threads_Local(before);
    return;
  }
  if (device_gemm_) {
    device_gemm_({weight_.scalar_type(), m_, n_, k_, in.data_ptr(), weight_.data_ptr(), transposed_,
                  out.data_ptr(), accumulate});
    return;
  }
  const at::Tensor w = transposed_ ? weight_.t() : weight_;
  if (accumulate) out.addmm_(in, w);
  else at::mm_out(out, in, w);
}

}  // namespace rnnkit
