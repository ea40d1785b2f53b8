// The persistent kernels (csrc/persistent/, shared/PERSISTENT.md) as
// strategies of the planner: one launch runs a layer's whole time loop with
// W_hh on chip. Device-neutral: a device brings a PersistentLauncher (CUDA:
// cuda/persistent_cuda.cu; the CPU runs the same kernel bodies block by
// block for the tests: persistent_emulated.cpp), and this file plans, turns
// the driver's jobs into the kernels' arguments and handles their status.
//
// What the kernels read and write is the driver's layout (cell_units.h): gx
// with b_ih from the input GEMM, the cell bias's b_hh, saved rows of
// saved_width values with h at saved_h_offset. So a persistent forward pairs
// with a step-loop backward and the other way round.
//
// One direction per launch: the driver hands a strategy one direction per op
// call, so the kernels' "both directions in one launch" is not reachable
// through the op (a bidirectional module makes two calls).
#pragma once

#include <memory>

#include "persistent/args.h"
#include "persistent/plan.h"
#include "strategy.h"

namespace rnnkit {

// What a device does for the persistent strategies.
class PersistentLauncher {
 public:
  virtual ~PersistentLauncher() = default;
  // The current device's index, and a device's properties.
  virtual int device() const = 0;
  virtual persistent::DeviceInfo info(int device) const = 0;
  // Whether float32 products may use TF32 (torch.backends.cuda.matmul.allow_tf32).
  virtual bool allow_tf32() const = 0;
  virtual persistent::Plan plan(const persistent::LayerShape& shape, const persistent::DeviceInfo& dev) const {
    return persistent::plan_layer(shape, dev);
  }
  // One launch, queued on the current stream; `workspace` holds
  // plan.geo.workspace_bytes bytes on the device.
  virtual persistent::Status launch(const persistent::Plan& plan, const persistent::ForwardArgs& args,
                                    const at::Tensor& workspace) const = 0;
  virtual persistent::Status launch(const persistent::Plan& plan, const persistent::BackwardArgs& args,
                                    const at::Tensor& workspace) const = 0;
  // Whether the last launch on this workspace tripped its watchdog (waits for it).
  virtual persistent::Status watchdog(const persistent::Plan& plan, const at::Tensor& workspace) const = 0;
};

// ---- the pure part: shapes and arguments -------------------------------------

persistent::DType persistent_dtype(c10::ScalarType dtype);

// The kernels' view of one pass of a layer (one direction), with the group
// kinds the plan may use (persistent::kAnyGroup, or one forced).
persistent::LayerShape persistent_shape(const LayerShape& shape, Pass pass, bool allow_tf32, uint32_t groups);

// The arguments of one launch for a driver's job: its own buffers, and the
// final states (h_n, c_n; dh0, dc0) into the tensors given.
persistent::ForwardArgs persistent_args(const ForwardJob& job, const at::Tensor& h_n, const at::Tensor& c_n,
                                        int64_t watchdog_cycles);
persistent::BackwardArgs persistent_args(const BackwardJob& job, const at::Tensor& dh0, const at::Tensor& dc0,
                                         int64_t watchdog_cycles);

// ---- the strategies ----------------------------------------------------------

// A device's persistent strategies, in the planner's order, sharing one launcher:
//   NAME SUFFIX               the cost model picks the group kind; where a plan
//                             applies the rules take it (by_rules), else only
//                             when forced
//   NAME_block, NAME_cluster, NAME_grid SUFFIX
//                             one group kind forced, only when forced (tests)
// `fallback` runs a pass whose launch finds that its grid cannot be resident
// after all (null: that is an error).
Strategies make_persistent_strategies(const std::string& name, const std::string& suffix,
                                      std::shared_ptr<const PersistentLauncher> launcher,
                                      std::shared_ptr<const Strategy> fallback, bool by_rules);

// The GRID barrier's budget in SM clock cycles (0: the kernels' default,
// about 2 s). A budget set here is a test or debugging setting: each GRID
// launch is then waited for and its watchdog read, so that a stuck barrier
// raises at once (outside CUDA-graph capture). Returns the previous budget.
int64_t set_persistent_watchdog(int64_t cycles);

}  // namespace rnnkit
