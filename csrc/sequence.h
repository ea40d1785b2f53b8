// The sequence driver: one layer, one direction, a whole sequence, forward
// and backward. Device-neutral: GEMMs go through ATen (BLAS on the CPU,
// cuBLAS on the current CUDA stream), each step's pointwise work through the
// device's registered step kernels.
#pragma once

#include <ATen/ATen.h>

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

// Returns dx, dh0, dc0, dW_ih, dW_hh, db_ih, db_hh, dW_hr (dc0 and dW_hr
// empty where the layer has none).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> layer_backward(
    const OptTensor& grad_y, const OptTensor& grad_hn, const OptTensor& grad_cn,
    const Tensor& x, const Tensor& h0, const OptTensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& w_hr, const OptTensor& lengths, const Tensor& y,
    const Tensor& saved, std::string_view mode, bool reverse);

// One step of a cell (LSTMCell, GRUCell, RNNCell): the layer driver with T = 1.
// Returns h', c' (empty unless LSTM) and what backward needs.
std::tuple<Tensor, Tensor, Tensor> cell_forward(
    const Tensor& x, const Tensor& h, const OptTensor& c, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, std::string_view mode,
    bool training);

// Returns dx, dh, dc, dW_ih, dW_hh, db_ih, db_hh.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cell_backward(
    const OptTensor& grad_h, const OptTensor& grad_c, const Tensor& x, const Tensor& h,
    const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h_new,
    const Tensor& saved, std::string_view mode);

}  // namespace rnnkit
