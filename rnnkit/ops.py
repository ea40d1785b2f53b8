"""The rnnkit custom ops: checks, fake kernels, autograd, and Python entry points.

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
in place before backward); it is empty when training is False. A backward
op computes the gradients output_mask asks for and returns empty (0,)
tensors for the others (dh0 and dc0 always come back).

How each kind of derivative is taken (the forward ops' Autograd kernels are
C++, csrc/autograd.cpp, and call back here only for the last two):
  - backward (first order): the engine's backward op, from what forward saved.
  - backward that builds a graph (create_graph=True: double backward, gradient
    penalties, Hessian-vector products): the layer is recomputed in plain torch
    ops (rnnkit.composite) from the saved inputs and autograd differentiates
    that, so the gradients are themselves differentiable.
  - forward-mode AD and torch.func transforms (grad, vjp, jvp, jacrev, jacfwd,
    vmap, ...): the op runs as the composite, which every transform knows
    (vmap, when it is the innermost transform, runs it slice by slice).
The backward ops have no derivative: called where autograd would record them,
they raise rather than leave a silently partial graph.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C  # loading it registers the schemas and kernels
from . import cells, composite

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_LAYER_BACKWARD = torch.ops.rnnkit.rnn_layer_backward.default
_CELL_BACKWARD = torch.ops.rnnkit.rnn_cell_backward.default


# ---- argument checks: the compiled kernels' (csrc/checks.cpp), for the paths
# that do not reach them (fake tensors, a meta tensor among the arguments, the
# composite). Same exception types and wording. ------------------------------------

def _check_like_input(t: Tensor, x: Tensor, name: str) -> None:
    if t.dtype != x.dtype:
        raise TypeError(f"rnnkit: {name} has dtype {t.dtype} but the input has dtype {x.dtype}; "
                        "all tensors must have the same dtype")
    if t.device != x.device:
        raise ValueError(f"rnnkit: {name} is on {t.device} but the input is on {x.device}; "
                         "all tensors must be on the same device")


def _check_shape(t: Tensor, shape: tuple, name: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"rnnkit: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_layer_args(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths):
    """Ranks, shapes, dtypes and devices of a layer call; returns (T, B, I, H, P)."""
    gates = cells.kind(mode).gates
    if x.dim() != 3:
        raise ValueError(f"rnnkit: input must be 3-D (seq_len, batch, input_size), got "
                         f"{x.dim()}-D with shape {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"rnnkit: input dtype {x.dtype} is not supported; use float32, float64, "
                        "float16 or bfloat16")
    if w_ih.dim() != 2 or w_hh.dim() != 2:
        raise ValueError(f"rnnkit: weight_ih and weight_hh must be 2-D, got {tuple(w_ih.shape)} "
                         f"and {tuple(w_hh.shape)}")
    G = w_hh.shape[0]
    if G % gates != 0:
        raise ValueError(f"rnnkit: weight_hh has {G} rows, not a multiple of {gates} gates")
    H = G // gates
    T, B, I = x.shape
    _check_like_input(w_ih, x, "weight_ih")
    _check_like_input(w_hh, x, "weight_hh")
    if w_ih.shape[0] != G:
        raise ValueError(f"rnnkit: weight_ih must have {G} rows like weight_hh, got "
                         f"{w_ih.shape[0]}")
    if w_ih.shape[1] != I:
        raise ValueError(f"rnnkit: input has {I} features but weight_ih expects {w_ih.shape[1]} "
                         "(input_size)")
    P = H
    if w_hr is not None:
        if mode != "LSTM":
            raise ValueError("rnnkit: weight_hr (projection) is only for LSTM")
        _check_like_input(w_hr, x, "weight_hr")
        if w_hr.dim() != 2 or w_hr.shape[1] != H or w_hr.shape[0] <= 0:
            raise ValueError(f"rnnkit: weight_hr must have shape (proj_size, {H}), got "
                             f"{tuple(w_hr.shape)}")
        P = w_hr.shape[0]
    if w_hh.shape[1] != P:
        raise ValueError(f"rnnkit: weight_hh must have {P} columns (the width of h), got "
                         f"{w_hh.shape[1]}")
    for bias, name in ((b_ih, "bias_ih"), (b_hh, "bias_hh")):
        if bias is not None:
            _check_like_input(bias, x, name)
            _check_shape(bias, (G,), name)
    _check_like_input(h0, x, "h0")
    _check_shape(h0, (B, P), "h0 (Expected hidden size)")
    if mode == "LSTM":
        if c0 is None:
            raise ValueError("rnnkit: LSTM needs c0")
        _check_like_input(c0, x, "c0")
        _check_shape(c0, (B, H), "c0 (Expected cell size)")
    elif c0 is not None:
        raise ValueError("rnnkit: c0 is only for LSTM")
    if lengths is not None:
        if lengths.dtype != torch.int64:
            raise TypeError(f"rnnkit: lengths must be int64, got {lengths.dtype}")
        if lengths.device != x.device:
            raise ValueError(f"rnnkit: lengths is on {lengths.device} but the input is on "
                             f"{x.device}")
        _check_shape(lengths, (B,), "lengths")
    return T, B, I, H, P


def _check_lengths_values(lengths: Optional[Tensor], T: int) -> None:
    """What the CPU kernel checks of the values (a GPU would pay a sync for it)."""
    if (lengths is not None and lengths.device.type == "cpu" and lengths.numel()
            and not torch._C._functorch.is_functorch_wrapped_tensor(lengths)
            and not (0 <= int(lengths.min()) and int(lengths.max()) <= T)):
        raise ValueError(f"rnnkit: lengths must lie in [0, {T}] (seq_len)")


def _check_cell_args(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    if x.dim() != 2:
        raise ValueError(f"rnnkit: cell input must be 2-D (batch, input_size), got {x.dim()}-D "
                         f"with shape {tuple(x.shape)}")
    return _check_layer_args(mode, x.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh, None, None)


def _check_grads(grads_and_likes, x):
    """Incoming gradients have the shape, dtype and device of what they belong to."""
    for grad, like, name in grads_and_likes:
        if grad is not None:
            _check_shape(grad, tuple(like.shape), name)
            _check_like_input(grad, x, name)


def _check_saved(saved, saved_shape, x):
    """What a backward op is handed from its forward."""
    _check_like_input(saved, x, "saved")
    if 0 not in saved_shape and tuple(saved.shape) != saved_shape:
        raise ValueError("rnnkit: backward needs what a forward with training=True saved; got a "
                         f"saved tensor of shape {tuple(saved.shape)}")


def _saved_shape(mode: str, T: int, B: int, H: int, P: int) -> tuple:
    """`saved` of a training call (the layout is the engine's: csrc/cell_units.h)."""
    return (T, B, _C.saved_width(mode, H, P))


def _gradients_like(output_mask, x, inputs):
    """The backward ops' outputs: laid out like their inputs (empty_like) where
    the mask asks for them, empty (0,) tensors elsewhere; the second and third
    (h0 and c0) always come back where the layer has them."""
    return tuple(torch.empty_like(t) if t is not None and (wanted or i in (1, 2))
                 else x.new_empty((0,))
                 for i, (t, wanted) in enumerate(zip(inputs, output_mask)))


def _empty_saved(x: Tensor, B: int) -> Tensor:
    """`saved` of a call that keeps nothing for backward (training=False)."""
    return x.new_empty((0, B, 0))


# ---- fake kernels: shapes only, for torch.compile and meta tensors ----------
# Gradients come back laid out like their inputs (empty_like), as in the kernels.

@torch.library.register_fake("rnnkit::rnn_layer")
def _rnn_layer_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, training):
    T, B, _, H, P = _check_layer_args(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths)
    return (
        x.new_empty((T, B, P)),
        x.new_empty((B, P)),
        x.new_empty((B, H)) if mode == "LSTM" else x.new_empty((0,)),
        x.new_empty(_saved_shape(mode, T, B, H, P)) if training else _empty_saved(x, B),
    )


