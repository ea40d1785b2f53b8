#include "plan.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>

namespace rnnkit {
namespace persistent {

namespace {

// The cost model, in SM cycles per step. Estimates, to be replaced by what
// benchmarks/barrier_bench.cu and the first persistent runs measure on a
// Hopper GPU; only their ratios steer the choice.
// Multiply-adds per SM per cycle with both operands read from shared memory:
// FFMA has 128 fp32 lanes, about half fed; mma.sync runs at about half of
// Hopper's wgmma rates (tf32 ~1024, 16-bit ~2048 per SM per cycle dense).
constexpr double kMacsPerCycle[3] = {64, 256, 512};  // FFMA, TF32, MMA16
constexpr double kL2BytesPerCycle = 64;     // GRID: staging X from L2 into one SM
constexpr double kDsmemBytesPerCycle = 32;  // CLUSTER: pushing h into every peer
constexpr double kSyncCycles = 40;          // one __syncthreads
constexpr double kClusterBarrierCycles = 400;
constexpr double kGridBarrierCycles = 1500;  // flags through L2, plus per block polled
constexpr double kGridBarrierPerBlock = 10;
constexpr double kCellCycles = 40;          // one gate of one cell, per thread
constexpr int64_t kMinChunk = 32;           // GRID: fewest K values staged per pass
// Shared memory a plan leaves free: the kernels' static __shared__ variables
// count against the same per-block limit as the dynamic allocation.
constexpr int64_t kStaticSmemReserve = 1024;

Plan refuse(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Plan refuse(const char* fmt, ...) {
  Plan p;
  p.applies = false;
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(p.reason, sizeof(p.reason), fmt, args);
  va_end(args);
  return p;
}

// Bytes of the staging region of a GRID geometry, as make_geometry lays it out.
int64_t stage_region(const Geometry& g) {
  return round_up(g.Np * g.ld_stage * g.elem_bytes, 16);
}

}  // namespace

MathKind math_for(DType dtype, bool allow_tf32) {
  if (dtype == DType::F16 || dtype == DType::BF16) return MathKind::MMA16;
  if (dtype == DType::F32 && allow_tf32) return MathKind::TF32;
  return MathKind::FFMA;
}

double estimate_cycles(const Geometry& g) {
  const double product = double(g.Mp) * g.Np * g.Kp / kMacsPerCycle[static_cast<int>(g.math)];
  const double cell = std::ceil(double(g.rows) * g.units / g.threads) * g.G * kCellCycles;
  double exchange = 0, barrier = kSyncCycles;
  double syncs = 2 * kSyncCycles;
  if (g.group == GroupKind::CLUSTER) {
    exchange = double(g.rows) * g.pub * g.blocks * g.elem_bytes / kDsmemBytesPerCycle;
    barrier = kClusterBarrierCycles;
  } else if (g.group == GroupKind::GRID) {
    exchange = double(g.Np) * g.Kp * g.elem_bytes / kL2BytesPerCycle;
    barrier = kGridBarrierCycles + kGridBarrierPerBlock * g.blocks;
    syncs = (1 + 2 * g.chunks()) * kSyncCycles;
  }
  return product + cell + exchange + barrier + syncs;
}

Plan plan_layer(const LayerShape& s, const DeviceInfo& dev) {
  if (s.dtype == DType::F64) return refuse("does not apply: float64 stays on the step loop");
  if (s.projection)
    return refuse("does not apply: proj_size > 0 stays on the step loop (a second product per step)");
  if (s.B < 1 || s.H < 1) return refuse("does not apply: empty batch or hidden size");
  if (s.dirs != 1 && s.dirs != 2) return refuse("does not apply: directions must be 1 or 2");
  if (dev.cc_major < 8)
    return refuse("does not apply: needs compute capability 8.0 or newer (mma.sync); this GPU is %d.%d",
                  dev.cc_major, dev.cc_minor);
  if (dev.sm_count < s.dirs) return refuse("does not apply: fewer SMs than directions");

  const MathKind math = math_for(s.dtype, s.allow_tf32);
  const int64_t smem_limit = dev.smem_per_block - kStaticSmemReserve;
  Plan best;
  auto consider = [&](Choice c) {
    const int64_t units = ceil_div(s.H, c.blocks);
    if ((c.blocks - 1) * units >= s.H) return;  // a block without units
    Geometry g = make_geometry(s.cell, s.dtype, math, s.pass, s.B, s.H, s.dirs, c);
    if (g.smem_bytes > smem_limit && c.group == GroupKind::GRID) {
      // Stage X in K chunks as large as the rest of shared memory leaves room for.
      const int64_t room = smem_limit - (g.smem_bytes - stage_region(g));
      const int64_t pad = 16 / g.elem_bytes;
      c.chunk = (room / (g.Np * g.elem_bytes) - pad) / g.step_k * g.step_k;
      if (c.chunk < kMinChunk) return;
      g = make_geometry(s.cell, s.dtype, math, s.pass, s.B, s.H, s.dirs, c);
    }
    if (g.smem_bytes > smem_limit) return;
    const double cycles = estimate_cycles(g);
    if (!best.applies || cycles < best.cycles_per_step) {
      best.applies = true;
      best.geo = g;
      best.cycles_per_step = cycles;
    }
  };

  const bool block = s.groups & group_bit(GroupKind::BLOCK);
  const bool cluster = s.groups & group_bit(GroupKind::CLUSTER);
  const bool grid = (s.groups & group_bit(GroupKind::GRID)) && dev.cooperative_launch;
  int64_t last_rows = -1;
  for (int64_t slices = 1; slices <= s.B; ++slices) {
    const int64_t rows = ceil_div(s.B, slices);
    if (rows == last_rows) continue;
    last_rows = rows;
    const int64_t groups = s.dirs * ceil_div(s.B, rows);
    if (groups > dev.sm_count) break;
    if (block) consider({GroupKind::BLOCK, rows, 1, kBlockThreads, 0});
    for (int blocks = 2; cluster && blocks <= dev.max_cluster_blocks && groups * blocks <= dev.sm_count; ++blocks)
      consider({GroupKind::CLUSTER, rows, blocks, kBlockThreads, 0});
    for (int blocks = 2; grid && groups * blocks <= dev.sm_count; ++blocks)
      consider({GroupKind::GRID, rows, blocks, kBlockThreads, 0});
  }
  if (best.applies) return best;
  if (s.groups != kAnyGroup) {
    // Forced to some kinds only: say which were allowed and what the device lacks.
    char kinds[64] = {0};
    for (GroupKind g : {GroupKind::BLOCK, GroupKind::CLUSTER, GroupKind::GRID})
      if (s.groups & group_bit(g))
        std::snprintf(kinds + std::strlen(kinds), sizeof(kinds) - std::strlen(kinds), "%s%s",
                      kinds[0] ? " or " : "", group_name(g));
    const char* lacks = cluster && dev.max_cluster_blocks < 2 ? " (this GPU has no thread-block clusters)"
                        : (s.groups & group_bit(GroupKind::GRID)) && !dev.cooperative_launch
                            ? " (this GPU has no cooperative launch)"
                            : "";
    return refuse("does not apply: no %s plan fits this layer (H=%lld, %s)%s", kinds[0] ? kinds : "group",
                  static_cast<long long>(s.H), dtype_name(s.dtype), lacks);
  }
  const double weights = double(gate_count(s.cell)) * s.H * s.H * dtype_bytes(s.dtype) * s.dirs;
  return refuse(
      "does not apply: does not fit on chip: W_hh is %.2f MB (%s, %d direction%s); %d SMs hold "
      "%.2f MB of shared memory at %lld KB per block, less the exchange and state buffers",
      weights / 1048576.0, dtype_name(s.dtype), s.dirs, s.dirs > 1 ? "s" : "", dev.sm_count,
      double(dev.sm_count) * dev.smem_per_block / 1048576.0,
      static_cast<long long>(dev.smem_per_block / 1024));
}

void describe_plan(const Plan& plan, char* out, int size) {
  if (!plan.applies) {
    std::snprintf(out, size, "%s", plan.reason);
    return;
  }
  const Geometry& g = plan.geo;
  std::snprintf(out, size,
                "%s: %d group%s x %d block%s, %lld unit%s/block, %lld rows/group, %s, "
                "%lld KB smem, K chunk %lld/%lld, %d split%s, ~%.0f cycles/step",
                group_name(g.group), g.groups(), g.groups() > 1 ? "s" : "", g.blocks,
                g.blocks > 1 ? "s" : "", static_cast<long long>(g.units), g.units > 1 ? "s" : "",
                static_cast<long long>(g.rows), math_name(g.math),
                static_cast<long long>((g.smem_bytes + 1023) / 1024),
                static_cast<long long>(g.chunk), static_cast<long long>(g.Kp), g.splits,
                g.splits > 1 ? "s" : "", plan.cycles_per_step);
}

}  // namespace persistent
}  // namespace rnnkit
