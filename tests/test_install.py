"""Installing rnnkit: one source for the version, the build record and the
check at import that the running torch is the one rnnkit was built against,
`python -m rnnkit`, rnnkit's own commit, and the stop (in seconds, with the
command to run) of a build that pip isolates from the user's torch."""
import glob
import os
import re
import runpy
import shutil
import subprocess
import sys
import time

import pytest
import torch

import rnnkit
from rnnkit import _about, _build
from rnnkit._build import BuildInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "rnnkit")
PUBLIC_TORCH = torch.__version__.split("+")[0]  # as the installed package's metadata names it


def info(**changes):
    fields = dict(torch="2.13.0+cpu", cuda=None, cuda_arch_list=None, commit="abc123", source_dir=ROOT,
                  inplace=True)
    return BuildInfo(**{**fields, **changes})


def run(*args, env_extra=None, cwd=ROOT, timeout=120):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---- the version ------------------------------------------------------------------

def test_the_version_is_written_once():
    written = runpy.run_path(os.path.join(PACKAGE, "_version.py"))["__version__"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", written)
    assert rnnkit.__version__ == written
    done = run("setup.py", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == written
    for name in ("setup.py", "pyproject.toml"):
        with open(os.path.join(ROOT, name)) as f:
            assert written not in f.read(), f"{name} repeats the version"


# ---- the build record and the check at import ------------------------------------

def test_build_record_round_trip(tmp_path):
    assert _build.read_build_info(str(tmp_path)) is None  # never built
    written = info(cuda="13.0", cuda_arch_list="8.0;9.0+PTX", commit=None, inplace=False)
    _build.write_build_info(str(tmp_path), written)
    assert _build.read_build_info(str(tmp_path)) == written
    (tmp_path / _build.INFO_FILE).write_text("BUILD = {'torch': ")  # a broken file is no record
    assert _build.read_build_info(str(tmp_path)) is None
    (tmp_path / _build.INFO_FILE).write_text("BUILD = {'torch': '2.1'}")  # nor one with fields missing
    assert _build.read_build_info(str(tmp_path)) is None


def test_this_build_recorded_the_running_torch():
    recorded = rnnkit.build_info()
    assert recorded is not None, "setup.py did not write rnnkit/_build_info.py"
    assert recorded.torch == torch.__version__
    assert (recorded.cuda is not None) == rnnkit.built_with_cuda()
    assert recorded.cuda_arch_list is None or "+PTX" in recorded.cuda_arch_list or os.environ.get(
        "TORCH_CUDA_ARCH_LIST")


def test_mismatch_names_both_versions_and_the_rebuild_command():
    assert _build.torch_mismatch(info(torch="2.14.1+cu130"), "2.14.1+cu130") is None
    message = _build.torch_mismatch(info(), "2.14.1+cu130", python="/venv/bin/python")
    assert "built against torch 2.13.0+cpu" in message and "torch 2.14.1+cu130 is running" in message
    assert f"cd {ROOT} && /venv/bin/python -m pip install --no-build-isolation --no-deps -e ." in message
    # the same release built for another device is another library
    assert _build.torch_mismatch(info(torch="2.14.1+cpu"), "2.14.1+cu130") is not None


def test_rebuild_command_fits_how_rnnkit_was_installed(tmp_path):
    assert _build.rebuild_command(info(inplace=False), "py") == (
        f"cd {ROOT} && py -m pip install --no-build-isolation --no-deps .")
    gone = _build.rebuild_command(info(source_dir=str(tmp_path / "gone")), "py")
    assert gone.startswith("py -m pip install --no-build-isolation --no-deps -e .") and "source folder" in gone
    assert "--no-build-isolation" in _build.rebuild_command(None, "py")


def copy_package(dest, with_extension=True):
    """rnnkit's Python files (and its compiled module) in a folder of their own."""
    target = os.path.join(dest, "rnnkit")
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "_build_info.py", "_C*.so"))
    if with_extension:
        for so in glob.glob(os.path.join(PACKAGE, "_C*.so")):
            shutil.copy(so, target)
    return target


def test_import_under_another_torch_fails_with_both_versions(tmp_path):
    package = copy_package(str(tmp_path))
    _build.write_build_info(package, info(torch="2.0.0+other", source_dir=str(tmp_path)))
    done = run("-c", "import rnnkit", env_extra={"PYTHONPATH": str(tmp_path)}, cwd=str(tmp_path))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()
    assert last[-2] == (f"ImportError: rnnkit was built against torch 2.0.0+other, but torch {torch.__version__} is "
                        "running. rnnkit's compiled part (rnnkit._C) works only with the torch it was built against; "
                        "rebuild it against this one:")
    assert last[-1].strip() == f"cd {tmp_path} && {sys.executable} -m pip install --no-build-isolation --no-deps -e ."


def test_import_without_a_build_says_how_to_build(tmp_path):
    copy_package(str(tmp_path), with_extension=False)
    done = run("-c", "import rnnkit", env_extra={"PYTHONPATH": str(tmp_path)}, cwd=str(tmp_path))
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert f"rnnkit's compiled part (rnnkit._C) has not been built in {tmp_path}/rnnkit" in message
    assert f"Build it against the running torch {torch.__version__}" in message
    assert "--no-build-isolation" in message


# ---- python -m rnnkit ---------------------------------------------------------------

