"""rnnkit's nn.Module drop-ins against torch.nn, with weights copied across.

Every comparison checks outputs, final states and the gradients of the input,
h0, c0 and every parameter. The list of configurations is fixed (generated
below); the inputs are fresh random numbers every run (the seed is printed
on failure; set RNNKIT_TEST_SEED to replay one).
"""
import contextlib
import copy
import inspect
import io
import itertools
import os
import pickle
import pydoc
import random
import typing
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit

# torch.nn's own CPU LSTM says this about projections; it is the reference, not us.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

TOL = {torch.float64: dict(atol=1e-9, rtol=1e-7), torch.float32: dict(atol=1e-5, rtol=1e-4)}


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int(os.environ.get("RNNKIT_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"RNNKIT_TEST_SEED={seed}")
    torch.manual_seed(seed)
    yield


# ---- helpers -------------------------------------------------------------------

# (class name in torch.nn / rnnkit, extra constructor kwargs)
SEQ_KINDS = {
    "LSTM": ("LSTM", {}),
    "GRU": ("GRU", {}),
    "RNN_TANH": ("RNN", {"nonlinearity": "tanh"}),
    "RNN_RELU": ("RNN", {"nonlinearity": "relu"}),
}
CELL_KINDS = {
    "LSTMCell": ("LSTMCell", {}),
    "GRUCell": ("GRUCell", {}),
    "RNNCell_TANH": ("RNNCell", {"nonlinearity": "tanh"}),
    "RNNCell_RELU": ("RNNCell", {"nonlinearity": "relu"}),
}


def make_pair(cls_name, dtype=torch.float64, **kwargs):
    """A torch.nn module and an rnnkit one holding the same weights."""
    ref = getattr(nn, cls_name)(dtype=dtype, **kwargs)
    mine = getattr(rnnkit, cls_name)(dtype=dtype, **kwargs)
    mine.load_state_dict(ref.state_dict(), strict=True)
    return ref, mine


def flat_outputs(result):
    """The tensors a module call returns, PackedSequence data included, in order."""
    if isinstance(result, torch.Tensor):
        return [result]
    out = []
    for item in result:
        if isinstance(item, PackedSequence):
            out.append(item.data)
        elif isinstance(item, (tuple, list)):
            out.extend(item)
        else:
            out.append(item)
    return out


@contextlib.contextmanager
def engine_calls():
    """The engine strategies that ran in the block (rnnkit.record_strategies): a
    module that ran torch.nn's forward instead runs none."""
    with rnnkit.record_strategies() as ran:
        yield ran


def compare(ref, mine, inputs, call, dtype=torch.float64):
    """Run call(module, inputs) on both modules with separate copies of the leaf
    tensors in inputs (None allowed); compare outputs, then the gradients of
    every input leaf and every parameter under the same random upstream
    gradients. rnnkit's side must run on rnnkit's engine. Returns both results
    for extra checks."""
    tol = TOL[dtype]
    ref_inputs = [None if t is None else t.detach().clone().requires_grad_(t.requires_grad)
                  for t in inputs]
    ref_result = call(ref, ref_inputs)
    with engine_calls() as calls:
        my_result = call(mine, inputs)
    assert calls, "rnnkit ran torch.nn's forward, not its engine"
    ref_out, my_out = flat_outputs(ref_result), flat_outputs(my_result)
    assert len(ref_out) == len(my_out)
    for i, (a, b) in enumerate(zip(my_out, ref_out)):
        assert a.dtype == b.dtype, f"output {i}: dtype {a.dtype} vs {b.dtype}"
        torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"output {i}: {m}")

    ref_names = [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in mine.named_parameters()] == ref_names
    upstream = [torch.randn_like(o) for o in ref_out]

    def grads(module, leaves, outs):
        wrt = [t for t in leaves if t is not None and t.requires_grad] + list(module.parameters())
        loss = sum((o * g).sum() for o, g in zip(outs, upstream))
        return torch.autograd.grad(loss, wrt, allow_unused=True)

    names = [f"input{i}" for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    names += ref_names
    for name, a, b in zip(names, grads(mine, inputs, my_out), grads(ref, ref_inputs, ref_out)):
        assert (a is None) == (b is None), f"grad of {name}: {a} vs {b}"
        if a is not None:
            torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"grad of {name}: {m}")
    return ref_result, my_result


def seq_call(module, inputs):
    x, h0, c0 = inputs
    if h0 is None:
        return module(x)
    return module(x, (h0, c0) if c0 is not None else h0)


def make_seq_inputs(kind, T, B, I, H, P, layers, bidirectional, batch_first, given_h0, dtype,
                    batched=True):
    D = 2 if bidirectional else 1
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    h0 = torch.randn(layers * D, B, P or H, dtype=dtype) if given_h0 else None
    c0 = torch.randn(layers * D, B, H, dtype=dtype) if given_h0 and kind == "LSTM" else None
    if not batched:  # unbatched: drop the batch dimension
        x = x[0] if batch_first else x[:, 0]
        h0 = None if h0 is None else h0[:, 0]
        c0 = None if c0 is None else c0[:, 0]
    return [None if t is None else t.requires_grad_() for t in (x, h0, c0)]


# ---- the generated grid of sequence-module configurations ------------------------

SIZES = list(itertools.product((1, 3, 7), (1, 3), (3, 5, 17), (3, 5, 17)))  # T, B, I, H


def _seq_grid():
    configs = []
    for kind in SEQ_KINDS:
        for layers, bidirectional, batch_first, bias, with_proj, given_h0 in itertools.product(
                (1, 2, 3), (False, True), (False, True), (True, False),
                (False, True) if kind == "LSTM" else (False,), (False, True)):
            for _ in range(2):  # two size picks per structural configuration
                i = len(configs)
                T, B, I, H = SIZES[(i * 7) % len(SIZES)]  # a fixed spread over all sizes
                P = max(1, H // 2) if with_proj else 0
                dtype = torch.float32 if i % 4 == 1 else torch.float64
                cfg = dict(kind=kind, layers=layers, bidirectional=bidirectional,
                           batch_first=batch_first, bias=bias, P=P, given_h0=given_h0,
                           T=T, B=B, I=I, H=H, dtype=dtype)
                name = (f"{kind}-L{layers}{'-bi' if bidirectional else ''}"
                        f"{'-bf' if batch_first else ''}{'' if bias else '-nobias'}"
                        f"{f'-proj{P}' if P else ''}{'-h0' if given_h0 else ''}"
                        f"-T{T}B{B}I{I}H{H}-{str(dtype)[6:]}")
                configs.append(pytest.param(cfg, id=name))
    return configs


SEQ_GRID = _seq_grid()


@pytest.mark.parametrize("cfg", SEQ_GRID)
def test_sequence_grid(cfg):
    cls_name, extra = SEQ_KINDS[cfg["kind"]]
    kwargs = dict(input_size=cfg["I"], hidden_size=cfg["H"], num_layers=cfg["layers"],
                  bias=cfg["bias"], batch_first=cfg["batch_first"],
                  bidirectional=cfg["bidirectional"], **extra)
    if cfg["P"]:
        kwargs["proj_size"] = cfg["P"]
    ref, mine = make_pair(cls_name, cfg["dtype"], **kwargs)
    inputs = make_seq_inputs(cfg["kind"], cfg["T"], cfg["B"], cfg["I"], cfg["H"], cfg["P"],
                             cfg["layers"], cfg["bidirectional"], cfg["batch_first"],
                             cfg["given_h0"], cfg["dtype"])
    compare(ref, mine, inputs, seq_call, cfg["dtype"])


def test_grid_is_big():
    assert len(SEQ_GRID) == 480


# ---- input layouts ---------------------------------------------------------------

@pytest.mark.parametrize("kind", SEQ_KINDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("given_h0", [False, True])
def test_unbatched(kind, batch_first, given_h0):
    cls_name, extra = SEQ_KINDS[kind]
    P = 2 if kind == "LSTM" else 0
    kwargs = dict(proj_size=P) if P else {}
    ref, mine = make_pair(cls_name, input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                          batch_first=batch_first, **kwargs, **extra)
    inputs = make_seq_inputs(kind, 4, 1, 3, 5, P, 2, True, batch_first, given_h0, torch.float64,
                             batched=False)
    ref_result, my_result = compare(ref, mine, inputs, seq_call)
    assert my_result[0].shape == ref_result[0].shape == (4, 2 * (P or 5))


@pytest.mark.parametrize("kind", SEQ_KINDS)
def test_non_contiguous_inputs(kind):
    cls_name, extra = SEQ_KINDS[kind]
    ref, mine = make_pair(cls_name, input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                          **extra)
    # x: every other time step of a wider tensor, with features strided; h0/c0 transposed views.
    base = torch.randn(10, 3, 6, dtype=torch.float64, requires_grad=True)
    h_base = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    c_base = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)

    def call(module, leaves):
        b, hb, cb = leaves
        x = b[::2, :, ::2]
        h0 = hb.transpose(0, 1)
        assert not x.is_contiguous() and not h0.is_contiguous()
        return module(x, (h0, cb.transpose(0, 1)) if kind == "LSTM" else h0)

    compare(ref, mine, [base, h_base, c_base if kind == "LSTM" else None], call)


def _lengths(B, T, sorted_):
    lengths = torch.randint(1, T + 1, (B,))
    lengths[random.randrange(B)] = T  # one full-length sequence
    if sorted_:
        lengths = lengths.sort(descending=True).values
    return lengths


PACKED_GRID = [
    pytest.param(kind, layers, bidirectional, enforce_sorted, given_h0, batch_first,
                 id=f"{kind}-L{layers}{'-bi' if bidirectional else ''}"
                    f"{'-sorted' if enforce_sorted else '-unsorted'}{'-h0' if given_h0 else ''}"
                    f"{'-bf' if batch_first else ''}")
    for kind in ("LSTM", "LSTM_PROJ", "GRU", "RNN_TANH", "RNN_RELU")
    for layers, bidirectional in ((1, False), (1, True), (3, True))
    for enforce_sorted in (True, False)
    for given_h0 in (False, True)
    for batch_first in ((False,) if given_h0 else (False, True))
]


@pytest.mark.parametrize("kind,layers,bidirectional,enforce_sorted,given_h0,batch_first",
                         PACKED_GRID)
def test_packed(kind, layers, bidirectional, enforce_sorted, given_h0, batch_first):
    P = 3 if kind == "LSTM_PROJ" else 0
    kind = "LSTM" if kind == "LSTM_PROJ" else kind
    cls_name, extra = SEQ_KINDS[kind]
    if P:
        extra = dict(extra, proj_size=P)
    T, B, I, H = 7, 5, 3, 5
    ref, mine = make_pair(cls_name, input_size=I, hidden_size=H, num_layers=layers,
                          bidirectional=bidirectional, batch_first=batch_first, **extra)
    x, h0, c0 = make_seq_inputs(kind, T, B, I, H, P, layers, bidirectional, batch_first, given_h0,
                                torch.float64)
    lengths = _lengths(B, T, enforce_sorted)

    def call(module, leaves):
        x, h0, c0 = leaves
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first,
                                      enforce_sorted=enforce_sorted)
        return seq_call(module, [packed, h0, c0])

    ref_result, my_result = compare(ref, mine, [x, h0, c0], call)
    a, b = my_result[0], ref_result[0]
    assert isinstance(a, PackedSequence)
    assert torch.equal(a.batch_sizes, b.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        ia, ib = getattr(a, name), getattr(b, name)
        assert (ia is None and ib is None) or torch.equal(ia, ib), name


def test_packed_final_state_is_each_sequences_last_step():
    """Independent of torch.nn: run each sequence alone and compare."""
    m = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    lengths = torch.tensor([2, 5, 1, 4])
    seqs = [torch.randn(int(n), 3, dtype=torch.float64) for n in lengths]
    packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    out, (h, c) = m(packed)
    padded, out_lengths = nn.utils.rnn.pad_packed_sequence(out)
    assert torch.equal(out_lengths, lengths)
    for b, s in enumerate(seqs):
        y1, (h1, c1) = m(s)
        torch.testing.assert_close(padded[: len(s), b], y1)
        assert not padded[len(s):, b].any()  # zero past the sequence's end
        torch.testing.assert_close(h[:, b], h1)
        torch.testing.assert_close(c[:, b], c1)


# ---- dropout, training and eval ------------------------------------------------------

def test_dropout_changes_outputs_in_training_only():
    m = rnnkit.LSTM(3, 8, num_layers=3, dropout=0.5, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    m.train()
    y1, _ = m(x)
    y2, _ = m(x)
    assert not torch.allclose(y1, y2)
    m.eval()
    y3, _ = m(x)
    y4, _ = m(x)
    assert torch.equal(y3, y4)
    ref = nn.LSTM(3, 8, num_layers=3, dropout=0.5, dtype=torch.float64).eval()
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(y3, ref(x)[0], **TOL[torch.float64])


@pytest.mark.parametrize("kind", SEQ_KINDS)
@pytest.mark.parametrize("packed", [False, True])
def test_dropout_one_matches_torch_in_training(kind, packed):
    # p=1 zeroes every layer output but the last, deterministically, so torch.nn
    # and rnnkit must agree exactly even in training mode.
    cls_name, extra = SEQ_KINDS[kind]
    ref, mine = make_pair(cls_name, input_size=3, hidden_size=4, num_layers=2, dropout=1.0,
                          bidirectional=True, **extra)
    ref.train(), mine.train()
    lengths = _lengths(3, 5, sorted_=False)

    def call(module, leaves):
        x, h0, c0 = leaves
        if packed:
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        return seq_call(module, [x, h0, c0])

    compare(ref, mine, make_seq_inputs(kind, 5, 3, 3, 4, 0, 2, True, False, True, torch.float64),
            call)


def test_parametrized_weight_is_used():
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    ref, mine = make_pair("GRU", input_size=3, hidden_size=4, num_layers=2)
    for m in (ref, mine):
        nn.utils.parametrize.register_parametrization(m, "weight_hh_l1", Double())
    compare(ref, mine, make_seq_inputs("GRU", 5, 2, 3, 4, 0, 2, False, False, True,
                                       torch.float64), seq_call)


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "RNN"])
def test_dropout_warning_with_one_layer(cls_name):
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        getattr(nn, cls_name)(3, 4, dropout=0.3)
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        getattr(rnnkit, cls_name)(3, 4, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(rnnkit, cls_name)(3, 4, num_layers=2, dropout=0.3)


@pytest.mark.parametrize("kind", SEQ_KINDS)
def test_backward_in_eval_mode(kind):
    cls_name, extra = SEQ_KINDS[kind]
    ref, mine = make_pair(cls_name, input_size=3, hidden_size=5, num_layers=2, bidirectional=True,
                          dropout=0.5, **extra)
    ref.eval(), mine.eval()
    compare(ref, mine, make_seq_inputs(kind, 6, 3, 3, 5, 0, 2, True, False, True, torch.float64),
            seq_call)


def test_no_grad_and_inference_mode():
    ref, mine = make_pair("LSTM", input_size=3, hidden_size=5, num_layers=2)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mine(x)[0], ref(x)[0], **TOL[torch.float64])
    with torch.inference_mode():
        torch.testing.assert_close(mine(x)[0], ref(x)[0], **TOL[torch.float64])


def test_gradcheck_lstm_two_layer_bidirectional_projection():
    m = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)

    def f(x, h0, c0, *params):
        y, (h, c) = torch.func.functional_call(m, dict(zip(names, params)), (x, (h0, c0)))
        return y, h, c

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params))


