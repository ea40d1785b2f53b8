#include "checks.h"

#include <c10/util/Exception.h>

#include <string>

namespace rnnkit {

CellKind parse_mode(std::string_view mode) {
  if (mode == "LSTM") return CellKind::LSTM;
  if (mode == "GRU") return CellKind::GRU;
  if (mode == "RNN_TANH") return CellKind::RNN_TANH;
  if (mode == "RNN_RELU") return CellKind::RNN_RELU;
  TORCH_CHECK_VALUE(false, "rnnkit: unknown mode '", std::string(mode),
                    "'; expected LSTM, GRU, RNN_TANH or RNN_RELU");
}

namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Same dtype and device as the input x; `shape` checked by the caller.
void check_like_input(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "rnnkit: ", name, " has dtype ",
                   t.scalar_type(), " but the input has dtype ", x.scalar_type(),
                   "; all tensors must have the same dtype");
  TORCH_CHECK_VALUE(t.device() == x.device(), "rnnkit: ", name, " is on ", t.device(),
                    " but the input is on ", x.device(),
                    "; all tensors must be on the same device");
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "rnnkit: ", name, " must have shape ", expected,
                    ", got ", t.sizes());
}

}  // namespace

LayerSizes check_layer_args(CellKind kind, const at::Tensor& x, const at::Tensor& h0,
                            const std::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                            const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh,
                            const std::optional<at::Tensor>& w_hr,
                            const std::optional<at::Tensor>& lengths) {
  TORCH_CHECK_VALUE(x.dim() == 3, "rnnkit: input must be 3-D (seq_len, batch, input_size), got ",
                    x.dim(), "-D with shape ", x.sizes());
  TORCH_CHECK_TYPE(is_supported_dtype(x.scalar_type()), "rnnkit: input dtype ", x.scalar_type(),
                   " is not supported; use float32, float64, float16 or bfloat16");
  TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_hh.dim() == 2, "rnnkit: weight_ih and weight_hh must be 2-D, got ",
                    w_ih.sizes(), " and ", w_hh.sizes());
  const int64_t gates = gate_count(kind);
  const int64_t G = w_hh.size(0);
  TORCH_CHECK_VALUE(G % gates == 0, "rnnkit: weight_hh has ", G, " rows, not a multiple of ",
                    gates, " gates");
  const int64_t H = G / gates;
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2);

  check_like_input(w_ih, x, "weight_ih");
  check_like_input(w_hh, x, "weight_hh");
  TORCH_CHECK_VALUE(w_ih.size(0) == G, "rnnkit: weight_ih must have ", G, " rows like weight_hh, got ",
                    w_ih.size(0));
  TORCH_CHECK_VALUE(w_ih.size(1) == I, "rnnkit: input has ", I, " features but weight_ih expects ",
                    w_ih.size(1), " (input_size)");

  int64_t P = H;
  if (w_hr.has_value()) {
    TORCH_CHECK_VALUE(kind == CellKind::LSTM, "rnnkit: weight_hr (projection) is only for LSTM");
    check_like_input(*w_hr, x, "weight_hr");
    TORCH_CHECK_VALUE(w_hr->dim() == 2 && w_hr->size(1) == H && w_hr->size(0) > 0,
                      "rnnkit: weight_hr must have shape (proj_size, ", H, "), got ", w_hr->sizes());
    P = w_hr->size(0);
  }
  TORCH_CHECK_VALUE(w_hh.size(1) == P, "rnnkit: weight_hh must have ", P, " columns (the width of h), got ",
                    w_hh.size(1));
  for (const auto& [bias, name] : {std::pair{&b_ih, "bias_ih"}, std::pair{&b_hh, "bias_hh"}}) {
    if (!bias->has_value()) continue;
    check_like_input(**bias, x, name);
    check_shape(**bias, {G}, name);
  }

  check_like_input(h0, x, "h0");
  TORCH_CHECK_VALUE(h0.dim() == 2, "rnnkit: h0 must be 2-D (batch, hidden), got shape ", h0.sizes());
  check_shape(h0, {B, P}, "h0 (Expected hidden size)");
  if (kind == CellKind::LSTM) {
    TORCH_CHECK_VALUE(c0.has_value(), "rnnkit: LSTM needs c0");
    check_like_input(*c0, x, "c0");
    check_shape(*c0, {B, H}, "c0 (Expected cell size)");
  } else {
    TORCH_CHECK_VALUE(!c0.has_value(), "rnnkit: c0 is only for LSTM");
  }

  if (lengths.has_value()) {
    TORCH_CHECK_TYPE(lengths->scalar_type() == at::kLong, "rnnkit: lengths must be int64, got ",
                     lengths->scalar_type());
    TORCH_CHECK_VALUE(lengths->device() == x.device(), "rnnkit: lengths is on ", lengths->device(),
                      " but the input is on ", x.device());
    check_shape(*lengths, {B}, "lengths");
    if (lengths->device().is_cpu() && B > 0) {  // on a GPU this would cost a sync
      TORCH_CHECK_VALUE(lengths->min().item<int64_t>() >= 0 && lengths->max().item<int64_t>() <= T,
                        "rnnkit: lengths must lie in [0, ", T, "] (seq_len)");
    }
  }
  return {T, B, I, H, P, G};
}

void check_same_as(const std::optional<at::Tensor>& t, at::IntArrayRef shape, const at::Tensor& x,
                   const char* name) {
  if (!t.has_value()) return;
  check_like_input(*t, x, name);
  check_shape(*t, shape, name);
}

}  // namespace rnnkit
