"""rnnkit's modules inside the tooling around torch.nn's: torch.load with
weights_only, torch.ao dynamic quantization, rnnkit.convert on a model nobody
wrote for rnnkit, ONNX export (both exporters, run in onnxruntime), TorchScript
(script and trace), torch.compile, pruning.

References are torch.nn modules holding the same weights; outputs and gradients
are compared in float64 where the tool allows it.
"""
import io
import os
import random
import subprocess
import sys
import warnings
from typing import List, Tuple

import pytest
import torch
import torch.nn.utils.prune
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic as nnqd

import rnnkit
from rnnkit.convert import TORCH_TO_RNNKIT
from test_modules import engine_calls, flat_outputs

TOL64 = dict(atol=1e-9, rtol=1e-7)
TOL32 = dict(atol=1e-5, rtol=1e-4)

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # torch.jit, torch.ao.quantization
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
]


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int(os.environ.get("RNNKIT_TEST_SEED", random.SystemRandom().randrange(2**31)))
    print(f"RNNKIT_TEST_SEED={seed}")
    torch.manual_seed(seed)


def rnn_classes(model: nn.Module) -> List[type]:
    return [type(m) for m in model.modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]


def outputs_and_grads(model: nn.Module, x: Tensor, upstream=None):
    """model(x)'s outputs, and the gradients of x and every parameter under
    upstream (random when None) gradients."""
    x = x.detach().clone().requires_grad_()
    out = flat_outputs(model(x))
    upstream = upstream or [torch.randn_like(o) for o in out]
    loss = sum((o * g).sum() for o, g in zip(out, upstream))
    grads = torch.autograd.grad(loss, [x] + list(model.parameters()))
    return [o.detach() for o in out], list(grads), upstream


def assert_all_close(actual, expected, tol, what):
    assert len(actual) == len(expected), what
    for i, (a, b) in enumerate(zip(actual, expected)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"{what} {i}: {m}")


# ---- a model nobody wrote for rnnkit -------------------------------------------------------

class ThirdPartySeq2Seq(nn.Module):
    """The shape of a typical third-party model: nested Sequential, ModuleList and
    ModuleDict; a bidirectional batch_first LSTM encoder, an LSTMCell decoder run
    in a loop, a GRU with dropout, and the other kinds for good measure."""

    def __init__(self, features=5, steps_out=4):
        super().__init__()
        self.steps_out = steps_out
        self.encoder = nn.ModuleDict({
            "embed": nn.Sequential(nn.Linear(features, 6), nn.Tanh()),
            "rnn": nn.LSTM(6, 7, num_layers=2, bidirectional=True, batch_first=True),
        })
        self.bridge = nn.Sequential(nn.Linear(14, 8), nn.Tanh())
        self.decoder = nn.ModuleList([nn.LSTMCell(8 + 3, 8), nn.Linear(8, 3)])
        self.post = nn.ModuleDict({
            "gru": nn.GRU(3, 4, num_layers=2, dropout=0.3),
            "blocks": nn.Sequential(nn.ModuleList([nn.GRUCell(4, 4),
                                                   nn.RNNCell(4, 4, True, "relu")])),
            "elman": nn.RNN(4, 2, bidirectional=True),
        })

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        y, (h, c) = self.encoder["rnn"](self.encoder["embed"](x))
        state = self.bridge(y[:, -1])
        hc = (state, torch.zeros_like(state))
        prev = x.new_zeros(x.size(0), 3)
        outs = []
        for _ in range(self.steps_out):
            hc = self.decoder[0](torch.cat([hc[0], prev], 1), hc)
            prev = self.decoder[1](hc[0])
            outs.append(prev)
        seq = torch.stack(outs)                      # (steps_out, B, 3), time-major
        z, _ = self.post["gru"](seq)
        cell_gru, cell_rnn = self.post["blocks"][0]
        h = cell_rnn(cell_gru(z[-1]))
        w, h_n = self.post["elman"](z)
        return torch.cat([w[-1], h], 1), h_n.sum(0) + c.sum(0)[:, :2]


def _model_input(dtype=torch.float64):
    return torch.randn(3, 6, 5, dtype=dtype)


