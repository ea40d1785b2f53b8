"""The cell kinds rnnkit runs, and what each one is: the one table that the
ops, the modules, the benchmark and the tests read (gate counts also stand in
csrc/cells.h, which the compiled engine reads).

A kind is named by its engine mode: "LSTM", "GRU", "RNN_TANH", "RNN_RELU".
"""
from dataclasses import dataclass
from typing import Dict, Optional

from torch import nn


@dataclass(frozen=True)
class CellKind:
    mode: str                    # the engine's name of the kind
    gates: int                   # gate rows per hidden unit in weight_ih / weight_hh
    torch_layer: type            # the torch.nn sequence module of this kind
    torch_cell: type             # the torch.nn cell of this kind
    nonlinearity: Optional[str]  # RNN only: the constructor's "tanh" or "relu"

    def torch_layer_kwargs(self) -> Dict[str, str]:
        """Constructor arguments that pick this kind out of its torch.nn class."""
        return {"nonlinearity": self.nonlinearity} if self.nonlinearity else {}


KINDS: Dict[str, CellKind] = {
    "LSTM": CellKind("LSTM", 4, nn.LSTM, nn.LSTMCell, None),
    "GRU": CellKind("GRU", 3, nn.GRU, nn.GRUCell, None),
    "RNN_TANH": CellKind("RNN_TANH", 1, nn.RNN, nn.RNNCell, "tanh"),
    "RNN_RELU": CellKind("RNN_RELU", 1, nn.RNN, nn.RNNCell, "relu"),
}
MODES = tuple(KINDS)


def kind(mode: str) -> CellKind:
    """The kind of an engine mode; ValueError naming the choices otherwise."""
    try:
        return KINDS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"rnnkit: unknown mode {mode!r}; expected one of {', '.join(MODES)}") from None
