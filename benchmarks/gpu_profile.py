"""Where a step's time goes on the GPU: kernel time against wall time.

    python3 benchmarks/gpu_profile.py

For a few configurations it runs rnnkit's forward (and forward + backward)
under torch.profiler and prints, per side (rnnkit, torch.nn with cuDNN), the
wall time per step, the summed GPU kernel time per step, and the kernels that
take it. Wall time well above kernel time means the host (dispatch and launch
overhead) sets the pace, not the GPU.
"""
import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

# The rnnkit of this checkout, not another one that happens to be installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rnnkit.bench import timing  # noqa: E402
from rnnkit.bench.suite import Config  # noqa: E402

CONFIGS = [  # cell, B, H, T
    ("LSTM", 64, 512, 100),
    ("LSTM", 1, 256, 100),
    ("RNN_TANH", 1, 256, 100),
]


def make_pair(cell, B, H, T, device="cuda"):
    """(torch.nn module, rnnkit module) with the same weights, as the benchmark builds them."""
    cfg = Config(cell=cell, mode="inference", dtype="fp32", batch=B, hidden=H, seq=T)
    return timing.make_modules(cfg, device, timing.rnnkit_classes())


def wall_per_run(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def kernel_table(fn, reps=5):
    """Summed device time per kernel name over `reps` runs, in microseconds per run."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    totals = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] = totals.get(event.name, 0.0) + event.device_time / reps
    return totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=4, help="kernels listed per side")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "TF32 off")
    for cell, B, H, T in CONFIGS:
        ref, ours = make_pair(cell, B, H, T)
        x = torch.randn(T, B, H, device="cuda", requires_grad=True)
        for mode in ("inference", "training"):
            for side, model in (("cuDNN", ref), ("rnnkit", ours)):
                def run():
                    with torch.set_grad_enabled(mode == "training"):
                        y, _ = model(x)
                        if mode == "training":
                            y.sum().backward()
                wall = wall_per_run(run) * 1e6 / T
                kernels = kernel_table(run)
                busy = sum(kernels.values()) / T
                print(f"{cell:8s} B={B:<3d} H={H:<4d} {mode:9s} {side:6s} wall {wall:7.1f} us/step"
                      f"  kernels {busy:7.1f} us/step  ({100 * busy / wall:3.0f}% busy)")
                for name, us in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]:
                    print(f"      {us / T:7.2f} us/step  {name[:110]}")


if __name__ == "__main__":
    main()
