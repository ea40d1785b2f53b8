// The step GEMM on the CPU. In float32, where torch carries MKL, the weight
// is packed once per call into the layout MKL's kernels read, and every step
// reuses it; elsewhere ATen's mm.
#include <ATen/ATen.h>

#include "mkl_packed.h"
#include "step_cpu.h"

namespace rnnkit {
namespace {

using namespace mkl;

// Below this many multiply-adds a step's GEMM is done sooner by one thread
// than split across threads that must then meet again (batch-1 inference).
constexpr int64_t kSingleThreadMacs = int64_t(1) << 18;

class MklPackedGemm final : public StepGemm {
 public:
  MklPackedGemm(const at::Tensor& weight, bool transposed, int64_t rows)
      : m_(rows),
        n_(transposed ? weight.size(0) : weight.size(1)),
        k_(transposed ? weight.size(1) : weight.size(0)) {
    packed_ = at::empty({packed_b_floats(m_, n_, k_)}, weight.options());
    cblas_sgemm_pack(kRowMajor, kBMatrix, transposed ? kTrans : kNoTrans, m_, n_, k_, 1.0f,
                     weight.data_ptr<float>(), weight.size(1), packed_.data_ptr<float>());
  }

  void run(const at::Tensor& in, at::Tensor& out, bool accumulate) const override {
    const OneThread one_thread(m_ * n_ * k_ < kSingleThreadMacs);
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, in.data_ptr<float>(), k_,
                        packed_.data_ptr<float>(), n_, accumulate ? 1.0f : 0.0f,
                        out.data_ptr<float>(), n_);
  }

 private:
  int64_t m_, n_, k_;
  at::Tensor packed_;
};

}  // namespace

std::unique_ptr<StepGemm> cpu_step_gemm(const at::Tensor& weight, bool transposed, int64_t rows) {
  const int64_t n = transposed ? weight.size(0) : weight.size(1);
  const int64_t k = transposed ? weight.size(1) : weight.size(0);
  const bool packs = weight.scalar_type() == at::kFloat && weight.is_contiguous() &&
                     packing_available() && rows > 0 && n > 0 && k > 0 && fits_int(rows) &&
                     fits_int(n) && fits_int(k);
  if (packs) return std::make_unique<MklPackedGemm>(weight, transposed, rows);
  return aten_step_gemm(weight, transposed);
}

}  // namespace rnnkit
