"""GPU tests: every rnnkit op on CUDA.

Each test is marked `cuda` and skips cleanly without a GPU. References:
  * rnnkit's own CPU path in float64 on the same (rounded) inputs — the CPU
    path is verified against torch.nn by the CPU tests, and float64 takes the
    reference's own rounding out of the comparison;
  * torch.nn on CUDA (cuDNN) with TF32 off, weights copied across;
  * for float16/bfloat16, also cuDNN's own error against the float64
    reference: rnnkit must be within a fixed bound or within a small factor
    of cuDNN's error, whichever is larger.
Errors are relative norms ||got - ref|| / ||ref|| per tensor (outputs, final
states, and the gradient of every input and parameter). Outputs are computed
on memory poisoned with NaN bit patterns (0xFF bytes) so that an element a
kernel forgets to write shows up as NaN. The measured errors are recorded in
the junit XML (record_property) so that a GPU run keeps the numbers.

Tolerances (relative norm):
  float64  1e-10 against the CPU float64 path and against torch.nn float64
  float32  2e-5 against CPU float64; 1e-4 against cuDNN float32 (TF32 off)
  float16  outputs 5e-3, gradients 2e-2   } or 3x cuDNN's error against the
  bfloat16 outputs 4e-2, gradients 1e-1   } same float64 reference, if larger
"""
import math

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit import ops
from rnnkit.cells import KINDS

HAVE_GPU = torch.cuda.is_available()
BUILT_WITH_CUDA = bool(rnnkit.built_with_cuda())

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA GPU"),
]

# Tests that run rnnkit's CUDA kernels need them compiled in; test_built_with_cuda
# fails (rather than skips) when a GPU is there but the kernels are not.
needs_kernels = pytest.mark.skipif(HAVE_GPU and not BUILT_WITH_CUDA,
                                   reason="rnnkit was built without CUDA (see test_built_with_cuda)")

DEV = "cuda"
F64 = torch.float64
GATES = {mode: k.gates for mode, k in KINDS.items()}  # gate rows per unit, by mode
# Test variants: (op mode, proj_size)
VARIANTS = {
    "LSTM": ("LSTM", 0),
    "LSTM_PROJ": ("LSTM", 3),
    "GRU": ("GRU", 0),
    "RNN_TANH": ("RNN_TANH", 0),
    "RNN_RELU": ("RNN_RELU", 0),
}
TOL_F32_VS_F64 = 2e-5
TOL_F64 = 1e-10
TOL_VS_CUDNN_F32 = 1e-4
HALF_TOL = {  # (outputs, gradients), relative norm against float64
    torch.float16: (5e-3, 2e-2),
    torch.bfloat16: (4e-2, 1e-1),
}


# ---- fixtures and helpers ----------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 off in cuBLAS and cuDNN, so float32 means float32 on both sides."""
    if not HAVE_GPU:
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def poison_allocator(small_blocks=64, large_mib=(20, 20, 20, 64, 128)):
    """Fills the CUDA caching allocator with 0xFF bytes (NaN in every float
    dtype) and frees it again, so that the next allocations, which reuse those
    cached blocks, start as NaN: an output element a kernel never writes stays
    NaN instead of looking like a plausible zero. Sizes fill whole segments:
    512 KiB blocks fill the small pool's 2 MiB segments, 20 MiB blocks get a
    20 MiB segment each, larger ones a segment of their own size."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    blocks = [torch.empty(512 * 1024, dtype=torch.uint8, device=DEV) for _ in range(small_blocks)]
    blocks += [torch.empty(m << 20, dtype=torch.uint8, device=DEV) for m in large_mib]
    for b in blocks:
        b.fill_(0xFF)
    torch.cuda.synchronize()
    del blocks  # the memory stays in the allocator's cache, poisoned


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make_params(mode, I, H, P, bias, g):
    """float64 CPU masters, initialised like torch.nn: U(-1/sqrt(H), 1/sqrt(H))."""
    k = 1.0 / math.sqrt(H)
    G = GATES[mode] * H
    u = lambda *s: (torch.rand(*s, generator=g, dtype=F64) * 2 - 1) * k  # noqa: E731
    p = {"w_ih": u(G, I), "w_hh": u(G, P or H), "b_ih": None, "b_hh": None, "w_hr": None}
    if bias:
        p["b_ih"], p["b_hh"] = u(G), u(G)
    if P:
        p["w_hr"] = u(P, H)
    return p


def make_inputs(mode, T, B, I, H, P, g):
    return {
        "x": torch.randn(T, B, I, generator=g, dtype=F64),
        "h0": torch.randn(B, P or H, generator=g, dtype=F64) * 0.5,
        "c0": torch.randn(B, H, generator=g, dtype=F64) * 0.5 if mode == "LSTM" else None,
    }


def make_upstream(mode, T, B, H, P, g):
    """Gradients fed into y, h_n and c_n."""
    return {
        "y": torch.randn(T, B, P or H, generator=g, dtype=F64),
        "h": torch.randn(B, P or H, generator=g, dtype=F64),
        "c": torch.randn(B, H, generator=g, dtype=F64) if mode == "LSTM" else None,
    }


def rounded(t, dtype):
    """The float64 value of t after rounding to dtype: the reference sees the
    same inputs as the run under test."""
    return None if t is None else t.to(dtype).to(F64)


def run_layer(mode, inputs, params, upstream, *, lengths=None, reverse=False, device=DEV,
              dtype=torch.float32, poison=False, grads=True):
    """rnnkit.ops.rnn_layer on copies of the float64 masters; returns every
    output and every gradient as float64 CPU tensors in a dict."""
    if poison:
        poison_allocator()
    leaves = {}

    def leaf(name, t):
        if t is None:
            return None
        v = t.to(device=device, dtype=dtype).requires_grad_(grads)
        leaves[name] = v
        return v

    x, h0, c0 = leaf("x", inputs["x"]), leaf("h0", inputs["h0"]), leaf("c0", inputs["c0"])
    w = {k: leaf(k, v) for k, v in params.items()}
    lens = lengths.to(device) if lengths is not None else None
    y, hn, cn = ops.rnn_layer(x, h0, c0, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], w["w_hr"], lens,
                              mode, reverse)
    out = {"y": y, "h_n": hn}
    if cn is not None:
        out["c_n"] = cn
    res = {k: v.detach().to("cpu", F64) for k, v in out.items()}
    if grads:
        outs = [y, hn] + ([cn] if cn is not None else [])
        gouts = [upstream["y"], upstream["h"]] + ([upstream["c"]] if cn is not None else [])
        gouts = [t.to(device=device, dtype=dtype) for t in gouts]
        names = list(leaves)
        gs = torch.autograd.grad(outs, [leaves[n] for n in names], gouts)
        res.update({"d_" + n: gr.to("cpu", F64) for n, gr in zip(names, gs)})
    if device == DEV:
        torch.cuda.synchronize()
    return res


def rel_err(got, ref):
    got, ref = got.to("cpu", F64), ref.to("cpu", F64)
    assert got.shape == ref.shape, f"shape {tuple(got.shape)} != {tuple(ref.shape)}"
    if got.numel() == 0:
        return 0.0
    assert torch.isfinite(got).all(), "non-finite values (an element no kernel wrote?)"
    scale = ref.norm().item()
    diff = (got - ref).norm().item()
    return diff / scale if scale > 0 else diff


def compare(got, ref, tol, record=None, prefix="", grad_tol=None):
    """Compares two result dicts key by key; returns the worst errors."""
    assert set(got) == set(ref), f"different results: {sorted(got)} vs {sorted(ref)}"
    failures, worst = [], {}
    for k in sorted(ref):
        err = rel_err(got[k], ref[k])
        t = grad_tol if (grad_tol is not None and k.startswith("d_")) else tol
        worst[k] = err
        if record is not None:
            record(f"{prefix}{k}", f"{err:.3e}")
        if not err <= t:
            failures.append(f"{k}: relative error {err:.3e} > {t:.1e}")
    assert not failures, "; ".join(failures)
    return worst


def ragged_lengths(B, T, allow_zero=True):
    """Row lengths covering T, 1, 0 (when allowed) and values in between."""
    base = [T, 1, 0 if allow_zero else 2, max(1, T // 2), T - 1 if T > 1 else 1]
    return torch.tensor([min(T, max(0 if allow_zero else 1, base[b % len(base)])) for b in range(B)],
                        dtype=torch.long)


def check_padding_zero(y, lengths, reverse):
    """y must be exactly zero past each row's length (forward and reverse)."""
    T = y.shape[0]
    t = torch.arange(T).unsqueeze(1)
    pad = t >= lengths.unsqueeze(0)  # (T, B)
    assert (y[pad] == 0).all(), "y is not zero past a row's length"


