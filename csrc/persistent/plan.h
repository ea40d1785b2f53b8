// The planner of the persistent kernels: from a layer's shape and the
// device's properties, which group kind, how many blocks, how the batch is
// sliced (a Geometry), or why the kernels do not apply (the layer then stays
// on the step loop). A pure function: no CUDA, no torch; the CPU tests run it
// for an H100, an H200 and an L4.
#pragma once

#include "geometry.h"

namespace rnnkit {
namespace persistent {

// What the planner needs to know of a GPU (cudaDeviceGetAttribute names).
struct DeviceInfo {
  int cc_major = 0, cc_minor = 0;  // ComputeCapabilityMajor / Minor
  int sm_count = 0;                // MultiProcessorCount
  int64_t smem_per_block = 0;      // MaxSharedMemoryPerBlockOptin (bytes)
  int64_t smem_per_sm = 0;         // MaxSharedMemoryPerMultiprocessor
  int regs_per_sm = 0;             // MaxRegistersPerMultiprocessor
  int max_threads_per_sm = 0;      // MaxThreadsPerMultiProcessor
  bool cooperative_launch = false; // CooperativeLaunch
  int max_cluster_blocks = 0;      // 0 without ClusterLaunch; 16 on Hopper (non-portable opt-in)
};

// A set of group kinds, one bit each: which kinds a plan may use.
constexpr uint32_t group_bit(GroupKind g) { return 1u << static_cast<int>(g); }
constexpr uint32_t kAnyGroup =
    group_bit(GroupKind::BLOCK) | group_bit(GroupKind::CLUSTER) | group_bit(GroupKind::GRID);

struct LayerShape {
  CellKind cell;
  DType dtype;
  bool allow_tf32;  // float32 only: tensor cores in TF32 (torch.backends.cuda.matmul.allow_tf32)
  int64_t B, H;
  int32_t dirs;     // 1, or 2: both directions of a layer in one launch
  bool projection;  // proj_size > 0
  Pass pass;
  // The group kinds the cost model chooses among; one kind forces it (tests).
  uint32_t groups = kAnyGroup;
};

struct Plan {
  bool applies = false;
  char reason[240] = {0};  // why not, when !applies
  Geometry geo{};
  double cycles_per_step = 0;  // the cost model's estimate that chose geo
};

// Threads per block of every persistent kernel.
constexpr int32_t kBlockThreads = 256;

// The arithmetic a dtype gets: FFMA (strict) or TF32 for float32, MMA16 for
// float16/bfloat16; float64 FFMA (CPU tests only).
MathKind math_for(DType dtype, bool allow_tf32);

// The cost model's estimate, in SM cycles per step, for a geometry.
double estimate_cycles(const Geometry& g);

Plan plan_layer(const LayerShape& shape, const DeviceInfo& dev);

// One line: "G3-grid: 1 group x 128 blocks, 4 units/block, rows 64, ffma, 170 KB smem, ..."
void describe_plan(const Plan& plan, char* out, int size);

}  // namespace persistent
}  // namespace rnnkit
