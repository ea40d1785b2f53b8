"""The custom ops against torch.nn: values and every gradient, per-sequence
lengths, gradcheck, opcheck, torch.compile, and bad input."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit import ops
from rnnkit.cells import kind
from reference import MODES, assert_close, layer_weights, torch_cell, torch_layer

SIZES = [(1, 1, 1, 1), (3, 3, 5, 17), (7, 2, 17, 3)]  # (T, B, I, H)


def run_both(mode, T, B, I, H, *, bias=True, proj=0, reverse=False, dtype=torch.float64):
    """One layer through torch.nn and through rnnkit.ops.rnn_layer with the
    same weights; returns (rnnkit, torch) lists of outputs then gradients."""
    ref = torch_layer(mode, I, H, bias=bias, proj_size=proj, dtype=dtype)
    P = proj or H
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, P, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True) if mode == "LSTM" else None
    w_ih, w_hh, b_ih, b_hh, w_hr = layer_weights(ref)
    params = [p for p in (w_ih, w_hh, b_ih, b_hh, w_hr) if p is not None]
    inputs = [x, h0] + ([c0] if c0 is not None else []) + params

    # torch.nn has no reverse-only layer: run it on the flipped sequence.
    x_ref = x.flip(0) if reverse else x
    y_ref, state = ref(x_ref, (h0[None], c0[None]) if c0 is not None else h0[None])
    y_ref = y_ref.flip(0) if reverse else y_ref
    hn_ref, cn_ref = state if c0 is not None else (state, None)
    y, hn, cn = ops.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, mode, reverse)

    gy, ghn = torch.randn_like(y), torch.randn_like(hn)
    gcn = torch.randn_like(cn) if cn is not None else None

    def loss(y, hn, cn):
        return (y * gy).sum() + (hn * ghn).sum() + ((cn * gcn).sum() if cn is not None else 0)

    got = [y, hn] + ([cn] if cn is not None else [])
    want = [y_ref, hn_ref[0]] + ([cn_ref[0]] if cn_ref is not None else [])
    got += torch.autograd.grad(loss(y, hn, cn), inputs)
    want += torch.autograd.grad(loss(y_ref, hn_ref[0], cn_ref[0] if cn_ref is not None else None),
                                inputs)
    return got, want


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", SIZES)
def test_layer_matches_torch(mode, reverse, bias, dtype, sizes):
    got, want = run_both(mode, *sizes, bias=bias, reverse=reverse, dtype=dtype)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype, f"{mode} tensor {i}")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sizes", [(1, 1, 1, 2), (5, 3, 4, 17)])
def test_lstm_projection_matches_torch(reverse, dtype, sizes):
    T, B, I, H = sizes
    got, want = run_both("LSTM", T, B, I, H, proj=max(1, H // 3), reverse=reverse, dtype=dtype)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, dtype, f"projected LSTM tensor {i}")


@pytest.fixture
def threads(request):
    """torch's intra-op thread count for one test, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


# 80 hidden units, float32: the CPU time loop splits the units across the
# threads (two threads: parts of 48 and 32 units, each a block of W_hh);
# 8 rows, enough for the forward loop to project the input itself.
SPLIT_SIZES = (9, 8, 7, 80)  # (T, B, I, H)


@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_time_loop_split_across_threads(threads, mode, reverse, bias):
    """The loop projects each step's input itself (LSTM, RNN, GRU without
    bias) or reads the projections of one big GEMM (GRU with its b_ih)."""
    got, want = run_both(mode, *SPLIT_SIZES, bias=bias, reverse=reverse, dtype=torch.float32)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, torch.float32, f"{mode} tensor {i} with {threads} threads")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_input_size_zero_is_no_input(mode, dtype):
    """A layer with input size 0 (the op allows it; torch.nn's modules do not)
    runs on its hidden state alone: as torch.nn with a zero input."""
    T, B, H = 4, 16, 32  # 16 rows: the CPU loop would project the input itself
    ref = torch_layer(mode, 1, H, dtype=dtype)
    with torch.no_grad():
        ref.weight_ih_l0.zero_()
    w_ih, w_hh, b_ih, b_hh, _ = layer_weights(ref)
    h0 = torch.randn(B, H, dtype=dtype)
    c0 = torch.randn(B, H, dtype=dtype) if mode == "LSTM" else None
    y_ref, state = ref(torch.zeros(T, B, 1, dtype=dtype), (h0[None], c0[None]) if c0 is not None else h0[None])
    hn_ref = state[0] if c0 is not None else state
    y, hn, _ = ops.rnn_layer(torch.zeros(T, B, 0, dtype=dtype), h0, c0, w_ih[:, :0], w_hh, b_ih, b_hh,
                             None, None, mode, False)
    assert_close(y, y_ref, dtype, f"{mode} output with input size 0")
    assert_close(hn, hn_ref[0], dtype, f"{mode} final state with input size 0")


