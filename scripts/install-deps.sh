#!/usr/bin/env bash
# Installs every Debian package Sluice needs to build, test and benchmark.
# Idempotent and non-interactive: safe to run on every CI start. Needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  librdkafka-dev librocksdb-dev libhiredis-dev libgrpc-dev
  libprotobuf-c-dev protobuf-c-compiler libcriterion-dev
  libyaml-dev libcjson-dev libxxhash-dev libmicrohttpd-dev libjemalloc-dev
  redis-server redis-tools kcat curl openssl nghttp2-client
  python3 python3-venv python3-pip
  openjdk-17-jdk-headless maven
  clang-14 libclang-rt-14-dev
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
