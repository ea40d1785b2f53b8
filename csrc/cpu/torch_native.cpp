#include "torch_native.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <vector>

namespace rnnkit {
namespace {

class TorchNative final : public Strategy {
 public:
  const char* name() const override { return "torch_native"; }

  Fit fit(const LayerShape& s, Pass pass) const override {
    if (s.kind != CellKind::LSTM) return Fit::cannot("only torch.nn's LSTM (oneDNN) is offered");
    if (pass == Pass::Backward || s.training) return Fit::cannot("inference only");
    if (s.lengths) return Fit::cannot("per-sequence lengths");
    return Fit::declines("taken only where the planner measured it fastest");
  }

  InputGemm input_gemm(const LayerShape&) const override { return InputGemm::kNone; }
  bool keeps_initial_state() const override { return true; }

  void forward(ForwardJob& job) const override {
    const c10::AutoGradMode no_grad(false);
    const bool biases = job.b_ih.defined() || job.b_hh.defined();
    std::vector<at::Tensor> params{job.w_ih, job.w_hh};
    if (biases) {
      params.push_back(job.b_ih.defined() ? job.b_ih : at::zeros_like(job.b_hh));
      params.push_back(job.b_hh.defined() ? job.b_hh : at::zeros_like(job.b_ih));
    }
    if (job.w_hr.defined()) params.push_back(job.w_hr);
    const bool reverse = job.shape.reverse;
    const at::Tensor x = reverse ? job.x.flip(0) : job.x;
    auto [y, h_n, c_n] = at::lstm(x, {job.h.unsqueeze(0), job.c.unsqueeze(0)}, params, biases,
                                  /*num_layers=*/1, /*dropout=*/0.0, /*train=*/false,
                                  /*bidirectional=*/false, /*batch_first=*/false);
    job.y = reverse ? y.flip(0) : y;
    job.h = h_n[0];
    job.c = c_n[0];
  }

  void backward(BackwardJob&) const override {
    TORCH_CHECK(false, "rnnkit: torch_native has no backward (inference only)");
  }
};

}  // namespace

std::unique_ptr<Strategy> make_torch_native() { return std::make_unique<TorchNative>(); }

}  // namespace rnnkit
