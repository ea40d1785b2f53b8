"""The reports of the benchmark: progress, table, summary, JSON, markdown
and plot. Rows are plain dicts (as in the JSON), so that a saved run can be
re-rendered without rerunning (--from-json); rows of older files lack the
newer fields and get their defaults (normalize_row)."""
import json
import math
import sys
import textwrap
import time
from collections import defaultdict
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from .suite import spec

SCHEMA = "rnnkit.bench/2"
READABLE_SCHEMAS = ("rnnkit.bench/1", SCHEMA)
NOISY = 0.2  # spread (interquartile range / median) above which a timing is called noisy

def sci(value: float) -> str:
    """1e-4 rather than 0.0001 or 1e-04."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def columns_help(tolerance: Dict[str, float]) -> str:
    """What the table's columns mean, with the gate's tolerances: printed
    under the table and in --help."""
    tols = ", ".join(f"{'fp32 with TF32' if k == 'tf32' else k} {sci(v)}" for k, v in tolerance.items())
    return textwrap.fill(
        "Columns: B batch, I input size, H hidden size, T time steps, L layers; shape: bidir, proj=P, "
        "batch_first, packed (variable lengths), cell (one call of torch.nn's cell class) or steps (T calls of "
        "one step each). out, dx, dW: rnnkit against torch.nn with the same weights and inputs, for the output "
        "and final states (out), the input gradient (dx) and the worst parameter gradient (dW), each as "
        "abs/rel: abs = max|rnnkit - torch.nn|, rel = abs / max|torch.nn|. A row is timed only if every rel is "
        f"within the tolerance of its dtype ({tols}); otherwise its status is FAILED. us/step: median time of "
        "one call (inference: forward; training: forward + backward) divided by T. speedup = torch.nn time / "
        "rnnkit time (above 1: rnnkit is faster). MiB: memory one call allocates beyond weights and inputs "
        "(GPU only). strategy: the rnnkit strategies that ran. cuDNN: the algorithm PyTorch picks for torch.nn "
        "(forward/backward where they differ; STANDARD, PERSIST_STATIC, SMALL_H).", width=100,
        break_on_hyphens=False)


# Fields of newer rows, with the value an older file's rows mean by leaving them out.
ROW_DEFAULTS = {"proj": 0, "batch_first": False, "packed": False, "call": "layer", "strategy": "-",
                "cudnn_algo": None, "cudnn_algo_backward": None}


def normalize_row(row: dict) -> dict:
    full = {**ROW_DEFAULTS, **row}
    full.setdefault("input_size", full["hidden"])
    return full


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------

def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


Item = TypeVar("Item")


def progress(items: Sequence[Item], label: Callable[[Item], str], enabled: bool = True,
             stream=None) -> Iterator[Item]:
    """Yields the items while showing on stderr how far the run is: a tqdm
    bar where tqdm is installed, else one line per item (with the time left)."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(items, total=len(items), file=stream, unit="config", dynamic_ncols=True) as bar:
            for item in bar:
                bar.set_postfix_str(label(item))
                yield item
        return
    started = time.perf_counter()
    for done, item in enumerate(items):
        elapsed = time.perf_counter() - started
        left = f", ~{fmt_duration(elapsed / done * (len(items) - done))} left" if done else ""
        stream.write(f"[{done + 1}/{len(items)} {fmt_duration(elapsed)}{left}] {label(item)}\n")
        stream.flush()
        yield item


# ---------------------------------------------------------------------------
# Text table and summary
# ---------------------------------------------------------------------------

def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _err(errors: dict, key: str) -> str:
    e = errors.get(key)
    return "-" if not e else f"{e['max_abs']:.0e}/{e['max_rel']:.0e}"


def shape_flags(row: dict) -> str:
    flags = (["bidir"] if row["bidirectional"] else []) + ([f"proj={row['proj']}"] if row["proj"] else [])
    flags += [f for f in ("batch_first", "packed") if row[f]] + ([row["call"]] if row["call"] != "layer" else [])
    return ",".join(flags) or "-"


def _size(row: dict) -> List[str]:
    return [row["cell"], row["mode"], row["dtype"], str(row["batch"]), str(row["input_size"]), str(row["hidden"]),
            str(row["seq"]), str(row["layers"]), shape_flags(row)]


SIZE_HEADER = ["cell", "mode", "dtype", "B", "I", "H", "T", "L", "shape"]
_ALGO_SHORT = {"PERSIST_STATIC_SMALL_H": "SMALL_H", "PERSIST_STATIC": "PERSIST_STATIC", "STANDARD": "STANDARD"}


def cudnn_text(row: dict) -> str:
    fwd, bwd = row.get("cudnn_algo"), row.get("cudnn_algo_backward")
    if fwd is None:
        return "-"
    short = _ALGO_SHORT.get(fwd, fwd)
    return short if bwd in (None, fwd) else f"{short}/{_ALGO_SHORT.get(bwd, bwd)}"


def _has_cudnn(rows: Iterable[dict]) -> bool:
    return any(r.get("cudnn_algo") for r in rows)


