"""GPU tests of the persistent strategies: every one forced through the op.

    persistent                                   the cost model picks the group kind
    persistent_block, persistent_cluster, persistent_grid   one group kind forced

Each is compared on the same inputs with rnnkit's CPU path in float64 (on
the same rounded inputs), with cuDNN (TF32 off) and with the step loop:
every cell, forward and backward (every gradient), lengths, reverse,
bidirectional modules, T = 1000, float32 / bfloat16 / float16, TF32. Also:
outputs written on NaN-poisoned memory, bit-identical reruns, a persistent
pass paired with a step-loop pass both ways (one saved layout), CUDA-graph
capture replayed on new inputs, and a stuck GRID barrier (a 1-cycle watchdog)
raising a Python error. Marked cuda; skipped without a GPU.

Tolerances (relative norm, test_cuda.py's): float32 2e-5 against CPU
float64, 1e-4 against cuDNN; T = 1000 float32 1e-4 (error grows with T);
float16 outputs 5e-3 / gradients 2e-2, bfloat16 4e-2 / 1e-1, or 3x cuDNN's
own error if larger; at T = 1000 in bfloat16 no worse than 2x the step loop.
"""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit
from rnnkit import ops
from test_cuda import (DEV, F64, HALF_TOL, HAVE_GPU, MODULE_CASES, TOL_F32_VS_F64, TOL_VS_CUDNN_F32, VARIANTS,
                       bidirectional_pair, check_padding_zero, compare, cudnn_half_error, gen, make_inputs,
                       make_params, make_upstream, needs_kernels, ragged_lengths, rel_err, rounded, run_layer,
                       run_module)

CAPABILITY = torch.cuda.get_device_capability() if HAVE_GPU else (0, 0)
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA GPU"),
    pytest.mark.skipif(HAVE_GPU and CAPABILITY < (8, 0), reason="the persistent kernels need sm_80 or newer"),
    needs_kernels,
]

PERSISTENT = ["persistent", "persistent_block", "persistent_cluster", "persistent_grid"]
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]
HAS_CLUSTERS = CAPABILITY >= (9, 0)


@pytest.fixture(autouse=True)
def _no_tf32():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def forced(strategy, fn, *args, **kwargs):
    """fn(...) with the strategy forced; also the strategies that ran. Where
    the GPU has no clusters, persistent_cluster must refuse, saying why."""
    if strategy == "persistent_cluster" and not HAS_CLUSTERS:
        with rnnkit.strategy(strategy), pytest.raises(ValueError, match="no thread-block clusters"):
            fn(*args, **kwargs)
        pytest.skip("this GPU has no thread-block clusters (refused as it should be)")
    with rnnkit.strategy(strategy), rnnkit.record_strategies() as ran:
        result = fn(*args, **kwargs)
    return result, ran


def case(mode, T, B, I, H, seed, bias=True):
    g = gen(seed)
    return make_inputs(mode, T, B, I, H, 0, g), make_params(mode, I, H, 0, bias, g), make_upstream(mode, T, B, H, 0, g)


def reference(mode, inputs, params, up, dtype, **kwargs):
    """The CPU float64 path on the inputs rounded to dtype."""
    rnd = lambda d: {k: rounded(v, dtype) for k, v in d.items()}  # noqa: E731
    return run_layer(mode, rnd(inputs), rnd(params), rnd(up), device="cpu", dtype=F64, **kwargs)


# ---- the planner ------------------------------------------------------------------------

