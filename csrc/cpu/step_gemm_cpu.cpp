// The step GEMM on the CPU. For a loop of many steps in float32, where torch
// carries MKL, the weight is packed once per call into the layout MKL's
// kernels read, and every step reuses it; for a few steps packing costs more
// than it saves, and the small GEMMs read the weight as it stands.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "mkl_packed.h"
#include "small_gemm.h"
#include "step_cpu.h"

namespace rnnkit {
namespace {

using namespace mkl;

// Below this many multiply-adds a step's GEMM is done sooner by one thread
// than split across threads that must then meet again (batch-1 inference).
constexpr int64_t kSingleThreadMacs = int64_t(1) << 18;
// Fewer calls than this do not repay packing the weight.
constexpr int64_t kCallsToPack = 4;

// The small GEMMs (small_gemm.h) on the weight as it stands.
class SmallStepGemm final : public StepGemm {
 public:
  SmallStepGemm(const at::Tensor& weight, bool transposed) : weight_(weight), transposed_(transposed) {}

  void run(const at::Tensor& in, at::Tensor& out, bool accumulate) const override {
    AT_DISPATCH_FLOATING_TYPES(weight_.scalar_type(), "rnnkit_small_step_gemm", [&] {
      const int64_t M = in.size(0), K = in.size(1), N = out.size(1);
      if (transposed_) {
        small_gemm_nt<scalar_t>(M, N, K, in.data_ptr<scalar_t>(), K, weight_.data_ptr<scalar_t>(), K,
                                out.data_ptr<scalar_t>(), N, accumulate);
      } else {
        small_gemm_nn<scalar_t>(M, N, K, in.data_ptr<scalar_t>(), K, weight_.data_ptr<scalar_t>(), N,
                                out.data_ptr<scalar_t>(), N, accumulate);
      }
    });
  }

 private:
  at::Tensor weight_;
  bool transposed_;
};

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

std::unique_ptr<StepGemm> cpu_step_gemm(const at::Tensor& weight, bool transposed, int64_t rows,
                                        int64_t calls) {
  const at::ScalarType dtype = weight.scalar_type();
  if (calls < kCallsToPack && (dtype == at::kFloat || dtype == at::kDouble) && weight.is_contiguous())
    return std::make_unique<SmallStepGemm>(weight, transposed);
  const int64_t n = transposed ? weight.size(0) : weight.size(1);
  const int64_t k = transposed ? weight.size(1) : weight.size(0);
  const bool packs = weight.scalar_type() == at::kFloat && weight.is_contiguous() &&
                     packing_available() && rows > 0 && n > 0 && k > 0 && fits_int(rows) &&
                     fits_int(n) && fits_int(k);
  if (packs) return std::make_unique<MklPackedGemm>(weight, transposed, rows);
  return aten_step_gemm(weight, transposed);
}

}  // namespace rnnkit
