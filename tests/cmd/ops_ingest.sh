#!/bin/bash
# ops_ingest.sh SLUICE SCHEMA — operations of a running `sluice ingest`
# against the real test broker (SLUICE_TEST_BOOTSTRAP_FILE):
#   - periodic snapshots every snapshot_interval, pruned to snapshot_retain;
#   - `sluice snapshot create` on the locked state dir is taken by the worker,
#     and counted in the metrics like a periodic one;
#   - a snapshot restores and verifies (its offsets are a prefix of the run's);
#   - --log-format json: every log line is one JSON object with ts, level,
#     component and msg; a bad --log-format is a usage error;
#   - the metrics endpoint exports the snapshot counters and age, and the
#     consumer lag per partition (ingest and run);
#   - SIGTERM commits and exits 0; `sluice run` stopped mid-stream commits
#     exactly what it consumed.
# The oracle for counts is the number of files on disk and the manifests.
SLUICE=$1
SCHEMA_SRC=$2
BOOT=$(cat "${SLUICE_TEST_BOOTSTRAP_FILE:?needs the kafka_broker fixture}")
. "$(dirname "$0")/testlib.sh"
W=
G=
on_exit() { [ -n "$W" ] && kill -9 "$W" 2>/dev/null; [ -n "$G" ] && kill -9 "$G" 2>/dev/null; }

topic="ops_payments_$$_$RANDOM"
sed "s/topic: payments/topic: $topic/" "$SCHEMA_SRC" > "$T/schema.yaml"
grep -q "topic: $topic" "$T/schema.yaml" || { echo "FAIL schema has no 'topic: payments'"; exit 1; }
reserve_ports 3       # metrics (every worker here), and RESP + gRPC of the run below
read -r mport rport gport <<<"$PORTS"
cat > "$T/sluice.yaml" <<EOF
schemas: [schema.yaml]
brokers: "$BOOT"
group_id: ops-$$
state_dir: $T/st
commit_interval: 200ms
snapshot_interval: 1s
snapshot_retain: 2
resp_port: 0
grpc_port: 0
metrics_port: $mport
EOF

"$SLUICE" generate --schema "$T/schema.yaml" --source payments --brokers "$BOOT" \
    --events 20000 --partitions 3 --seed 7 --quiet || { echo "FAIL generate"; exit 1; }

# A bad log format is refused before anything starts.
out=$("$SLUICE" ingest -c "$T/sluice.yaml" --log-format yaml 2>&1); rc=$?
if [ $rc = 2 ] && [[ "$out" == *"log_format"* ]]; then ok bad-log-format; else fail "bad-log-format: status $rc: $out"; fi

started=$(date +%s)
"$SLUICE" ingest -c "$T/sluice.yaml" --log-format json 2> "$T/err" &
W=$!
# Wait for the whole topic to be consumed (the metrics' committed offsets;
# up to 120 s on a loaded machine).
for i in $(seq 1 240); do
    sleep 0.5
    n=$(metric $mport sluice_ingest_messages_total)
    [ "${n:-0}" = 20000 ] && break
done
[ "${n:-0}" = 20000 ] && ok "consumed 20000" || fail "consumed ${n:-none} of 20000"
# Building commit batches took some of the ingest thread's time, and less
# than the worker has been running.
build=$(metric $mport sluice_commit_build_seconds_total)
ents=$(metric $mport sluice_committed_entities_total)
up=$(( $(date +%s) - started ))
if awk -v b="${build:-x}" -v e="${ents:-0}" -v u="$up" 'BEGIN { exit !(b > 0 && b < u && e > 0) }'; then
    ok "commit build time ${build}s for $ents states"
else
    fail "commit build time: ${build:-none}s for ${ents:-none} states in ${up}s"
fi
# Consumer lag per partition: 3 series, 0 once everything is committed.
lag() { curl -s --max-time 10 "http://127.0.0.1:$mport/metrics" | awk '/^sluice_partition_lag\{/ {n++; s += $2} END {print n+0, s+0}'; }
for i in $(seq 1 240); do l=$(lag); [ "$l" = "3 0" ] && break; sleep 0.25; done
[ "$l" = "3 0" ] && ok "partition lag: 3 partitions, 0 behind" || fail "partition lag (series, sum): $l"
# At least three periodic snapshots (every 1 s; polled up to 60 s instead of
# a fixed 3.5 s sleep, which a loaded machine could fill with only two).
for i in $(seq 1 240); do [ "$(metric $mport sluice_snapshots_total)" -ge 3 ] 2>/dev/null && break; sleep 0.25; done

out=$("$SLUICE" snapshot create -c "$T/sluice.yaml" manual1 --wait 30 2>&1); rc=$?
if [ $rc = 0 ] && [[ "$out" == *"taken by the running worker"* ]]; then ok snapshot-request; else fail "snapshot-request: $rc: $out"; fi

