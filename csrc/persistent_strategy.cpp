#include "persistent_strategy.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "cell_units.h"

namespace rnnkit {

namespace {

std::atomic<int64_t> watchdog_budget{0};

void* element_at(const at::Tensor& t, int64_t offset) {
  return static_cast<char*>(t.data_ptr()) + offset * t.element_size();
}

void* ptr_or_null(const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr; }

const int64_t* lengths_ptr(const at::Tensor& lengths) {
  return lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
}

// What the arguments of both passes share: the layer, one direction.
template <class Args>
Args launch_args(const LayerShape& s, const at::Tensor& lengths, int64_t watchdog_cycles) {
  Args a{};
  a.cell = s.kind;
  a.dtype = persistent_dtype(s.dtype);
  a.T = s.T;
  a.B = s.B;
  a.H = s.H;
  a.lengths = lengths_ptr(lengths);
  a.dirs = 1;
  a.watchdog_cycles = watchdog_cycles;
  return a;
}

// Plans, once per device and shape: the cost model tries every cut of the
// layer, too much to repeat on every call.
class PlanCache {
 public:
  persistent::Plan get(const PersistentLauncher& launcher, const persistent::LayerShape& s) {
    const int device = launcher.device();
    const Key key{&launcher, device, static_cast<int>(s.cell), static_cast<int>(s.dtype), s.allow_tf32, s.B,
                  s.H, s.dirs, s.projection, static_cast<int>(s.pass), s.groups};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto found = plans_.find(key);
      if (found != plans_.end()) return found->second;
    }
    const persistent::Plan plan = launcher.plan(s, launcher.info(device));
    std::lock_guard<std::mutex> lock(mutex_);
    return plans_.emplace(key, plan).first->second;
  }

 private:
  using Key = std::tuple<const PersistentLauncher*, int, int, int, bool, int64_t, int64_t, int32_t, bool, int,
                         uint32_t>;
  std::mutex mutex_;
  std::map<Key, persistent::Plan> plans_;
};

PlanCache& plan_cache() {
  static PlanCache cache;
  return cache;
}

// Until the kernels have run on a GPU (benchmarks/gpu_run.sh sets it), the
// planner takes them only where RNNKIT_PERSISTENT=1 asks it to; a forced one
// runs regardless.
bool persistent_by_default() { return env_switch("RNNKIT_PERSISTENT", false); }

class PersistentStrategy final : public Strategy {
 public:
  PersistentStrategy(std::string name, uint32_t groups, bool by_rules,
                     std::shared_ptr<const PersistentLauncher> launcher, std::shared_ptr<const Strategy> fallback)
      : name_(std::move(name)),
        groups_(groups),
        by_rules_(by_rules),
        launcher_(std::move(launcher)),
        fallback_(std::move(fallback)) {}

  const char* name() const override { return name_.c_str(); }

  Fit fit(const LayerShape& shape, Pass pass) const override {
    const persistent::Plan p = plan_for(shape, pass);
    if (!p.applies) return Fit::cannot(p.reason);
    if (!by_rules_) return Fit::declines("the persistent kernels with a group kind forced: only when forced");
    if (!persistent_by_default())
      return Fit::declines("not yet run on a GPU: taken only with RNNKIT_PERSISTENT=1, or when forced");
    return Fit::runs();
  }

  bool measured() const override { return by_rules_; }

  // The kernels add b_hh themselves and take gx with b_ih in it.
  InputGemm input_gemm(const LayerShape&) const override { return InputGemm::kWithBias; }

  void forward(ForwardJob& job) const override { run(job, Pass::Forward, job.h, job.c); }
  void backward(BackwardJob& job) const override { run(job, Pass::Backward, job.dh, job.dc); }

 private:
  persistent::Plan plan_for(const LayerShape& shape, Pass pass) const {
    return plan_cache().get(*launcher_, persistent_shape(shape, pass, launcher_->allow_tf32(), groups_));
  }

