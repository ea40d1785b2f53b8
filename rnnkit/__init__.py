"""rnnkit: fused LSTM, GRU and Elman RNN kernels for PyTorch, as drop-ins for torch.nn."""
from . import ops
from ._C import built_with_cuda
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .convert import convert
from .planner import record_strategies, strategies, strategy
from . import dynamo as _dynamo, quantization as _quantization  # noqa: F401  (registrations)

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "convert", "ops",
           "built_with_cuda", "strategies", "strategy", "record_strategies"]
