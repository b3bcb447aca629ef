#!/bin/sh
# serving_bench.sh [BUILD_DIR] [--quick] — RESP and gRPC serving figures beside
# redis-server and an echo service on the same gRPC core, in one run.
# BUILD_DIR must be a non-sanitized build (default: build-bench, configured
# here with -DSLUICE_SANITIZE=OFF). Uses ghz when installed
# (go install github.com/bojand/ghz/cmd/ghz@v0.120.0), else python grpcio.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=${1:-$ROOT/build-bench}
[ $# -gt 0 ] && shift
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -G Ninja -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSLUICE_SANITIZE=OFF -DSLUICE_WERROR=OFF
fi
ninja -C "$BUILD" -j2 sluice seed_state bench_grpc_echo bench_grpc_load
VENV=$("$ROOT/tests/serving/make-venv.sh" "$BUILD" | tail -n 1)
PATH="$PATH:$HOME/go/bin" PYTHONPATH="$BUILD/serving-py" "$VENV/bin/python" "$HERE/serving_bench.py" --build "$BUILD" "$@"
