"""Derivatives beyond a first-order backward, against torch.nn holding the same
weights: double backward (gradgradcheck, a gradient penalty, Hessian-vector
products, derivatives in the grad outputs), forward-mode AD and the torch.func
transforms; the paths that must raise rather than give a silently partial
graph; and that none of it touches the plain forward/backward (which never
runs the composite) or torch.compile (which keeps the engine's ops)."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit import cells, composite, ops
from reference import MODES, assert_close, layer_weights, module_pair, torch_layer

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    # said by torch itself when forward AD first loads its decompositions
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
]

F64 = torch.float64
T, B, I, H = 3, 3, 2, 3  # small and odd: gradgradcheck perturbs every element
LENGTHS = [3, 1, 2]      # a packed batch out of order, with a row of one step

# name -> (module kwargs, packed input)
CONFIGS = {
    "one layer": ({}, False),
    "two layers bidirectional": (dict(num_layers=2, bidirectional=True), False),
    "projection": (dict(proj_size=2), False),
    "packed bidirectional": (dict(bidirectional=True), True),
}
SEQUENCES = [(mode, config) for mode in MODES for config in CONFIGS
             if config != "projection" or mode == "LSTM"]
CELLS = [("LSTMCell", {}), ("GRUCell", {}), ("RNNCell", dict(nonlinearity="tanh")),
         ("RNNCell", dict(nonlinearity="relu"))]
CASES = ([pytest.param("seq", mode, config, id=f"{mode}-{config}") for mode, config in SEQUENCES]
         + [pytest.param("cell", name, kw, id=f"{name}-{kw.get('nonlinearity', '')}")
            for name, kw in CELLS])


class Case:
    """A torch.nn module and its rnnkit twin, random inputs (input first, then
    the initial states) and call(module, params, *inputs) -> output tensors."""

    def __init__(self, kind, name, config, device="cpu"):
        self.kind = kind
        if kind == "seq":
            kwargs, self.packed = CONFIGS[config]
            self.ref, self.mine = module_pair(name, input_size=I, hidden_size=H, **kwargs)
            layers = self.ref.num_layers * (2 if self.ref.bidirectional else 1)
            shapes = [(T, B, I), (layers, B, self.ref.proj_size or H)]
            shapes += [(layers, B, H)] if name == "LSTM" else []
        else:
            self.packed = False
            self.ref, self.mine = module_pair(name, input_size=I, hidden_size=H, **config)
            shapes = [(B, I), (B, H)] + ([(B, H)] if name == "LSTMCell" else [])
        self.ref.to(device)
        self.mine.to(device)
        self.inputs = [torch.randn(s, dtype=F64, device=device) for s in shapes]

    def call(self, module, params, x, *states):
        if self.packed:
            # The packing of pack_padded_sequence, as indexing (which every transform knows).
            layout = pack_padded_sequence(torch.arange(T * B).view(T, B), torch.tensor(LENGTHS),
                                          enforce_sorted=False)
            x = layout._replace(data=x.reshape(T * B, -1)[layout.data.to(x.device)])
        result = functional_call(module, params, (x, states if len(states) == 2 else states[0]))
        if self.kind == "cell":  # h, or (h, c)
            return (result,) if isinstance(result, torch.Tensor) else tuple(result)
        out, state = result
        out = out.data if self.packed else out
        return (out,) + (state if isinstance(state, tuple) else (state,))

    def params(self, module):
        return dict(module.named_parameters())

    def outputs(self, module, *inputs):
        return self.call(module, self.params(module), *inputs)

    def both(self):
        return (self.ref, "torch.nn"), (self.mine, "rnnkit")


def leaves(tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def weighted_sum(outputs, weights):
    return sum((o * w).sum() for o, w in zip(outputs, weights))


def assert_all_close(got, want, what):
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        assert g is not None, f"{what}: rnnkit gave no gradient for tensor {i}"
        assert w is not None, f"{what}: torch.nn gave no gradient for tensor {i}"
        assert_close(g, w, F64, f"{what} tensor {i}")


# ---- double backward ---------------------------------------------------------------------

@pytest.mark.parametrize("kind, name, config", CASES)
def test_gradgradcheck(kind, name, config):
    case = Case(kind, name, config)
    names = list(case.params(case.mine))
    n = len(case.inputs)

    def fn(*tensors):
        return case.call(case.mine, dict(zip(names, tensors[n:])), *tensors[:n])

    tensors = leaves(case.inputs) + leaves(case.params(case.mine).values())
    # The full check builds every element's second derivatives; for the larger
    # stacks a random projection of them (fast_mode) finds the same errors sooner.
    fast = sum(t.numel() for t in tensors) > 150
    assert torch.autograd.gradgradcheck(fn, tensors, fast_mode=fast)


def penalty_gradients(case):
    """A WGAN-GP critic's loss, |d out / d x|^2, backward to the inputs and every
    parameter; {"rnnkit": gradients, "torch.nn": gradients}."""
    upstream = [torch.randn_like(o) for o in case.outputs(case.ref, *case.inputs)]
    got = {}
    for module, who in case.both():
        module.zero_grad()
        inputs = leaves(case.inputs)
        loss = weighted_sum(case.outputs(module, *inputs), upstream)
        (grad_x,) = torch.autograd.grad(loss, inputs[0], create_graph=True)
        grad_x.pow(2).sum().backward()
        got[who] = [t.grad for t in inputs] + [p.grad for p in module.parameters()]
    return got


@pytest.mark.parametrize("kind, name, config", CASES)
def test_gradient_penalty_matches_torch(kind, name, config):
    got = penalty_gradients(Case(kind, name, config))
    assert_all_close(got["rnnkit"], got["torch.nn"], "penalty gradients")


@pytest.mark.parametrize("kind, name, config", CASES)
def test_hessian_vector_product_matches_torch(kind, name, config):
    case = Case(kind, name, config)
    upstream = [torch.randn_like(o) for o in case.outputs(case.ref, *case.inputs)]
    vectors = [torch.randn_like(t) for t in case.inputs + list(case.ref.parameters())]
    got = {}
    for module, who in case.both():
        inputs = leaves(case.inputs)
        wrt = inputs + list(module.parameters())
        loss = weighted_sum(case.outputs(module, *inputs), upstream)
        first = torch.autograd.grad(loss, wrt, create_graph=True)
        got[who] = torch.autograd.grad(first, wrt, vectors, allow_unused=True)
    assert_all_close(got["rnnkit"], got["torch.nn"], "Hessian-vector product")


@pytest.mark.parametrize("kind, name, config", CASES)
def test_derivative_in_grad_outputs_matches_torch(kind, name, config):
    """The double-backward trick for a Jacobian-vector product: the vector-
    Jacobian product as a function of its grad outputs u, differentiated in u."""
    case = Case(kind, name, config)
    tangents = [torch.randn_like(t) for t in case.inputs + list(case.ref.parameters())]
    got = {}
    for module, who in case.both():
        inputs = leaves(case.inputs)
        wrt = inputs + list(module.parameters())
        outputs = case.outputs(module, *inputs)
        u = [torch.zeros_like(o, requires_grad=True) for o in outputs]
        vjp_in_u = torch.autograd.grad(outputs, wrt, u, create_graph=True)
        got[who] = torch.autograd.grad(vjp_in_u, u, tangents)
    assert_all_close(got["rnnkit"], got["torch.nn"], "J t by double backward")


@pytest.mark.parametrize("mode", MODES)
def test_tied_biases_get_each_their_own_gradient(mode):
    """One tensor passed as both b_ih and b_hh: the gradient it accumulates is
    the sum of both positions' gradients, also at second order."""
    name = {"LSTM": "LSTMCell", "GRU": "GRUCell"}.get(mode, "RNNCell")
    kwargs = {} if mode in ("LSTM", "GRU") else dict(nonlinearity=mode[4:].lower())
    ref, _ = module_pair(name, input_size=I, hidden_size=H, **kwargs)
    x, h = torch.randn(B, I, dtype=F64), torch.randn(B, H, dtype=F64)
    c = torch.randn(B, H, dtype=F64) if mode == "LSTM" else None
    got = []
    for use_rnnkit in (True, False):
        b = ref.bias_ih.detach().clone().requires_grad_()
        xg = x.clone().requires_grad_()
        if use_rnnkit:
            out = ops.rnn_cell(xg, h, c, ref.weight_ih, ref.weight_hh, b, b, mode)[0]
        else:
            params = dict(weight_ih=ref.weight_ih, weight_hh=ref.weight_hh, bias_ih=b, bias_hh=b)
            out = functional_call(ref, params, (xg, (h, c) if c is not None else h))
            out = out[0] if isinstance(out, tuple) else out
        first = torch.autograd.grad(out.sin().sum(), [xg, b], create_graph=True)
        got.append(list(first) + list(torch.autograd.grad(sum(g.square().sum() for g in first), b)))
    assert_all_close(got[0], got[1], "tied biases")


