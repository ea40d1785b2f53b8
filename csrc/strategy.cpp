#include "strategy.h"

#include <c10/util/Exception.h>

#include <ATen/Parallel.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

namespace rnnkit {
namespace {

constexpr size_t kDeviceTypes = static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES);

struct DeviceStrategies {
  Strategies list;
  Strategies witnesses;  // only when forced
  bool measure = false;
};

std::array<DeviceStrategies, kDeviceTypes>& registry() {
  static std::array<DeviceStrategies, kDeviceTypes> strategies;
  return strategies;
}

const DeviceStrategies& strategies_of(c10::DeviceType device) {
  const DeviceStrategies& d = registry()[static_cast<size_t>(device)];
  TORCH_CHECK_NOT_IMPLEMENTED(!d.list.empty(), "rnnkit: no kernels for device type ", device,
                              " (was rnnkit built with CUDA?)");
  return d;
}

std::mutex& state_mutex() {
  static std::mutex m;
  return m;
}

std::optional<std::string>& forced_by_python() {
  static std::optional<std::string> name;
  return name;
}

std::atomic<bool> recording{false};

std::vector<std::string>& recorded() {
  static std::vector<std::string> names;
  return names;
}

const char* pass_name(Pass pass) { return pass == Pass::Forward ? "forward" : "backward"; }

const char* kind_name(CellKind kind) {
  switch (kind) {
    case CellKind::LSTM: return "LSTM";
    case CellKind::GRU: return "GRU";
    case CellKind::RNN_TANH: return "RNN_TANH";
    case CellKind::RNN_RELU: return "RNN_RELU";
  }
  return "?";
}

std::string names_of(const Strategies& list) {
  std::string out;
  for (const auto& s : list) out += (out.empty() ? "" : ", ") + std::string(s->name());
  return out;
}

// The strategy a user asked for by name, checked against the layer.
const Strategy& forced(const DeviceStrategies& device, const std::string& name, const char* source,
                       const LayerShape& shape, Pass pass) {
  for (const Strategies* list : {&device.list, &device.witnesses}) {
    for (const auto& s : *list) {
      if (name != s->name()) continue;
      const Fit fit = s->fit(shape, pass);
      TORCH_CHECK_VALUE(fit.kind != Fit::kCannot, "rnnkit: strategy '", name, "' (forced by ", source,
                        ") cannot run the ", pass_name(pass), " pass of this layer: ", fit.reason);
      return *s;
    }
  }
  TORCH_CHECK_VALUE(false, "rnnkit: unknown strategy '", name, "' (forced by ", source,
                    ") for device type ", shape.device, "; this device has: ", names_of(device.list),
                    device.witnesses.empty() ? "" : ", ", names_of(device.witnesses));
}

// ---- measuring --------------------------------------------------------------

// A strategy's time is a cost per call (packing weights, starting threads)
// plus a cost per step. Trials run a made-up sequence of kTrialSteps steps and,
// where the layer is longer, of twice as many: the two give both costs, and
// the strategies are compared at the layer's length (a loop that starts slowly
// but steps quickly wins a long sequence and loses a short one).
constexpr int64_t kTrialSteps = 16;
// The trial lengths for a layer of T steps (or its planned length): the long
// one only where T is longer than the short one.
int64_t short_trial(int64_t T) { return std::min(T, kTrialSteps); }
int64_t long_trial(int64_t T) { return std::min(T, 2 * kTrialSteps); }
// Made-up inputs of a trial stay below this many values each (weights,
// sequences): larger shapes keep the strategies' own rules.
constexpr int64_t kTrialValues = int64_t(16) << 20;

bool worth_a_trial(const LayerShape& s) {
  const int64_t G = gate_count(s.kind) * s.H;
  return G * (s.I + s.P) <= kTrialValues && long_trial(s.T) * s.B * std::max(G, s.I) <= kTrialValues;
}

// The length a choice is made for: T itself up to the longer trial, then T
// rounded up to a power of two, so that one choice serves T to 2T.
int64_t planned_length(int64_t T) {
  if (T <= 2 * kTrialSteps) return T;
  int64_t length = 2 * kTrialSteps;
  while (length < T) length *= 2;
  return length;
}

// What a choice depends on: the shape at its planned length, the pass, threads.
struct MeasurementKey {
  LayerShape shape;
  Pass pass;
  int threads;
  auto fields() const {
    const LayerShape& s = shape;
    return std::make_tuple(static_cast<int>(s.device), static_cast<int>(s.dtype), static_cast<int>(s.kind),
                           static_cast<int>(pass), planned_length(s.T), s.B, s.I, s.H, s.P,
                           s.reverse, s.lengths, s.projection, s.training, threads);
  }
  bool operator<(const MeasurementKey& other) const { return fields() < other.fields(); }
};

MeasurementKey measurement_key(const LayerShape& s, Pass pass) {
  return {s, pass, at::get_num_threads()};
}

std::string describe(const MeasurementKey& key) {
  const LayerShape& s = key.shape;
  std::ostringstream text;
  text << s.device << " " << c10::toString(s.dtype) << " " << kind_name(s.kind) << " "
       << pass_name(key.pass) << " T=" << planned_length(s.T) << " B=" << s.B << " I=" << s.I
       << " H=" << s.H << " P=" << s.P << (s.reverse ? " reverse" : "") << (s.lengths ? " lengths" : "")
       << (s.training ? " training" : "") << " threads=" << key.threads;
  return text.str();
}

struct Measured {
  const Strategy* choice;
  std::string line;  // the times, for measurements()
};

std::map<MeasurementKey, Measured>& measured_shapes() {
  static std::map<MeasurementKey, Measured> shapes;
  return shapes;
}

// Trials on a busy machine vary by several percent from run to run: the
// candidates within kCloseCall of the fastest after a first round are timed
// again in a second round (so that a burst of load does not decide a close
// call), the fastest run at each length kept, and another strategy replaces
// the rules' choice only when it is faster by more than kClearMargin.
constexpr double kCloseCall = 0.15;
constexpr double kClearMargin = 0.05;

// A candidate's fastest trials at the short and the long length.
struct TrialTimes {
  double short_seconds = std::numeric_limits<double>::infinity();
  double long_seconds = std::numeric_limits<double>::infinity();
  bool failed = false;
};

void run_trials(const Strategy& s, const LayerShape& shape, Pass pass, const Trial& trial,
                TrialTimes& times) {
  const int64_t T = planned_length(shape.T);
  LayerShape trial_shape = shape;
  trial_shape.T = short_trial(T);
  times.short_seconds = std::min(times.short_seconds, trial(s, trial_shape, pass));
  if (long_trial(T) == short_trial(T)) return;
  trial_shape.T = long_trial(T);
  times.long_seconds = std::min(times.long_seconds, trial(s, trial_shape, pass));
}

// The time at the planned length: a cost per call and one per step, from the
// two trials.
double predicted_seconds(const TrialTimes& times, const LayerShape& shape) {
  const int64_t T = planned_length(shape.T), t0 = short_trial(T), t1 = long_trial(T);
  if (t1 == t0) return times.short_seconds;
  const double per_step = std::max(0.0, times.long_seconds - times.short_seconds) / double(t1 - t0);
  return times.long_seconds + per_step * double(T - t1);
}

// The fastest of the candidates at the shape's planned length. A candidate
// whose trial fails is left out; the rules' choice stands if all fail.
Measured measure(const std::vector<const Strategy*>& candidates, const Strategy* by_rules,
                 const LayerShape& shape, Pass pass, const Trial& trial) {
  std::vector<TrialTimes> times(candidates.size());
  auto run_trials_of = [&](size_t i) {
    try {
      run_trials(*candidates[i], shape, pass, trial, times[i]);
    } catch (const std::exception&) {
      times[i].failed = true;
    }
  };
  for (size_t i = 0; i < candidates.size(); ++i) run_trials_of(i);
  double first_best = std::numeric_limits<double>::infinity();
  for (const TrialTimes& t : times) {
    if (!t.failed) first_best = std::min(first_best, predicted_seconds(t, shape));
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (!times[i].failed && predicted_seconds(times[i], shape) <= first_best * (1.0 + kCloseCall))
      run_trials_of(i);
  }
  double rules_seconds = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i] == by_rules && !times[i].failed) rules_seconds = predicted_seconds(times[i], shape);
  }
  Measured best{by_rules, {}};
  double best_seconds = rules_seconds * (1.0 - kClearMargin);
  std::ostringstream line;
  for (size_t i = 0; i < candidates.size(); ++i) {
    line << " " << candidates[i]->name() << "=";
    if (times[i].failed) {
      line << "failed";
      continue;
    }
    const double seconds = predicted_seconds(times[i], shape);
    line << seconds * 1e6 << "us";
    if (seconds < best_seconds) {
      best_seconds = seconds;
      best.choice = candidates[i];
    }
  }
  best.line = line.str() + " (rules: " + by_rules->name() + ") -> " + best.choice->name();
  return best;
}

