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

// cuBLAS is column-major: a row-major (r, c) matrix is its transpose there.
// So out^T (N, M) = op(W)^T (N, K) · in^T (K, M), with W first: a forward
// weight (N, K) row-major is (K, N) column-major and is read transposed; a
// backward weight (K, N) is (N, K) column-major and is read as it is.
class CublasStepGemm final : public StepGemm {
 public:
  CublasStepGemm(const at::Tensor& weight, bool transposed, int64_t rows)
      : weight_(weight),
        transposed_(transposed),
        m_(as_int(transposed ? weight.size(0) : weight.size(1))),
        n_(as_int(rows)),
        k_(as_int(transposed ? weight.size(1) : weight.size(0))) {}

  void run(const at::Tensor& in, at::Tensor& out, bool accumulate) const override {
    if (m_ == 0 || n_ == 0) return;
    // The current stream's handle; torch sets its stream, workspace and math
    // mode (TF32 per torch.backends.cuda.matmul.allow_tf32) on every fetch.
    cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
    const int lda = transposed_ ? k_ : m_;
    const cublasOperation_t op_w = transposed_ ? CUBLAS_OP_T : CUBLAS_OP_N;
    const void* w = weight_.data_ptr();
    switch (weight_.scalar_type()) {
      case at::kFloat: {
        const float one = 1, beta = accumulate ? 1 : 0;
        check(cublasSgemm(handle, op_w, CUBLAS_OP_N, m_, n_, k_, &one, static_cast<const float*>(w),
                          lda, in.data_ptr<float>(), k_, &beta, out.data_ptr<float>(), m_),
              "cublasSgemm");
        return;
      }
      case at::kDouble: {
        const double one = 1, beta = accumulate ? 1 : 0;
        check(cublasDgemm(handle, op_w, CUBLAS_OP_N, m_, n_, k_, &one, static_cast<const double*>(w),
                          lda, in.data_ptr<double>(), k_, &beta, out.data_ptr<double>(), m_),
              "cublasDgemm");
        return;
      }
      case at::kHalf:
      case at::kBFloat16: {
        // Half storage, float accumulation, as torch's mm with its default
        // settings (reduced-precision reductions allowed).
        const cudaDataType_t type = weight_.scalar_type() == at::kHalf ? CUDA_R_16F : CUDA_R_16BF;
        const float one = 1, beta = accumulate ? 1 : 0;
        check(cublasGemmEx(handle, op_w, CUBLAS_OP_N, m_, n_, k_, &one, w, type, lda, in.data_ptr(),
                           type, k_, &beta, out.data_ptr(), type, m_, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
        return;
      }
      default:
        TORCH_CHECK(false, "rnnkit: no step GEMM for dtype ", weight_.scalar_type());
    }
  }

 private:
  at::Tensor weight_;
  bool transposed_;
  int m_, n_, k_;  // cuBLAS's view: out^T (m, n) = op(W)^T (m, k) · in^T (k, n)
};

}  // namespace

std::unique_ptr<StepGemm> cuda_step_gemm(const at::Tensor& weight, bool transposed, int64_t rows) {
  return std::make_unique<CublasStepGemm>(weight, transposed, rows);
}

}  // namespace rnnkit
