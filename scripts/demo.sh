#!/usr/bin/env bash
# Sluice's main job on an embedded default: installs dependencies, builds an
# optimised binary and runs `sluice demo` (mock Kafka in process, event
# generator, ingest, RESP and gRPC servers on 127.0.0.1; Ctrl-C stops it).
#
#   scripts/demo.sh [demo options...]   e.g. --duration 30 --rate 20000
#   (`sluice demo --help` lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
BUILD=${SLUICE_BUILD_DIR:-build/release}
cmake -G Ninja -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "${SLUICE_JOBS:-2}" --target sluice

exec "$BUILD/cmd/sluice" demo "$@"
