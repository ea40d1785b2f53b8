// "torch_native": a layer run as torch.nn runs it on the CPU (at::lstm, which
// is oneDNN's fused LSTM where torch carries oneDNN). Inference only (torch
// keeps its own state for its own backward) and never picked by the
// strategies' rules: it is one of the candidates the planner times, so that
// no shape runs slower than torch.nn would run it on this machine.
#pragma once

#include "../strategy.h"

namespace rnnkit {

std::unique_ptr<Strategy> make_torch_native();

}  // namespace rnnkit
