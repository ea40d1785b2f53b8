"""The persistent kernels as strategies of the planner, checked on the CPU.

The CUDA strategies (persistent, persistent_block, persistent_cluster,
persistent_grid) share their code with CPU witnesses that run the same kernel
bodies block by block (cuda_persistent_emulated and one per group kind,
csrc/persistent_emulated.cpp): the plans an H100 would get, the arguments
built from the driver's jobs, the entry points' argument checks. Forced here
through the op, they are compared with the step loop in float64 (itself
checked against torch.nn by test_strategies.py) for every cell, forward and
backward (every gradient), lengths, reverse, no bias, odd sizes; and paired
with the step loop both ways (a persistent forward with a step-loop backward
and the other way round), which holds only if both write the same saved rows.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import rnnkit
from rnnkit import ops
from reference import MODES, module_pair
from test_cuda import (compare, gen, make_inputs, make_params, make_upstream, ragged_lengths, rel_err,
                       rounded, run_layer)

F64 = torch.float64
EMULATED = {"": "cuda_persistent_emulated", "block": "cuda_persistent_block_emulated",
            "cluster": "cuda_persistent_cluster_emulated", "grid": "cuda_persistent_grid_emulated"}
CUDA_STRATEGIES = ["persistent", "persistent_block", "persistent_cluster", "persistent_grid", "step_loop"]


def forced(strategy, fn, *args, **kwargs):
    """fn(...) with the strategy forced, and the strategies that ran."""
    with rnnkit.strategy(strategy), rnnkit.record_strategies() as ran:
        result = fn(*args, **kwargs)
    return result, ran


def layer_case(mode, T, B, I, H, seed, bias=True):
    g = gen(seed)
    return (make_inputs(mode, T, B, I, H, 0, g), make_params(mode, I, H, 0, bias, g),
            make_upstream(mode, T, B, H, 0, g))


# ---- the lists --------------------------------------------------------------------------

def test_witnesses_follow_the_cpu_strategies():
    names = rnnkit.strategies("cpu")
    assert names[-4:] == list(EMULATED.values()), names
    assert "step_loop" in names[:-4]


@pytest.mark.skipif(not rnnkit.built_with_cuda(), reason="a CPU-only build has no CUDA strategies")
def test_cuda_list_puts_the_persistent_kernels_first_without_touching_the_device():
    """Registering reads no device property: listing works on a machine
    without a GPU, and does not start CUDA (in a fresh process, where nothing
    else has)."""
    script = ("import json, torch, rnnkit; "
              "print(json.dumps([rnnkit.strategies('cuda'), torch.cuda.is_initialized()]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    names, initialized = json.loads(done.stdout.strip().splitlines()[-1])
    assert names == CUDA_STRATEGIES
    assert not initialized


# ---- every emulated strategy against the step loop ----------------------------------------

@pytest.mark.parametrize("group", list(EMULATED))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
def test_emulated_matches_step_loop_float64(group, mode, reverse, use_lengths):
    T, B, I, H = 7, 5, 3, 17
    inputs, params, up = layer_case(mode, T, B, I, H, seed=100 + MODES.index(mode) * 4 + 2 * reverse + use_lengths)
    lengths = ragged_lengths(B, T)[torch.randperm(B, generator=gen(7))] if use_lengths else None
    kwargs = dict(lengths=lengths, reverse=reverse, device="cpu", dtype=F64)
    got, ran = forced(EMULATED[group], run_layer, mode, inputs, params, up, **kwargs)
    assert ran == [EMULATED[group]] * 2
    want, _ = forced("step_loop", run_layer, mode, inputs, params, up, **kwargs)
    compare(got, want, 1e-12)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 1, 2, 40), (2, 33, 4, 3), (9, 3, 5, 130)],
                         ids=["T1B1H1", "B1H40", "B33H3", "H130"])
def test_emulated_odd_shapes_and_no_bias(mode, shape):
    T, B, I, H = shape
    inputs, params, up = layer_case(mode, T, B, I, H, seed=200 + sum(shape), bias=False)
    got, _ = forced(EMULATED[""], run_layer, mode, inputs, params, up, device="cpu", dtype=F64)
    want, _ = forced("step_loop", run_layer, mode, inputs, params, up, device="cpu", dtype=F64)
    compare(got, want, 1e-12)


# ---- the saved rows: one layout for both strategies ----------------------------------------

def raw_forward(strategy, mode, inputs, params, lengths, reverse, dtype=F64):
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    with rnnkit.strategy(strategy):
        return torch.ops.rnnkit.rnn_layer(cast(inputs["x"]), cast(inputs["h0"]), cast(inputs["c0"]),
                                          cast(params["w_ih"]), cast(params["w_hh"]), cast(params["b_ih"]),
                                          cast(params["b_hh"]), None, lengths, mode, reverse, True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_saved_rows_are_the_step_loops(mode, reverse):
    """The persistent forward writes what the step loop writes for backward,
    element for element: gate values, c, GRU's W_hn h + b_hn, h, and zeros
    past each row's length."""
    T, B, I, H = 6, 5, 4, 9
    inputs, params, _ = layer_case(mode, T, B, I, H, seed=300 + MODES.index(mode))
    lengths = ragged_lengths(B, T)
    ours = raw_forward(EMULATED[""], mode, inputs, params, lengths, reverse)
    theirs = raw_forward("step_loop", mode, inputs, params, lengths, reverse)
    assert ours[3].shape == theirs[3].shape == (T, B, rnnkit._C.saved_width(mode, H, H))
    for name, a, b in zip(("y", "h_n", "c_n", "saved"), ours, theirs):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=lambda m: f"{name}: {m}")
    past_end = torch.arange(T)[:, None] >= lengths[None, :]
    assert (ours[3][past_end] == 0).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("forward_by,backward_by", [(EMULATED[""], "step_loop"), ("step_loop", EMULATED[""])],
                         ids=["persistent_then_step_loop", "step_loop_then_persistent"])