# ---- build ------------------------------------------------------------------------

def test_built_with_cuda():
    assert BUILT_WITH_CUDA, "a GPU is present but rnnkit._C was built without its CUDA kernels"
    # The CUDA dispatch key is registered for every op.
    for op in ("rnn_layer", "rnn_layer_backward", "rnn_cell", "rnn_cell_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnkit::{op}", "CUDA"), op


# ---- ops against the CPU float64 path -----------------------------------------------

@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_vs_cpu_f64(variant, reverse, use_lengths, dtype, record_property):
    mode, P = VARIANTS[variant]
    T, B, I, H = 7, 11, 5, 17
    g = gen(1000 + 7 * list(VARIANTS).index(variant) + 2 * reverse + use_lengths)
    params = make_params(mode, I, H, P, True, g)
    inputs = make_inputs(mode, T, B, I, H, P, g)
    up = make_upstream(mode, T, B, H, P, g)
    lengths = ragged_lengths(B, T) if use_lengths else None

    got = run_layer(mode, inputs, params, up, lengths=lengths, reverse=reverse, dtype=dtype, poison=True)
    ref = run_layer(mode, {k: rounded(v, dtype) for k, v in inputs.items()},
                    {k: rounded(v, dtype) for k, v in params.items()},
                    {k: rounded(v, dtype) for k, v in up.items()},
                    lengths=lengths, reverse=reverse, device="cpu", dtype=F64)
    compare(got, ref, TOL_F64 if dtype == F64 else TOL_F32_VS_F64, record_property)
    if use_lengths:
        check_padding_zero(got["y"], lengths, reverse)

    # Same inputs again: bit-identical (an error that moves between runs is a race).
    again = run_layer(mode, inputs, params, up, lengths=lengths, reverse=reverse, dtype=dtype, poison=True)
    for k in got:
        assert torch.equal(got[k], again[k]), f"{k} differs between two identical runs"


@needs_kernels
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_no_bias_and_partial_grads(variant, record_property):
    """No biases; only y used (no grad into h_n/c_n), then only h_n used (no dy)."""
    mode, P = VARIANTS[variant]
    T, B, I, H = 6, 5, 3, 33
    g = gen(2000 + list(VARIANTS).index(variant))
    params = make_params(mode, I, H, P, False, g)
    inputs = make_inputs(mode, T, B, I, H, P, g)
    lengths = ragged_lengths(B, T)
    for which in ("y", "h"):
        up = make_upstream(mode, T, B, H, P, g)
        for k in up:
            if k != which and up[k] is not None:
                up[k] = torch.zeros_like(up[k])
        got = run_layer(mode, inputs, params, up, lengths=lengths, reverse=True, poison=True)
        ref = run_layer(mode, {k: rounded(v, torch.float32) for k, v in inputs.items()},
                        {k: rounded(v, torch.float32) for k, v in params.items()}, up,
                        lengths=lengths, reverse=True, device="cpu", dtype=F64)
        compare(got, ref, TOL_F32_VS_F64, record_property, prefix=f"{which}_only_")


@needs_kernels
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_dy_none(variant):
    """Only h_n feeds the loss, so autograd hands backward grad_y=None."""
    mode, P = VARIANTS[variant]
    T, B, I, H = 5, 4, 3, 9
    g = gen(2500 + list(VARIANTS).index(variant))
    params = {k: (v.to(DEV, F64).requires_grad_() if v is not None else None)
              for k, v in make_params(mode, I, H, P, True, g).items()}
    inputs = make_inputs(mode, T, B, I, H, P, g)
    x = inputs["x"].to(DEV).requires_grad_()
    h0 = inputs["h0"].to(DEV)
    c0 = inputs["c0"].to(DEV) if inputs["c0"] is not None else None

    def loss_of(device):
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        _, hn, _ = ops.rnn_layer(mv(x), mv(h0), mv(c0), mv(params["w_ih"]), mv(params["w_hh"]),
                                 mv(params["b_ih"]), mv(params["b_hh"]), mv(params["w_hr"]), None, mode, False)
        return hn.pow(2).sum()

    leaves = [x] + [v for v in params.values() if v is not None]
    g_cuda = torch.autograd.grad(loss_of(DEV), leaves)
    g_cpu = torch.autograd.grad(loss_of("cpu"), leaves)
    for a, b in zip(g_cuda, g_cpu):
        assert rel_err(a, b) <= TOL_F64