def test_the_rules_pick_persistent_where_it_applies(monkeypatch):
    assert rnnkit.strategies("cuda") == PERSISTENT + ["step_loop"]

    def ran_for(mode, H, dtype, proj=0):
        P = proj or H
        m = torch.nn.LSTM(4, H, proj_size=proj) if mode == "LSTM" else torch.nn.GRU(4, H)
        w = [t.to(DEV, dtype) for t in (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)]
        x = torch.randn(3, 2, 4, device=DEV, dtype=dtype)
        h0 = torch.zeros(2, P, device=DEV, dtype=dtype)
        c0 = torch.zeros(2, H, device=DEV, dtype=dtype) if mode == "LSTM" else None
        w_hr = m.weight_hr_l0.to(DEV, dtype) if proj else None
        with torch.no_grad(), rnnkit.record_strategies() as ran:
            ops.rnn_layer(x, h0, c0, *w, w_hr, mode=mode)
        return ran

    # Until a GPU run has checked them, the kernels are taken only when asked.
    monkeypatch.delenv("RNNKIT_PERSISTENT", raising=False)
    assert ran_for("LSTM", 64, torch.float32) == ["step_loop"]
    monkeypatch.setenv("RNNKIT_PERSISTENT", "1")
    assert ran_for("LSTM", 64, torch.float32) == ["persistent"]
    assert ran_for("GRU", 512, torch.bfloat16) == ["persistent"]
    assert ran_for("LSTM", 64, torch.float64) == ["step_loop"]  # float64 stays on the step loop
    assert ran_for("LSTM", 64, torch.float32, proj=16) == ["step_loop"]  # so do projections
    assert ran_for("LSTM", 2048, torch.float32) == ["step_loop"]  # 64 MB of W_hh does not fit on chip


@pytest.mark.parametrize("strategy,H,reason", [("persistent_block", 512, "no G1-block plan"),
                                               ("persistent", 2048, "does not fit on chip")])
def test_forced_where_it_cannot_run_says_why(strategy, H, reason):
    x = torch.randn(2, 1, 3, device=DEV)
    w_ih, w_hh = torch.randn(4 * H, 3, device=DEV), torch.randn(4 * H, H, device=DEV)
    h0 = c0 = torch.zeros(1, H, device=DEV)
    with rnnkit.strategy(strategy), pytest.raises(ValueError, match=reason):
        ops.rnn_layer(x, h0, c0, w_ih, w_hh, mode="LSTM")


# ---- every strategy against the CPU in float64 -------------------------------------------------

@pytest.mark.parametrize("reverse,use_lengths", [(False, False), (True, True), (False, True)],
                         ids=["plain", "rev_lengths", "lengths"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", PERSISTENT)
def test_every_strategy_vs_cpu_f64(strategy, mode, reverse, use_lengths, record_property):
    T, B, I, H = 9, 5, 6, 33
    inputs, params, up = case(mode, T, B, I, H, seed=11000 + 10 * MODES.index(mode) + 2 * reverse + use_lengths)
    lengths = ragged_lengths(B, T)[torch.randperm(B, generator=gen(3))] if use_lengths else None
    kwargs = dict(lengths=lengths, reverse=reverse)
    got, ran = forced(strategy, run_layer, mode, inputs, params, up, poison=True, **kwargs)
    assert ran == [strategy] * 2
    compare(got, reference(mode, inputs, params, up, torch.float32, **kwargs), TOL_F32_VS_F64, record_property)
    if use_lengths:
        check_padding_zero(got["y"], lengths, reverse)
    again, _ = forced(strategy, run_layer, mode, inputs, params, up, poison=True, **kwargs)
    for k in got:
        assert torch.equal(got[k], again[k]), f"{k} differs between two identical runs"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (4, 1, 3, 300), (3, 70, 2, 17), (2, 256, 8, 128)],
                         ids=["T1B1H1", "B1H300", "B70H17", "B256H128"])
def test_odd_shapes_without_bias(mode, shape):
    T, B, I, H = shape
    inputs, params, up = case(mode, T, B, I, H, seed=12000 + sum(shape), bias=False)
    got, ran = forced("persistent", run_layer, mode, inputs, params, up, poison=True)
    compare(got, reference(mode, inputs, params, up, torch.float32), TOL_F32_VS_F64)


@pytest.mark.parametrize("mode", MODES)
def test_cells_run_persistent(mode):
    """A cell call is a layer of one step."""
    B, I, H = 6, 5, 40
    g = gen(12500 + MODES.index(mode))
    p = make_params(mode, I, H, 0, True, g)
    x, h = torch.randn(B, I, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64)
    c = torch.randn(B, H, generator=g, dtype=F64) if mode == "LSTM" else None

    def run(device, dtype):
        cast = lambda t: None if t is None else t.to(device, dtype)  # noqa: E731
        hn, cn = ops.rnn_cell(cast(x), cast(h), cast(c), *[cast(p[k]) for k in ("w_ih", "w_hh", "b_ih", "b_hh")],
                              mode=mode)
        return [t.to("cpu", F64) for t in (hn, cn) if t is not None]

    (got, ran) = forced("persistent", run, DEV, torch.float32)
    assert ran == ["persistent"]
    for a, b in zip(got, run("cpu", F64)):
        assert rel_err(a, b) <= TOL_F32_VS_F64


