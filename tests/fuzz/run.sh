#!/usr/bin/env bash
# run.sh - builds the libFuzzer targets (clang, ASan+UBSan, -DTE_FUZZ=ON) in
# build-fuzz/ and runs each for a bounded time; fails on any crash, leak,
# sanitizer report, hang or broken property.
#   bash tests/fuzz/run.sh [seconds per target] [target ...]
#   TE_FUZZ_SECONDS=600 TE_FUZZ_JOBS=2 bash tests/fuzz/run.sh   # longer runs
# New interesting inputs go to build-fuzz/fuzz-work/<target>/ (kept between
# runs); crashes to build-fuzz/fuzz-artifacts/<target>/, replay one with
#   build-fuzz/tests/fuzz/fuzz_<target> <file>
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECS=${1:-${TE_FUZZ_SECONDS:-20}}
[ $# -gt 0 ] && shift
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
JOBS=${TE_FUZZ_JOBS:-$(nproc)}

# The build's Debian packages, then clang with its runtimes (libFuzzer, sanitizers).
bash scripts/install-deps.sh
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v clang >/dev/null; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends clang
fi
CLANG_MAJOR=$(clang -dumpversion | cut -d. -f1)
if ! clang -print-file-name="libclang_rt.fuzzer-x86_64.a" | grep -q /; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "libclang-rt-$CLANG_MAJOR-dev"
fi

cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang -DTE_FUZZ=ON -DTE_WITH_PYTHON=OFF \
  -DTE_SKIP_DIRS="${TE_SKIP_DIRS:-}" >/dev/null
cmake --build "$BUILD" --target fuzz_all -j"$JOBS" >"$BUILD/fuzz-build.log" 2>&1 || {
  tail -40 "$BUILD/fuzz-build.log"
  echo "fuzz: build failed (full log: $BUILD/fuzz-build.log)"
  exit 1
}

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=()
  for f in tests/fuzz/fuzz_*.c; do
    t=$(basename "$f" .c)
    t=${t#fuzz_}
    [ -x "$BUILD/tests/fuzz/fuzz_$t" ] && TARGETS+=("$t")
  done
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

run_one() {
  local t=$1 bin="$ROOT/$BUILD/tests/fuzz/fuzz_$1"
  local work="$ROOT/$BUILD/fuzz-work/$t" art="$ROOT/$BUILD/fuzz-artifacts/$t"
  local log="$ROOT/$BUILD/fuzz-logs/$t.log"
  mkdir -p "$work" "$art" "$(dirname "$log")"
  local rc=0
  # -timeout: one input running 25 s is a hang; the outer timeout is a backstop.
  timeout -k 10 $((SECS + 120)) "$bin" -max_total_time="$SECS" -timeout=25 -rss_limit_mb=2560 \
    -dict="$ROOT/tests/fuzz/te.dict" -artifact_prefix="$art/" -print_final_stats=1 \
    "$work" "$ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local runs cov
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  if [ "$rc" -ne 0 ]; then
    echo "FAIL fuzz_$t (exit $rc) -- log $log, inputs in $art"
    grep -E 'ERROR|SUMMARY|property broken|runtime error|Test unit written' "$log" | head -20 || true
    tail -25 "$log"
    return 1
  fi
  printf 'ok   fuzz_%-12s %8s runs, coverage %s, %s s\n' "$t" "${runs:-?}" "${cov:-?}" "$SECS"
}

echo "fuzz: ${#TARGETS[@]} targets, $SECS s each, $JOBS at a time"
# Each job records its own result: `jobs` in the throttle loop reaps finished
# jobs, after which `wait PID` may answer "not a child" (exit 127) for a job
# that passed, so results never depend on wait's exit status.
RESULTS="$ROOT/$BUILD/fuzz-results"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
for t in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
    sleep 0.5
  done
  { if run_one "$t"; then echo ok >"$RESULTS/$t"; else echo fail >"$RESULTS/$t"; fi; } &
done
wait || true
fail=0
for t in "${TARGETS[@]}"; do
  if [ "$(cat "$RESULTS/$t" 2>/dev/null)" != ok ]; then
    [ -f "$RESULTS/$t" ] || echo "FAIL fuzz_$t (no result recorded)"
    fail=1
  fi
done
if [ "$fail" -ne 0 ]; then
  echo "fuzz: FAILED"
  exit 1
fi
echo "fuzz: all ${#TARGETS[@]} targets ran clean"
