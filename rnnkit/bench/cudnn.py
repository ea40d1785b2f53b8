"""Which cuDNN RNN algorithm torch.nn runs for a shape on the GPU.

PyTorch picks it by fixed rules (get_algo, use_rnn_persist_small_h,
use_persist_common_heuristics and use_persist_device_heuristics in
aten/src/ATen/native/cudnn/RNN.cpp), written here as a pure function so
that every GPU row of the benchmark can say which cuDNN kernel rnnkit was
up against. The rules, in order:

- STANDARD for an LSTM with a projection, and for any PackedSequence input.
- PERSIST_STATIC_SMALL_H for any dtype but float64 on compute capability 6.0
  and up when the hidden size is small: forward H <= 384 for tanh/relu RNNs
  and <= 192 for LSTM/GRU; backward H <= 256 and <= 128.
- PERSIST_STATIC for float16 only, when one layer, one direction,
  H <= 1024, H and the input size multiples of 128, and the device rules:
  - sm_70 (not sm_75): B == 8 or a multiple of 16 other than 80 and 112,
    and T >= 40 with B <= 128, or T >= 20 with B <= 96, or T >= 10 with B <= 32;
  - sm_80 and up with at least 98 SMs, minor version not 6: never for GRU;
    LSTM when B % 8 == 0 and B <= 128; tanh/relu RNNs also need B < 96 or H < 896;
  - no other device.
- STANDARD otherwise.

torch.nn's cells (LSTMCell, GRUCell, RNNCell) do not call cuDNN.
"""
from typing import Optional, Tuple

STANDARD = "STANDARD"
PERSIST_STATIC = "PERSIST_STATIC"
PERSIST_STATIC_SMALL_H = "PERSIST_STATIC_SMALL_H"

# Largest hidden size of the small-H persistent kernel: (plain RNN, gated RNN) per direction of the pass.
SMALL_H_LIMIT = {True: (384, 192), False: (256, 128)}  # forward: ..., backward: ...


def _small_h(cell: str, hidden: int, capability: Tuple[int, int], forward: bool) -> bool:
    if capability[0] < 6:
        return False
    plain, gated = SMALL_H_LIMIT[forward]
    return hidden <= (plain if cell in ("RNN_TANH", "RNN_RELU") else gated)


def _persist_shape(hidden: int, input_size: int, layers: int, bidirectional: bool) -> bool:
    return layers == 1 and not bidirectional and hidden <= 1024 and hidden % 128 == 0 and input_size % 128 == 0


def _persist_device(cell: str, batch: int, hidden: int, seq: int, capability: Tuple[int, int],
                    sm_count: int) -> bool:
    major, minor = capability
    if major == 7:
        if minor == 5:
            return False
        batch_ok = (batch % 16 == 0 and batch not in (80, 112)) or batch == 8
        return batch_ok and ((seq >= 40 and batch <= 128) or (seq >= 20 and batch <= 96)
                             or (seq >= 10 and batch <= 32))
    if major >= 8 and sm_count >= 98:
        if minor == 6 or cell == "GRU":
            return False
        fits = batch % 8 == 0 and batch <= 128
        if cell == "LSTM":
            return fits
        return fits and (batch < 96 or hidden < 896)
    return False


def cudnn_rnn_algorithm(cell: str, dtype: str, batch: int, hidden: int, input_size: int, layers: int,
                        bidirectional: bool, packed: bool, capability: Tuple[int, int], sm_count: int,
                        seq: int, proj: int = 0, forward: bool = True) -> str:
    """The algorithm PyTorch asks cuDNN for. cell is an engine mode (LSTM,
    GRU, RNN_TANH, RNN_RELU), dtype one of fp32, bf16, fp16, fp64;
    capability the device's (major, minor); forward picks the rules of the
    forward pass, False those of the backward pass."""
    if proj or packed:
        return STANDARD
    if dtype != "fp64" and _small_h(cell, hidden, capability, forward):
        return PERSIST_STATIC_SMALL_H
    if dtype == "fp16" and _persist_shape(hidden, input_size, layers, bidirectional) and _persist_device(
            cell, batch, hidden, seq, capability, sm_count):
        return PERSIST_STATIC
    return STANDARD


def for_config(cfg, capability: Tuple[int, int], sm_count: int) -> Tuple[Optional[str], Optional[str]]:
    """(forward, backward) algorithms of torch.nn for a benchmark Config on
    a GPU; backward is None in inference, both are None for a cell call
    (no cuDNN there). A step loop calls the layer with T=1."""
    if cfg.call == "cell":
        return None, None
    seq = 1 if cfg.call == "steps" else cfg.seq

    def pick(forward: bool) -> str:
        return cudnn_rnn_algorithm(cfg.cell, cfg.dtype, cfg.batch, cfg.hidden, cfg.input_size, cfg.layers,
                                   cfg.bidirectional, cfg.packed, capability, sm_count, seq, cfg.proj, forward)
    return pick(True), (pick(False) if cfg.mode == "training" else None)