@needs_kernels
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 1, 2, 300), (2, 300, 4, 3), (0, 4, 3, 5), (4, 0, 3, 5)],
                         ids=["T1B1H1", "B1H300", "B300H3", "T0", "B0"])
@pytest.mark.parametrize("variant", ["LSTM", "LSTM_PROJ", "GRU", "RNN_RELU"])
def test_layer_odd_shapes(variant, shape):
    """Sizes 1, sizes over one block, empty sequences and empty batches."""
    mode, P = VARIANTS[variant]
    T, B, I, H = shape
    P = min(P, max(1, H - 1)) if P else 0
    g = gen(3000 + sum(shape))
    params = make_params(mode, I, H, P, True, g)
    inputs = make_inputs(mode, T, B, I, H, P, g)
    up = make_upstream(mode, T, B, H, P, g)
    got = run_layer(mode, inputs, params, up, dtype=F64, poison=True)
    ref = run_layer(mode, inputs, params, up, device="cpu", dtype=F64)
    compare(got, ref, TOL_F64)


@needs_kernels
def test_layer_non_contiguous_inputs():
    mode, T, B, I, H = "LSTM", 5, 4, 6, 8
    g = gen(3500)
    params = make_params(mode, I, H, 0, True, g)
    inputs = make_inputs(mode, T, B, I, H, 0, g)
    x_bf = inputs["x"].transpose(0, 1).contiguous().to(DEV)  # batch-first storage
    x = x_bf.transpose(0, 1)  # time-major view, not contiguous
    w_ih = params["w_ih"].t().contiguous().to(DEV).t()
    w_hh = params["w_hh"].t().contiguous().to(DEV).t()
    b_ih = torch.stack([params["b_ih"], params["b_ih"]], 1).to(DEV)[:, 0]  # stride 2
    assert not (x.is_contiguous() or w_ih.is_contiguous() or b_ih.is_contiguous())
    h0, c0 = inputs["h0"].to(DEV), inputs["c0"].to(DEV)
    y, hn, cn = ops.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, params["b_hh"].to(DEV), mode="LSTM")
    y2, hn2, cn2 = ops.rnn_layer(x.contiguous(), h0, c0, w_ih.contiguous(), w_hh.contiguous(),
                                 b_ih.contiguous(), params["b_hh"].to(DEV), mode="LSTM")
    for a, b in ((y, y2), (hn, hn2), (cn, cn2)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_kernels
def test_layer_on_side_stream():
    """Kernels run on the current stream: a run on a side stream equals one on
    the default stream once that stream is synchronised."""
    mode, T, B, I, H = "GRU", 20, 8, 16, 64
    g = gen(3600)
    params = make_params(mode, I, H, 0, True, g)
    inputs = make_inputs(mode, T, B, I, H, 0, g)
    up = make_upstream(mode, T, B, H, 0, g)
    ref = run_layer(mode, inputs, params, up, dtype=F64)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = run_layer(mode, inputs, params, up, dtype=F64)
    s.synchronize()
    compare(got, ref, 1e-12)


# ---- gradcheck and opcheck on CUDA ----------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradcheck_cuda(variant):
    mode, P = VARIANTS[variant]
    T, B, I, H = 4, 3, 2, 3
    P = 2 if P else 0
    g = gen(4000 + list(VARIANTS).index(variant))
    params = make_params(mode, I, H, P, True, g)
    inputs = make_inputs(mode, T, B, I, H, P, g)
    lengths = torch.tensor([4, 1, 3], device=DEV)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"]
    vals = {**inputs, **params}
    args = [None if vals[n] is None else vals[n].to(DEV).requires_grad_() for n in names]

    for reverse in (False, True):
        def f(*a):
            y, hn, cn = ops.rnn_layer(*a, lengths=lengths, mode=mode, reverse=reverse)
            return (y, hn) if cn is None else (y, hn, cn)

        assert torch.autograd.gradcheck(f, args)


@needs_kernels
@pytest.mark.parametrize("mode", list(GATES))
def test_gradcheck_cell_cuda(mode):
    B, I, H = 3, 2, 4
    g = gen(4100 + list(GATES).index(mode))
    p = make_params(mode, I, H, 0, True, g)
    x = torch.randn(B, I, generator=g, dtype=F64)
    h = torch.randn(B, H, generator=g, dtype=F64)
    c = torch.randn(B, H, generator=g, dtype=F64) if mode == "LSTM" else None
    args = [None if t is None else t.to(DEV).requires_grad_()
            for t in (x, h, c, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])]

    def f(*a):
        hn, cn = ops.rnn_cell(*a, mode=mode)
        return hn if cn is None else (hn, cn)

    assert torch.autograd.gradcheck(f, args)


@needs_kernels
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("variant", ["LSTM_PROJ", "GRU"])
def test_opcheck_cuda(variant, use_lengths):
    """torch.library.opcheck (schema, autograd registration, fake tensors,
    AOT dispatch) with CUDA tensors, for the layer op and the cell op. With
    lengths, every output must be deterministic too: opcheck compares all of
    them, `saved` included, between eager and traced runs."""
    mode, P = VARIANTS[variant]
    T, B, I, H = 3, 2, 3, 4
    g = gen(4200)
    cuda_leaf = lambda t: None if t is None else t.to(DEV).requires_grad_()  # noqa: E731
    p = {k: cuda_leaf(v) for k, v in make_params(mode, I, H, P, True, g).items()}
    i = {k: cuda_leaf(v) for k, v in make_inputs(mode, T, B, I, H, P, g).items()}
    lengths = torch.tensor([3, 1], device=DEV) if use_lengths else None
    args = (i["x"], i["h0"], i["c0"], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], p["w_hr"], lengths, mode,
            True, True)
    torch.library.opcheck(torch.ops.rnnkit.rnn_layer.default, args)

    if use_lengths:
        return
    pc = {k: cuda_leaf(v) for k, v in make_params(mode, I, H, 0, True, g).items()}
    ic = {k: cuda_leaf(v) for k, v in make_inputs(mode, 1, B, I, H, 0, g).items()}
    cell_args = (ic["x"][0].detach().requires_grad_(), ic["h0"], ic["c0"], pc["w_ih"], pc["w_hh"], pc["b_ih"],
                 pc["b_hh"], mode, True)
    torch.library.opcheck(torch.ops.rnnkit.rnn_cell.default, cell_args)


