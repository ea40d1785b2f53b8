// The CUDA step loop: the engine's step loop (step_loop.h) with the CUDA
// step kernels and cuBLAS step GEMMs (step_cuda.cu).
#pragma once

#include "../strategy.h"

namespace rnnkit {

std::unique_ptr<Strategy> make_cuda_step_loop();

}  // namespace rnnkit
