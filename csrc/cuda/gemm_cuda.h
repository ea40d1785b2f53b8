// The step GEMM on the GPU, called straight into cuBLAS on the current
// stream: ATen's mm costs several microseconds of host time per call
// (dispatch, checks, output handling), and a time loop that launches one
// GEMM and one small kernel per step is bound by exactly that time.
#pragma once

#include "../step.h"

namespace rnnkit {

void step_gemm_cuda(const StepGemm& g);

}  // namespace rnnkit