# ---- half precision, TF32, long sequences -------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", ["persistent", "persistent_grid"])
def test_half_precision(strategy, mode, dtype, record_property):
    T, B, I, H = 16, 8, 32, 64
    inputs, params, up = case(mode, T, B, I, H, seed=13000 + MODES.index(mode) + 100 * (dtype == torch.bfloat16))
    out_tol, grad_tol = HALF_TOL[dtype]
    rnd = lambda d: {k: rounded(v, dtype) for k, v in d.items()}  # noqa: E731
    cud = cudnn_half_error(mode, 0, dtype, rnd(inputs), rnd(params), rnd(up))
    if cud is not None:
        ref = reference(mode, inputs, params, up, dtype)
        cud_err = {k: rel_err(cud[k], ref[k]) for k in ref}
        out_tol = max(out_tol, 3 * max(v for k, v in cud_err.items() if not k.startswith("d_")))
        grad_tol = max(grad_tol, 3 * max(v for k, v in cud_err.items() if k.startswith("d_")))
    for reverse, lengths in ((False, None), (True, ragged_lengths(B, T))):
        kwargs = dict(lengths=lengths, reverse=reverse)
        got, _ = forced(strategy, run_layer, mode, inputs, params, up, dtype=dtype, poison=True, **kwargs)
        compare(got, reference(mode, inputs, params, up, dtype, **kwargs), out_tol, record_property,
                prefix="rev_len_" if reverse else "plain_", grad_tol=grad_tol)


def test_tf32_follows_torchs_matmul_setting():
    mode, T, B, I, H = "LSTM", 20, 16, 32, 256
    inputs, params, up = case(mode, T, B, I, H, seed=13500)
    strict, _ = forced("persistent", run_layer, mode, inputs, params, up, grads=False)
    torch.backends.cuda.matmul.allow_tf32 = True  # restored by _no_tf32
    tf32, _ = forced("persistent", run_layer, mode, inputs, params, up, grads=False)
    ref = reference(mode, inputs, params, up, torch.float32, grads=False)
    compare(strict, ref, TOL_F32_VS_F64)
    compare(tf32, ref, 5e-3)
    assert not torch.equal(strict["y"], tf32["y"]), "allow_tf32 did not change the arithmetic"


@pytest.mark.parametrize("reverse,use_lengths", [(False, False), (True, True)], ids=["plain", "rev_lengths"])
@pytest.mark.parametrize("mode", MODES)
def test_long_sequence_float32(mode, reverse, use_lengths, record_property):
    T, B, I, H = 1000, 8, 16, 96
    inputs, params, up = case(mode, T, B, I, H, seed=14000 + MODES.index(mode) + 2 * reverse)
    lengths = ragged_lengths(B, T) if use_lengths else None
    kwargs = dict(lengths=lengths, reverse=reverse)
    got, ran = forced("persistent", run_layer, mode, inputs, params, up, poison=True, **kwargs)
    compare(got, reference(mode, inputs, params, up, torch.float32, **kwargs), 1e-4, record_property)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_long_sequence_bfloat16_no_worse_than_the_step_loop(mode, record_property):
    T, B, I, H = 1000, 16, 32, 256
    dtype = torch.bfloat16
    inputs, params, up = case(mode, T, B, I, H, seed=14500 + MODES.index(mode))
    ref = reference(mode, inputs, params, up, dtype)
    ours, _ = forced("persistent", run_layer, mode, inputs, params, up, dtype=dtype)
    theirs, _ = forced("step_loop", run_layer, mode, inputs, params, up, dtype=dtype)
    for k in ref:
        mine, base = rel_err(ours[k], ref[k]), rel_err(theirs[k], ref[k])
        record_property(k, f"persistent {mine:.3e} step_loop {base:.3e}")
        assert mine <= max(2 * base, 1e-2), f"{k}: persistent {mine:.3e}, step loop {base:.3e}"


