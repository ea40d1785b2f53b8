// The CUDA step kernels: the thread bodies of step_kernels.h, one launch per
// step kernel call, on the current stream, no allocation and no host sync
// (so a whole sequence can be captured in a CUDA graph). Half types are
// stored as T and computed in at::opmath_type<T> (float).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "../step_loop.h"
#include "gemm_cuda.h"
#include "step_cuda.h"
#include "step_kernels.h"

namespace rnnkit {
namespace {

using cuda_steps::Launch;
using cuda_steps::ThreadPlace;

__device__ __forceinline__ ThreadPlace this_thread() {
  return {static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y,
          static_cast<int64_t>(gridDim.y) * blockDim.y,
          static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
          static_cast<int64_t>(gridDim.x) * blockDim.x};
}

template <class T, CellKind K>
__global__ void forward_kernel(const ForwardStep a) {
  cuda_steps::forward_thread<T, K>(a, this_thread());
}

template <class T>
__global__ void project_kernel(const ProjectStep a) {
  cuda_steps::project_thread<T>(a, this_thread());
}

template <class T, CellKind K>
__global__ void backward_kernel(const BackwardStep a) {
  cuda_steps::backward_thread<T, K>(a, this_thread());
}

template <class T>
__global__ void project_backward_kernel(const ProjectBackwardStep a) {
  cuda_steps::project_backward_thread<T>(a, this_thread());
}

// Runs `launch(grid, block, stream)` for a rows x cols job and checks it.
template <class Fn>
void launch_over(int64_t rows, int64_t cols, const Fn& launch) {
  if (rows == 0 || cols == 0) return;
  const Launch l = cuda_steps::launch_for(rows, cols);
  launch(dim3(static_cast<unsigned>(l.grid_x), static_cast<unsigned>(l.grid_y)),
         dim3(static_cast<unsigned>(l.block_x), static_cast<unsigned>(l.block_y)),
         c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define RNNKIT_CUDA_DISPATCH(dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "rnnkit_cuda_step", __VA_ARGS__)

class CudaStepKernels final : public StepKernels {
 public:
  void forward(const ForwardStep& a) const override {
    const StepShape& s = a.shape;
    RNNKIT_CUDA_DISPATCH(s.dtype, [&] {
      with_kind(s.kind, [&](auto k) {
        launch_over(s.B, std::max(s.H, s.P), [&](dim3 grid, dim3 block, cudaStream_t stream) {
          forward_kernel<scalar_t, decltype(k)::value><<<grid, block, 0, stream>>>(a);
        });
      });
    });
  }

  void project(const ProjectStep& a) const override {
    RNNKIT_CUDA_DISPATCH(a.shape.dtype, [&] {
      launch_over(a.shape.B, a.shape.P, [&](dim3 grid, dim3 block, cudaStream_t stream) {
        project_kernel<scalar_t><<<grid, block, 0, stream>>>(a);
      });
    });
  }

  void backward(const BackwardStep& a) const override {
    const StepShape& s = a.shape;
    RNNKIT_CUDA_DISPATCH(s.dtype, [&] {
      with_kind(s.kind, [&](auto k) {
        launch_over(s.B, std::max(s.H, s.P), [&](dim3 grid, dim3 block, cudaStream_t stream) {
          backward_kernel<scalar_t, decltype(k)::value><<<grid, block, 0, stream>>>(a);
        });
      });
    });
  }

  void project_backward(const ProjectBackwardStep& a) const override {
    RNNKIT_CUDA_DISPATCH(a.shape.dtype, [&] {
      launch_over(a.shape.B, a.shape.P, [&](dim3 grid, dim3 block, cudaStream_t stream) {
        project_backward_kernel<scalar_t><<<grid, block, 0, stream>>>(a);
      });
    });
  }

  std::unique_ptr<StepGemm> step_gemm(const at::Tensor& weight, bool transposed, int64_t rows,
                                      int64_t /*calls*/) const override {
    return cuda_step_gemm(weight, transposed, rows);
  }
};

}  // namespace

// b_ih goes into the input GEMM (cuBLAS adds a contiguous bias in its epilogue).
std::unique_ptr<Strategy> make_cuda_step_loop() {
  return make_step_loop(std::make_unique<CudaStepKernels>(), InputGemm::kWithBias);
}

}  // namespace rnnkit
