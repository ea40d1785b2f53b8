#include "recurrent_gemm.h"

#include "cpu/mkl_packed.h"

namespace rnnkit {
namespace {

using namespace mkl;

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
                          packing_available() && m_ > 0 && n_ > 0 && k_ > 0 &&
                          fits_int(m_) && fits_int(n_) && fits_int(k_);
  if (!use_packed) return;
  packed_ = at::empty({packed_b_floats(m_, n_, k_)}, weight_.options());
  cblas_sgemm_pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, m_, n_, k_, 1.0f,
                   weight_.data_ptr<float>(), weight_.size(1), packed_.data_ptr<float>());
}

void RecurrentGemm::run(at::Tensor& out, const at::Tensor& in, bool accumulate) const {
  if (packed_.defined()) {
    const OneThread one_thread(m_ * n_ * k_ < kSingleThreadMacs);
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, in.data_ptr<float>(), k_,
                        packed_.data_ptr<float>(), n_, accumulate ? 1.0f : 0.0f,
                        out.data_ptr<float>(), n_);
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
