// The persistent kernels on CUDA: one launch runs a layer's whole time loop
// (csrc/persistent/: the bodies, the planner, the CPU-tested protocol), and
// the framework-free entry points of csrc/persistent/launch.h. No torch
// headers: this file compiles in seconds and the engine wraps it.
//
// Kernels: {forward, backward} x {float FFMA, float TF32, half MMA16,
// bfloat16 MMA16} x {block, cluster, grid}; the cell is a run-time value
// (one uniform branch per cell update), which keeps the count at 24.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../persistent/backend_cuda.cuh"
#include "../persistent/backward_body.h"
#include "../persistent/check_args.h"
#include "../persistent/forward_body.h"
#include "../persistent/launch.h"

namespace rnnkit {
namespace persistent {

namespace {

constexpr int64_t kDefaultWatchdogCycles = int64_t(1) << 32;  // about 2 s at 2 GHz

template <class Body, class Args, class BE>
__global__ void __launch_bounds__(kBlockThreads, 1)
    persistent_kernel(const __grid_constant__ Geometry g, const __grid_constant__ Args args,
                      const __grid_constant__ CudaWorkspace ws) {
  extern __shared__ __align__(16) unsigned char smem[];
  BE be(g, ws, smem);
  Body body(g, args, be);
  run_block(body, be, args.T);
}

Status cuda_error(cudaError_t e, const char* what) {
  return make_status(StatusCode::CUDA_ERROR, "persistent kernel: %s failed: %s (%s)", what,
                     cudaGetErrorName(e), cudaGetErrorString(e));
}

#define RNNKIT_CUDA_OR_RETURN(call)                  \
  do {                                               \
    const cudaError_t e_ = (call);                   \
    if (e_ != cudaSuccess) return cuda_error(e_, #call); \
  } while (0)

template <class Body, class Args, class BE>
Status launch(const Geometry& g, const Args& args, unsigned char* workspace, cudaStream_t stream) {
  auto kernel = persistent_kernel<Body, Args, BE>;
  RNNKIT_CUDA_OR_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(g.smem_bytes)));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(g.grid_blocks()));
  config.blockDim = dim3(static_cast<unsigned>(g.threads));
  config.dynamicSmemBytes = static_cast<size_t>(g.smem_bytes);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  config.attrs = attribute;
  config.numAttrs = 0;
  if (g.group == GroupKind::GRID) {
    // Blocks wait for each other: all must be resident at once. Check it
    // here, and let the cooperative attribute fail an oversized grid rather
    // than hang.
    int device = 0, sms = 0, per_sm = 0;
    RNNKIT_CUDA_OR_RETURN(cudaGetDevice(&device));
    RNNKIT_CUDA_OR_RETURN(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    RNNKIT_CUDA_OR_RETURN(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, kernel, g.threads, static_cast<size_t>(g.smem_bytes)));
    if (int64_t(per_sm) * sms < g.grid_blocks())
      return make_status(StatusCode::DOES_NOT_APPLY,
                         "does not apply: %lld blocks cannot all be resident (%d per SM x %d SMs)",
                         static_cast<long long>(g.grid_blocks()), per_sm, sms);
    attribute[0].id = cudaLaunchAttributeCooperative;
    attribute[0].val.cooperative = 1;
    config.numAttrs = 1;
  } else if (g.group == GroupKind::CLUSTER) {
    if (g.blocks > 8)
      RNNKIT_CUDA_OR_RETURN(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = static_cast<unsigned>(g.blocks);
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.numAttrs = 1;
    int clusters = 0;
    RNNKIT_CUDA_OR_RETURN(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
    if (clusters < 1)
      return make_status(StatusCode::DOES_NOT_APPLY,
                         "does not apply: no cluster of %d blocks with %lld bytes of shared memory fits",
                         g.blocks, static_cast<long long>(g.smem_bytes));
  }
  const int64_t watchdog = args.watchdog_cycles > 0 ? args.watchdog_cycles : kDefaultWatchdogCycles;
  const CudaWorkspace ws{reinterpret_cast<int64_t*>(workspace + g.ws_flags),
                         reinterpret_cast<int64_t*>(workspace + g.ws_error), workspace + g.ws_exchange,
                         watchdog};
  RNNKIT_CUDA_OR_RETURN(cudaMemsetAsync(workspace, 0, static_cast<size_t>(g.ws_clear_bytes), stream));
  RNNKIT_CUDA_OR_RETURN(cudaLaunchKernelEx(&config, kernel, g, args, ws));
  RNNKIT_CUDA_OR_RETURN(cudaGetLastError());
  return Status{};
}

template <class Body, class Args>
Status launch_group(const Geometry& g, const Args& args, unsigned char* workspace, cudaStream_t stream) {
  switch (g.group) {
    case GroupKind::BLOCK: return launch<Body, Args, BlockBackend>(g, args, workspace, stream);
    case GroupKind::CLUSTER: return launch<Body, Args, ClusterBackend>(g, args, workspace, stream);
    case GroupKind::GRID: return launch<Body, Args, GridBackend>(g, args, workspace, stream);
  }
  return make_status(StatusCode::INVALID_ARGUMENT, "persistent kernel: unknown group kind");
}

// Body<T, M>: ForwardBody or BackwardBody, by the plan's element type and math.
template <template <class, MathKind> class Body, class Args>
Status dispatch(const Plan& plan, const Args& args, void* workspace, cudaStream_t stream) {
  const Geometry& g = plan.geo;
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  if (g.dtype == DType::F32 && g.math == MathKind::FFMA)
    return launch_group<Body<float, MathKind::FFMA>>(g, args, ws, stream);
  if (g.dtype == DType::F32 && g.math == MathKind::TF32)
    return launch_group<Body<float, MathKind::TF32>>(g, args, ws, stream);
  if (g.dtype == DType::F16 && g.math == MathKind::MMA16)
    return launch_group<Body<__half, MathKind::MMA16>>(g, args, ws, stream);
  if (g.dtype == DType::BF16 && g.math == MathKind::MMA16)
    return launch_group<Body<__nv_bfloat16, MathKind::MMA16>>(g, args, ws, stream);
  return make_status(StatusCode::DOES_NOT_APPLY, "does not apply: no CUDA kernel for %s with %s",
                     dtype_name(g.dtype), math_name(g.math));
}

}  // namespace

Status device_info(int device, DeviceInfo* out) {
  auto attr = [&](cudaDeviceAttr a, int* v) { return cudaDeviceGetAttribute(v, a, device); };
  int smem_block = 0, smem_sm = 0, coop = 0, cluster = 0;
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrComputeCapabilityMajor, &out->cc_major));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrComputeCapabilityMinor, &out->cc_minor));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrMultiProcessorCount, &out->sm_count));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrMaxSharedMemoryPerBlockOptin, &smem_block));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor, &smem_sm));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrMaxRegistersPerMultiprocessor, &out->regs_per_sm));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrMaxThreadsPerMultiProcessor, &out->max_threads_per_sm));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrCooperativeLaunch, &coop));
  RNNKIT_CUDA_OR_RETURN(attr(cudaDevAttrClusterLaunch, &cluster));
  out->smem_per_block = smem_block;
  out->smem_per_sm = smem_sm;
  out->cooperative_launch = coop != 0;
  // 8 blocks is the portable cluster size; sm_90 allows 16 with the opt-in
  // the launch sets (cudaFuncAttributeNonPortableClusterSizeAllowed).
  out->max_cluster_blocks = cluster ? (out->cc_major >= 9 ? 16 : 8) : 0;
  return Status{};
}