RAW_CASES = [dict(mode=m) for m in MODES] + [
    dict(mode="LSTM", proj=2, lengths=[3, 1, 2], reverse=True),
    dict(mode="GRU", lengths=[1, 3, 2], reverse=True),
]


@pytest.mark.parametrize("case", RAW_CASES, ids=str)
def test_gradcheck_every_derivative_of_the_op(case):
    """torch's own checks of the raw op: forward AD, vmap over gradients and
    over tangents, reverse-over-reverse and forward-over-reverse."""
    mode, P = case["mode"], case.get("proj") or H
    G = cells.kind(mode).gates * H
    make = lambda *s: torch.randn(*s, dtype=F64, requires_grad=True)  # noqa: E731
    args = [make(T, B, I), make(B, P), make(B, H) if mode == "LSTM" else None, make(G, I),
            make(G, P), make(G), make(G), make(P, H) if case.get("proj") else None]
    given = [i for i, a in enumerate(args) if a is not None]
    lengths = torch.tensor(case["lengths"]) if "lengths" in case else None

    def fn(*tensors):
        full = list(args)
        for i, t in zip(given, tensors):
            full[i] = t
        outputs = ops.rnn_layer(*full, lengths, mode, case.get("reverse", False))
        return tuple(o for o in outputs if o is not None)

    tensors = [args[i] for i in given]
    assert torch.autograd.gradcheck(fn, tensors, check_forward_ad=True, check_batched_grad=True,
                                    check_batched_forward_grad=True)
    assert torch.autograd.gradgradcheck(fn, tensors, check_fwd_over_rev=True,
                                        check_batched_grad=True)


