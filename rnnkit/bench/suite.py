"""What the benchmark runs: one configuration (Config), its text form (the
shape spec that --shape reads and --list prints, see SHAPE_HELP), and the suites.
"""
import argparse
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .. import cells

SHAPE_HELP = """\
A shape spec is KIND:key=value,...,flag,... for example
  lstm:T=35,B=20,I=200,H=200,layers=2
  lstm:T=50,B=64,I=512,H=256,bidirectional,packed
  gru:T=100,B=1,H=512,batch_first,steps
  lstm:B=64,I=512,H=1024,cell
KIND: lstm, gru, rnn_tanh (or rnn), rnn_relu. Keys: T time steps, B batch, I input size
(default H), H hidden size, layers, proj (LSTM projection size), mode (inference, training),
dtype (fp32, bf16, fp16, fp64). Flags: bidirectional, batch_first, packed (a PackedSequence of
variable lengths, the longest T), and how the module is called: cell (one call of
torch.nn.LSTMCell/GRUCell/RNNCell) or steps (T calls of the layer, one time step each, the
state carried over); neither: one call over the whole sequence."""

MODES = ("inference", "training")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
CALLS = {
    "layer": "one call over the whole sequence",
    "cell": "one call of the torch.nn cell class (one step)",
    "steps": "T calls of the layer, one time step each, the state carried over",
}

# The PyTorch fastrnns benchmark default: T=100, B=64, I=H=512, one layer.
FASTRNNS: Dict[str, Any] = {"seq": 100, "batch": 64, "hidden": 512, "input_size": 512, "layers": 1,
                            "bidirectional": False, "proj": 0, "batch_first": False, "packed": False, "call": "layer"}


@dataclass(frozen=True)
class Config:
    """One benchmark case: a module, its sizes, how it is called, the mode and dtype."""

    cell: str                         # engine mode: LSTM, GRU, RNN_TANH, RNN_RELU
    mode: str                         # "inference" or "training"
    dtype: str                        # a key of DTYPES
    batch: int
    hidden: int
    seq: int                          # time steps (1 for a cell call)
    layers: int = 1
    bidirectional: bool = False
    input_size: Optional[int] = None  # None: the hidden size
    proj: int = 0                     # LSTM projection size; 0: none
    batch_first: bool = False
    packed: bool = False              # PackedSequence of variable lengths, the longest seq
    call: str = "layer"               # a key of CALLS
    tags: Tuple[str, ...] = field(default=(), compare=False)  # where the shape comes from

    def __post_init__(self):
        if self.input_size is None:
            object.__setattr__(self, "input_size", self.hidden)
        problem = self._problem()
        if problem:
            raise ValueError(f"{self.label}: {problem}")
        if all(getattr(self, k) == v for k, v in FASTRNNS.items()) and "fastrnns" not in self.tags:
            object.__setattr__(self, "tags", self.tags + ("fastrnns",))

    def _problem(self) -> Optional[str]:
        if self.cell not in cells.KINDS:
            return f"unknown cell {self.cell!r}; expected one of {', '.join(cells.MODES)}"
        if self.mode not in MODES:
            return f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}"
        if self.dtype not in DTYPES:
            return f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}"
        if self.call not in CALLS:
            return f"unknown call {self.call!r}; expected one of {', '.join(CALLS)}"
        if min(self.batch, self.hidden, self.seq, self.layers) < 1 or self.input_size < 1 or self.proj < 0:
            return "B, H, T, I and layers must be at least 1, proj at least 0"
        if self.proj and (self.cell != "LSTM" or self.proj >= self.hidden):
            return "proj is for LSTM only, and smaller than H"
        if self.call == "cell" and (self.seq != 1 or self.layers != 1 or self.bidirectional or self.packed
                                    or self.batch_first or self.proj):
            return "a cell call is one step of one cell: T=1, one layer, no bidirectional/packed/batch_first/proj"
        if self.call == "steps" and (self.packed or self.bidirectional):
            return "a step-by-step loop cannot run the reverse direction or packed sequences"
        return None

    @property
    def label(self) -> str:
        return spec(asdict(self))


def spec(row: dict) -> str:
    """The shape spec of a configuration (or of a result row): what --shape
    reads back, with mode and dtype, so that any row can be rerun alone."""
    kind = row["cell"].lower()
    parts = ([] if row.get("call") == "cell" else [f"T={row['seq']}"]) + [f"B={row['batch']}"]
    if row.get("input_size", row["hidden"]) != row["hidden"]:
        parts.append(f"I={row['input_size']}")
    parts.append(f"H={row['hidden']}")
    if row.get("layers", 1) != 1:
        parts.append(f"layers={row['layers']}")
    if row.get("proj"):
        parts.append(f"proj={row['proj']}")
    parts += [flag for flag in ("bidirectional", "batch_first", "packed") if row.get(flag)]
    if row.get("call", "layer") != "layer":
        parts.append(row["call"])
    parts += [f"mode={row['mode']}", f"dtype={row['dtype']}"]
    return f"{kind}:{','.join(parts)}"


