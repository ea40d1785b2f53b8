"""The modules' common call in C++ (rnnkit._C._cell_call and _sequence_call,
csrc/common_call.cpp) against the Python forward it stands in front of: the
same numbers and gradients, bit for bit, where it takes a call, and None (so
that Python decides, as before) for everything it must not take."""
import threading

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import rnnkit
from rnnkit import _C
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.modules import _EngineCell, _EngineSequence, _engine_mode

CELLS = ["LSTMCell", "GRUCell", "RNNCell", "RNNCell-relu"]


def make_pair(name, input_size=5, hidden_size=7, dtype=torch.float32, bias=True):
    cls_name, _, nonlinearity = name.partition("-")
    kwargs = dict(bias=bias, dtype=dtype)
    if nonlinearity:
        kwargs["nonlinearity"] = nonlinearity
    torch.manual_seed(0)
    ref = getattr(nn, cls_name)(input_size, hidden_size, **kwargs)
    mine = getattr(rnnkit, cls_name)(input_size, hidden_size, **kwargs)
    mine.load_state_dict(ref.state_dict())
    return ref, mine


def common_call(module, input, hx=None):
    return _C._cell_call(_engine_mode(module), input, hx, module._parameters, module.input_size,
                         module.hidden_size)


def states(name, lead, hidden, dtype, requires_grad=False):
    def one():
        return torch.randn(*lead, hidden, dtype=dtype, requires_grad=requires_grad)
    return (one(), one()) if name == "LSTMCell" else one()


def flat(out):
    return list(out) if isinstance(out, tuple) else [out]


def assert_python_forward_agrees(engine_class, run, leaves, monkeypatch):
    """run() (the module's outputs as a list) through the C++ common call, then
    with engine_class's common call turned off: the same outputs and gradients
    of every leaf, bit for bit, and the engine ran both times. Returns the
    Python forward's outputs."""
    with rnnkit.record_strategies() as ran:
        fast = run()
    assert ran, "the engine did not run"
    grads_out = [torch.randn_like(o) for o in fast]
    fast_grads = torch.autograd.grad(fast, leaves, grads_out)
    monkeypatch.setattr(engine_class, "_common_call", lambda self, input, hx: None)
    with rnnkit.record_strategies() as ran:
        slow = run()
    assert ran, "the Python forward did not run the engine"
    slow_grads = torch.autograd.grad(slow, leaves, grads_out)
    for a, b in zip(fast + list(fast_grads), slow + list(slow_grads)):
        assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride()
        assert torch.equal(a, b)
    return slow


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("given_hx", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_common_call_is_the_python_forward_bit_for_bit(name, batched, given_hx, bias, dtype,
                                                       monkeypatch):
    _, mine = make_pair(name, dtype=dtype, bias=bias)
    lead = (3,) if batched else ()
    x = torch.randn(*lead, 5, dtype=dtype, requires_grad=True)
    hx = states(name, lead, 7, dtype, requires_grad=True) if given_hx else None
    leaves = [x] + (flat(hx) if given_hx else []) + list(mine.parameters())

    assert common_call(mine, x, hx) is not None  # the C++ call takes it
    slow = assert_python_forward_agrees(_EngineCell, lambda: flat(mine(x, hx)), leaves, monkeypatch)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(flat(mine(x, hx)), slow))


class Subclass(torch.Tensor):
    pass