# ---- ops against torch.nn / cuDNN on CUDA -----------------------------------------------

def torch_module(mode, I, H, P, bias, bidirectional, dtype):
    kw = dict(bias=bias, bidirectional=bidirectional, dtype=dtype, device=DEV)
    if mode == "LSTM":
        return nn.LSTM(I, H, proj_size=P, **kw)
    if mode == "GRU":
        return nn.GRU(I, H, **kw)
    return nn.RNN(I, H, nonlinearity=mode[4:].lower(), **kw)


NN_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh", "w_hr": "weight_hr"}


def bidirectional_pair(mode, T, B, I, H, P, bias, dtype, lengths, g):
    """torch.nn (bidirectional, packed when lengths are given) and rnnkit
    (one op per direction) on the same weights and inputs. Returns two result
    dicts (outputs and gradients, float64 on the CPU) plus the inputs."""
    pf, pb = make_params(mode, I, H, P, bias, g), make_params(mode, I, H, P, bias, g)
    x = torch.randn(T, B, I, generator=g, dtype=F64)
    h0 = torch.randn(2, B, P or H, generator=g, dtype=F64) * 0.5
    c0 = torch.randn(2, B, H, generator=g, dtype=F64) * 0.5 if mode == "LSTM" else None
    gy = torch.randn(T, B, 2 * (P or H), generator=g, dtype=F64)
    gh = torch.randn(2, B, P or H, generator=g, dtype=F64)
    gc = torch.randn(2, B, H, generator=g, dtype=F64) if mode == "LSTM" else None
    cast = lambda t: t.to(DEV, dtype)  # noqa: E731

    # torch.nn
    m = torch_module(mode, I, H, P, bias, True, dtype)
    with torch.no_grad():
        for suffix, p in (("_l0", pf), ("_l0_reverse", pb)):
            for k, v in p.items():
                if v is not None:
                    getattr(m, NN_NAMES[k] + suffix).copy_(v)
    xt, h0t = cast(x).requires_grad_(), cast(h0).requires_grad_()
    c0t = cast(c0).requires_grad_() if c0 is not None else None
    state = (h0t, c0t) if mode == "LSTM" else h0t
    if lengths is not None:
        packed = pack_padded_sequence(xt, lengths, enforce_sorted=False)
        out, st = m(packed, state)
        out = pad_packed_sequence(out, total_length=T)[0]
    else:
        out, st = m(xt, state)
    hn, cn = st if mode == "LSTM" else (st, None)
    names = [n for n, _ in m.named_parameters()]
    leaves = [xt, h0t] + ([c0t] if c0t is not None else []) + [dict(m.named_parameters())[n] for n in names]
    outs = [out, hn] + ([cn] if cn is not None else [])
    gouts = [cast(gy), cast(gh)] + ([cast(gc)] if gc is not None else [])
    grads = torch.autograd.grad(outs, leaves, gouts)
    ref = {"y": out, "h_n": hn, **({"c_n": cn} if cn is not None else {})}
    ref.update({"d_" + n: gr for n, gr in zip(["x", "h0"] + (["c0"] if c0 is not None else []) + names, grads)})
    ref = {k: v.detach().to("cpu", F64) for k, v in ref.items()}

    # rnnkit
    poison_allocator()
    xr, h0r = cast(x).requires_grad_(), cast(h0).requires_grad_()
    c0r = cast(c0).requires_grad_() if c0 is not None else None
    w = {}
    for suffix, p in (("_l0", pf), ("_l0_reverse", pb)):
        for k, v in p.items():
            if v is not None:
                w[NN_NAMES[k] + suffix] = cast(v).requires_grad_()
    lens = lengths.to(DEV) if lengths is not None else None
    res = []
    for d, suffix in enumerate(("_l0", "_l0_reverse")):
        get = lambda k: w.get(NN_NAMES[k] + suffix)  # noqa: E731
        res.append(ops.rnn_layer(xr, h0r[d], c0r[d] if c0r is not None else None, get("w_ih"), get("w_hh"),
                                 get("b_ih"), get("b_hh"), get("w_hr"), lens, mode, d == 1))
    y = torch.cat([res[0][0], res[1][0]], -1)
    hn = torch.stack([res[0][1], res[1][1]])
    cn = torch.stack([res[0][2], res[1][2]]) if mode == "LSTM" else None
    leaves = [xr, h0r] + ([c0r] if c0r is not None else []) + [w[n] for n in names]
    outs = [y, hn] + ([cn] if cn is not None else [])
    grads = torch.autograd.grad(outs, leaves, gouts)
    got = {"y": y, "h_n": hn, **({"c_n": cn} if cn is not None else {})}
    got.update({"d_" + n: gr for n, gr in zip(["x", "h0"] + (["c0"] if c0 is not None else []) + names, grads)})
    got = {k: v.detach().to("cpu", F64) for k, v in got.items()}
    torch.cuda.synchronize()
    return got, ref


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_vs_cudnn(variant, use_lengths, dtype, record_property):
    """Both directions of a bidirectional torch.nn layer (packed when lengths
    are given: per-row final states, zero padding), outputs and every gradient."""
    mode, P = VARIANTS[variant]
    T, B, I, H = 9, 6, 7, 20
    g = gen(5000 + 3 * list(VARIANTS).index(variant) + use_lengths)
    lengths = ragged_lengths(B, T, allow_zero=False) if use_lengths else None
    got, ref = bidirectional_pair(mode, T, B, I, H, P, True, dtype, lengths, g)
    compare(got, ref, TOL_F64 if dtype == F64 else TOL_VS_CUDNN_F32, record_property)