@pytest.mark.parametrize("mode, proj, dtype, sizes, lengths", [
    (m, 0, torch.float64, (6, 4, 3, 5), [3, 6, 1, 4]) for m in MODES] + [
    ("LSTM", 2, torch.float64, (6, 4, 3, 5), [3, 6, 1, 4])] + [
    (m, 0, torch.float32, SPLIT_SIZES, [5, 9, 1, 7, 9, 3, 2, 8]) for m in MODES])
def test_lengths_match_packed_torch(mode, proj, dtype, sizes, lengths):
    """Per-sequence lengths, unsorted: both directions against a packed,
    bidirectional torch.nn layer (its reverse half runs each sequence from its
    own end)."""
    T, B, I, H = sizes
    P = proj or H
    ref = torch_layer(mode, I, H, proj_size=proj, bidirectional=True, dtype=dtype)
    lengths = torch.tensor(lengths)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(2, B, P, dtype=dtype, requires_grad=True)
    c0 = torch.randn(2, B, H, dtype=dtype, requires_grad=True) if mode == "LSTM" else None
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, state = ref(packed, (h0, c0) if c0 is not None else h0)
    y_ref, _ = pad_packed_sequence(out, total_length=T)
    hn_ref = state[0] if c0 is not None else state

    ys, hns, cns = [], [], []
    for d, suffix in enumerate(["_l0", "_l0_reverse"]):
        y, hn, cn = ops.rnn_layer(x, h0[d], c0[d] if c0 is not None else None,
                                  *layer_weights(ref, suffix), lengths, mode, d == 1)
        ys.append(y), hns.append(hn), cns.append(cn)
    y = torch.cat(ys, 2)
    assert_close(y, y_ref, dtype, "output")
    assert_close(torch.stack(hns), hn_ref, dtype, "h_n")
    if c0 is not None:
        assert_close(torch.stack(cns), state[1], dtype, "c_n")

    gy = torch.randn_like(y)
    inputs = [x, h0] + ([c0] if c0 is not None else []) + list(ref.parameters())
    loss = (y * gy).sum() + torch.stack(hns).sum()
    loss_ref = (y_ref * gy).sum() + hn_ref.sum()
    for i, (g, w) in enumerate(zip(torch.autograd.grad(loss, inputs),
                                   torch.autograd.grad(loss_ref, inputs))):
        assert_close(g, w, dtype, f"gradient {i}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cell_matches_torch(mode, bias, dtype):
    B, I, H = 3, 5, 17
    ref = torch_cell(mode, I, H, bias, dtype=dtype)
    x = torch.randn(B, I, dtype=dtype, requires_grad=True)
    h = torch.randn(B, H, dtype=dtype, requires_grad=True)
    c = torch.randn(B, H, dtype=dtype, requires_grad=True) if mode == "LSTM" else None
    params = list(ref.parameters())
    h1, c1 = ops.rnn_cell(x, h, c, *layer_weights(ref, "")[:4], mode=mode)
    out_ref = ref(x, (h, c)) if c is not None else ref(x, h)
    h1_ref, c1_ref = out_ref if c is not None else (out_ref, None)
    assert_close(h1, h1_ref, dtype, "h'")
    inputs = [x, h] + ([c] if c is not None else []) + params
    loss = h1.sum() * 0.5 + (c1.pow(2).sum() if c1 is not None else 0)
    loss_ref = h1_ref.sum() * 0.5 + (c1_ref.pow(2).sum() if c1_ref is not None else 0)
    if c1 is not None:
        assert_close(c1, c1_ref, dtype, "c'")
    for i, (g, w) in enumerate(zip(torch.autograd.grad(loss, inputs),
                                   torch.autograd.grad(loss_ref, inputs))):
        assert_close(g, w, dtype, f"gradient {i}")


# ---- gradcheck and opcheck ----------------------------------------------------

def layer_args(mode, T=4, B=3, I=2, H=3, proj=0, lengths=None, reverse=False, requires_grad=True):
    P = proj or H
    G = kind(mode).gates * H
    t = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=requires_grad)  # noqa: E731
    return (t(T, B, I), t(B, P), t(B, H) if mode == "LSTM" else None, t(G, I), t(G, P), t(G),
            t(G), t(P, H) if proj else None, lengths, mode, reverse)


