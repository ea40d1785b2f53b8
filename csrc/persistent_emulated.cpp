// The persistent strategies of CUDA, emulated on the CPU for the tests: the
// same strategy code (persistent_strategy.cpp: plans, the arguments built
// from the driver's jobs, the entry points' argument checks), the same
// kernel bodies, run block after block by csrc/persistent's sequential
// backend (cpu_backend.h) on the plans an H100 would get. Test witnesses
// ("cuda_persistent_emulated", "cuda_persistent_block_emulated", ...): the
// planner never picks them by itself. Float64 runs on the float32 plan's cut,
// so that the tests can compare with torch.nn to float64 precision.
#include <ATen/Context.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>

#include "persistent/backward_body.h"
#include "persistent/check_args.h"
#include "persistent/cpu_backend.h"
#include "persistent/forward_body.h"
#include "persistent_strategy.h"

namespace rnnkit {
namespace {

using persistent::DType;
using persistent::MathKind;
using persistent::Status;

// The GPU the emulation plans for: an H100 SXM (132 SMs, 227 KB of shared
// memory per block, clusters of up to 16 blocks).
persistent::DeviceInfo h100() {
  persistent::DeviceInfo d;
  d.cc_major = 9, d.cc_minor = 0, d.sm_count = 132;
  d.smem_per_block = 232448, d.smem_per_sm = 233472;
  d.regs_per_sm = 65536, d.max_threads_per_sm = 2048;
  d.cooperative_launch = true, d.max_cluster_blocks = 16;
  return d;
}

// Body<T, M> run on the CPU for the plan's element type and arithmetic.
template <template <class, MathKind> class Body, class Args>
Status run_emulated(const persistent::Geometry& g, const Args& args) {
  // A new block order every launch: results must not depend on it.
  static std::atomic<uint64_t> launches{0};
  persistent::CpuOptions options;
  options.seed = ++launches;
  if (g.dtype == DType::F64) return persistent::run_on_cpu<Body<double, MathKind::FFMA>>(g, args, options);
  if (g.dtype == DType::F32 && g.math == MathKind::FFMA)
    return persistent::run_on_cpu<Body<float, MathKind::FFMA>>(g, args, options);
  if (g.dtype == DType::F32 && g.math == MathKind::TF32)
    return persistent::run_on_cpu<Body<float, MathKind::TF32>>(g, args, options);
  if (g.dtype == DType::F16) return persistent::run_on_cpu<Body<c10::Half, MathKind::MMA16>>(g, args, options);
  if (g.dtype == DType::BF16)
    return persistent::run_on_cpu<Body<c10::BFloat16, MathKind::MMA16>>(g, args, options);
  return persistent::make_status(persistent::StatusCode::INVALID_ARGUMENT, "no emulated kernel for %s with %s",
                                 persistent::dtype_name(g.dtype), persistent::math_name(g.math));
}

class EmulatedLauncher final : public PersistentLauncher {
 public:
  int device() const override { return 0; }
  persistent::DeviceInfo info(int) const override { return h100(); }
  bool allow_tf32() const override { return at::globalContext().allowTF32CuBLAS(); }

  persistent::Plan plan(const persistent::LayerShape& shape, const persistent::DeviceInfo& dev) const override {
    if (shape.dtype != DType::F64) return persistent::plan_layer(shape, dev);
    persistent::LayerShape as_float = shape;
    as_float.dtype = DType::F32;
    as_float.allow_tf32 = false;
    persistent::Plan plan = persistent::plan_layer(as_float, dev);
    if (!plan.applies) return plan;
    const persistent::Geometry& g = plan.geo;
    plan.geo = persistent::make_geometry(g.cell, DType::F64, MathKind::FFMA, g.pass, g.B, g.H, g.dirs,
                                         {g.group, g.rows, g.blocks, g.threads, g.chunk});
    return plan;
  }

  Status launch(const persistent::Plan& plan, const persistent::ForwardArgs& args,
                 const at::Tensor& workspace) const override {
    const Status s = persistent::check_forward_args(plan, args, workspace.data_ptr(), workspace.numel());
    return s.ok() ? run_emulated<persistent::ForwardBody>(plan.geo, args) : s;
  }

  Status launch(const persistent::Plan& plan, const persistent::BackwardArgs& args,
                  const at::Tensor& workspace) const override {
    const Status s = persistent::check_backward_args(plan, args, workspace.data_ptr(), workspace.numel());
    return s.ok() ? run_emulated<persistent::BackwardBody>(plan.geo, args) : s;
  }

  // The sequential backend has no barriers to wait at.
  Status watchdog(const persistent::Plan&, const at::Tensor&) const override { return Status{}; }
};

const bool registered = [] {
  for (auto& strategy : make_persistent_strategies("cuda_persistent", "_emulated",
                                                   std::make_shared<EmulatedLauncher>(), nullptr, false))
    register_witness(c10::DeviceType::CPU, std::move(strategy));
  return true;
}();

}  // namespace
}  // namespace rnnkit
