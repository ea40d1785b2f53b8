"""A short forward + backward of every cell kind on CUDA, for compute-sanitizer.

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 benchmarks/sanitize_run.py
    compute-sanitizer --tool racecheck ... python3 benchmarks/sanitize_run.py --persistent

Small odd sizes, but every path of the kernels: bias and no bias, a
projection, ragged lengths (rows that finish early, one of length 0) in both
directions, grad_y present and absent, the cells, float32 and bfloat16, and a
hidden size wider than one block of threads. The planner's own choices (the
persistent kernels where they apply, the step loop for projections), then
each persistent group kind forced (block, cluster, grid); --persistent runs
only those. Exits non-zero if anything is not finite; memcheck reports the
out-of-bounds and misaligned accesses.
"""
import argparse
import sys
import time

import torch

import rnnkit
from rnnkit import ops
from rnnkit.cells import KINDS



def layer_case(mode, T, B, I, H, P, bias, dtype, lengths, reverse, use_y):
    dev = "cuda"
    G = KINDS[mode].gates * H
    k = H ** -0.5
    leaf = lambda *s: ((torch.rand(*s, device=dev) * 2 - 1) * k).to(dtype).requires_grad_()  # noqa: E731
    x = torch.randn(T, B, I, device=dev, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, P or H, device=dev, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, device=dev, dtype=dtype, requires_grad=True) if mode == "LSTM" else None
    w_ih, w_hh = leaf(G, I), leaf(G, P or H)
    b_ih, b_hh = (leaf(G), leaf(G)) if bias else (None, None)
    w_hr = leaf(P, H) if P else None
    lens = torch.tensor(lengths, device=dev) if lengths is not None else None
    y, hn, cn = ops.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lens, mode, reverse)
    loss = hn.float().square().sum()
    if use_y:
        loss = loss + y.float().sin().sum()
    if cn is not None:
        loss = loss + cn.float().sum()
    leaves = [t for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) if t is not None]
    grads = torch.autograd.grad(loss, leaves)
    # Inference (training=False: nothing saved) as well.
    with torch.no_grad():
        y2, _, _ = ops.rnn_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lens, mode, reverse)
    return [y, hn, y2] + list(grads) + ([cn] if cn is not None else [])


def cell_case(mode, B, I, H, dtype):
    dev = "cuda"
    G = KINDS[mode].gates * H
    x = torch.randn(B, I, device=dev, dtype=dtype, requires_grad=True)
    h = torch.randn(B, H, device=dev, dtype=dtype, requires_grad=True)
    c = torch.randn(B, H, device=dev, dtype=dtype, requires_grad=True) if mode == "LSTM" else None
    w_ih = torch.randn(G, I, device=dev, dtype=dtype, requires_grad=True)
    w_hh = torch.randn(G, H, device=dev, dtype=dtype, requires_grad=True)
    b = torch.randn(G, device=dev, dtype=dtype, requires_grad=True)
    hn, cn = ops.rnn_cell(x, h, c, w_ih, w_hh, b, b, mode)
    loss = hn.float().sum() + (cn.float().sum() if cn is not None else 0)
    leaves = [t for t in (x, h, c, w_ih, w_hh, b) if t is not None]
    return [hn] + list(torch.autograd.grad(loss, leaves))


# The persistent strategies with one group kind forced (clusters need sm_90).
def forced_persistent():
    kinds = ["persistent_block", "persistent_grid"]
    if torch.cuda.get_device_capability() >= (9, 0):
        kinds.insert(1, "persistent_cluster")
    return kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persistent", action="store_true", help="only the forced persistent cases")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 2
    if not rnnkit.built_with_cuda():
        print("rnnkit was built without CUDA", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    T, B, I = 5, 7, 6
    lengths = [5, 1, 0, 3, 5, 2, 4]
    cases = 0
    bad = []
    started = time.perf_counter()

    def check(outs, what):
        nonlocal cases
        cases += 1
        if not all(torch.isfinite(o).all() for o in outs):
            bad.append(what)

    for dtype in (torch.float32, torch.bfloat16):
        if not opts.persistent:
            for mode, P in (("LSTM", 0), ("LSTM", 4), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)):
                for H in (37, 300):
                    for lens, reverse, bias, use_y in ((None, False, True, True), (lengths, True, True, True),
                                                       (lengths, False, False, False)):
                        check(layer_case(mode, T, B, I, H, P, bias, dtype, lens, reverse, use_y),
                              f"{mode} P={P} H={H} {dtype} lengths={lens is not None} reverse={reverse}")
            for mode in KINDS:
                check(cell_case(mode, 3, 5, 37, dtype), f"cell {mode} {dtype}")
        for strategy in forced_persistent():
            for mode in ("LSTM", "GRU", "RNN_TANH"):
                with rnnkit.strategy(strategy):
                    check(layer_case(mode, T, B, I, 37, 0, True, dtype, lengths, True, True),
                          f"{strategy} {mode} {dtype}")
    torch.cuda.synchronize()
    print(f"sanitize_run: {cases} forward+backward cases in {time.perf_counter() - started:.1f}s")
    for b in bad:
        print("NON-FINITE:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