  persistent::Plan planned(const LayerShape& shape, Pass pass) const {
    persistent::Plan plan = plan_for(shape, pass);
    TORCH_CHECK(plan.applies, "rnnkit: strategy '", name_, "' cannot run this layer: ", plan.reason);
    return plan;
  }

  // One launch for a pass. The final states (h_n and c_n, or dh0 and dc0)
  // go to fresh tensors: the kernels read the ones given (h0, grad_hn)
  // until they write these.
  template <class Job>
  void run(Job& job, Pass pass, at::Tensor& state, at::Tensor& cell_state) const {
    const persistent::Plan plan = planned(job.shape, pass);
    const bool lstm = job.shape.kind == CellKind::LSTM;
    const at::Tensor state_out = at::empty_like(state);
    const at::Tensor cell_out = lstm ? at::empty_like(cell_state) : at::Tensor();
    const at::Tensor workspace = workspace_for(plan, job.x);
    const persistent::Status status =
        launcher_->launch(plan, persistent_args(job, state_out, cell_out, watchdog_budget.load()), workspace);
    if (falls_back(status)) return run_pass(*fallback_, job);
    check(status, plan, workspace);
    state = state_out;
    if (lstm) cell_state = cell_out;
  }

  static void run_pass(const Strategy& s, ForwardJob& job) { s.forward(job); }
  static void run_pass(const Strategy& s, BackwardJob& job) { s.backward(job); }

  static at::Tensor workspace_for(const persistent::Plan& plan, const at::Tensor& like) {
    return at::empty({plan.geo.workspace_bytes}, like.options().dtype(at::kByte));
  }

  // The planner took this strategy for a plan that fits the device on paper;
  // only the launch can tell whether a GRID's blocks can all be resident, or
  // a cluster of that size be placed, at this moment. Where they cannot,
  // nothing was queued and the step loop runs the pass instead (the record
  // of what ran still names this strategy).
  bool falls_back(const persistent::Status& status) const {
    return status.code == persistent::StatusCode::DOES_NOT_APPLY && fallback_ != nullptr;
  }

  void check(const persistent::Status& status, const persistent::Plan& plan, const at::Tensor& workspace) const {
    TORCH_CHECK(status.ok(), "rnnkit: strategy '", name_, "' failed: ", status.message);
    if (watchdog_budget.load() == 0 || plan.geo.group != persistent::GroupKind::GRID) return;
    const persistent::Status tripped = launcher_->watchdog(plan, workspace);
    TORCH_CHECK(tripped.ok(), "rnnkit: strategy '", name_, "' failed: ", tripped.message,
                "; its outputs are incomplete");
  }

  std::string name_;
  uint32_t groups_;
  bool by_rules_;
  std::shared_ptr<const PersistentLauncher> launcher_;
  std::shared_ptr<const Strategy> fallback_;
};

}  // namespace

persistent::DType persistent_dtype(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return persistent::DType::F32;
    case at::kHalf: return persistent::DType::F16;
    case at::kBFloat16: return persistent::DType::BF16;
    default: break;
  }
  TORCH_CHECK_TYPE(dtype == at::kDouble, "rnnkit: no persistent kernels for ", dtype);
  return persistent::DType::F64;
}

persistent::LayerShape persistent_shape(const LayerShape& shape, Pass pass, bool allow_tf32, uint32_t groups) {
  return {shape.kind,
          persistent_dtype(shape.dtype),
          allow_tf32 && shape.dtype == at::kFloat,
          shape.B,
          shape.H,
          /*dirs=*/1,
          shape.projection,
          pass == Pass::Forward ? persistent::Pass::FORWARD : persistent::Pass::BACKWARD,
          groups};
}

