#include "sequence.h"

#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "buffer_pool.h"
#include "cell_bias.h"
#include "cell_units.h"
#include "checks.h"
#include "large_gemm.h"
#include "strategy.h"

namespace rnnkit {

namespace {

Tensor contiguous_or_undefined(const OptTensor& t) {
  return t.has_value() ? t->contiguous() : Tensor();
}

Tensor nothing(const at::TensorOptions& opts) { return at::empty({0}, opts); }

// Buffers whose finished (padded) positions are never written by a step must
// start at zero when rows have their own lengths. The engine's own buffers
// (what training keeps, the gate gradients) come from scratch_buffer, which
// follows the same rule; y does not: it is the user's.
Tensor sequence_buffer(at::IntArrayRef shape, const at::TensorOptions& opts, bool has_lengths) {
  return has_lengths ? at::zeros(shape, opts) : at::empty(shape, opts);
}

// A gradient laid out like the tensor it belongs to (torch's empty_like rule),
// as the fake kernels promise: torch.compile checks the strides it was told.
Tensor laid_out_like(const Tensor& grad, const Tensor& input) {
  if (!grad.defined() || grad.numel() == 0 || grad.strides() == input.strides()) return grad;
  Tensor out = at::empty_like(input);
  out.copy_(grad);
  return out;
}

// gx = x W_ih^T (+ b_ih) for all T*B rows at once.
Tensor input_projection(const Tensor& x, const Tensor& w_ih, const OptTensor& b_ih) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), G = w_ih.size(0);
  const Tensor x_rows = x.view({T * B, I});
  if (!b_ih.has_value()) return large_gemm(x_rows, w_ih.t()).view({T, B, G});
  Tensor gx = scratch_buffer({T, B, G}, x.options(), false);
  // Contiguous like the weights, so that a strided bias takes the same GEMM
  // path (cuBLAS fuses only a contiguous bias) and gives the same bits.
  Tensor gx_rows = gx.view({T * B, G});
  at::addmm_out(gx_rows, b_ih->contiguous(), x_rows, w_ih.t());
  return gx;
}

// The hidden state each time step started from, time-ordered: the kept
// states (T,B,P) shifted by one step, with h0 where a row begins.
Tensor previous_hidden(const Tensor& h_seq, const Tensor& h0, const Tensor& lengths, bool reverse) {
  const int64_t T = h_seq.size(0);
  Tensor h0_step = h0.unsqueeze(0);
  if (!reverse) return at::cat({h0_step, h_seq.narrow(0, 0, T - 1)}, 0);
  Tensor shifted = at::cat({h_seq.narrow(0, 1, T - 1), h0_step}, 0);
  if (!lengths.defined()) return shifted;
  // In reverse a row of length L begins at t = L - 1.
  Tensor begins = at::arange(T, lengths.options()).unsqueeze(1) == (lengths - 1).unsqueeze(0);
  return at::where(begins.unsqueeze(2), h0_step, shifted);
}

}  // namespace

// ---- forward ---------------------------------------------------------------

