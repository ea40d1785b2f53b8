#!/usr/bin/env bash
# The persistent kernels' first GPU checks, torch-free, in one command:
#
#     benchmarks/persistent_gpu_run.sh [BUILD_DIR]
#
#   build     nvcc: benchmarks/barrier_bench.cu and tests/cpp/persistent_gpu_test.cu
#             (with csrc/cuda/persistent_kernels.cu), for $ARCH (default sm_90)
#   barrier   us per barrier: syncthreads, grid.sync, counter, flags, flags on
#             their own lines, flags+data, tagged data, cluster (2..16), at
#             16/66/132 blocks -> the table the planner's costs should come from
#   tests     persistent_gpu_test all: the CPU test's cases through the CUDA
#             entry points against float64 (every cell, f32/tf32/bf16/f16,
#             block/cluster/grid, lengths, reverse, both directions, odd
#             sizes), the planner's own plans on this GPU, CUDA-graph capture,
#             a 1-cycle watchdog (must trip, not hang), bit identity over runs
#   time      us per step at T=100 for the benchmark's shapes (inference,
#             training forward, backward), with the plan each got
#   sanitize  compute-sanitizer memcheck, racecheck (shared memory) and
#             synccheck on the small forced cases (SANITIZE=0 leaves them out)
#
# STAGES picks stages (default "barrier tests time sanitize"; the build makes
# only what they need): gpu_run.sh runs STAGES=barrier, since its pytest stage
# checks the kernels through the op (tests/test_cuda_persistent.py).
# Everything goes to stdout; each stage runs under `timeout` (never a hang)
# and its exit status is listed at the end. About 3-5 minutes on an H100/H200.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/persistent}"
ARCH="${ARCH:-sm_90}"
mkdir -p "$BUILD"
cd "$ROOT"
STATUS=()
FAILED=0

stage() {  # stage NAME LIMIT CMD...
  local name=$1 limit=$2 t0 rc
  shift 2
  echo "=== $name: $* (limit ${limit}s)"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@"
  rc=$?
  STATUS+=("$(printf '%-10s rc=%-4s %4ss' "$name" "$rc" "$(( $(date +%s) - t0 ))")")
  (( rc != 0 )) && FAILED=1
  return $rc
}

STAGES=" ${STAGES:-barrier tests time sanitize} "
wants() { [[ "$STAGES" == *" $1 "* ]]; }
[[ "${SANITIZE:-1}" == 1 ]] || STAGES="${STAGES/ sanitize / }"
TEST_PROGRAM=0
for s in tests time sanitize; do wants "$s" && TEST_PROGRAM=1; done

export BUILD TEST_PROGRAM GENCODE="-gencode=arch=compute_${ARCH#sm_},code=$ARCH"
build() {
  nvcc -O3 -std=c++17 $GENCODE -o "$BUILD/barrier_bench" benchmarks/barrier_bench.cu &
  local bench=$! rc=0
  if [[ "$TEST_PROGRAM" == 1 ]]; then
    nvcc -O3 -std=c++17 $GENCODE -Xptxas -v -o "$BUILD/persistent_gpu_test" \
      tests/cpp/persistent_gpu_test.cu csrc/cuda/persistent_kernels.cu \
      csrc/persistent/plan.cpp csrc/persistent/check_args.cpp 2> "$BUILD/ptxas.txt"
    rc=$?
    # Registers, stack and spills of the 24 kernels (local memory means trouble).
    grep -E "registers|spill" "$BUILD/ptxas.txt" | sort | uniq -c | sort -rn | head -12
    grep -iE "error" "$BUILD/ptxas.txt" | head -20
  fi
  wait $bench && return $rc
}
export -f build  # `timeout` runs programs, not shell functions

if stage build 300 bash -c build; then
  wants barrier && stage barrier 120 "$BUILD/barrier_bench" "$BUILD/barrier.md"
  wants tests && stage tests 400 "$BUILD/persistent_gpu_test" all
  wants time && stage time 240 "$BUILD/persistent_gpu_test" time
  if wants sanitize; then
    SAN="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
    for tool in memcheck racecheck synccheck; do
      stage "$tool" 240 "$SAN" --tool "$tool" --error-exitcode 1 --print-limit 20 \
        "$BUILD/persistent_gpu_test" cases --cases 0
    done
  fi
fi

echo "=== summary"
printf '%s\n' "${STATUS[@]}"
[[ -s "$BUILD/barrier.md" ]] && cat "$BUILD/barrier.md"
exit $FAILED