Status forward(const Plan& plan, const ForwardArgs& args, void* workspace, int64_t workspace_bytes,
               cudaStream_t stream) {
  const Status s = check_forward_args(plan, args, workspace, workspace_bytes);
  if (!s.ok()) return s;
  return dispatch<ForwardBody>(plan, args, workspace, stream);
}

Status backward(const Plan& plan, const BackwardArgs& args, void* workspace,
                int64_t workspace_bytes, cudaStream_t stream) {
  const Status s = check_backward_args(plan, args, workspace, workspace_bytes);
  if (!s.ok()) return s;
  return dispatch<BackwardBody>(plan, args, workspace, stream);
}

Status read_watchdog(const Plan& plan, const void* workspace, cudaStream_t stream) {
  int64_t record[kErrorWords] = {0};
  RNNKIT_CUDA_OR_RETURN(cudaMemcpyAsync(record, static_cast<const unsigned char*>(workspace) + plan.geo.ws_error,
                                        sizeof(record), cudaMemcpyDeviceToHost, stream));
  RNNKIT_CUDA_OR_RETURN(cudaStreamSynchronize(stream));
  if (record[0] == 0) return Status{};
  return make_status(StatusCode::WATCHDOG,
                     "persistent kernel: barrier %lld of group %lld timed out at rank %lld (watchdog)",
                     static_cast<long long>(record[3]), static_cast<long long>(record[1]),
                     static_cast<long long>(record[2]));
}

}  // namespace persistent
}  // namespace rnnkit