namespace {

// Times one pass of a strategy on made-up inputs (the planner's Trial).
double time_trial(const Strategy& strategy, const LayerShape& shape, Pass pass);

struct ForwardInputs {
  Tensor x, h0;
  OptTensor c0;
  Tensor w_ih, w_hh;
  OptTensor b_ih, b_hh, w_hr, lengths;
};

// One forward pass of a layer by the given strategy: outputs allocated, the
// input GEMM where the strategy wants it, then its time loop.
ForwardJob forward_with(const Strategy* strategy, const LayerShape& shape, const ForwardInputs& in) {
  const at::TensorOptions opts = in.x.options();
  const int64_t T = shape.T, B = shape.B, H = shape.H, P = shape.P;
  const int64_t W = shape.training ? saved_width(shape.kind, H, P) : 0;
  ForwardJob job;
  job.shape = shape;
  job.y = sequence_buffer({T, B, P}, opts, shape.lengths);
  job.saved = scratch_buffer({shape.training ? T : 0, B, W}, opts, shape.lengths);
  // The state the strategy starts from, a copy where it updates it in place.
  const bool copy_state = strategy == nullptr || !strategy->keeps_initial_state();
  job.h = copy_state ? in.h0.contiguous().clone() : in.h0.contiguous();
  job.c = shape.kind != CellKind::LSTM ? nothing(opts)
          : copy_state                 ? in.c0->contiguous().clone()
                                       : in.c0->contiguous();
  if (strategy == nullptr) return job;  // nothing to run: zero steps, rows or units

  const InputGemm input = strategy->input_gemm(shape);
  job.x = in.x.contiguous();
  job.w_ih = in.w_ih.contiguous();
  job.w_hh = in.w_hh.contiguous();
  job.w_hr = contiguous_or_undefined(in.w_hr);
  job.lengths = contiguous_or_undefined(in.lengths);
  job.b_ih = contiguous_or_undefined(in.b_ih);
  job.b_hh = contiguous_or_undefined(in.b_hh);
  job.bias = cell_bias(shape.kind, H, in.b_ih, in.b_hh, input == InputGemm::kWithBias, opts);
  if (input != InputGemm::kNone) {
    job.gx = input_projection(job.x, job.w_ih, input == InputGemm::kWithBias ? in.b_ih : std::nullopt);
  }
  strategy->forward(job);
  return job;
}

// Made-up inputs of a layer of the given shape, for timing a strategy.
ForwardInputs trial_inputs(const LayerShape& s) {
  const at::TensorOptions opts = at::TensorOptions().dtype(s.dtype).device(s.device);
  const int64_t G = gate_count(s.kind) * s.H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(s.H, 1)));
  auto weight = [&](at::IntArrayRef size) { return at::rand(size, opts).mul_(2 * scale).sub_(scale); };
  ForwardInputs in;
  in.x = at::randn({s.T, s.B, s.I}, opts);
  in.h0 = at::zeros({s.B, s.P}, opts);
  if (s.kind == CellKind::LSTM) in.c0 = at::zeros({s.B, s.H}, opts);
  in.w_ih = weight({G, s.I});
  in.w_hh = weight({G, s.P});
  in.b_ih = weight({G});
  in.b_hh = weight({G});
  if (s.projection) in.w_hr = weight({s.P, s.H});
  if (s.lengths) {
    // Every length from T down to 1 (sorted, as pack_padded_sequence leaves them).
    Tensor lengths = at::arange(s.B, at::TensorOptions().dtype(at::kLong)).remainder_(s.T).neg_().add_(s.T);
    in.lengths = lengths.to(s.device);
  }
  return in;
}

