#!/usr/bin/env bash
# The CPU engine under AddressSanitizer + UBSan: builds rnnkit._C with
# RNNKIT_SANITIZE=1 (CPU only) into build/sanitize/, apart from the normal
# in-place build, next to a copy of the Python package, and runs the op and
# module tests against that copy. Any ASan or UBSan report ends the run with a
# non-zero status.
#
#   tools/sanitize_cpu.sh [python]      (default: python3; `make sanitize` passes the venv's)
#
# Python and torch are not instrumented: the ASan runtime is preloaded so that it
# comes first, together with the C++ runtime (without libstdc++ preloaded beside
# it, the first C++ exception thrown through torch aborts), and leak detection is
# off (the interpreter's and torch's own allocations would drown the report).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${1:-python3}"
if [[ "$PY" == */* ]]; then  # a path: make it absolute, keeping the venv's symlink
  PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
fi
OUT="$ROOT/build/sanitize"
CXX="${CXX:-c++}"
started=$SECONDS

cd "$ROOT"
RNNKIT_SANITIZE=1 RNNKIT_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" "$PY" setup.py -q build_ext \
  --build-lib "$OUT/lib" --build-temp "$OUT/temp"
rm -rf "$OUT/pkg"
mkdir -p "$OUT/pkg/rnnkit"
cp rnnkit/*.py "$OUT/pkg/rnnkit/"
cp "$OUT"/lib/rnnkit/_C*.so "$OUT/pkg/rnnkit/"
echo "sanitize: built in $((SECONDS - started)) s"

preload="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libstdc++.so.6)"
for lib in $preload; do
  [[ -e "$lib" ]] || { echo "sanitize: $lib not found (is the compiler's ASan runtime installed?)" >&2; exit 2; }
done

# From the copy's folder, so that `import rnnkit` finds the copy first.
cd "$OUT/pkg"
export LD_PRELOAD="$preload"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
"$PY" -c "import rnnkit._C as c, sys; sys.exit(0 if c.__file__.startswith('$OUT/pkg/') else
          'sanitize: imported rnnkit from ' + c.__file__)"
# --capture=sys: a sanitizer report goes to file descriptor 2, which must reach the log.
"$PY" -m pytest "$ROOT/tests/test_ops.py" "$ROOT/tests/test_modules.py" -q -p no:cacheprovider --capture=sys \
  "${@:2}"
echo "sanitize: build and tests took $((SECONDS - started)) s"