const Strategy& choose(const LayerShape& shape, Pass pass, const Trial& trial) {
  const DeviceStrategies& device = strategies_of(shape.device);
  const Strategies& list = device.list;
  std::optional<std::string> by_python;
  {
    std::lock_guard<std::mutex> lock(state_mutex());
    by_python = forced_by_python();
  }
  if (by_python) return forced(device, *by_python, "rnnkit.strategy()", shape, pass);
  const char* env = std::getenv("RNNKIT_STRATEGY");
  if (env && *env) return forced(device, env, "RNNKIT_STRATEGY", shape, pass);

  const Strategy* by_rules = nullptr;
  std::vector<const Strategy*> candidates;
  for (const auto& s : list) {
    const Fit fit = s->fit(shape, pass);
    if (fit.kind == Fit::kRuns && !by_rules) by_rules = s.get();
    if (fit.kind != Fit::kCannot && s->measured()) candidates.push_back(s.get());
  }
  TORCH_CHECK(by_rules, "rnnkit: no strategy runs this layer on ", shape.device,
              " (the last registered one must run everything)");
  if (!device.measure || candidates.size() < 2 || !env_switch("RNNKIT_AUTOTUNE", true) ||
      !worth_a_trial(shape))
    return *by_rules;

  const MeasurementKey key = measurement_key(shape, pass);
  {
    std::lock_guard<std::mutex> lock(state_mutex());
    auto found = measured_shapes().find(key);
    if (found != measured_shapes().end()) return *found->second.choice;
  }
  // Measured outside the lock: trials run layers, and another thread may
  // plan meanwhile (at worst it measures the same shape too).
  Measured result = measure(candidates, by_rules, shape, pass, trial);
  std::lock_guard<std::mutex> lock(state_mutex());
  return *measured_shapes().emplace(key, std::move(result)).first->second.choice;
}

}  // namespace

