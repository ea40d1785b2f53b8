"""Drop-in replacements for torch.nn.LSTM/GRU/RNN and LSTMCell/GRUCell/RNNCell.

Constructors, parameter names and order, initialisation, input conventions,
errors and reprs follow torch.nn, so a torch.nn state_dict loads here (and back)
with strict=True and the same inputs give the same results. The recurrence
itself runs in the rnnkit engine (rnnkit.ops), one layer and one direction per
call; this file only arranges layers, directions, dropout and the input layouts.

Parameters are always read from the module at forward time (never cached), so
.to(), deepcopy, pickling, parametrizations and torch.func.functional_call work.
"""
import math
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init
from torch.nn.utils.rnn import PackedSequence

from . import cells, ops

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]



def _autocast_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would run an RNN on x in (as torch.nn does on CUDA), or None.
    Like autocast itself, float64 is left alone."""
    if x.dtype != torch.float64 and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return None


def _packed_layout(batch_sizes: Tensor, device: torch.device) -> Tuple[Tensor, Tensor, int, int]:
    """Where the rows of a PackedSequence sit in a padded (T, B) time-major grid.

    Packed data is time-major: step t holds sequences 0..batch_sizes[t]-1, so
    the packed rows are exactly the valid cells of the (T, B) grid in row-major
    order. batch_sizes lives on the CPU, so this costs no device sync.
    Returns the flat grid index of every packed row, the per-sequence lengths
    (sorted order, as the engine wants them), T and B.
    """
    steps = batch_sizes.numel()
    batch = int(batch_sizes[0])
    valid = torch.arange(batch) < batch_sizes.unsqueeze(1)  # (T, B)
    index = valid.flatten().nonzero().squeeze(1)
    lengths = valid.sum(0)
    return index.to(device), lengths.to(device), steps, batch


# ---- sequence modules ----------------------------------------------------------

class _RNNBase(nn.Module):
    """Shared by RNN, LSTM and GRU: parameters, checks, layers × directions."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__()
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        # The same checks, in the same order and with the same exception types, as torch.nn.
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        for name, value, kind in (("bias", bias, bool), ("batch_first", batch_first, bool),
                                  ("input_size", input_size, int)):
            if not isinstance(value, kind):
                raise TypeError(f"{name} should be of type {kind.__name__}, got: "
                                f"{type(value).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in cells.KINDS:
            raise ValueError("Unrecognized RNN mode: " + mode)

        # Registration order matters: it fixes state_dict order and, with
        # reset_parameters drawing in that order, gives torch.nn's exact init
        # under the same seed.
        factory = {"device": device, "dtype": dtype}
        gate_size = cells.kind(mode).gates * hidden_size
        out_size = proj_size if proj_size > 0 else hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for stem, shape in shapes:
                    name = stem + self._suffix(layer, direction)
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    @staticmethod
    def _suffix(layer: int, direction: int) -> str:
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op: rnnkit reads the parameters as they are (kept for torch.nn code)."""

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> List[Tensor]:
        # Computed on demand rather than cached, so it never goes stale.
        return [getattr(self, name) for name in self._flat_weights_names]

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    # -- hidden state: one tensor (h) for RNN/GRU, two (h, c) for LSTM; LSTM overrides

    def _states_from_hx(self, hx) -> List[Tensor]:
        return [hx]

    def _hx_from_states(self, states: List[Tensor]):
        return states[0]

    def _state_shapes(self, batch: int) -> List[Tuple[int, int, int]]:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        return [(layers, batch, self.proj_size or self.hidden_size)]

    def _check_state_dims(self, states: List[Tensor], batched: bool) -> None:
        want = 3 if batched else 2
        if all(s.dim() == want for s in states):
            return
        kind = "batched 3-D" if batched else "unbatched 2-D"
        if len(states) == 1:
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got "
                               f"{states[0].dim()}-D tensor")
        dims = ", ".join(f"{s.dim()}-D" for s in states)
        raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                           f"({dims}) tensors")

    def _check_input(self, x: Tensor, packed: bool) -> None:
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype and _autocast_dtype(x) is None:
            raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype "
                             f"({weight.dtype}). Convert input: input.to({weight.dtype}), "
                             f"or convert model: model.to({x.dtype})")
        if x.device != weight.device:
            raise RuntimeError(f"RNN input is on {x.device} but the weights are on {weight.device}")
        want = 2 if packed else 3
        if x.dim() != want:
            raise RuntimeError(f"input must have {want} dimensions, got {x.dim()}")
        if x.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. "
                               f"Expected {self.input_size}, got {x.size(-1)}")

    def _check_states(self, states: List[Tensor], x: Tensor, batch: int) -> None:
        expected = self._state_shapes(batch)
        for i, (s, shape) in enumerate(zip(states, expected)):
            if tuple(s.shape) != shape:
                what = "hidden" if len(states) == 1 else f"hidden[{i}]"
                raise RuntimeError(f"Expected {what} size {shape}, got {list(s.shape)}")
            if s.dtype != x.dtype and _autocast_dtype(x) is None:
                raise RuntimeError(f"Expected the initial state to have dtype {x.dtype} like the "
                                   f"input, got {s.dtype}")
            if s.device != x.device:
                raise RuntimeError(f"Expected the initial state on {x.device} like the input, "
                                   f"got {s.device}")

    def forward(self, input, hx=None):
        name = type(self).__name__
        packed = isinstance(input, PackedSequence)
        states = None if hx is None else self._states_from_hx(hx)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self._check_input(data, packed=True)
            index, lengths, steps, batch = _packed_layout(batch_sizes, data.device)
            # Padded, time-major, in the sorted order of the packed batch.
            x = data.new_zeros((steps * batch, data.size(-1))).index_copy(0, index, data)
            x = x.view(steps, batch, data.size(-1))
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, "
                                 f"got {input.dim()}D instead")
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not batched:
                input = input.unsqueeze(batch_dim)
            if states is not None:
                self._check_state_dims(states, batched)
                if not batched:
                    states = [s.unsqueeze(1) for s in states]
            self._check_input(input, packed=False)
            x = input.transpose(0, 1) if self.batch_first else input
            batch, lengths, sorted_indices, unsorted_indices = x.size(1), None, None, None

        if states is None:
            states = [x.new_zeros(shape) for shape in self._state_shapes(batch)]
        else:
            self._check_states(states, x, batch)
            if sorted_indices is not None:
                # The user's states follow the user's batch order; the packed batch is sorted.
                states = [s.index_select(1, sorted_indices) for s in states]

        y, final = self._run_layers(x, states, lengths)

        if unsorted_indices is not None:
            final = [s.index_select(1, unsorted_indices) for s in final]
        if packed:
            out = y.reshape(steps * batch, y.size(-1)).index_select(0, index)
            return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), \
                self._hx_from_states(final)
        if self.batch_first:
            y = y.transpose(0, 1)
        if not batched:
            y = y.squeeze(batch_dim)
            final = [s.squeeze(1) for s in final]
        return y, self._hx_from_states(final)

    def _run_layers(self, x: Tensor, states: List[Tensor], lengths: Optional[Tensor]):
        """Layers × directions over time-major x (T, B, I); states are (L*D, B, ·)."""
        cast = _autocast_dtype(x)
        if cast is not None:
            x, states = x.to(cast), [s.to(cast) for s in states]
        h0 = states[0]
        c0 = states[1] if len(states) > 1 else None
        directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                weights = self._layer_weights(layer, direction, cast)
                y, h, c = ops.rnn_layer(x, h0[k], None if c0 is None else c0[k], *weights,
                                        lengths=lengths, mode=self.mode, reverse=direction == 1)
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, p=self.dropout, training=True)
        final = [torch.stack(h_n)] + ([torch.stack(c_n)] if c0 is not None else [])
        return x, final

    def _layer_weights(self, layer: int, direction: int, cast: Optional[torch.dtype]):
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction, None where absent."""
        suffix = self._suffix(layer, direction)

        def get(stem, present=True):
            if not present:
                return None
            w = getattr(self, stem + suffix)
            return w if cast is None else w.to(cast)

        return (get("weight_ih"), get("weight_hh"), get("bias_ih", self.bias),
                get("bias_hh", self.bias), get("weight_hr", self.proj_size > 0))


def _reject_proj_size(name: str, kwargs: dict) -> None:
    # torch.nn takes **kwargs here and singles out proj_size with a ValueError.
    if "proj_size" in kwargs:
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
    if kwargs:
        raise TypeError(f"{name}.__init__() got an unexpected keyword argument "
                        f"'{next(iter(kwargs))}'")


class RNN(_RNNBase):
    """Elman RNN, h' = tanh or relu(W_ih x + b_ih + W_hh h + b_hh); drop-in for torch.nn.RNN."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None,
                 **kwargs) -> None:
        _reject_proj_size("RNN", kwargs)
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. "
                             "Select from 'tanh' or 'relu'.")
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, device, dtype)
        self.nonlinearity = nonlinearity


class GRU(_RNNBase):
    """GRU with torch.nn's gate order r, z, n; drop-in for torch.nn.GRU."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, **kwargs) -> None:
        _reject_proj_size("GRU", kwargs)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype)


