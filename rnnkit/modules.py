"""rnnkit's LSTM, GRU, RNN, LSTMCell, GRUCell and RNNCell: torch.nn's own classes
with the recurrence run by the rnnkit engine.

Each class subclasses its torch.nn twin (rnnkit.LSTM is an nn.LSTM and an
nn.RNNBase; rnnkit.LSTMCell an nn.LSTMCell and an nn.RNNCellBase) and replaces
only forward. Constructor, parameters (names, order, initialisation), state_dict,
repr, flatten_parameters and pickling are torch.nn's. The classes keep no state of
their own, so a module can change between a torch.nn class and its rnnkit twin in
place (rnnkit.convert), and torch.load(weights_only=True) accepts them.

forward runs the engine where the engine is torch.nn's exact replacement: a
well-formed call on CPU or CUDA tensors that share one floating dtype. Every other
call runs torch.nn's own forward, so it behaves as torch.nn does, errors included:
  * while torch.jit.trace or an ONNX exporter records the model: they know
    torch.nn's RNN operators (aten::lstm becomes ONNX's LSTM), not rnnkit's
    (torch.fx symbolic tracing records one call_module node, as for torch.nn's);
  * under CPU autocast: what torch.nn returns there (dtypes, accepted inputs)
    depends on which of its CPU kernels runs, oneDNN's or the step-by-step one,
    chosen by CPU features and grad mode;
  * on other devices (meta, ...), and for anything malformed or degenerate: mixed
    dtypes or devices, wrong shapes, seq_len 0, hidden_size 0, hx of the wrong kind.
Under CUDA autocast the engine runs in the dtype torch.nn runs in (see
_cuda_autocast_dtype). torch.jit.script scripts the torch.nn twin
(__prepare_scriptable__).

Parameters are read from the module at every call (never cached), so .to(),
deepcopy, parametrizations and torch.func.functional_call work.
"""
import importlib
import threading
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _C, ops
from .cells import KINDS

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]

# The dtypes the engine has kernels for (on the CPU and CUDA).
_ENGINE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

SequenceInput = Union[Tensor, PackedSequence]
Device = Optional[Union[torch.device, str, int]]


def _recording() -> bool:
    """True while torch.jit.trace or an ONNX exporter (TorchScript- or
    dynamo-based) records the model."""
    return torch.jit.is_tracing() or _in_onnx_export()


# The two flags torch.onnx.is_in_onnx_export reads, found on the first eager
# call: that function imports them on every call (a microsecond or two, on
# every step of a cell). Found under a lock: threads making their first calls
# at once would otherwise import torch.onnx together, and one of them could be
# handed the half-initialised package.
_onnx_export_flags: Optional[Tuple[object, object]] = None
_onnx_export_flags_lock = threading.Lock()


def _in_onnx_export() -> bool:
    """torch.onnx.is_in_onnx_export(), without its imports in eager calls (the
    public call while torch.compile traces, and where torch keeps the flags
    elsewhere)."""
    global _onnx_export_flags
    if torch.compiler.is_compiling():
        return torch.onnx.is_in_onnx_export()
    if _onnx_export_flags is None:
        with _onnx_export_flags_lock:
            if _onnx_export_flags is None:
                try:
                    importlib.import_module("torch.onnx")  # the package first, whole
                    from torch.onnx._internal.exporter import _flags
                    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
                    _onnx_export_flags = (GLOBALS, _flags)
                except ImportError:
                    _onnx_export_flags = (None, None)
    globals_, flags = _onnx_export_flags
    if globals_ is None:
        return torch.onnx.is_in_onnx_export()
    return bool(globals_.in_onnx_export or flags._is_onnx_exporting)


def _common_call_allowed() -> bool:
    """Whether a module may hand its call to the C++ common call
    (csrc/common_call.cpp): not while torch.compile traces (it traces the
    Python forward) or torch.jit.trace records (it must see torch.nn's)."""
    return not (torch.compiler.is_compiling() or torch._C._is_tracing())