def test_issue_repro_gru_penalty_reaches_every_parameter():
    ref, mine = module_pair("GRU", dtype=torch.float32, input_size=3, hidden_size=5)
    x = torch.randn(4, 2, 3, requires_grad=True)
    for module in (ref, mine):
        (gx,) = torch.autograd.grad(module(x)[0].sum(), x, create_graph=True)
        gx.pow(2).sum().backward()
    for (name, got), want in zip(mine.named_parameters(), ref.parameters()):
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, want.grad, atol=1e-5, rtol=1e-4, msg=name)


# ---- torch.func and forward-mode AD ----------------------------------------------------------
# torch.nn's RNNs do not go through every transform (no batching rule; packed
# input fails under functorch), so the reference is torch.nn differentiated by
# plain autograd: torch.autograd.functional (the double-backward trick for jvp).

def positional(case, module):
    """f(*params, *inputs) -> outputs, and the values of those arguments."""
    names = list(case.params(module))

    def f(*tensors):
        return case.call(module, dict(zip(names, tensors[:len(names)])), *tensors[len(names):])
    return f, tuple(p.detach() for p in case.params(module).values()) + tuple(case.inputs)


def flat(tree):
    return torch.utils._pytree.tree_leaves(tree)


@pytest.mark.parametrize("kind, name, config", CASES)
def test_func_grad_and_vjp_match_torch(kind, name, config):
    case = Case(kind, name, config)
    f, args = positional(case, case.mine)
    cotangents = tuple(torch.randn_like(o) for o in f(*args))
    argnums = tuple(range(len(args)))
    got = flat(grad(lambda *a: weighted_sum(f(*a), cotangents), argnums=argnums)(*args))
    outputs, pullback = vjp(f, *args)
    got += list(outputs) + flat(pullback(cotangents))
    ref_f, ref_args = positional(case, case.ref)
    outputs, pulled = torch.autograd.functional.vjp(ref_f, ref_args, cotangents)
    assert_all_close(got, list(pulled) + list(outputs) + list(pulled), "grad, vjp")


