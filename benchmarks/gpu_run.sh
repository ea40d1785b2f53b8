#!/usr/bin/env bash
# Everything rnnkit needs checked on a GPU machine, in one command:
#
#     benchmarks/gpu_run.sh OUTDIR
#
# Stages (each one runs even if an earlier one failed; its exit status and
# time go to OUTDIR/summary.txt), most important first:
#   env       nvidia-smi, torch/CUDA/cuDNN versions, git commit, date -> env.txt
#   build     rnnkit built in place with its CUDA kernels (pip -e, falling
#             back to setup.py build_ext --inplace)               -> build.log
#   pytest    the GPU tests (-m cuda): tests/test_cuda_persistent.py (every
#             persistent strategy forced through the op) and tests/test_cuda.py
#             first, then the cuda-marked tests of the other files (the CPU
#             tests are CI's)                                      -> pytest.log, junit.xml
#   sanitize  compute-sanitizer memcheck on a forward+backward of every
#             cell kind, the planner's choices (the persistent kernels where
#             they apply) and each persistent group kind forced
#             (benchmarks/sanitize_run.py)                         -> sanitize.log
#   bench     python3 -m rnnkit.bench --device cuda --suite $RNNKIT_GPU_BENCH_SUITE
#             (default quick: the fastrnns default T=100 B=64 I=H=512 in fp32
#             and bf16, inference and training, rnnkit vs cuDNN, plus batch-1
#             latency; real: the shapes from real programs); its strategy
#             column names what ran                                -> bench_gpu.json, bench_gpu.md
#             (its table also goes to summary.txt)
#   racecheck, synccheck  compute-sanitizer on the persistent kernels only,
#             each group kind forced (sanitize_run.py --persistent) -> sanitize.log
#   barrier   benchmarks/persistent_gpu_run.sh STAGES=barrier: us per barrier
#             (syncthreads, grid flags, clusters...), the table the persistent
#             planner's costs should come from                    -> summary.txt, build.log
#   profile   benchmarks/gpu_profile.py: kernel time against wall time
#             per step, rnnkit and cuDNN (only with a minute of budget left) -> summary.txt
# OUTDIR ends up with 8 files, the most the device tool brings back.
#
# Needs: python3 with torch (CUDA build), nvcc, ninja, pytest; no network.
# Wall time: about 8 minutes at most (RNNKIT_GPU_RUN_BUDGET seconds, default
# 480); each stage runs under `timeout` and gets what the budget leaves after
# keeping a floor for the stages after it.
set -u -o pipefail

OUTDIR="${1:?usage: benchmarks/gpu_run.sh OUTDIR}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export RNNKIT_CUDA=1  # fail the build rather than silently leave the CUDA kernels out
# The planner takes the persistent kernels by default only once a GPU run has
# checked them: this run is that check, so it lets the planner take them.
export RNNKIT_PERSISTENT="${RNNKIT_PERSISTENT:-1}"

BUDGET="${RNNKIT_GPU_RUN_BUDGET:-480}"
START=$(date +%s)
SUMMARY="$OUTDIR/summary.txt"
FAILED=0

{
  echo "rnnkit GPU run  $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "budget ${BUDGET}s; stage  exit-status  seconds  (124: stopped by its time limit)"
} > "$SUMMARY"

# Seconds left for a stage: at most CAP, leaving FLOOR seconds for the stages after it.
stage_limit() {
  local cap=$1 floor=$2 left
  left=$(( BUDGET - ($(date +%s) - START) - floor ))
  (( left > cap )) && left=$cap
  (( left < 20 )) && left=20
  echo "$left"
}

# run_stage NAME LIMIT LOG CMD...: runs CMD under timeout (SIGINT first, so
# that pytest still writes its reports; SIGKILL 20 s later), appends to LOG,
# records the exit status.
run_stage() {
  local name=$1 limit=$2 log=$3 t0 rc
  shift 3
  t0=$(date +%s)
  echo "=== $name: $* (limit ${limit}s)" >> "$log"
  timeout -s INT -k 20 "$limit" "$@" >> "$log" 2>&1
  rc=$?
  printf '%-10s rc=%-4s %4ss   %s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$(basename "$log")" >> "$SUMMARY"
  (( rc != 0 )) && FAILED=1
  return $rc
}

