// The entry points of the persistent kernels (defined in
// csrc/cuda/persistent_kernels.cu): framework-free, raw pointers, a stream.
//
//   DeviceInfo dev;  device_info(device, &dev);          once per device
//   Plan plan = plan_layer({cell, dtype, allow_tf32, B, H, dirs, proj, pass[, groups]}, dev);
//   if (!plan.applies) -> the step loop (plan.reason says why)
//   workspace: plan.geo.workspace_bytes on the device, 16-byte aligned
//   Status s = forward(plan, args, workspace, bytes, stream);
//   if (!s.ok()) -> a Python error (s.message), or the step loop where
//                   s.code == DOES_NOT_APPLY (the grid cannot be co-resident)
//
// A launch zeroes its step flags with cudaMemsetAsync and launches on
// `stream`: nothing waits for the host, so it can be captured in a CUDA
// graph. A watchdog that trips (a GRID barrier waited more than
// args.watchdog_cycles) ends the kernel and leaves its record in the
// workspace, read by read_watchdog (which synchronizes the stream).
#pragma once

#include <cuda_runtime_api.h>

#include "args.h"
#include "plan.h"

namespace rnnkit {
namespace persistent {

// The planner's view of a CUDA device.
Status device_info(int device, DeviceInfo* out);

Status forward(const Plan& plan, const ForwardArgs& args, void* workspace, int64_t workspace_bytes,
               cudaStream_t stream);
Status backward(const Plan& plan, const BackwardArgs& args, void* workspace,
                int64_t workspace_bytes, cudaStream_t stream);

// WATCHDOG (with the group, rank and barrier that timed out) if the last
// launch on this workspace tripped its watchdog, else OK. Synchronizes `stream`.
Status read_watchdog(const Plan& plan, const void* workspace, cudaStream_t stream);

}  // namespace persistent
}  // namespace rnnkit
