#include "single_step_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../step_loop.h"
#include "small_gemm.h"
#include "step_cpu.h"

namespace rnnkit {
namespace {

class SingleStep final : public Strategy {
 public:
  SingleStep()
      : kernels_(make_cpu_step_kernels()),
        backward_(make_step_loop(make_cpu_step_kernels(), InputGemm::kWithoutBias)) {}

  const char* name() const override { return "single_step"; }

  Fit fit(const LayerShape& s, Pass) const override {
    if (s.T != 1) return Fit::cannot("one step only (T = 1)");
    if (s.dtype != at::kFloat && s.dtype != at::kDouble) return Fit::cannot("float32 and float64 only");
    if (s.projection) return Fit::cannot("no projection (proj_size)");
    return Fit::runs();
  }

  InputGemm input_gemm(const LayerShape&) const override { return InputGemm::kNone; }
  bool keeps_initial_state() const override { return true; }

  void forward(ForwardJob& job) const override {
    const LayerShape& n = job.shape;
    const int64_t B = n.B, I = n.I, P = n.P, G = gate_count(n.kind) * n.H;
    const at::Tensor gates = at::empty({2, B, G}, job.x.options());
    // New state tensors: the step reads h0 and c0 where they are (the driver
    // does not copy them for this strategy: keeps_initial_state()).
    const at::Tensor h_next = at::empty_like(job.h);
    const at::Tensor c_next = job.c.numel() ? at::empty_like(job.c) : job.c;
    AT_DISPATCH_FLOATING_TYPES(n.dtype, "rnnkit_single_step", [&] {
      scalar_t* gx = gates.data_ptr<scalar_t>();
      scalar_t* gh = gx + B * G;
      small_gemm_nt<scalar_t>(B, G, I, job.x.data_ptr<scalar_t>(), I, job.w_ih.data_ptr<scalar_t>(), I,
                              gx, G, false);
      small_gemm_nt<scalar_t>(B, G, P, job.h.data_ptr<scalar_t>(), P, job.w_hh.data_ptr<scalar_t>(), P,
                              gh, G, false);
      const StepShape shape{n.kind, n.dtype, 0, 1, B, n.H, P, n.reverse,
                            job.lengths.defined() ? job.lengths.data_ptr<int64_t>() : nullptr};
      kernels_->forward({shape, gx, gh, job.bias.data_ptr(), job.h.data_ptr(), h_next.data_ptr(),
                         nullptr, c_next.numel() ? c_next.data_ptr() : nullptr,
                         job.c.numel() ? job.c.data_ptr() : nullptr, job.y.data_ptr(),
                         job.saved.numel() ? job.saved.data_ptr() : nullptr});
    });
    job.h = h_next;
    job.c = c_next;
  }

  // One step back: the step loop, whose step GEMM reads the weight as it
  // stands for so few calls.
  void backward(BackwardJob& job) const override { backward_->backward(job); }

 private:
  std::unique_ptr<StepKernels> kernels_;
  std::unique_ptr<Strategy> backward_;
};

}  // namespace

std::unique_ptr<Strategy> make_single_step() { return std::make_unique<SingleStep>(); }

}  // namespace rnnkit