@pytest.mark.parametrize("kind, name, config", CASES)
def test_func_jvp_and_forward_ad_match_torch(kind, name, config):
    case = Case(kind, name, config)
    f, args = positional(case, case.mine)
    tangents = tuple(torch.randn_like(a) for a in args)
    got = flat(jvp(f, args, tangents))
    with fwAD.dual_level():
        duals = [fwAD.unpack_dual(o) for o in f(*map(fwAD.make_dual, args, tangents))]
        got += [d.primal for d in duals] + [d.tangent for d in duals]
    ref_f, ref_args = positional(case, case.ref)
    want = flat(torch.autograd.functional.jvp(ref_f, ref_args, tangents))
    assert_all_close(got, want + want, "jvp, forward AD")


@pytest.mark.parametrize("kind, name, config", CASES)
def test_func_jacrev_and_jacfwd_match_torch(kind, name, config):
    case = Case(kind, name, config)
    f, args = positional(case, case.mine)
    argnums = tuple(range(len(args)))
    got = flat(jacrev(f, argnums=argnums)(*args)) + flat(jacfwd(f, argnums=argnums)(*args))
    ref_f, ref_args = positional(case, case.ref)
    want = flat(torch.autograd.functional.jacobian(ref_f, ref_args))
    assert_all_close(got, want + want, "jacrev, jacfwd")


@pytest.mark.parametrize("kind, name, config", CASES)
def test_func_vmap_matches_torch_in_a_loop(kind, name, config):
    """Plain vmap over the inputs, over the parameters (an ensemble), and
    per-sample gradients (vmap of grad), against torch.nn slice by slice."""
    case = Case(kind, name, config)
    f, args = positional(case, case.mine)
    ref_f, _ = positional(case, case.ref)
    n = len(args) - len(case.inputs)
    batched = [torch.stack([a + 0.1 * torch.randn_like(a) for _ in range(3)]) for a in args]
    over_inputs = (None,) * n + (0,) * len(case.inputs)
    over_params = (0,) * n + (None,) * len(case.inputs)

    def loss(f):
        return lambda *a: sum(o.square().sum() for o in f(*a))

    got = flat(vmap(f, in_dims=over_inputs)(*args[:n], *batched[n:]))
    got += flat(vmap(f, in_dims=over_params)(*batched[:n], *args[n:]))
    got += flat(vmap(grad(loss(f), argnums=tuple(range(len(args)))), in_dims=over_inputs)(
        *args[:n], *batched[n:]))

    def pick(dims, i):
        return [a if d is None else b[i] for a, b, d in zip(args, batched, dims)]
    want = []
    for dims in (over_inputs, over_params):
        want += [torch.stack(o) for o in zip(*(ref_f(*pick(dims, i)) for i in range(3)))]
    per_sample = []
    for i in range(3):
        ref_args = [t.requires_grad_() for t in leaves(pick(over_inputs, i))]
        per_sample.append(torch.autograd.grad(loss(ref_f)(*ref_args), ref_args))
    want += [torch.stack(g) for g in zip(*per_sample)]
    assert_all_close(got, want, "vmap")


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_func_hessian_matches_torch(name):
    case = Case("cell", name, {})
    x, states = case.inputs[0], case.inputs[1:]

    def scalar(module):
        return lambda x: sum(o.sin().sum() for o in case.outputs(module, x, *states))
    got = torch.func.hessian(scalar(case.mine))(x)
    want = torch.autograd.functional.hessian(scalar(case.ref), x)
    assert_all_close([got], [want], "hessian")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_raw_op_under_func_matches_torch(mode, reverse):
    """torch.ops.rnnkit.rnn_layer called directly (no Python entry point) under
    jvp and vjp, against one torch.nn layer (reversed by flipping time)."""
    ref = torch_layer(mode, I, H)
    w_ih, w_hh, b_ih, b_hh, _ = [None if w is None else w.detach() for w in layer_weights(ref)]
    x = torch.randn(T, B, I, dtype=F64)
    h0 = torch.randn(B, H, dtype=F64)
    c0 = torch.randn(B, H, dtype=F64) if mode == "LSTM" else None
    flip = (lambda t: t.flip(0)) if reverse else (lambda t: t)  # noqa: E731

    def mine(x, h0):
        y, h_n, *_ = torch.ops.rnnkit.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, None, None,
                                               mode, reverse, False)
        return y, h_n

    def theirs(x, h0):
        state = (h0[None], c0[None]) if mode == "LSTM" else h0[None]
        y, state = ref(flip(x), state)
        return flip(y), (state[0] if mode == "LSTM" else state)[0]

    tangents = (torch.randn_like(x), torch.randn_like(h0))
    cotangents = (torch.randn(T, B, H, dtype=F64), torch.randn(B, H, dtype=F64))
    got, want = [], []
    for f, out in ((mine, got), (theirs, want)):
        out += jvp(f, (x, h0), tangents)[1]
        out += vjp(f, x, h0)[1](cotangents)
    assert_all_close(got, want, "raw op jvp, vjp")