persistent::ForwardArgs persistent_args(const ForwardJob& job, const at::Tensor& h_n,
                                        const at::Tensor& c_n, int64_t watchdog_cycles) {
  const LayerShape& s = job.shape;
  const bool lstm = s.kind == CellKind::LSTM;
  auto a = launch_args<persistent::ForwardArgs>(s, job.lengths, watchdog_cycles);
  persistent::ForwardDirection& d = a.dir[0];
  d.gx = job.gx.data_ptr();      // x W_ih^T + b_ih
  d.w_hh = job.w_hh.data_ptr();
  d.b_hh = job.bias.data_ptr();  // the cell bias begins with b_hh (gx holds b_ih, and GRU's b_in)
  d.h0 = job.h.data_ptr();
  d.c0 = lstm ? job.c.data_ptr() : nullptr;
  d.y = job.y.data_ptr();
  d.y_stride = s.H;
  d.h_n = h_n.data_ptr();
  d.c_n = lstm ? c_n.data_ptr() : nullptr;
  // The saved rows of cell_units.h: the kernels' gate values (saved_count)
  // are its saved gates, and its h, saved_h_offset on, is their h_saved.
  if (job.saved.numel() > 0) {
    const int64_t width = saved_width(s.kind, s.H, s.P);
    d.saved = job.saved.data_ptr();
    d.saved_stride = width;
    d.h_saved = element_at(job.saved, saved_h_offset(s.kind, s.H));
    d.h_saved_stride = width;
  }
  d.reverse = s.reverse;
  return a;
}

persistent::BackwardArgs persistent_args(const BackwardJob& job, const at::Tensor& dh0,
                                         const at::Tensor& dc0, int64_t watchdog_cycles) {
  const LayerShape& s = job.shape;
  const bool lstm = s.kind == CellKind::LSTM, gru = s.kind == CellKind::GRU;
  const int64_t width = saved_width(s.kind, s.H, s.P);
  auto a = launch_args<persistent::BackwardArgs>(s, job.lengths, watchdog_cycles);
  persistent::BackwardDirection& d = a.dir[0];
  d.w_hh = job.w_hh.data_ptr();
  d.dy = ptr_or_null(job.dy);
  d.dy_stride = s.H;
  d.grad_hn = job.dh.data_ptr();
  d.grad_cn = lstm ? job.dc.data_ptr() : nullptr;
  d.h0 = job.h0.data_ptr();
  d.c0 = lstm ? job.c0.data_ptr() : nullptr;
  d.saved = job.saved.data_ptr();
  d.saved_stride = width;
  d.h_seq = element_at(job.saved, saved_h_offset(s.kind, s.H));
  d.h_seq_stride = width;
  d.dgx = job.dgx.data_ptr();
  d.dgh = gru ? job.dgh.data_ptr() : nullptr;  // the same tensor as dgx for the other cells
  d.dh0 = dh0.data_ptr();
  d.dc0 = lstm ? dc0.data_ptr() : nullptr;
  d.reverse = s.reverse;
  return a;
}

Strategies make_persistent_strategies(const std::string& name, const std::string& suffix,
                                      std::shared_ptr<const PersistentLauncher> launcher,
                                      std::shared_ptr<const Strategy> fallback, bool by_rules) {
  using persistent::GroupKind;
  using persistent::group_bit;
  Strategies list;
  list.push_back(
      std::make_unique<PersistentStrategy>(name + suffix, persistent::kAnyGroup, by_rules, launcher, fallback));
  const std::pair<const char*, GroupKind> kinds[] = {
      {"_block", GroupKind::BLOCK}, {"_cluster", GroupKind::CLUSTER}, {"_grid", GroupKind::GRID}};
  for (const auto& [word, kind] : kinds)
    list.push_back(std::make_unique<PersistentStrategy>(name + word + suffix, group_bit(kind), false, launcher,
                                                        fallback));
  return list;
}

int64_t set_persistent_watchdog(int64_t cycles) {
  TORCH_CHECK_VALUE(cycles >= 0, "rnnkit: the watchdog budget must be >= 0 cycles, got ", cycles);
  return watchdog_budget.exchange(cycles);
}

}  // namespace rnnkit