def test_convert_a_third_party_model_both_ways():
    model = ThirdPartySeq2Seq().double().eval()  # eval: dropout draws no random numbers
    x = _model_input()
    out_torch, grads_torch, upstream = outputs_and_grads(model, x)
    params = list(model.parameters())
    torch_classes = rnn_classes(model)

    assert rnnkit.convert(model) is model
    assert rnn_classes(model) == [TORCH_TO_RNNKIT[c] for c in torch_classes]
    assert all(a is b for a, b in zip(model.parameters(), params))  # the same Parameters
    with engine_calls() as calls:
        out_mine, grads_mine, _ = outputs_and_grads(model, x, upstream)
    assert len(calls) >= 6  # every RNN module ran on rnnkit's engine
    assert_all_close(out_mine, out_torch, TOL64, "output")
    assert_all_close(grads_mine, grads_torch, TOL64, "gradient")

    assert rnnkit.convert(model, to="torch") is model
    assert rnn_classes(model) == torch_classes
    out_back, grads_back, _ = outputs_and_grads(model, x, upstream)
    assert_all_close(out_back, out_torch, TOL64, "output")
    assert_all_close(grads_back, grads_torch, TOL64, "gradient")


def test_convert_keeps_optimizer_hooks_mode_and_identity():
    model = ThirdPartySeq2Seq().double()
    encoder = model.encoder["rnn"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    encoder.register_forward_hook(lambda module, args, out: seen.append(type(module)))
    model.train()
    rnnkit.convert(model)
    assert model.encoder["rnn"] is encoder and isinstance(encoder, rnnkit.LSTM)
    assert encoder.training
    before = encoder.weight_ih_l0.detach().clone()
    loss = sum(o.sum() for o in model(_model_input()))  # training mode: dropout runs
    loss.backward()
    optimizer.step()
    assert seen == [rnnkit.LSTM]
    assert not torch.equal(encoder.weight_ih_l0, before)  # the optimizer's step reached it
    # ... and a state_dict saved from either side loads into the other, strict
    torch_model = ThirdPartySeq2Seq().double()
    torch_model.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(torch_model.state_dict(), strict=True)


def test_convert_leaves_subclasses_and_converts_parametrized_modules():
    class MyLSTM(nn.LSTM):  # a user's subclass: its own forward may matter
        pass

    class Scale(nn.Module):
        def forward(self, w):
            return 0.5 * w

    model = nn.Sequential(MyLSTM(3, 4), nn.GRU(3, 4, dtype=torch.float64))
    nn.utils.parametrize.register_parametrization(model[1], "weight_hh_l0", Scale())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    expected = model[1](x)[0]
    rnnkit.convert(model)
    assert type(model[0]) is MyLSTM
    assert isinstance(model[1], rnnkit.GRU) and nn.utils.parametrize.is_parametrized(model[1])
    assert nn.utils.parametrize.type_before_parametrizations(model[1]) is rnnkit.GRU
    with engine_calls() as calls:
        torch.testing.assert_close(model[1](x)[0], expected, **TOL64)
    assert calls
    rnnkit.convert(model, to="torch")
    assert nn.utils.parametrize.type_before_parametrizations(model[1]) is nn.GRU
    torch.testing.assert_close(model[1](x)[0], expected, **TOL64)


def test_convert_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="to must be"):
        rnnkit.convert(nn.LSTM(3, 4), to="cudnn")
    with pytest.raises(TypeError, match="nn.Module"):
        rnnkit.convert(torch.zeros(3))


# ---- torch.load(weights_only=True) ------------------------------------------------------------

def test_whole_model_torch_load_with_weights_only():
    model = nn.Sequential(rnnkit.LSTM(4, 4, num_layers=2, bidirectional=True, proj_size=2),
                          rnnkit.GRUCell(3, 4), rnnkit.RNN(4, 4, nonlinearity="relu"))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    # The user allows their own classes; rnnkit's are registered by rnnkit.
    with torch.serialization.safe_globals([nn.Sequential]):
        loaded = torch.load(buf, weights_only=True)
    assert [type(m) for m in loaded] == [type(m) for m in model]
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(loaded[0](x), model[0](x), rtol=0, atol=0)
    torch.testing.assert_close(loaded[1](x[0, :, :3]), model[1](x[0, :, :3]), rtol=0, atol=0)


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"])
def test_module_alone_torch_load_with_weights_only(cls_name):
    module = getattr(rnnkit, cls_name)(3, 4)
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # weights_only is the default
    assert type(loaded) is type(module)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                   module.state_dict().values()))