LAYER_CASES = [dict(mode=m) for m in MODES] + [
    dict(mode="LSTM", proj=2, reverse=True),
    dict(mode="GRU", lengths=torch.tensor([4, 1, 2]), reverse=True),
    dict(mode="LSTM", lengths=torch.tensor([2, 4, 3])),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_layer_gradcheck(case):
    args = layer_args(**case)
    fn = lambda *a: ops.rnn_layer(*a, *args[8:])  # noqa: E731
    outputs = lambda *a: tuple(o for o in fn(*a) if o is not None)  # noqa: E731
    tensors = [a for a in args[:8]]
    assert torch.autograd.gradcheck(lambda *a: outputs(*a), tensors)


@pytest.mark.parametrize("mode", MODES)
def test_cell_gradcheck(mode):
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args(mode)[:7]
    x = x[0].detach().requires_grad_()
    fn = lambda *a: tuple(o for o in ops.rnn_cell(*a, mode=mode) if o is not None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, h, c, w_ih, w_hh, b_ih, b_hh))


@pytest.mark.parametrize("case", LAYER_CASES[:4] + LAYER_CASES[5:], ids=str)
def test_opcheck_layer_ops(case):
    args = list(layer_args(**case))
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, mode, reverse = args
    torch.library.opcheck(torch.ops.rnnkit.rnn_layer.default, (*args, True))
    # Inference keeps nothing for backward, so it takes inputs that need no grad.
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    torch.library.opcheck(torch.ops.rnnkit.rnn_layer.default, (*detached, False))
    with torch.no_grad():
        y, hn, cn, saved = torch.ops.rnnkit.rnn_layer(*args, True)
    backward_args = (torch.randn_like(y), torch.randn_like(hn),
                     torch.randn_like(cn) if mode == "LSTM" else None,
                     x, h0, c0, w_ih, w_hh, w_hr, lengths, saved, mode, reverse)
    # Every gradient, then only some (the others come back empty).
    for mask in ([True] * 8, [False, True, True, False, True, False, True, False]):
        torch.library.opcheck(torch.ops.rnnkit.rnn_layer_backward.default,
                              tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                    for a in backward_args) + (mask,))


@pytest.mark.parametrize("mode", MODES)
def test_opcheck_cell_ops(mode):
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args(mode)[:7]
    x = x[0].detach().requires_grad_()
    torch.library.opcheck(torch.ops.rnnkit.rnn_cell.default, (x, h, c, w_ih, w_hh, b_ih, b_hh, mode, True))
    with torch.no_grad():
        h1, c1, saved = torch.ops.rnnkit.rnn_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, mode, True)
    args = (torch.randn_like(h1), torch.randn_like(c1) if mode == "LSTM" else None, x, h, c,
            w_ih, w_hh, saved, mode)
    for mask in ([True] * 7, [True, False, False, True, False, True, False]):
        torch.library.opcheck(torch.ops.rnnkit.rnn_cell_backward.default,
                              tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                    for a in args) + (mask,))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    args = layer_args("LSTM", T=5, B=2, I=3, H=4, proj=2)
    tensors = args[:8]

    def model(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        y, hn, cn = ops.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, "LSTM", False)
        y2, _, _ = ops.rnn_layer(torch.tanh(y), hn, cn, w_ih[:, :2], w_hh, b_ih, b_hh, w_hr,
                                 None, "LSTM", True)
        return (y2 ** 2).sum() + cn.sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    eager_loss = model(*tensors)
    compiled_loss = compiled(*tensors)
    assert torch.allclose(eager_loss, compiled_loss, atol=1e-12)
    for g, w in zip(torch.autograd.grad(compiled_loss, tensors), torch.autograd.grad(eager_loss, tensors)):
        assert torch.allclose(g, w, atol=1e-12)


# ---- bad input ------------------------------------------------------------------

def good_args(mode="LSTM"):
    return list(layer_args(mode, requires_grad=False))


def call_with(kind="LSTM", **changes):
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "lengths", "mode", "reverse"]
    args = dict(zip(names, good_args(kind)))
    args.update(changes)
    return torch.ops.rnnkit.rnn_layer(*args.values(), False)


