"""Randomized differential tests against torch.nn, drawn by hypothesis.

Each example draws a module configuration (mode, sizes down to 1, layers,
directions, bias, projection, batch_first, packed with unsorted lengths or
unbatched input, dtype, contiguity of the inputs, whether hx is given) and
compares the outputs, final states and the gradients of the input, h0, c0 and
every parameter with torch.nn in float64 on the same (rounded) weights and
inputs. A second test runs gradgradcheck on small drawn configurations.
Bounded to about a minute; a failure prints the drawn example to replay it.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

from reference import MODES, assert_close, module_pair

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
]

F64 = torch.float64
FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def sequence_configs(draw):
    mode = draw(st.sampled_from(MODES))
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    H = draw(st.integers(1, 6))
    layout = draw(st.sampled_from(["padded", "packed", "unbatched"]))
    return dict(
        mode=mode, T=T, B=1 if layout == "unbatched" else B, I=draw(st.integers(1, 5)), H=H,
        num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
        bias=draw(st.booleans()), batch_first=draw(st.booleans()),
        proj_size=draw(st.integers(0, H - 1)) if mode == "LSTM" else 0,
        layout=layout,
        lengths=draw(st.lists(st.integers(1, T), min_size=B, max_size=B)),
        dtype=draw(st.sampled_from([F64, torch.float32])),
        contiguous=draw(st.booleans()), with_hx=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def strided(shape, dtype, contiguous):
    """A random tensor of shape; when not contiguous, a view of its first two
    dimensions swapped with gaps between elements (which still counts as
    contiguous where those dimensions have size 1)."""
    if contiguous or len(shape) < 2:
        return torch.randn(shape, dtype=dtype)
    swapped = [shape[1], shape[0], *shape[2:]]
    swapped[-1] *= 2
    return torch.randn(swapped, dtype=dtype)[..., ::2].transpose(0, 1)


def rounded_pair(name, dtype, **kwargs):
    """torch.nn in float64 and rnnkit in dtype, on weights that dtype holds exactly."""
    ref, mine = module_pair(name, F64, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(dtype))
    return ref, mine.to(dtype)


def compare(ref, mine, call, inputs, dtype, what):
    """call(module, *inputs) -> output tensors, on both modules: outputs and
    the gradients of every input and parameter under the same upstream."""
    mine_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    ref_inputs = [t.detach().to(F64).requires_grad_() for t in inputs]
    got_out, want_out = call(mine, *mine_inputs), call(ref, *ref_inputs)
    upstream = [torch.randn_like(o) for o in want_out]
    got_loss = sum((o * u.to(dtype)).sum() for o, u in zip(got_out, upstream))
    want_loss = sum((o * u).sum() for o, u in zip(want_out, upstream))
    got = list(got_out) + list(torch.autograd.grad(got_loss, mine_inputs + list(mine.parameters())))
    want = list(want_out) + list(torch.autograd.grad(want_loss,
                                                     ref_inputs + list(ref.parameters())))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g.to(F64), w, dtype, f"{what}: tensor {i}")


def sequence_shapes(c):
    """Shapes of the input, then (when hx is given) h0 and c0."""
    T, B, I = c["T"], c["B"], c["I"]
    unbatched = c["layout"] == "unbatched"
    shapes = [(T, I) if unbatched else ((B, T, I) if c["batch_first"] else (T, B, I))]
    if c["with_hx"]:
        layers = c["num_layers"] * (2 if c["bidirectional"] else 1)
        batch = () if unbatched else (B,)
        shapes.append((layers, *batch, c["proj_size"] or c["H"]))
        shapes += [(layers, *batch, c["H"])] if c["mode"] == "LSTM" else []
    return shapes


def sequence_module_kwargs(c):
    kwargs = dict(input_size=c["I"], hidden_size=c["H"], num_layers=c["num_layers"], bias=c["bias"],
                  batch_first=c["batch_first"], bidirectional=c["bidirectional"])
    return dict(kwargs, proj_size=c["proj_size"]) if c["mode"] == "LSTM" else kwargs


def sequence_call(config):
    """call(module, x, *states, params=None) -> output tensors (packed data for
    packed input); params replace the module's own (torch.func.functional_call)."""
    c = config

    def call(module, x, *states, params=None):
        if c["layout"] == "packed":
            x = pack_padded_sequence(x, torch.tensor(c["lengths"]), batch_first=c["batch_first"],
                                     enforce_sorted=False)
        hx = None if not states else (tuple(states) if len(states) == 2 else states[0])
        out, state = module(x, hx) if params is None else \
            torch.func.functional_call(module, params, (x, hx))
        out = out.data if c["layout"] == "packed" else out
        return (out,) + (state if isinstance(state, tuple) else (state,))
    return call


@settings(FUZZ, max_examples=250)
@given(sequence_configs())
def test_modules_match_torch(config):
    c = config
    torch.manual_seed(c["seed"])
    ref, mine = rounded_pair(c["mode"], c["dtype"], **sequence_module_kwargs(c))
    inputs = [strided(shape, c["dtype"], c["contiguous"]) for shape in sequence_shapes(c)]
    compare(ref, mine, sequence_call(c), inputs, c["dtype"], str(c))


@settings(FUZZ, max_examples=150)
@given(name=st.sampled_from(["LSTMCell", "GRUCell", "RNNCell"]), B=st.integers(1, 5),
       I=st.integers(1, 6), H=st.integers(1, 7), bias=st.booleans(), relu=st.booleans(),
       batched=st.booleans(), with_hx=st.booleans(), contiguous=st.booleans(),
       dtype=st.sampled_from([F64, torch.float32]), seed=st.integers(0, 2**31 - 1))
def test_cells_match_torch(name, B, I, H, bias, relu, batched, with_hx, contiguous, dtype, seed):
    torch.manual_seed(seed)
    kwargs = dict(nonlinearity="relu" if relu else "tanh") if name == "RNNCell" else {}
    ref, mine = rounded_pair(name, dtype, input_size=I, hidden_size=H, bias=bias, **kwargs)
    batch = (B,) if batched else ()
    inputs = [strided((*batch, I), dtype, contiguous)]
    if with_hx:
        states = 2 if name == "LSTMCell" else 1
        inputs += [strided((*batch, H), dtype, contiguous) for _ in range(states)]

    def call(module, x, *states):
        out = module(x, (tuple(states) if len(states) == 2 else states[0]) if states else None)
        return out if isinstance(out, tuple) else (out,)
    compare(ref, mine, call, inputs, dtype, f"{name} B={B} I={I} H={H} bias={bias} {kwargs}")


@settings(FUZZ, max_examples=15)
@given(sequence_configs())
def test_gradgradcheck_small(config):
    c = dict(config, T=min(config["T"], 3), I=min(config["I"], 2), H=min(config["H"], 2),
             dtype=F64, with_hx=True)
    c["proj_size"] = min(c["proj_size"], c["H"] - 1)
    c["lengths"] = [min(n, c["T"]) for n in c["lengths"]]
    torch.manual_seed(c["seed"])
    _, mine = module_pair(c["mode"], F64, **sequence_module_kwargs(c))
    names = [n for n, _ in mine.named_parameters()]
    inputs = [torch.randn(shape, dtype=F64, requires_grad=True) for shape in sequence_shapes(c)]
    call = sequence_call(c)

    def fn(*tensors):
        return call(mine, *tensors[:len(inputs)], params=dict(zip(names, tensors[len(inputs):])))

    params = [p.detach().clone().requires_grad_() for p in mine.parameters()]
    assert torch.autograd.gradgradcheck(fn, inputs + params, fast_mode=True)