# ---- torch.ao dynamic quantization ------------------------------------------------------------

class Tagger(nn.Module):
    """The dynamic-quantization tutorial's shape: Linear -> LSTM -> Linear, plus
    the other kinds that torch.ao quantizes."""

    def __init__(self, lib):
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.rnn = lib.LSTM(8, 6, num_layers=2)
        self.gru = lib.GRU(6, 6)
        self.cells = nn.ModuleList([lib.LSTMCell(6, 6), lib.GRUCell(6, 6), lib.RNNCell(6, 6)])
        self.elman = lib.RNN(6, 6)  # torch.ao has no dynamic-quantized Elman RNN
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.rnn(self.embed(x))
        y, _ = self.gru(y)
        y, _ = self.elman(y)
        h, c = self.cells[0](y[-1])
        h = self.cells[2](self.cells[1](h))
        return self.head(h)


QUANT_SPECS = {
    "tutorial-set": lambda: {nn.LSTM, nn.Linear},
    "every-torch-kind": lambda: {nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.Linear},
    "dict": lambda: {nn.LSTM: torch.ao.quantization.default_dynamic_qconfig,
                     nn.GRUCell: torch.ao.quantization.default_dynamic_qconfig},
    "default": lambda: None,
}


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
@pytest.mark.parametrize("spec", QUANT_SPECS)
def test_quantize_dynamic_treats_rnnkit_like_torch_nn(spec, dtype):
    """PyTorch's recipe, quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=...), and
    its variants swap rnnkit's modules exactly where they swap torch.nn's, for
    torch's own dynamic-quantized modules: the same model, the same numbers."""
    ref = Tagger(nn)
    mine = Tagger(rnnkit)
    mine.load_state_dict(ref.state_dict(), strict=True)
    q_ref = torch.ao.quantization.quantize_dynamic(ref, QUANT_SPECS[spec](), dtype=dtype)
    q_mine = torch.ao.quantization.quantize_dynamic(mine, QUANT_SPECS[spec](), dtype=dtype)
    # what stays float stays rnnkit's; what is swapped is torch's quantized module
    expected = [TORCH_TO_RNNKIT.get(type(m), type(m))
                for m in q_ref.modules()]
    assert [type(m) for m in q_mine.modules()] == expected
    assert type(q_mine.rnn) is nnqd.LSTM  # in every spec here
    assert rnn_classes(mine) == rnn_classes(Tagger(rnnkit))  # inplace=False left it alone
    x = torch.randn(7, 2, 5)
    torch.testing.assert_close(q_mine(x), q_ref(x), **TOL32)  # what stays float: rnnkit's engine


def test_quantize_dynamic_by_rnnkit_class():
    model = Tagger(rnnkit)
    q = torch.ao.quantization.quantize_dynamic(model, {rnnkit.GRU, rnnkit.LSTMCell})
    assert type(q.gru) is nnqd.GRU and type(q.cells[0]) is nnqd.LSTMCell
    assert type(q.rnn) is rnnkit.LSTM


# ---- ONNX ------------------------------------------------------------------------------------

class Exportable(nn.Module):
    def __init__(self, lib):
        super().__init__()
        self.lstm = lib.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = lib.GRU(10, 4)
        self.elman = lib.RNN(4, 4, nonlinearity="relu")
        self.cells = nn.ModuleList([lib.LSTMCell(4, 3), lib.GRUCell(3, 3),
                                    lib.RNNCell(3, 2, nonlinearity="tanh")])

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        z, hz = self.gru(y.transpose(0, 1))
        w, hw = self.elman(z)
        hc = self.cells[0](w[-1])
        g = self.cells[2](self.cells[1](hc[0]))
        return y, h, c, hz, w, g


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_onnx_export_runs_in_onnxruntime_with_torch_nns_numbers(dynamo, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    ref = Exportable(nn).eval()
    mine = Exportable(rnnkit).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 6, 3)
    ops = {}
    for name, model in (("torch", ref), ("rnnkit", mine)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(tmp_path / f"{name}.onnx"), dynamo=dynamo)
        graph = onnx.load(str(tmp_path / f"{name}.onnx")).graph
        ops[name] = sorted((node.domain, node.op_type) for node in graph.node)
    # torch.nn's export: ONNX's own LSTM and GRU (the dynamo exporter spells an
    # Elman RNN out in plain ops)
    assert ops["rnnkit"] == ops["torch"]
    assert {("", "LSTM"), ("", "GRU")} <= set(ops["rnnkit"])
    path = str(tmp_path / "rnnkit.onnx")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    expected = ref(x)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.from_numpy(a), b.detach(), **TOL32)
    with engine_calls() as calls:  # after export, the engine again
        mine(x)
    assert calls


