// The persistent kernels' CUDA launcher for the persistent strategies
// (persistent_strategy.h): device properties cached per device, TF32 as
// torch's matmul setting says, launches on PyTorch's current stream.
#pragma once

#include "../persistent_strategy.h"

namespace rnnkit {

std::shared_ptr<const PersistentLauncher> cuda_persistent_launcher();

}  // namespace rnnkit
