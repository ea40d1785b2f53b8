"""The reports of `python -m rnnkit.bench`: progress bar, table, summary,
JSON, markdown and plot. Rows are plain dicts (as in the JSON) so that a saved
run can be re-rendered without rerunning (--from-json). Nothing here imports
the engine; matplotlib is imported only by plot()."""
import json
import math
import shutil
import sys
import textwrap
import time
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

SCHEMA = "rnnkit.bench/1"


# ---------------------------------------------------------------------------
# Progress bar (no tqdm on the GPU machine)
# ---------------------------------------------------------------------------

def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One line on stderr, redrawn in place on a terminal; one line per
    update otherwise, so logs stay readable."""

    def __init__(self, total: int, stream=None, enabled: bool = True, width: int = 20):
        self.total, self.width, self.enabled = total, width, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.drawn = 0

    def update(self, done: int, label: str = ""):
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        fill = self.width * done // max(self.total, 1)
        line = f"[{'#' * fill}{'.' * (self.width - fill)}] {done}/{self.total} {fmt_duration(elapsed)}"
        if 0 < done < self.total:
            line += f" (~{fmt_duration(elapsed / done * (self.total - done))} left)"
        line += f"  {label}"
        if self.tty:
            line = line[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r" + line.ljust(self.drawn))
            self.drawn = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------
# Text table and summary
# ---------------------------------------------------------------------------

def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _err(errors: dict, key: str) -> str:
    e = errors.get(key)
    return "-" if not e else f"{e['max_abs']:.0e}/{e['max_rel']:.0e}"


def _size(row: dict) -> List[str]:
    return [row["cell"], row["mode"], row["dtype"], str(row["batch"]), str(row["hidden"]), str(row["seq"]),
            str(row["layers"]), "yes" if row["bidirectional"] else "no"]


def render_table(header: Sequence[str], body: Sequence[Sequence[str]], left: int) -> str:
    """Columns padded to their widest cell; the first `left` columns are
    left-aligned (names), the rest right-aligned (numbers)."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def format_table(rows: Sequence[dict]) -> str:
    """The readable table for stdout. Errors are max abs / max rel of
    rnnkit against torch.nn; times are medians per time step."""
    header = ["cell", "mode", "dtype", "B", "H", "T", "L", "bidir",
              "out abs/rel", "dx abs/rel", "dW abs/rel",
              "torch.nn us/step", "rnnkit us/step", "speedup", "torch.nn MiB", "rnnkit MiB", "status"]
    body = []
    for r in rows:
        status = r["status"] if r["status"] != "ERROR" else f"ERROR {r['message'][:60]}"
        body.append(_size(r) + [
            _err(r["errors"], "output"), _err(r["errors"], "input_grad"), _err(r["errors"], "weight_grad"),
            _num(r["torch_us_per_step"], ".1f"), _num(r["rnnkit_us_per_step"], ".1f"),
            _num(r["speedup"], ".2f") + ("x" if r["speedup"] is not None else ""),
            _num(r["torch_peak_mib"], ".1f"), _num(r["rnnkit_peak_mib"], ".1f"), status,
        ])
    return render_table(header, body, left=3)


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def describe(row: dict) -> str:
    extra = (f" L={row['layers']}" if row["layers"] != 1 else "") + (" bidir" if row["bidirectional"] else "")
    return (f"{row['cell']} {row['mode']} {row['dtype']} B={row['batch']} H={row['hidden']} "
            f"T={row['seq']}{extra}")


def geomeans(rows: Sequence[dict]) -> Dict[Tuple[str, str], Tuple[float, int]]:
    """(cell, mode) -> (geometric-mean speedup, number of timed rows)."""
    groups = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            groups[(r["cell"], r["mode"])].append(r["speedup"])
    return {k: (geomean(v), len(v)) for k, v in groups.items()}


NOISY = 0.2  # spread (interquartile range / median) above which a timing is called noisy


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
    if data.get("schema") != SCHEMA:
        raise SystemExit(f"{path}: not an rnnkit benchmark file (schema {data.get('schema')!r}, expected {SCHEMA!r})")
    return data["meta"], data["rows"]


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

def machine_line(meta: dict) -> str:
    where = meta.get("gpu") or meta.get("cpu")
    parts = [f"{where} ({meta.get('device')}, {meta.get('threads')} CPU threads)", f"torch {meta.get('torch')}"]
    if meta.get("device") == "cuda":
        parts += [f"CUDA {meta.get('cuda')}", f"cuDNN {meta.get('cudnn')}"]
    parts += [f"rnnkit {meta.get('rnnkit')} @ {(meta.get('rnnkit_commit') or 'unknown commit')[:14]}",
              f"TF32 {'on' if meta.get('tf32') else 'off'} on both sides", str(meta.get("date"))]
    return " · ".join(parts)


def to_markdown(meta: dict, rows: Sequence[dict]) -> str:
    out = [f"# rnnkit vs torch.nn: {meta.get('gpu') or meta.get('cpu')}", "", machine_line(meta), "",
           f"Suite `{meta.get('suite')}`, {len(rows)} configurations; median time per step after warm-up, "
           f"{meta.get('budget_s')} s of timed runs per configuration; speedup = torch.nn time / rnnkit time. "
           "Peak MiB: memory a step allocates on top of weights and inputs (GPU only). "
           "Max rel err: worst of output, input and weight gradients, against torch.nn.", ""]
    header = ["cell", "mode", "dtype", "B", "H", "T", "layers", "bidir",
              "torch.nn µs/step", "rnnkit µs/step", "speedup", "peak MiB torch.nn / rnnkit", "max rel err", "status"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        rel = max((e["max_rel"] for e in r["errors"].values()), default=None)
        mem = "-" if r["torch_peak_mib"] is None else f"{r['torch_peak_mib']:.0f} / {r['rnnkit_peak_mib']:.0f}"
        speed = "-" if r["speedup"] is None else f"**{r['speedup']:.2f}x**"
        cells = _size(r) + [_num(r["torch_us_per_step"], ".1f"), _num(r["rnnkit_us_per_step"], ".1f"), speed, mem,
                            _num(rel, ".0e"), r["status"]]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "```", *summary_lines(rows), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

# speedup ticks: dense enough to read a narrow range, sparse enough for a wide one
NICE = [m * 10.0**e for e in range(-2, 3) for m in (1, 1.5, 2, 3, 5, 7)]


def plot(path: str, meta: dict, rows: Sequence[dict]):
    """Speedup against batch size and against hidden size, one panel row per
    mode, one line per cell kind and dtype (one layer, one direction). Each
    point is the geometric mean over the axes not shown (T, and H or B)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a benchmark machine
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    timed = [r for r in rows if r["status"] == "ok" and r["layers"] == 1 and not r["bidirectional"]]
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
