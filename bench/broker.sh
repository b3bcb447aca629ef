# broker.sh — sourced by the bench scripts: the Kafka broker a benchmark runs
# against.
#
#   bench_broker WORKDIR [BOOTSTRAP]
#
# With BOOTSTRAP (an external broker, host:port) sets `bootstrap` to it and
# starts nothing. Otherwise fetches the jars if needed, starts a broker with
# tests/kafka/kafka-broker.sh in WORKDIR, sets `bootstrap` to its address and
# stops it on exit (an EXIT trap running bench_broker_stop: a script that sets
# its own EXIT trap later calls bench_broker_stop in it).
bench_broker_script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../tests/kafka/kafka-broker.sh"
bench_broker_dir=

bench_broker_stop() {
  if [ -n "$bench_broker_dir" ]; then
    bash "$bench_broker_script" stop "$bench_broker_dir" >/dev/null 2>&1 || true
  fi
}

bench_broker() {
  if [ -n "${2:-}" ]; then
    bootstrap="$2"
    return 0
  fi
  bash "$bench_broker_script" fetch
  bash "$bench_broker_script" start "$1" >/dev/null
  bench_broker_dir="$1"
  trap bench_broker_stop EXIT
  bootstrap="$(head -n1 "$1/bootstrap")"
}
