"""`python -m rnnkit.bench`: rnnkit against torch.nn, same weights, same run.

For every configuration both sides get the same weights and inputs; their
numbers are compared first (a configuration that disagrees is FAILED and
not timed), then both are timed in alternating rounds and the medians
compared: speedup = torch.nn time / rnnkit time, above 1: rnnkit is faster.
"""
import argparse
import importlib.util
import os
import sys
import time
from typing import List, Optional, Sequence

import torch

from . import report, suite, timing
from .environment import environment
from .suite import Config

# Default timed budget per configuration, in seconds.
BUDGET = {"cpu": 2.0, "cuda": 0.3}

# The whole GPU sweep (--device cuda --full) must fit in one device call of
# 6 minutes. A configuration costs its timed budget b, a warm-up of
# WARMUP_SHARE * b, and FIXED_S outside both (building both modules, one
# checked call of each side, one peak-memory call); RESERVE_S is kept for
# start-up and for the largest configurations, whose min_reps calls outlast b.
# So for N configurations
#     b = (SWEEP_LIMIT_S - RESERVE_S - N * FIXED_S) / (N * (1 + WARMUP_SHARE)),
# for the 810 of the GPU full suite (360 - 90 - 810 * 0.1) / (810 * 1.2) = 0.19 s.
SWEEP_LIMIT_S = 360.0
RESERVE_S = 90.0
FIXED_S = 0.1
MIN_BUDGET_S = 0.05  # below this, warm-up and the first calls are all there is


def sweep_budget(n_configs: int) -> float:
    """The per-configuration budget that fits n_configs into SWEEP_LIMIT_S."""
    spare = SWEEP_LIMIT_S - RESERVE_S - n_configs * FIXED_S
    return max(MIN_BUDGET_S, spare / (n_configs * (1 + timing.WARMUP_SHARE)))


def default_budget(device: str, suite_name: str, n_configs: int) -> float:
    if device == "cuda" and suite_name == "full":
        return min(BUDGET["cuda"], sweep_budget(n_configs))
    return BUDGET[device]


def _values(parse):
    """Parses "1,64" or "1" (the option may also be repeated) into a list."""
    def parse_list(text: str):
        return [parse(v) for v in text.split(",") if v.strip()]
    return parse_list


