// The CUDA step kernels run on the CPU: every block and thread of the grid
// step_cuda.cu would launch, one after another, through the same thread
// bodies (cuda/step_kernels.h). A strategy for the CPU that the planner
// never picks by itself: forced in the tests ("cuda_step_emulated"), it
// checks the CUDA kernels' indexing against the CPU strategies where no GPU is.
#pragma once

#include "../strategy.h"

namespace rnnkit {

std::unique_ptr<Strategy> make_cuda_emulated_step_loop();

}  // namespace rnnkit