def test_a_persistent_pass_pairs_with_a_step_loop_pass(mode, forward_by, backward_by):
    T, B, I, H = 6, 4, 3, 11
    inputs, params, up = layer_case(mode, T, B, I, H, seed=400 + MODES.index(mode))
    lengths = ragged_lengths(B, T)
    leaves = {k: v.clone().requires_grad_() for k, v in {**inputs, **params}.items() if v is not None}
    get = leaves.get
    with rnnkit.strategy(forward_by), rnnkit.record_strategies() as ran:
        y, hn, cn = ops.rnn_layer(get("x"), get("h0"), get("c0"), get("w_ih"), get("w_hh"), get("b_ih"),
                                  get("b_hh"), None, lengths, mode, True)
    outs = [y, hn] + ([cn] if cn is not None else [])
    ups = [up["y"], up["h"]] + ([up["c"]] if cn is not None else [])
    with rnnkit.strategy(backward_by), rnnkit.record_strategies() as ran_back:
        grads = torch.autograd.grad(outs, list(leaves.values()), ups)
    assert ran == [forward_by] and ran_back == [backward_by]
    got = {"y": y.detach(), "h_n": hn.detach(), **{"d_" + k: g for k, g in zip(leaves, grads)}}
    if cn is not None:
        got["c_n"] = cn.detach()
    want, _ = forced("step_loop", run_layer, mode, inputs, params, up, lengths=lengths, reverse=True,
                     device="cpu", dtype=F64)
    compare(got, want, 1e-12)


# ---- float32 arithmetic: strict and TF32; 16-bit types ----------------------------------------

