"""The engine's recurrence written in plain torch operations.

The fused kernels have a hand-written first-order backward and nothing more.
Where more is asked of them (a backward that itself builds a graph, forward-mode
AD, torch.func transforms), rnnkit.ops runs this instead: the same equations,
per-row lengths and directions as the engine, made of operations that autograd,
forward AD and vmap differentiate and batch to any order. It is slower than the
engine (one small GEMM and a few pointwise ops per step) and is never the path
of a plain forward and backward.

Arguments and results are those of the ops (see rnnkit.ops); checks are the
caller's.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def step(mode: str, gx: Tensor, h: Tensor, c: Optional[Tensor], w_hh: Tensor,
         b_hh: Optional[Tensor], w_hr: Optional[Tensor] = None
         ) -> Tuple[Tensor, Optional[Tensor]]:
    """One step of every row from gx = x W_ih^T + b_ih; returns (h', c' or None).
    Gate order and formulas are torch.nn's."""
    gh = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gx + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if w_hr is None else F.linear(h, w_hr)), c
    if mode == "GRU":
        x_r, x_z, x_n = gx.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return n + z * (h - n), None
    if mode == "RNN_TANH":
        return torch.tanh(gx + gh), None
    if mode == "RNN_RELU":
        return torch.relu(gx + gh), None
    raise ValueError(f"rnnkit: unknown mode {mode!r}")


def layer(x: Tensor, h0: Tensor, c0: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
          b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor],
          lengths: Optional[Tensor], mode: str, reverse: bool
          ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """rnn_layer: returns y (T, B, P), h_n (B, P) and c_n (B, H) or None.

    With lengths, row b runs min(lengths[b], T) steps, y is zero past them and
    h_n/c_n are its state after its own last step. reverse runs each row from
    its own last step back to 0: its valid prefix is reversed (a gather whose
    index is its own inverse), run forward, and put back the same way.
    """
    T = x.shape[0]
    gx = F.linear(x, w_ih, b_ih)  # all input projections at once, (T, B, G)
    running = order = None
    if lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)
        lengths = lengths.clamp(max=T)
        running = steps < lengths  # (T, B): row b still runs at step s
        if reverse:
            order = torch.where(running, lengths - 1 - steps, steps)
            gx = gx.gather(0, order.unsqueeze(2).expand(gx.shape))
    elif reverse:
        gx = gx.flip(0)

    h, c = h0, c0
    ys = []
    for s in range(T):
        h_next, c_next = step(mode, gx[s], h, c, w_hh, b_hh, w_hr)
        if running is None:
            h, c = h_next, c_next
            ys.append(h)
            continue
        run = running[s].unsqueeze(1)
        h = torch.where(run, h_next, h)
        c = None if c is None else torch.where(run, c_next, c)
        ys.append(torch.where(run, h_next, torch.zeros_like(h_next)))

    if not ys:
        return x.new_zeros((0,) + tuple(h0.shape)), h0, c0
    y = torch.stack(ys)
    if order is not None:
        y = y.gather(0, order.unsqueeze(2).expand(y.shape))
    elif reverse:
        y = y.flip(0)
    return y, h, c


def cell(x: Tensor, h: Tensor, c: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
         b_ih: Optional[Tensor], b_hh: Optional[Tensor], mode: str
         ) -> Tuple[Tensor, Optional[Tensor]]:
    """rnn_cell: one step of a batch x (B, I); returns h' and c' or None."""
    return step(mode, F.linear(x, w_ih, b_ih), h, c, w_hh, b_hh)