# ---------------------------------------------------------------------------
# Reading shape specs and option values
# ---------------------------------------------------------------------------

_KIND_ALIASES = {"RNN": "RNN_TANH", "TANH": "RNN_TANH", "RELU": "RNN_RELU"}
_SIZE_KEYS = {"T": "seq", "B": "batch", "I": "input_size", "H": "hidden", "LAYERS": "layers", "PROJ": "proj"}
_FLAGS = {"BIDIRECTIONAL": "bidirectional", "BATCH_FIRST": "batch_first", "PACKED": "packed"}


def parse_cell(text: str) -> str:
    name = text.strip().upper().replace("-", "_")
    name = _KIND_ALIASES.get(name, name)
    if name not in cells.KINDS:
        raise argparse.ArgumentTypeError(f"unknown cell {text!r}; expected one of lstm, gru, rnn_tanh, rnn_relu")
    return name


def parse_choice(choices: Iterable[str]):
    choices = tuple(choices)

    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise argparse.ArgumentTypeError(f"unknown value {text!r}; expected one of {', '.join(choices)}")
        return text.lower()
    return parse


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def parse_shape(text: str) -> dict:
    """A shape spec as Config keyword arguments (mode and dtype only where
    the spec names them); ArgumentTypeError saying what is wrong otherwise."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected KIND:T=..,B=..,H=..[,..], e.g. "
                                         "lstm:T=35,B=20,I=200,H=200,layers=2")
    found: Dict[str, Any] = {"cell": parse_cell(kind)}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        upper = key.strip().upper()
        if not eq:
            if upper in _FLAGS:
                found[_FLAGS[upper]] = True
            elif upper.lower() in CALLS:
                found["call"] = upper.lower()
            else:
                raise argparse.ArgumentTypeError(f"shape {text!r}: unknown flag {item!r}; flags are "
                                                 "bidirectional, batch_first, packed, cell, steps")
        elif upper in _SIZE_KEYS:
            try:
                found[_SIZE_KEYS[upper]] = int(value)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"shape {text!r}: {key} must be a whole number, got {value!r}") from None
        elif upper == "MODE":
            found["mode"] = parse_choice(MODES)(value)
        elif upper == "DTYPE":
            found["dtype"] = parse_choice(DTYPES)(value)
        elif upper in _FLAGS:
            found[_FLAGS[upper]] = parse_bool(value)
        else:
            raise argparse.ArgumentTypeError(f"shape {text!r}: unknown key {key!r}; keys are T, B, I, H, "
                                             "layers, proj, mode, dtype")
    if found.get("call") == "cell":
        found.setdefault("seq", 1)
    missing = [k for k, name in (("B", "batch"), ("H", "hidden"), ("T", "seq")) if name not in found]
    if missing:
        raise argparse.ArgumentTypeError(f"shape {text!r}: {', '.join(missing)} missing")
    # Check the sizes now, so that a bad spec fails when it is read.
    try:
        Config(**{"mode": MODES[0], "dtype": "fp32", **found})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"shape {text!r}: {str(exc).split(': ', 1)[-1]}") from None
    return found


def shape_configs(shapes: Sequence[dict], modes: Sequence[str], dtypes: Sequence[str]) -> List[Config]:
    """Configurations of user-given shapes: each in the given modes and
    dtypes, except where the spec names its own."""
    made = []
    for shape in shapes:
        for mode in ([shape["mode"]] if "mode" in shape else modes):
            for dtype in ([shape["dtype"]] if "dtype" in shape else dtypes):
                made.append(Config(**{**shape, "mode": mode, "dtype": dtype, "tags": ("shape",)}))
    return dedupe(made)


# ---------------------------------------------------------------------------
# The suites
# ---------------------------------------------------------------------------

SWEEP_CELLS = ("LSTM", "GRU", "RNN_TANH")


def block(cells_: Sequence[str], modes: Sequence[str], dtypes: Sequence[str], batches: Sequence[int],
          hiddens: Sequence[int], seqs: Sequence[int], tags: Tuple[str, ...] = (), **fixed) -> List[Config]:
    """The Cartesian product of the given axis values; `fixed` sets the
    other Config fields alike for all."""
    return [Config(c, m, d, b, h, t, tags=tags, **fixed)
            for c in cells_ for m in modes for d in dtypes for t in seqs for h in hiddens for b in batches]


def dedupe(configs: Sequence[Config]) -> List[Config]:
    return list(dict.fromkeys(configs))


def quick_suite(device: str) -> List[Config]:
    """A couple of minutes on a 2-core CPU: the fastrnns default (throughput)
    and a batch-1 case (latency) for each cell kind and mode; the GPU adds the
    fastrnns default in bf16."""
    dtypes = ("fp32", "bf16") if device == "cuda" else ("fp32",)
    fast = block(SWEEP_CELLS, MODES, dtypes, [64], [512], [100])
    latency = block(SWEEP_CELLS, MODES, ("fp32",), [1], [256], [100])
    return dedupe(fast + latency)


def sweep(device: str) -> List[Config]:
    """The size sweep of DESIGN.md. The CPU keeps to B <= 64, H <= 512,
    T = 100 and fp32, so that it ends in minutes on 2 cores."""
    dtypes: Tuple[str, ...]
    batches: Tuple[int, ...]
    hiddens: Tuple[int, ...]
    seqs: Tuple[int, ...]
    if device == "cuda":
        dtypes, batches, hiddens, seqs = ("fp32", "bf16", "fp16"), (1, 8, 64, 256), (128, 256, 512, 1024), (100, 1000)
    else:
        dtypes, batches, hiddens, seqs = ("fp32",), (1, 8, 64), (128, 256, 512), (100,)
    grid = block(SWEEP_CELLS, MODES, dtypes, batches, hiddens, seqs)
    # Stacks and directions at the fastrnns size (which the grid already
    # holds for one layer, one direction).
    f = FASTRNNS
    stacked = [Config(c, m, d, f["batch"], f["hidden"], f["seq"], layers, bidirectional)
               for c in SWEEP_CELLS for m in MODES for d in dtypes
               for layers in (1, 2) for bidirectional in (False, True)]
    return dedupe(grid + stacked)


def real_suite(device: str) -> List[Config]:
    """Shapes from real programs, in both modes; fp32, and on the GPU also
    fp16 (the only dtype for which cuDNN uses its persistent kernel at H > 192)."""
    dtypes = ("fp32", "fp16") if device == "cuda" else ("fp32",)

    def add(tag, kinds, batches, hiddens, seq, **fixed):
        return block(kinds, MODES, dtypes, batches, hiddens, [seq], tags=("real", tag), **fixed)

    return dedupe(
        # A decoder or a sampler steps once per token: a cell call, or a layer call with T=1.
        add("cell call", SWEEP_CELLS, (1, 16), (64, 256, 512), 1, call="cell")
        + add("T=1 layer call", SWEEP_CELLS, (1, 16), (64, 256, 512), 1)
        # Word-level language model (the PyTorch word_language_model example's sizes).
        + add("word LM", ("LSTM", "GRU"), (20,), (200,), 35, layers=2)
        # Translation encoder: a bidirectional LSTM over packed sentences of different lengths.
        + add("packed encoder", ("LSTM",), (64,), (256,), 50, input_size=512, bidirectional=True, packed=True)
        # Attention decoder: an LSTMCell of 1024 units, fed the embedding and context.
        + add("decoder cell", ("LSTM",), (64,), (1024,), 1, input_size=512, call="cell")
        # WaveRNN-style sampling: a batch-first GRU of 512 units called one step at a time.
        + add("step loop", ("GRU",), (1,), (512,), 100, batch_first=True, call="steps")
        # Inputs narrower or wider than the state: speech features, a wide embedding, a small
        # control signal; and an LSTM with a projection (LSTMP, speech recognition).
        + add("I != H", ("LSTM",), (16,), (256,), 100, input_size=40)
        + add("I != H", ("GRU",), (16,), (256,), 100, input_size=1024)
        + add("I != H", ("RNN_TANH",), (16,), (512,), 100, input_size=16)
        + add("projection", ("LSTM",), (16,), (1024,), 100, input_size=80, proj=256)
    )


def full_suite(device: str) -> List[Config]:
    """The sweep and the shapes from real programs."""
    return dedupe(sweep(device) + real_suite(device))


SUITES = {"quick": quick_suite, "full": full_suite, "sweep": sweep, "real": real_suite}


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------

# The filters: Config field (and command-line option) -> parser of one value.
FILTERS = {
    "cell": parse_cell,
    "mode": parse_choice(MODES),
    "dtype": parse_choice(DTYPES),
    "batch": int,
    "hidden": int,
    "seq": int,
    "layers": int,
    "bidirectional": parse_bool,
}


def apply_filters(configs: Sequence[Config], **filters) -> List[Config]:
    """Keeps the configurations whose fields are among the given values; a
    filter that is None or empty keeps everything."""
    kept = list(configs)
    for name, values in filters.items():
        if values:
            kept = [c for c in kept if getattr(c, name) in set(values)]
    return kept


def axes(configs: Sequence[Config]) -> Dict[str, list]:
    """The values each filter could pick from these configurations."""
    return {name: sorted({getattr(c, name) for c in configs}, key=str) for name in FILTERS}
