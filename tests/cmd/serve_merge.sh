#!/bin/bash
# serve_merge.sh SLUICE — views whose entity is not the message key, end to
# end on the real broker: payments keyed by card (message_key: card_id) go to
# 4 partitions, so one merchant's events are spread over all of them.
# `sluice run` ingests them; every merchant's and every card's aggregates,
# read with redis-cli, must equal a Python oracle over the generator's own
# copy of the stream (lifetime count/sum/min/max, a 1 h sliding count, an
# exact-range approx_distinct). Before lookups merged the partition states,
# a merchant showed one partition's share.
SLUICE=$1
BOOT=$(cat "${SLUICE_TEST_BOOTSTRAP_FILE:?needs the kafka_broker fixture}")
. "$(dirname "$0")/testlib.sh"
W=
on_exit() { [ -n "$W" ] && kill -9 $W 2>/dev/null; }

topic="merge_payments_$$_$RANDOM"
{ printf 'version: 1\nentities:\n  - {name: card, keys: [card_id], key_type: string}\n'
  printf '  - {name: merchant, keys: [merchant_id], key_type: string}\n'
  payments_source "$topic" card_id
  cat <<'EOF'
feature_views:
  - name: by_card
    entity: card
    source: payments
    features:
      - {name: n,   aggregate: count, window: lifetime}
      - {name: sum, aggregate: sum, field: amount, window: lifetime}
  - name: by_merchant
    entity: merchant
    source: payments
    features:
EOF
  lifetime_totals
  echo "      - {name: n_1h,  aggregate: count, window: {sliding: 1h, hop: 1m}}"
  echo "      - {name: cards, aggregate: approx_distinct, field: card_id, window: lifetime}"
} > "$T/schema.yaml"
"$SLUICE" check "$T/schema.yaml" | grep -q "not keyed by the message key: one merchant's events may be in several partitions" &&
    ok "check marks by_merchant" || fail "sluice check does not mark by_merchant"

reserve_ports 2
read -r pr pm <<<"$PORTS"
cat > "$T/sluice.yaml" <<EOF
schemas: [schema.yaml]
brokers: "$BOOT"
group_id: merge-$$
state_dir: $T/st
commit_interval: 200ms
resp_port: $pr
grpc_port: 0
metrics_port: $pm
EOF
now_ms=$(( $(date +%s%N) / 1000000 ))
a=(--schema "$T/schema.yaml" --source payments --events 20000 --seed 5 --start-time $((now_ms - 1800000))
   --spacing-us 50000 --entities 400 --bad-share 0 --late-share 0 --ooo-share 0 --quiet)
"$SLUICE" generate "${a[@]}" --brokers "$BOOT" --partitions 4 || { echo "FAIL generate"; exit 1; }
"$SLUICE" generate "${a[@]}" --out - > "$T/events.jsonl"

"$SLUICE" run -c "$T/sluice.yaml" 2> "$T/run.err" &
W=$!
wait_committed $pm 20000 && ok "committed 20000 over 4 partitions" ||
    fail "committed $(committed_sum $pm) of 20000"

python3 - "$T/events.jsonl" "$T/oracle" "$T/cmds" "$now_ms" <<'EOF'
import json, sys, collections
now = int(sys.argv[4])
m = {}; c = collections.defaultdict(lambda: [0, 0.0]); parts = collections.defaultdict(set)
for line in open(sys.argv[1]):
    e = json.loads(line)
    x = float(e["amount"])
    a = m.setdefault(e["merchant_id"], {"n": 0, "sum": 0.0, "min": x, "max": x, "ts": [], "cards": set()})
    a["n"] += 1; a["sum"] += x; a["min"] = min(a["min"], x); a["max"] = max(a["max"], x)
    a["ts"].append(e["ts"]); a["cards"].add(e["card_id"])
    c[e["card_id"]][0] += 1; c[e["card_id"]][1] += x
with open(sys.argv[2], "w") as o, open(sys.argv[3], "w") as cmds:
    for k in sorted(m):
        a = m[k]
        o.write(json.dumps(["by_merchant", k, a["n"], a["sum"], a["min"], a["max"], sorted(a["ts"]),
                            len(a["cards"])]) + "\n")
        cmds.write("HMGET by_merchant:%s n sum min max n_1h cards\n" % k)
    for k in sorted(c):
        o.write(json.dumps(["by_card", k, c[k][0], c[k][1]]) + "\n")
        cmds.write("HMGET by_card:%s n sum\n" % k)
EOF
t_query=$(( $(date +%s%N) / 1000000 ))
redis-cli -p $pr < "$T/cmds" > "$T/served" || fail "redis-cli"
t_done=$(( $(date +%s%N) / 1000000 ))
python3 - "$T/oracle" "$T/served" "$t_query" "$t_done" <<'EOF' || fails=$((fails+1))
import json, sys
oracle = [json.loads(l) for l in open(sys.argv[1])]
served = open(sys.argv[2]).read().split("\n")
t0, t1 = int(sys.argv[3]), int(sys.argv[4])
close = lambda a, b: abs(a - b) <= 1e-9 * max(1.0, abs(b))
bad, pos, nm = [], 0, 0
for row in oracle:
    if row[0] == "by_merchant":
        _, k, n, s, lo, hi, ts, cards = row
        got = served[pos:pos + 6]; pos += 6; nm += 1
        # n_1h: events in (t - 1h, t] at the request time t, which lies in
        # [t0, t1]; the sliding window advances by whole minutes (hop 1m)
        lo_1h = sum(1 for x in ts if x > (t1 // 60000 + 1) * 60000 - 3600000)
        hi_1h = sum(1 for x in ts if x > (t0 // 60000) * 60000 - 3600000)
        try:
            ok = (int(got[0]) == n and close(float(got[1]), s) and float(got[2]) == lo and
                  float(got[3]) == hi and lo_1h <= int(got[4]) <= hi_1h and
                  (int(got[5]) == cards if cards <= 64 else abs(int(got[5]) - cards) <= 0.065 * cards))
        except (ValueError, IndexError):
            ok = False
        if not ok: bad.append((k, [n, s, lo, hi, (lo_1h, hi_1h), cards], got))
    else:
        _, k, n, s = row
        got = served[pos:pos + 2]; pos += 2
        try:
            ok = int(got[0]) == n and close(float(got[1]), s)
        except (ValueError, IndexError):
            ok = False
        if not ok: bad.append((k, [n, s], got))
if bad:
    print("FAIL %d of %d entities differ from the oracle, e.g. %r" % (len(bad), len(oracle), bad[:3]))
    sys.exit(1)
print("ok   %d merchants (each spread over the 4 partitions) and %d cards equal the oracle"
      % (nm, len(oracle) - nm))
EOF
kill -TERM $W; wait $W; rc=$?; W=
[ $rc = 0 ] && ok "SIGTERM exit 0" || fail "exit $rc"
[ $fails = 0 ] || tail -5 "$T/run.err"
finish merge
