#!/usr/bin/env bash
# Sets up (Debian packages), builds and runs every test with ctest.
#   bash scripts/test.sh            # release build in build/
#   TE_SANITIZE=address,undefined bash scripts/test.sh   # sanitizer build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD=${BUILD_DIR:-build}
EXTRA=()
if [ -n "${TE_SANITIZE:-}" ]; then
  BUILD=${BUILD_DIR:-build-${TE_SANITIZE//,/-}}
  EXTRA+=(-DTE_SANITIZE="$TE_SANITIZE")
fi
cmake -S . -B "$BUILD" -DTE_WERROR=ON -DPython3_EXECUTABLE=/usr/bin/python3 "${EXTRA[@]}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
cd "$BUILD"
export TSAN_OPTIONS="suppressions=$PWD/../tests/tsan.supp ${TSAN_OPTIONS:-}"
rc=0
ctest --output-on-failure --timeout 900 ${CTEST_ARGS:-} || rc=$?
# The last lines of each failed test once more, together at the end, where a
# long log's reader (or CI's excerpt of it) looks first.
if ((rc)) && [[ -s Testing/Temporary/LastTestsFailed.log ]]; then
  echo "=== failed tests, last lines of each:"
  cut -d: -f2- Testing/Temporary/LastTestsFailed.log | while read -r name; do
    echo "--- $name"
    awk -v t="$name" '$0 ~ ("Testing: " t "$") {on = 1; next}
                      on && /^<end of output>/ {exit}
                      on' Testing/Temporary/LastTest.log | tail -n 25
  done
  echo "=== end of failed tests"
fi
exit $rc