def test_gradcheck_packed_gru():
    m = rnnkit.GRU(2, 3, num_layers=2, bidirectional=True, dtype=torch.float64)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])

    def f(x, h0, *params):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        y, h = torch.func.functional_call(m, dict(zip(names, params)), (packed, h0))
        return y.data, h

    assert torch.autograd.gradcheck(f, (x, h0, *params))


# ---- module surface: parameters, state_dict, copies, repr ---------------------------------

SURFACE_CONFIGS = [
    ("LSTM", dict(input_size=3, hidden_size=5)),
    ("LSTM", dict(input_size=3, hidden_size=5, num_layers=2, bias=False, bidirectional=True,
                  proj_size=2, batch_first=True, dropout=0.25)),
    ("LSTM", dict(input_size=3, hidden_size=5, num_layers=3, proj_size=4)),
    ("GRU", dict(input_size=4, hidden_size=3, num_layers=2, bidirectional=True)),
    ("GRU", dict(input_size=4, hidden_size=3, bias=False, batch_first=True)),
    ("RNN", dict(input_size=2, hidden_size=3, nonlinearity="relu", num_layers=2, dropout=0.1)),
    ("RNN", dict(input_size=2, hidden_size=3, bias=False, bidirectional=True)),
    ("LSTMCell", dict(input_size=3, hidden_size=5)),
    ("LSTMCell", dict(input_size=3, hidden_size=5, bias=False)),
    ("GRUCell", dict(input_size=3, hidden_size=4, bias=False)),
    ("RNNCell", dict(input_size=3, hidden_size=4, nonlinearity="relu")),
    ("RNNCell", dict(input_size=3, hidden_size=4, bias=False)),
]
SURFACE_IDS = [f"{c}-{i}" for i, (c, _) in enumerate(SURFACE_CONFIGS)]


