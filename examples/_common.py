"""Plumbing shared by the examples: choosing the engine, seeding, devices, timing.

Nothing here knows about a particular model; char_lm.py and forecast.py import it.
"""
import os
import random
import sys
import time

import numpy as np
import torch

IMPLS = ("rnnkit", "torch")
CELLS = ("lstm", "gru", "rnn")


def rnn_class(impl, cell):
    """The LSTM/GRU/RNN class of the chosen engine.

    Both engines take torch.nn's constructor arguments and use its parameter
    names, so the rest of each example does not care which one it gets.
    """
    cell = cell.lower()
    if cell not in CELLS:
        raise ValueError(f"--cell must be one of {CELLS}, got {cell!r}")
    if impl == "torch":
        return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    if impl == "rnnkit":
        try:
            import rnnkit
        except Exception as exc:  # not built / not installed
            raise RuntimeError(
                f"--impl rnnkit needs the rnnkit extension, which failed to import ({exc}); "
                "build it (pip install --no-build-isolation .) or run with --impl torch"
            ) from exc
        cls = getattr(rnnkit, cell.upper(), None)
        if cls is None:
            raise RuntimeError(f"rnnkit.{cell.upper()} is not available in this build; run with --impl torch")
        return cls
    raise ValueError(f"--impl must be one of {IMPLS}, got {impl!r}")


def rnnkit_available(cell="lstm"):
    try:
        rnn_class("rnnkit", cell)
        return True
    except Exception:
        return False


def set_seed(seed):
    """Seed every generator the examples draw from (Python, NumPy, torch CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_get(device):
    """The generator state that training draws from on `device` (CPU, plus CUDA when used)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def rng_set(state, device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def resolve_device(name):
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA GPU")
    return dev


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device):
    """Wall clock after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


def progress(iterable=None, **kw):
    """tqdm if it is installed, else a silent pass-through."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        class _Null:
            def __init__(self, it=None, **_):
                self.it = it

            def __iter__(self):
                return iter(self.it)

            def update(self, n=1):
                pass

            def set_postfix(self, *a, **k):
                pass

            def set_description(self, *a, **k):
                pass

            def close(self):
                pass

            def write(self, s):
                print(s)

        return _Null(iterable, **kw)
    kw.setdefault("file", sys.stderr)
    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kw)


def ensure_parent(path):
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def add_run_args(parser):
    """The flags every example shares: where it runs, its seed, its size."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in well under a minute on a CPU")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_with_presets(parser, argv, quick, full):
    """Parse, apply --threads, and fill what was not given from the quick or full preset."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return fill_defaults(args, quick if args.quick else full)


def fill_defaults(args, preset):
    """Fill every argparse value left at None from `preset` (explicit flags win)."""
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def format_table(header, rows):
    cols = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cols]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def env_line(device):
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads"
    return f"torch {torch.__version__}, {where}"
