"""torch.compile for rnnkit's LSTM, GRU and RNN.

Dynamo refuses every nn.RNN, nn.GRU and nn.LSTM instance, subclasses included,
unless torch._dynamo.config.allow_rnn is set (an experimental tracing of
torch.nn's own RNN kernels). rnnkit's sequence modules are such subclasses, but
their forward is ordinary traceable code around rnnkit's custom ops, so Dynamo is
let through for them alone; torch.nn's own RNNs keep Dynamo's default.

Importing Dynamo takes seconds, so the gate is widened when Dynamo's module that
holds it is imported (by torch.compile, torch.export, ...), not by rnnkit.
"""
import functools
import importlib.abc
import importlib.util
import sys

from .modules import _EngineSequence

_GATE_MODULE = "torch._dynamo.variables.builder"


def _let_rnnkit_sequences_through(builder) -> None:
    from torch._dynamo import config

    wrap_module = getattr(builder.VariableBuilder, "wrap_module", None)
    if wrap_module is None or getattr(wrap_module, "_rnnkit", False):
        return  # a Dynamo without this gate, or already done

    @functools.wraps(wrap_module)
    def wrap_rnnkit_too(self, value):
        if isinstance(value, _EngineSequence) and not config.allow_rnn:
            with config.patch(allow_rnn=True):
                return wrap_module(self, value)
        return wrap_module(self, value)

    wrap_rnnkit_too._rnnkit = True
    builder.VariableBuilder.wrap_module = wrap_rnnkit_too


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback on a module right after it is first imported."""

    def __init__(self, name, callback):
        self.name, self.callback = name, callback

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and the lookup below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_call_back(module):
            exec_module(module)
            self.callback(module)

        spec.loader.exec_module = exec_then_call_back
        return spec


if _GATE_MODULE in sys.modules:
    _let_rnnkit_sequences_through(sys.modules[_GATE_MODULE])
else:
    sys.meta_path.insert(0, _AfterImport(_GATE_MODULE, _let_rnnkit_sequences_through))
