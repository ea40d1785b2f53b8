// The step GEMM on the GPU, called straight into cuBLAS on the current
// stream: ATen's mm costs several microseconds of host time per call
// (dispatch, checks, output handling), and a time loop that launches one
// GEMM and one small kernel per step is bound by exactly that time.
#pragma once

#include "../step.h"

namespace rnnkit {

std::unique_ptr<StepGemm> cuda_step_gemm(const at::Tensor& weight, bool transposed, int64_t rows);

}  // namespace rnnkit