@needs_kernels
@pytest.mark.parametrize("variant", ["LSTM", "LSTM_PROJ", "GRU", "RNN_TANH"])
def test_layer_vs_cudnn_large(variant, record_property):
    """The fastrnns size class, float32 without TF32."""
    mode, P = VARIANTS[variant]
    T, B, I, H = 50, 64, 256, 256
    P = 128 if P else 0
    g = gen(5100 + list(VARIANTS).index(variant))
    got, ref = bidirectional_pair(mode, T, B, I, H, P, True, torch.float32, None, g)
    compare(got, ref, TOL_VS_CUDNN_F32, record_property)


# ---- half precision ------------------------------------------------------------------

def cudnn_half_error(mode, P, dtype, inputs, params, up):
    """cuDNN's own relative error against the float64 reference on the same
    rounded inputs (single direction, no lengths): the yardstick for rnnkit's
    half-precision error. None if torch.nn cannot run this dtype."""
    T, B, I = inputs["x"].shape
    H = params["w_hh"].shape[0] // GATES[mode]
    try:
        m = torch_module(mode, I, H, P, params["b_ih"] is not None, False, dtype)
        with torch.no_grad():
            for k, v in params.items():
                if v is not None:
                    getattr(m, NN_NAMES[k] + "_l0").copy_(v)
        x = inputs["x"].to(DEV, dtype).requires_grad_()
        h0 = inputs["h0"].to(DEV, dtype).unsqueeze(0).requires_grad_()
        c0 = inputs["c0"].to(DEV, dtype).unsqueeze(0).requires_grad_() if inputs["c0"] is not None else None
        out, st = m(x, (h0, c0) if c0 is not None else h0)
        hn, cn = st if c0 is not None else (st, None)
        names = [n for n, _ in m.named_parameters()]
        leaves = [x, h0] + ([c0] if c0 is not None else []) + [dict(m.named_parameters())[n] for n in names]
        outs = [out, hn] + ([cn] if cn is not None else [])
        gouts = [up["y"], up["h"].unsqueeze(0)] + ([up["c"].unsqueeze(0)] if cn is not None else [])
        grads = torch.autograd.grad(outs, leaves, [t.to(DEV, dtype) for t in gouts])
    except RuntimeError:
        return None
    got = {"y": out, "h_n": hn[0], **({"c_n": cn[0]} if cn is not None else {})}
    keys = ["x", "h0"] + (["c0"] if c0 is not None else []) + [
        {v + "_l0": k for k, v in NN_NAMES.items()}[n] for n in names]
    got.update({"d_" + k: (gr[0] if k in ("h0", "c0") else gr) for k, gr in zip(keys, grads)})
    return {k: v.detach().to("cpu", F64) for k, v in got.items()}


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_half_precision(variant, dtype, record_property):
    mode, P = VARIANTS[variant]
    T, B, I, H = 16, 8, 32, 64
    P = 24 if P else 0
    g = gen(6000 + list(VARIANTS).index(variant) + 100 * (dtype == torch.bfloat16))
    params = make_params(mode, I, H, P, True, g)
    inputs = make_inputs(mode, T, B, I, H, P, g)
    up = make_upstream(mode, T, B, H, P, g)
    r_in = {k: rounded(v, dtype) for k, v in inputs.items()}
    r_p = {k: rounded(v, dtype) for k, v in params.items()}
    r_up = {k: rounded(v, dtype) for k, v in up.items()}
    out_tol, grad_tol = HALF_TOL[dtype]

    # cuDNN's error on the plain configuration, as a yardstick.
    ref = run_layer(mode, r_in, r_p, r_up, device="cpu", dtype=F64)
    cud = cudnn_half_error(mode, P, dtype, r_in, r_p, r_up)
    if cud is not None:
        cud_err = {k: rel_err(cud[k], ref[k]) for k in ref}
        for k, e in cud_err.items():
            record_property(f"cudnn_{k}", f"{e:.3e}")
        out_tol = max(out_tol, 3 * max(v for k, v in cud_err.items() if not k.startswith("d_")))
        grad_tol = max(grad_tol, 3 * max(v for k, v in cud_err.items() if k.startswith("d_")))

    for reverse, lengths in ((False, None), (True, ragged_lengths(B, T))):
        tag = "rev_len_" if reverse else "plain_"
        got = run_layer(mode, inputs, params, up, lengths=lengths, reverse=reverse, dtype=dtype, poison=True)
        ref = run_layer(mode, r_in, r_p, r_up, lengths=lengths, reverse=reverse, device="cpu", dtype=F64)
        compare(got, ref, out_tol, record_property, prefix=tag, grad_tol=grad_tol)
        if lengths is not None:
            check_padding_zero(got["y"], lengths, reverse)


# ---- cells ----------------------------------------------------------------------------