@pytest.mark.parametrize("change, error, message", [
    (dict(x=torch.randn(4, 3, 5, dtype=torch.float64)), ValueError, "input has 5 features"),
    (dict(x=torch.randn(4, 3, dtype=torch.float64)), ValueError, "must be 3-D"),
    (dict(x=torch.randn(4, 3, 2, 1, dtype=torch.float64)), ValueError, "must be 3-D"),
    (dict(h0=torch.randn(3, 4, dtype=torch.float64)), ValueError, "h0"),
    (dict(h0=torch.randn(2, 3, dtype=torch.float64)), ValueError, "h0"),
    (dict(c0=torch.randn(3, 2, dtype=torch.float64)), ValueError, "c0"),
    (dict(c0=None), ValueError, "needs c0"),
    (dict(x=torch.randn(4, 3, 2)), TypeError, "dtype"),
    (dict(w_hh=torch.randn(12, 3)), TypeError, "dtype"),
    (dict(b_ih=torch.randn(11, dtype=torch.float64)), ValueError, "bias_ih"),
    (dict(w_hh=torch.randn(10, 3, dtype=torch.float64)), ValueError, "multiple of 4"),
    (dict(mode="LSTMX"), ValueError, "unknown mode"),
    (dict(lengths=torch.tensor([1, 2])), ValueError, "lengths"),
    (dict(lengths=torch.tensor([1, 2, 9])), ValueError, "lengths must lie"),
    (dict(lengths=torch.tensor([1.0, 2.0, 3.0])), TypeError, "int64"),
    (dict(x=torch.ones(4, 3, 2, dtype=torch.int64)), TypeError, "not supported"),
])
def test_bad_input_raises(change, error, message):
    with pytest.raises(error, match=message):
        call_with(**change)


def test_c0_for_gru_raises():
    with pytest.raises(ValueError, match="only for LSTM"):
        call_with("GRU", c0=torch.randn(3, 3, dtype=torch.float64))


def test_mixed_devices_raise():
    with pytest.raises((ValueError, RuntimeError), match="device"):
        call_with(h0=torch.randn(3, 3, dtype=torch.float64, device="meta"))


# Argument names as the error messages spell them.
SPELLED = dict(w_ih="weight_ih", w_hh="weight_hh", b_ih="bias_ih", b_hh="bias_hh", w_hr="weight_hr",
               h="h0", c="c0")


def full_args():
    """Layer arguments with every optional tensor present (projection, lengths)."""
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "lengths", "mode", "reverse"]
    return dict(zip(names, layer_args("LSTM", proj=2, lengths=torch.tensor([4, 1, 2]),
                                      requires_grad=False)))


