"""`python -m rnnkit.bench`: rnnkit against torch.nn, same weights, same run.

For every configuration the two sides get the same weights (load_state_dict)
and the same input. The numbers are compared first; a configuration whose
numbers disagree is reported as FAILED and not timed. Then both sides are
timed in interleaved rounds (so drift in clocks or machine load hits both
alike) until the configuration's time budget is spent, and the medians are
compared: speedup = torch.nn time / rnnkit time, above 1 means rnnkit is faster.

The code is in four parts: the configuration grid, the correctness gate, the
timing, and the command line; the reports (table, JSON, markdown, plot,
progress bar) live in rnnkit/bench_report.py. It needs nothing but torch
(the GPU machine has no tqdm and no network); matplotlib only for --plot.
"""
import argparse
import math
import os
import platform
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from statistics import median
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import bench_report as report

# ---------------------------------------------------------------------------
# The configuration grid
# ---------------------------------------------------------------------------

# cell kind -> (torch.nn class name, extra constructor arguments)
CELLS = {
    "LSTM": ("LSTM", {}),
    "GRU": ("GRU", {}),
    "RNN_TANH": ("RNN", {"nonlinearity": "tanh"}),
    "RNN_RELU": ("RNN", {"nonlinearity": "relu"}),
}
MODES = ("inference", "training")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}

# The PyTorch fastrnns benchmark default: T=100, B=64, I=H=512, one layer.
FASTRNNS = {"seq": 100, "batch": 64, "hidden": 512, "layers": 1, "bidirectional": False}

# Correctness tolerance on max|rnnkit - torch.nn| / max|torch.nn|, per tensor
# (see errors()). fp32 compares two fp32 computations that differ only in
# summation order; TF32 and the half types round every GEMM input and every
# stored step, and those roundings differ between the two sides and compound
# over T steps, so they get looser bounds. A wrong gate, bias or index moves
# the result by O(1), far above all of these.
TOLERANCE = {"fp64": 1e-9, "fp32": 1e-4, "tf32": 1e-2, "fp16": 2e-2, "bf16": 6e-2}


@dataclass(frozen=True)
class Config:
    """One benchmark case. input_size is always equal to hidden."""

    cell: str  # a key of CELLS
    mode: str  # "inference" or "training"
    dtype: str  # a key of DTYPES
    batch: int
    hidden: int
    seq: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def input_size(self) -> int:
        return self.hidden

    @property
    def tags(self) -> List[str]:
        same = all(getattr(self, k) == v for k, v in FASTRNNS.items())
        return ["fastrnns"] if same else []

    @property
    def label(self) -> str:
        return report.describe(asdict(self))


def _block(cells, modes, dtypes, batches, hiddens, seqs, layers=(1,), bidirs=(False,)) -> List[Config]:
    """The Cartesian product of the given axis values."""
    return [
        Config(c, m, d, b, h, t, l, bi)
        for c in cells for m in modes for d in dtypes
        for t in seqs for h in hiddens for b in batches
        for l in layers for bi in bidirs
    ]


def _dedupe(configs: Sequence[Config]) -> List[Config]:
    return list(dict.fromkeys(configs))


SWEEP_CELLS = ("LSTM", "GRU", "RNN_TANH")


def quick_suite(device: str) -> List[Config]:
    """A couple of minutes on a 2-core CPU: the fastrnns default (throughput)
    and a batch-1 case (latency) for each cell kind and mode; the GPU adds the
    fastrnns default in bf16."""
    dtypes = ("fp32", "bf16") if device == "cuda" else ("fp32",)
    fast = _block(SWEEP_CELLS, MODES, dtypes, [64], [512], [100])
    latency = _block(SWEEP_CELLS, MODES, ("fp32",), [1], [256], [100])
    return _dedupe(fast + latency)