@pytest.mark.parametrize("cls_name,kwargs", SURFACE_CONFIGS, ids=SURFACE_IDS)
def test_parameters_repr_and_init_match_torch(cls_name, kwargs):
    seed = torch.initial_seed()
    torch.manual_seed(seed)
    ref = getattr(nn, cls_name)(**kwargs)
    torch.manual_seed(seed)
    mine = getattr(rnnkit, cls_name)(**kwargs)
    assert repr(mine) == repr(ref)
    ref_sd, my_sd = ref.state_dict(), mine.state_dict()
    assert list(my_sd) == list(ref_sd)
    for name in ref_sd:
        assert my_sd[name].shape == ref_sd[name].shape, name
        # Same registration order and the same init draws: identical values.
        assert torch.equal(my_sd[name], ref_sd[name]), name
    bound = 1 / kwargs["hidden_size"] ** 0.5
    assert all(p.abs().max() <= bound for p in mine.parameters())
    for attr in ("bias_ih_l0", "bias_hh_l0", "weight_hr_l0", "bias_ih", "bias_hh",
                 "weight_ih_l1_reverse", "input_size", "hidden_size", "num_layers", "bias",
                 "batch_first", "dropout", "bidirectional", "proj_size", "mode", "nonlinearity"):
        assert hasattr(mine, attr) == hasattr(ref, attr), attr
        if hasattr(ref, attr):
            a, b = getattr(mine, attr), getattr(ref, attr)
            assert (a is None) == (b is None) and (a is None or type(a) is type(b)), attr
            if not isinstance(a, torch.Tensor):
                assert a == b, attr
    if not cls_name.endswith("Cell"):
        assert mine._flat_weights_names == ref._flat_weights_names
        assert [[w.shape for w in ws] for ws in mine.all_weights] == \
            [[w.shape for w in ws] for ws in ref.all_weights]
        assert all(a is b for a, b in zip(mine._flat_weights, mine.parameters()))
        mine.flatten_parameters()
    mine.reset_parameters()
    assert not torch.equal(next(mine.parameters()), next(ref.parameters()))


@pytest.mark.parametrize("cls_name,kwargs", SURFACE_CONFIGS, ids=SURFACE_IDS)
def test_state_dict_round_trip_both_ways(cls_name, kwargs):
    kwargs = dict(kwargs, dropout=0.0) if "dropout" in kwargs else kwargs
    ref = getattr(nn, cls_name)(**kwargs, dtype=torch.float64)
    mine = getattr(rnnkit, cls_name)(**kwargs, dtype=torch.float64)
    ref.load_state_dict(mine.state_dict(), strict=True)  # rnnkit -> torch.nn
    back = getattr(rnnkit, cls_name)(**kwargs, dtype=torch.float64)
    back.load_state_dict(ref.state_dict(), strict=True)  # torch.nn -> rnnkit
    for a, b in zip(back.state_dict().values(), mine.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(2, kwargs["input_size"], dtype=torch.float64)
    if not cls_name.endswith("Cell"):
        x = x.unsqueeze(1)
    ra, rb = flat_outputs(ref(x)), flat_outputs(back(x))
    for a, b in zip(rb, ra):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


def _outputs_equal(m1, m2, x):
    for a, b in zip(flat_outputs(m1(x)), flat_outputs(m2(x))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


TORCH_BASES = {"LSTM": nn.RNNBase, "GRU": nn.RNNBase, "RNN": nn.RNNBase,
               "LSTMCell": nn.RNNCellBase, "GRUCell": nn.RNNCellBase, "RNNCell": nn.RNNCellBase}


@pytest.mark.parametrize("cls_name", TORCH_BASES)
def test_is_the_torch_nn_class(cls_name):
    m = getattr(rnnkit, cls_name)(3, 4)
    assert isinstance(m, getattr(nn, cls_name)) and isinstance(m, TORCH_BASES[cls_name])
    # ... and torch.nn's settings with it
    assert vars(m).keys() == vars(getattr(nn, cls_name)(3, 4)).keys()


def test_code_that_walks_a_model_for_its_rnns_finds_rnnkits():
    """An initialiser written for torch.nn (isinstance on the torch.nn classes)."""
    model = nn.Sequential(rnnkit.LSTM(3, 4, num_layers=2), nn.Linear(4, 4), rnnkit.GRUCell(4, 4))
    for m in model.modules():
        if isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
            for name, p in m.named_parameters():
                nn.init.zeros_(p) if name.startswith("bias") else nn.init.orthogonal_(p)
    for m in (model[0], model[2]):
        assert all(not p.any() for n, p in m.named_parameters() if n.startswith("bias"))
    w = model[0].weight_hh_l1
    torch.testing.assert_close(w.T @ w, torch.eye(4), atol=1e-5, rtol=0)  # orthogonal columns


# The documented arguments of each constructor, in torch.nn's order.
CONSTRUCTOR_ARGS = {
    "RNN": ["input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
            "dropout", "bidirectional", "device", "dtype"],
    "GRU": ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
            "bidirectional", "device", "dtype"],
    "LSTM": ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
             "bidirectional", "proj_size", "device", "dtype"],
    "RNNCell": ["input_size", "hidden_size", "bias", "nonlinearity", "device", "dtype"],
    "GRUCell": ["input_size", "hidden_size", "bias", "device", "dtype"],
    "LSTMCell": ["input_size", "hidden_size", "bias", "device", "dtype"],
}


