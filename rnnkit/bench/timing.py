"""One configuration from start to end: both modules with the same weights,
the correctness gate, then the timing; and a suite of configurations.

The gate: both sides run once on the same input and states; outputs, final
states and (in training) the input gradient and every parameter gradient
are compared (see errors()). A configuration whose numbers disagree is
reported as FAILED and not timed.

The timing alternates the two sides, A B, B A, A B, ..., until the time
budget is spent, and compares medians. This is kept rather than timing each
side in its own block (as torch.utils.benchmark's Timer does, one statement
at a time): clocks, turbo, caches and other load drift over seconds, and
alternating lays every drift on both sides alike, so the ratio stays fair
on a busy or a throttling machine. On the GPU each call is timed with CUDA
events after a synchronize, so launch gaps count, as they do for a user.
"""
import math
import time
import zlib
from dataclasses import asdict, dataclass
from statistics import median, quantiles
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkit

from .. import cells
from . import cudnn, report
from .suite import DTYPES, Config

# Correctness tolerance on max|rnnkit - torch.nn| / max|torch.nn|, per tensor
# (see errors()). fp32 compares two fp32 computations that differ only in
# summation order; TF32 and the half types round every GEMM input and every
# stored step, and those roundings differ between the two sides and compound
# over T steps, so they get looser bounds. A wrong gate, bias or index moves
# the result by O(1), far above all of these.
TOLERANCE = {"fp64": 1e-9, "fp32": 1e-4, "tf32": 1e-2, "fp16": 2e-2, "bf16": 6e-2}

SIDES = ("torch", "rnnkit")
WARMUP_SHARE = 0.2  # warm-up time, as a share of the timing budget
CLASS_NAMES = tuple(dict.fromkeys(n for k in cells.KINDS.values()
                                  for n in (k.torch_layer.__name__, k.torch_cell.__name__)))


# ---------------------------------------------------------------------------
# Modules and inputs
# ---------------------------------------------------------------------------

def rnnkit_classes() -> Dict[str, type]:
    """rnnkit's module classes by torch.nn class name (LSTM, LSTMCell, ...).
    A partial build may lack one (a clear error then); the tests hand the
    runner other classes instead."""
    missing = [name for name in CLASS_NAMES if not hasattr(rnnkit, name)]
    if missing:
        raise RuntimeError(f"rnnkit.{', rnnkit.'.join(missing)} not available in this build")
    return {name: getattr(rnnkit, name) for name in CLASS_NAMES}


def config_seed(cfg: Config, seed: int) -> int:
    """A seed of its own for each configuration: reproducible, not shared."""
    return (zlib.crc32(cfg.label.encode()) + seed) % (2**31)


def make_modules(cfg: Config, device: str, impl: Dict[str, type], seed: int = 0):
    """(torch.nn module, module under test) with the same weights. The
    weights are drawn on the CPU in fp32 under a fixed seed, so every device
    and dtype starts from the same numbers, then both sides are converted alike."""
    kind = cells.kind(cfg.cell)
    kwargs: Dict[str, Any] = dict(kind.torch_layer_kwargs())
    if cfg.call == "cell":
        ref_class = kind.torch_cell
    else:
        ref_class = kind.torch_layer
        kwargs.update(num_layers=cfg.layers, bidirectional=cfg.bidirectional, batch_first=cfg.batch_first)
        if cfg.proj:
            kwargs["proj_size"] = cfg.proj
    torch.manual_seed(config_seed(cfg, seed))
    ref = ref_class(cfg.input_size, cfg.hidden, **kwargs)
    ours = impl[ref_class.__name__](cfg.input_size, cfg.hidden, **kwargs)
    ours.load_state_dict(ref.state_dict())
    dtype = DTYPES[cfg.dtype]
    return ref.to(device=device, dtype=dtype), ours.to(device=device, dtype=dtype)


@dataclass
class Inputs:
    """What both sides are called with, and the gradient their output gets."""

    x: torch.Tensor                      # (T, B, I), (B, T, I) batch-first, (B, I) for a cell call
    states: List[torch.Tensor]           # h0 (and c0 for LSTM)
    grad_out: torch.Tensor               # same shape as the output (the packed data when packed)
    packed: Optional[PackedSequence]     # the packed input, when cfg.packed


