#!/usr/bin/env bash
# The embedded demo end to end: start `sluice demo` on free ports, wait until
# it prints its hints, then query it with the real redis-cli (HGETALL of the
# hottest card must return every feature of the view with numeric values),
# read INFO and the Prometheus endpoint, and check it stops cleanly (exit 0)
# after --duration with events ingested and zero probe errors.
set -euo pipefail
SLUICE=${1:?usage: demo_smoke.sh SLUICE_BINARY SCHEMA}
SCHEMA=${2:?schema}
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
resp=$(free_port); grpc=$(free_port); metrics=$(free_port)

"$SLUICE" demo --schema "$SCHEMA" --duration 12 --rate 3000 --resp-port "$resp" \
  --grpc-port "$grpc" --metrics-port "$metrics" --state-dir "$work/state" >"$work/out" 2>&1 &
pid=$!

for _ in $(seq 1 100); do
  grep -q '^Try:' "$work/out" && break
  kill -0 $pid 2>/dev/null || { cat "$work/out"; echo "demo exited early"; exit 1; }
  sleep 0.2
done
grep -q '^Try:' "$work/out" || { cat "$work/out"; echo "demo did not start"; exit 1; }

# The hint names the hottest key; wait until its state is committed and served.
key=$(sed -n "s/.*HGETALL '\(card_activity:[^']*\)'.*/\1/p" "$work/out" | head -1)
[ -n "$key" ] || { cat "$work/out"; echo "no HGETALL hint"; exit 1; }
fields=0
for _ in $(seq 1 60); do
  fields=$(redis-cli -p "$resp" HGETALL "$key" | wc -l)
  [ "$fields" -ge 24 ] && break
  sleep 0.5
done
redis-cli -p "$resp" HGETALL "$key" | tee "$work/hgetall"
# card_activity has 12 features: 12 names + 12 values
[ "$fields" -ge 24 ] || { echo "HGETALL returned $fields lines, expected 24"; exit 1; }
count=$(awk 'prev=="txn_count_1h"{print; exit} {prev=$0}' "$work/hgetall")
[[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -gt 0 ] || { echo "txn_count_1h is '$count'"; exit 1; }
# (outputs captured first: `grep -q` closing a pipe early would fail the pipeline)
[ "$(redis-cli -p "$resp" PING)" = PONG ] || { echo "PING failed"; exit 1; }
info=$(redis-cli -p "$resp" INFO)
grep -q '^# Server' <<<"$info" || { echo "INFO has no Server section"; exit 1; }
prom=$(curl -sf "http://127.0.0.1:$metrics/metrics")
grep -q '^sluice_ingest_messages_total [1-9]' <<<"$prom" || { echo "no ingest counter in /metrics"; exit 1; }
grep -q '^sluice_freshness_seconds ' <<<"$prom" || { echo "no freshness in /metrics"; exit 1; }

status=0
wait $pid || status=$?
cat "$work/out" | tail -5
[ $status -eq 0 ] || { echo "demo exited with $status"; exit 1; }
grep -q '(0 errors' "$work/out" || { echo "the demo's probe saw errors"; exit 1; }
echo "demo smoke: ok (hottest key $key, txn_count_1h=$count)"
