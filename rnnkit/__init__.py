"""rnnkit: fused LSTM, GRU and Elman RNN kernels for PyTorch, as drop-ins for torch.nn.

    import rnnkit
    lstm = rnnkit.LSTM(256, 512, num_layers=2)   # same arguments, parameters and numbers as torch.nn.LSTM

`python -m rnnkit` tells how this copy was built and what it runs on;
`python -m rnnkit.bench` checks it against torch.nn and times both.
"""
from typing import Optional

from ._build import BuildInfo, load_extension, read_build_info
from ._version import __version__

# Before anything touches the compiled ops: an ImportError naming both torch
# versions and the rebuild command if rnnkit was built against another torch.
_C = load_extension()

from . import ops  # noqa: E402  (registers the fake kernels and autograd of the ops)
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: E402
from .convert import convert  # noqa: E402
from .planner import record_strategies, strategies, strategy  # noqa: E402
from . import dynamo as _dynamo, quantization as _quantization  # noqa: E402,F401  (registrations)


def built_with_cuda() -> bool:
    """True if this build holds the CUDA kernels (it then runs on CPU and
    CUDA tensors alike); False for a CPU-only build."""
    return bool(_C.built_with_cuda())


def build_info() -> Optional[BuildInfo]:
    """How this copy was built: the torch version, CUDA version and arch list
    it was compiled for, and rnnkit's commit then; None where the build left
    no record."""
    return read_build_info()


__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "ops",
           "built_with_cuda", "build_info", "BuildInfo", "strategies", "strategy",
           "record_strategies", "__version__"]