@torch.library.register_fake("rnnkit::rnn_layer_backward")
def _rnn_layer_backward_fake(grad_y, grad_hn, grad_cn, x, h0, c0, w_ih, w_hh, w_hr, lengths,
                             saved, mode, reverse, output_mask):
    T, B, _, H, P = _check_layer_args(mode, x, h0, c0, w_ih, w_hh, None, None, w_hr, lengths)
    _check_saved(saved, _saved_shape(mode, T, B, H, P), x)
    if grad_y is not None:
        _check_shape(grad_y, (T, B, P), "grad_y")
        _check_like_input(grad_y, x, "grad_y")
    _check_grads([(grad_hn, h0, "grad_hn"), (grad_cn if mode == "LSTM" else None, c0, "grad_cn")], x)
    bias = w_hh[:, 0]
    return _gradients_like(output_mask, x, [x, h0, c0 if mode == "LSTM" else None, w_ih, w_hh,
                                            bias, bias, w_hr])


@torch.library.register_fake("rnnkit::rnn_cell")
def _rnn_cell_fake(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training):
    _, B, _, H, _ = _check_cell_args(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
    return (
        x.new_empty((B, H)),
        x.new_empty((B, H)) if mode == "LSTM" else x.new_empty((0,)),
        x.new_empty(_saved_shape(mode, 1, B, H, H)) if training else _empty_saved(x, B),
    )


@torch.library.register_fake("rnnkit::rnn_cell_backward")
def _rnn_cell_backward_fake(grad_h, grad_c, x, h, c, w_ih, w_hh, saved, mode, output_mask):
    _, B, _, H, _ = _check_cell_args(mode, x, h, c, w_ih, w_hh, None, None)
    _check_saved(saved, _saved_shape(mode, 1, B, H, H), x)
    _check_grads([(grad_h, h, "grad_h"), (grad_c if mode == "LSTM" else None, c, "grad_c")], x)
    bias = w_hh[:, 0]
    return _gradients_like(output_mask, x, [x, h, c if mode == "LSTM" else None, w_ih, w_hh,
                                            bias, bias])


# ---- the composite as the ops' implementation -------------------------------------
# Same results as the kernels (saved: empty, as without training: nothing of the
# engine's is kept, autograd keeps what the composite needs).

def _layer_composite(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse, training):
    T, B, _, _, _ = _check_layer_args(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths)
    _check_lengths_values(lengths, T)
    y, h_n, c_n = composite.layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse)
    return y, h_n, (c_n if c_n is not None else x.new_empty((0,))), _empty_saved(x, B)


