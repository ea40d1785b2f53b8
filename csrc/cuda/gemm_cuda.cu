#include "gemm_cuda.h"

#include <ATen/cuda/CUDAContextLight.h>
#include <c10/util/Exception.h>
#include <cublas_v2.h>

#include <limits>

// cuBLAS comes with libtorch_cuda, which this extension links: its symbols
// resolve through that dependency, as ATen's own calls do.

namespace rnnkit {
namespace {

void check(cublasStatus_t status, const char* what) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "rnnkit: ", what, " failed with cuBLAS status ",
              static_cast<int>(status));
}

int as_int(int64_t v) {
  TORCH_CHECK(v <= std::numeric_limits<int>::max(), "rnnkit: a step GEMM dimension (", v,
              ") exceeds cuBLAS's int range");
  return static_cast<int>(v);
}

}  // namespace

// cuBLAS is column-major: a row-major (r, c) matrix is its transpose there.
// So out^T (N, M) = op(W)^T (N, K) · in^T (K, M), with W first: a forward
// weight (N, K) row-major is (K, N) column-major and is read transposed; a
// backward weight (K, N) is (N, K) column-major and is read as it is.
void step_gemm_cuda(const StepGemm& g) {
  if (g.M == 0 || g.N == 0) return;
  // The current stream's handle; torch sets its stream, workspace and math
  // mode (TF32 per torch.backends.cuda.matmul.allow_tf32) on every fetch.
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  const int m = as_int(g.N), n = as_int(g.M), k = as_int(g.K);
  const int lda = as_int(g.transposed ? g.K : g.N);
  const cublasOperation_t op_w = g.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
  switch (g.dtype) {
    case at::kFloat: {
      const float one = 1, beta = g.accumulate ? 1 : 0;
      check(cublasSgemm(handle, op_w, CUBLAS_OP_N, m, n, k, &one, static_cast<const float*>(g.weight),
                        lda, static_cast<const float*>(g.in), k, &beta, static_cast<float*>(g.out), m),
            "cublasSgemm");
      return;
    }
    case at::kDouble: {
      const double one = 1, beta = g.accumulate ? 1 : 0;
      check(cublasDgemm(handle, op_w, CUBLAS_OP_N, m, n, k, &one,
                        static_cast<const double*>(g.weight), lda, static_cast<const double*>(g.in), k,
                        &beta, static_cast<double*>(g.out), m),
            "cublasDgemm");
      return;
    }
    case at::kHalf:
    case at::kBFloat16: {
      // Half storage, float accumulation, as torch's mm with its default
      // settings (reduced-precision reductions allowed).
      const cudaDataType_t type = g.dtype == at::kHalf ? CUDA_R_16F : CUDA_R_16BF;
      const float one = 1, beta = g.accumulate ? 1 : 0;
      check(cublasGemmEx(handle, op_w, CUBLAS_OP_N, m, n, k, &one, g.weight, type, lda, g.in, type, k,
                         &beta, g.out, type, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
      return;
    }
    default:
      TORCH_CHECK(false, "rnnkit: no step GEMM for dtype ", g.dtype);
  }
}

}  // namespace rnnkit
