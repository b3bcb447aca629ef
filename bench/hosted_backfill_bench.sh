#!/usr/bin/env bash
# hosted_backfill_bench.sh — a backfill hosted by `sluice run` (serving goes
# on) beside the same backfill run standalone, in one run.
#
#   bench/hosted_backfill_bench.sh BUILD_DIR [EVENTS] [BOOTSTRAP]
#
# BUILD_DIR is a Release build with `sluice` built. Without BOOTSTRAP a
# broker is started with tests/kafka/kafka-broker.sh (stopped on exit). On
# the card_fraud example (3 views; payments topic, 4 partitions):
#   1. sluice generate EVENTS events (default 300,000); sluice ingest builds
#      the state of the 3 views
#   2. standalone: `sluice backfill --view card_declines` (definition
#      changed; the other views live in a thread), no server
#   3. hosted: `sluice run` serves while `sluice backfill --view
#      card_declines --force` is handed to it, under a redis-benchmark load
#      of HGETALL on both card_declines and card_activity (50 clients)
#   4. hosted again, without load
# Prints replay msg/s, the serving hold at the switch, and the lookups
# served during the hosted backfill (redis-benchmark stops at the first
# error reply, so a complete run means no error).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(cd "${1:?usage: hosted_backfill_bench.sh BUILD_DIR [EVENTS] [BOOTSTRAP]}" && pwd)"
events="${2:-300000}"
sluice="$build/cmd/sluice"
work="$build/bench-hosted"
rm -rf "$work"
mkdir -p "$work"
. "$here/broker.sh"
bench_broker "$build/bench-hosted-kafka" "${3:-}"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
resp=$(port); grpc=$(port)
topic="payments-hosted-$$"
sed "s/topic: payments/topic: $topic/" "$here/../schemas/examples/card_fraud.yaml" > "$work/s1.yaml"
sed -e 's/declines_1h,  aggregate: count, window: {sliding: 1h, hop: 1m}/declines_1h,  aggregate: count, window: {sliding: 2h, hop: 1m}/' \
    "$work/s1.yaml" > "$work/s2.yaml"
cmp -s "$work/s1.yaml" "$work/s2.yaml" && { echo "schema edit did not apply"; exit 1; }
cp "$work/s1.yaml" "$work/schema.yaml"
printf 'schemas: [schema.yaml]\nbrokers: "%s"\ngroup_id: bench-hosted-%s\nstate_dir: %s/state\nlog_level: warn\nresp_port: %s\ngrpc_port: %s\nmetrics_port: 0\nserve_threads: 2\n' \
  "$bootstrap" "$$" "$work" "$resp" "$grpc" > "$work/c.yaml"

echo "== hosted backfill bench: $events events, broker $bootstrap, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$sluice" generate --schema "$work/s1.yaml" --source payments --brokers "$bootstrap" --events "$events" \
  --partitions 4 --start-time 1700000000000 --spacing-us 10000 --entities 100000 --quiet
"$sluice" ingest -c "$work/c.yaml" --exit-at-eof 2>/dev/null
cp "$work/s2.yaml" "$work/schema.yaml"

summary() { grep -o '[0-9]* messages replayed.*' | cut -c1-220; }
echo "-- standalone (no server; other views live in a thread)"
"$sluice" backfill -c "$work/c.yaml" --view card_declines --quiet 2>&1 | tail -1 | summary

"$sluice" run -c "$work/c.yaml" 2>"$work/node.log" &
node=$!
trap 'kill $node 2>/dev/null || true; bench_broker_stop' EXIT
for _ in $(seq 100); do redis-cli -p "$resp" PING >/dev/null 2>&1 && break; sleep 0.1; done
echo "-- hosted, under a lookup load (redis-benchmark: 50 clients, HGETALL card_declines + card_activity)"
redis-benchmark -p "$resp" -c 25 -n 100000000 -r 100000 -q --csv \
  HGETALL card_declines:card-__rand_int__ > "$work/rb1.csv" 2>&1 &
rb1=$!
redis-benchmark -p "$resp" -c 25 -n 100000000 -r 100000 -q --csv \
  HGETALL card_activity:card-__rand_int__ > "$work/rb2.csv" 2>&1 &
rb2=$!
sleep 1
before=$(redis-cli -p "$resp" INFO | sed -n 's/^lookups:\([0-9]*\).*/\1/p')
t0=$(date +%s.%N)
"$sluice" backfill -c "$work/c.yaml" --view card_declines --force 2>&1 | tail -1 | summary
t1=$(date +%s.%N)
after=$(redis-cli -p "$resp" INFO | sed -n 's/^lookups:\([0-9]*\).*/\1/p')
alive=0
kill -0 $rb1 2>/dev/null && kill -0 $rb2 2>/dev/null && alive=1
kill $rb1 $rb2 2>/dev/null || true
wait $rb1 $rb2 2>/dev/null || true
awk -v a="$before" -v b="$after" -v t0="$t0" -v t1="$t1" -v ok="$alive" 'BEGIN {
  printf "   lookups served during the hosted backfill: %d in %.2f s (%.0f/s); load clients still running at the end: %s\n",
         b - a, t1 - t0, (b - a) / (t1 - t0), ok ? "yes (no error reply)" : "NO (an error stopped one)" }'
grep -i "error" "$work/rb1.csv" "$work/rb2.csv" | head -3 || true
echo "-- hosted, no load"
"$sluice" backfill -c "$work/c.yaml" --view card_declines --force 2>&1 | tail -1 | summary
kill $node
wait $node || true
