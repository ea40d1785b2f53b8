#include "step_loop.h"

#include <ATen/ATen.h>

#include <optional>
#include <utility>

namespace rnnkit {

namespace {

// ATen's mm with the weight as it stands, for devices with no GEMM of their own.
class AtenStepGemm final : public StepGemm {
 public:
  AtenStepGemm(const at::Tensor& weight, bool transposed)
      : weight_(transposed ? weight.t() : weight) {}
  void run(const at::Tensor& in, at::Tensor& out, bool accumulate) const override {
    if (accumulate) out.addmm_(in, weight_);
    else at::mm_out(out, in, weight_);
  }

 private:
  at::Tensor weight_;
};

const int64_t* lengths_ptr(const at::Tensor& lengths) {
  return lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
}

void* ptr_or_null(const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr; }

class StepLoop final : public Strategy {
 public:
  StepLoop(std::unique_ptr<StepKernels> kernels, InputGemm input)
      : kernels_(std::move(kernels)), input_(input) {}

  const char* name() const override { return "step_loop"; }
  Fit fit(const LayerShape&, Pass) const override { return Fit::runs(); }
  InputGemm input_gemm(const LayerShape&) const override { return input_; }

  void forward(ForwardJob& job) const override {
    const LayerShape& n = job.shape;
    const int64_t B = n.B, G = gate_count(n.kind) * n.H;
    const at::TensorOptions opts = job.x.options();
    at::Tensor h_cur = job.h;
    at::Tensor h_next = at::empty_like(h_cur);
    at::Tensor gh = at::empty({B, G}, opts);
    at::Tensor r = n.projection ? at::empty({B, n.H}, opts) : at::Tensor();
    const StepShape shape{n.kind, n.dtype, 0, n.T, B, n.H, n.P, n.reverse, lengths_ptr(job.lengths)};
    const ForwardStep pointers{shape, job.gx.data_ptr(), gh.data_ptr(), job.bias.data_ptr(),
                               nullptr, nullptr, ptr_or_null(r), ptr_or_null(job.c), nullptr,
                               job.y.data_ptr(), ptr_or_null(job.saved)};
    const auto hidden = kernels_->step_gemm(job.w_hh, /*transposed=*/true, B, n.T);
    const auto projection =
        n.projection ? kernels_->step_gemm(job.w_hr, true, B, n.T) : std::unique_ptr<StepGemm>();
    for (int64_t s = 0; s < n.T; ++s) {
      ForwardStep step = pointers;
      step.shape.step = s;
      step.h_prev = h_cur.data_ptr();
      step.h_next = h_next.data_ptr();
      hidden->run(h_cur, gh, /*accumulate=*/false);
      kernels_->forward(step);
      if (projection) {
        projection->run(r, h_next, false);
        kernels_->project({step.shape, h_cur.data_ptr(), h_next.data_ptr(), job.y.data_ptr(),
                           ptr_or_null(job.saved)});
      }
      std::swap(h_cur, h_next);
    }
    job.h = h_cur;
  }

  void backward(BackwardJob& job) const override {
    const LayerShape& n = job.shape;
    const int64_t B = n.B, P = n.P, G = gate_count(n.kind) * n.H;
    const at::TensorOptions opts = job.x.options();
    at::Tensor dh_cur = job.dh;
    at::Tensor dh_next = at::empty_like(dh_cur);
    at::Tensor dg_step = at::empty({B, G}, opts);
    at::Tensor dhp_step = n.projection ? at::empty({B, P}, opts) : at::Tensor();
    at::Tensor dr = n.projection ? at::empty({B, n.H}, opts) : at::Tensor();
    const StepShape shape{n.kind, n.dtype, 0, n.T, B, n.H, P, n.reverse, lengths_ptr(job.lengths)};
    const BackwardStep pointers{shape, ptr_or_null(job.dy), nullptr, ptr_or_null(dr),
                                ptr_or_null(job.dc), job.h0.data_ptr(), ptr_or_null(job.c0),
                                job.saved.data_ptr(), job.dgx.data_ptr(), job.dgh.data_ptr(),
                                dg_step.data_ptr(), nullptr, ptr_or_null(job.r_seq)};
    const auto hidden = kernels_->step_gemm(job.w_hh, /*transposed=*/false, B, n.T);
    const auto projection =
        n.projection ? kernels_->step_gemm(job.w_hr, false, B, n.T) : std::unique_ptr<StepGemm>();
    for (int64_t s = n.T - 1; s >= 0; --s) {
      BackwardStep step = pointers;
      step.shape.step = s;
      step.dh = dh_cur.data_ptr();
      step.dh_next = dh_next.data_ptr();
      if (projection) {
        kernels_->project_backward({step.shape, ptr_or_null(job.dy), dh_cur.data_ptr(),
                                    job.dhp_seq.data_ptr(), dhp_step.data_ptr()});
        projection->run(dhp_step, dr, false);
      }
      kernels_->backward(step);
      hidden->run(dg_step, dh_next, /*accumulate=*/true);
      std::swap(dh_cur, dh_next);
    }
    job.dh = dh_cur;
  }

 private:
  std::unique_ptr<StepKernels> kernels_;
  InputGemm input_;
};

}  // namespace

std::unique_ptr<StepGemm> aten_step_gemm(const at::Tensor& weight, bool transposed) {
  return std::make_unique<AtenStepGemm>(weight, transposed);
}

std::unique_ptr<Strategy> make_step_loop(std::unique_ptr<StepKernels> kernels, InputGemm input) {
  TORCH_CHECK(input != InputGemm::kNone, "rnnkit: the step loop reads its input projections");
  return std::make_unique<StepLoop>(std::move(kernels), input);
}

}  // namespace rnnkit