# The worker counts a requested snapshot a moment after its reply: up to 10 s.
for i in $(seq 1 40); do
    metrics=$(curl -s "http://127.0.0.1:$mport/metrics")
    taken=$(awk '/^sluice_snapshots_total/ {print $2}' <<< "$metrics")
    [ "${taken:-0}" -ge 4 ] && break
    sleep 0.25
done
age=$(awk '/^sluice_snapshot_age_seconds/ {print $2}' <<< "$metrics")
if [ "${taken:-0}" -ge 4 ] && awk -v a="${age:-99}" 'BEGIN { exit !(a >= 0 && a < 5) }'; then
    ok "metrics snapshots_total=$taken age=${age}s"
else
    fail "metrics: snapshots_total=${taken:-none} (want >= 4: 3 periodic + 1 requested) age=${age:-none}"
fi

kill -TERM $W; wait $W; rc=$?; W=
[ $rc = 0 ] && ok "SIGTERM exit 0" || fail "SIGTERM exit status $rc"

# Retention: exactly 2 periodic snapshots on disk, the manual one untouched.
autos=$(ls "$T/st.snapshots" | grep -c '^auto-')
[ "$autos" = 2 ] && ok "retain 2 periodic" || fail "periodic snapshots on disk: $autos, want 2: $(ls "$T/st.snapshots")"
[ -d "$T/st.snapshots/manual1" ] && ok "manual kept" || fail "manual1 missing"

# The newest periodic snapshot verifies and restores; after the run consumed
# every message, its next offsets (summed over the 3 partitions by `list`)
# are 20000, like the live store's.
newest=$(ls "$T/st.snapshots" | grep '^auto-' | sort | tail -1)
out=$("$SLUICE" snapshot verify "$newest" --state-dir "$T/st" 2>&1); rc=$?
[ $rc = 0 ] && ok "verify $newest" || fail "verify $newest: $out"
out=$("$SLUICE" snapshot restore "$newest" --snapshot-dir "$T/st.snapshots" --state-dir "$T/r" 2>&1); rc=$?
[ $rc = 0 ] && ok "restore $newest" || fail "restore: $out"
sum=$("$SLUICE" snapshot list --snapshot-dir "$T/st.snapshots" --state-dir "$T/st" 2>&1 |
      grep "^$newest " | grep -o "next=[0-9]*" | cut -d= -f2)
[ "${sum:-0}" = 20000 ] && ok "snapshot offsets sum 20000" || { fail "snapshot offsets sum ${sum:-none}"; "$SLUICE" snapshot list --snapshot-dir "$T/st.snapshots" --state-dir "$T/st"; }

# Every log line is a JSON object with the four fields.
python3 - "$T/err" <<'EOF' || fails=$((fails+1))
import json, sys
lines = open(sys.argv[1]).read().splitlines()
bad = []
for l in lines:
    try:
        o = json.loads(l)
        assert set(("ts", "level", "component", "msg")) <= set(o), l
    except Exception as e:
        bad.append(l)
snaps = [l for l in lines if '"snapshot ' in l and '"component":"ingest"' in l]
if bad or not lines or not snaps:
    print("FAIL json logs: %d lines, %d not JSON objects, %d snapshot lines; first bad: %r"
          % (len(lines), len(bad), len(snaps), bad[:1]))
    sys.exit(1)
print("ok   json logs: %d lines, %d about snapshots" % (len(lines), len(snaps)))
EOF

# SIGTERM mid-stream: `sluice run` (RESP, gRPC, metrics, ingest) stops while
# a paced producer is still sending; the final commit must hold exactly the
# messages the worker says it consumed (--stats), on top of the 20000.
# The paced stream is far longer (50 s) than the run's start-up on a loaded
# machine (a 5 s one could end before the run had consumed 4000: "producer
# still sending: no"); the producer is stopped once the run has exited.
"$SLUICE" generate --schema "$T/schema.yaml" --source payments --brokers "$BOOT" \
    --events 400000 --rate 8000 --seed 8 --quiet &
G=$!
run_from=$(date +%s.%N)
"$SLUICE" run -c "$T/sluice.yaml" --set snapshot_interval=0s --set resp_port=$rport \
    --set grpc_port=$gport --stats > "$T/run.stats" 2> "$T/run-mid.err" &
W=$!
for i in $(seq 1 120); do
    sleep 0.25
    n=$(metric $mport sluice_ingest_messages_total)
    [ "${n:-0}" -ge 4000 ] && break
done
# Commits every 200 ms behind a producer at 8000/s: the lag is positive
# nearly always, but one sample can read 0 (a commit that had just covered
# every message produced so far). 20 samples over 2 s: 3 series each, and
# the lag positive in at least 15 (a single sample once read "3 0"; a stale
# high watermark, as once cached for 2 s, reads 0 in most of them).
midlag= positive=0
for i in $(seq 1 20); do
    l=$(lag)
    [ "${l%% *}" = 3 ] || { midlag="$l (sample $i)"; break; }
    [ "${l#* }" -gt 0 ] && { positive=$((positive + 1)); midlag=$l; }
    sleep 0.1
