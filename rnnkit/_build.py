"""How this rnnkit was built, and whether that build fits the torch running now.

rnnkit._C is compiled against one torch: its C++ ABI, its libc10/libtorch
and, for a CUDA build, its CUDA runtime. Under another torch it either fails
to load (with a loader message that names a library, not the cause) or loads
and misbehaves. So setup.py writes the facts of each build into
rnnkit/_build_info.py, a plain Python file that is read without loading _C,
and `import rnnkit` compares them with the running torch before it loads _C.

Standard library only: setup.py loads this file by path while it builds,
before rnnkit can be imported.
"""
import ast
import importlib
import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Optional

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
INFO_FILE = "_build_info.py"


@dataclass(frozen=True)
class BuildInfo:
    """The facts of one build of rnnkit._C."""

    torch: str                     # torch.__version__ it was compiled against
    cuda: Optional[str]            # CUDA version of its kernels; None for a CPU-only build
    cuda_arch_list: Optional[str]  # TORCH_CUDA_ARCH_LIST its kernels were compiled for
    commit: Optional[str]          # rnnkit's git commit when built ("+dirty": with local changes)
    source_dir: Optional[str]      # the source folder it was built from
    inplace: bool                  # built in place (an editable install): rnnkit runs from source_dir


def write_build_info(folder: str, info: BuildInfo) -> str:
    """Writes info into folder/_build_info.py; returns the file's path."""
    path = os.path.join(folder, INFO_FILE)
    fields = "".join(f"    {k!r}: {v!r},\n" for k, v in asdict(info).items())
    with open(path, "w") as f:
        f.write("# Written by rnnkit's setup.py when it built rnnkit._C; each build rewrites it.\n"
                f"BUILD = {{\n{fields}}}\n")
    return path


def read_build_info(folder: str = PACKAGE_DIR) -> Optional[BuildInfo]:
    """The facts written by the last build into folder, or None where there
    is no readable record (never built, or built before builds wrote one)."""
    try:
        with open(os.path.join(folder, INFO_FILE)) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["BUILD"]:
                return BuildInfo(**ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError, TypeError):
        pass
    return None


def rebuild_command(info: Optional[BuildInfo], python: str = sys.executable) -> str:
    """The shell command that rebuilds rnnkit against the torch of `python`."""
    source = info.source_dir if info and info.source_dir and os.path.isdir(info.source_dir) else None
    editable = "-e " if info is None or info.inplace else ""
    build = f"{shlex.quote(python)} -m pip install --no-build-isolation --no-deps {editable}."
    if source:
        return f"cd {shlex.quote(source)} && {build}"
    return f"{build}   (in the rnnkit source folder)"


def torch_mismatch(info: BuildInfo, running: str, python: str = sys.executable) -> Optional[str]:
    """None when the build fits the running torch version; otherwise the
    message that says so and how to rebuild. Versions must be equal in full:
    torch keeps no C++ ABI between releases, and 2.14.1+cpu and 2.14.1+cu130
    are different libraries."""
    if info.torch == running:
        return None
    return (f"rnnkit was built against torch {info.torch}, but torch {running} is running. "
            f"rnnkit's compiled part (rnnkit._C) works only with the torch it was built against; "
            f"rebuild it against this one:\n    {rebuild_command(info, python)}")


def load_extension() -> ModuleType:
    """Imports rnnkit._C once the running torch is known to be the one it was
    built against; an ImportError that says what to run otherwise."""
    import torch

    info = read_build_info()
    problem = torch_mismatch(info, torch.__version__) if info is not None else None
    if problem:
        raise ImportError(problem)
    build = f"Build it against the running torch {torch.__version__}:\n    {rebuild_command(info)}"
    # Another checkout's editable install can answer for rnnkit._C when this
    # copy has none; its build is not this one's.
    spec = importlib.util.find_spec("rnnkit._C")
    origin = spec.origin if spec is not None else None
    if origin is None or os.path.dirname(os.path.abspath(origin)) != PACKAGE_DIR:
        elsewhere = f" (Python found {origin}, which belongs to another copy of rnnkit)" if origin else ""
        raise ImportError(f"rnnkit's compiled part (rnnkit._C) has not been built in {PACKAGE_DIR}{elsewhere}. "
                          + build)
    try:
        return importlib.import_module("rnnkit._C")
    except ImportError as exc:
        raise ImportError(f"rnnkit's compiled part (rnnkit._C) could not be loaded ({exc}). " + build) from exc


def git_commit(folder: str) -> Optional[str]:
    """The commit checked out in folder ("+dirty" with changes to tracked
    files), but only where folder is the top of a git work tree that tracks
    rnnkit/__init__.py, i.e. rnnkit's own repository; None elsewhere (a
    package installed inside some other project's checkout is not that
    project's commit)."""
    def git(*args):
        return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode or os.path.realpath(top.stdout.strip()) != os.path.realpath(folder):
            return None
        if git("ls-files", "--error-unmatch", "rnnkit/__init__.py").returncode:
            return None
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def source_commit(package_dir: str = PACKAGE_DIR) -> Optional[str]:
    """rnnkit's own commit: read live where rnnkit runs from its repository
    (an editable install, whose Python files may be newer than the build),
    else the one recorded when it was built; None when neither is known."""
    live = git_commit(os.path.dirname(package_dir))
    if live:
        return live
    info = read_build_info(package_dir)
    return info.commit if info else None