def torch_cell(mode, I, H, bias, dtype):
    kw = dict(dtype=dtype, device=DEV)
    if mode == "LSTM":
        return nn.LSTMCell(I, H, bias, **kw)
    if mode == "GRU":
        return nn.GRUCell(I, H, bias, **kw)
    return nn.RNNCell(I, H, bias, mode[4:].lower(), **kw)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["f32", "f64", "f16", "bf16"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", list(GATES))
def test_cell(mode, bias, dtype, record_property):
    B, I, H = 13, 6, 19
    g = gen(7000 + list(GATES).index(mode) + 10 * bias)
    p = make_params(mode, I, H, 0, bias, g)
    x = torch.randn(B, I, generator=g, dtype=F64)
    h = torch.randn(B, H, generator=g, dtype=F64)
    c = torch.randn(B, H, generator=g, dtype=F64) if mode == "LSTM" else None
    gh = torch.randn(B, H, generator=g, dtype=F64)
    gc = torch.randn(B, H, generator=g, dtype=F64) if mode == "LSTM" else None
    half = dtype in (torch.float16, torch.bfloat16)

    def run(device, dt, vals):
        if device == DEV:
            poison_allocator()
        leaves = {k: v.to(device, dt).requires_grad_() for k, v in vals.items() if v is not None}
        hn, cn = ops.rnn_cell(leaves["x"], leaves["h"], leaves.get("c"), leaves["w_ih"], leaves["w_hh"],
                              leaves.get("b_ih"), leaves.get("b_hh"), mode)
        outs = [hn] + ([cn] if cn is not None else [])
        gouts = [gh.to(device, dt)] + ([gc.to(device, dt)] if cn is not None else [])
        names = list(leaves)
        grads = torch.autograd.grad(outs, [leaves[n] for n in names], gouts)
        res = {"h": hn, **({"c": cn} if cn is not None else {})}
        res.update({"d_" + n: gr for n, gr in zip(names, grads)})
        return {k: v.detach().to("cpu", F64) for k, v in res.items()}

    vals = {"x": x, "h": h, "c": c, **p}
    got = run(DEV, dtype, vals)
    ref = run("cpu", F64, {k: rounded(v, dtype) for k, v in vals.items()})
    tol = {torch.float64: TOL_F64, torch.float32: TOL_F32_VS_F64}.get(dtype)
    if half:
        compare(got, ref, HALF_TOL[dtype][0], record_property, grad_tol=HALF_TOL[dtype][1])
    else:
        compare(got, ref, tol, record_property)

    if dtype in (torch.float32, torch.float64):  # and against torch.nn's cell on CUDA
        m = torch_cell(mode, I, H, bias, dtype)
        with torch.no_grad():
            for k, name in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")):
                if p[k] is not None:
                    getattr(m, name).copy_(p[k])
        xt = x.to(DEV, dtype).requires_grad_()
        ht = h.to(DEV, dtype).requires_grad_()
        ct = c.to(DEV, dtype).requires_grad_() if c is not None else None
        out = m(xt, (ht, ct)) if mode == "LSTM" else m(xt, ht)
        hn, cn = out if mode == "LSTM" else (out, None)
        names = [n for n, _ in m.named_parameters()]
        leaves = [xt, ht] + ([ct] if ct is not None else []) + [dict(m.named_parameters())[n] for n in names]
        outs = [hn] + ([cn] if cn is not None else [])
        gouts = [gh.to(DEV, dtype)] + ([gc.to(DEV, dtype)] if cn is not None else [])
        grads = torch.autograd.grad(outs, leaves, gouts)
        key = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}
        nn_res = {"h": hn, **({"c": cn} if cn is not None else {})}
        nn_res.update({"d_" + k: gr for k, gr in zip(["x", "h"] + (["c"] if ct is not None else [])
                                                     + [key[n] for n in names], grads)})
        nn_res = {k: v.detach().to("cpu", F64) for k, v in nn_res.items()}
        compare(got, nn_res, TOL_F64 if dtype == F64 else TOL_VS_CUDNN_F32)


# ---- modules (rnnkit.LSTM/GRU/RNN, torch.nn's API) against torch.nn on CUDA ------------------

def module_or_skip(name):
    cls = getattr(rnnkit, name, None)
    if cls is None:
        pytest.skip(f"rnnkit.{name} is not available in this build yet")
    return cls


MODULE_CASES = {
    "lstm_2l_bi_bf_proj": ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=3)),
    "lstm_3l": ("LSTM", dict(num_layers=3)),
    "gru_3l_bi": ("GRU", dict(num_layers=3, bidirectional=True)),
    "gru_bf_nobias": ("GRU", dict(batch_first=True, bias=False)),
    "rnn_relu_2l_bf": ("RNN", dict(num_layers=2, nonlinearity="relu", batch_first=True)),
    "rnn_tanh_bi": ("RNN", dict(bidirectional=True)),
}


def run_module(m, x, hx, gouts_seed, packed_lengths=None, batch_first=False):
    """Forward and backward; returns outputs (padded) and gradients by name."""
    xin = x.detach().clone().requires_grad_()
    inp = xin
    if packed_lengths is not None:
        inp = pack_padded_sequence(xin, packed_lengths, batch_first=batch_first, enforce_sorted=False)
    hx_in = None
    if hx is not None:
        hx_in = tuple(h.detach().clone().requires_grad_() for h in hx) if isinstance(hx, tuple) \
            else hx.detach().clone().requires_grad_()
    out, st = m(inp, hx_in)
    if packed_lengths is not None:
        out = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0])[0]
    states = list(st) if isinstance(st, tuple) else [st]
    g = torch.Generator(device=x.device).manual_seed(gouts_seed)
    outs = [out] + states
    gouts = [torch.randn(o.shape, generator=g, device=o.device, dtype=o.dtype) for o in outs]
    hx_leaves = [] if hx_in is None else (list(hx_in) if isinstance(hx_in, tuple) else [hx_in])
    names = [n for n, _ in m.named_parameters()]
    leaves = [xin] + hx_leaves + [dict(m.named_parameters())[n] for n in names]
    grads = torch.autograd.grad(outs, leaves, gouts)
    res = {"out": out}
    res.update({f"state{i}": s for i, s in enumerate(states)})
    res["d_x"] = grads[0]
    res.update({f"d_hx{i}": gr for i, gr in enumerate(grads[1:1 + len(hx_leaves)])})
    res.update({"d_" + n: gr for n, gr in zip(names, grads[1 + len(hx_leaves):])})
    return {k: v.detach().to("cpu", F64) for k, v in res.items()}


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_module_vs_torch_nn(case, packed, dtype, record_property):
    name, kw = MODULE_CASES[case]
    cls = module_or_skip(name)
    I, H, T, B = 5, 7, 6, 4
    torch.manual_seed(8000 + list(MODULE_CASES).index(case))
    ref_m = getattr(nn, name)(I, H, **kw).to(DEV, dtype)
    rk_m = cls(I, H, **kw).to(DEV, dtype)
    rk_m.load_state_dict(ref_m.state_dict())
    bf = kw.get("batch_first", False)
    x = torch.randn((B, T, I) if bf else (T, B, I), device=DEV, dtype=dtype)
    D = 2 if kw.get("bidirectional") else 1
    L = kw.get("num_layers", 1)
    P = kw.get("proj_size", 0) or H
    h0 = torch.randn(L * D, B, P, device=DEV, dtype=dtype)
    hx = (h0, torch.randn(L * D, B, H, device=DEV, dtype=dtype)) if name == "LSTM" else h0
    lengths = torch.tensor([T, 2, 1, T - 1][:B]) if packed else None
    poison_allocator()
    got = run_module(rk_m, x, hx, 1, lengths, bf)
    ref = run_module(ref_m, x, hx, 1, lengths, bf)
    compare(got, ref, TOL_F64 if dtype == F64 else TOL_VS_CUDNN_F32, record_property)
    # Default (zero) initial state as well.
    got0 = run_module(rk_m, x, None, 2, lengths, bf)
    ref0 = run_module(ref_m, x, None, 2, lengths, bf)
    compare(got0, ref0, TOL_F64 if dtype == F64 else TOL_VS_CUDNN_F32)


