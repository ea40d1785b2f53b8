"""What this rnnkit is and what it runs on: the facts `python -m rnnkit`
prints and the benchmark records (version, the torch it was built against
and the one running, CUDA and the GPU architectures the kernels cover, the
CPU's SIMD level, the strategies the planner offers, threads)."""
import os
import platform
from typing import Dict, List, Optional, Sequence, Set, Tuple

import torch

from . import _build
from ._version import __version__

# Features that select rnnkit's SIMD variants of the CPU loops: they are
# compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and baseline
# x86-64, and the CPU's features pick one when rnnkit loads.
X86_64_V4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
X86_64_V3 = {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> Optional[Set[str]]:
    """The CPU's feature flags as Linux lists them, or None where unreadable."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def simd_level(machine: str, flags: Optional[Set[str]]) -> str:
    """The widest of rnnkit's CPU code variants that this CPU runs."""
    if machine.lower() not in ("x86_64", "amd64"):
        return f"baseline ({machine}: no SIMD variants are built for it, only what the compiler vectorises)"
    if flags is None:
        return "unknown (CPU features unreadable)"
    if X86_64_V4 <= flags and X86_64_V3 <= flags:
        return "avx512 (x86-64-v4)"
    if X86_64_V3 <= flags:
        return "avx2 (x86-64-v3)"
    return "baseline x86-64"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_caches() -> str:
    """The data caches of the first CPU as lscpu counts them per core, e.g.
    "L2 1024K, L3 32768K" (Linux sysfs; empty where it is not there)."""
    root = "/sys/devices/system/cpu/cpu0/cache"

    def read(index: str, name: str) -> str:
        with open(os.path.join(root, index, name)) as f:
            return f.read().strip()

    found = {}
    try:
        for index in sorted(os.listdir(root)):
            if (index.startswith("index") and read(index, "type") in ("Unified", "Data")
                    and read(index, "level") != "1"):
                found[f"L{read(index, 'level')}"] = read(index, "size")
    except OSError:
        return ""
    return ", ".join(f"{level} {size}" for level, size in sorted(found.items()))


def parse_arch_list(arch_list: str) -> List[Tuple[Tuple[int, int], bool]]:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX", also space-separated, with "9.0a"
    variants) as ((major, minor), with_ptx) pairs; names it cannot read are skipped."""
    found = []
    for item in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        ptx = item.upper().endswith("+PTX")
        number = item[:-4] if ptx else item
        major, _, minor = number.partition(".")
        try:
            found.append(((int(major), int(minor.rstrip("afAF") or 0)), ptx))
        except ValueError:
            continue
    return found


def arch_coverage(arch_list: Optional[str], capability: Tuple[int, int]) -> str:
    """How a GPU of this compute capability runs kernels built for arch_list:
    machine code runs on its own major version at the same or a higher minor;
    PTX is compiled by the driver for any later GPU."""
    if not arch_list:
        return "unknown (no arch list recorded)"
    archs = parse_arch_list(arch_list)
    if any(a[0] == capability[0] and a[1] <= capability[1] for a, _ in archs):
        return "machine code for it"
    if any(ptx and a <= capability for a, ptx in archs):
        return "PTX, compiled by the driver at first use"
    return "NOT covered: rebuild with its arch in TORCH_CUDA_ARCH_LIST"


def strategies(device: str) -> Optional[Sequence]:
    """The planner's strategies for a device type, where this rnnkit has a
    planner that lists them (rnnkit.strategies); None otherwise."""
    import rnnkit

    listing = getattr(rnnkit, "strategies", None)
    if listing is None:
        return None
    try:
        return list(listing(device))
    except Exception as exc:  # a listing that fails must not hide the rest of the report
        return [f"(could not list: {type(exc).__name__}: {exc})"]


def threads() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op; "
            f"{cores} cores available" + (f"; OMP_NUM_THREADS={omp}" if omp else ""))


def report() -> Dict[str, str]:
    """Everything `python -m rnnkit` prints, as label -> text."""
    import rnnkit

    info = _build.read_build_info()
    built = info.torch if info else "unknown (this build left no record)"
    facts = {
        "rnnkit": f"{__version__} at {os.path.dirname(os.path.abspath(rnnkit.__file__))}",
        "commit": _build.source_commit() or "unknown (not a git checkout of rnnkit, none recorded at build)",
        "torch (built against)": built,
        "torch (running)": torch.__version__,
        "CUDA kernels": (f"yes, CUDA {info.cuda if info else '?'}, archs {info.cuda_arch_list if info else '?'}"
                         if rnnkit.built_with_cuda() else "no (CPU-only build)"),
        "torch CUDA": torch.version.cuda or "none (CPU-only torch)",
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            cover = arch_coverage(info.cuda_arch_list if info else None, cap) if rnnkit.built_with_cuda() else "-"
            facts[f"GPU {i}"] = f"{torch.cuda.get_device_name(i)}, sm_{cap[0]}{cap[1]}: {cover}"
    else:
        facts["GPU"] = "none visible to torch"
    caches = cpu_caches()
    facts["CPU"] = f"{cpu_name()} ({platform.machine()}" + (f", {caches})" if caches else ")")
    facts["SIMD"] = (f"{simd_level(platform.machine(), cpu_flags())}; torch's own: "
                     f"{torch.backends.cpu.get_cpu_capability()}")
    facts["threads"] = threads()
    for device in ("cpu", "cuda") if rnnkit.built_with_cuda() else ("cpu",):
        found = strategies(device)
        facts[f"strategies ({device})"] = ("not listed by this rnnkit (no rnnkit.strategies)" if found is None
                                           else ", ".join(map(str, found)) or "none")
    forced = os.environ.get("RNNKIT_STRATEGY")
    if forced:
        facts["RNNKIT_STRATEGY"] = forced
    facts["Python"] = f"{platform.python_version()} ({platform.platform()})"
    return facts