def _cell_composite(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, training):
    _, B, _, _, _ = _check_cell_args(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
    h_new, c_new = composite.cell(x, h, c, w_ih, w_hh, b_ih, b_hh, mode)
    return h_new, (c_new if c_new is not None else x.new_empty((0,))), _empty_saved(x, B)


# ---- autograd -------------------------------------------------------------------------

def _below_autograd(op, keyset, args):
    with torch._C._AutoDispatchBelowAutograd():
        return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)


def _composite_grads(fn, inputs, needed, grad_outputs):
    """The gradients of fn at inputs against grad_outputs, as a graph that
    autograd can differentiate again (in inputs and in grad_outputs).

    Each input enters fn through its own alias, so a tensor passed twice
    (b_ih is b_hh) gets each position's gradient rather than their sum twice.
    """
    aliases = [None if t is None else t.view_as(t) for t in inputs]
    outputs = fn(*aliases)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs)
             if o is not None and g is not None and o.requires_grad]
    wanted = [a for a, need in zip(aliases, needed) if need]
    got = torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                              create_graph=True, allow_unused=True) if pairs and wanted else ()
    got = iter(got)
    return [next(got, None) if need else None for need in needed]


def _layer_graph_grads(inputs, needed, grad_outputs, lengths, mode, reverse):
    """The layer's gradients as a graph, for the C++ Autograd kernel's backward
    under create_graph=True: inputs are x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr
    (None where absent), grad_outputs those of y, h_n, c_n."""
    def layer(*tensors):
        return composite.layer(*tensors, lengths, mode, reverse)
    return _composite_grads(layer, inputs, needed, grad_outputs)


def _cell_graph_grads(inputs, needed, grad_outputs, mode):
    """The cell's gradients as a graph (inputs x, h, c, w_ih, w_hh, b_ih, b_hh;
    grad_outputs those of h' and c')."""
    def cell(*tensors):
        return composite.cell(*tensors, mode)
    return _composite_grads(cell, inputs, needed, grad_outputs)


def _backward_kernel(op):
    """The Autograd kernel of a backward op: it has no derivative of its own."""
    def kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            raise RuntimeError(
                f"rnnkit: {op.name()} has no derivative, so autograd cannot record it; "
                "differentiate rnnkit.ops.rnn_layer / rnn_cell (or an rnnkit module) instead, "
                "with create_graph=True for higher orders, or call it under torch.no_grad()")
        return _below_autograd(op, keyset, args)
    return kernel


def _vmap_rule(run_composite):
    """vmap of a forward op: the composite on each slice of the batch, stacked
    (inner transforms, if any, see the composite's torch ops)."""
    def rule(info, in_dims, *args):
        def slice_of(i):
            return [a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]
        outputs = [run_composite(*slice_of(i)) for i in range(info.batch_size)]
        return tuple(torch.stack(o) for o in zip(*outputs)), (0,) * len(outputs[0])
    return rule


# The forward ops' Autograd kernels are C++ (csrc/autograd.cpp); these are
# their Python paths.
_C._set_python_paths(_layer_composite, _cell_composite, _layer_graph_grads, _cell_graph_grads)

_lib = torch.library.Library("rnnkit", "IMPL")
_lib.impl("rnn_layer_backward", _backward_kernel(_LAYER_BACKWARD), "Autograd", with_keyset=True)
_lib.impl("rnn_cell_backward", _backward_kernel(_CELL_BACKWARD), "Autograd", with_keyset=True)
torch.library.register_vmap("rnnkit::rnn_layer", _vmap_rule(_layer_composite), lib=_lib)
torch.library.register_vmap("rnnkit::rnn_cell", _vmap_rule(_cell_composite), lib=_lib)


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
