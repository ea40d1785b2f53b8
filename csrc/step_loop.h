// The step loop: the strategy every device has, and the one that runs every
// layer (any dtype, projections, lengths, reverse). Per step the recurrent
// GEMM and one fused pass of the device's step kernels; the host drives the
// loop. Device-neutral: the device brings its StepKernels.
#pragma once

#include "step.h"
#include "strategy.h"

namespace rnnkit {

std::unique_ptr<Strategy> make_step_loop(std::unique_ptr<StepKernels> kernels, InputGemm input);

}  // namespace rnnkit