class NoteDispatch(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class NoteFunctions(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _declined_calls():
    """(id, cell, make (module, input, hx), context): calls the C++ call leaves to Python."""
    def plain(name, **kw):
        def make():
            _, mine = make_pair(name, **kw)
            return mine, torch.randn(3, 5), None
        return make

    def with_input(name, x, hx=None):
        def make():
            _, mine = make_pair(name)
            return mine, x(), (hx() if hx else None)
        return make

    def parametrized():
        _, mine = make_pair("GRUCell")

        class Scale(nn.Module):
            def forward(self, w):
                return 2 * w
        parametrize.register_parametrization(mine, "weight_hh", Scale())
        return mine, torch.randn(3, 5), None

    null = torch.autograd.grad_mode.no_grad  # a context that changes nothing relevant here
    return [
        ("subclass-input", with_input("GRUCell", lambda: torch.randn(3, 5).as_subclass(Subclass)),
         null),
        ("dispatch-mode", plain("LSTMCell"), NoteDispatch),
        ("function-mode", plain("RNNCell"), NoteFunctions),
        ("cpu-autocast", plain("LSTMCell"), lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        ("int-input", with_input("GRUCell", lambda: torch.ones(3, 5, dtype=torch.int64)), null),
        ("mixed-dtypes", with_input("GRUCell", lambda: torch.randn(3, 5, dtype=torch.float64)), null),
        ("wrong-input-size", with_input("RNNCell", lambda: torch.randn(3, 4)), null),
        ("3d-input", with_input("RNNCell", lambda: torch.randn(2, 3, 5)), null),
        ("hx-batch", with_input("GRUCell", lambda: torch.randn(3, 5), lambda: torch.randn(2, 7)), null),
        ("hx-dims", with_input("GRUCell", lambda: torch.randn(3, 5), lambda: torch.randn(7)), null),
        ("hx-width", with_input("GRUCell", lambda: torch.randn(3, 5), lambda: torch.randn(3, 6)), null),
        ("hx-not-a-tensor", with_input("RNNCell", lambda: torch.randn(3, 5), lambda: [torch.randn(3, 7)]),
         null),
        ("lstm-hx-three", with_input("LSTMCell", lambda: torch.randn(3, 5),
                                     lambda: tuple(torch.randn(3, 7) for _ in range(3))), null),
        ("lstm-hx-one", with_input("LSTMCell", lambda: torch.randn(3, 5), lambda: torch.randn(3, 7)),
         null),
        ("parametrized-weight", parametrized, null),
        ("hidden-0", plain("GRUCell", hidden_size=0), null),
        ("meta-input", with_input("RNNCell", lambda: torch.randn(3, 5, device="meta")), null),
    ]


DECLINED = _declined_calls()


@pytest.mark.parametrize("case,make,context", DECLINED, ids=[c[0] for c in DECLINED])
def test_declined_calls_go_on_to_python_and_match_torch(case, make, context):
    mine, x, hx = make()
    with context():
        assert common_call(mine, x, hx) is None
    cls_name = next(c.__name__ for c in type(mine).__mro__ if c.__module__ == "rnnkit.modules")
    ref = getattr(nn, cls_name)(mine.input_size, mine.hidden_size,
                                           bias=mine.bias, **({"nonlinearity": mine.nonlinearity}
                                                              if hasattr(mine, "nonlinearity") else {}))
    if not parametrize.is_parametrized(mine):
        ref.load_state_dict(mine.state_dict())
    else:
        ref.load_state_dict({k: getattr(mine, k).detach() for k in ("weight_ih", "weight_hh",
                                                                      "bias_ih", "bias_hh")})

    def outcome(module):
        try:
            with context():
                return flat(module(x, hx))
        except Exception as e:  # the same kind of error as torch.nn
            return e
    expected, got = outcome(ref), outcome(mine)
    if isinstance(expected, Exception):
        assert isinstance(got, type(expected)), f"{case}: torch.nn raised {expected!r}, rnnkit {got!r}"
        return
    assert not isinstance(got, Exception), f"{case}: rnnkit raised {got!r}"
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
        if a.device.type != "meta":
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


def test_cells_in_python_threads_at_once():
    """The C++ call lets go of the GIL while the step runs: threads stepping
    their own cells at once each get torch.nn's numbers."""
    pairs = [make_pair(name, input_size=32, hidden_size=64) for name in CELLS]
    errors = []

    def run(ref, mine, seed):
        try:
            gen = torch.Generator().manual_seed(seed)
            xs = torch.randn(50, 4, 32, generator=gen)
            h_ref = h_mine = None
            with torch.no_grad():
                for x in xs:
                    h_ref, h_mine = ref(x, h_ref), mine(x, h_mine)
            for a, b in zip(flat(h_mine), flat(h_ref)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(*pairs[i % len(pairs)], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---- sequence modules ------------------------------------------------------------

def sequence_common_call(module, input, hx=None):
    return _C._sequence_call(_engine_mode(module), input, hx, module._parameters,
                             module._all_weights, module.input_size, module.hidden_size,
                             module.proj_size, module.num_layers, module.bidirectional,
                             module.batch_first, module.bias, module.dropout > 0 and module.training)


def make_sequence(name, dtype=torch.float32, **kwargs):
    cls_name, _, nonlinearity = name.partition("-")
    if nonlinearity:
        kwargs["nonlinearity"] = nonlinearity
    torch.manual_seed(0)
    return getattr(rnnkit, cls_name)(5, 7, dtype=dtype, **kwargs)


def flat_sequence(out):
    y, state = out
    return [y] + (list(state) if isinstance(state, tuple) else [state])


SEQUENCE_CASES = [
    # name, constructor arguments, batched, given hx
    ("LSTM", {}, True, True),
    ("LSTM", dict(num_layers=2, bidirectional=True), True, False),
    ("LSTM", dict(proj_size=3, num_layers=2), True, True),
    ("LSTM", dict(batch_first=True, bias=False), False, True),
    ("GRU", dict(num_layers=3, batch_first=True), True, True),
    ("GRU", dict(bidirectional=True), False, False),
    ("RNN", dict(num_layers=2, dropout=0.5), True, True),  # dropout: the module is in eval mode
    ("RNN-relu", dict(bidirectional=True, batch_first=True), True, True),
]


@pytest.mark.parametrize("name,kwargs,batched,given_hx", SEQUENCE_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SEQUENCE_CASES)])
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequence_common_call_is_the_python_forward_bit_for_bit(name, kwargs, batched, given_hx,
                                                                steps, dtype, monkeypatch):
    mine = make_sequence(name, dtype, **kwargs)
    if mine.dropout:
        mine.eval()
    layers = mine.num_layers * (2 if mine.bidirectional else 1)
    width = mine.proj_size or mine.hidden_size
    lead = ((3, steps) if mine.batch_first else (steps, 3)) if batched else (steps,)
    x = torch.randn(*lead, 5, dtype=dtype, requires_grad=True)
    hx = None
    if given_hx:
        state_lead = (layers, 3) if batched else (layers,)
        h = torch.randn(*state_lead, width, dtype=dtype, requires_grad=True)
        hx = (h, torch.randn(*state_lead, 7, dtype=dtype, requires_grad=True)) \
            if name == "LSTM" else h
    leaves = [x] + ([] if hx is None else (list(hx) if isinstance(hx, tuple) else [hx])) \
        + list(mine.parameters())

    assert sequence_common_call(mine, x, hx) is not None  # the C++ call takes it
    assert_python_forward_agrees(_EngineSequence, lambda: flat_sequence(mine(x, hx)), leaves,
                                 monkeypatch)


@pytest.mark.filterwarnings("ignore:dropout option adds dropout")
def test_sequence_declines_what_python_must_decide():
    """None for: a PackedSequence, dropout in training with several layers, Python
    modes, autocast, mixed dtypes, bad shapes, zero steps, a parametrized weight."""
    lstm = make_sequence("LSTM", num_layers=2)
    x = torch.randn(4, 3, 5)
    assert sequence_common_call(lstm, x) is not None
    packed = pack_padded_sequence(x, torch.tensor([4, 3, 2]))
    assert sequence_common_call(lstm, packed) is None
    dropped = make_sequence("GRU", num_layers=2, dropout=0.5)  # in training mode
    assert sequence_common_call(dropped, x) is None
    assert sequence_common_call(make_sequence("GRU", dropout=0.5), x) is not None  # one layer: none drawn
    with NoteDispatch():
        assert sequence_common_call(lstm, x) is None
    with NoteFunctions():
        assert sequence_common_call(lstm, x) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sequence_common_call(lstm, x) is None
    assert sequence_common_call(lstm, x.double()) is None
    assert sequence_common_call(lstm, x.as_subclass(Subclass)) is None
    assert sequence_common_call(lstm, torch.randn(4, 3, 6)) is None
    assert sequence_common_call(lstm, torch.randn(2, 4, 3, 5)) is None
    assert sequence_common_call(lstm, torch.randn(0, 3, 5)) is None
    assert sequence_common_call(lstm, x, torch.randn(2, 3, 7)) is None  # not a pair
    assert sequence_common_call(lstm, x, (torch.randn(2, 3, 7), torch.randn(1, 3, 7))) is None
    assert sequence_common_call(lstm, x, (torch.randn(2, 7), torch.randn(2, 7))) is None  # unbatched hx

    class Scale(nn.Module):
        def forward(self, w):
            return 2 * w
    parametrize.register_parametrization(lstm, "weight_hh_l1", Scale())
    assert sequence_common_call(lstm, x) is None
    ref = nn.LSTM(5, 7, num_layers=2)
    ref.load_state_dict({k: getattr(lstm, k).detach() for k in ref.state_dict()})
    for a, b in zip(flat_sequence(lstm(x)), flat_sequence(ref(x))):
        torch.testing.assert_close(a, b)