# ---- what must raise ------------------------------------------------------------------------

def layer_call(mode="LSTM", requires_grad=False):
    """Arguments of rnn_layer by name, with lengths (training left out)."""
    G = cells.kind(mode).gates * H
    make = lambda *s: torch.randn(*s, dtype=F64, requires_grad=requires_grad)  # noqa: E731
    args = dict(x=make(T, B, I), h0=make(B, H), c0=make(B, H) if mode == "LSTM" else None,
                w_ih=make(G, I), w_hh=make(G, H), b_ih=make(G), b_hh=make(G), w_hr=None,
                lengths=torch.tensor(LENGTHS), mode=mode, reverse=False)
    return args


def backward_call(args):
    """Arguments of rnn_layer_backward by name, after a forward that saved for it."""
    with torch.no_grad():
        y, h_n, c_n, saved = torch.ops.rnnkit.rnn_layer(*args.values(), True)
    return dict(grad_y=torch.randn_like(y), grad_hn=torch.randn_like(h_n),
                grad_cn=torch.randn_like(c_n), x=args["x"], h0=args["h0"], c0=args["c0"],
                w_ih=args["w_ih"], w_hh=args["w_hh"], w_hr=None, lengths=args["lengths"],
                saved=saved, mode=args["mode"], reverse=False, output_mask=[True] * 8)


