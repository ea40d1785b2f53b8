"""The machine and software a benchmark ran on, for the JSON and the reports."""
import os
import platform
import socket
from datetime import datetime, timezone

import torch

import rnnkit

from .. import _about, _build


def environment(device: str, tf32: bool) -> dict:
    cuda = device == "cuda"
    info = _build.read_build_info()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _about.cpu_name(),
        "cpu_caches": _about.cpu_caches(),
        "cpu_simd": _about.simd_level(platform.machine(), _about.cpu_flags()),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": tf32,
        "rnnkit": rnnkit.__version__,
        "rnnkit_built_against_torch": info.torch if info else None,
        "rnnkit_built_with_cuda": rnnkit.built_with_cuda(),
        "rnnkit_cuda_arch_list": info.cuda_arch_list if info else None,
        # rnnkit's own commit, never that of a repository it happens to sit in; None if unknown
        "rnnkit_commit": _build.source_commit(),
        "rnnkit_strategy_forced": os.environ.get("RNNKIT_STRATEGY"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
