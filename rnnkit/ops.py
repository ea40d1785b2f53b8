"""The rnnkit custom ops: fake (meta) kernels, autograd, and Python entry points.

The schemas and the CPU/CUDA kernels are registered by the compiled module
(csrc/ops.cpp). Ops, all time-major and one layer in one direction:

  rnnkit::rnn_layer          (x, h0, c0?, w_ih, w_hh, b_ih?, b_hh?, w_hr?, lengths?,
                              mode, reverse, training) -> (y, h_n, c_n, saved)
  rnnkit::rnn_layer_backward (grad_y?, grad_hn?, grad_cn?, x, h0, c0?, w_ih, w_hh, w_hr?,
                              lengths?, saved, mode, reverse, output_mask[8])
                              -> gradients of x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr
  rnnkit::rnn_cell           one step of LSTMCell / GRUCell / RNNCell
  rnnkit::rnn_cell_backward  its gradients (output_mask[7])

mode is "LSTM", "GRU", "RNN_TANH" or "RNN_RELU". `saved` holds what
backward needs (the hidden states among it, so the outputs may be changed
in place); it is empty when training is False. A backward computes the
gradients output_mask asks for and returns empty tensors for the others.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C  # loading it registers the schemas and kernels
from .cells import KINDS, kind


def _layer_sizes(mode, x, h0, w_hh, w_hr):
    """Sizes of a layer call, with the checks that fake tensors allow (the
    compiled kernels check everything again, values included)."""
    gates = kind(mode).gates
    if x.dim() != 3:
        raise ValueError(f"rnnkit: input must be 3-D (seq_len, batch, input_size), got {x.dim()}-D")
    for name, t in (("h0", h0), ("weight_hh", w_hh)):
        if t.dtype != x.dtype:
            raise TypeError(f"rnnkit: {name} has dtype {t.dtype} but the input has dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"rnnkit: {name} is on {t.device} but the input is on {x.device}; "
                             "all tensors must be on the same device")
    T, B, _ = x.shape
    H = w_hh.shape[0] // gates
    P = w_hr.shape[0] if w_hr is not None else H
    if tuple(h0.shape) != (B, P):
        raise ValueError(f"rnnkit: h0 must have shape ({B}, {P}), got {tuple(h0.shape)}")
    return T, B, H, P


# ---- fake kernels: shapes only, for torch.compile and meta tensors ----------
# Gradients come back laid out like their inputs (empty_like), as in the kernels.

@torch.library.register_fake("rnnkit::rnn_layer")
def _rnn_layer_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, training):
    T, B, H, P = _layer_sizes(mode, x, h0, w_hh, w_hr)
    saved_width = _C.saved_width(mode, H, P)
    return (
        x.new_empty((T, B, P)),
        x.new_empty((B, P)),
        x.new_empty((B, H)) if mode == "LSTM" else x.new_empty((0,)),
        x.new_empty((T if training else 0, B, saved_width if training else 0)),
    )


@torch.library.register_fake("rnnkit::rnn_layer_backward")
def _rnn_layer_backward_fake(grad_y, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, w_hr, lengths,
                             saved, mode, reverse, output_mask):
    _layer_sizes(mode, x, h0, w_hh, w_hr)
    return _gradients_like(output_mask, x, [x, h0, c0 if mode == "LSTM" else None, w_ih, w_hh,
                                            w_hh[:, 0], w_hh[:, 0], w_hr])


def _gradients_like(output_mask, x, inputs):
    """Gradients laid out like their inputs (empty_like) where the mask asks
    for them; empty (0,) tensors elsewhere, as the kernels return. h0 and c0
    (the second and third) always come back."""
    return tuple(torch.empty_like(t) if t is not None and (wanted or i in (1, 2))
                 else x.new_empty((0,))
                 for i, (t, wanted) in enumerate(zip(inputs, output_mask)))


@torch.library.register_fake("rnnkit::rnn_cell")
def _rnn_cell_fake(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training):
    if x.dim() != 2:
        raise ValueError(f"rnnkit: cell input must be 2-D (batch, input_size), got {x.dim()}-D")
    _, B, H, _ = _layer_sizes(mode, x.unsqueeze(0), h, w_hh, None)
    saved_width = _C.saved_width(mode, H, H)
    return (
        x.new_empty((B, H)),
        x.new_empty((B, H)) if mode == "LSTM" else x.new_empty((0,)),
        x.new_empty((1 if training else 0, B, saved_width if training else 0)),
    )


@torch.library.register_fake("rnnkit::rnn_cell_backward")
def _rnn_cell_backward_fake(grad_h, grad_c, x, h, c, w_ih, w_hh, saved, mode, output_mask):
    return _gradients_like(output_mask, x, [x, h, c if mode == "LSTM" else None, w_ih, w_hh,
                                            w_hh[:, 0], w_hh[:, 0]])


# ---- autograd -----------------------------------------------------------------

def _layer_setup_context(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, training = inputs
    _, _, _, saved = output
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, w_hr, lengths, saved)
    ctx.mode, ctx.reverse = mode, reverse


def _wanted(needs, present):
    """The kernels' output mask from ctx.needs_input_grad: a gradient only
    where its input is there and needs one."""
    return [bool(n) and p for n, p in zip(needs, present)]


def _layer_backward(ctx, grad_y, grad_hn, grad_cn, _grad_saved):
    x, h0, c0, w_ih, w_hh, w_hr, lengths, saved = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = _wanted([need[0], need[1], need[2], need[3], need[4], need[5], need[6], need[7]],
                   [True, True, c0 is not None, True, True, True, True, w_hr is not None])
    grads = torch.ops.rnnkit.rnn_layer_backward(
        grad_y, grad_hn, grad_cn if c0 is not None else None, x, h0, c0, w_ih, w_hh, w_hr,
        lengths, saved, ctx.mode, ctx.reverse, mask)
    return tuple(g if wanted else None for g, wanted in zip(grads, mask)) + (None,) * 4


def _cell_setup_context(ctx, inputs, output):
    x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training = inputs
    _, _, saved = output
    ctx.save_for_backward(x, h, c, w_ih, w_hh, saved)
    ctx.mode = mode


def _cell_backward(ctx, grad_h, grad_c, _grad_saved):
    x, h, c, w_ih, w_hh, saved = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = _wanted(need[:7], [True, True, c is not None, True, True, True, True])
    grads = torch.ops.rnnkit.rnn_cell_backward(
        grad_h, grad_c if c is not None else None, x, h, c, w_ih, w_hh, saved, ctx.mode, mask)
    return tuple(g if wanted else None for g, wanted in zip(grads, mask)) + (None,) * 2


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
