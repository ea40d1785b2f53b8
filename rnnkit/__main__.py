"""`python -m rnnkit`: how this rnnkit was built and what it runs on.

Prints the version and commit, the torch it was built against and the one
running, its CUDA kernels and the GPU architectures they cover, the CPU's
SIMD level, the strategies the planner offers and the threads. Where the
build does not fit the running torch, importing rnnkit fails before this
runs, with an ImportError that names both versions and the rebuild command.
"""
import sys


def main() -> int:
    from rnnkit import _about

    facts = _about.report()
    width = max(map(len, facts))
    for label, text in facts.items():
        print(f"{label + ':':<{width + 1}} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
