#!/bin/sh
# make-venv.sh BUILD_DIR — the Python clients for the serving tests and
# benchmarks: a venv with pinned grpcio, grpcio-tools, protobuf and redis
# (+ grpcio-health-checking) from PyPI, and Python stubs generated from proto/ with grpcio-tools' own
# protoc. Idempotent: does nothing when the venv and the stubs are current.
set -eu
BUILD=${1:?usage: make-venv.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
PROTO=$(cd "$HERE/../../proto" && pwd)
VENV=$BUILD/serving-venv
STAMP=$VENV/.sluice-pins
PINS="grpcio==1.62.2 grpcio-tools==1.62.2 grpcio-health-checking==1.62.2 protobuf==4.25.3 redis==5.0.3"
PY=/usr/bin/python3

# Several tests may call this at once (ctest -j): one builds, the others wait.
mkdir -p "$BUILD"
exec 9>"$BUILD/.serving-venv.lock"
flock 9

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PINS" ]; then
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS
  echo "$PINS" > "$STAMP"
fi

OUT=$BUILD/serving-py
mkdir -p "$OUT"
# grpc.health.v1 comes from grpcio-health-checking (a "grpc/" stub folder would
# shadow the grpc package itself).
for p in sluice/v1/feature_service.proto; do
  base=${p%.proto}
  if [ ! -f "$OUT/${base}_pb2.py" ] || [ "$PROTO/$p" -nt "$OUT/${base}_pb2.py" ]; then
    "$VENV/bin/python" -m grpc_tools.protoc -I"$PROTO" --python_out="$OUT" \
      --grpc_python_out="$OUT" "$p"
  fi
done
echo "$VENV"
