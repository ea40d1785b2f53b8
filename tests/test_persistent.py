"""CPU checks of the persistent kernels (csrc/persistent/), no GPU needed.

tests/cpp/persistent_test.cpp is compiled here with the system C++ compiler,
twice: plainly, and with ThreadSanitizer. It runs the kernel bodies on two
CPU block backends against a float64 reference (every cell, forward and
backward, lengths, reverse, both directions, odd sizes, all three group kinds,
float64/float32/TF32/bfloat16 tiles), the planner for an H100, H200 and L4,
the entry points' argument checks, and the barrier protocol: one thread per
block with release/acquire step flags and random yields, clean under TSan; a
block that skips its wait must be caught (wrong numbers, or a TSan race
report); a block that never arrives must trip the watchdog, not hang.
Inputs are fresh random on every run; the seed is printed.
"""
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [
    os.path.join(ROOT, "tests", "cpp", "persistent_test.cpp"),
    os.path.join(ROOT, "csrc", "persistent", "plan.cpp"),
    os.path.join(ROOT, "csrc", "persistent", "check_args.cpp"),
]
COMPILER = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
TSAN_EXIT = 66
TSAN_ENV = dict(os.environ, TSAN_OPTIONS=f"halt_on_error=1 exitcode={TSAN_EXIT}")

pytestmark = pytest.mark.skipif(COMPILER is None, reason="needs a C++ compiler")


def compile_binary(out, flags):
    cmd = [COMPILER, "-std=c++17", "-pthread", "-Wall", *flags, *SOURCES, "-o", out]
    t0 = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return done, time.time() - t0


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """(plain, tsan or None): both compiled at once (CI has two cores)."""
    folder = tmp_path_factory.mktemp("persistent")
    plain, tsan = str(folder / "persistent_test"), str(folder / "persistent_test_tsan")
    with ThreadPoolExecutor(2) as pool:
        job_plain = pool.submit(compile_binary, plain, ["-O1"])
        job_tsan = pool.submit(compile_binary, tsan, ["-O0", "-g", "-fsanitize=thread"])
        (built, secs), (built_tsan, secs_tsan) = job_plain.result(), job_tsan.result()
    assert built.returncode == 0, f"persistent_test does not compile:\n{built.stderr[-4000:]}"
    print(f"compiled persistent_test in {secs:.1f} s, the TSan build in {secs_tsan:.1f} s")
    if built_tsan.returncode != 0:
        # Only a toolchain without ThreadSanitizer excuses this: the plain
        # build of the same sources worked.
        assert "tsan" in built_tsan.stderr.lower() or "sanitize" in built_tsan.stderr.lower(), built_tsan.stderr
        tsan = None
    return plain, tsan


def run(binary, *args, env=None, timeout=300):
    t0 = time.time()
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout, env=env)
    print(done.stdout[-6000:], done.stderr[-6000:])
    return done, time.time() - t0


def tsan_binary(binaries):
    if binaries[1] is None:
        pytest.skip("this compiler has no ThreadSanitizer")
    return binaries[1]


def test_partition_planner_and_argument_checks(binaries):
    done, _ = run(binaries[0], "structure")
    assert done.returncode == 0 and "every W_hh element and K index owned exactly once" in done.stdout
    done, _ = run(binaries[0], "planner")
    assert done.returncode == 0 and "planner: checked" in done.stdout
    done, _ = run(binaries[0], "args")
    assert done.returncode == 0 and "args: checked" in done.stdout


def test_sequential_backend_matches_float64_reference(binaries):
    done, _ = run(binaries[0], "seq", "--cases", "250")
    assert done.returncode == 0, done.stdout
    assert "seq: 298/298 cases passed" in done.stdout


def test_threaded_backend_matches_reference(binaries):
    done, _ = run(binaries[0], "threads")
    assert done.returncode == 0 and "threads: 48/48 cases passed" in done.stdout


def test_sequential_and_threaded_runs_are_bit_identical(binaries):
    done, _ = run(binaries[0], "determinism")
    assert done.returncode == 0 and "determinism: 8/8 cases bit-identical" in done.stdout


def test_a_block_ahead_of_the_barrier_gives_wrong_numbers(binaries):
    done, _ = run(binaries[0], "broken-seq")
    assert done.returncode == 0 and "broken-seq: 8/8 broken barriers caught" in done.stdout


def test_watchdog_turns_a_stuck_barrier_into_an_error(binaries):
    done, secs = run(binaries[0], "watchdog")
    assert done.returncode == 0, done.stdout
    assert done.stdout.count("timed out") == 2
    assert secs < 20


def test_threaded_protocol_is_race_free_under_tsan(binaries):
    done, _ = run(tsan_binary(binaries), "threads", env=TSAN_ENV, timeout=600)
    assert "ThreadSanitizer" not in done.stderr, done.stderr[-4000:]
    assert done.returncode == 0 and "threads: 48/48 cases passed" in done.stdout


def test_watchdog_is_race_free_under_tsan(binaries):
    done, _ = run(tsan_binary(binaries), "watchdog", env=TSAN_ENV)
    assert "ThreadSanitizer" not in done.stderr, done.stderr[-4000:]
    assert done.returncode == 0


def test_tsan_reports_a_block_that_skips_its_wait(binaries):
    done, _ = run(tsan_binary(binaries), "broken-threads", env=TSAN_ENV)
    assert "WARNING: ThreadSanitizer: data race" in done.stderr
    assert done.returncode == TSAN_EXIT