# ---- one saved layout: persistent and step-loop passes pair -------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_saved_rows_match_the_step_loop(mode):
    T, B, I, H = 7, 6, 5, 48
    inputs, params, _ = case(mode, T, B, I, H, seed=15000 + MODES.index(mode))
    lengths = ragged_lengths(B, T).to(DEV)
    cast = lambda t: None if t is None else t.to(DEV, torch.float32)  # noqa: E731
    args = [cast(inputs[k]) for k in ("x", "h0", "c0")] + [cast(params[k]) for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    outs = {}
    for strategy in ("persistent", "step_loop"):
        with rnnkit.strategy(strategy):
            outs[strategy] = torch.ops.rnnkit.rnn_layer(*args, None, lengths, mode, True, True)
    for name, a, b in zip(("y", "h_n", "c_n", "saved"), outs["persistent"], outs["step_loop"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    saved = outs["persistent"][3].cpu()
    past_end = torch.arange(T)[:, None] >= lengths.cpu()[None, :]
    assert (saved[past_end] == 0).all(), "saved rows past a row's end are not zero"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("forward_by,backward_by", [("persistent", "step_loop"), ("step_loop", "persistent")],
                         ids=["persistent_then_step_loop", "step_loop_then_persistent"])
def test_a_persistent_pass_pairs_with_a_step_loop_pass(mode, forward_by, backward_by):
    T, B, I, H = 8, 5, 4, 40
    inputs, params, up = case(mode, T, B, I, H, seed=15500 + MODES.index(mode))
    lengths = ragged_lengths(B, T)
    leaves = {k: v.to(DEV, torch.float32).requires_grad_() for k, v in {**inputs, **params}.items() if v is not None}
    get = leaves.get
    with rnnkit.strategy(forward_by), rnnkit.record_strategies() as ran:
        y, hn, cn = ops.rnn_layer(get("x"), get("h0"), get("c0"), get("w_ih"), get("w_hh"), get("b_ih"),
                                  get("b_hh"), None, lengths.to(DEV), mode, True)
    outs = [y, hn] + ([cn] if cn is not None else [])
    ups = [up[k].to(DEV, torch.float32) for k in ("y", "h", "c")[:len(outs)]]
    with rnnkit.strategy(backward_by), rnnkit.record_strategies() as ran_back:
        grads = torch.autograd.grad(outs, list(leaves.values()), ups)
    assert ran == [forward_by] and ran_back == [backward_by]
    got = {"y": y, "h_n": hn, **({"c_n": cn} if cn is not None else {}),
           **{"d_" + k: g for k, g in zip(leaves, grads)}}
    got = {k: v.detach().to("cpu", F64) for k, v in got.items()}
    compare(got, reference(mode, inputs, params, up, torch.float32, lengths=lengths, reverse=True),
            TOL_F32_VS_F64)


# ---- against cuDNN: bidirectional layers and modules ---------------------------------------------

@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", PERSISTENT)
def test_bidirectional_vs_cudnn(strategy, mode, use_lengths, record_property):
    T, B, I, H = 9, 6, 7, 20
    g = gen(16000 + 3 * MODES.index(mode) + use_lengths)
    lengths = ragged_lengths(B, T, allow_zero=False) if use_lengths else None
    (got, ref), ran = forced(strategy, bidirectional_pair, mode, T, B, I, H, 0, True, torch.float32, lengths, g)
    assert ran == [strategy] * 4
    compare(got, ref, TOL_VS_CUDNN_F32, record_property)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case_name", [c for c, (_, kw) in MODULE_CASES.items() if not kw.get("proj_size")])
def test_modules_vs_torch_nn(case_name, packed, record_property):
    name, kw = MODULE_CASES[case_name]
    I, H, T, B = 5, 24, 6, 4
    torch.manual_seed(16500 + list(MODULE_CASES).index(case_name))
    ref_m = getattr(torch.nn, name)(I, H, **kw).to(DEV)
    rk_m = getattr(rnnkit, name)(I, H, **kw).to(DEV)
    rk_m.load_state_dict(ref_m.state_dict())
    bf = kw.get("batch_first", False)
    x = torch.randn((B, T, I) if bf else (T, B, I), device=DEV)
    lengths = torch.tensor([T, 2, 1, T - 1]) if packed else None
    got, ran = forced("persistent", run_module, rk_m, x, None, 1, lengths, bf)
    assert set(ran) == {"persistent"}, ran
    compare(got, run_module(ref_m, x, None, 1, lengths, bf), TOL_VS_CUDNN_F32, record_property)


# ---- streams and CUDA graphs ----------------------------------------------------------------

def test_runs_on_the_current_stream():
    mode, T, B, I, H = "GRU", 30, 8, 16, 64
    inputs, params, up = case(mode, T, B, I, H, seed=17000)
    ref, _ = forced("persistent_grid", run_layer, mode, inputs, params, up)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got, _ = forced("persistent_grid", run_layer, mode, inputs, params, up)
    s.synchronize()
    compare(got, ref, 1e-6)  # not bit for bit: cuBLAS may take another algorithm on another stream


@pytest.mark.parametrize("mode,reverse,use_lengths", [("LSTM", False, False), ("GRU", True, True),
                                                      ("RNN_TANH", False, True)], ids=["lstm", "gru_rev_len", "rnn_len"])
@pytest.mark.parametrize("strategy", PERSISTENT)
def test_cuda_graph_capture(strategy, mode, reverse, use_lengths):
    """Forward + backward captured once, replayed on new inputs: the numbers
    of an eager run of the same strategy."""
    if strategy == "persistent_cluster" and not HAS_CLUSTERS:
        pytest.skip("this GPU has no thread-block clusters")
    T, B, I, H = 10, 6, 8, 96
    g = gen(17500 + MODES.index(mode))
    params = {k: None if v is None else v.to(DEV).requires_grad_() for k, v in make_params(mode, I, H, 0, True, g).items()}
    weights = [params[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]

    def fresh():
        i, u = make_inputs(mode, T, B, I, H, 0, g), make_upstream(mode, T, B, H, 0, g)
        lens = ragged_lengths(B, T)[torch.randperm(B, generator=g)] if use_lengths else torch.full((B,), T)
        return [i["x"], i["h0"], i["c0"], u["y"], u["h"], u["c"], lens]

    static = [None if t is None else t.to(DEV) if t.dtype == torch.long else t.to(DEV, torch.float32)
              for t in fresh()]
    sx, sh, sc, gy, gh, gc, slen = static
    for t in (sx, sh, sc):
        if t is not None:
            t.requires_grad_()
    leaves = [t for t in (sx, sh, sc) if t is not None] + weights

    def step(x, h0, c0, lens):
        y, hn, cn = ops.rnn_layer(x, h0, c0, *weights, None, lens if use_lengths else None, mode, reverse)
        loss = (y * gy).sum() + (hn * gh).sum() + ((cn * gc).sum() if cn is not None else 0)
        return [y, hn] + ([cn] if cn is not None else []), loss

    def clear():
        for t in leaves:
            t.grad = None

    with rnnkit.strategy(strategy):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                clear()
                step(sx, sh, sc, slen)[1].backward()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        clear()
        with torch.cuda.graph(graph):
            outs, loss = step(sx, sh, sc, slen)
            loss.backward()
        grads = [t.grad for t in leaves]
        for _ in range(2):
            new = fresh()
            with torch.no_grad():
                for dst, src in zip(static, new):
                    if dst is not None:
                        dst.copy_(src)
            graph.replay()
            replayed = [o.clone() for o in outs] + [gr.clone() for gr in grads]
            fresh_leaves = [t.detach().clone().requires_grad_() for t in (sx, sh, sc) if t is not None]
            x, h0, c0 = (fresh_leaves + [None])[:3]
            eager_outs, eager_loss = step(x, h0, c0, slen.clone())
            eager = eager_outs + list(torch.autograd.grad(eager_loss, fresh_leaves + weights))
            for a, b in zip(replayed, eager):
                torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


# ---- the watchdog ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_a_stuck_grid_barrier_raises(mode):
    """A 1-cycle budget: some block always waits longer at a barrier. The
    launch must end (not hang) and the op raise; the device stays usable."""
    T, B, I, H = 20, 8, 16, 256
    inputs, params, up = case(mode, T, B, I, H, seed=18000 + MODES.index(mode))
    previous = rnnkit._C._persistent_watchdog(1)
    try:
        with pytest.raises(RuntimeError, match="timed out"):
            forced("persistent_grid", run_layer, mode, inputs, params, up, grads=False)
    finally:
        rnnkit._C._persistent_watchdog(previous)
    got, _ = forced("persistent_grid", run_layer, mode, inputs, params, up)
    compare(got, reference(mode, inputs, params, up, torch.float32), TOL_F32_VS_F64)