@needs_kernels
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_module_unbatched(name):
    cls = module_or_skip(name)
    torch.manual_seed(8100)
    ref_m = getattr(nn, name)(4, 6, num_layers=2).to(DEV)
    rk_m = cls(4, 6, num_layers=2).to(DEV)
    rk_m.load_state_dict(ref_m.state_dict())
    x = torch.randn(5, 4, device=DEV)
    got = run_module(rk_m, x, None, 3)
    ref = run_module(ref_m, x, None, 3)
    compare(got, ref, TOL_VS_CUDNN_F32)


@needs_kernels
@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_module(name):
    cls = module_or_skip(name)
    torch.manual_seed(8200)
    ref_m = getattr(nn, name)(5, 7).to(DEV)
    rk_m = cls(5, 7).to(DEV)
    rk_m.load_state_dict(ref_m.state_dict())
    x = torch.randn(3, 5, device=DEV)
    h = torch.randn(3, 7, device=DEV)
    hx = (h, torch.randn(3, 7, device=DEV)) if name == "LSTMCell" else h
    a = ref_m(x, hx)
    b = rk_m(x, hx)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert rel_err(v, u) <= TOL_VS_CUDNN_F32


# ---- torch.compile(fullgraph=True) ----------------------------------------------------

@needs_kernels
@pytest.mark.slow
@pytest.mark.parametrize("variant", ["LSTM_PROJ", "GRU"])
def test_compile_fullgraph(variant):
    mode, P = VARIANTS[variant]
    T, B, I, H = 8, 5, 6, 16
    g = gen(9000 + (variant == "GRU"))
    p = {k: None if v is None else v.to(DEV, torch.float32).requires_grad_()
         for k, v in make_params(mode, I, H, P, True, g).items()}
    i = make_inputs(mode, T, B, I, H, P, g)
    x = i["x"].to(DEV, torch.float32).requires_grad_()
    h0 = i["h0"].to(DEV, torch.float32)
    c0 = i["c0"].to(DEV, torch.float32) if i["c0"] is not None else None
    lengths = ragged_lengths(B, T).to(DEV)

    def f(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths):
        y, hn, cn = ops.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, True)
        loss = (y.tanh() * 1.5).sum() + hn.square().sum()
        return loss + cn.sum() if cn is not None else loss

    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True)
    args = (x, h0, c0, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], p["w_hr"], lengths)
    leaves = [x] + [v for v in p.values() if v is not None]
    eager_loss = f(*args)
    eager_grads = torch.autograd.grad(eager_loss, leaves)
    comp_loss = cf(*args)
    comp_grads = torch.autograd.grad(comp_loss, leaves)
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_kernels
@pytest.mark.slow
def test_compile_module_fullgraph():
    cls = module_or_skip("LSTM")
    torch.manual_seed(9100)
    m = cls(6, 16, num_layers=2, bidirectional=True).to(DEV)
    x = torch.randn(7, 3, 6, device=DEV, requires_grad=True)
    torch._dynamo.reset()
    cm = torch.compile(m, fullgraph=True)
    y_e, (h_e, c_e) = m(x)
    y_c, (h_c, c_c) = cm(x)
    for a, b in ((y_c, y_e), (h_c, h_e), (c_c, c_e)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ge = torch.autograd.grad(y_e.sum() + h_e.sum(), [x] + list(m.parameters()))
    gc = torch.autograd.grad(y_c.sum() + h_c.sum(), [x] + list(m.parameters()))
    for a, b in zip(gc, ge):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---- CUDA graphs ----------------------------------------------------------------------

@needs_kernels
@pytest.mark.parametrize("variant,reverse,use_lengths", [
    ("LSTM", False, False), ("LSTM_PROJ", True, True), ("GRU", True, True), ("RNN_TANH", False, True)],
    ids=["lstm", "lstm_proj_rev_len", "gru_rev_len", "rnn_len"])
def test_cuda_graph_capture(variant, reverse, use_lengths):
    """Capture forward + backward of a layer in a CUDA graph (static buffers,
    warm-up on a side stream first), replay on new data, compare with eager."""
    mode, P = VARIANTS[variant]
    T, B, I, H = 10, 6, 8, 32
    P = 12 if P else 0
    g = gen(9500 + list(VARIANTS).index(variant))
    params = {k: None if v is None else v.to(DEV, torch.float32).requires_grad_()
              for k, v in make_params(mode, I, H, P, True, g).items()}
    leaves_p = [v for v in params.values() if v is not None]

    def fresh_inputs():
        i = make_inputs(mode, T, B, I, H, P, g)
        u = make_upstream(mode, T, B, H, P, g)
        lens = ragged_lengths(B, T)[torch.randperm(B, generator=g)] if use_lengths else None
        return i, u, lens

    i0, u0, l0 = fresh_inputs()
    sx = i0["x"].to(DEV, torch.float32).requires_grad_()
    sh = i0["h0"].to(DEV, torch.float32).requires_grad_()
    sc = i0["c0"].to(DEV, torch.float32).requires_grad_() if mode == "LSTM" else None
    sgy, sgh = u0["y"].to(DEV, torch.float32), u0["h"].to(DEV, torch.float32)
    sgc = u0["c"].to(DEV, torch.float32) if mode == "LSTM" else None
    slen = l0.to(DEV) if use_lengths else None

    def step():
        y, hn, cn = ops.rnn_layer(sx, sh, sc, params["w_ih"], params["w_hh"], params["b_ih"], params["b_hh"],
                                  params["w_hr"], slen, mode, reverse)
        loss = (y * sgy).sum() + (hn * sgh).sum() + ((cn * sgc).sum() if cn is not None else 0)
        loss.backward()
        return y, hn, cn

    def clear_grads():
        for t in [sx, sh, sc] + leaves_p:
            if t is not None:
                t.grad = None

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            clear_grads()
            step()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()

    graph = torch.cuda.CUDAGraph()
    clear_grads()
    with torch.cuda.graph(graph):
        sy, shn, scn = step()
    grad_tensors = [t.grad for t in [sx, sh, sc] + leaves_p if t is not None]
    assert all(gr is not None for gr in grad_tensors)

    for _ in range(2):  # replay on new data, twice
        i1, u1, l1 = fresh_inputs()
        with torch.no_grad():
            sx.copy_(i1["x"])
            sh.copy_(i1["h0"])
            if sc is not None:
                sc.copy_(i1["c0"])
            sgy.copy_(u1["y"])
            sgh.copy_(u1["h"])
            if sgc is not None:
                sgc.copy_(u1["c"])
            if slen is not None:
                slen.copy_(l1)
        graph.replay()
        torch.cuda.synchronize()
        replayed = [sy.clone(), shn.clone()] + ([scn.clone()] if scn is not None else []) + \
                   [gr.clone() for gr in grad_tensors]

        # eager on the same data
        x = sx.detach().clone().requires_grad_()
        h0 = sh.detach().clone().requires_grad_()
        c0 = sc.detach().clone().requires_grad_() if sc is not None else None
        y, hn, cn = ops.rnn_layer(x, h0, c0, params["w_ih"], params["w_hh"], params["b_ih"], params["b_hh"],
                                  params["w_hr"], slen.clone() if slen is not None else None, mode, reverse)
        loss = (y * sgy).sum() + (hn * sgh).sum() + ((cn * sgc).sum() if cn is not None else 0)
        grads = torch.autograd.grad(loss, [t for t in [x, h0, c0] if t is not None] + leaves_p)
        eager = [y, hn] + ([cn] if cn is not None else []) + list(grads)
        assert len(eager) == len(replayed)
        for a, b in zip(replayed, eager):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


# ---- errors ---------------------------------------------------------------------------

@needs_kernels
def test_mixed_devices_raise():
    mode, T, B, I, H = "LSTM", 3, 2, 4, 5
    g = gen(9900)
    p = {k: v.to(DEV, torch.float32) for k, v in make_params(mode, I, H, 0, True, g).items() if v is not None}
    i = make_inputs(mode, T, B, I, H, 0, g)
    x = i["x"].to(DEV, torch.float32)
    h0_cpu, c0_cpu = i["h0"].float(), i["c0"].float()
    with pytest.raises(ValueError, match="same device"):
        ops.rnn_layer(x, h0_cpu, c0_cpu.to(DEV), p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], mode=mode)
    with pytest.raises(ValueError, match="same device"):
        ops.rnn_layer(x, h0_cpu.to(DEV), c0_cpu.to(DEV), p["w_ih"].cpu(), p["w_hh"], p["b_ih"], p["b_hh"],
                      mode=mode)
    with pytest.raises(ValueError, match="same device"):  # CPU input, CUDA state
        ops.rnn_layer(x.cpu(), h0_cpu.to(DEV), c0_cpu, p["w_ih"].cpu(), p["w_hh"].cpu(), mode=mode)
    with pytest.raises(ValueError, match="lengths is on cpu"):
        ops.rnn_layer(x, h0_cpu.to(DEV), c0_cpu.to(DEV), p["w_ih"], p["w_hh"], lengths=torch.tensor([3, 1]),
                      mode=mode)
    with pytest.raises(ValueError, match="same device"):
        ops.rnn_cell(x[0], h0_cpu, c0_cpu.to(DEV), p["w_ih"], p["w_hh"], mode=mode)
    # Also when a backward follows (the autograd path checks the same way).
    with pytest.raises(ValueError, match="same device"):
        ops.rnn_layer(x.requires_grad_(), h0_cpu, c0_cpu.to(DEV), p["w_ih"], p["w_hh"], mode=mode)
    # The CUDA context is still healthy afterwards.
    y, hn, cn = ops.rnn_layer(x.detach(), h0_cpu.to(DEV), c0_cpu.to(DEV), p["w_ih"], p["w_hh"], mode=mode)
    torch.cuda.synchronize()
    assert torch.isfinite(y).all()