@pytest.mark.parametrize("cls_name", CONSTRUCTOR_ARGS)
def test_help_and_type_hints(cls_name):
    cls = getattr(rnnkit, cls_name)
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert f"Drop-in for torch.nn.{cls_name}" in text
    for word in ("input_size", "hidden_size", "Inputs:", "Outputs:"):
        assert word in text, word
    params = inspect.signature(cls).parameters
    assert [p for p in params if p != "kwargs"] == CONSTRUCTOR_ARGS[cls_name]
    assert params["input_size"].annotation is int and params["hidden_size"].annotation is int
    hints = typing.get_type_hints(cls.forward)
    assert {"input", "hx", "return"} <= hints.keys()
    assert cls.forward.__doc__


def test_deepcopy_pickle_and_torch_save():
    m = rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    x = torch.randn(4, 2, 3)
    c = copy.deepcopy(m)
    _outputs_equal(m, c, x)
    with torch.no_grad():
        c.weight_ih_l0.add_(1)
    assert not torch.equal(c.weight_ih_l0, m.weight_ih_l0)  # a real copy
    _outputs_equal(m, pickle.loads(pickle.dumps(m)), x)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    _outputs_equal(m, torch.load(buf, weights_only=False), x)
    cell = rnnkit.GRUCell(3, 4)
    _outputs_equal(cell, pickle.loads(pickle.dumps(copy.deepcopy(cell))), torch.randn(2, 3))


def test_double_and_to():
    ref = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    mine = rnnkit.GRU(3, 4, num_layers=2, bidirectional=True)
    mine.load_state_dict(ref.state_dict())
    ref.double(), mine.double()
    assert all(p.dtype == torch.float64 for p in mine.parameters())
    compare(ref, mine, make_seq_inputs("GRU", 5, 2, 3, 4, 0, 2, True, False, True, torch.float64),
            seq_call)
    mine.to(torch.float32)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(mine(x)[0], ref.float()(x)[0], **TOL[torch.float32])
    cell = rnnkit.LSTMCell(3, 4).double()
    assert cell(torch.randn(2, 3, dtype=torch.float64))[0].dtype == torch.float64


def test_assigning_a_parameter_is_used():
    m = rnnkit.RNN(3, 4)
    ref = nn.RNN(3, 4)
    ref.load_state_dict(m.state_dict())
    new = nn.Parameter(torch.randn(4, 3))
    m.weight_ih_l0 = new
    ref.weight_ih_l0 = nn.Parameter(new.detach().clone())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(m(x)[0], ref(x)[0], **TOL[torch.float32])


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_functional_call(cls_name):
    ref = getattr(nn, cls_name)(3, 4, dtype=torch.float64)
    mine = getattr(rnnkit, cls_name)(3, 4, dtype=torch.float64)
    params = {n: torch.randn_like(p) for n, p in mine.named_parameters()}
    ref.load_state_dict(params)
    x = torch.randn(2, 3, dtype=torch.float64)
    if not cls_name.endswith("Cell"):
        x = x.unsqueeze(0)
    out = flat_outputs(torch.func.functional_call(mine, params, (x,)))
    for a, b in zip(out, flat_outputs(ref(x))):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    # and the module's own parameters are untouched
    assert not torch.equal(next(mine.parameters()), params[next(iter(params))])


# ---- autocast: torch.nn's dtypes and rejections ------------------------------------------

# Every module kind: (class name, constructor kwargs besides input_size=3, hidden_size=5).
EVERY_KIND = {
    "LSTM": ("LSTM", dict(num_layers=2)),
    "LSTM_PROJ": ("LSTM", dict(proj_size=2)),
    "GRU": ("GRU", dict(num_layers=2, bidirectional=True)),
    "RNN_TANH": ("RNN", {}),
    "RNN_RELU": ("RNN", dict(nonlinearity="relu")),
    "LSTMCell": ("LSTMCell", {}),
    "GRUCell": ("GRUCell", {}),
    "RNNCell": ("RNNCell", {}),
}


def _tensor(shape, dtype, device="cpu"):
    if dtype.is_floating_point:
        return torch.randn(shape, device=device).to(dtype)
    return torch.randint(-2, 3, shape, device=device, dtype=dtype)


def kind_call(cls_name, kwargs, x_dtype, state_dtype, device="cpu"):
    """(input, hx) for a module of the kind: batch 2, seq_len 4, input_size 3,
    hidden_size 5; hx None without state_dtype."""
    if cls_name.endswith("Cell"):
        x, shapes = _tensor((2, 3), x_dtype, device), [(2, 5), (2, 5)]
    else:
        layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
        x = _tensor((4, 2, 3), x_dtype, device)
        shapes = [(layers, 2, kwargs.get("proj_size") or 5), (layers, 2, 5)]
    if state_dtype is None:
        return x, None
    states = [_tensor(shape, state_dtype, device) for shape in shapes]
    return x, (tuple(states) if cls_name.startswith("LSTM") else states[0])


def outcome(module, args):
    """What a call does: ("ok", its outputs) or ("raises", the exception)."""
    try:
        return "ok", flat_outputs(module(*args))
    except Exception as error:  # noqa: BLE001  (any exception is an outcome to compare)
        return "raises", error


