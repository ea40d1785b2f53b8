"""Swap torch.nn's recurrent modules inside a model for rnnkit's, and back.

rnnkit's classes subclass their torch.nn twins and hold no state of their own,
so a module changes side by changing its class: it keeps its identity, its
Parameter objects, buffers, hooks and training mode. An optimizer built before
the swap keeps updating the same parameters, tied weights stay tied, and other
references to the module see the change.
"""
from typing import Dict, Type

from torch import nn
from torch.nn.utils import parametrize

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["convert", "torch_twin"]

TORCH_TO_RNNKIT: Dict[Type[nn.Module], Type[nn.Module]] = {
    nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN,
    nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell,
}
RNNKIT_TO_TORCH = {mine: theirs for theirs, mine in TORCH_TO_RNNKIT.items()}


def _class_as(module: nn.Module, target: type) -> type:
    """The class module gets on target's side: target itself, or for a
    parametrized module (whose class torch derived from its original class) the
    same derivation from target."""
    if not parametrize.is_parametrized(module):
        return target
    derived = type(module)
    body = {k: v for k, v in vars(derived).items() if k not in ("__dict__", "__weakref__")}
    return type(f"Parametrized{target.__name__}", (target,), body)


def convert(model: nn.Module, to: str = "rnnkit") -> nn.Module:
    """Turn every torch.nn RNN, LSTM, GRU, RNNCell, LSTMCell and GRUCell in model
    (model itself included) into rnnkit's, in place; to="torch" turns rnnkit's
    back into torch.nn's. Returns model.

    Modules change class only: they keep their Parameter objects (an optimizer
    holding them keeps working), buffers, hooks and mode. Only the exact classes
    are converted; a subclass with its own forward is left as it is.
    """
    if to not in ("rnnkit", "torch"):
        raise ValueError(f"rnnkit.convert: to must be 'rnnkit' or 'torch', got {to!r}")
    table = TORCH_TO_RNNKIT if to == "rnnkit" else RNNKIT_TO_TORCH
    if not isinstance(model, nn.Module):
        raise TypeError(f"rnnkit.convert: expected an nn.Module, got {type(model).__name__}")
    for module in model.modules():
        target = table.get(parametrize.type_before_parametrizations(module))
        if target is not None:
            module.__class__ = _class_as(module, target)
    return model


def torch_twin(module: nn.Module) -> nn.Module:
    """A new torch.nn module equal to the rnnkit module: the same Parameter
    objects, buffers, hooks and settings under torch.nn's class; module itself is
    left as it is (for torch.jit.script and torch.ao's quantized modules, which
    take only torch.nn's classes)."""
    cls = _class_as(module, RNNKIT_TO_TORCH[parametrize.type_before_parametrizations(module)])
    twin = cls.__new__(cls)
    # Containers are copied, so registering on one module leaves the other alone.
    twin.__dict__.update({k: v.copy() if isinstance(v, (dict, list, set)) else v
                          for k, v in module.__dict__.items()})
    return twin