done
kill -0 $G 2>/dev/null && producing=yes || producing=no
kill -TERM $W; wait $W; rc=$?; W=
run_to=$(date +%s.%N)
kill -TERM $G 2>/dev/null; wait $G; G=
consumed=$(awk '$1 == "messages" {print $2}' "$T/run.stats")
# The worker's own span (first message .. final commit durable) lies inside
# the process's lifetime and is not empty.
busy=$(awk '$1 == "seconds_first_message_to_final_commit" {print $2}' "$T/run.stats")
awk -v b="${busy:-x}" -v a="$run_from" -v z="$run_to" 'BEGIN { exit !(b + 0 > 0 && b + 0 < z - a) }' &&
    ok "run --stats: first message to final commit ${busy}s, inside the run" ||
    fail "run --stats: seconds_first_message_to_final_commit ${busy:-missing}, run lasted $(awk -v a="$run_from" -v z="$run_to" 'BEGIN { print z - a }')s"
"$SLUICE" snapshot create midstream -c "$T/sluice.yaml" > /dev/null 2>&1 || fail "snapshot after the mid-stream stop"
next=$("$SLUICE" snapshot list -c "$T/sluice.yaml" 2>&1 | awk '$1 == "midstream"' | grep -o 'next=[0-9]*' | cut -d= -f2)
if [ $rc = 0 ] && [ $producing = yes ] && [ "${consumed:-0}" -gt 0 ] && [ "${next:-x}" = $((20000 + consumed)) ]; then
    ok "run: SIGTERM mid-stream exit 0, final commit = 20000 + $consumed consumed"
else
    fail "run mid-stream: exit $rc, producer still sending: $producing, consumed ${consumed:-none}, committed ${next:-none}"
fi
[ $positive -ge 15 ] && ok "run: partition lag while producing: positive in $positive of 20 samples (last ${midlag#* })" ||
    fail "run: partition lag while producing: positive in $positive of 20 samples (last series, sum: ${midlag:-none})"

# sluice run with an unreachable broker: its own lines and librdkafka's
# connection errors are JSON objects too.
"$SLUICE" run -c "$T/sluice.yaml" --set brokers=127.0.0.1:1 --set state_dir="$T/st2" \
    --set metrics_port=0 --set resp_port=0 --set grpc_port=0 --log-format json 2> "$T/run.err" &
W=$!
# until librdkafka has logged a connection error (up to 60 s; a fixed 3 s
# could end before a loaded machine got that far)
for i in $(seq 1 240); do grep -q '"component":"kafka"' "$T/run.err" && break; sleep 0.25; done
kill -TERM $W; wait $W; rc=$?; W=
[ $rc = 0 ] && ok "run without a broker stops on SIGTERM" || fail "run exit $rc"
python3 - "$T/run.err" <<'PY' || fails=$((fails+1))
import json, sys
lines = open(sys.argv[1]).read().splitlines()
objs = []
for l in lines:
    try:
        objs.append(json.loads(l))
    except ValueError:
        print("FAIL run log line not JSON: %r" % l)
        sys.exit(1)
comps = {o.get("component") for o in objs}
if not {"run", "kafka"} <= comps:
    print("FAIL run log components %r lack run/kafka" % sorted(comps))
    sys.exit(1)
print("ok   run json logs: %d lines from %s" % (len(objs), ", ".join(sorted(comps))))
PY

# A snapshot requested of a running worker counts like a periodic one: with
# periodic snapshots off, sluice_snapshots_total goes from 0 to exactly 1 and
# the snapshot age appears (requested ones were taken but never counted).
"$SLUICE" ingest -c "$T/sluice.yaml" --set snapshot_interval=0s 2> "$T/req.err" &
W=$!
for i in $(seq 1 240); do
    sleep 0.25
    before=$(metric $mport sluice_snapshots_total)
    [ -n "$before" ] && break
done
out=$("$SLUICE" snapshot create -c "$T/sluice.yaml" requested1 --wait 30 2>&1); rc=$?
# The worker publishes its reply (which ends `snapshot create`) a moment
# before it counts the snapshot: on a loaded machine a scrape right after the
# command can still read 0, so give the count up to 10 s to appear (a worker
# that never counts it still fails: 0 -> 0; one that counts twice: 0 -> 2).
for i in $(seq 1 40); do
    after=$(metric $mport sluice_snapshots_total)
    [ $rc = 0 ] && [ "${after:-0}" = 0 ] || break
    sleep 0.25
done
age=$(metric $mport sluice_snapshot_age_seconds)
kill -TERM $W; wait $W; W=
if [ $rc = 0 ] && [ "${before:-x}" = 0 ] && [ "${after:-x}" = 1 ] &&
   awk -v a="${age:-99}" 'BEGIN { exit !(a >= 0 && a < 5) }'; then
    ok "requested snapshot counted: snapshots_total 0 -> 1, age ${age}s"
else
    fail "requested snapshot: create exit $rc ($out), snapshots_total ${before:-none} -> ${after:-none}, age ${age:-none}"
fi

finish ops