def assert_same_outcome(ref, mine, args, tol=None, what=""):
    """rnnkit's call does what torch.nn's does: raises an exception of the same
    type (or a subclass), or returns outputs of the same shapes and dtypes and,
    with tol, the same values."""
    (ref_kind, ref_out), (my_kind, my_out) = outcome(ref, args), outcome(mine, args)
    if ref_kind == "raises":
        assert my_kind == "raises", f"{what}: torch.nn raises {ref_out!r}, rnnkit returns"
        assert isinstance(my_out, type(ref_out)), \
            f"{what}: torch.nn raises {ref_out!r}, rnnkit {my_out!r}"
        return ref_out, my_out
    assert my_kind == "ok", f"{what}: torch.nn returns, rnnkit raises {my_out!r}"
    assert [(o.shape, o.dtype, o.device) for o in my_out] == \
        [(o.shape, o.dtype, o.device) for o in ref_out], what
    if tol is not None:
        for a, b in zip(my_out, ref_out):
            if a.device.type != "meta":
                torch.testing.assert_close(a.float(), b.float(), **tol, msg=what)
    return ref_out, my_out


AUTOCAST_INPUT_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64]
AUTOCAST_STATE_DTYPES = [None, torch.float32, torch.float64, torch.bfloat16]


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("kind", EVERY_KIND)
def test_cpu_autocast_follows_torch(kind, weights):
    """Under CPU autocast: torch.nn's output dtypes, and its exception types for
    the inputs it rejects (int64 input, float64 states, ...), for every kind."""
    cls_name, kwargs = EVERY_KIND[kind]
    ref, mine = make_pair(cls_name, weights, input_size=3, hidden_size=5, **kwargs)
    for x_dtype, state_dtype in itertools.product(AUTOCAST_INPUT_DTYPES, AUTOCAST_STATE_DTYPES):
        x, hx = kind_call(cls_name, kwargs, x_dtype, state_dtype)
        args = (x,) if hx is None else (x, hx)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert_same_outcome(ref, mine, args, dict(atol=2e-2, rtol=2e-2),
                                f"input {x_dtype}, states {state_dtype}")


@pytest.mark.parametrize("kind", EVERY_KIND)
def test_cpu_autocast_gradients_match_torch(kind):
    cls_name, kwargs = EVERY_KIND[kind]
    ref, mine = make_pair(cls_name, torch.float32, input_size=3, hidden_size=5, **kwargs)
    x, _ = kind_call(cls_name, kwargs, torch.float32, None)
    grads = []
    for module in (ref, mine):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = flat_outputs(module(leaf))
        sum(o.float().sum() for o in out).backward()
        grads.append([leaf.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


CUDA_AUTOCAST_INPUT_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not rnnkit.built_with_cuda(),
                    reason="needs a CUDA GPU and rnnkit built with CUDA")
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", EVERY_KIND)
def test_cuda_autocast_follows_torch(kind, autocast_dtype):
    """Under CUDA autocast: torch.nn's output dtypes (cuDNN's RNNs run in float16
    whatever the autocast dtype; cells in the autocast dtype), its exception types,
    and its values within the low precision's tolerance; well-formed float32 calls
    run on rnnkit's engine, gradients included."""
    cls_name, kwargs = EVERY_KIND[kind]
    ref, mine = make_pair(cls_name, torch.float32, input_size=3, hidden_size=5, **kwargs)
    ref.cuda(), mine.cuda()
    tol = dict(atol=3e-2, rtol=3e-2) if autocast_dtype == torch.float16 else \
        dict(atol=8e-2, rtol=8e-2)
    for x_dtype, state_dtype in itertools.product(CUDA_AUTOCAST_INPUT_DTYPES,
                                                  AUTOCAST_STATE_DTYPES):
        x, hx = kind_call(cls_name, kwargs, x_dtype, state_dtype, "cuda")
        args = (x,) if hx is None else (x, hx)
        with torch.autocast("cuda", dtype=autocast_dtype):
            assert_same_outcome(ref, mine, args, tol, f"input {x_dtype}, states {state_dtype}")

    x, hx = kind_call(cls_name, kwargs, torch.float32, torch.float32, "cuda")
    grads = []
    for module in (ref, mine):
        leaf = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=autocast_dtype), engine_calls() as calls:
            out = flat_outputs(module(leaf, hx))
        if module is mine:
            assert calls, "rnnkit ran torch.nn's forward under CUDA autocast"
        sum(o.float().sum() for o in out).backward()
        grads.append([leaf.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol)


# ---- cells ----------------------------------------------------------------------------

def _cell_grid():
    configs = []
    for kind, bias, given_hx, batched in itertools.product(CELL_KINDS, (True, False),
                                                           (False, True), (True, False)):
        for j in range(2):
            i = len(configs)
            _, B, I, H = SIZES[(i * 11 + 5) % len(SIZES)]
            dtype = torch.float32 if i % 4 == 1 else torch.float64
            cfg = dict(kind=kind, bias=bias, given_hx=given_hx, batched=batched, B=B, I=I, H=H,
                       dtype=dtype)
            name = (f"{kind}{'' if bias else '-nobias'}{'-hx' if given_hx else ''}"
                    f"{'' if batched else '-unbatched'}-B{B}I{I}H{H}-{str(dtype)[6:]}")
            configs.append(pytest.param(cfg, id=name))
    return configs


CELL_GRID = _cell_grid()


@pytest.mark.parametrize("cfg", CELL_GRID)
def test_cell_grid(cfg):
    cls_name, extra = CELL_KINDS[cfg["kind"]]
    dtype, B, H = cfg["dtype"], cfg["B"], cfg["H"]
    ref, mine = make_pair(cls_name, dtype, input_size=cfg["I"], hidden_size=H, bias=cfg["bias"],
                          **extra)
    lead = (B,) if cfg["batched"] else ()
    x = torch.randn(*lead, cfg["I"], dtype=dtype, requires_grad=True)
    h = torch.randn(*lead, H, dtype=dtype, requires_grad=True) if cfg["given_hx"] else None
    c = torch.randn(*lead, H, dtype=dtype, requires_grad=True) \
        if cfg["given_hx"] and cls_name == "LSTMCell" else None

    def call(module, leaves):
        x, h, c = leaves
        if h is None:
            return module(x)
        return module(x, (h, c) if c is not None else h)

    ref_result, my_result = compare(ref, mine, [x, h, c], call, dtype)
    for a, b in zip(flat_outputs(my_result), flat_outputs(ref_result)):
        assert a.shape == b.shape


# ---- errors: the same exception type as torch.nn -------------------------------------------

CTOR_ERRORS = [
    ("LSTM", (3, 5), dict(dropout=-0.1), ValueError),
    ("LSTM", (3, 5), dict(dropout=1.5), ValueError),
    ("LSTM", (3, 5), dict(dropout=True), ValueError),
    ("GRU", (3, 5), dict(bias=1), TypeError),
    ("GRU", (3, 5), dict(batch_first="yes"), TypeError),
    ("RNN", (3.0, 5), {}, TypeError),
    ("RNN", (0, 5), {}, ValueError),
    ("LSTM", (3, 2.5), {}, TypeError),
    ("LSTM", (3, 0), {}, ValueError),
    ("GRU", (3, 5), dict(num_layers=0), ValueError),
    ("LSTM", (3, 5), dict(proj_size=-1), ValueError),
    ("LSTM", (3, 5), dict(proj_size=5), ValueError),
    ("GRU", (3, 5), dict(proj_size=2), ValueError),
    ("RNN", (3, 5), dict(proj_size=0), ValueError),
    ("RNN", (3, 5), dict(nonlinearity="sigmoid"), ValueError),
    ("RNN", (3, 5, 1, "gelu"), {}, ValueError),
    ("GRU", (3, 5), dict(no_such_arg=1), TypeError),
    ("LSTM", (3,), {}, TypeError),
]


@pytest.mark.parametrize("cls_name,args,kwargs,exc", CTOR_ERRORS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(CTOR_ERRORS)])
def test_constructor_errors(cls_name, args, kwargs, exc):
    with pytest.raises(exc):
        getattr(nn, cls_name)(*args, **kwargs)
    with pytest.raises(exc):
        getattr(rnnkit, cls_name)(*args, **kwargs)


