// The bias a cell adds (cell_units.h: cell_bias_width values), laid out for
// a strategy's input GEMM: b_hh for every gate, plus b_ih where the input
// projections gx do not already hold it; GRU's b_in goes to its own block
// (zero where gx holds it), as n = tanh(x_n + b_in + r * (W_hn h + b_hn)).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "cells.h"

namespace rnnkit {

at::Tensor cell_bias(CellKind kind, int64_t H, const std::optional<at::Tensor>& b_ih,
                     const std::optional<at::Tensor>& b_hh, bool gx_has_b_ih,
                     const at::TensorOptions& opts);

}  // namespace rnnkit
