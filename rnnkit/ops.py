"""The rnnkit custom ops: fake (meta) kernels, autograd, and Python entry points.

The schemas and the CPU/CUDA kernels are registered by the compiled module
(csrc/ops.cpp). Ops, all time-major and one layer in one direction:

  rnnkit::rnn_layer          (x, h0, c0?, w_ih, w_hh, b_ih?, b_hh?, w_hr?, lengths?,
                              mode, reverse, training) -> (y, h_n, c_n, saved)
  rnnkit::rnn_layer_backward gradients of all of the above
  rnnkit::rnn_cell           one step of LSTMCell / GRUCell / RNNCell
  rnnkit::rnn_cell_backward  its gradients

mode is "LSTM", "GRU", "RNN_TANH" or "RNN_RELU". `saved` holds what
backward needs; it is empty when training is False.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loading it registers the schemas and kernels)

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}
# Values per hidden unit kept for backward (see csrc/cells.h saved_count).
SAVED_PER_UNIT = {"LSTM": 5, "GRU": 4, "RNN_TANH": 0, "RNN_RELU": 0}


def _layer_sizes(mode, x, h0, w_hh, w_hr):
    """Sizes of a layer call, with the checks that fake tensors allow (the
    compiled kernels check everything again, values included)."""
    if mode not in GATES:
        raise ValueError(f"rnnkit: unknown mode {mode!r}; expected one of {sorted(GATES)}")
    if x.dim() != 3:
        raise ValueError(f"rnnkit: input must be 3-D (seq_len, batch, input_size), got {x.dim()}-D")
    for name, t in (("h0", h0), ("weight_hh", w_hh)):
        if t.dtype != x.dtype:
            raise TypeError(f"rnnkit: {name} has dtype {t.dtype} but the input has dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"rnnkit: {name} is on {t.device} but the input is on {x.device}; "
                             "all tensors must be on the same device")
    T, B, _ = x.shape
    H = w_hh.shape[0] // GATES[mode]
    P = w_hr.shape[0] if w_hr is not None else H
    if tuple(h0.shape) != (B, P):
        raise ValueError(f"rnnkit: h0 must have shape ({B}, {P}), got {tuple(h0.shape)}")
    return T, B, H, P


# ---- fake kernels: shapes only, for torch.compile and meta tensors ----------
# Gradients come back laid out like their inputs (empty_like), as in the kernels.

@torch.library.register_fake("rnnkit::rnn_layer")
def _rnn_layer_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, training):
    T, B, H, P = _layer_sizes(mode, x, h0, w_hh, w_hr)
    saved_width = SAVED_PER_UNIT[mode] * H
    return (
        x.new_empty((T, B, P)),
        x.new_empty((B, P)),
        x.new_empty((B, H)) if mode == "LSTM" else x.new_empty((0,)),
        x.new_empty((T if training else 0, B, saved_width if training else 0)),
    )


@torch.library.register_fake("rnnkit::rnn_layer_backward")
def _rnn_layer_backward_fake(grad_y, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, w_hr, lengths, y,
                             saved, mode, reverse):
    _layer_sizes(mode, x, h0, w_hh, w_hr)
    return (
        torch.empty_like(x),
        torch.empty_like(h0),
        torch.empty_like(c0) if mode == "LSTM" else x.new_empty((0,)),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        x.new_empty((w_hh.shape[0],)),
        x.new_empty((w_hh.shape[0],)),
        torch.empty_like(w_hr) if w_hr is not None else x.new_empty((0,)),
    )


@torch.library.register_fake("rnnkit::rnn_cell")
def _rnn_cell_fake(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training):
    if x.dim() != 2:
        raise ValueError(f"rnnkit: cell input must be 2-D (batch, input_size), got {x.dim()}-D")
    _, B, H, _ = _layer_sizes(mode, x.unsqueeze(0), h, w_hh, None)
    saved_width = SAVED_PER_UNIT[mode] * H
    return (
        x.new_empty((B, H)),
        x.new_empty((B, H)) if mode == "LSTM" else x.new_empty((0,)),
        x.new_empty((1 if training else 0, B, saved_width if training else 0)),
    )


@torch.library.register_fake("rnnkit::rnn_cell_backward")
def _rnn_cell_backward_fake(grad_h, grad_c, x, h, c, w_ih, w_hh, h_new, saved, mode):
    return (
        torch.empty_like(x),
        torch.empty_like(h),
        torch.empty_like(c) if mode == "LSTM" else x.new_empty((0,)),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        x.new_empty((w_hh.shape[0],)),
        x.new_empty((w_hh.shape[0],)),
    )


# ---- autograd -----------------------------------------------------------------

def _layer_setup_context(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, training = inputs
    y, _, _, saved = output
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, w_hr, lengths, y, saved)
    ctx.mode, ctx.reverse = mode, reverse
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _layer_backward(ctx, grad_y, grad_hn, grad_cn, _grad_saved):
    x, h0, c0, w_ih, w_hh, w_hr, lengths, y, saved = ctx.saved_tensors
    grads = torch.ops.rnnkit.rnn_layer_backward(
        grad_y, grad_hn, grad_cn if c0 is not None else None, x, h0, c0, w_ih, w_hh, w_hr,
        lengths, y, saved, ctx.mode, ctx.reverse)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr = grads
    return (dx, dh0, dc0 if c0 is not None else None, dw_ih, dw_hh,
            db_ih if ctx.has_bias[0] else None, db_hh if ctx.has_bias[1] else None,
            dw_hr if w_hr is not None else None, None, None, None, None)


def _cell_setup_context(ctx, inputs, output):
    x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training = inputs
    h_new, _, saved = output
    ctx.save_for_backward(x, h, c, w_ih, w_hh, h_new, saved)
    ctx.mode = mode
    ctx.has_bias = (b_ih is not None, b_hh is not None)


def _cell_backward(ctx, grad_h, grad_c, _grad_saved):
    x, h, c, w_ih, w_hh, h_new, saved = ctx.saved_tensors
    dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh = torch.ops.rnnkit.rnn_cell_backward(
        grad_h, grad_c if c is not None else None, x, h, c, w_ih, w_hh, h_new, saved, ctx.mode)
    return (dx, dh, dc if c is not None else None, dw_ih, dw_hh,
            db_ih if ctx.has_bias[0] else None, db_hh if ctx.has_bias[1] else None, None, None)


torch.library.register_autograd("rnnkit::rnn_layer", _layer_backward,
                                setup_context=_layer_setup_context)
torch.library.register_autograd("rnnkit::rnn_cell", _cell_backward,
                                setup_context=_cell_setup_context)


# ---- entry points ---------------------------------------------------------------

def _needs_grad(*tensors) -> bool:
    """Keep what backward needs only when a backward can follow; this is
    independent of nn.Module.training, so backward also works in eval mode."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rnn_layer(x: Tensor, h0: Tensor, c0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
              w_hr: Optional[Tensor] = None, lengths: Optional[Tensor] = None,
              mode: str = "LSTM", reverse: bool = False
              ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """One layer in one direction over a time-major sequence x (T, B, I).

    Returns y (T, B, P), h_n (B, P) and c_n (B, H) for LSTM, else None.
    lengths (int64, (B,), on x's device): row b runs lengths[b] steps; its
    final state is taken there and y is zero past it. reverse runs each row
    from its own last step back to 0.
    """
    training = _needs_grad(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    y, h_n, c_n, _ = torch.ops.rnnkit.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths,
                                                mode, reverse, training)
    return y, h_n, (c_n if mode == "LSTM" else None)


def rnn_cell(x: Tensor, h: Tensor, c: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
             b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None, mode: str = "LSTM"
             ) -> Tuple[Tensor, Optional[Tensor]]:
    """One step of a cell on a batch x (B, I): returns h' and, for LSTM, c'."""
    training = _needs_grad(x, h, c, w_ih, w_hh, b_ih, b_hh)
    h_new, c_new, _ = torch.ops.rnnkit.rnn_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training)
    return h_new, (c_new if mode == "LSTM" else None)