def _fx_leaf(module: nn.Module, input: "torch.fx.Proxy", hx):
    """The call as one call_module node of torch.fx symbolic tracing, the node
    FX makes of torch.nn's own RNNs (it traces into no module from torch.nn)."""
    tracer = input.tracer
    args = (input,) if hx is None else (input, hx)
    return tracer.create_proxy("call_module", tracer.path_of_module(module), args, {})


# (class, nonlinearity) -> engine mode or None: a call looks its kind up once.
_MODES: Dict[Tuple[type, Optional[str]], Optional[str]] = {}


def _engine_mode(module: nn.Module) -> Optional[str]:
    """The engine mode of a module's kind (cells.KINDS), None for a kind the
    engine has not (an RNNCell with an unknown nonlinearity)."""
    nonlinearity = module.__dict__.get("nonlinearity")
    key = (type(module), nonlinearity)
    if key not in _MODES:
        _MODES[key] = next((kind.mode for kind in KINDS.values()
                            if isinstance(module, (kind.torch_layer, kind.torch_cell))
                            and kind.nonlinearity == nonlinearity), None)
    return _MODES[key]


def _parameters(module: nn.Module, names) -> List[Optional[Tensor]]:
    """The named parameters, read from the module's parameter table where they
    are there (nn.Module's attribute fallback costs a microsecond each), else
    as attributes (a parametrization makes them properties)."""
    table = module._parameters
    return [table[name] if name in table else getattr(module, name) for name in names]