def build_parser() -> argparse.ArgumentParser:
    sizes = {name: {d: len(make(d)) for d in ("cpu", "cuda")} for name, make in suite.SUITES.items()}

    def count(name):
        return f"{sizes[name]['cpu']} configurations on cpu, {sizes[name]['cuda']} on cuda"

    p = argparse.ArgumentParser(
        prog="python -m rnnkit.bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Times rnnkit against torch.nn with the same weights, after checking that both give the same "
                    "numbers.\nspeedup = torch.nn time / rnnkit time (above 1: rnnkit is faster).",
        epilog="Filters take one value or a comma-separated list (--batch 1,64) and keep the matching configurations "
               "of the suite.\n--shape times shapes of your own instead, e.g.\n"
               "  python -m rnnkit.bench --shape lstm:T=35,B=20,I=200,H=200,layers=2 --mode training\n"
               "  python -m rnnkit.bench --shape gru:T=100,B=1,H=512,batch_first,steps "
               "--shape lstm:B=64,I=512,H=1024,cell\n"
               + suite.SHAPE_HELP + "\n\n" + report.columns_help(timing.TOLERANCE),
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if there is a GPU, else cpu")
    p.add_argument("--suite", choices=tuple(suite.SUITES), default="quick",
                   help=f"quick ({count('quick')}; the default), sweep (the size sweep: {count('sweep')}), "
                        f"real (shapes from real programs: {count('real')}), full (sweep + real: {count('full')})")
    p.add_argument("--full", action="store_const", dest="suite", const="full", help="the same as --suite full")
    p.add_argument("--shape", type=suite.parse_shape, action="append", metavar="SPEC",
                   help="time this shape instead of a suite (repeatable); see below")
    g = p.add_argument_group("filters")
    g.add_argument("--cell", type=_values(suite.FILTERS["cell"]), action="extend", help="lstm, gru, rnn_tanh, rnn_relu")
    g.add_argument("--mode", type=_values(suite.FILTERS["mode"]), action="extend",
                   help="inference, training (with --shape: the modes to run, default both)")
    g.add_argument("--dtype", type=_values(suite.FILTERS["dtype"]), action="extend",
                   help="fp32, bf16, fp16, fp64 (with --shape: the dtypes to run, default fp32)")
    g.add_argument("--batch", type=_values(int), action="extend", metavar="B")
    g.add_argument("--hidden", type=_values(int), action="extend", metavar="H", help="hidden size")
    g.add_argument("--seq", type=_values(int), action="extend", metavar="T", help="sequence length")
    g.add_argument("--layers", type=_values(int), action="extend", metavar="L")
    g.add_argument("--bidirectional", type=_values(suite.parse_bool), action="extend", nargs="?", const=[True],
                   metavar="yes|no", help="alone: only bidirectional cases")
    t = p.add_argument_group("timing")
    t.add_argument("--tf32", action="store_true",
                   help="allow TF32 in cuBLAS and cuDNN, on both sides (default: off on both)")
    t.add_argument("--budget", type=float, metavar="SECONDS",
                   help=f"timed wall time per configuration, both sides together (default: {BUDGET['cpu']:g} on "
                        f"cpu, {BUDGET['cuda']:g} on cuda; the cuda full suite gets what fits it into "
                        f"{SWEEP_LIMIT_S / 60:g} minutes)")
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
    o.add_argument("--list", action="store_true", help="list the selected configurations (as shape specs) and exit")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def check_outputs(args):
    """Fails before anything runs if an output cannot be written: --plot
    without matplotlib, or a folder that does not exist."""
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("--plot needs matplotlib, which is not installed here: pip install matplotlib "
                         "(or leave out --plot; --from-json can draw the plot later from --json's file)")
    for path in (args.json, args.markdown, args.plot):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise SystemExit(f"cannot write {path}: folder {folder} does not exist")


FILTER_OPTIONS = ("cell", "batch", "hidden", "seq", "layers", "bidirectional")


def select_configs(args, device: str) -> List[Config]:
    if args.shape:
        given = [f"--{name}" for name in FILTER_OPTIONS if getattr(args, name)]
        if given:
            raise SystemExit(f"{', '.join(given)} filter the built-in suites; --shape gives the sizes itself "
                             "(put them in the shape spec)")
        return suite.shape_configs(args.shape, args.mode or suite.MODES, args.dtype or ["fp32"])
    base = suite.SUITES[args.suite](device)
    configs = suite.apply_filters(base, **{name: getattr(args, name) for name in suite.FILTERS})
    if not configs:
        axes = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in suite.axes(base).items())
        hint = "" if args.suite == "full" else "; try --full"
        raise SystemExit(f"no configuration of the {args.suite} suite on {device} matches the filters "
                         f"(it has {axes}){hint}")
    return configs


def write_outputs(args, meta: dict, rows: List[dict]):
    print(report.machine_line(meta))
    print()
    print(report.format_table(rows))
    print()
    print(report.columns_help(meta.get("tolerance") or timing.TOLERANCE))
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
    check_outputs(args)
    if args.from_json:
        meta, rows = report.load_json(args.from_json)
        if args.json and os.path.abspath(args.json) == os.path.abspath(args.from_json):
            args.json = None  # nothing new to write over the source
        write_outputs(args, meta, rows)
        return 0

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        import rnnkit

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no GPU")
        if not rnnkit.built_with_cuda():
            raise SystemExit("--device cuda, but this rnnkit was built without CUDA")
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = select_configs(args, device)
    if args.list:
        print("\n".join(c.label for c in configs))
        print(f"{len(configs)} configurations", file=sys.stderr)
        return 0
    suite_name = "shape" if args.shape else args.suite
    budget = args.budget if args.budget is not None else default_budget(device, suite_name, len(configs))

    meta = environment(device, args.tf32)
    meta.update(suite=suite_name, budget_s=round(budget, 3), min_reps=args.min_reps, max_reps=args.max_reps,
                seed=args.seed, command=" ".join(["python -m rnnkit.bench"] + argv), tolerance=timing.TOLERANCE)
    print(f"rnnkit vs torch.nn on {meta['gpu'] or meta['cpu']} ({device}, {meta['threads']} threads), "
          f"{len(configs)} configurations, {budget:.2g} s each, TF32 {'on' if args.tf32 else 'off'} on both sides",
          file=sys.stderr)
    started = time.perf_counter()
    rows = timing.run_suite(configs, device, budget=budget, min_reps=args.min_reps, max_reps=args.max_reps,
                            tf32=args.tf32, seed=args.seed, progress=not args.no_progress)
    meta["wall_s"] = round(time.perf_counter() - started, 1)
    write_outputs(args, meta, rows)
    print(f"{len(rows)} configurations in {report.fmt_duration(meta['wall_s'])}", file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
