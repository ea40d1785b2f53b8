"""The cell kinds rnnkit runs, and what each one is: the one table that the
ops, the modules, the benchmark and the tests read. Gate counts and what
training keeps come from the compiled engine (csrc/cells.h, cell_units.h)
through rnnkit._C, the torch.nn classes from here.

A kind is named by its engine mode: "LSTM", "GRU", "RNN_TANH", "RNN_RELU".
"""
from dataclasses import dataclass
from typing import Dict, Optional

from torch import nn

from . import _C


@dataclass(frozen=True)
class CellKind:
    mode: str                    # the engine's name of the kind
    gates: int                   # gate rows per hidden unit in weight_ih / weight_hh
    torch_layer: type            # the torch.nn sequence module of this kind
    torch_cell: type             # the torch.nn cell of this kind
    nonlinearity: Optional[str]  # RNN only: the constructor's "tanh" or "relu"

    def saved_width(self, hidden: int, proj: int = 0) -> int:
        """Values training keeps per row and step for backward (csrc/cell_units.h)."""
        return _C.saved_width(self.mode, hidden, proj or hidden)

    def torch_layer_kwargs(self) -> Dict[str, str]:
        """Constructor arguments that pick this kind out of its torch.nn class."""
        return {"nonlinearity": self.nonlinearity} if self.nonlinearity else {}


KINDS: Dict[str, CellKind] = {
    mode: CellKind(mode, _C.gate_count(mode), layer, cell, nonlinearity)
    for mode, layer, cell, nonlinearity in [
        ("LSTM", nn.LSTM, nn.LSTMCell, None),
        ("GRU", nn.GRU, nn.GRUCell, None),
        ("RNN_TANH", nn.RNN, nn.RNNCell, "tanh"),
        ("RNN_RELU", nn.RNN, nn.RNNCell, "relu"),
    ]
}
MODES = tuple(KINDS)


def kind(mode: str) -> CellKind:
    """The kind of an engine mode; ValueError naming the choices otherwise."""
    try:
        return KINDS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"rnnkit: unknown mode {mode!r}; expected one of {', '.join(MODES)}") from None