def make_inputs(cfg: Config, device: str, seed: int = 0) -> Inputs:
    """Random input and initial states (a zero state would leave W_hh out of
    a one-step check) and a fixed random output gradient: the training loss
    is (out * grad_out).sum(), which weighs every output element differently.
    Drawn on the device itself: at T=1000, B=256, H=1024 a CPU draw takes
    longer than the benchmark."""
    gen = torch.Generator(device=device).manual_seed(config_seed(cfg, seed) + 1)
    dtype = DTYPES[cfg.dtype]

    def draw(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

    directions = 2 if cfg.bidirectional else 1
    width = cfg.proj or cfg.hidden
    if cfg.call == "cell":
        x = draw(cfg.batch, cfg.input_size)
        states = [draw(cfg.batch, cfg.hidden)] + ([draw(cfg.batch, cfg.hidden)] if cfg.cell == "LSTM" else [])
        return Inputs(x, [s * 0.5 for s in states], draw(cfg.batch, cfg.hidden), None)
    x = draw(cfg.batch, cfg.seq, cfg.input_size) if cfg.batch_first else draw(cfg.seq, cfg.batch, cfg.input_size)
    states = [draw(cfg.layers * directions, cfg.batch, width) * 0.5]
    if cfg.cell == "LSTM":
        states.append(draw(cfg.layers * directions, cfg.batch, cfg.hidden) * 0.5)
    packed = None
    if cfg.packed:
        # Lengths from 1 to T in random order, the longest T.
        lengths = torch.randint(1, cfg.seq + 1, (cfg.batch,),
                                generator=torch.Generator().manual_seed(config_seed(cfg, seed) + 2))
        lengths[int(torch.argmax(lengths))] = cfg.seq
        packed = pack_padded_sequence(x, lengths, batch_first=cfg.batch_first, enforce_sorted=False)
        grad_out = draw(packed.data.shape[0], directions * width)
    else:
        grad_out = draw(*x.shape[:2], directions * width)
    return Inputs(x, states, grad_out, packed)


def leaf_input(inputs: Inputs, requires_grad: bool) -> torch.Tensor:
    """The tensor the input gradient is taken of: x, or the packed data."""
    source = inputs.packed.data if inputs.packed is not None else inputs.x
    return source.detach().clone().requires_grad_(requires_grad)


def forward(module, cfg: Config, inputs: Inputs, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """One call as cfg.call says, on input x (a leaf_input): (output, final states)."""
    hx = inputs.states[0] if len(inputs.states) == 1 else tuple(inputs.states)
    if cfg.call == "cell":
        new = module(x, hx)
        states = list(new) if isinstance(new, tuple) else [new]
        return states[0], states
    if cfg.call == "steps":
        time_dim = 1 if cfg.batch_first else 0
        outs = []
        for t in range(cfg.seq):
            out, hx = module(x.narrow(time_dim, t, 1), hx)
            outs.append(out)
        return torch.cat(outs, time_dim), _flat(hx)
    if inputs.packed is not None:
        p = inputs.packed
        out, state = module(PackedSequence(x, p.batch_sizes, p.sorted_indices, p.unsorted_indices), hx)
        return out.data, _flat(state)
    out, state = module(x, hx)
    return out, _flat(state)


def _flat(state) -> List[torch.Tensor]:
    return list(state) if isinstance(state, (tuple, list)) else [state]


# ---------------------------------------------------------------------------
# The correctness gate
# ---------------------------------------------------------------------------

def run_once(module, cfg: Config, inputs: Inputs):
    """One call with everything kept, for the check: (output tensors, input
    gradient, {parameter name: gradient}). The output tensors are the output
    and the final states, so the check also covers the lower layers' h_n,
    which the output does not show."""
    if cfg.mode == "inference":
        module.eval()
        with torch.no_grad():
            out, states = forward(module, cfg, inputs, leaf_input(inputs, False))
        return [out] + states, None, {}
    module.train()  # dropout is 0, so train and eval compute the same thing
    module.zero_grad(set_to_none=True)
    x = leaf_input(inputs, True)
    out, states = forward(module, cfg, inputs, x)
    out.backward(inputs.grad_out)
    grads = {n: p.grad for n, p in module.named_parameters()}
    return [out.detach()] + [s.detach() for s in states], x.grad, grads


def errors(ours: Optional[torch.Tensor], ref: Optional[torch.Tensor]) -> Dict[str, float]:
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


def check_correctness(cfg: Config, ref, ours, inputs: Inputs, tol: float):
    """The gate: returns (ok, errors, strategy). errors has "output" (output
    and final states), and in training "input_grad" and "weight_grad" (the
    worst parameter, named under "param"). ok means every max_rel is within
    tol (NaN fails). strategy names the rnnkit strategies that ran."""
    ref_out, ref_dx, ref_dw = run_once(ref, cfg, inputs)
    (our_out, our_dx, our_dw), strategy = strategies_used(lambda: run_once(ours, cfg, inputs))
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
    return ok, found, strategy


def strategies_used(run: Callable):
    """(run's result, the rnnkit strategies it ran): their names in the
    order they first ran, joined by "+"; "-" where this rnnkit cannot tell
    (no rnnkit.record_strategies) or none ran."""
    record = getattr(rnnkit, "record_strategies", None)
    if record is None:
        return run(), "-"
    with record() as names:
        result = run()
    return result, "+".join(dict.fromkeys(names)) or "-"


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def make_step(module, cfg: Config, inputs: Inputs) -> Callable[[], None]:
    """What is timed: inference is a forward under no_grad in eval mode;
    training is forward + backward with gradients for the input and every
    parameter. Gradients are dropped at the end of a step, as zero_grad() in
    a training loop would, so each step allocates its own and the memory
    measured from before a step covers them."""
    if cfg.mode == "inference":
        module.eval()
        x = leaf_input(inputs, False)

        def step():
            with torch.no_grad():
                forward(module, cfg, inputs, x)
        return step

    module.train()
    x = leaf_input(inputs, True)
    params = list(module.parameters())

    def step():
        out, _ = forward(module, cfg, inputs, x)
        out.backward(inputs.grad_out)
        x.grad = None
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
    times: Dict[str, List[float]] = {n: [] for n in names}
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


def spread(samples: Sequence[float]) -> float:
    """Interquartile range over the median: how noisy the timing was."""
    if len(samples) < 4:
        return (max(samples) - min(samples)) / median(samples)
    q1, _, q3 = quantiles(samples, n=4)
    return (q3 - q1) / median(samples)


def time_sides(cfg: Config, steps: Dict[str, Callable[[], None]], device: str, budget: float,
               min_reps: int, max_reps: int) -> dict:
    """Warm-up, peak memory and timing of both sides: the row's time fields."""
    found: Dict[str, Any] = {}
    # Warm-up: the first calls (they also measure peak memory), then calls
    # thrown away until a share of the budget is spent; short steps need
    # many before caches, thread pools and clocks settle, long ones none.
    started = time.perf_counter()
    for side, step in steps.items():
        found[f"{side}_peak_mib"] = peak_memory_mib(step, device)
    while time.perf_counter() - started < WARMUP_SHARE * budget:
        for step in steps.values():
            time_once(step, device)
    for side, samples in time_pair(steps, device, budget, min_reps, max_reps).items():
        mid = median(samples)
        found.update({f"{side}_ms": mid * 1e3, f"{side}_us_per_step": mid * 1e6 / cfg.seq,
                      f"{side}_min_ms": min(samples) * 1e3, f"{side}_spread": spread(samples),
                      f"{side}_reps": len(samples)})
    found["speedup"] = found["torch_ms"] / found["rnnkit_ms"]
    return found


# ---------------------------------------------------------------------------
# One configuration, start to end, and a suite of them
# ---------------------------------------------------------------------------

def empty_row(cfg: Config) -> dict:
    row = asdict(cfg)
    row.update(tags=list(cfg.tags), status=None, message=None, tolerance=None, errors={}, strategy="-",
               cudnn_algo=None, cudnn_algo_backward=None)
    for side in SIDES:
        row.update({f"{side}_ms": None, f"{side}_us_per_step": None, f"{side}_min_ms": None,
                    f"{side}_spread": None, f"{side}_reps": 0, f"{side}_peak_mib": None})
    row["speedup"] = None
    return row


def failure_message(found: Dict[str, dict], tol: float) -> str:
    bad = [f"{name}{'(' + e['param'] + ')' if 'param' in e else ''} {e['max_rel']:.1e}"
           for name, e in found.items() if not e["max_rel"] <= tol]
    return f"max rel error above {tol:g}: {', '.join(bad)}"


def cudnn_fields(cfg: Config, device: str) -> dict:
    """The cuDNN algorithms torch.nn's side runs (GPU rows only)."""
    if device != "cuda" or not (torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled):
        return {}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    fwd, bwd = cudnn.for_config(cfg, (props.major, props.minor), props.multi_processor_count)
    return {"cudnn_algo": fwd, "cudnn_algo_backward": bwd}


def bench_config(cfg: Config, device: str, impl: Optional[Dict[str, type]] = None, *, budget: float = 1.0,
                 min_reps: int = 3, max_reps: int = 500, tf32: bool = False, seed: int = 0) -> dict:
    """Checks, then times one configuration; returns its row (a dict, as in
    the JSON). status is "ok", "FAILED" (numbers disagree, not timed) or
    "ERROR" (an exception; message says which)."""
    impl = impl if impl is not None else rnnkit_classes()
    row = empty_row(cfg)
    row["tolerance"] = tol = tolerance(cfg, device, tf32)
    row.update(cudnn_fields(cfg, device))
    ref = ours = inputs = steps = None
    try:
        ref, ours = make_modules(cfg, device, impl, seed)
        inputs = make_inputs(cfg, device, seed)
        ok, row["errors"], row["strategy"] = check_correctness(cfg, ref, ours, inputs, tol)
        if not ok:
            row.update(status="FAILED", message=failure_message(row["errors"], tol))
            return row
        steps = {"torch": make_step(ref, cfg, inputs), "rnnkit": make_step(ours, cfg, inputs)}
        row.update(time_sides(cfg, steps, device, budget, min_reps, max_reps), status="ok")
    except Exception as exc:  # one broken case must not end a 10-minute sweep
        first_line = (str(exc).strip().splitlines() or [""])[0]
        row.update(status="ERROR", message=f"{type(exc).__name__}: {first_line}"[:300])
    finally:
        del ref, ours, inputs, steps
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
    try:
        return [bench_config(cfg, device, impl, budget=budget, min_reps=min_reps, max_reps=max_reps,
                             tf32=tf32, seed=seed)
                for cfg in report.progress(configs, lambda c: c.label, enabled=progress)]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