// The best of three timed runs after one untimed one (JIT compilation, first
// touch of fresh memory), in seconds.
template <class Fn>
double best_of_runs(const Fn& run) {
  run();
  double best = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// The strategy of a pass; none where it has nothing to run.
const Strategy* strategy_for(const LayerShape& shape, Pass pass, bool has_work) {
  if (has_work) return &plan(shape, pass, time_trial);
  record_no_work();
  return nullptr;
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> layer_forward(
    const Tensor& x, const Tensor& h0, const OptTensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& w_hr,
    const OptTensor& lengths, std::string_view mode, bool reverse, bool training) {
  const CellKind kind = parse_mode(mode);
  const LayerSizes n = check_layer_args(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths);
  const c10::DeviceGuard guard(x.device());
  const LayerShape shape{kind, x.scalar_type(), x.device().type(), n.T, n.B, n.I, n.H, n.P,
                         reverse, lengths.has_value(), w_hr.has_value(), training};
  const ForwardInputs in{x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths};
  const Strategy* strategy = strategy_for(shape, Pass::Forward, n.T * n.B * n.H > 0);
  const ForwardJob job = forward_with(strategy, shape, in);
  return {job.y, job.h, job.c, job.saved};
}

// ---- backward --------------------------------------------------------------

namespace {

struct BackwardInputs {
  OptTensor grad_y, grad_hn, grad_cn;
  Tensor x, h0;
  OptTensor c0;
  Tensor w_hh;
  OptTensor w_hr, lengths;
  Tensor saved;
};

// The time loop of a backward pass by the given strategy: the gate
// gradients, dh0 and dc0 (and with a projection what dW_hr needs).
BackwardJob backward_with(const Strategy* strategy, const LayerShape& shape, const BackwardInputs& in) {
  const at::TensorOptions opts = in.x.options();
  const int64_t T = shape.T, B = shape.B, H = shape.H, P = shape.P, G = gate_count(shape.kind) * H;
  BackwardJob job;
  job.shape = shape;
  job.dh = in.grad_hn.has_value() ? in.grad_hn->contiguous().clone() : at::zeros({B, P}, opts);
  job.dc = shape.kind != CellKind::LSTM ? nothing(opts)
           : in.grad_cn.has_value()     ? in.grad_cn->contiguous().clone()
                                        : at::zeros({B, H}, opts);
  job.dgx = scratch_buffer({T, B, G}, opts, shape.lengths);
  job.dgh = shape.kind == CellKind::GRU ? scratch_buffer({T, B, G}, opts, shape.lengths) : job.dgx;
  if (shape.projection) {
    job.dhp_seq = scratch_buffer({T, B, P}, opts, shape.lengths);
    job.r_seq = scratch_buffer({T, B, H}, opts, shape.lengths);
  }
  job.x = in.x.contiguous();
  job.h0 = in.h0.contiguous();
  job.saved = in.saved.contiguous();
  if (strategy == nullptr) return job;  // nothing to run: zero steps, rows or units
  job.c0 = contiguous_or_undefined(in.c0);
  job.w_hh = in.w_hh.contiguous();
  job.w_hr = contiguous_or_undefined(in.w_hr);
  job.lengths = contiguous_or_undefined(in.lengths);
  job.dy = contiguous_or_undefined(in.grad_y);
  strategy->backward(job);
  return job;
}

double time_trial(const Strategy& strategy, const LayerShape& shape, Pass pass) {
  const ForwardInputs in = trial_inputs(shape);
  if (pass == Pass::Forward) return best_of_runs([&] { forward_with(&strategy, shape, in); });
  // What backward reads comes from a training forward by the first strategy
  // that runs it (not timed).
  LayerShape training = shape;
  training.training = true;
  const ForwardJob out = forward_with(&plan_by_rules(training, Pass::Forward), training, in);
  const BackwardInputs back{at::randn_like(out.y), std::nullopt, std::nullopt, in.x, in.h0, in.c0,
                            in.w_hh, in.w_hr, in.lengths, out.saved};
  return best_of_runs([&] { backward_with(&strategy, shape, back); });
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> layer_backward(
    const OptTensor& grad_y, const OptTensor& grad_hn, const OptTensor& grad_cn, const Tensor& x,
    const Tensor& h0, const OptTensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& w_hr, const OptTensor& lengths, const Tensor& saved, std::string_view mode,
    bool reverse, std::array<bool, 8> needs) {
  const CellKind kind = parse_mode(mode);
  const LayerSizes n = check_layer_args(kind, x, h0, c0, w_ih, w_hh, std::nullopt, std::nullopt,
                                        w_hr, lengths);
  const int64_t T = n.T, B = n.B, I = n.I, H = n.H, P = n.P, G = n.G;
  const int64_t W = saved_width(kind, H, P);
  TORCH_CHECK_VALUE(T * B * G == 0 || saved.sizes() == at::IntArrayRef({T, B, W}),
                    "rnnkit: backward needs what a forward with training=True saved, of shape ",
                    at::IntArrayRef({T, B, W}), "; got a saved tensor of shape ", saved.sizes());
  check_same_as(grad_y, {T, B, P}, x, "grad_y");
  check_same_as(grad_hn, h0.sizes(), x, "grad_hn");
  if (kind == CellKind::LSTM) check_same_as(grad_cn, c0->sizes(), x, "grad_cn");
  check_same_as(saved, saved.sizes(), x, "saved");

  const c10::DeviceGuard guard(x.device());
  const at::TensorOptions opts = x.options();
  const bool project = w_hr.has_value();
  const LayerShape shape{kind, x.scalar_type(), x.device().type(), T, B, I, H, P, reverse,
                         lengths.has_value(), project, true};
  const BackwardInputs in{grad_y, grad_hn, grad_cn, x, h0, c0, w_hh, w_hr, lengths, saved};
  const Strategy* strategy = strategy_for(shape, Pass::Backward, T * B * G > 0);
  const BackwardJob job = backward_with(strategy, shape, in);

  // Everything else is one large GEMM or reduction over all T*B rows, each
  // only where its gradient is wanted.
  const auto [need_dx, need_dh0, need_dc0, need_dw_ih, need_dw_hh, need_db_ih, need_db_hh,
              need_dw_hr] = needs;
  (void)need_dh0;
  (void)need_dc0;  // both come out of the time loop anyway
  const Tensor dgx_rows = job.dgx.view({T * B, G});
  const Tensor dgh_rows = job.dgh.view({T * B, G});
  Tensor dx = need_dx ? large_gemm(dgx_rows, w_ih).view({T, B, I}) : nothing(opts);
  Tensor dw_ih = need_dw_ih ? large_gemm(dgx_rows.t(), job.x.view({T * B, I})) : nothing(opts);
  Tensor dw_hh = nothing(opts);
  if (need_dw_hh) {
    const Tensor h_seq = job.saved.numel() ? job.saved.narrow(2, saved_h_offset(kind, H), P)
                                           : at::zeros({T, B, P}, opts);
    dw_hh = T == 0 ? at::zeros({G, P}, opts)
                   : large_gemm(dgh_rows.t(), previous_hidden(h_seq, job.h0, contiguous_or_undefined(lengths),
                                                          reverse)
                                              .reshape({T * B, P}));
  }
  Tensor db_ih = need_db_ih ? dgx_rows.sum(0) : nothing(opts);
  // LSTM and RNN share one gate gradient between the two sides: one reduction.
  Tensor db_hh = !need_db_hh             ? nothing(opts)
                 : kind == CellKind::GRU ? dgh_rows.sum(0)
                 : need_db_ih            ? db_ih.clone()
                                         : dgx_rows.sum(0);
  Tensor dw_hr = project && need_dw_hr
                     ? large_gemm(job.dhp_seq.view({T * B, P}).t(), job.r_seq.view({T * B, H}))
                     : nothing(opts);
  Tensor dc0 = kind == CellKind::LSTM ? laid_out_like(job.dc, *c0) : job.dc;
  if (project && need_dw_hr) dw_hr = laid_out_like(dw_hr, *w_hr);
  return {laid_out_like(dx, x), laid_out_like(job.dh, h0), dc0, laid_out_like(dw_ih, w_ih),
          laid_out_like(dw_hh, w_hh), db_ih, db_hh, dw_hr};
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
    const OptTensor& c, const Tensor& w_ih, const Tensor& w_hh, const Tensor& saved,
    std::string_view mode, std::array<bool, 7> needs) {
  TORCH_CHECK_VALUE(x.dim() == 2, "rnnkit: cell input must be 2-D (batch, input_size), got ", x.dim(),
                    "-D with shape ", x.sizes());
  auto [dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr] =
      layer_backward(std::nullopt, grad_h, grad_c, x.unsqueeze(0), h, c, w_ih, w_hh, std::nullopt,
                     std::nullopt, saved, mode, false,
                     {needs[0], needs[1], needs[2], needs[3], needs[4], needs[5], needs[6], false});
  return {needs[0] ? laid_out_like(dx.squeeze(0), x) : dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace rnnkit
