// The sequence driver: one layer, one direction, a whole sequence, forward
// and backward. Device-neutral: it checks the arguments, allocates, asks the
// planner (strategy.h) once, runs the input GEMM where the strategy wants
// it, hands the time loop to the strategy, and turns the gate gradients
// into dx and the weight gradients with one GEMM or reduction each.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

#include "cells.h"

namespace rnnkit {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Returns y (T,B,P), h_n (B,P), c_n (B,H; empty unless LSTM) and what
// backward needs (empty unless training).
std::tuple<Tensor, Tensor, Tensor, Tensor> layer_forward(
    const Tensor& x, const Tensor& h0, const OptTensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    const OptTensor& lengths, std::string_view mode, bool reverse, bool training);

// Returns dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr: those `needs`
// asks for, in that order (dh0 and dc0 always), empty (0,) tensors for the
// others and where the layer has none.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> layer_backward(
    const OptTensor& grad_y, const OptTensor& grad_hn, const OptTensor& grad_cn,
    const Tensor& x, const Tensor& h0, const OptTensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& w_hr, const OptTensor& lengths, const Tensor& saved,
    std::string_view mode, bool reverse, std::array<bool, 8> needs);

// One step of a cell (LSTMCell, GRUCell, RNNCell): the layer driver with T = 1.
// Returns h', c' (empty unless LSTM) and what backward needs.
std::tuple<Tensor, Tensor, Tensor> cell_forward(
    const Tensor& x, const Tensor& h, const OptTensor& c, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, std::string_view mode,
    bool training);

// Returns dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh, as layer_backward.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cell_backward(
    const OptTensor& grad_h, const OptTensor& grad_c, const Tensor& x, const Tensor& h,
    const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh, const Tensor& saved,
    std::string_view mode, std::array<bool, 7> needs);

}  // namespace rnnkit
