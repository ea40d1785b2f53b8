#include "single_step_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <ATen/Parallel.h>
#include <algorithm>
#include <type_traits>
#include <ATen/native/CPUBlas.h>

#include "../step_loop.h"
#include "small_gemm.h"
#include "step_cpu.h"
#include "thread_gemm.h"
#include "weight_cache.h"

namespace rnnkit {
namespace {

// From this many rows on, brgemm on the transposed weight (kept between
// calls: weight_cache.h) beats the dot products on the weight as it stands.
constexpr int64_t kRowsForBrgemm = 4;
constexpr int64_t kBrgemmColumns = 256;    // columns of the output per brgemm call
// Below this many multiply-adds a product stays on one thread: starting and
// joining the others costs more (far more where they wait for a busy core).
constexpr int64_t kParallelMacs = int64_t(1) << 20;

// out (M, N) = a (M, K) · W^T for a (N, K) weight.
template <class T>
void product(int64_t M, int64_t N, int64_t K, const T* a, const at::Tensor& w, T* out) {
#if defined(CPUBLAS_BRGEMM_F32F32F32)
  if constexpr (std::is_same_v<T, float>) {
    if (M >= kRowsForBrgemm && thread_gemm_backend() == GemmBackend::kBrgemm) {
      const at::Tensor wt = cached_transpose(w);
      if (wt.defined()) {
        const float* b = wt.data_ptr<float>();
        // Column blocks of at most kBrgemmColumns, as many as a multiple of the
        // threads (an RNN's 256 gate columns are two blocks for two threads, not one).
        const int64_t threads = M * N * K < kParallelMacs ? 1 : at::get_num_threads();
        const int64_t least = (N + kBrgemmColumns - 1) / kBrgemmColumns;
        const int64_t wanted = (least + threads - 1) / threads * threads;
        const int64_t columns = std::max<int64_t>(16, ((N + wanted - 1) / wanted + 15) / 16 * 16);
        const int64_t blocks = (N + columns - 1) / columns;
        at::parallel_for(0, blocks, threads == 1 ? blocks : 1, [&](int64_t b0, int64_t b1) {
          for (int64_t blk = b0; blk < b1; ++blk) {
            const int64_t n0 = blk * columns;
            at::native::cpublas::brgemm(M, std::min(columns, N - n0), K, K, N, N, false, a, b + n0,
                                        out + n0, false);
          }
        });
        return;
      }
    }
  }
#endif
  small_gemm_nt<T>(M, N, K, a, K, w.data_ptr<T>(), K, out, N, false);
}

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
      product<scalar_t>(B, G, I, job.x.data_ptr<scalar_t>(), job.w_ih, gx);
      product<scalar_t>(B, G, P, job.h.data_ptr<scalar_t>(), job.w_hh, gh);
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
