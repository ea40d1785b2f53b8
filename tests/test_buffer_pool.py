"""The CPU buffer pool (csrc/buffer_pool.cpp): what training keeps and the
gate gradients reuse freed memory, dirty memory never shows in a result, and
RNNKIT_CPU_BUFFER_CACHE_MB turns it off or is refused with its name."""
import os
import subprocess
import sys

import torch

import rnnkit
from reference import assert_close, layer_weights, torch_layer

SAVED = 3  # the op's fourth output: what training keeps


def big_layer_call(mode="LSTM", lengths=None, x=None, T=40, B=32, H=128):
    torch.manual_seed(0)
    ref = torch_layer(mode, H, H, dtype=torch.float32)
    w_ih, w_hh, b_ih, b_hh, _ = [None if w is None else w.detach() for w in layer_weights(ref)]
    x = torch.randn(T, B, H) if x is None else x
    h0 = torch.zeros(B, H)
    c0 = torch.zeros(B, H) if mode == "LSTM" else None
    return torch.ops.rnnkit.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, lengths, mode,
                                      False, True), (ref, x, lengths)


def test_what_training_keeps_reuses_freed_memory():
    out, _ = big_layer_call()
    assert out[SAVED].numel() * 4 >= 1 << 20  # large enough to be pooled
    first = out[SAVED].data_ptr()
    del out
    out, _ = big_layer_call()
    assert out[SAVED].data_ptr() == first


def test_dirty_memory_never_shows_where_rows_end_early():
    """A call with lengths needs zeroed buffers (the weight gradients sum over
    every position); the pool's memory comes back from a training step that
    filled it with NaN."""
    ref = torch_layer("LSTM", 128, 128, dtype=torch.float32)
    layer = rnnkit.LSTM(128, 128)
    layer.load_state_dict(ref.state_dict())
    nan_input = torch.full((40, 32, 128), float("nan"), requires_grad=True)
    y, _ = layer(nan_input)
    y.sum().backward()  # NaN in what training kept and in the gate gradients, then freed
    assert nan_input.grad.isnan().all()
    del y
    layer.zero_grad()

    lengths = torch.arange(40, 8, -1)
    x = torch.randn(40, 32, 128, requires_grad=True)
    results = []
    for module in (layer, ref):
        y, _ = module(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
        grads = torch.autograd.grad(y.data.sum(), [x, *module.parameters()])
        results.append((y.data, grads))
    (y, grads), (y_ref, grads_ref) = results
    assert_close(y, y_ref, torch.float32, "y")
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        assert torch.isfinite(g).all(), f"gradient {i} has NaN"
        assert_close(g, g_ref, torch.float32, f"gradient {i}")


def run_with_cache(value):
    env = dict(os.environ, RNNKIT_CPU_BUFFER_CACHE_MB=value)
    code = ("import torch, rnnkit; torch.manual_seed(0); m = rnnkit.GRU(64, 256); "
            "x = torch.randn(30, 32, 64, requires_grad=True); y, _ = m(x); y.sum().backward(); "
            "print(float(x.grad.double().sum()), float(m.weight_hh_l0.grad.double().sum()))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_cache_off_gives_the_same_numbers_and_a_bad_value_is_named():
    on, off = run_with_cache("1024"), run_with_cache("0")
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout == off.stdout
    bad = run_with_cache("lots")
    assert bad.returncode != 0
    assert "RNNKIT_CPU_BUFFER_CACHE_MB" in bad.stderr and "lots" in bad.stderr
