#include "strategy.h"

#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>

namespace rnnkit {
namespace {

constexpr size_t kDeviceTypes = static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES);

std::array<Strategies, kDeviceTypes>& registry() {
  static std::array<Strategies, kDeviceTypes> strategies;
  return strategies;
}

const Strategies& strategies_of(c10::DeviceType device) {
  const Strategies& list = registry()[static_cast<size_t>(device)];
  TORCH_CHECK_NOT_IMPLEMENTED(!list.empty(), "rnnkit: no kernels for device type ", device,
                              " (was rnnkit built with CUDA?)");
  return list;
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

std::string names_of(const Strategies& list) {
  std::string out;
  for (const auto& s : list) out += (out.empty() ? "" : ", ") + std::string(s->name());
  return out;
}

// The strategy a user asked for by name, checked against the layer.
const Strategy& forced(const Strategies& list, const std::string& name, const char* source,
                       const LayerShape& shape, Pass pass) {
  for (const auto& s : list) {
    if (name != s->name()) continue;
    const Fit fit = s->fit(shape, pass);
    TORCH_CHECK_VALUE(fit.kind != Fit::kCannot, "rnnkit: strategy '", name, "' (forced by ", source,
                      ") cannot run the ", pass_name(pass), " pass of this layer: ", fit.reason);
    return *s;
  }
  TORCH_CHECK_VALUE(false, "rnnkit: unknown strategy '", name, "' (forced by ", source,
                    ") for device type ", shape.device, "; this device has: ", names_of(list));
}

const Strategy& choose(const LayerShape& shape, Pass pass) {
  const Strategies& list = strategies_of(shape.device);
  std::optional<std::string> by_python;
  {
    std::lock_guard<std::mutex> lock(state_mutex());
    by_python = forced_by_python();
  }
  if (by_python) return forced(list, *by_python, "rnnkit.strategy()", shape, pass);
  const char* env = std::getenv("RNNKIT_STRATEGY");
  if (env && *env) return forced(list, env, "RNNKIT_STRATEGY", shape, pass);
  for (const auto& s : list) {
    if (s->fit(shape, pass).kind == Fit::kRuns) return *s;
  }
  TORCH_CHECK(false, "rnnkit: no strategy runs this layer on ", shape.device,
              " (the last registered one must run everything)");
}

}  // namespace

void register_strategies(c10::DeviceType device, Strategies strategies) {
  registry()[static_cast<size_t>(device)] = std::move(strategies);
}

const Strategy& plan(const LayerShape& shape, Pass pass) {
  const Strategy& chosen = choose(shape, pass);
  if (recording.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(state_mutex());
    recorded().push_back(chosen.name());
  }
  return chosen;
}

std::vector<std::string> strategy_names(c10::DeviceType device) {
  std::vector<std::string> names;
  for (const auto& s : registry()[static_cast<size_t>(device)]) names.push_back(s->name());
  return names;
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