def full_sweep(device: str) -> List[Config]:
    """The sweep of the issue. On the CPU it keeps to B <= 64, H <= 512,
    T = 100 and fp32, so it ends in about 20 minutes on 2 cores."""
    if device == "cuda":
        dtypes, batches, hiddens, seqs = ("fp32", "bf16", "fp16"), (1, 8, 64, 256), (128, 256, 512, 1024), (100, 1000)
    else:
        dtypes, batches, hiddens, seqs = ("fp32",), (1, 8, 64), (128, 256, 512), (100,)
    sweep = _block(SWEEP_CELLS, MODES, dtypes, batches, hiddens, seqs)
    # Stacks and directions at the fastrnns size (which the sweep already holds
    # for one layer, one direction).
    f = FASTRNNS
    stacked = _block(SWEEP_CELLS, MODES, dtypes, [f["batch"]], [f["hidden"]], [f["seq"]],
                     layers=(1, 2), bidirs=(False, True))
    return _dedupe(sweep + stacked)


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def _parse_cell(text: str) -> str:
    name = text.upper().replace("-", "_")
    name = {"RNN": "RNN_TANH", "TANH": "RNN_TANH", "RELU": "RNN_RELU"}.get(name, name)
    if name not in CELLS:
        raise argparse.ArgumentTypeError(f"unknown cell {text!r}; expected one of lstm, gru, rnn_tanh, rnn_relu")
    return name


def _parse_choice(choices):
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise argparse.ArgumentTypeError(f"unknown value {text!r}; expected one of {', '.join(choices)}")
        return text.lower()
    return parse


# The filters: Config field (and CLI option) -> parser of one value.
FILTERS = {
    "cell": _parse_cell,
    "mode": _parse_choice(MODES),
    "dtype": _parse_choice(tuple(DTYPES)),
    "batch": int,
    "hidden": int,
    "seq": int,
    "layers": int,
    "bidirectional": _parse_bool,
}


def apply_filters(configs: Sequence[Config], **filters) -> List[Config]:
    """Keeps the configurations whose fields are among the given values; a
    filter that is None or empty keeps everything."""
    kept = list(configs)
    for field, values in filters.items():
        if values:
            kept = [c for c in kept if getattr(c, field) in set(values)]
    return kept


# ---------------------------------------------------------------------------
# One configuration: modules, inputs, the correctness gate
# ---------------------------------------------------------------------------

def rnnkit_classes() -> Dict[str, type]:
    """The rnnkit module for each cell kind, looked up when a run starts: a
    partial build may lack one (a clear error then), and the tests hand
    run_suite() other classes instead."""
    import rnnkit

    classes = {}
    for cell, (name, _) in CELLS.items():
        cls = getattr(rnnkit, name, None)
        if cls is None:
            raise RuntimeError(f"rnnkit.{name} is not available in this build")
        classes[cell] = cls
    return classes


def config_seed(cfg: Config, seed: int) -> int:
    """A seed of its own for each configuration: reproducible, not shared."""
    return (zlib.crc32(cfg.label.encode()) + seed) % (2**31)


def make_modules(cfg: Config, device: str, impl: Dict[str, type], seed: int = 0):
    """(torch.nn module, rnnkit module) with the same weights. The weights are
    drawn on the CPU in fp32 under a fixed seed, so every device and dtype
    starts from the same numbers, then both sides are converted alike."""
    name, extra = CELLS[cfg.cell]
    kwargs = dict(num_layers=cfg.layers, bidirectional=cfg.bidirectional, **extra)
    torch.manual_seed(config_seed(cfg, seed))
    ref = getattr(torch.nn, name)(cfg.input_size, cfg.hidden, **kwargs)
    ours = impl[cfg.cell](cfg.input_size, cfg.hidden, **kwargs)
    ours.load_state_dict(ref.state_dict())
    dtype = DTYPES[cfg.dtype]
    return ref.to(device=device, dtype=dtype), ours.to(device=device, dtype=dtype)


def make_inputs(cfg: Config, device: str, seed: int = 0):
    """The input (T, B, I) and a fixed random gradient for the output: the
    training loss is (out * grad_out).sum(), which tests every output element
    with its own weight (out.sum() would give all of them the same one).
    Drawn on the device itself: at T=1000, B=256, H=1024 a CPU draw takes longer
    than the benchmark."""
    gen = torch.Generator(device=device).manual_seed(config_seed(cfg, seed) + 1)
    dtype = DTYPES[cfg.dtype]
    x = torch.randn(cfg.seq, cfg.batch, cfg.input_size, device=device, dtype=dtype, generator=gen)
    out_width = cfg.hidden * (2 if cfg.bidirectional else 1)
    grad_out = torch.randn(cfg.seq, cfg.batch, out_width, device=device, dtype=dtype, generator=gen)
    return x, grad_out


