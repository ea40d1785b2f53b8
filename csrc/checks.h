// Argument checks shared by every op, so that bad input from any caller (a
// module, a direct torch.ops call, another device) ends in a Python
// exception that says what is wrong, before any kernel runs.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string_view>

#include "cells.h"

namespace rnnkit {

// "LSTM", "GRU", "RNN_TANH", "RNN_RELU"; anything else raises ValueError.
CellKind parse_mode(std::string_view mode);

struct LayerSizes {
  int64_t T, B, I, H, P, G;
};

// Checks ranks, sizes, dtypes and devices of a layer call; returns the sizes.
LayerSizes check_layer_args(CellKind kind, const at::Tensor& x, const at::Tensor& h0,
                            const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh,
                            const std::optional<at::Tensor>& w_hr,
                            const std::optional<at::Tensor>& lengths);

// A tensor handed to backward (a gradient, what forward saved) must have
// the shape given and the dtype and device of the input x.
void check_same_as(const std::optional<at::Tensor>& t, at::IntArrayRef shape, const at::Tensor& x,
                   const char* name);

}  // namespace rnnkit