void register_strategies(c10::DeviceType device, Strategies strategies, bool measure) {
  DeviceStrategies& d = registry()[static_cast<size_t>(device)];
  d.list = std::move(strategies);
  d.measure = measure;
}

void register_witness(c10::DeviceType device, std::unique_ptr<Strategy> strategy) {
  registry()[static_cast<size_t>(device)].witnesses.push_back(std::move(strategy));
}

namespace {

void record(const std::string& name) {
  if (recording.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(state_mutex());
    recorded().push_back(name);
  }
}

}  // namespace

const Strategy& plan(const LayerShape& shape, Pass pass, const Trial& trial) {
  const Strategy& chosen = choose(shape, pass, trial);
  record(chosen.name());
  return chosen;
}

void record_no_work() { record("no_work"); }

const Strategy& plan_by_rules(const LayerShape& shape, Pass pass) {
  for (const auto& s : strategies_of(shape.device).list) {
    if (s->fit(shape, pass).kind == Fit::kRuns) return *s;
  }
  TORCH_CHECK(false, "rnnkit: no strategy runs this layer on ", shape.device);
}

std::vector<std::string> strategy_names(c10::DeviceType device) {
  const DeviceStrategies& d = registry()[static_cast<size_t>(device)];
  std::vector<std::string> names;
  for (const Strategies* list : {&d.list, &d.witnesses})
    for (const auto& s : *list) names.push_back(s->name());
  return names;
}

bool env_switch(const char* name, bool otherwise) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return otherwise;
  const std::string value(env);
  TORCH_CHECK_VALUE(value == "0" || value == "1", "rnnkit: ", name, " must be 0 or 1 (or unset), got '",
                    value, "'");
  return value == "1";
}

void force_strategy(std::optional<std::string> name) {
  std::lock_guard<std::mutex> lock(state_mutex());
  forced_by_python() = std::move(name);
}

std::optional<std::string> forced_strategy() {
  std::lock_guard<std::mutex> lock(state_mutex());
  return forced_by_python();
}

void record_strategies(bool on) { recording.store(on, std::memory_order_relaxed); }

std::vector<std::string> take_recorded() {
  std::lock_guard<std::mutex> lock(state_mutex());
  std::vector<std::string> out;
  out.swap(recorded());
  return out;
}

}  // namespace rnnkit

namespace rnnkit {

std::vector<std::string> measurements() {
  std::lock_guard<std::mutex> lock(state_mutex());
  std::vector<std::string> lines;
  for (const auto& [key, m] : measured_shapes()) lines.push_back(describe(key) + ":" + m.line);
  return lines;
}

void forget_measurements() {
  std::lock_guard<std::mutex> lock(state_mutex());
  measured_shapes().clear();
}

}  // namespace rnnkit
