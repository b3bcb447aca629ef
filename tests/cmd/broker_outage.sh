#!/bin/bash
# broker_outage.sh SLUICE BROKER_SCRIPT — a running `sluice run` survives a
# Kafka broker crash: its own KRaft broker (not the shared fixture) is killed
# with SIGKILL mid-stream and resumed 8 s later on the same data and ports;
# more events are produced afterwards. The worker must keep running, resume
# by itself and end with every card's aggregates equal to an oracle computed
# in Python from the generator's own copy of the stream (--out), with the
# topic's committed offsets = the messages produced: nothing lost, nothing
# counted twice. Lifetime count/sum/min/max keep the oracle exact; the stream
# has no late, out-of-order or bad events (those have their own tests).
SLUICE=$1
BROKER=$2
. "$(dirname "$0")/testlib.sh"
W=
on_exit() {
    [ -n "$W" ] && kill -9 $W 2>/dev/null
    bash "$BROKER" stop "$T/kafka" >/dev/null 2>&1
}

BOOT=$(bash "$BROKER" start "$T/kafka" 2>"$T/broker-start.err") ||
    { echo "FAIL private broker did not start:"; tail -20 "$T/broker-start.err"; exit 1; }
{ printf 'version: 1\nentities:\n  - {name: card, keys: [card_id], key_type: string}\n'
  payments_source outage_payments card_id
  cat <<'EOF'
feature_views:
  - name: card_totals
    entity: card
    source: payments
    features:
EOF
  lifetime_totals
} > "$T/schema.yaml"
reserve_ports 2
read -r pr pm <<<"$PORTS"
cat > "$T/sluice.yaml" <<EOF
schemas: [schema.yaml]
brokers: "$BOOT"
group_id: outage
state_dir: $T/st
commit_interval: 200ms
resp_port: $pr
grpc_port: 0
metrics_port: $pm
EOF
gen() {  # gen SEED N START_MS [--rate R]: to the topic and, identically, to events.jsonl
    local a=(--schema "$T/schema.yaml" --source payments --events "$2" --seed "$1" --start-time "$3"
             --spacing-us 2000 --entities 500 --bad-share 0 --late-share 0 --ooo-share 0 --quiet)
    "$SLUICE" generate "${a[@]}" --brokers "$BOOT" --partitions 3 "${@:4}" &&
    "$SLUICE" generate "${a[@]}" --out - >> "$T/events.jsonl"
}

now_ms=$(( $(date +%s%N) / 1000000 ))
gen 1 30000 $((now_ms - 600000)) || { echo "FAIL generate"; exit 1; }
"$SLUICE" run -c "$T/sluice.yaml" 2> "$T/run.err" &
W=$!
# The second half is produced at 4000 events/s while the broker dies under
# it: the producer and the worker both lose the broker mid-stream.
gen 2 20000 $((now_ms - 300000)) --rate 4000 &
G=$!
# The crash hits a worker that is consuming (polled up to 60 s; a fixed 2 s
# sleep could crash the broker before a loaded machine's worker had started).
for _ in $(seq 1 600); do [ "$(metric $pm sluice_ingest_messages_total)" -gt 0 ] 2>/dev/null && break; sleep 0.1; done
bash "$BROKER" crash "$T/kafka" 2>/dev/null && ok "broker killed at $(metric $pm sluice_ingest_messages_total) messages consumed" ||
    fail "crash"
sleep 8
kill -0 $W 2>/dev/null && ok "worker alive during the outage" || fail "worker died during the outage: $(tail -5 "$T/run.err")"
# The metrics endpoint keeps answering while the brokers are down (without
# lag series): a scrape must not wait on them (10 s is generous for it).
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pm/metrics")
[ "$code" = 200 ] && ok "metrics answer during the outage" ||
    fail "metrics did not answer within 10 s during the outage (HTTP '${code}')"
bash "$BROKER" resume "$T/kafka" 2>/dev/null && ok "broker resumed" || { fail "resume"; exit 1; }
wait $G && ok "producer finished after the outage" || fail "generate across the outage"

wait_committed $pm 50000 && ok "committed offsets reach 50000" ||
    fail "committed offsets $(committed_sum $pm) of 50000"

# The oracle, and the served values of every card (one pipelined redis-cli).
python3 - "$T/events.jsonl" "$T/oracle" "$T/cmds" <<'EOF'
import json, sys
agg = {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    a = agg.setdefault(e["card_id"], [0, 0.0, None, None])
    x = float(e["amount"])
    a[0] += 1; a[1] += x
    a[2] = x if a[2] is None else min(a[2], x)
    a[3] = x if a[3] is None else max(a[3], x)
with open(sys.argv[2], "w") as o, open(sys.argv[3], "w") as c:
    for k in sorted(agg):
        o.write("%s %d %r %r %r\n" % (k, *agg[k]))
        c.write("HMGET card_totals:%s n sum min max\n" % k)
EOF
redis-cli -p $pr < "$T/cmds" > "$T/served" || fail "redis-cli"
python3 - "$T/oracle" "$T/served" <<'EOF' || fails=$((fails+1))
import sys
oracle = [l.split() for l in open(sys.argv[1])]
served = open(sys.argv[2]).read().split("\n")
bad = []
for i, (k, n, s, lo, hi) in enumerate(oracle):
    got = served[4 * i: 4 * i + 4]
    try:
        ok = (int(got[0]) == int(n) and abs(float(got[1]) - float(s)) <= 1e-9 * max(1, abs(float(s)))
              and float(got[2]) == float(lo) and float(got[3]) == float(hi))
    except (ValueError, IndexError):
        ok = False
    if not ok:
        bad.append((k, (n, s, lo, hi), got))
if bad:
    print("FAIL %d of %d cards differ from the oracle, e.g. %r" % (len(bad), len(oracle), bad[:3]))
    sys.exit(1)
print("ok   all %d cards equal the oracle (%d events)" % (len(oracle), sum(int(o[1]) for o in oracle)))
EOF
kill -TERM $W; wait $W; rc=$?; W=
[ $rc = 0 ] && ok "SIGTERM exit 0" || fail "exit status $rc: $(tail -5 "$T/run.err")"
[ $fails = 0 ] || tail -20 "$T/run.err"
finish outage