def test_constructor_positional_order():
    for a, b in [(nn.RNN(3, 5, 2, "relu", False, True, 0.0, True),
                  rnnkit.RNN(3, 5, 2, "relu", False, True, 0.0, True)),
                 (nn.LSTM(3, 5, 2, False, True, 0.0, True, 2),
                  rnnkit.LSTM(3, 5, 2, False, True, 0.0, True, 2)),
                 (nn.GRU(3, 5, 2, False, True, 0.0, True),
                  rnnkit.GRU(3, 5, 2, False, True, 0.0, True)),
                 (nn.RNNCell(3, 5, False, "relu"), rnnkit.RNNCell(3, 5, False, "relu")),
                 (nn.LSTMCell(3, 5, False), rnnkit.LSTMCell(3, 5, False)),
                 (nn.GRUCell(3, 5, False), rnnkit.GRUCell(3, 5, False))]:
        assert repr(a) == repr(b)
        assert getattr(a, "nonlinearity", None) == getattr(b, "nonlinearity", None)
        assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]


def _x(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


# (class, constructor kwargs, forward args builder, expected exception)
FORWARD_ERRORS = [
    ("LSTM", {}, lambda: (_x(4, 2, 4),), RuntimeError),                       # input_size
    ("GRU", {}, lambda: (_x(4, 2, 2),), RuntimeError),
    ("RNN", {}, lambda: (_x(4, 2, 3, 3),), ValueError),                       # 4-D input
    ("GRU", {}, lambda: (_x(4),), ValueError),                                # 1-D input
    ("LSTM", {}, lambda: (_x(4, 2, 3, dtype=torch.float64),), ValueError),    # dtype mismatch
    ("GRU", {}, lambda: (_x(4, 2, 3, dtype=torch.float64),), ValueError),
    ("GRU", {}, lambda: (_x(4, 2, 3), _x(1, 3, 5)), RuntimeError),            # hidden batch
    ("RNN", {}, lambda: (_x(4, 2, 3), _x(1, 2, 4)), RuntimeError),            # hidden width
    ("GRU", dict(num_layers=2), lambda: (_x(4, 2, 3), _x(1, 2, 5)), RuntimeError),  # layers
    ("LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(1, 2, 4))), RuntimeError),  # c width
    ("LSTM", dict(proj_size=2), lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(1, 2, 5))), RuntimeError),
    ("GRU", {}, lambda: (_x(4, 2, 3), _x(2, 5)), RuntimeError),               # 2-D hx, batched
    ("RNN", {}, lambda: (_x(4, 3), _x(1, 2, 5)), RuntimeError),               # 3-D hx, unbatched
    ("LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(2, 5))), RuntimeError),
    ("LSTM", {}, lambda: (_x(4, 3), (_x(1, 5), _x(1, 1, 5))), RuntimeError),
    ("GRU", {}, lambda: (_x(4, 2, 3), _x(1, 2, 5, dtype=torch.float64)), RuntimeError),  # hx dtype
    ("LSTMCell", {}, lambda: (_x(2, 4),), RuntimeError),
    ("GRUCell", {}, lambda: (_x(2, 3, 1),), ValueError),
    ("RNNCell", {}, lambda: (_x(2, 3), _x(2, 5, 1)), ValueError),
    ("LSTMCell", {}, lambda: (_x(2, 3), (_x(2, 5), _x(1, 1, 5))), ValueError),
    ("GRUCell", {}, lambda: (_x(2, 3), _x(3, 5)), RuntimeError),              # batch
    ("RNNCell", {}, lambda: (_x(2, 3), _x(2, 6)), RuntimeError),              # width
    ("LSTMCell", {}, lambda: (_x(2, 3), (_x(2, 5), _x(2, 4))), RuntimeError),
    ("GRUCell", {}, lambda: (_x(2, 3, dtype=torch.float64),), RuntimeError),  # dtype
    ("RNNCell", {}, lambda: (_x(2, 3), _x(2, 5, dtype=torch.float64)), RuntimeError),
    ("RNNCell", dict(nonlinearity="gelu"), lambda: (_x(2, 3),), RuntimeError),
    ("LSTMCell", {}, lambda: (_x(3), (_x(2, 5), _x(2, 5))), RuntimeError),    # unbatched, 2-D hx
]


@pytest.mark.parametrize("cls_name,kwargs,args,exc", FORWARD_ERRORS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(FORWARD_ERRORS)])
def test_forward_errors(cls_name, kwargs, args, exc):
    hidden = 5
    inputs = args()
    with pytest.raises(exc):
        getattr(nn, cls_name)(3, hidden, **kwargs)(*inputs)
    with pytest.raises(exc):
        getattr(rnnkit, cls_name)(3, hidden, **kwargs)(*inputs)


def test_packed_errors():
    m = rnnkit.GRU(3, 5)
    packed = nn.utils.rnn.pack_sequence([_x(4, 3), _x(2, 3)])
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        m(packed, _x(1, 3, 5))
    with pytest.raises(RuntimeError, match="input_size"):
        m(nn.utils.rnn.pack_sequence([_x(4, 2), _x(2, 2)]))
    with pytest.raises(ValueError, match="dtype"):
        m(nn.utils.rnn.pack_sequence([_x(4, 3, dtype=torch.float64)]))


# ---- edges: every odd or bad call does what torch.nn does ----------------------------------

def _packed(batch_sizes, rows=5, sorted_indices=None):
    """A hand-made PackedSequence of `rows` rows of 3 features."""
    return PackedSequence(_x(rows, 3), batch_sizes, sorted_indices, sorted_indices)


def _long(*values, dtype=torch.int64):
    return torch.tensor(values, dtype=dtype)


