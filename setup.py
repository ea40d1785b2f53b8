"""Builds rnnkit._C against the torch that is installed:

    python -m pip install --no-build-isolation .      (or -e . for an editable install)

The extension works only with the torch it was compiled against, so it must
be built against the user's own torch, not one that pip would download into
an isolated build environment: without --no-build-isolation this script
stops at once and says what to run. Each build records the torch it used
(rnnkit/_build_info.py), which `import rnnkit` checks against the torch that
runs it.

CUDA sources in csrc/cuda/ are compiled when torch is a CUDA build and nvcc is
found; no GPU is needed to compile them. RNNKIT_CUDA=1 forces them (failing
if they cannot be built), RNNKIT_CUDA=0 leaves them out.
"""
import glob
import os
import runpy
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Shared with the package: the build record and the commit lookup.
BUILD = runpy.run_path(os.path.join(ROOT, "rnnkit", "_build.py"))
VERSION = runpy.run_path(os.path.join(ROOT, "rnnkit", "_version.py"))["__version__"]
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"  # A100, H100/H200; PTX so that newer GPUs can JIT-compile the kernels


def users_torch_version():
    """The torch installed where this Python normally looks, read with the
    variables that pip sets for an isolated build removed; None if none."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    try:
        found = subprocess.run([sys.executable, "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                               env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


def no_torch_message():
    """What to do when torch cannot be imported here: almost always pip's
    isolated build environment, which holds only what pyproject.toml lists."""
    # pip builds a local folder where it is, an archive or URL in a temporary folder of its own
    temporary = any(part.startswith("pip-") for part in ROOT.split(os.sep)[-2:])
    source = "<the same source you gave pip>" if temporary else ROOT
    command = f"{sys.executable} -m pip install --no-build-isolation {source}"
    users = users_torch_version()
    if users:
        what = f"Your environment has torch {users}. Build rnnkit against it:"
    else:
        what = ("This Python has no torch. Install torch first (pip install torch; for the CPU-only build add "
                "--index-url https://download.pytorch.org/whl/cpu), then build rnnkit against it:")
    return ("\nrnnkit is compiled against the torch it will run with, and there is no torch in this build "
            "environment: pip builds in an isolated environment unless told otherwise, and rnnkit does not "
            "let it download a second torch to compile against.\n"
            f"{what}\n\n    {command}\n\n(add -e for an editable install)\n")


try:
    import torch
except ModuleNotFoundError as missing:
    if missing.name != "torch":
        raise
    sys.exit(no_torch_message())

from torch.utils import cpp_extension  # noqa: E402


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
    from the nvidia wheels installed beside torch (not from the toolkit), so
    they are looked for in the site-packages of the torch being built against."""
    site_packages = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    found = glob.glob(os.path.join(site_packages, "nvidia", "*", "include"))
    return sorted(set(found))


def shared_libstdcxx_link_args():
    """Where the compiler finds only the static libstdc++ (libstdc++.a, no
    libstdc++.so development link), `g++ -shared` copies it into the
    extension: a second C++ runtime beside the process's libstdc++.so.6 whose
    locale is never set up, so the first number written into an error message
    crashes (as with a g++ installed without its libstdc++.so). Link the
    shared runtime by its file name then."""
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
    # The persistent kernels' planner and argument checks: torch-free C++.
    sources += sorted(glob.glob("csrc/persistent/*.cpp"))
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
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    nvcc = ["-O3", "-DRNNKIT_WITH_CUDA"]
    return cpp_extension.CUDAExtension(
        "rnnkit._C",
        sources,
        include_dirs=nvidia_wheel_includes(),
        extra_compile_args={"cxx": cxx + ["-DRNNKIT_WITH_CUDA"], "nvcc": nvcc},
        extra_link_args=link,
    )


class BuildExtension(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """torch's extension builder, which also records the build (the torch,
    CUDA and arch list it used, and the commit) beside the compiled module."""

    def run(self):
        super().run()
        cuda = torch.version.cuda if any(s.endswith(".cu") for e in self.extensions for s in e.sources) else None
        info = BUILD["BuildInfo"](
            torch=torch.__version__,
            cuda=cuda,
            cuda_arch_list=os.environ.get("TORCH_CUDA_ARCH_LIST") if cuda else None,
            commit=BUILD["git_commit"](ROOT),
            source_dir=ROOT,
            inplace=bool(self.inplace),
        )
        package = os.path.join(ROOT, "rnnkit") if self.inplace else os.path.join(self.build_lib, "rnnkit")
        os.makedirs(package, exist_ok=True)
        BUILD["write_build_info"](package, info)


def torch_requirement():
    """The wheel runs only under the torch it was compiled against: the
    same release (a local label such as +cu130 still matches ==2.14.1)."""
    return f"torch=={torch.__version__.split('+')[0]}"


with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
    LONG_DESCRIPTION = readme.read()

setup(
    name="rnnkit",
    version=VERSION,
    description="Fused LSTM/GRU/RNN kernels for PyTorch (CPU and CUDA), drop-in replacements for torch.nn",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    author="rnnkit contributors",
    license="BSD-3-Clause",
    license_files=["LICENSE"],
    keywords=["pytorch", "lstm", "gru", "rnn", "cuda", "recurrent neural network"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: C++",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Environment :: GPU :: NVIDIA CUDA",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
    packages=find_packages(include=["rnnkit", "rnnkit.*"]),
    package_data={"rnnkit": ["py.typed"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=[torch_requirement()],
    zip_safe=False,
)