def render_table(header: Sequence[str], body: Sequence[Sequence[str]], left: int) -> str:
    """Columns padded to their widest cell; the first `left` columns are
    left-aligned (names), the rest right-aligned (numbers)."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def format_table(rows: Sequence[dict]) -> str:
    """The readable table for stdout (see columns_help); the cuDNN column only
    where rows have one (GPU runs)."""
    rows = [normalize_row(r) for r in rows]
    cudnn = _has_cudnn(rows)
    header = SIZE_HEADER + ["out abs/rel", "dx abs/rel", "dW abs/rel", "torch.nn us/step", "rnnkit us/step",
                            "speedup", "torch.nn MiB", "rnnkit MiB", "strategy"]
    header += (["cuDNN"] if cudnn else []) + ["status"]
    body = []
    for r in rows:
        status = r["status"] if r["status"] != "ERROR" else f"ERROR {r['message'][:60]}"
        body.append(_size(r) + [
            _err(r["errors"], "output"), _err(r["errors"], "input_grad"), _err(r["errors"], "weight_grad"),
            _num(r["torch_us_per_step"], ".1f"), _num(r["rnnkit_us_per_step"], ".1f"),
            _num(r["speedup"], ".2f") + ("x" if r["speedup"] is not None else ""),
            _num(r["torch_peak_mib"], ".1f"), _num(r["rnnkit_peak_mib"], ".1f"), r["strategy"] or "-",
        ] + ([cudnn_text(r)] if cudnn else []) + [status])
    return render_table(header, body, left=len(SIZE_HEADER))


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def describe(row: dict) -> str:
    """A row as its shape spec (what --shape reads back)."""
    return spec(normalize_row(row))


def geomeans(rows: Sequence[dict]) -> Dict[Tuple[str, str], Tuple[float, int]]:
    """(cell, mode) -> (geometric-mean speedup, number of timed rows)."""
    groups = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[(r["cell"], r["mode"])].append(r["speedup"])
    return {k: (geomean(v), len(v)) for k, v in groups.items()}


def summary_lines(rows: Sequence[dict], worst: int = 5) -> List[str]:
    lines = ["geometric-mean speedup (torch.nn time / rnnkit time; above 1: rnnkit is faster):"]
    for (cell, mode), (g, n) in geomeans(rows).items():
        lines.append(f"  {cell:<9} {mode:<10} {g:6.2f}x  over {n} configuration{'s' * (n != 1)}")
    timed = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["speedup"])
    if timed:
        lines.append(f"{min(worst, len(timed))} worst configurations:")
        lines += [f"  {r['speedup']:6.2f}x  {describe(r)}" for r in timed[:worst]]
    else:
        lines.append("  (no configuration was timed)")
    noisy = [r for r in timed if max(r["torch_spread"], r["rnnkit_spread"]) > NOISY]
    if noisy:
        lines.append(f"timing noise: {len(noisy)} of {len(timed)} configurations have an interquartile range "
                     f"above {NOISY:.0%} of the median (is the machine busy?)")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines.append(f"{len(bad)} not timed:")
        lines += [f"  {r['status']:<6} {describe(r)}: {r['message']}" for r in bad]
    return lines


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------

def _encode(value):
    """Strict JSON has no inf/NaN (a shape mismatch is reported as inf):
    they are written as strings and read back by _decode."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def save_json(path: str, meta: dict, rows: Sequence[dict]):
    with open(path, "w") as f:
        json.dump(_encode({"schema": SCHEMA, "meta": meta, "rows": list(rows)}), f, indent=1, allow_nan=False)
        f.write("\n")


def load_json(path: str) -> Tuple[dict, List[dict]]:
    with open(path) as f:
        data = _decode(json.load(f))
    if data.get("schema") not in READABLE_SCHEMAS:
        raise SystemExit(f"{path}: not an rnnkit benchmark file (schema {data.get('schema')!r}, "
                         f"expected one of {', '.join(READABLE_SCHEMAS)})")
    return data["meta"], [normalize_row(r) for r in data["rows"]]


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

def machine_line(meta: dict) -> str:
    caches = meta.get("cpu_caches")
    where = meta.get("gpu") or (f"{meta.get('cpu')}, {caches}" if caches else meta.get("cpu"))
    parts = [f"{where} ({meta.get('device')}, {meta.get('threads')} CPU threads)", f"torch {meta.get('torch')}"]
    if meta.get("device") == "cuda":
        parts += [f"CUDA {meta.get('cuda')}", f"cuDNN {meta.get('cudnn')}"]
    commit = meta.get("rnnkit_commit")
    parts += [f"rnnkit {meta.get('rnnkit')}" + (f" @ {commit[:14]}" if commit else " (commit unknown)"),
              f"TF32 {'on' if meta.get('tf32') else 'off'} on both sides", str(meta.get("date"))]
    return " · ".join(parts)