# ---- 64-bit indexing ----------------------------------------------------------------------

@needs_kernels
@pytest.mark.slow
def test_more_than_2_31_elements():
    """gx (T, B, 4H) and saved (T, B, 5H) hold more than 2^31 elements: every
    row must come out as it does in a small batch. bfloat16, about 30 GB."""
    free, total = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip(f"needs about 40 GiB free GPU memory, {free / 2**30:.0f} GiB free")
    mode, T, B, I, H = "LSTM", 3, 2**18, 2, 1024
    dt = torch.bfloat16
    assert T * B * 4 * H > 2**31
    g = gen(9950)
    p = {k: v.to(DEV, dt) for k, v in make_params(mode, I, H, 0, True, g).items() if v is not None}
    torch.manual_seed(9950)
    x = torch.randn(T, B, I, device=DEV, dtype=dt)
    h0 = torch.randn(B, H, device=DEV, dtype=dt) * 0.5
    c0 = torch.randn(B, H, device=DEV, dtype=dt) * 0.5
    rows = torch.tensor([0, 1, B // 2, B - 2, B - 1], device=DEV)

    xl = x.clone().requires_grad_()
    y, hn, cn = ops.rnn_layer(xl, h0, c0, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], mode=mode)
    gy = torch.randn(T, len(rows), H, device=DEV, dtype=dt)
    full_gy = torch.zeros_like(y)
    full_gy[:, rows] = gy
    (dx,) = torch.autograd.grad(y, [xl], full_gy)
    del full_gy
    big = [y[:, rows].float(), hn[rows].float(), cn[rows].float(), dx[:, rows].float()]
    del y, hn, cn, dx, xl
    torch.cuda.empty_cache()

    xs = x[:, rows].clone().requires_grad_()
    ys, hs, cs = ops.rnn_layer(xs, h0[rows], c0[rows], p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], mode=mode)
    (dxs,) = torch.autograd.grad(ys, [xs], gy)
    small = [ys.float(), hs.float(), cs.float(), dxs.float()]
    for name, a, b in zip(("y", "h_n", "c_n", "dx"), big, small):
        err = rel_err(a, b)
        assert err <= 2e-2, f"{name}: relative error {err:.3e} between the large and the small batch"
