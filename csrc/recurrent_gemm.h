// The small GEMM a time loop runs once per step with the same weight:
// out = in · W^T (forward) or out += in · W (backward). On the CPU in float32,
// when torch carries MKL, the weight is packed once per call into the layout
// MKL's kernels read, which the step GEMMs then reuse; where the device
// registered a step GEMM of its own (CUDA: straight into cuBLAS), that one;
// elsewhere ATen's mm.
#pragma once

#include <ATen/ATen.h>

#include "step.h"

namespace rnnkit {

class RecurrentGemm {
 public:
  // weight: (N, K) when transposed (out = in · W^T), else (K, N);
  // rows: the M of every call; device_gemm: StepKernels::gemm (may be null).
  RecurrentGemm(const at::Tensor& weight, bool transposed, int64_t rows,
                void (*device_gemm)(const StepGemm&));

  // out (rows, N) = in (rows, K) · op(W), or += when accumulate.
  void run(at::Tensor& out, const at::Tensor& in, bool accumulate) const;

 private:
  at::Tensor weight_;
  bool transposed_;
  at::Tensor packed_;  // defined when the packed MKL path is used
  void (*device_gemm_)(const StepGemm&);
  int64_t m_ = 0, n_ = 0, k_ = 0;
};

}  // namespace rnnkit