def to_markdown(meta: dict, rows: Sequence[dict]) -> str:
    rows = [normalize_row(r) for r in rows]
    cudnn = _has_cudnn(rows)
    out = [f"# rnnkit vs torch.nn: {meta.get('gpu') or meta.get('cpu')}", "", machine_line(meta), "",
           f"Suite `{meta.get('suite')}`, {len(rows)} configurations; median time per step after warm-up, "
           f"{meta.get('budget_s')} s of timed runs per configuration; speedup = torch.nn time / rnnkit time. "
           "Peak MiB: memory a step allocates on top of weights and inputs (GPU only). "
           "Max rel err: worst of output, input and weight gradients, against torch.nn. "
           "Strategy: the rnnkit strategies that ran"
           + ("; cuDNN: the algorithm PyTorch picks for torch.nn (forward/backward where they differ)." if cudnn
              else "."), ""]
    header = ["cell", "mode", "dtype", "B", "I", "H", "T", "layers", "shape", "torch.nn µs/step", "rnnkit µs/step",
              "speedup", "peak MiB torch.nn / rnnkit", "max rel err", "strategy"] + (["cuDNN"] if cudnn else []) + [
              "status"]
    out.append("| " + " | ".join(header) + " |")
    words = {"cell", "mode", "dtype", "shape", "strategy", "cuDNN", "status"}
    out.append("|" + "|".join("---" if h in words else "---:" for h in header) + "|")
    for r in rows:
        rel = max((e["max_rel"] for e in r["errors"].values()), default=None)
        mem = "-" if r["torch_peak_mib"] is None else f"{r['torch_peak_mib']:.0f} / {r['rnnkit_peak_mib']:.0f}"
        speed = "-" if r["speedup"] is None else f"**{r['speedup']:.2f}x**"
        cells = _size(r) + [_num(r["torch_us_per_step"], ".1f"), _num(r["rnnkit_us_per_step"], ".1f"), speed, mem,
                            _num(rel, ".0e"), r["strategy"] or "-"] + ([cudnn_text(r)] if cudnn else []) + [r["status"]]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "```", *summary_lines(rows), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

# speedup ticks: dense enough to read a narrow range, sparse enough for a wide one
NICE = [m * 10.0**e for e in range(-2, 3) for m in (1, 1.5, 2, 3, 5, 7)]


def plottable(row: dict) -> bool:
    """The rows of the size sweep: one plain layer over a sequence, I = H."""
    return (row["status"] == "ok" and row["layers"] == 1 and not row["bidirectional"] and row["call"] == "layer"
            and not row["packed"] and not row["proj"] and row["input_size"] == row["hidden"] and row["seq"] > 1)


def plot(path: str, meta: dict, rows: Sequence[dict]):
    """Speedup against batch size and against hidden size, one panel row per
    mode, one line per cell kind and dtype (the size sweep's rows). Each
    point is the geometric mean over the axes not shown (T, and H or B)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a benchmark machine
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    timed = [r for r in map(normalize_row, rows) if plottable(r)]
    modes = [m for m in ("inference", "training") if any(r["mode"] == m for r in timed)] or ["inference"]
    axes_x = (("batch", "batch size B"), ("hidden", "hidden size H (= input size)"))
    fig, axes = plt.subplots(len(modes), 2, figsize=(12, 4.2 * len(modes)), squeeze=False)
    order = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU", "fp32", "bf16", "fp16", "fp64")
    cells = sorted({r["cell"] for r in timed}, key=order.index)
    dtypes = sorted({r["dtype"] for r in timed}, key=order.index)
    colors = {c: f"C{i}" for i, c in enumerate(cells)}
    styles = {d: s for d, s in zip(dtypes, ("-", "--", ":", "-."))}
    for row_i, mode in enumerate(modes):
        for col_i, (field, xlabel) in enumerate(axes_x):
            ax = axes[row_i][col_i]
            for cell in cells:
                for dtype in dtypes:
                    points = defaultdict(list)
                    for r in timed:
                        if (r["mode"], r["cell"], r["dtype"]) == (mode, cell, dtype):
                            points[r[field]].append(r["speedup"])
                    if points:
                        xs = sorted(points)
                        ax.plot(xs, [geomean(points[x]) for x in xs], styles[dtype], marker="o",
                                color=colors[cell], label=f"{cell} {dtype}")
            ax.axhline(1.0, color="black", linewidth=1)
            ax.annotate("1.0 = torch.nn", xy=(0.01, 1.0), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", fontsize=8)
            # log axes: sizes grow by powers of two, speedups are ratios
            ax.set_xscale("log", base=2)
            sizes = sorted({r[field] for r in timed if r["mode"] == mode})
            ax.set_xticks(sizes, [str(v) for v in sizes])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ax.yaxis.set_major_locator(ticker.FixedLocator([v for v in NICE if low <= v <= high]))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.yaxis.set_minor_locator(ticker.NullLocator())
            ax.set_xlabel(xlabel)
            ax.set_ylabel("speedup over torch.nn")
            ax.set_title(f"{mode}: speedup vs {field} (geo-mean over the other sizes)", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    # One legend for all panels, below them, a column per cell kind.
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[1]))
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=max(len(cells), 1),
                   fontsize=9, frameon=False)
    fig.suptitle(f"rnnkit vs torch.nn (above 1: rnnkit is faster)\n{textwrap.fill(machine_line(meta), 150)}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
