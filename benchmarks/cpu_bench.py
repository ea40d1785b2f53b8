"""rnnkit against torch.nn on the CPU, in one run, with the same weights.

T=100, I=H=256, B in {1, 64}, inference and training (forward + backward),
for each cell kind (LSTM, GRU, RNN tanh, RNN relu): 16 configurations, each
checked for equal numbers first, then timed (median after warm-up). --real
adds the shapes from real programs (`python -m rnnkit.bench --suite real`).
A thin script over rnnkit.bench, which does the work.

    python benchmarks/cpu_bench.py [--real] [--threads N] [--budget S] [--json PATH] [--markdown PATH] [--plot PATH]
"""
import argparse
import os
import sys
import time

import torch

# The rnnkit of this checkout, not another one that happens to be installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rnnkit.bench import __main__ as cli, report, suite, timing  # noqa: E402
from rnnkit.bench.environment import environment  # noqa: E402

CELLS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
BATCHES = (1, 64)


def configs():
    return [suite.Config(cell, mode, "fp32", batch, hidden=256, seq=100)
            for cell in CELLS for mode in suite.MODES for batch in BATCHES]


def ratio_table(rows):
    """One line per cell kind and batch: inference and training side by side."""
    by_key = {(r["cell"], r["batch"], r["mode"]): r for r in rows if "real" not in r["tags"]}
    header = ["cell", "B", "inference torch.nn ms", "rnnkit ms", "ratio",
              "training torch.nn ms", "rnnkit ms", "ratio"]
    body = []
    for cell in CELLS:
        for batch in BATCHES:
            line = [cell, str(batch)]
            for mode in suite.MODES:
                r = by_key[(cell, batch, mode)]
                if r["status"] == "ok":
                    line += [f"{r['torch_ms']:.2f}", f"{r['rnnkit_ms']:.2f}", f"{r['speedup']:.2f}x"]
                else:
                    line += ["-", "-", r["status"]]
            body.append(line)
    return report.render_table(header, body, left=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", action="store_true", help="also the shapes from real programs (the 'real' suite)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per configuration (default 2)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", metavar="PATH")
    p.add_argument("--plot", metavar="PATH", help="PNG of the speedups (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    cli.check_outputs(args)
    if args.threads:
        torch.set_num_threads(args.threads)

    selected = configs() + (suite.real_suite("cpu") if args.real else [])
    started = time.perf_counter()
    rows = timing.run_suite(selected, "cpu", budget=args.budget, progress=not args.no_progress)
    wall = time.perf_counter() - started
    meta = environment("cpu", tf32=False)
    meta.update(suite="cpu_bench" + ("+real" if args.real else ""), budget_s=args.budget, min_reps=3,
                wall_s=round(wall, 1), command=" ".join(sys.argv), tolerance=timing.TOLERANCE)

    print("T=100, I=H=256, fp32; ratio = torch.nn time / rnnkit time (above 1: rnnkit is faster)\n")
    print(ratio_table(rows))
    print()
    cli.write_outputs(args, meta, rows)  # machine line, full table, column notes, summary, files
    print(f"\n{len(rows)} configurations in {report.fmt_duration(wall)}", file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
