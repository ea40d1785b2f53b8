// The planner: how one pass of one layer runs on its device. Each device
// registers an ordered list of named strategies (best first, a strategy that
// runs everything last); for every op call the planner picks one, once:
// the forced one (RNNKIT_STRATEGY, or rnnkit.strategy() in Python) if it can
// run the layer, else the first that can and that its own rules pick for the
// shape. Which one ran can be recorded (the benchmark reports it).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

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
// allocated. h holds h0 on entry and must hold h_n on return (the strategy
// may point it at another buffer); c likewise for the LSTM. Undefined
// tensors: absent (w_hr, lengths) or not asked for (gx, saved when not
// training).
struct ForwardJob {
  LayerShape shape;
  at::Tensor x, w_ih, w_hh, w_hr, lengths;
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
  virtual InputGemm input_gemm(const LayerShape& shape) const = 0;
  virtual void forward(ForwardJob& job) const = 0;
  virtual void backward(BackwardJob& job) const = 0;
};

using Strategies = std::vector<std::unique_ptr<Strategy>>;

// A device's strategies, best first; called once per device when the
// library loads.
void register_strategies(c10::DeviceType device, Strategies strategies);

// The strategy for this pass of this layer (recorded when recording is on).
const Strategy& plan(const LayerShape& shape, Pass pass);

// The names of a device's strategies, in order.
std::vector<std::string> strategy_names(c10::DeviceType device);

// Forces a strategy by name for the whole process (nullopt: back to
// RNNKIT_STRATEGY, or to the planner's choice when that is unset).
void force_strategy(std::optional<std::string> name);
std::optional<std::string> forced_strategy();

// While on, every plan appends the chosen strategy's name to a list that
// take_recorded() hands back and clears (forward and backward passes alike).
void record_strategies(bool on);
std::vector<std::string> take_recorded();

}  // namespace rnnkit