class LSTM(_RNNBase):
    """LSTM with torch.nn's gate order i, f, g, o and optional projection; drop-in for
    torch.nn.LSTM. hx is a pair (h_0, c_0); h is proj_size wide when proj_size > 0."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)

    def _states_from_hx(self, hx) -> List[Tensor]:
        h, c = hx
        return [h, c]

    def _hx_from_states(self, states: List[Tensor]):
        return states[0], states[1]

    def _state_shapes(self, batch: int) -> List[Tuple[int, int, int]]:
        h_shape = super()._state_shapes(batch)[0]
        return [h_shape, (h_shape[0], batch, self.hidden_size)]


# ---- cells ---------------------------------------------------------------------

class _RNNCellBase(nn.Module):
    """Shared by RNNCell, LSTMCell and GRUCell: parameters, checks, one engine step."""

    _mode = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate_size = num_chunks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty((gate_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((gate_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(gate_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(gate_size, **factory))
        else:
            # Registered as None (not absent), exactly like torch.nn's cells.
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if "bias" in self.__dict__ and self.bias is not True:
            s += ", bias={bias}"
        if "nonlinearity" in self.__dict__ and self.nonlinearity != "tanh":
            s += ", nonlinearity={nonlinearity}"
        return s.format(**self.__dict__)

    def _step(self, input: Tensor, states: Optional[List[Tensor]], state_names: List[str]):
        """Checks as torch.nn, then one step. Returns the new states, batched like input."""
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if states is not None:
            for what, s in zip(state_names, states):
                if s.dim() not in (1, 2):
                    raise ValueError(f"{name}: Expected {what} to be 1D or 2D, "
                                     f"got {s.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        batch = x.size(0)
        if states is None:
            states = [x.new_zeros((batch, self.hidden_size)) for _ in state_names]
        elif not batched:
            states = [s.unsqueeze(0) for s in states]

        cast = _autocast_dtype(x)
        if cast is None and x.dtype != self.weight_ih.dtype:
            raise RuntimeError(f"{name}: input dtype ({x.dtype}) does not match weight dtype "
                               f"({self.weight_ih.dtype})")
        if x.device != self.weight_ih.device:
            raise RuntimeError(f"{name}: input is on {x.device} but the weights are on "
                               f"{self.weight_ih.device}")
        if x.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.size(1)} "
                               f"expected {self.input_size}")
        for i, s in enumerate(states):
            if s.dim() != 2 or s.size(0) != batch:
                raise RuntimeError(f"Input batch size {batch} doesn't match hidden{i} batch size "
                                   f"{s.size(0) if s.dim() == 2 else list(s.shape)}")
            if s.size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {s.size(1)}, "
                                   f"expected {self.hidden_size}")
            if cast is None and s.dtype != x.dtype:
                raise RuntimeError(f"{name}: hidden{i} dtype ({s.dtype}) does not match input "
                                   f"dtype ({x.dtype})")
            if s.device != x.device:
                raise RuntimeError(f"{name}: hidden{i} is on {s.device} but the input is on "
                                   f"{x.device}")

        params = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        if cast is not None:
            x = x.to(cast)
            states = [s.to(cast) for s in states]
            params = [None if p is None else p.to(cast) for p in params]
        h, c = ops.rnn_cell(x, states[0], states[1] if len(states) > 1 else None, *params,
                            mode=self._cell_mode())
        out = [h] if c is None else [h, c]
        return out if batched else [s.squeeze(0) for s in out]

    def _cell_mode(self) -> str:
        return self._mode


class RNNCell(_RNNCellBase):
    """One Elman RNN step; drop-in for torch.nn.RNNCell."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _cell_mode(self) -> str:
        # torch.nn accepts any nonlinearity at construction and fails at forward.
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if self.nonlinearity not in modes:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return modes[self.nonlinearity]

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, None if hx is None else [hx], ["hidden"])[0]


class GRUCell(_RNNCellBase):
    """One GRU step; drop-in for torch.nn.GRUCell."""

    _mode = "GRU"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        return self._step(input, None if hx is None else [hx], ["hidden"])[0]


class LSTMCell(_RNNCellBase):
    """One LSTM step; drop-in for torch.nn.LSTMCell. hx is a pair (h, c)."""

    _mode = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        h, c = self._step(input, None if hx is None else list(hx), ["hx[0]", "hx[1]"])
        return h, c
