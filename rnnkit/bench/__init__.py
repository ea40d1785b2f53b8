"""The benchmark and self-check, `python -m rnnkit.bench`: rnnkit against
torch.nn with the same weights, numbers compared first, then both timed.

    suite        what runs: Config, shape specs (--shape), the suites
    cudnn        which cuDNN algorithm torch.nn gets for a shape (GPU rows)
    timing       one configuration start to end: modules, correctness gate, timing
    report       progress, table, summary, JSON, markdown, plot
    environment  the machine and versions, for the reports
    __main__     the command line

It needs torch and rnnkit; tqdm for a progress bar (a plain line per
configuration without it) and matplotlib for --plot.
"""
from .environment import environment
from .suite import Config, full_suite, quick_suite, real_suite, sweep
from .timing import TOLERANCE, bench_config, run_suite

__all__ = ["Config", "quick_suite", "sweep", "real_suite", "full_suite", "run_suite", "bench_config", "environment",
           "TOLERANCE"]
