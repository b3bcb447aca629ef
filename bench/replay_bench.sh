#!/usr/bin/env bash
# replay_bench.sh — replay figures (backfill, training-set) beside live ingest
# and the raw consume rate of the same topic, measured in the same run.
#
#   bench/replay_bench.sh BUILD_DIR [EVENTS] [LABELS] [BOOTSTRAP]
#
# BUILD_DIR is a Release build (no sanitizers) with `sluice` built. Without
# BOOTSTRAP a broker is started with tests/kafka/kafka-broker.sh in
# BUILD_DIR/bench-replay-kafka (stopped on exit). Steps, on the card_fraud
# example schema (3 views, 18 features; payments topic, 4 partitions):
#   1. sluice generate EVENTS events (default 1,000,000)
#   2. raw consume ceiling: kcat reads the whole topic, no processing
#   3. live ingest: sluice ingest --exit-at-eof, card_activity alone and all
#      3 views (the peers)
#   4. backfill of card_activity (12 features, definition changed) with
#      --no-live: the replay alone, exactly the live code path, 1 view
#   5. backfill of card_declines (2 features, filtered)
#   6. training-set: LABELS label rows (default 1,000,000) for fraud_model_v1
# Prints events/s for each and rows/s for the training set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(cd "${1:?usage: replay_bench.sh BUILD_DIR [EVENTS] [LABELS] [BOOTSTRAP]}" && pwd)"
events="${2:-1000000}"
labels="${3:-1000000}"
sluice="$build/cmd/sluice"
work="$build/bench-replay"
rm -rf "$work"
mkdir -p "$work"

. "$here/broker.sh"
bench_broker "$build/bench-replay-kafka" "${4:-}"

topic="payments-bench-$$"
sed "s/topic: payments/topic: $topic/" "$here/../schemas/examples/card_fraud.yaml" > "$work/s1.yaml"
# Changed definitions (so the fingerprints differ and a backfill is needed).
sed -e 's/txn_count_10m,   aggregate: count,           window: {sliding: 10m, hop: 1m}/txn_count_10m,   aggregate: count,           window: {sliding: 15m, hop: 1m}/' \
    -e 's/declines_1h,  aggregate: count, window: {sliding: 1h, hop: 1m}/declines_1h,  aggregate: count, window: {sliding: 2h, hop: 1m}/' \
    "$work/s1.yaml" > "$work/s2.yaml"
# One view only (card_activity): the live peer of the card_activity backfill.
awk '/^feature_views:/ {fv=1} /^  - name: card_declines/ {skip=1} /^feature_services:/ {exit}
     !skip {print}' "$work/s1.yaml" > "$work/s0.yaml"
for s in 0 1 2; do
  state="$work/state"; [ "$s" = 0 ] && state="$work/state0"
  printf 'schemas: [s%s.yaml]\nbrokers: "%s"\ngroup_id: bench-%s-%s\nstate_dir: %s\nlog_level: warn\n' \
    "$s" "$bootstrap" "$$" "$s" "$state" > "$work/c$s.yaml"
done

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

echo "== replay bench: $events events, $labels labels, broker $bootstrap, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$sluice" generate --schema "$work/s1.yaml" --source payments --brokers "$bootstrap" --events "$events" \
  --partitions 4 --start-time 1700000000000 --spacing-us 10000 --entities 100000 --quiet

t0=$(now)
n=$(kcat -b "$bootstrap" -C -t "$topic" -o beginning -e -q -f '%o\n' | wc -l)
t1=$(now)
echo "raw consume (kcat, no processing):        $(rate "$n" "$t0" "$t1") msg/s ($n messages)"

for s in 0 1; do
  t0=$(now)
  "$sluice" ingest -c "$work/c$s.yaml" --exit-at-eof --stats 2>/dev/null > "$work/stats$s.txt"
  t1=$(now)
  [ "$s" = 0 ] && what="card_activity only" || what="3 views           "
  # the worker's own span: first message .. final commit durable (without
  # process start, group join and close), measured like the backfill's
  busy=$(awk '$1 == "seconds_first_message_to_final_commit" {print $2}' "$work/stats$s.txt")
  echo "live ingest, $what (sluice ingest): $(awk -v n="$events" -v b="$busy" 'BEGIN { printf "%.0f", n / b }') msg/s" \
       "first message to final commit; $(rate "$events" "$t0" "$t1") msg/s wall (whole command)"
done

for view in card_activity card_declines; do
  t0=$(now)
  out=$("$sluice" backfill -c "$work/c2.yaml" --view "$view" --no-live --quiet 2>&1 | tail -1)
  t1=$(now)
  r=$(echo "$out" | sed -n 's/.* \([0-9]*\) msg\/s.*/\1/p')
  echo "backfill $view (replay, 1 view): ${r} msg/s replay start to last durable batch, $(rate "$events" "$t0" "$t1") msg/s wall (whole command)"
  echo "    $out" | cut -c1-200
done

python3 - "$work/labels.csv" "$labels" <<'EOF'
import random, sys
random.seed(7)
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("card_id,merchant_id,timestamp,label\n")
    for i in range(n):
        f.write("card-%06d,merchant-%06d,%d,%d\n" % (random.randint(1, 100000), random.randint(1, 10000),
                1700000000000 + random.randint(0, 10000000), i % 2))
EOF
"$sluice" training-set -c "$work/c2.yaml" --service fraud_model_v1 --labels "$work/labels.csv" \
  --out "$work/out.csv" --quiet 2>&1 | tail -1