def test_tf32_follows_torchs_matmul_setting():
    """allow_tf32 switches the float32 product to TF32 tiles (rounded
    operands): close to strict float32, and not equal to it."""
    mode, T, B, I, H = "LSTM", 5, 6, 4, 48
    inputs, params, up = layer_case(mode, T, B, I, H, seed=500)
    run = lambda: forced(EMULATED[""], run_layer, mode, inputs, params, up, device="cpu",  # noqa: E731
                         dtype=torch.float32, grads=False)[0]
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        strict = run()
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = run()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    reference, _ = forced("step_loop", run_layer, mode, inputs, params, up, device="cpu", dtype=F64, grads=False)
    compare(strict, reference, 1e-6)
    compare(tf32, reference, 3e-3)
    assert not torch.equal(strict["y"], tf32["y"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mode", MODES)
def test_half_types_against_float64(dtype, mode):
    """16-bit storage, float32 products and cell state: within a bound of
    float64 on the same rounded inputs, as the step loop is."""
    T, B, I, H = 6, 5, 8, 40
    inputs, params, up = layer_case(mode, T, B, I, H, seed=600 + MODES.index(mode))
    lengths = ragged_lengths(B, T)
    kwargs = dict(lengths=lengths, reverse=True, device="cpu")
    got, _ = forced(EMULATED[""], run_layer, mode, inputs, params, up, dtype=dtype, **kwargs)
    base, _ = forced("step_loop", run_layer, mode, inputs, params, up, dtype=dtype, **kwargs)
    rnd = lambda d: {k: rounded(v, dtype) for k, v in d.items()}  # noqa: E731
    want, _ = forced("step_loop", run_layer, mode, rnd(inputs), rnd(params), rnd(up), dtype=F64, **kwargs)
    out_tol, grad_tol = (2e-2, 5e-2) if dtype == torch.bfloat16 else (3e-3, 1e-2)
    compare(got, want, out_tol, grad_tol=grad_tol)
    # No worse than the step loop by more than a small factor.
    for k in want:
        assert rel_err(got[k], want[k]) <= max(3 * rel_err(base[k], want[k]), out_tol / 4), k


# ---- the rest of the contract ----------------------------------------------------------------

def test_runs_are_bit_identical_whatever_the_block_order():
    """Every emulated launch runs its blocks in another random order."""
    mode, T, B, I, H = "GRU", 5, 7, 3, 70
    inputs, params, up = layer_case(mode, T, B, I, H, seed=700)
    runs = [forced(EMULATED["grid"], run_layer, mode, inputs, params, up, device="cpu", dtype=torch.float32)[0]
            for _ in range(3)]
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]) and torch.equal(runs[0][k], runs[2][k]), k


@pytest.mark.parametrize("strategy,kwargs,reason", [
    (EMULATED[""], dict(proj=3), "proj_size"),
    (EMULATED["block"], dict(H=512), "no G1-block plan"),
    (EMULATED[""], dict(H=2048), "does not fit on chip"),
])
def test_forced_where_it_cannot_run_says_why(strategy, kwargs, reason):
    H, P = kwargs.get("H", 8), kwargs.get("proj", 0)
    lstm = torch.nn.LSTM(3, H, proj_size=P)
    x = torch.randn(2, 1, 3)
    h0, c0 = torch.zeros(1, P or H), torch.zeros(1, H)
    with rnnkit.strategy(strategy), pytest.raises(ValueError, match=reason):
        ops.rnn_layer(x, h0, c0, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0,
                      getattr(lstm, "weight_hr_l0", None), mode="LSTM")


def test_the_planner_never_picks_a_witness():
    lstm = rnnkit.LSTM(5, 16)
    with rnnkit.record_strategies() as ran:
        lstm(torch.randn(4, 3, 5, requires_grad=True))[0].sum().backward()
    assert ran and not set(ran) & set(EMULATED.values()), ran


def test_watchdog_budget_setting():
    previous = rnnkit._C._persistent_watchdog(1000)
    try:
        assert rnnkit._C._persistent_watchdog(0) == 1000
        with pytest.raises(ValueError, match=">= 0"):
            rnnkit._C._persistent_watchdog(-1)
    finally:
        rnnkit._C._persistent_watchdog(previous)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN_TANH"])
def test_modules_bidirectional_two_layers_packed(name):
    """A module's layers and directions each through the persistent strategy
    (one direction per op call), packed variable lengths, against torch.nn."""
    ref, mine = module_pair(name, input_size=4, hidden_size=10, num_layers=2, bidirectional=True)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(5, 3, 4, dtype=F64)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_ref, state_ref = ref(packed)
    with rnnkit.strategy(EMULATED[""]), rnnkit.record_strategies() as ran:
        out, state = mine(packed)
    assert ran == [EMULATED[""]] * 4
    torch.testing.assert_close(out.data, out_ref.data, rtol=1e-10, atol=1e-12)
    flat = lambda s: list(s) if isinstance(s, tuple) else [s]  # noqa: E731
    for a, b in zip(flat(state), flat(state_ref)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    loss = lambda o, s: o.data.square().sum() + sum(t.sum() for t in flat(s))  # noqa: E731
    with rnnkit.strategy(EMULATED[""]):
        grads = torch.autograd.grad(loss(out, state), list(mine.parameters()))
    grads_ref = torch.autograd.grad(loss(out_ref, state_ref), list(ref.parameters()))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