# ---- TorchScript -----------------------------------------------------------------------------

class Tacotron2StyleDecoder(nn.Module):
    """An encoder LSTM, then an LSTMCell and a GRUCell stepped in a loop, the way
    Tacotron2's decoder does; TorchScript-compatible Python."""

    def __init__(self, lib):
        super().__init__()
        self.encoder = lib.LSTM(3, 4, batch_first=True, bidirectional=True)
        self.attention_rnn = lib.LSTMCell(8 + 2, 6)
        self.decoder_rnn = lib.GRUCell(6, 2)
        self.gate = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        y, (h, c) = self.encoder(x)
        batch = x.size(0)
        hc = (x.new_zeros(batch, 6), x.new_zeros(batch, 6))
        prev = x.new_zeros(batch, 2)
        outs: List[Tensor] = []
        for t in range(y.size(1)):
            hc = self.attention_rnn(torch.cat([y[:, t], prev], 1), hc)
            prev = self.decoder_rnn(hc[0], prev)
            outs.append(self.gate(hc[0]) + prev)
        return torch.stack(outs, 1) + h.sum(0).unsqueeze(1)[:, :, :2]


class SequenceKinds(nn.Module):
    def __init__(self, lib):
        super().__init__()
        self.lstm = lib.LSTM(3, 5, num_layers=2, proj_size=2)
        self.gru = lib.GRU(2, 4, bidirectional=True)
        self.elman = lib.RNN(8, 3, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.lstm(x)
        z, h = self.gru(y)
        w, _ = self.elman(z)
        return w + h.sum(0)[:, :3]


def _pair(model_cls):
    ref = model_cls(nn).double()
    mine = model_cls(rnnkit).double()
    mine.load_state_dict(ref.state_dict(), strict=True)
    return ref, mine


@pytest.mark.parametrize("model_cls", [Tacotron2StyleDecoder, SequenceKinds])
def test_torch_jit_script(model_cls):
    ref, mine = _pair(model_cls)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    scripted = torch.jit.script(mine)
    out_ref, grads_ref, upstream = outputs_and_grads(ref, x)
    out_s, grads_s, _ = outputs_and_grads(scripted, x, upstream)
    assert_all_close(out_s, out_ref, TOL64, "output")
    assert_all_close(grads_s, grads_ref, TOL64, "gradient")
    # torch.jit.script puts what __prepare_scriptable__ returns (the torch.nn twin,
    # on the same Parameters) into the scripted model's parent; convert puts rnnkit back.
    assert all(type(m).__module__.startswith("torch.nn") for m in mine.children()
               if isinstance(m, (nn.RNNBase, nn.RNNCellBase)))
    assert all(a is b for a, b in zip(mine.parameters(), scripted.parameters()))
    rnnkit.convert(mine)
    assert all(type(m).__module__ == "rnnkit.modules" for m in mine.modules()
               if isinstance(m, (nn.RNNBase, nn.RNNCellBase)))


@pytest.mark.parametrize("cls_name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_torch_jit_script_cell_alone(cls_name):
    ref = getattr(nn, cls_name)(3, 4, dtype=torch.float64)
    mine = getattr(rnnkit, cls_name)(3, 4, dtype=torch.float64)
    mine.load_state_dict(ref.state_dict())
    scripted = torch.jit.script(mine)
    assert type(mine) is getattr(rnnkit, cls_name)  # the module scripted stays rnnkit's
    x = torch.randn(2, 3, dtype=torch.float64)
    assert_all_close(flat_outputs(scripted(x)), flat_outputs(ref(x)), TOL64, "output")


@pytest.mark.parametrize("model_cls", [Tacotron2StyleDecoder, SequenceKinds])
@pytest.mark.parametrize("grad_while_tracing", [False, True], ids=["no_grad", "grad"])
def test_torch_jit_trace(model_cls, grad_while_tracing):
    """A trace records torch.nn's RNN ops, so it is valid with and without grad,
    whatever grad mode it was traced under."""
    ref, mine = _pair(model_cls)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with torch.set_grad_enabled(grad_while_tracing), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(mine, x)
    out_ref, grads_ref, upstream = outputs_and_grads(ref, x)
    out_t, grads_t, _ = outputs_and_grads(traced, x, upstream)
    assert_all_close(out_t, out_ref, TOL64, "output")
    assert_all_close(grads_t, grads_ref, TOL64, "gradient")
    with engine_calls() as calls:  # the module itself still runs on the engine
        mine(x)
    assert calls


def test_torch_fx_symbolic_trace_keeps_rnns_as_modules():
    """FX records torch.nn's RNNs as call_module nodes; rnnkit's the same way."""
    ref = ThirdPartySeq2Seq().double().eval()
    mine = rnnkit.convert(ThirdPartySeq2Seq().double().eval())
    mine.load_state_dict(ref.state_dict())
    graphs = [torch.fx.symbolic_trace(m) for m in (ref, mine)]
    nodes = [[(n.op, str(n.target)) for n in g.graph.nodes] for g in graphs]
    assert nodes[0] == nodes[1]
    assert ("call_module", "decoder.0") in nodes[1] and ("call_module", "post.gru") in nodes[1]
    x = _model_input()
    with engine_calls() as calls:
        got = graphs[1](x)
    assert calls
    assert_all_close(list(got), list(ref(x)), TOL64, "output")


# ---- torch.compile ---------------------------------------------------------------------------

def test_torch_compile_graph_holds_rnnkits_ops_and_leaves_torch_nn_alone():
    graph_ops = []

    def recording_backend(gm, example_inputs):
        graph_ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    model = nn.Sequential(rnnkit.GRU(3, 4, batch_first=True))
    cell = rnnkit.LSTMCell(3, 4)
    torch._dynamo.reset()
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(torch.compile(model, backend=recording_backend, fullgraph=True)(x),
                               model(x))
    torch.compile(cell, backend=recording_backend, fullgraph=True)(x[:, 0])
    assert "rnnkit.rnn_layer" in graph_ops and "rnnkit.rnn_cell" in graph_ops
    # torch.nn's own RNNs keep Dynamo's default (no fullgraph: it refuses them)
    assert not torch._dynamo.config.allow_rnn
    torch._dynamo.reset()
    with pytest.raises(Exception, match="RNN, GRU, or LSTM"):
        torch.compile(nn.GRU(3, 4), backend=recording_backend, fullgraph=True)(x)


def test_importing_rnnkit_leaves_dynamo_unimported_and_compile_still_works():
    """Dynamo takes seconds to import: rnnkit widens its RNN gate when Dynamo is
    imported (here by torch.compile), not by importing it."""
    code = (
        "import sys, torch, rnnkit\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "m = torch.nn.Sequential(rnnkit.LSTM(3, 4))\n"
        "y = torch.compile(m, fullgraph=True, backend='eager')(torch.randn(5, 2, 3))\n"
        "assert y[0].shape == (5, 2, 4)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("strict", [False, True])
def test_torch_export_keeps_rnnkits_ops(strict):
    model = nn.Sequential(rnnkit.LSTM(3, 4, batch_first=True, bidirectional=True))
    x = torch.randn(2, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(model, (x,), strict=strict)
    assert any("rnnkit.rnn_layer" in str(n.target) for n in program.graph.nodes)
    assert_all_close(flat_outputs(program.module()(x)), flat_outputs(model(x)), TOL32, "output")


# ---- pruning ---------------------------------------------------------------------------------

def test_pruning_masks_the_engines_weights():
    ref = nn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    mine = rnnkit.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    mine.load_state_dict(ref.state_dict())
    for m in (ref, mine):
        nn.utils.prune.l1_unstructured(m, "weight_hh_l1", amount=0.5)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out_ref, grads_ref, upstream = outputs_and_grads(ref, x)
    with engine_calls() as calls:
        out_mine, grads_mine, _ = outputs_and_grads(mine, x, upstream)
    assert calls
    assert_all_close(out_mine, out_ref, TOL64, "output")
    assert_all_close(grads_mine, grads_ref, TOL64, "gradient")