# ---- env -----------------------------------------------------------------------------------
ENV="$OUTDIR/env.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname)  kernel: $(uname -r)  cpus: $(nproc)"
  echo "git commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "git describe: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "git status (short):"; git status --short 2>/dev/null | head -40
  echo; echo "--- nvidia-smi"; timeout 30 nvidia-smi 2>&1
  echo; echo "--- nvidia-smi -q (clocks, power, ECC)"
  timeout 30 nvidia-smi -q -d CLOCK,POWER,ECC,PERFORMANCE 2>&1 | head -80
  echo; echo "--- nvcc"; nvcc --version 2>&1 | tail -3
  echo; echo "--- compute-sanitizer"; compute-sanitizer --version 2>&1 | head -3
  echo; echo "--- ninja $(ninja --version 2>&1)"
  echo; echo "--- C++ compiler ${CXX:-c++}: $(${CXX:-c++} --version 2>&1 | head -1); shared libstdc++: $(${CXX:-c++} -print-file-name=libstdc++.so)"
  echo; echo "--- python"
  timeout 60 "$PY" - <<'EOF' 2>&1
import platform, torch
print("python", platform.python_version(), platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "git", torch.version.git_version[:12])
print("cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "capability", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "memory GiB", round(p.total_memory / 2**30, 1))
for name in ("numpy", "pytest", "triton"):
    try:
        print(name, __import__(name).__version__)
    except Exception as e:
        print(name, "missing:", e)
EOF
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
} > "$ENV" 2>&1
printf '%-10s rc=%-4s %4ss   %s\n' env 0 "$(( $(date +%s) - START ))" env.txt >> "$SUMMARY"

# ---- build -----------------------------------------------------------------------------------
BUILD_LOG="$OUTDIR/build.log"
: > "$BUILD_LOG"
if ! run_stage build "$(stage_limit 240 250)" "$BUILD_LOG" \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e .; then
  echo "pip install -e failed; falling back to setup.py build_ext --inplace" >> "$BUILD_LOG"
  run_stage build_ext "$(stage_limit 240 230)" "$BUILD_LOG" "$PY" setup.py build_ext --inplace
fi
run_stage import 60 "$BUILD_LOG" "$PY" -c "
import rnnkit, torch
print('rnnkit', rnnkit.__file__, 'built_with_cuda', rnnkit.built_with_cuda(), 'gpu', torch.cuda.is_available())
assert rnnkit.built_with_cuda(), 'rnnkit was built without its CUDA kernels'
"
run_stage about 60 "$BUILD_LOG" "$PY" -m rnnkit
grep -E "^rnnkit .*built_with_cuda" "$BUILD_LOG" | tail -1 >> "$SUMMARY"
# The extension must use the process's C++ runtime, not carry a copy of it.
{
  echo "--- linked libraries"; ldd rnnkit/_C*.so 2>&1 | grep -E "stdc|c10|torch"
  echo "--- C++ runtime code defined inside the extension (expect 0): $(nm -C --defined-only rnnkit/_C*.so 2>/dev/null | grep -c 'std::locale::')"
} >> "$BUILD_LOG" 2>&1
grep -E "^--- C\+\+ runtime" "$BUILD_LOG" | tail -1 >> "$SUMMARY"

# ---- tests -----------------------------------------------------------------------------------
PYTEST_LOG="$OUTDIR/pytest.log"
: > "$PYTEST_LOG"
# The GPU tests only, the persistent strategies' first (pytest drops the
# files named twice); one test may take at most 120 s when pytest-timeout is there.
TIMEOUT_OPT=()
"$PY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OPT=(--timeout 120)
run_stage pytest "$(stage_limit 200 150)" "$PYTEST_LOG" \
  "$PY" -m pytest -m cuda tests/test_cuda_persistent.py tests/test_cuda.py tests -q -rs -p no:cacheprovider \
  ${TIMEOUT_OPT[@]+"${TIMEOUT_OPT[@]}"} --junitxml="$OUTDIR/junit.xml" -o junit_family=xunit1 --durations=15
tail -n 3 "$PYTEST_LOG" | sed 's/^/    /' >> "$SUMMARY"

# ---- compute-sanitizer -------------------------------------------------------------------------
SAN_LOG="$OUTDIR/sanitize.log"
: > "$SAN_LOG"
SANITIZER="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
# Without the caching allocator every tensor is its own cudaMalloc, so that
# memcheck sees the true bounds of each buffer. Only rnnkit's own kernels are
# instrumented (fast); if this sanitizer rejects the kernel filter (no
# "ERROR SUMMARY" line after a quick exit), everything is.
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
T_SAN=$(date +%s)
run_stage sanitize "$(stage_limit 90 100)" "$SAN_LOG" \
  "$SANITIZER" --tool memcheck --error-exitcode 1 --print-limit 50 --kernel-name kns=rnnkit \
  "$PY" benchmarks/sanitize_run.py
if ! grep -q "ERROR SUMMARY" "$SAN_LOG" && (( $(date +%s) - T_SAN < 30 )); then
  run_stage sanitize_all "$(stage_limit 90 100)" "$SAN_LOG" \
    "$SANITIZER" --tool memcheck --error-exitcode 1 --print-limit 50 "$PY" benchmarks/sanitize_run.py
