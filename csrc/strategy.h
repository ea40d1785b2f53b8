// The planner: how one pass of one layer runs on its device. Each device
// registers an ordered list of named strategies (best first, a strategy that
// runs everything last); for every op call the planner picks one, once:
//   1. the forced one (rnnkit.strategy() in Python, else RNNKIT_STRATEGY),
//      if it can run the layer;
//   2. on a device that measures (the CPU), the fastest of the strategies
//      that can run the layer, timed on this machine the first time the
//      process meets the shape (a short made-up sequence of it) and
//      remembered for the process (RNNKIT_AUTOTUNE=0 turns this off);
//   3. else the first whose own rules take the shape.
// Which one ran can be recorded (the benchmark reports it).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cells.h"

namespace rnnkit {

// What a plan depends on: one layer, one direction.
struct LayerShape {
  CellKind kind;
  c10::ScalarType dtype;
  c10::DeviceType device;
  int64_t T, B, I, H, P;  // P: width of h (proj_size, else H)
  bool reverse, lengths, projection, training;
};

enum class Pass { Forward, Backward };

// Whether a strategy takes a pass of a layer: it runs it, it could but its
// rules prefer another strategy for this shape (forcing it still works), or
// it cannot run it at all. `reason` says why not.
struct Fit {
  enum Kind { kRuns, kDeclines, kCannot } kind;
  std::string reason;
  static Fit runs() { return {kRuns, {}}; }
  static Fit declines(std::string why) { return {kDeclines, std::move(why)}; }
  static Fit cannot(std::string why) { return {kCannot, std::move(why)}; }
};

// How a strategy wants its input projections gx = x W_ih^T.
enum class InputGemm {
  kWithBias,     // the driver computes gx + b_ih for all steps; the cell adds b_hh
  kWithoutBias,  // the driver computes gx alone; the cell adds both biases
  kNone,         // the strategy projects the input itself; the cell adds both biases
};

// A forward pass as the driver hands it over: inputs contiguous, outputs
// allocated. h holds h0 on entry (a copy of the caller's, free to be written,
// unless the strategy keeps_initial_state()) and must hold h_n on return (the
// strategy may point it at another buffer); c likewise for the LSTM. Undefined
// tensors: absent (w_hr, lengths) or not asked for (gx, saved when not
// training).
struct ForwardJob {
  LayerShape shape;
  at::Tensor x, w_ih, w_hh, w_hr, lengths;
  at::Tensor b_ih, b_hh;  // as given (undefined without biases)
  at::Tensor bias;  // the cell's bias (cell_units.h), laid out for input_gemm()
  at::Tensor gx;    // (T,B,G) where input_gemm() asked for it
  at::Tensor y, h, c, saved;
};

// A backward pass: the gradients reaching the outputs in, the gate
// gradients out (the driver turns them into dx and the weight gradients).
// dh and dc hold grad_hn / grad_cn on entry and dh0 / dc0 on return.
struct BackwardJob {
  LayerShape shape;
  at::Tensor x, h0, c0, w_hh, w_hr, lengths, saved, dy;
  at::Tensor dh, dc;
  at::Tensor dgx, dgh;         // (T,B,G); dgh is dgx but for the GRU
  at::Tensor dhp_seq, r_seq;   // projection only: dh + dy (T,B,P), o*tanh(c) (T,B,H)
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual const char* name() const = 0;
  virtual Fit fit(const LayerShape& shape, Pass pass) const = 0;
  // Whether the planner may time it against the others (not a test witness).
  virtual bool measured() const { return true; }
  // True where forward leaves job.h and job.c as they came (h0, c0) and
  // points them at new tensors: the driver then hands it h0 and c0 without
  // copying them first.
  virtual bool keeps_initial_state() const { return false; }
  virtual InputGemm input_gemm(const LayerShape& shape) const = 0;
  virtual void forward(ForwardJob& job) const = 0;
  virtual void backward(BackwardJob& job) const = 0;
};

using Strategies = std::vector<std::unique_ptr<Strategy>>;

// A device's strategies, best first, and whether the planner measures them
// on this machine; called once per device when the library loads.
void register_strategies(c10::DeviceType device, Strategies strategies, bool measure);

// A test witness: a strategy that runs only when forced (e.g. another
// device's kernels emulated here), listed after the device's own, whatever
// the order in which the library's files register.
void register_witness(c10::DeviceType device, std::unique_ptr<Strategy> strategy);

// Times one pass of a strategy on a made-up layer of the given shape, in
// seconds (the driver knows how to set a pass up: sequence.cpp).
using Trial = std::function<double(const Strategy&, const LayerShape&, Pass)>;

// The strategy for this pass of this layer (recorded when recording is on).
const Strategy& plan(const LayerShape& shape, Pass pass, const Trial& trial);

// The first strategy whose rules take the layer: no forcing, no measuring,
// not recorded (what a trial of a backward pass runs its forward with).
const Strategy& plan_by_rules(const LayerShape& shape, Pass pass);

// What the planner measured: one line per shape it timed, the times and the
// choice (a test and report hook), and forgetting it.
std::vector<std::string> measurements();
void forget_measurements();

// The names of a device's strategies, in order.
std::vector<std::string> strategy_names(c10::DeviceType device);

// A 0/1 switch read from the environment (RNNKIT_AUTOTUNE, RNNKIT_PERSISTENT):
// `otherwise` where it is unset or empty; any other value raises, naming it.
bool env_switch(const char* name, bool otherwise);

// Forces a strategy by name for the whole process (nullopt: back to
// RNNKIT_STRATEGY, or to the planner's choice when that is unset).
void force_strategy(std::optional<std::string> name);
std::optional<std::string> forced_strategy();

// While on, every plan appends the chosen strategy's name to a list that
// take_recorded() hands back and clears (forward and backward passes alike).
void record_strategies(bool on);
std::vector<std::string> take_recorded();

// A pass with nothing to run (zero steps, rows or units) runs no strategy;
// it is recorded as "no_work".
void record_no_work();

}  // namespace rnnkit
