#!/usr/bin/env bash
# Sluice's one test command: installs every dependency, builds with
# AddressSanitizer + UBSan and -Werror, and runs every test with ctest
# (unit suites, CLI tests, and the integration tests against a real Kafka
# broker that the ctest fixtures start and stop on 127.0.0.1).
#
#   scripts/test.sh            # everything
#   scripts/test.sh -L schemas # extra arguments go to ctest
#
# Env: SLUICE_BUILD_DIR (default build/asan), SLUICE_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

BUILD=${SLUICE_BUILD_DIR:-build/asan}
JOBS=${SLUICE_JOBS:-2}

echo "== configure ($BUILD, ASan+UBSan, -Werror)"
cmake -G Ninja -S . -B "$BUILD" -DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
echo "== build"
cmake --build "$BUILD" -j "$JOBS"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -f tests/lsan.supp ]; then
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
fi

echo "== test"
ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" "$@"