def _as(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """t in dtype (t itself when it already is, without a dispatch)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _cuda_autocast_dtype(sequence: bool, x: Tensor) -> Optional[torch.dtype]:
    """The dtype torch.nn computes in under CUDA autocast, None without autocast.

    torch.nn's cells are on autocast's lower-precision list: the autocast dtype.
    Its sequence modules on cuDNN go through cuDNN's own autocast wrapper, which
    casts to float16 whatever the autocast dtype; off cuDNN they step through the
    cells, so again the autocast dtype.
    """
    if not torch.is_autocast_enabled("cuda"):
        return None
    if sequence and torch.backends.cudnn.is_acceptable(x):
        return torch.float16
    return torch.get_autocast_dtype("cuda")


def _engine_dtype(tensors: List[Tensor], sequence: bool) -> Optional[torch.dtype]:
    """The one dtype the engine runs a call in (tensors: the input first, then
    states and weights), or None where torch.nn must run it: tensors on several
    devices or on one the engine has no kernels for, CPU autocast, mixed or
    non-floating dtypes. Under CUDA autocast every floating tensor but a float64
    one is cast, as autocast itself does."""
    x = tensors[0]
    if not all(isinstance(t, Tensor) for t in tensors):
        return None
    if x.is_cpu:  # the common case first, in as few Python operations as it takes
        dtype = x.dtype
        if (all(t.is_cpu and t.dtype == dtype for t in tensors) and dtype in _ENGINE_DTYPES
                and not torch.is_autocast_enabled("cpu")):
            return dtype
    device = x.device
    if device.type == "cpu":
        on_device = all(t.is_cpu for t in tensors)  # cheaper than comparing t.device
    else:
        on_device = device.type == "cuda" and \
            all(t.is_cuda and t.get_device() == device.index for t in tensors)
    if not on_device:
        return None
    if device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return None
    cast = _cuda_autocast_dtype(sequence, x) if device.type == "cuda" else None
    if cast is None:
        dtype = x.dtype
        same = all(t.dtype == dtype for t in tensors)
    else:
        def runs_in(t):
            return cast if t.is_floating_point() and t.dtype != torch.float64 else t.dtype
        dtype = runs_in(x)
        same = all(runs_in(t) == dtype for t in tensors)
    return dtype if same and dtype in _ENGINE_DTYPES else None


def _is_pair(hx) -> bool:
    return isinstance(hx, (tuple, list)) and len(hx) == 2 and \
        all(isinstance(s, Tensor) for s in hx)


def _batch_sizes_problem(batch_sizes, rows: int) -> Optional[str]:
    """What is wrong with a PackedSequence's batch_sizes for `rows` packed rows,
    or None. batch_sizes lives on the CPU, so this costs no device sync."""
    if not isinstance(batch_sizes, Tensor):
        return f"is a {type(batch_sizes).__name__}, not a tensor"
    if batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu":
        return f"must be an int64 CPU tensor, got {batch_sizes.dtype} on {batch_sizes.device}"
    if batch_sizes.dim() != 1 or batch_sizes.numel() == 0:
        return f"must be a non-empty 1-D tensor, got shape {tuple(batch_sizes.shape)}"
    if int(batch_sizes.min()) <= 0:
        return "must be positive (every step holds at least one sequence)"
    if batch_sizes.numel() > 1 and bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
        return "must not increase (sequences are sorted by decreasing length)"
    total = int(batch_sizes.sum())
    if total != rows:
        return f"sums to {total} but the packed data has {rows} rows"
    return None


def _packed_layout(batch_sizes: Tensor, device: torch.device) -> Tuple[Tensor, Tensor, int, int]:
    """Where the rows of a PackedSequence sit in a padded (T, B) time-major grid.

    Packed data is time-major: step t holds sequences 0..batch_sizes[t]-1, so
    the packed rows are exactly the valid cells of the (T, B) grid in row-major
    order. Returns the flat grid index of every packed row, the per-sequence
    lengths (sorted order, as the engine wants them), T and B.
    """
    steps = batch_sizes.numel()
    batch = int(batch_sizes[0])
    valid = torch.arange(batch) < batch_sizes.unsqueeze(1)  # (T, B)
    index = valid.flatten().nonzero().squeeze(1)
    lengths = valid.sum(0)
    return index.to(device), lengths.to(device), steps, batch


def _same_kind_of_error(error: Exception, message: str) -> Exception:
    """An exception of error's type with a clearer message (error itself where
    that type cannot be built from a message)."""
    try:
        return type(error)(message)
    except Exception:
        return error


# ---- sequence modules ----------------------------------------------------------

class _Plan(NamedTuple):
    """A sequence call the engine runs: engine mode and dtype, the time-major input
    (L, N, H_in) (for a PackedSequence its packed rows), the (D*num_layers, N, .)
    states and every layer-direction's weights in torch.nn's order."""
    mode: str
    dtype: torch.dtype
    x: Tensor
    states: List[Tensor]
    weights: List[List[Tensor]]


class _EngineSequence(nn.RNNBase):
    """forward of RNN, LSTM and GRU on the engine; each class puts it in front of
    its torch.nn class, whose forward runs every call the engine does not take."""

    def _torch_forward(self, input, hx):
        return super().forward(input, hx)

    def __prepare_scriptable__(self) -> nn.Module:
        """torch.jit.script compiles torch.nn's forward: it scripts the torch.nn twin
        of this module, which shares this module's parameters."""
        from .convert import torch_twin
        return torch_twin(self)

    def forward(self, input: SequenceInput, hx=None):
        """Runs the layers over input: the inputs, outputs and errors of torch.nn's
        forward (see the class docstring)."""
        out = self._common_call(input, hx)
        if out is not None:
            return out
        if _recording():
            return self._torch_forward(input, hx)
        if isinstance(input, torch.fx.Proxy):
            return _fx_leaf(self, input, hx)
        if isinstance(input, PackedSequence):
            return self._packed_forward(input, hx)
        plan = self._plan(input, hx) if isinstance(input, Tensor) else None
        if plan is None:
            return self._torch_forward(input, hx)
        y, final = self._run_layers(plan, plan.x, plan.states, None)
        if self.batch_first:
            y = y.transpose(0, 1)
        if input.dim() == 2:  # unbatched
            y = y.squeeze(0 if self.batch_first else 1)
            final = [s.squeeze(1) for s in final]
        return y, self._hx_from_states(final)

    def _common_call(self, input, hx):
        """forward of the common call of a tensor input, in C++ (as the cells'):
        what forward returns, or None where the rest of forward must decide."""
        mode = _engine_mode(self) if _common_call_allowed() else None
        if mode is None:
            return None
        return _C._sequence_call(mode, input, hx, self._parameters, self._all_weights,
                                 self.input_size, self.hidden_size, self.proj_size, self.num_layers,
                                 self.bidirectional, self.batch_first, self.bias,
                                 self.dropout > 0 and self.training)

    def _packed_forward(self, input: PackedSequence, hx):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if not isinstance(data, Tensor) or data.dim() == 0:
            return self._torch_forward(input, hx)
        problem = _batch_sizes_problem(batch_sizes, data.size(0))
        if problem is not None:
            # torch.nn decides (it raises, or ignores rows past the last step); its
            # errors do not say that batch_sizes is what is wrong.
            try:
                return self._torch_forward(input, hx)
            except Exception as error:
                raise _same_kind_of_error(
                    error, f"{type(self).__name__}: PackedSequence.batch_sizes {problem} "
                    "(build PackedSequences with pack_padded_sequence or pack_sequence)"
                ) from error
        plan = self._plan(input, hx)
        if plan is None:
            return self._torch_forward(input, hx)
        index, lengths, steps, batch = _packed_layout(batch_sizes, data.device)
        # Padded, time-major, in the sorted order of the packed batch.
        x = data.new_zeros((steps * batch, data.size(-1))).index_copy(0, index, data)
        x = x.view(steps, batch, data.size(-1))
        states = plan.states
        if sorted_indices is not None:
            # The user's states follow the user's batch order; the packed batch is sorted.
            states = [s.index_select(1, sorted_indices) for s in states]
        y, final = self._run_layers(plan, x, states, lengths)
        if unsorted_indices is not None:
            final = [s.index_select(1, unsorted_indices) for s in final]
        out = y.reshape(steps * batch, y.size(-1)).index_select(0, index)
        return PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices), \
            self._hx_from_states(final)

    def _plan(self, input: SequenceInput, hx) -> Optional[_Plan]:
        """What the engine needs for this call where it runs the call exactly as
        torch.nn would; None otherwise (torch.nn runs it)."""
        packed = isinstance(input, PackedSequence)
        x = input.data if packed else input
        mode = _engine_mode(self)
        if x.dim() not in ((2,) if packed else (2, 3)) or x.size(-1) != self.input_size \
                or mode is None:
            return None
        batched = packed or x.dim() == 3
        if packed:
            steps, batch = input.batch_sizes.numel(), int(input.batch_sizes[0])
        else:
            if not batched:
                x = x.unsqueeze(0 if self.batch_first else 1)
            if self.batch_first:
                x = x.transpose(0, 1)
            steps, batch = x.size(0), x.size(1)
        if steps == 0:
            return None
        shapes = self._state_shapes(batch)
        if hx is None:
            states = [x.new_zeros(shape) for shape in shapes]
        else:
            states = self._states_from_hx(hx)
            if states is None or any(s.dim() != (3 if batched else 2) for s in states):
                return None
            if not batched:
                states = [s.unsqueeze(1) for s in states]
            if [tuple(s.shape) for s in states] != shapes:
                return None
        if packed:
            for indices in (input.sorted_indices, input.unsorted_indices):
                if indices is not None and (not isinstance(indices, Tensor) or
                                            indices.dtype != torch.int64 or
                                            tuple(indices.shape) != (batch,)):
                    return None
        # Read once: a parametrized weight is computed at every read.
        weights = [_parameters(self, names) for names in self._all_weights]
        dtype = _engine_dtype([x] + states + [w for ws in weights for w in ws], sequence=True)
        if dtype is None:
            return None
        return _Plan(mode, dtype, x, states, weights)

    def _run_layers(self, plan: _Plan, x: Tensor, states: List[Tensor],
                    lengths: Optional[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Layers x directions over time-major x (T, B, I); states are (L*D, B, .)."""
        dtype = plan.dtype
        x = _as(x, dtype)
        h0 = _as(states[0], dtype)
        c0 = _as(states[1], dtype) if len(states) > 1 else None
        directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                y, h, c = ops.rnn_layer(x, h0[k], None if c0 is None else c0[k],
                                        *self._engine_weights(plan.weights[k], dtype),
                                        lengths=lengths, mode=plan.mode, reverse=direction == 1)
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, p=self.dropout, training=True)
        final = [torch.stack(h_n)] + ([torch.stack(c_n)] if c0 is not None else [])
        return x, final

    def _engine_weights(self, weights: List[Tensor], dtype: torch.dtype):
        """(w_ih, w_hh, b_ih, b_hh, w_hr), None where absent, from one
        layer-direction's weights in torch.nn's order w_ih, w_hh[, b_ih, b_hh][, w_hr]."""
        weights = [_as(w, dtype) for w in weights]
        b_ih, b_hh = weights[2:4] if self.bias else (None, None)
        return weights[0], weights[1], b_ih, b_hh, weights[-1] if self.proj_size > 0 else None

    # -- hidden state: one tensor (h) for RNN and GRU, a pair (h, c) for LSTM

    def _states_from_hx(self, hx) -> Optional[List[Tensor]]:
        return [hx] if isinstance(hx, Tensor) else None

    def _hx_from_states(self, states: List[Tensor]):
        return states[0]

    def _state_shapes(self, batch: int) -> List[Tuple[int, int, int]]:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        return [(layers, batch, self.proj_size or self.hidden_size)]


_SEQUENCE_DOC = """

    Drop-in for torch.nn.{name}: it *is* a torch.nn.{name} (subclass) with the
    same constructor, parameters, state_dict and outputs; the recurrence runs in
    rnnkit's fused kernels. See torch.nn.{name} for the equations.

    Args:
        input_size: features of the input x.
        hidden_size: features of the hidden state h.
        num_layers: stacked recurrent layers. Default: 1.{extra_args}
        bias: whether the layers have bias_ih and bias_hh. Default: True.
        batch_first: input and output are (N, L, .) instead of (L, N, .); the
            states keep (D*num_layers, N, .). Default: False.
        dropout: dropout on the outputs of every layer but the last, in training
            only. Default: 0.
        bidirectional: run each layer both ways and concatenate. Default: False.{proj_arg}
        device, dtype: where and in what the parameters are created.

    Inputs: input, {hx_name}
        input: (L, N, H_in), (N, L, H_in) if batch_first, (L, H_in) unbatched,
            or a PackedSequence.
        {hx_doc}

    Outputs: output, {hn_name}
        output: (L, N, D*{out_width}), (N, L, .) if batch_first, (L, .)
            unbatched; a PackedSequence for a PackedSequence input.
        {hn_doc}

    D is 2 when bidirectional, else 1. Anything rnnkit's engine does not take
    exactly as torch.nn (see rnnkit.modules) runs torch.nn's own forward.
"""


class _OneStateSequence(_EngineSequence):
    """forward of the sequence modules whose state is one tensor (RNN, GRU)."""

    def forward(self, input: SequenceInput, hx: Optional[Tensor] = None
                ) -> Tuple[SequenceInput, Tensor]:
        """(output, h_n) for input and h_0, as torch.nn's forward (class docstring)."""
        return super().forward(input, hx)


_ONE_STATE_SEQUENCE = dict(
    proj_arg="", hx_name="h_0", hn_name="h_n", out_width="H_out",
    hx_doc="h_0: (D*num_layers, N, H_out) or (D*num_layers, H_out); zeros if None.",
    hn_doc="h_n: (D*num_layers, N, H_out), the final hidden state.")


class RNN(_OneStateSequence, nn.RNN):
    __doc__ = """Elman RNN, h' = tanh or relu(W_ih x + b_ih + W_hh h + b_hh).""" + \
        _SEQUENCE_DOC.format(
            name="RNN", extra_args="\n        nonlinearity: 'tanh' or 'relu'. Default: 'tanh'.",
            **_ONE_STATE_SEQUENCE)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: Device = None,
                 dtype: Optional[torch.dtype] = None, **kwargs) -> None:
        """See the class docstring; the arguments of torch.nn.RNN."""
        # torch.nn turns kwargs it does not know into its own errors (proj_size: ValueError).
        super().__init__(input_size, hidden_size, num_layers, nonlinearity=nonlinearity,
                         bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype, **kwargs)


class GRU(_OneStateSequence, nn.GRU):
    __doc__ = """GRU with torch.nn's gates r, z, n:
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.""" + \
        _SEQUENCE_DOC.format(name="GRU", extra_args="", **_ONE_STATE_SEQUENCE)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Device = None, dtype: Optional[torch.dtype] = None, **kwargs) -> None:
        """See the class docstring; the arguments of torch.nn.GRU."""
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype, **kwargs)


