#include "sequence.h"

#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <array>
#include <utility>

#include "checks.h"
#include "recurrent_gemm.h"
#include "step.h"

namespace rnnkit {

// ---- step kernel registry ------------------------------------------------

namespace {
std::array<const StepKernels*, static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>&
registry() {
  static std::array<const StepKernels*,
                    static_cast<size_t>(c10::DeviceType::COMPILE_TIME_MAX_DEVICE_TYPES)>
      kernels{};
  return kernels;
}
}  // namespace

void register_step_kernels(c10::DeviceType device, const StepKernels* kernels) {
  registry()[static_cast<size_t>(device)] = kernels;
}

const StepKernels& step_kernels_for(c10::DeviceType device) {
  const StepKernels* k = registry()[static_cast<size_t>(device)];
  TORCH_CHECK_NOT_IMPLEMENTED(k != nullptr, "rnnkit: no kernels for device type ", device,
                              " (was rnnkit built with CUDA?)");
  return *k;
}

// ---- helpers ---------------------------------------------------------------

namespace {

const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mutable_ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

Tensor contiguous_or_undefined(const OptTensor& t) {
  return t.has_value() ? t->contiguous() : Tensor();
}

// Buffers whose finished (padded) positions are never written by a step must
// start at zero when rows have their own lengths.
Tensor sequence_buffer(at::IntArrayRef shape, const Tensor& like, bool has_lengths) {
  return has_lengths ? at::zeros(shape, like.options()) : at::empty(shape, like.options());
}

// A gradient laid out like the tensor it belongs to (torch's empty_like rule),
// as the fake kernels promise: torch.compile checks the strides it was told.
Tensor laid_out_like(const Tensor& grad, const Tensor& input) {
  if (grad.strides() == input.strides()) return grad;
  Tensor out = at::empty_like(input);
  out.copy_(grad);
  return out;
}

// The hidden state each time step started from, time-ordered like y:
// y shifted by one step, with h0 where a row begins.
Tensor previous_hidden(const Tensor& y, const Tensor& h0, const OptTensor& lengths, bool reverse) {
  const int64_t T = y.size(0);
  if (T == 0) return y;
  Tensor h0_step = h0.unsqueeze(0);
  if (!reverse) return at::cat({h0_step, y.narrow(0, 0, T - 1)}, 0);
  Tensor shifted = at::cat({y.narrow(0, 1, T - 1), h0_step}, 0);
  if (!lengths.has_value()) return shifted;
  // In reverse a row of length L begins at t = L - 1.
  Tensor begins = at::arange(T, lengths->options()).unsqueeze(1) == (*lengths - 1).unsqueeze(0);
  return at::where(begins.unsqueeze(2), h0_step, shifted);
}

}  // namespace

// ---- forward ---------------------------------------------------------------

std::tuple<Tensor, Tensor, Tensor, Tensor> layer_forward(
    const Tensor& x_in, const Tensor& h0, const OptTensor& c0, const Tensor& w_ih_in,
    const Tensor& w_hh_in, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr_in,
    const OptTensor& lengths_in, std::string_view mode, bool reverse, bool training) {
  const CellKind kind = parse_mode(mode);
  const LayerSizes n = check_layer_args(kind, x_in, h0, c0, w_ih_in, w_hh_in, b_ih, b_hh, w_hr_in,
                                        lengths_in);
  const c10::DeviceGuard guard(x_in.device());
  const StepKernels& kernels = step_kernels_for(x_in.device().type());
  const int64_t T = n.T, B = n.B, H = n.H, P = n.P, G = n.G;
  const int64_t W = saved_count(kind) * H;
  const bool project = w_hr_in.has_value();
  const bool has_lengths = lengths_in.has_value();

  const Tensor x = x_in.contiguous();
  const Tensor w_ih = w_ih_in.contiguous();
  const Tensor w_hh = w_hh_in.contiguous();
  const Tensor w_hr = contiguous_or_undefined(w_hr_in);
  const Tensor lengths = contiguous_or_undefined(lengths_in);
  // Contiguous like the weights, so that a strided bias takes the same GEMM
  // path (cuBLAS fuses only a contiguous bias) and gives the same bits.
  Tensor bias_ih = contiguous_or_undefined(b_ih);
  // Kernels always add b_hh; zeros stand in when the layer has no bias.
  Tensor bias_hh = b_hh.has_value() ? b_hh->contiguous() : at::zeros({G}, x.options());
  // On the CPU, where addmm first copies the bias into every row of its
  // output (T*B*G values), LSTM and RNN add both biases in the cell instead:
  // both sit beside the same pre-activation. GRU cannot (b_hn is inside r * ...).
  if (x.device().is_cpu() && kind != CellKind::GRU && bias_ih.defined()) {
    bias_hh = bias_hh + bias_ih;
    bias_ih = Tensor();
  }

  Tensor y = sequence_buffer({T, B, P}, x, has_lengths);
  Tensor saved = sequence_buffer({training ? T : 0, B, training ? W : 0}, x, has_lengths);
  Tensor h_cur = h0.contiguous().clone();
  Tensor h_next = at::empty_like(h_cur);
  Tensor c = kind == CellKind::LSTM ? c0->contiguous().clone() : at::empty({0}, x.options());
  Tensor gh = at::empty({B, G}, x.options());
  Tensor r = project ? at::empty({B, H}, x.options()) : Tensor();

  StepShape shape{kind, x.scalar_type(), 0, T, B, H, P, reverse,
                  has_lengths ? lengths.data_ptr<int64_t>() : nullptr};
  void* saved_ptr = W > 0 && training ? saved.data_ptr() : nullptr;
  ForwardStep pointers{shape, nullptr, gh.data_ptr(), bias_hh.data_ptr(), nullptr,
                       nullptr, mutable_ptr_or_null(r), mutable_ptr_or_null(c),
                       y.data_ptr(), saved_ptr};
  // The device's own time loop, where it has one for this case, ...
  const bool try_loop = T > 0 && B > 0 && !project && kernels.forward_loop;
  auto run_loop = [&] {
    return kernels.forward_loop({pointers, h_cur.data_ptr(), h_next.data_ptr(), gh.data_ptr(),
                                 w_hh.data_ptr(), x.data_ptr(), w_ih.data_ptr(), n.I});
  };
  // ... first computing each step's input projections itself (it has no
  // bias of its own to add, so only where b_ih went into bias_hh), ...
  if (try_loop && !bias_ih.defined() && run_loop()) return {y, h_cur, c, saved};

  // 1. ... else the input projections of every step in one GEMM, ...
  Tensor gx = at::empty({T, B, G}, x.options());
  if (T * B > 0) {
    Tensor gx_rows = gx.view({T * B, G});
    if (bias_ih.defined()) at::addmm_out(gx_rows, bias_ih, x.view({T * B, n.I}), w_ih.t());
    else at::mm_out(gx_rows, x.view({T * B, n.I}), w_ih.t());
  }
  pointers.gx = gx.data_ptr();
  // 2. ... then the device's time loop reading them, ...
  if (try_loop && run_loop()) return {y, h_cur, c, saved};

  // ... or per step: the recurrent GEMM and one fused pointwise pass.
  const RecurrentGemm hidden_gemm(w_hh, /*transposed=*/true, B, kernels.gemm);
  const std::optional<RecurrentGemm> project_gemm =
      project ? std::make_optional<RecurrentGemm>(w_hr, true, B, kernels.gemm) : std::nullopt;
  for (int64_t s = 0; s < T && B > 0; ++s) {
    ForwardStep step = pointers;
    step.shape.step = s;
    step.h_prev = h_cur.data_ptr();
    step.h_next = h_next.data_ptr();
    hidden_gemm.run(gh, h_cur, /*accumulate=*/false);
    kernels.forward(step);
    if (project) {
      project_gemm->run(h_next, r, false);
      kernels.project({step.shape, h_cur.data_ptr(), h_next.data_ptr(), y.data_ptr()});
    }
    std::swap(h_cur, h_next);
  }
  return {y, h_cur, c, saved};
}

// ---- backward --------------------------------------------------------------

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> layer_backward(
    const OptTensor& grad_y, const OptTensor& grad_hn, const OptTensor& grad_cn,
    const Tensor& x_in, const Tensor& h0_in, const OptTensor& c0, const Tensor& w_ih_in,
    const Tensor& w_hh_in, const OptTensor& w_hr_in, const OptTensor& lengths_in,
    const Tensor& y_in, const Tensor& saved_in, std::string_view mode, bool reverse) {
  const CellKind kind = parse_mode(mode);
  const LayerSizes n = check_layer_args(kind, x_in, h0_in, c0, w_ih_in, w_hh_in, std::nullopt,
                                        std::nullopt, w_hr_in, lengths_in);
  const int64_t T = n.T, B = n.B, I = n.I, H = n.H, P = n.P, G = n.G;
  const int64_t W = saved_count(kind) * H;
  TORCH_CHECK_VALUE(y_in.sizes() == at::IntArrayRef({T, B, P}), "rnnkit: y must have shape ",
                    at::IntArrayRef({T, B, P}), ", got ", y_in.sizes());
  TORCH_CHECK_VALUE(W == 0 || T * B == 0 || saved_in.sizes() == at::IntArrayRef({T, B, W}),
                    "rnnkit: backward needs what a forward with training=True saved; got a saved "
                    "tensor of shape ", saved_in.sizes());
  check_same_as(grad_y, y_in, "grad_y");
  check_same_as(grad_hn, h0_in, "grad_hn");
  if (kind == CellKind::LSTM) check_same_as(grad_cn, *c0, "grad_cn");

  const c10::DeviceGuard guard(x_in.device());
  const StepKernels& kernels = step_kernels_for(x_in.device().type());
  const bool project = w_hr_in.has_value();
  const bool has_lengths = lengths_in.has_value();
  const at::TensorOptions opts = x_in.options();

  const Tensor x = x_in.contiguous();
  const Tensor h0 = h0_in.contiguous();
  const Tensor c0c = contiguous_or_undefined(c0);
  const Tensor w_ih = w_ih_in.contiguous();
  const Tensor w_hh = w_hh_in.contiguous();
  const Tensor w_hr = contiguous_or_undefined(w_hr_in);
  const Tensor lengths = contiguous_or_undefined(lengths_in);
  const Tensor y = y_in.contiguous();
  const Tensor saved = saved_in.contiguous();
  const Tensor dy = contiguous_or_undefined(grad_y);

  Tensor dgx = sequence_buffer({T, B, G}, x, has_lengths);
  Tensor dgh = kind == CellKind::GRU ? sequence_buffer({T, B, G}, x, has_lengths) : dgx;
  Tensor dg_step = at::empty({B, G}, opts);
  Tensor dh_cur = grad_hn.has_value() ? grad_hn->contiguous().clone() : at::zeros({B, P}, opts);
  Tensor dh_next = at::empty({B, P}, opts);
  Tensor dc = kind != CellKind::LSTM ? at::empty({0}, opts)
              : grad_cn.has_value()  ? grad_cn->contiguous().clone()
                                     : at::zeros({B, H}, opts);
  Tensor dhp_seq, dhp_step, dr, r_seq;
  if (project) {
    dhp_seq = sequence_buffer({T, B, P}, x, has_lengths);
    dhp_step = at::empty({B, P}, opts);
    dr = at::empty({B, H}, opts);
    r_seq = sequence_buffer({T, B, H}, x, has_lengths);
  }

  StepShape shape{kind, x.scalar_type(), 0, T, B, H, P, reverse,
                  has_lengths ? lengths.data_ptr<int64_t>() : nullptr};
  // The only sequential part: dh and dc through time. The pointers of one
  // step, but for dh, dh_next and dg_step, which change from step to step.
  const BackwardStep pointers{shape, ptr_or_null(dy), nullptr, ptr_or_null(dr),
                              mutable_ptr_or_null(dc), h0.data_ptr(), ptr_or_null(c0c),
                              y.data_ptr(), ptr_or_null(saved), dgx.data_ptr(), dgh.data_ptr(),
                              nullptr, nullptr, mutable_ptr_or_null(r_seq)};
  // The device's own time loop where it has one for this case, ...
  bool looped = false;
  if (T > 0 && B > 0 && !project && kernels.backward_loop) {
    const Tensor dg_spare = at::empty({B, G}, opts);  // the loop's second buffer
    looped = kernels.backward_loop({pointers, dh_cur.data_ptr(), dh_next.data_ptr(),
                                    {dg_step.data_ptr(), dg_spare.data_ptr()}, w_hh.data_ptr()});
  }
  // ... else per step: the cell, then the recurrent GEMM.
  if (!looped) {
    const RecurrentGemm hidden_gemm(w_hh, /*transposed=*/false, B, kernels.gemm);
    const std::optional<RecurrentGemm> project_gemm =
        project ? std::make_optional<RecurrentGemm>(w_hr, false, B, kernels.gemm) : std::nullopt;
    for (int64_t s = T - 1; s >= 0 && B > 0; --s) {
      BackwardStep step = pointers;
      step.shape.step = s;
      step.dh = dh_cur.data_ptr();
      step.dh_next = dh_next.data_ptr();
      step.dg_step = dg_step.data_ptr();
      if (project) {
        kernels.project_backward({step.shape, ptr_or_null(dy), dh_cur.data_ptr(),
                                  dhp_seq.data_ptr(), dhp_step.data_ptr()});
        project_gemm->run(dr, dhp_step, false);
      }
      kernels.backward(step);
      hidden_gemm.run(dh_next, dg_step, /*accumulate=*/true);
      std::swap(dh_cur, dh_next);
    }
  }

  // Everything else is one large GEMM or reduction over all T*B rows.
  const Tensor dgx_rows = dgx.view({T * B, G});
  const Tensor dgh_rows = dgh.view({T * B, G});
  Tensor dx = at::mm(dgx_rows, w_ih).view({T, B, I});
  Tensor dw_ih = at::mm(dgx_rows.t(), x.view({T * B, I}));
  Tensor dw_hh = at::mm(dgh_rows.t(), previous_hidden(y, h0, lengths_in, reverse).reshape({T * B, P}));
  Tensor db_ih = dgx_rows.sum(0);
  // LSTM and RNN share one gate gradient between the two sides: one reduction.
  Tensor db_hh = kind == CellKind::GRU ? dgh_rows.sum(0) : db_ih.clone();
  Tensor dw_hr = project ? at::mm(dhp_seq.view({T * B, P}).t(), r_seq.view({T * B, H}))
                         : at::empty({0}, opts);
  if (kind == CellKind::LSTM) dc = laid_out_like(dc, *c0);
  if (project) dw_hr = laid_out_like(dw_hr, *w_hr_in);
  return {laid_out_like(dx, x_in), laid_out_like(dh_cur, h0_in), dc, laid_out_like(dw_ih, w_ih_in),
          laid_out_like(dw_hh, w_hh_in), db_ih, db_hh, dw_hr};
}

// ---- cells -----------------------------------------------------------------

std::tuple<Tensor, Tensor, Tensor> cell_forward(
    const Tensor& x, const Tensor& h, const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& b_ih, const OptTensor& b_hh, std::string_view mode, bool training) {
  TORCH_CHECK_VALUE(x.dim() == 2, "rnnkit: cell input must be 2-D (batch, input_size), got ", x.dim(),
                    "-D with shape ", x.sizes());
  auto [y, h_new, c_new, saved] = layer_forward(x.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh,
                                                std::nullopt, std::nullopt, mode, false, training);
  return {h_new, c_new, saved};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cell_backward(
    const OptTensor& grad_h, const OptTensor& grad_c, const Tensor& x, const Tensor& h,
    const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h_new,
    const Tensor& saved, std::string_view mode) {
  TORCH_CHECK_VALUE(x.dim() == 2, "rnnkit: cell input must be 2-D (batch, input_size), got ", x.dim(),
                    "-D with shape ", x.sizes());
  auto [dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr] =
      layer_backward(std::nullopt, grad_h, grad_c, x.unsqueeze(0), h, c, w_ih, w_hh, std::nullopt,
                     std::nullopt, h_new.unsqueeze(0), saved, mode, false);
  return {laid_out_like(dx.squeeze(0), x), dh, dc, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace rnnkit