# (id, class, constructor kwargs besides (3, 5), builder of the forward args).
# torch.nn's outcome is the expectation: the same exception type (or a subclass),
# or the same outputs.
EDGE_CASES = [
    # seq_len 0: torch.nn's "Expected sequence length to be larger than 0"
    ("seq-len-0", "LSTM", {}, lambda: (_x(0, 2, 3),)),
    ("seq-len-0-batch-first", "GRU", dict(batch_first=True), lambda: (_x(2, 0, 3),)),
    ("seq-len-0-unbatched", "RNN", {}, lambda: (_x(0, 3),)),
    ("seq-len-0-with-h0", "GRU", {}, lambda: (_x(0, 2, 3), _x(1, 2, 5))),
    # batch 0 is fine
    ("batch-0", "GRU", {}, lambda: (_x(4, 0, 3),)),
    ("batch-0-with-states", "LSTM", {}, lambda: (_x(4, 0, 3), (_x(1, 0, 5), _x(1, 0, 5)))),
    ("cell-batch-0", "LSTMCell", {}, lambda: (_x(0, 3),)),
    # LSTM hx that is not a pair of tensors
    ("lstm-hx-one-tensor", "LSTM", {}, lambda: (_x(4, 2, 3), _x(1, 2, 5))),
    ("lstm-hx-stacked-tensor", "LSTM", {}, lambda: (_x(4, 2, 3), _x(2, 1, 2, 5))),
    ("lstm-hx-0-dim", "LSTM", {}, lambda: (_x(4, 2, 3), torch.tensor(1.0))),
    ("lstm-hx-tuple-of-1", "LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5),))),
    ("lstm-hx-tuple-of-3", "LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5),) * 3)),
    ("lstm-hx-list", "LSTM", {}, lambda: (_x(4, 2, 3), [_x(1, 2, 5), _x(1, 2, 5)])),
    ("lstm-hx-with-None", "LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5), None))),
    ("gru-hx-tuple", "GRU", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5),))),
    ("lstmcell-hx-one-tensor", "LSTMCell", {}, lambda: (_x(2, 3), _x(2, 2, 5))),
    ("lstmcell-hx-tuple-of-1", "LSTMCell", {}, lambda: (_x(2, 3), (_x(2, 5),))),
    ("lstmcell-hx-tuple-of-3", "LSTMCell", {}, lambda: (_x(2, 3), (_x(2, 5),) * 3)),
    ("lstmcell-hx-with-None", "LSTMCell", {}, lambda: (_x(2, 3), (_x(2, 5), None))),
    # hx dims, batch and width
    ("hx-2d-for-batched", "GRU", {}, lambda: (_x(4, 2, 3), _x(2, 5))),
    ("hx-3d-for-unbatched", "RNN", {}, lambda: (_x(4, 3), _x(1, 1, 5))),
    ("hx-0-dim", "GRU", {}, lambda: (_x(4, 2, 3), torch.tensor(1.0))),
    ("c-2d-for-batched", "LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(2, 5)))),
    ("hx-batch", "GRU", {}, lambda: (_x(4, 2, 3), _x(1, 3, 5))),
    ("c-batch", "LSTM", {}, lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(1, 3, 5)))),
    ("hx-layers", "GRU", dict(num_layers=2), lambda: (_x(4, 2, 3), _x(1, 2, 5))),
    ("hx-directions", "RNN", dict(bidirectional=True), lambda: (_x(4, 2, 3), _x(1, 2, 5))),
    ("proj-h-width", "LSTM", dict(proj_size=2), lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(1, 2, 5)))),
    ("input-width", "LSTM", {}, lambda: (_x(4, 2, 4),)),
    ("input-4d", "GRU", {}, lambda: (_x(4, 2, 3, 1),)),
    ("input-1d", "RNN", {}, lambda: (_x(3),)),
    ("input-not-a-tensor", "GRU", {}, lambda: ("text",)),
    ("cell-input-0-dim", "GRUCell", {}, lambda: (torch.tensor(1.0),)),
    ("cell-input-3d", "RNNCell", {}, lambda: (_x(2, 3, 1),)),
    ("cell-hx-3d", "GRUCell", {}, lambda: (_x(2, 3), _x(1, 2, 5))),
    ("cell-unbatched-2d-hx", "GRUCell", {}, lambda: (_x(3), _x(1, 5))),
    ("cell-batched-1d-hx", "RNNCell", {}, lambda: (_x(2, 3), _x(5))),
    ("cell-hx-batch", "LSTMCell", {}, lambda: (_x(2, 3), (_x(2, 5), _x(3, 5)))),
    ("cell-hx-width", "GRUCell", {}, lambda: (_x(2, 3), _x(2, 4))),
    ("cell-input-width", "RNNCell", {}, lambda: (_x(2, 4),)),
    ("cell-unknown-nonlinearity", "RNNCell", dict(nonlinearity="gelu"), lambda: (_x(2, 3),)),
    # dtypes
    ("input-int64", "GRU", {}, lambda: (torch.ones(4, 2, 3, dtype=torch.int64),)),
    ("input-float64", "LSTM", {}, lambda: (_x(4, 2, 3, dtype=torch.float64),)),
    ("input-bfloat16", "RNN", {}, lambda: (_x(4, 2, 3, dtype=torch.bfloat16),)),
    ("h0-float64", "GRU", {}, lambda: (_x(4, 2, 3), _x(1, 2, 5, dtype=torch.float64))),
    ("h0-int64", "RNN", {}, lambda: (_x(4, 2, 3), torch.zeros(1, 2, 5, dtype=torch.int64))),
    ("c0-float64", "LSTM", {},
     lambda: (_x(4, 2, 3), (_x(1, 2, 5), _x(1, 2, 5, dtype=torch.float64)))),
    ("cell-input-int64", "RNNCell", {}, lambda: (torch.ones(2, 3, dtype=torch.int64), _x(2, 5))),
    ("cell-h-float64", "GRUCell", {}, lambda: (_x(2, 3), _x(2, 5, dtype=torch.float64))),
    ("lstmcell-c-float64", "LSTMCell", {},  # torch.nn promotes c' to float64 here
     lambda: (_x(2, 3), (_x(2, 5), _x(2, 5, dtype=torch.float64)))),
    ("lstmcell-c-float16", "LSTMCell", {},
     lambda: (_x(2, 3), (_x(2, 5), _x(2, 5, dtype=torch.float16)))),
    # devices, with meta tensors
    ("input-on-meta", "LSTM", {}, lambda: (_x(4, 2, 3, device="meta"),)),
    ("h0-on-meta", "GRU", {}, lambda: (_x(4, 2, 3), _x(1, 2, 5, device="meta"))),
    ("cell-input-on-meta", "LSTMCell", {}, lambda: (_x(2, 3, device="meta"),)),
    ("module-on-meta", "GRU", dict(device="meta"), lambda: (_x(4, 2, 3, device="meta"),)),
    ("cell-module-on-meta", "RNNCell", dict(device="meta"), lambda: (_x(2, 3, device="meta"),)),
    # layouts
    ("input-expanded", "GRU", {},
     lambda: (_x(4, 1, 3).expand(4, 2, 3), _x(1, 1, 5).expand(1, 2, 5))),
    ("input-transposed", "LSTM", dict(batch_first=True), lambda: (_x(4, 2, 3).transpose(0, 1),)),
    ("cell-input-expanded", "GRUCell", {}, lambda: (_x(1, 3).expand(2, 3), _x(1, 5).expand(2, 5))),
    ("cell-input-transposed", "LSTMCell", {}, lambda: (_x(3, 2).t(), (_x(5, 2).t(), _x(2, 5)))),
    # PackedSequences made by hand
    ("batch-sizes-int32", "GRU", {}, lambda: (_packed(_long(3, 2, dtype=torch.int32)),)),
    ("batch-sizes-int32-with-h0", "GRU", {},
     lambda: (_packed(_long(3, 2, dtype=torch.int32)), _x(1, 3, 5))),
    ("batch-sizes-float", "GRU", {}, lambda: (_packed(torch.tensor([3.0, 2.0])),)),
    ("batch-sizes-increasing", "GRU", {}, lambda: (_packed(_long(2, 3)),)),
    ("batch-sizes-increasing-with-h0", "LSTM", {},
     lambda: (_packed(_long(2, 3)), (_x(1, 2, 5), _x(1, 2, 5)))),
    ("batch-sizes-zero", "GRU", {}, lambda: (_packed(_long(3, 0, 2)),)),
    ("batch-sizes-negative", "RNN", {}, lambda: (_packed(_long(-3, 2)),)),
    ("batch-sizes-longer-than-data", "GRU", {}, lambda: (_packed(_long(3, 3)),)),
    ("batch-sizes-shorter-than-data", "GRU", {}, lambda: (_packed(_long(2, 2)),)),
    ("batch-sizes-empty", "GRU", {}, lambda: (_packed(_long(), rows=0),)),
    ("batch-sizes-2d", "LSTM", {}, lambda: (_packed(_long(3, 2).unsqueeze(0)),)),
    ("packed-data-1d", "GRU", {}, lambda: (PackedSequence(_x(5), _long(3, 2)),)),
    ("packed-hx-batch", "GRU", {}, lambda: (_packed(_long(3, 2)), _x(1, 2, 5))),
    ("packed-sorted-indices-length", "GRU", {},
     lambda: (_packed(_long(3, 2), sorted_indices=_long(0, 1)), _x(1, 3, 5))),
    ("packed-int64-input", "GRU", {},
     lambda: (PackedSequence(torch.ones(5, 3, dtype=torch.int64), _long(3, 2)),)),
    # hidden_size 0 (cells only: the sequence modules reject it when built)
    ("cell-hidden-0", "LSTMCell", dict(hidden_size=0), lambda: (_x(2, 3),)),
    ("cell-hidden-0-with-hx", "GRUCell", dict(hidden_size=0), lambda: (_x(2, 3), _x(2, 0))),
    ("cell-hidden-0-unbatched", "RNNCell", dict(hidden_size=0), lambda: (_x(3),)),
    ("cell-input-0", "RNNCell", dict(input_size=0), lambda: (_x(2, 0),)),
]


