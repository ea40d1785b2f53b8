"""Builds rnnkit._C against the torch that is installed (use --no-build-isolation).

CUDA sources in csrc/cuda/ are compiled when torch is a CUDA build and nvcc is
found; no GPU is needed to compile them. RNNKIT_CUDA=1 forces them (failing
if they cannot be built), RNNKIT_CUDA=0 leaves them out.
"""
import glob
import os
import shutil
import site
import subprocess
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """The toolkit folder. `nvcc` on the PATH may be a wrapper script, so
    torch's guess (the folder above it) can be wrong: prefer CUDA_HOME, then
    a folder that really holds lib64/libcudart, then nvcc's real location."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for folder in candidates:
        if folder and os.path.exists(os.path.join(folder, "bin", "nvcc")) and glob.glob(
            os.path.join(folder, "lib*", "libcudart*")
        ):
            return folder
    return None


def want_cuda():
    forced = os.environ.get("RNNKIT_CUDA")
    cuda_home = find_cuda_home() if torch.version.cuda else None
    if forced == "0":
        return None
    if forced == "1" and cuda_home is None:
        sys.exit("RNNKIT_CUDA=1 but torch is not a CUDA build or no CUDA toolkit (nvcc + libcudart) was found")
    return cuda_home


def nvidia_wheel_includes():
    """cublas_v2.h and cusparse.h, needed by ATen/cuda/CUDAContext.h, come
    from the nvidia wheels that torch installs, not from the toolkit."""
    found = []
    for base in site.getsitepackages() + [site.getusersitepackages()]:
        found += glob.glob(os.path.join(base, "nvidia", "cu*", "include"))
        found += glob.glob(os.path.join(base, "nvidia", "*", "include"))
    return sorted(set(found))


def shared_libstdcxx_link_args():
    """Where the compiler finds only the static libstdc++ (libstdc++.a, no
    libstdc++.so development link), `g++ -shared` copies it into the
    extension: a second C++ runtime beside the process's libstdc++.so.6 whose
    locale is never set up, so the first number written into an error message
    crashes (seen on the GPU machine, whose CXX is a g++ 13 in /opt/gcc with
    no libstdc++.so beside it). Link the shared runtime by its file name then."""
    if not sys.platform.startswith("linux"):
        return []
    compiler = os.environ.get("CXX", "c++")
    try:
        found = subprocess.run([compiler, "-print-file-name=libstdc++.so"], capture_output=True,
                               text=True, check=False).stdout.strip()
    except OSError:
        return []
    return [] if os.path.isabs(found) and os.path.exists(found) else ["-l:libstdc++.so.6"]


def openmp_flags():
    """ATen's parallel_for splits work across threads only in code compiled
    with OpenMP (without it, it runs the whole range on the calling thread).
    torch's Linux wheels carry their own libgomp.so.1, which the extension
    then shares through that same name: one thread pool, torch's."""
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


def sanitizer_flags():
    """RNNKIT_SANITIZE=1: a CPU build checked by AddressSanitizer and UBSan (see
    tools/sanitize_cpu.sh, which builds and tests it apart from the normal build)."""
    if os.environ.get("RNNKIT_SANITIZE") != "1":
        return []
    return ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined"]


def extension():
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    # No trapping math lets GCC vectorise the branch-free cell loops (results unchanged).
    cxx = ["-O3", "-fno-math-errno", "-fno-trapping-math"] + openmp_flags() + sanitizer_flags()
    link = shared_libstdcxx_link_args() + openmp_flags() + sanitizer_flags()
    cuda_home = want_cuda()
    if cuda_home is None:
        return cpp_extension.CppExtension("rnnkit._C", sources, extra_compile_args={"cxx": cxx},
                                          extra_link_args=link)
    # torch reads CUDA_HOME when it is imported; point it at the real toolkit.
    os.environ["CUDA_HOME"] = cuda_home
    cpp_extension.CUDA_HOME = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    nvcc = ["-O3", "-DRNNKIT_WITH_CUDA"]
    return cpp_extension.CUDAExtension(
        "rnnkit._C",
        sources,
        include_dirs=nvidia_wheel_includes(),
        extra_compile_args={"cxx": cxx + ["-DRNNKIT_WITH_CUDA"], "nvcc": nvcc},
        extra_link_args=link,
    )


setup(
    name="rnnkit",
    version="0.1.0",
    description="Fused LSTM/GRU/RNN kernels for PyTorch, drop-in for torch.nn",
    packages=find_packages(include=["rnnkit", "rnnkit.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4"],
)
