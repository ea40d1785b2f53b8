"""How rnnkit runs a layer: the planner's strategies, by name.

Each device has an ordered list of strategies (the CPU's fused time loops
and its step loop; on CUDA the persistent kernels, one launch for the whole
time loop wherever W_hh fits on chip, then the step loop), and for every
layer call the planner picks one. These functions list them, force one, and
record which ran:

    rnnkit.strategies("cpu")            # ['fused_loop_projecting', 'fused_loop', 'step_loop', ...]
    with rnnkit.strategy("step_loop"):  # every layer in here runs the step loop
        y, _ = lstm(x)
    with rnnkit.record_strategies() as ran:
        lstm(x)                         # ran == ['fused_loop', ...], one name per pass of a layer

The environment variable RNNKIT_STRATEGY=<name> forces a strategy for the
whole process; rnnkit.strategy() takes precedence over it. Forcing a
strategy that cannot run a layer raises ValueError with the reason.
"""
import contextlib
from typing import Iterator, List, Optional

from . import _C


def strategies(device: str = "cpu") -> List[str]:
    """The names of a device's strategies, in the order the planner tries them."""
    return _C.strategies(str(device))


@contextlib.contextmanager
def strategy(name: Optional[str]) -> Iterator[None]:
    """Forces the strategy `name` (None: the planner's own choice) inside the
    block, for every thread of the process; restores the previous setting
    after it."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"rnnkit.strategy: expected a strategy name or None, got {type(name).__name__}")
    if name is not None:
        known = strategies("cpu") + strategies("cuda")
        if name not in known:
            raise ValueError(f"rnnkit.strategy: unknown strategy {name!r}; this build has: {', '.join(known)}")
    previous = _C._forced_strategy()
    _C._force_strategy(name)
    try:
        yield
    finally:
        _C._force_strategy(previous)


@contextlib.contextmanager
def record_strategies() -> Iterator[List[str]]:
    """Collects the name of the strategy of every layer pass (forward and
    backward) that runs inside the block, in order, into the list it yields
    ("no_work" for a pass with zero steps, rows or units). Not reentrant."""
    ran: List[str] = []
    _C._take_recorded()
    _C._record_strategies(True)
    try:
        yield ran
    finally:
        _C._record_strategies(False)
        ran.extend(_C._take_recorded())