class LSTM(_EngineSequence, nn.LSTM):
    __doc__ = """LSTM with torch.nn's gates i, f, g, o and optional projection
    h = W_hr (o * tanh(c)).""" + _SEQUENCE_DOC.format(
        name="LSTM", extra_args="",
        proj_arg="\n        proj_size: width of h when > 0 (c keeps hidden_size). Default: 0.",
        hx_name="(h_0, c_0)", hn_name="(h_n, c_n)", out_width="H_out",
        hx_doc="(h_0, c_0): (D*num_layers, N, H_out) and (D*num_layers, N, hidden_size),\n"
               "            without N when unbatched; zeros if None. H_out is proj_size\n"
               "            when > 0, else hidden_size.",
        hn_doc="(h_n, c_n): the final states, shaped like (h_0, c_0).")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Device = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        """See the class docstring; the arguments of torch.nn.LSTM."""
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device=device, dtype=dtype)

    def forward(self, input: SequenceInput, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[SequenceInput, Tuple[Tensor, Tensor]]:
        """(output, (h_n, c_n)) for input and (h_0, c_0), as torch.nn's forward
        (class docstring)."""
        return super().forward(input, hx)

    def _states_from_hx(self, hx) -> Optional[List[Tensor]]:
        return list(hx) if _is_pair(hx) else None

    def _hx_from_states(self, states: List[Tensor]):
        return states[0], states[1]

    def _state_shapes(self, batch: int) -> List[Tuple[int, int, int]]:
        h_shape = super()._state_shapes(batch)[0]
        return [h_shape, (h_shape[0], batch, self.hidden_size)]


# ---- cells ---------------------------------------------------------------------

class _EngineCell(nn.RNNCellBase):
    """forward of RNNCell, LSTMCell and GRUCell on the engine: one step."""

    def __prepare_scriptable__(self) -> nn.Module:
        """torch.jit.script scripts the torch.nn twin (sharing the parameters)."""
        from .convert import torch_twin
        return torch_twin(self)

    def _states_from_hx(self, hx) -> Optional[List[Tensor]]:
        return [hx] if isinstance(hx, Tensor) else None

    def _common_call(self, input, hx):
        """forward of the common call (plain CPU/CUDA tensors of one engine
        dtype, well-formed, no autocast, no Python modes), in C++: what forward
        returns, or None where the rest of forward must decide."""
        mode = _engine_mode(self) if _common_call_allowed() else None
        if mode is None:
            return None
        return _C._cell_call(mode, input, hx, self._parameters, self.input_size, self.hidden_size)

    def _engine_step(self, input, hx) -> Optional[List[Tensor]]:
        """The new states (batched like input), or None where torch.nn must run the
        call: anything the engine does not take exactly as torch.nn would."""
        if _recording() or not isinstance(input, Tensor) or input.dim() not in (1, 2):
            return None
        states = None if hx is None else self._states_from_hx(hx)
        if hx is not None and states is None:
            return None
        mode = _engine_mode(self)
        if mode is None or self.hidden_size == 0 or input.size(-1) != self.input_size:
            return None
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if states is None:
            states = [x.new_zeros((x.size(0), self.hidden_size))
                      for _ in range(2 if mode == "LSTM" else 1)]
        elif any(s.dim() != input.dim() or s.size(-1) != self.hidden_size for s in states):
            return None
        elif not batched:
            states = [s.unsqueeze(0) for s in states]
        if any(s.size(0) != x.size(0) for s in states):
            return None
        params = _parameters(self, ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        dtype = _engine_dtype([x] + states + [p for p in params if p is not None], sequence=False)
        if dtype is None:
            return None
        x, states = _as(x, dtype), [_as(s, dtype) for s in states]
        params = [_as(p, dtype) for p in params]
        h, c = ops.rnn_cell(x, states[0], states[1] if len(states) > 1 else None, *params,
                            mode=mode)
        out = [h] if c is None else [h, c]
        return out if batched else [s.squeeze(0) for s in out]


_CELL_DOC = """

    Drop-in for torch.nn.{name}: it *is* a torch.nn.{name} (subclass) with the
    same constructor, parameters and outputs; the step runs in rnnkit's fused
    kernels. See torch.nn.{name} for the equations.

    Args:
        input_size: features of the input x.
        hidden_size: features of the hidden state h.
        bias: whether the cell has bias_ih and bias_hh. Default: True.{extra_args}
        device, dtype: where and in what the parameters are created.

    Inputs: input, {hx_name}
        input: (N, input_size) or (input_size) unbatched.
        {hx_doc}

    Outputs: {out_doc}

    Anything rnnkit's engine does not take exactly as torch.nn (see
    rnnkit.modules) runs torch.nn's own forward.
"""


class _OneStateCell(_EngineCell):
    """forward of the cells whose state is one tensor (RNNCell, GRUCell)."""

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        """One step: the next hidden state, as torch.nn's forward."""
        out = self._common_call(input, hx)
        if out is not None:
            return out
        if isinstance(input, torch.fx.Proxy):
            return _fx_leaf(self, input, hx)
        out = self._engine_step(input, hx)
        return super().forward(input, hx) if out is None else out[0]


_ONE_STATE = dict(hx_name="hidden",
                  hx_doc="hidden: (N, hidden_size) or (hidden_size); zeros if None.",
                  out_doc="h': (N, hidden_size) or (hidden_size).")


class RNNCell(_OneStateCell, nn.RNNCell):
    __doc__ = "One Elman RNN step." + _CELL_DOC.format(
        name="RNNCell", extra_args="\n        nonlinearity: 'tanh' or 'relu'. Default: 'tanh'.",
        **_ONE_STATE)


class GRUCell(_OneStateCell, nn.GRUCell):
    __doc__ = "One GRU step." + _CELL_DOC.format(name="GRUCell", extra_args="", **_ONE_STATE)


class LSTMCell(_EngineCell, nn.LSTMCell):
    __doc__ = "One LSTM step." + _CELL_DOC.format(
        name="LSTMCell", extra_args="",
        hx_name="(h, c)",
        hx_doc="(h, c): each (N, hidden_size) or (hidden_size); zeros if None.",
        out_doc="(h', c'): each (N, hidden_size) or (hidden_size).")

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        """One step: the next (h, c), as torch.nn's forward."""
        out = self._common_call(input, hx)
        if out is not None:
            return out
        if isinstance(input, torch.fx.Proxy):
            return _fx_leaf(self, input, hx)
        out = self._engine_step(input, hx)
        return super().forward(input, hx) if out is None else (out[0], out[1])

    def _states_from_hx(self, hx) -> Optional[List[Tensor]]:
        return list(hx) if _is_pair(hx) else None


# torch.load(weights_only=True) may rebuild these classes: they hold only what
# their torch.nn twins hold.
torch.serialization.add_safe_globals([RNN, GRU, LSTM, RNNCell, GRUCell, LSTMCell])
