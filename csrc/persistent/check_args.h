// Whether a launch's arguments agree with its plan: sizes, dtype, cell,
// directions, the pointers each cell needs, strides, the workspace. Host
// code, torch-free, run by the entry points before any CUDA call (and by the
// CPU tests), so a caller's mistake is a Status, never a bad memory access.
#pragma once

#include "args.h"
#include "plan.h"

namespace rnnkit {
namespace persistent {

Status check_forward_args(const Plan& plan, const ForwardArgs& args, const void* workspace,
                          int64_t workspace_bytes);
Status check_backward_args(const Plan& plan, const BackwardArgs& args, const void* workspace,
                           int64_t workspace_bytes);

}  // namespace persistent
}  // namespace rnnkit