@pytest.mark.parametrize("arg", ["h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "lengths"])
def test_argument_on_meta_raises_like_the_kernel(arg):
    """A meta tensor among CPU arguments sends dispatch to the fake kernel,
    which must raise as the CPU kernel does, not return uninitialised memory."""
    args = full_args()
    args[arg] = args[arg].to("meta")
    with pytest.raises(ValueError, match=f"{SPELLED.get(arg, arg)} is on meta but the input is on cpu"):
        torch.ops.rnnkit.rnn_layer(*args.values(), False)


@pytest.mark.parametrize("arg", ["h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"])
def test_fake_kernel_checks_dtypes(arg):
    args = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in full_args().items()}
    args[arg] = args[arg].float()
    with pytest.raises(TypeError, match=f"{SPELLED.get(arg, arg)} has dtype torch.float32"):
        torch.ops.rnnkit.rnn_layer(*args.values(), False)
    args[arg] = args[arg].double()
    args["lengths"] = args["lengths"].int()
    with pytest.raises(TypeError, match="lengths must be int64"):
        torch.ops.rnnkit.rnn_layer(*args.values(), False)


@pytest.mark.parametrize("arg", ["grad_y", "grad_hn", "grad_cn", "h0", "c0", "w_ih", "w_hh", "w_hr",
                                 "lengths", "saved"])
def test_backward_argument_on_meta_raises(arg):
    args = full_args()
    with torch.no_grad():
        y, hn, cn, saved = torch.ops.rnnkit.rnn_layer(*args.values(), True)
    call = dict(grad_y=torch.randn_like(y), grad_hn=torch.randn_like(hn), grad_cn=torch.randn_like(cn),
                **{k: args[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "w_hr", "lengths")},
                saved=saved, mode="LSTM", reverse=False, output_mask=[True] * 8)
    call[arg] = call[arg].to("meta")
    with pytest.raises(ValueError, match=f"{SPELLED.get(arg, arg)} is on meta but the input is on cpu"):
        torch.ops.rnnkit.rnn_layer_backward(*call.values())


@pytest.mark.parametrize("arg", ["h", "c", "w_ih", "w_hh", "b_ih", "b_hh"])
def test_cell_argument_on_meta_raises(arg):
    x, h, c, w_ih, w_hh, b_ih, b_hh = good_args()[:7]
    args = dict(x=x[0], h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    args[arg] = args[arg].to("meta")
    with pytest.raises(ValueError, match=f"{SPELLED.get(arg, arg)} is on meta but the input is on cpu"):
        torch.ops.rnnkit.rnn_cell(*args.values(), "LSTM", False)


@pytest.mark.parametrize("arg", ["grad_h", "grad_c", "h", "c", "w_ih", "w_hh", "saved"])
def test_cell_backward_argument_on_meta_raises(arg):
    x, h, c, w_ih, w_hh, b_ih, b_hh = good_args()[:7]
    with torch.no_grad():
        h1, c1, saved = torch.ops.rnnkit.rnn_cell(x[0], h, c, w_ih, w_hh, b_ih, b_hh, "LSTM", True)
    args = dict(grad_h=torch.ones_like(h1), grad_c=torch.ones_like(c1), x=x[0], h=h, c=c,
                w_ih=w_ih, w_hh=w_hh, saved=saved)
    args[arg] = args[arg].to("meta")
    with pytest.raises(ValueError, match=f"{SPELLED.get(arg, arg)} is on meta but the input is on cpu"):
        torch.ops.rnnkit.rnn_cell_backward(*args.values(), "LSTM", [True] * 7)


def test_backward_without_saved_state_raises():
    args = good_args()
    y, hn, cn, saved = torch.ops.rnnkit.rnn_layer(*args, False)
    x, h0, c0, w_ih, w_hh, _, _, w_hr, lengths, mode, reverse = args
    with pytest.raises(ValueError, match="training=True"):
        torch.ops.rnnkit.rnn_layer_backward(torch.ones_like(y), None, None, x, h0, c0, w_ih, w_hh,
                                            w_hr, lengths, saved, mode, reverse, [True] * 8)


def test_cell_bad_input_raises():
    x, h, c, w_ih, w_hh, b_ih, b_hh = good_args()[:7]
    with pytest.raises(ValueError, match="2-D"):
        torch.ops.rnnkit.rnn_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, "LSTM", False)
    with pytest.raises(ValueError, match="input has 4 features"):
        torch.ops.rnnkit.rnn_cell(torch.randn(3, 4, dtype=torch.float64), h, c, w_ih, w_hh, b_ih,
                                  b_hh, "LSTM", False)


def test_empty_sequence_and_batch():
    for T, B in [(0, 3), (4, 0)]:
        x, h0, c0, *rest = layer_args("LSTM", T=T, B=B)
        y, hn, cn = ops.rnn_layer(x, h0, c0, *rest)
        assert y.shape == (T, B, 3) and hn.shape == (B, 3)
        if T == 0:
            assert torch.equal(hn, h0) and torch.equal(cn, c0)


def test_non_contiguous_inputs():
    args = layer_args("GRU", T=5, B=4, I=6, H=3, requires_grad=False)
    x = torch.randn(4, 6, 5, dtype=torch.float64).permute(2, 0, 1)  # (T, B, I), strided
    w_ih = torch.randn(6, 9, dtype=torch.float64).t()
    assert not x.is_contiguous() and not w_ih.is_contiguous()
    y, hn, _ = ops.rnn_layer(x, args[1], None, w_ih, *args[4:])
    y_ref, hn_ref, _ = ops.rnn_layer(x.contiguous(), args[1], None, w_ih.contiguous(), *args[4:])
    assert torch.equal(y, y_ref) and torch.equal(hn, hn_ref)


def test_bfloat16_close_to_float32():
    args = layer_args("LSTM", T=6, B=3, I=8, H=16, requires_grad=False)
    f32 = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    bf16 = [a.bfloat16() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    y32, _, _ = ops.rnn_layer(*f32)
    y16, _, _ = ops.rnn_layer(*bf16)
    assert (y16.float() - y32).abs().max() < 0.05


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan_and_inf_propagate_like_torch(mode, dtype):
    """The CPU kernels are built with finite-math-only for speed; NaN must
    still come out where torch.nn gives NaN, and inf inputs saturate alike."""
    ref = torch_layer(mode, 4, 5, dtype=dtype)
    x = torch.randn(3, 3, 4, dtype=dtype)
    x[1, 0, 2] = float("nan")
    x[0, 2, 1] = float("inf")
    h0 = torch.zeros(3, 5, dtype=dtype)
    c0 = torch.zeros(3, 5, dtype=dtype) if mode == "LSTM" else None
    with torch.no_grad():
        y_ref, _ = ref(x, (h0[None], c0[None]) if c0 is not None else h0[None])
        y, _, _ = ops.rnn_layer(x, h0, c0, *layer_weights(ref), None, mode, False)
    assert torch.equal(y.isnan(), y_ref.isnan())
    assert torch.equal(y.isinf(), y_ref.isinf()) and torch.equal(y[y.isinf()], y_ref[y_ref.isinf()])
    finite = y_ref.isfinite()
    assert_close(y[finite], y_ref[finite], dtype, "finite outputs")


@pytest.mark.parametrize("mode, proj", [(m, 0) for m in MODES] + [("LSTM", 2)])
def test_output_changed_in_place_before_backward(mode, proj):
    """backward keeps its own copy of the hidden states, so a caller may
    change the outputs in place first (torch.nn's GRU, RNN, LSTMCell and
    GRUCell allow it): the gradients are those of the changed outputs."""
    ref = torch_layer(mode, 3, 5, proj_size=proj)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, proj or 5, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 5, dtype=torch.float64) if mode == "LSTM" else None
    weights = layer_weights(ref)

    y, hn, _ = ops.rnn_layer(x, h0, c0, *weights, None, mode, False)
    y.relu_()
    hn.mul_(3)
    got = torch.autograd.grad(y.sum() + hn.sum(), [x, h0, weights[1]])
    y_ref, hn_ref, _ = ops.rnn_layer(x, h0, c0, *weights, None, mode, False)
    want = torch.autograd.grad(y_ref.relu().sum() + (hn_ref * 3).sum(), [x, h0, weights[1]])
    for g, w in zip(got, want):
        assert_close(g, w, torch.float64, f"{mode} gradient after an in-place change")


@pytest.mark.parametrize("mode", MODES)
def test_cell_output_changed_in_place_before_backward(mode):
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args(mode)[:7]
    x = x[0].detach().requires_grad_()
    h_new, c_new = ops.rnn_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, mode=mode)
    h_new.relu_()
    got = torch.autograd.grad(h_new.sum(), [x, h, w_hh])
    h_ref, _ = ops.rnn_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, mode=mode)
    want = torch.autograd.grad(h_ref.relu().sum(), [x, h, w_hh])
    for g, w in zip(got, want):
        assert_close(g, w, torch.float64, f"{mode} cell gradient after an in-place change")