def test_python_m_rnnkit_reports_the_build_and_the_machine():
    done = run("-m", "rnnkit")
    assert done.returncode == 0, done.stderr
    facts = dict(line.split(":", 1) for line in done.stdout.splitlines())
    facts = {k.strip(): v.strip() for k, v in facts.items()}
    assert facts["rnnkit"].startswith(rnnkit.__version__ + " at ")
    assert facts["torch (built against)"] == rnnkit.build_info().torch
    assert facts["torch (running)"] == torch.__version__
    assert facts["CUDA kernels"].startswith("yes" if rnnkit.built_with_cuda() else "no")
    assert facts["torch CUDA"] == (torch.version.cuda or "none (CPU-only torch)")
    assert facts["SIMD"].startswith(_about.simd_level(_about.platform.machine(), _about.cpu_flags()))
    assert facts["threads"].startswith(f"{torch.get_num_threads()} intra-op")
    assert "strategies (cpu)" in facts and "commit" in facts and "Python" in facts
    # The CPU with its caches, as the benchmark's results name it.
    caches = _about.cpu_caches()
    assert re.fullmatch(r"(L[2-9] \w+(, L[2-9] \w+)*)?", caches), caches
    assert facts["CPU"].startswith(_about.cpu_name()) and caches in facts["CPU"]


def test_simd_level_follows_the_cpu_features():
    v3 = set(_about.X86_64_V3)
    assert _about.simd_level("x86_64", v3 | _about.X86_64_V4) == "avx512 (x86-64-v4)"
    assert _about.simd_level("x86_64", v3 | {"avx512f"}) == "avx2 (x86-64-v3)"  # AVX-512 F alone is not v4
    assert _about.simd_level("x86_64", {"sse2", "avx"}) == "baseline x86-64"
    assert _about.simd_level("x86_64", None).startswith("unknown")
    assert _about.simd_level("aarch64", {"asimd"}).startswith("baseline (aarch64")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert _about.cpu_flags(str(path)) == {"fpu", "sse2", "avx2", "fma"}
    assert _about.cpu_flags(str(tmp_path / "missing")) is None


def test_arch_coverage():
    built = "8.0;9.0+PTX"
    assert _about.arch_coverage(built, (9, 0)) == "machine code for it"
    assert _about.arch_coverage(built, (8, 6)) == "machine code for it"  # sm_80 code runs on sm_86
    assert _about.arch_coverage(built, (10, 0)).startswith("PTX")
    assert _about.arch_coverage(built, (7, 5)).startswith("NOT covered")
    assert _about.arch_coverage("8.0 9.0", (12, 0)).startswith("NOT covered")  # no PTX: newer GPUs left out
    assert _about.arch_coverage("9.0a", (9, 0)) == "machine code for it"
    assert _about.arch_coverage(None, (9, 0)).startswith("unknown")


# ---- rnnkit's own commit -----------------------------------------------------------------

def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_comes_only_from_rnnkits_own_repository(tmp_path):
    # someone else's project, with rnnkit copied (not tracked) inside it
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "app.py").write_text("print()\n")
    git(other, "add", "app.py")
    git(other, "commit", "-q", "-m", "other project")
    package = copy_package(str(other), with_extension=False)
    assert _build.git_commit(str(other)) is None
    assert _build.source_commit(package) is None  # not the other project's commit
    _build.write_build_info(package, info(commit="recorded-at-build"))
    assert _build.source_commit(package) == "recorded-at-build"

    # rnnkit's own repository: its commit, +dirty once a tracked file changes
    own = tmp_path / "own"
    package = copy_package(str(own), with_extension=False)
    git(own, "init", "-q")
    git(own, "add", "rnnkit")
    git(own, "commit", "-q", "-m", "rnnkit")
    head = git(own, "rev-parse", "HEAD")
    assert _build.git_commit(str(own)) == head
    assert _build.git_commit(package) is None  # a folder inside the repository is not its top
    with open(os.path.join(package, "cells.py"), "a") as f:
        f.write("# changed\n")
    assert _build.source_commit(package) == head + "+dirty"


# ---- building without the user's torch ---------------------------------------------------

def test_a_build_that_cannot_see_torch_stops_at_once_with_the_command(tmp_path):
    # pip's isolated build environment, as setup.py sees it: no torch to import
    fake = tmp_path / "isolated" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    started = time.perf_counter()
    done = run("setup.py", "--name", env_extra={"PYTHONPATH": str(tmp_path / "isolated")})
    assert time.perf_counter() - started < 30
    assert done.returncode == 1
    message = " ".join(done.stderr.split())
    assert "rnnkit is compiled against the torch it will run with" in message
    assert f"Your environment has torch {PUBLIC_TORCH}" in message
    assert f"{sys.executable} -m pip install --no-build-isolation {ROOT} (add -e for an editable install)" in message


def test_pip_install_with_build_isolation_stops_fast(tmp_path):
    """The real thing: pip builds in an isolated environment (setuptools and
    wheel from the package index) and must stop there, not download torch."""
    started = time.perf_counter()
    done = run("-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp_path), ROOT, timeout=300)
    took = time.perf_counter() - started
    output = " ".join((done.stdout + done.stderr).split())
    if "rnnkit is compiled against" not in output and re.search(r"No matching distribution|Could not find a version",
                                                                 output):
        pytest.skip("no package index for pip's build environment (setuptools)")
    assert done.returncode != 0 and not glob.glob(str(tmp_path / "*.whl"))
    assert "--no-build-isolation" in output and f"Your environment has torch {PUBLIC_TORCH}" in output
    assert took < 120, f"took {took:.0f} s"