fi
unset PYTORCH_NO_CUDA_MEMORY_CACHING
grep -E "ERROR SUMMARY|sanitize_run:|NON-FINITE" "$SAN_LOG" | tail -4 | sed 's/^/    /' >> "$SUMMARY"

# ---- benchmark -----------------------------------------------------------------------------------
BENCH_CONSOLE="$(mktemp -d)/bench_console.log"
run_stage bench "$(stage_limit 120 50)" "$BENCH_CONSOLE" \
  "$PY" -m rnnkit.bench --device cuda --suite "${RNNKIT_GPU_BENCH_SUITE:-quick}" --no-progress \
  --json "$OUTDIR/bench_gpu.json" --markdown "$OUTDIR/bench_gpu.md"
if [[ ! -s "$OUTDIR/bench_gpu.json" ]]; then
  # The suite did not finish: at least the fastrnns default, ops level, vs cuDNN.
  run_stage bench_ops "$(stage_limit 60 50)" "$BENCH_CONSOLE" "$PY" - <<'EOF'
import torch, rnnkit
from rnnkit import ops
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
T, B, H = 100, 64, 512
def t_ms(fn, reps=20):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        s.record(); fn(); e.record(); e.synchronize(); times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]
print(f"fastrnns LSTM T={T} B={B} I=H={H}, ops level, median ms per sequence")
for dt in (torch.float32, torch.bfloat16):
    m = torch.nn.LSTM(H, H).cuda().to(dt)
    x = torch.randn(T, B, H, device="cuda", dtype=dt, requires_grad=True)
    h0 = torch.zeros(B, H, device="cuda", dtype=dt); c0 = torch.zeros_like(h0)
    w = [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0]
    for mode in ("inference", "training"):
        train = mode == "training"
        def nn_run():
            with torch.set_grad_enabled(train):
                y, _ = m(x, (h0[None], c0[None]))
                if train: y.sum().backward()
        def rk_run():
            with torch.set_grad_enabled(train):
                y, _, _ = ops.rnn_layer(x, h0, c0, *w, mode="LSTM")
                if train: y.sum().backward()
        a, b = t_ms(nn_run), t_ms(rk_run)
        print(f"  {str(dt):15s} {mode:9s} cuDNN {a:8.3f} ms  rnnkit {b:8.3f} ms  speedup {a / b:5.2f}x")
EOF
fi
{
  echo "--- benchmark console"
  grep -v "^===" "$BENCH_CONSOLE" | tail -n 80
} >> "$SUMMARY"
rm -rf "$(dirname "$BENCH_CONSOLE")"

# ---- the persistent kernels under racecheck (shared memory) and synccheck -------------------------
# Only their kernels are instrumented (the name filter); each group kind forced.
for tool in racecheck synccheck; do
  run_stage "$tool" "$(stage_limit 45 $([[ $tool == racecheck ]] && echo 30 || echo 20))" "$SAN_LOG" \
    "$SANITIZER" --tool "$tool" --error-exitcode 1 --print-limit 20 --kernel-name kns=persistent_kernel \
    "$PY" benchmarks/sanitize_run.py --persistent
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|sanitize_run:" "$SAN_LOG" | tail -2 | sed "s/^/    $tool: /" >> "$SUMMARY"
done

# ---- barrier costs (torch-free): the table the persistent planner's cost model should use ----------
PERSISTENT_LOG="$(mktemp -d)/persistent.log"
STAGES=barrier run_stage barrier "$(stage_limit 60 0)" "$PERSISTENT_LOG" benchmarks/persistent_gpu_run.sh
{ echo "--- barrier costs"; sed -n '/^=== summary/,$p' "$PERSISTENT_LOG"; } >> "$SUMMARY"
cat "$PERSISTENT_LOG" >> "$BUILD_LOG"
rm -rf "$(dirname "$PERSISTENT_LOG")"

# ---- profile: kernel time against wall time per step (when the budget allows) ----------------------
if (( BUDGET - ($(date +%s) - START) >= 60 )); then
  PROFILE_LOG="$(mktemp -d)/profile.log"
  run_stage profile "$(stage_limit 90 0)" "$PROFILE_LOG" "$PY" benchmarks/gpu_profile.py
  { echo "--- profile"; grep -v "^===\|UserWarning\|_warn_once" "$PROFILE_LOG"; } >> "$SUMMARY"
  rm -rf "$(dirname "$PROFILE_LOG")"
fi

echo "total $(( $(date +%s) - START ))s; $( ((FAILED)) && echo 'SOME STAGES FAILED' || echo 'all stages passed')" >> "$SUMMARY"
cat "$SUMMARY"
exit $FAILED