def test_backward_skips_what_needs_no_gradient():
    """Gradients only where their inputs need them: a frozen layer still
    passes the right gradient to its input, and its weights get none."""
    ref = torch_layer("LSTM", 3, 5)
    w_ih, w_hh, b_ih, b_hh, _ = [None if p is None else p.detach() for p in layer_weights(ref)]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.zeros(2, 5, dtype=torch.float64)
    y, _, _ = ops.rnn_layer(x, h0, h0, w_ih, w_hh, b_ih, b_hh, None, None, "LSTM", False)
    (dx,) = torch.autograd.grad(y.sum(), [x])
    y_ref, _ = ref(x)
    (dx_ref,) = torch.autograd.grad(y_ref.sum(), [x])
    assert_close(dx, dx_ref, torch.float64, "dx of a frozen layer")
    # The other way round: weights that need gradients, an input that does not.
    w_hh.requires_grad_()
    y, _, _ = ops.rnn_layer(x.detach(), h0, h0, w_ih, w_hh, b_ih, b_hh, None, None, "LSTM", False)
    (dw,) = torch.autograd.grad(y.sum(), [w_hh])
    (dw_ref,) = torch.autograd.grad(ref(x.detach())[0].sum(), [ref.weight_hh_l0])
    assert_close(dw, dw_ref, torch.float64, "dW_hh with an input that needs no gradient")
