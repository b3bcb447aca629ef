#!/usr/bin/env bash
# Sluice's main job on an embedded default: installs dependencies, builds an
# optimised binary and runs `sluice demo` (mock Kafka in process, event
# generator, ingest, RESP and gRPC servers on 127.0.0.1). Until the demo
# exists in this build it validates the example schemas instead.
#
#   scripts/demo.sh [demo options...]   e.g. --duration 30 --rate 20000
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
BUILD=${SLUICE_BUILD_DIR:-build/release}
cmake -G Ninja -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "${SLUICE_JOBS:-2}" --target sluice

if "$BUILD/cmd/sluice" demo --help >/dev/null 2>&1; then
  exec "$BUILD/cmd/sluice" demo "$@"
fi
echo "(sluice demo is not in this build yet: checking the example schemas)"
exec "$BUILD/cmd/sluice" check schemas/examples/*.yaml