def _flat_state(state):
    return list(state) if isinstance(state, (tuple, list)) else [state]


def run_once(module, cfg: Config, x, grad_out):
    """One call with everything kept, for the check: (output tensors, input
    gradient, {parameter name: gradient}). The output tensors are y and the
    final states, so the check also covers the lower layers' h_n, which y
    does not show."""
    if cfg.mode == "inference":
        module.eval()
        with torch.no_grad():
            out, state = module(x)
        return [out] + _flat_state(state), None, {}
    module.train()  # dropout is 0, so train and eval compute the same thing
    module.zero_grad(set_to_none=True)
    xg = x.detach().clone().requires_grad_(True)
    out, state = module(xg)
    out.backward(grad_out)
    grads = {n: p.grad for n, p in module.named_parameters()}
    return [out.detach()] + [s.detach() for s in _flat_state(state)], xg.grad, grads


def errors(ours: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """max abs error and max rel error, where rel is max|ours - ref| over
    max|ref|: element-wise ratios blow up wherever ref happens to cross zero."""
    if ours is None or ref is None or ours.shape != ref.shape:
        return {"max_abs": math.inf, "max_rel": math.inf}
    wide = torch.promote_types(ref.dtype, torch.float32)
    diff = (ours.to(wide) - ref.to(wide)).abs().max().item() if ref.numel() else 0.0
    scale = ref.to(wide).abs().max().item() if ref.numel() else 0.0
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return {"max_abs": diff, "max_rel": rel}


def _rank(err: Dict[str, float]) -> float:
    """Sort key for errors: NaN counts as the worst (max() would skip it)."""
    return math.inf if math.isnan(err["max_rel"]) else err["max_rel"]


def tolerance(cfg: Config, device: str, tf32: bool) -> float:
    if cfg.dtype == "fp32" and tf32 and device == "cuda":
        return TOLERANCE["tf32"]
    return TOLERANCE[cfg.dtype]


def check_correctness(cfg: Config, ref, ours, x, grad_out, tol: float):
    """The gate: returns (ok, errors). errors has "output" (y and final
    states), and in training "input_grad" and "weight_grad" (the worst
    parameter, named under "param"). ok means every max_rel is within tol
    (NaN fails)."""
    ref_out, ref_dx, ref_dw = run_once(ref, cfg, x, grad_out)
    our_out, our_dx, our_dw = run_once(ours, cfg, x, grad_out)
    if len(ref_out) != len(our_out):
        found = {"output": {"max_abs": math.inf, "max_rel": math.inf}}
    else:
        found = {"output": max((errors(o, r) for o, r in zip(our_out, ref_out)), key=_rank)}
    if cfg.mode == "training":
        found["input_grad"] = errors(our_dx, ref_dx)
        per_param = {n: errors(our_dw.get(n), g) for n, g in ref_dw.items()}
        name = max(per_param, key=lambda n: _rank(per_param[n]))
        found["weight_grad"] = dict(per_param[name], param=name)
    ok = all(e["max_rel"] <= tol for e in found.values())  # False for NaN
    return ok, found


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def make_step(module, cfg: Config, x, grad_out) -> Callable[[], None]:
    """What is timed: inference is a forward under no_grad in eval mode;
    training is forward + backward with gradients for the input and every
    parameter. Gradients are dropped at the end of a step, as zero_grad() in
    a training loop would, so each step allocates its own and the memory
    measured from before a step covers them."""
    if cfg.mode == "inference":
        module.eval()

        def step():
            with torch.no_grad():
                module(x)
        return step

    module.train()
    xg = x.detach().requires_grad_(True)
    params = list(module.parameters())

    def step():
        out, _ = module(xg)
        out.backward(grad_out)
        xg.grad = None
        for p in params:
            p.grad = None
    return step


def time_once(step: Callable[[], None], device: str) -> float:
    """Seconds for one step. CUDA: events around the step on an idle stream
    (synchronized before), so launch gaps count, as they do for a user."""
    if device == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def time_pair(steps: Dict[str, Callable[[], None]], device: str, budget: float,
              min_reps: int = 3, max_reps: int = 500) -> Dict[str, List[float]]:
    """Times the sides in alternating rounds (A B, B A, ...) until `budget`
    seconds of wall time are spent, with at least min_reps and at most
    max_reps rounds: a budget, not a count, so tiny cases get many samples and
    huge ones do not take minutes."""
    names = list(steps)
    times = {n: [] for n in names}
    started = time.perf_counter()
    for r in range(max_reps):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(time_once(steps[n], device))
        if r + 1 >= min_reps and time.perf_counter() - started >= budget:
            break
    return times


def peak_memory_mib(step: Callable[[], None], device: str) -> Optional[float]:
    """Runs the step once (it doubles as a warm-up) and, on CUDA, returns the
    peak memory it allocated above what was allocated before it, in MiB: what
    the step itself needs (activations, workspace, outputs, gradients), not the
    weights and inputs both sides share. None on the CPU: torch has no CPU
    allocator statistics, and process RSS would not be a fair number."""
    if device != "cuda":
        step()
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _spread(samples: List[float]) -> float:
    """Interquartile range over the median: how noisy the timing was."""
    if len(samples) < 4:
        return (max(samples) - min(samples)) / median(samples)
    q = sorted(samples)
    n = len(q)
    return (q[(3 * n) // 4] - q[n // 4]) / median(q)


# ---------------------------------------------------------------------------
# One configuration, start to end, and a suite of them
# ---------------------------------------------------------------------------

SIDES = ("torch", "rnnkit")
WARMUP_SHARE = 0.2  # warm-up time, as a share of the timing budget


def empty_row(cfg: Config) -> dict:
    row = asdict(cfg)
    row.update(input_size=cfg.input_size, tags=cfg.tags, status=None, message=None, tolerance=None, errors={})
    for side in SIDES:
        row.update({f"{side}_ms": None, f"{side}_us_per_step": None, f"{side}_min_ms": None,
                    f"{side}_spread": None, f"{side}_reps": 0, f"{side}_peak_mib": None})
    row["speedup"] = None
    return row


def failure_message(found: Dict[str, dict], tol: float) -> str:
    bad = [f"{name}{'(' + e['param'] + ')' if 'param' in e else ''} {e['max_rel']:.1e}"
           for name, e in found.items() if not e["max_rel"] <= tol]
    return f"max rel error above {tol:g}: {', '.join(bad)}"


def time_sides(cfg: Config, steps: Dict[str, Callable[[], None]], device: str, budget: float,
               min_reps: int, max_reps: int) -> dict:
    """Warm-up, peak memory and timing of both sides: the row's time fields."""
    fields = {}
    # Warm-up: the first calls (they also measure peak memory), then calls
    # thrown away until a share of the budget is spent; short steps need
    # many before caches, thread pools and clocks settle, long ones none.
    started = time.perf_counter()
    for side, step in steps.items():
        fields[f"{side}_peak_mib"] = peak_memory_mib(step, device)
    while time.perf_counter() - started < WARMUP_SHARE * budget:
        for step in steps.values():
            time_once(step, device)
    for side, samples in time_pair(steps, device, budget, min_reps, max_reps).items():
        mid = median(samples)
        fields.update({f"{side}_ms": mid * 1e3, f"{side}_us_per_step": mid * 1e6 / cfg.seq,
                       f"{side}_min_ms": min(samples) * 1e3, f"{side}_spread": _spread(samples),
                       f"{side}_reps": len(samples)})
    fields["speedup"] = fields["torch_ms"] / fields["rnnkit_ms"]
    return fields


def bench_config(cfg: Config, device: str, impl: Optional[Dict[str, type]] = None, *, budget: float = 1.0,
                 min_reps: int = 3, max_reps: int = 500, tf32: bool = False, seed: int = 0) -> dict:
    """Checks, then times one configuration; returns its row (a dict, as in
    the JSON). status is "ok", "FAILED" (numbers disagree, not timed) or
    "ERROR" (an exception; message says which)."""
    impl = impl if impl is not None else rnnkit_classes()
    row = empty_row(cfg)
    row["tolerance"] = tol = tolerance(cfg, device, tf32)
    ref = ours = x = grad_out = steps = None
    try:
        ref, ours = make_modules(cfg, device, impl, seed)
        x, grad_out = make_inputs(cfg, device, seed)
        ok, row["errors"] = check_correctness(cfg, ref, ours, x, grad_out, tol)
        if not ok:
            row.update(status="FAILED", message=failure_message(row["errors"], tol))
            return row
        steps = {"torch": make_step(ref, cfg, x, grad_out), "rnnkit": make_step(ours, cfg, x, grad_out)}
        row.update(time_sides(cfg, steps, device, budget, min_reps, max_reps), status="ok")
    except Exception as exc:  # one broken case must not end a 10-minute sweep
        first_line = (str(exc).strip().splitlines() or [""])[0]
        row.update(status="ERROR", message=f"{type(exc).__name__}: {first_line}"[:300])
    finally:
        del ref, ours, x, grad_out, steps
        if device == "cuda":
            torch.cuda.empty_cache()  # the next case should not inherit fragments
    return row


def set_tf32(enabled: bool):
    """Sets both TF32 switches (cuBLAS and cuDNN) and returns the old pair."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return old


def run_suite(configs: Sequence[Config], device: str, impl: Optional[Dict[str, type]] = None, *,
              budget: float = 1.0, min_reps: int = 3, max_reps: int = 500, tf32: bool = False,
              seed: int = 0, progress: bool = True) -> List[dict]:
    """Runs every configuration with the same TF32 setting on both sides."""
    impl = impl if impl is not None else rnnkit_classes()
    old = set_tf32(tf32)
    bar = report.Progress(len(configs), enabled=progress)
    rows = []
    try:
        for i, cfg in enumerate(configs):
            bar.update(i, cfg.label)
            rows.append(bench_config(cfg, device, impl, budget=budget, min_reps=min_reps,
                                     max_reps=max_reps, tf32=tf32, seed=seed))
        bar.update(len(configs), "done")
    finally:
        bar.close()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    return rows


# ---------------------------------------------------------------------------
# The environment, for the JSON
# ---------------------------------------------------------------------------

def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> Optional[str]:
    """The commit of the rnnkit checkout, "+dirty" with local changes; None
    when rnnkit is not run from a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str, tf32: bool) -> dict:
    cuda = device == "cuda"
    try:
        import rnnkit
        version, with_cuda = rnnkit.__version__, bool(rnnkit.built_with_cuda())
    except Exception:  # the engine may not load; the report still should
        version, with_cuda = None, None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": tf32,
        "rnnkit": version,
        "rnnkit_built_with_cuda": with_cuda,
        "rnnkit_commit": _git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

def _values(parse):
    """Parses "1,64" or "1" (the option may also be repeated) into a list."""
    def parse_list(text: str):
        return [parse(v) for v in text.split(",") if v.strip()]
    return parse_list


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rnnkit.bench",
        description="Times rnnkit against torch.nn with the same weights, after checking that both give "
                    "the same numbers. speedup = torch.nn time / rnnkit time (above 1: rnnkit is faster).",
        epilog="Filters take one value or a comma-separated list (--batch 1,64) and keep only the matching "
               "configurations of the suite (the quick one, or the full sweep with --full). "
               "Example: python -m rnnkit.bench --full --cell lstm --mode training --json out.json",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if there is a GPU, else cpu")
    p.add_argument("--full", action="store_true",
                   help="the full sweep (GPU: ~10 min on an H100; CPU: B<=64, H<=512, T=100, fp32, ~20 min on 2 cores)")
    g = p.add_argument_group("filters")
    g.add_argument("--cell", type=_values(FILTERS["cell"]), action="extend", help="lstm, gru, rnn_tanh, rnn_relu")
    g.add_argument("--mode", type=_values(FILTERS["mode"]), action="extend", help="inference, training")
    g.add_argument("--dtype", type=_values(FILTERS["dtype"]), action="extend", help="fp32, bf16, fp16")
    g.add_argument("--batch", type=_values(int), action="extend", metavar="B")
    g.add_argument("--hidden", type=_values(int), action="extend", metavar="H", help="hidden size (input size = H)")
    g.add_argument("--seq", type=_values(int), action="extend", metavar="T", help="sequence length")
    g.add_argument("--layers", type=_values(int), action="extend", metavar="L")
    g.add_argument("--bidirectional", type=_values(_parse_bool), action="extend", nargs="?", const=[True],
                   metavar="yes|no", help="alone: only bidirectional cases")
    t = p.add_argument_group("timing")
    t.add_argument("--tf32", action="store_true",
                   help="allow TF32 in cuBLAS and cuDNN, on both sides (default: off on both)")
    t.add_argument("--budget", type=float, metavar="SECONDS",
                   help="timed wall time per configuration, both sides together (default: 0.3 on cuda, 2 on cpu)")
    t.add_argument("--min-reps", type=int, default=3, help="at least this many timed runs per side (default 3)")
    t.add_argument("--max-reps", type=int, default=500, help="at most this many timed runs per side (default 500)")
    t.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU")
    t.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write every row and the machine description")
    o.add_argument("--markdown", metavar="PATH", help="write a short markdown table")
    o.add_argument("--plot", metavar="PATH", help="write a PNG of the speedups (needs matplotlib)")
    o.add_argument("--from-json", metavar="PATH",
                   help="re-render a saved JSON (table, --markdown, --plot) without running")
    o.add_argument("--list", action="store_true", help="list the selected configurations and exit")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def select_configs(args, device: str) -> List[Config]:
    base = full_sweep(device) if args.full else quick_suite(device)
    filters = {name: getattr(args, name) for name in FILTERS}
    configs = apply_filters(base, **filters)
    if not configs:
        have = {name: sorted({getattr(c, name) for c in base}, key=str) for name in FILTERS}
        axes = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in have.items())
        raise SystemExit(f"no configuration of the {'full sweep' if args.full else 'quick suite'} on {device} "
                         f"matches the filters (it has {axes})" + ("" if args.full else "; try --full"))
    return configs


def write_outputs(args, meta: dict, rows: List[dict]):
    print(report.machine_line(meta))
    print()
    print(report.format_table(rows))
    print()
    print("\n".join(report.summary_lines(rows)))
    if args.json:
        report.save_json(args.json, meta, rows)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.to_markdown(meta, rows))
    if args.plot:
        report.plot(args.plot, meta, rows)
    for path in (args.json, args.markdown, args.plot):
        if path:
            print(f"wrote {path}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.from_json:
        meta, rows = report.load_json(args.from_json)
        if args.json and os.path.abspath(args.json) == os.path.abspath(args.from_json):
            args.json = None  # nothing new to write over the source
        write_outputs(args, meta, rows)
        return 0

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no GPU")
        import rnnkit
        if not rnnkit.built_with_cuda():
            raise SystemExit("--device cuda, but this rnnkit was built without CUDA")
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = select_configs(args, device)
    if args.list:
        print("\n".join(c.label for c in configs))
        print(f"{len(configs)} configurations", file=sys.stderr)
        return 0
    budget = args.budget if args.budget is not None else (0.3 if device == "cuda" else 2.0)

    meta = environment(device, args.tf32)
    meta.update(suite="full" if args.full else "quick", budget_s=budget, min_reps=args.min_reps,
                max_reps=args.max_reps, seed=args.seed, command=" ".join(["python -m rnnkit.bench"] + argv),
                tolerance=TOLERANCE)
    print(f"rnnkit vs torch.nn on {meta['gpu'] or meta['cpu']} ({device}, {meta['threads']} threads), "
          f"{len(configs)} configurations, TF32 {'on' if args.tf32 else 'off'} on both sides", file=sys.stderr)
    started = time.perf_counter()
    rows = run_suite(configs, device, budget=budget, min_reps=args.min_reps, max_reps=args.max_reps,
                     tf32=args.tf32, seed=args.seed, progress=not args.no_progress)
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    write_outputs(args, meta, rows)
    print(f"{len(rows)} configurations in {report.fmt_duration(meta['wall_s'])}", file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
