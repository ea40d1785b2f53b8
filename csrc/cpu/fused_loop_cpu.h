// The CPU's fused time loops as strategies (fused_loop_cpu.cpp).
#pragma once

#include "../strategy.h"

namespace rnnkit {

// "fused_loop" (projects_input false) or "fused_loop_projecting".
std::unique_ptr<Strategy> make_fused_loop(bool projects_input);

}  // namespace rnnkit