# Edge cases the engine itself runs (the others are torch.nn's to decide).
ENGINE_EDGES = {"batch-0", "batch-0-with-states", "cell-batch-0", "lstm-hx-list", "input-expanded",
                "input-transposed", "cell-input-expanded", "cell-input-transposed", "cell-input-0"}


@pytest.mark.parametrize("case,cls_name,kwargs,args", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edges_do_what_torch_does(case, cls_name, kwargs, args):
    """torch.nn's outcome for each odd or bad call: rnnkit raises the same
    exception type (or a subclass), or returns the same outputs."""
    kwargs = dict(dict(input_size=3, hidden_size=5), **kwargs)
    if kwargs.get("device") == "meta":  # no weights to copy
        ref, mine = getattr(nn, cls_name)(**kwargs), getattr(rnnkit, cls_name)(**kwargs)
    else:
        ref, mine = make_pair(cls_name, torch.float32, **kwargs)
    inputs = args()
    with engine_calls() as calls:
        _, my_out = assert_same_outcome(ref, mine, inputs, TOL[torch.float32])
    assert bool(calls) == (case in ENGINE_EDGES)
    if isinstance(my_out, Exception) and isinstance(inputs[0], PackedSequence) \
            and _bad_batch_sizes(inputs[0]):
        assert "batch_sizes" in str(my_out), f"the error does not name batch_sizes: {my_out}"


def _bad_batch_sizes(packed):
    """Whether batch_sizes is malformed (for the rows of packed.data)."""
    b = packed.batch_sizes
    return not (b.dtype == torch.int64 and b.dim() == 1 and b.numel() > 0 and
                bool((b > 0).all()) and bool((b[1:] <= b[:-1]).all()) and
                int(b.sum()) == packed.data.size(0))


def test_edges_cover_what_the_brief_names():
    ids = {c[0] for c in EDGE_CASES}
    for needed in ("seq-len-0", "cell-hidden-0", "lstm-hx-one-tensor", "batch-sizes-int32",
                   "batch-sizes-increasing", "batch-sizes-zero", "batch-sizes-longer-than-data",
                   "input-on-meta", "input-expanded", "batch-0", "h0-float64", "input-int64"):
        assert needed in ids


def test_seq_len_0_raises_torchs_message():
    for m in (rnnkit.LSTM(3, 5), rnnkit.GRU(3, 5, batch_first=True)):
        with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
            m(_x(0, 2, 3) if not m.batch_first else _x(2, 0, 3))


def test_cells_with_hidden_size_0_return_empty_states():
    h, c = rnnkit.LSTMCell(3, 0)(_x(4, 3))
    assert h.shape == c.shape == (4, 0)
    assert rnnkit.GRUCell(3, 0)(_x(3)).shape == (0,)


# ---- CUDA (skipped without a GPU and a CUDA build) -------------------------------------------

def _has_cuda():
    built = rnnkit.built_with_cuda
    return torch.cuda.is_available() and (built() if callable(built) else bool(built))


@pytest.mark.cuda
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and rnnkit built with CUDA")
@pytest.mark.parametrize("kind", ["LSTM_PROJ", "GRU", "RNN_RELU"])
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_matches_torch(kind, packed):
    P = 3 if kind == "LSTM_PROJ" else 0
    kind = "LSTM" if P else kind
    cls_name, extra = SEQ_KINDS[kind]
    if P:
        extra = dict(extra, proj_size=P)
    ref, mine = make_pair(cls_name, input_size=5, hidden_size=17, num_layers=2,
                          bidirectional=True, **extra)
    ref.cuda(), mine.cuda()
    inputs = [None if t is None else t.detach().cuda().requires_grad_()
              for t in make_seq_inputs(kind, 7, 3, 5, 17, P, 2, True, False, True, torch.float64)]
    lengths = _lengths(3, 7, sorted_=False)

    def call(module, leaves):
        x, h0, c0 = leaves
        if packed:
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        return seq_call(module, [x, h0, c0])

    compare(ref, mine, inputs, call)


# ---- torch.compile ---------------------------------------------------------------------------

class _Tagger(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(3, 6)
        self.rnn = rnnkit.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=batch_first)
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        y, (h, c) = self.rnn(torch.tanh(self.embed(x)))
        return self.head(y), h.sum(0), c.sum(0)


# batch_first hands the first layer a transposed (non-contiguous) input.
@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_compile_fullgraph_matches_eager(batch_first):
    torch._dynamo.reset()
    model = _Tagger(batch_first)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(3, 7, 3, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    out_eager = model(x)
    out_compiled = compiled(x2)
    for a, b in zip(out_compiled, out_eager):
        torch.testing.assert_close(a, b, **TOL[torch.float32])
    upstream = [torch.randn_like(o) for o in out_eager]
    params = list(model.parameters())
    g_eager = torch.autograd.grad(sum((o * g).sum() for o, g in zip(out_eager, upstream)),
                                  [x] + params)
    g_compiled = torch.autograd.grad(sum((o * g).sum() for o, g in zip(out_compiled, upstream)),
                                     [x2] + params)
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b, **TOL[torch.float32])