def test_backward_ops_refuse_to_be_recorded():
    """Called where autograd would record them, the backward ops raise; under
    no_grad they give the gradients that autograd gets through the layer."""
    args = layer_call(requires_grad=True)
    call = backward_call(args)
    call["grad_y"].requires_grad_()
    with pytest.raises(RuntimeError, match="rnn_layer_backward has no derivative"):
        torch.ops.rnnkit.rnn_layer_backward(*call.values())
    with torch.no_grad():
        got = torch.ops.rnnkit.rnn_layer_backward(*call.values())[:7]
    y, h_n, c_n = ops.rnn_layer(*args.values())
    upstream = (call["grad_y"], call["grad_hn"], call["grad_cn"])
    want = torch.autograd.grad(weighted_sum((y, h_n, c_n), upstream),
                               [args[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")])
    for g, w in zip(got, want):
        assert_close(g, w, F64, "backward op under no_grad")

    x, h, c = args["x"][0], args["h0"], args["c0"]
    with torch.no_grad():
        h1, c1, saved = torch.ops.rnnkit.rnn_cell(x, h, c, args["w_ih"], args["w_hh"], None, None,
                                                  "LSTM", True)
    with pytest.raises(RuntimeError, match="rnn_cell_backward has no derivative"):
        torch.ops.rnnkit.rnn_cell_backward(torch.ones_like(h1, requires_grad=True), None, x, h, c,
                                           args["w_ih"], args["w_hh"], saved, "LSTM", [True] * 7)


def test_lstm_projection_double_backward_float64():
    """The issue's case: this failed at the create_graph grad inside the kernel."""
    ref, mine = module_pair("LSTM", input_size=3, hidden_size=4, proj_size=2)
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    got = []
    for module in (ref, mine):
        (gx,) = torch.autograd.grad(module(x)[0].sin().sum(), x, create_graph=True)
        got.append(torch.autograd.grad(gx.square().sum(), list(module.parameters())))
    assert_all_close(got[1], got[0], "projection double backward")


# ---- the fast path is untouched ----------------------------------------------------------------

def test_plain_backward_never_runs_the_composite(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the composite ran on a plain forward/backward")
    monkeypatch.setattr(composite, "step", refuse)
    for kind, name, config in [("seq", "LSTM", "projection"),
                               ("seq", "GRU", "packed bidirectional"),
                               ("seq", "RNN_TANH", "two layers bidirectional"),
                               ("cell", "LSTMCell", {})]:
        case = Case(kind, name, config)
        upstream = [torch.randn_like(o) for o in case.outputs(case.ref, *case.inputs)]
        got = {}
        for module, who in case.both():
            inputs = leaves(case.inputs)
            loss = weighted_sum(case.outputs(module, *inputs), upstream)
            got[who] = torch.autograd.grad(loss, inputs + list(module.parameters()))
        assert_all_close(got["rnnkit"], got["torch.nn"], f"{name} plain backward")


def test_compile_keeps_the_engine():
    """torch.compile(fullgraph=True) of a module: forward and backward graphs call
    the engine's ops (not the composite), and give eager's numbers."""
    from torch._dynamo.backends.common import aot_autograd
    from functorch.compile import make_boxed_func

    graphs = []

    def keep(gm, _):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    _, model = module_pair("LSTM", input_size=I, hidden_size=H, num_layers=2, bidirectional=True)
    compiled = torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=keep,
                                                                         bw_compiler=keep))
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    out = compiled(x)
    want = model(x)
    loss = lambda o: o[0].sin().sum() + o[1][0].sum()  # noqa: E731
    got_grads = torch.autograd.grad(loss(out), [x] + list(model.parameters()))
    want_grads = torch.autograd.grad(loss(want), [x] + list(model.parameters()))
    assert_all_close([out[0]] + list(got_grads), [want[0]] + list(want_grads), "compiled")
    forward, backward = graphs
    assert "rnnkit.rnn_layer.default" in forward and "aten.sigmoid.default" not in forward
    assert "rnnkit.rnn_layer_backward.default" in backward
    assert "aten.sigmoid.default" not in backward

    torch._dynamo.reset()
    graphs.clear()
    with torch.no_grad():
        out = torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=keep))(x)
    assert_close(out[0], want[0].detach(), F64, "compiled inference")
    assert "rnnkit.rnn_layer.default" in graphs[0] and "aten.sigmoid.default" not in graphs[0]


# ---- CUDA ----------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind, name, config", [c for c in CASES if "two layers" in c.id
                                                or "packed" in c.id or "Cell" in c.id])
def test_cuda_double_backward_and_jvp_match_torch(kind, name, config):
    case = Case(kind, name, config, device="cuda")
    got = penalty_gradients(case)
    f, args = positional(case, case.mine)
    tangents = tuple(torch.randn_like(a) for a in args)
    got["rnnkit"] += flat(jvp(f, args, tangents))
    got["torch.nn"] += flat(torch.autograd.functional.jvp(*positional(case, case.ref), tangents))
    assert_all_close(got["rnnkit"], got["torch.nn"], "CUDA penalty gradients, jvp")
