#include "cuda_emulated.h"

#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "../cuda/step_kernels.h"
#include "../step_loop.h"

namespace rnnkit {
namespace {

using cuda_steps::Launch;
using cuda_steps::ThreadPlace;

// Calls body(place) for every thread of the grid a rows x cols job launches.
template <class Body>
void each_thread(int64_t rows, int64_t cols, const Body& body) {
  if (rows == 0 || cols == 0) return;
  const Launch l = cuda_steps::launch_for(rows, cols);
  for (int64_t by = 0; by < l.grid_y; ++by)
    for (int64_t bx = 0; bx < l.grid_x; ++bx)
      for (int64_t ty = 0; ty < l.block_y; ++ty)
        for (int64_t tx = 0; tx < l.block_x; ++tx)
          body(ThreadPlace{by * l.block_y + ty, l.grid_y * l.block_y, bx * l.block_x + tx,
                           l.grid_x * l.block_x});
}

#define RNNKIT_EMULATED_DISPATCH(dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "rnnkit_cuda_emulated", __VA_ARGS__)

class EmulatedCudaSteps final : public StepKernels {
 public:
  void forward(const ForwardStep& a) const override {
    const StepShape& s = a.shape;
    RNNKIT_EMULATED_DISPATCH(s.dtype, [&] {
      with_kind(s.kind, [&](auto k) {
        each_thread(s.B, std::max(s.H, s.P), [&](const ThreadPlace& p) {
          cuda_steps::forward_thread<scalar_t, decltype(k)::value>(a, p);
        });
      });
    });
  }
  void project(const ProjectStep& a) const override {
    RNNKIT_EMULATED_DISPATCH(a.shape.dtype, [&] {
      each_thread(a.shape.B, a.shape.P,
                  [&](const ThreadPlace& p) { cuda_steps::project_thread<scalar_t>(a, p); });
    });
  }
  void backward(const BackwardStep& a) const override {
    const StepShape& s = a.shape;
    RNNKIT_EMULATED_DISPATCH(s.dtype, [&] {
      with_kind(s.kind, [&](auto k) {
        each_thread(s.B, std::max(s.H, s.P), [&](const ThreadPlace& p) {
          cuda_steps::backward_thread<scalar_t, decltype(k)::value>(a, p);
        });
      });
    });
  }
  void project_backward(const ProjectBackwardStep& a) const override {
    RNNKIT_EMULATED_DISPATCH(a.shape.dtype, [&] {
      each_thread(a.shape.B, a.shape.P, [&](const ThreadPlace& p) {
        cuda_steps::project_backward_thread<scalar_t>(a, p);
      });
    });
  }
  std::unique_ptr<StepGemm> step_gemm(const at::Tensor& weight, bool transposed, int64_t,
                                      int64_t) const override {
    return aten_step_gemm(weight, transposed);
  }
};

class EmulatedCudaStepLoop final : public Strategy {
 public:
  // As on CUDA, b_ih goes into the input GEMM.
  EmulatedCudaStepLoop()
      : loop_(make_step_loop(std::make_unique<EmulatedCudaSteps>(), InputGemm::kWithBias)) {}
  const char* name() const override { return "cuda_step_emulated"; }
  Fit fit(const LayerShape&, Pass) const override {
    return Fit::declines("the CUDA step kernels emulated thread by thread: only when forced");
  }
  bool measured() const override { return false; }
  InputGemm input_gemm(const LayerShape& s) const override { return loop_->input_gemm(s); }
  void forward(ForwardJob& job) const override { loop_->forward(job); }
  void backward(BackwardJob& job) const override { loop_->backward(job); }

 private:
  std::unique_ptr<Strategy> loop_;
};

}  // namespace

std::unique_ptr<Strategy> make_cuda_emulated_step_loop() {
  return std::make_unique<EmulatedCudaStepLoop>();
}

}  // namespace rnnkit
