#!/usr/bin/env bash
# ingest_bench.sh — ingest figures against a real single-node broker.
#
#   bench/ingest_bench.sh BUILD_DIR [EVENTS] [crash]
#
# BUILD_DIR is a Release build (cmake -DCMAKE_BUILD_TYPE=Release, no
# sanitizers) with bench_ingest and sluice built. Starts a broker with
# tests/kafka/kafka-broker.sh in BUILD_DIR/bench-kafka, runs bench_ingest
# (raw consume ceiling, ingest at 100 ms and 10 s commit intervals, recovery
# after kill -9 vs replay from 0) on EVENTS events (default 6,000,000: at
# ~240k events/s the 10 s run then spans two to three commit intervals, so
# both intervals are measured in steady state; with 2M it ended before its
# first periodic commit and compared "no commit" with 100 ms), and,
# with "crash", the 1M-event crash test: test_ingest_crash from BUILD_DIR
# (built there too) with SLUICE_CRASH_EVENTS=1000000 and 5 kills.
# The broker is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(cd "${1:?usage: ingest_bench.sh BUILD_DIR [EVENTS] [crash]}" && pwd)"
events="${2:-6000000}"
work="$build/bench-kafka"

. "$here/broker.sh"
bench_broker "$work"

echo "== bench_ingest: $events events, broker $bootstrap, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bench/bench_ingest" "$bootstrap" "$events" 4 "$build/cmd/sluice" 2> >(grep -v GETPID >&2)

if [ "${3:-}" = crash ]; then
  echo "== crash test: 1,000,000 events, 5 x kill -9"
  printf '%s\n' "$bootstrap" > "$work/bootstrap.crash"
  SLUICE_TEST_BOOTSTRAP_FILE="$work/bootstrap.crash" SLUICE_BIN="$build/cmd/sluice" \
  SLUICE_CRASH_EVENTS=1000000 SLUICE_CRASH_KILLS=5 \
    "$build/tests/ingest/test_ingest_crash" --verbose 2>&1 | grep -E "crash test|kill [0-9]|oracle|Synthesis|FAIL|mismatch"
fi
