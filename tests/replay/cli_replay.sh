#!/bin/bash
# cli_replay.sh SLUICE SCHEMA — the replay commands' command-line contract on
# the real test broker (docs/backfill.md), things the library tests cannot see:
#
#  1. A changed view definition: `sluice ingest` and `sluice run` refuse to
#     start and name the exact backfill command, with the real config path.
#  2. `sluice check -c CONFIG` (and --state-dir) against a state directory a
#     running `sluice ingest` holds: lists the view that needs a backfill with
#     the command to paste, the others `ok`, exit 1; exit 0 once rebuilt.
#  3. Progress, not on a terminal: plain log lines, per partition and overall
#     (offsets done/total, msg/s, events/s, ETA), percentages that never go
#     down, a final line at 100% with done = total = the topic's messages.
#     On a terminal (script(1) gives the command a pty): one line redrawn in
#     place (CR + erase), no log lines. Both for backfill and training-set.
#  4. The backfilled view equals a from-scratch ingest of the new definition
#     in another state directory (same values over RESP, hot cards).
SLUICE=$1
SCHEMA_SRC=$2
BOOT=$(cat "${SLUICE_TEST_BOOTSTRAP_FILE:?needs the kafka_broker fixture}")
. "$(dirname "$0")/../cmd/testlib.sh"
ING= SRV1= SRV2=
on_exit() { for p in $ING $SRV1 $SRV2; do kill -9 "$p" 2>/dev/null; done; }

topic="cli_replay_$$_$RANDOM"
N=60000
sed "s/topic: payments/topic: $topic/" "$SCHEMA_SRC" > "$T/s1.yaml"
# card_declines changed (a longer window): its fingerprint differs.
sed 's/declines_1h,  aggregate: count, window: {sliding: 1h, hop: 1m}/declines_1h,  aggregate: count, window: {sliding: 2h, hop: 1m}/' \
    "$T/s1.yaml" > "$T/s2.yaml"
cmp -s "$T/s1.yaml" "$T/s2.yaml" && { echo "FAIL the schema edit did not apply"; exit 1; }
for s in 1 2; do
    printf 'schemas: [s%s.yaml]\nbrokers: "%s"\ngroup_id: clireplay-%s\nstate_dir: %s/st\ncommit_interval: 200ms\nresp_port: 0\ngrpc_port: 0\nmetrics_port: 0\nlog_level: info\n' \
        "$s" "$BOOT" "$$" "$T" > "$T/c$s.yaml"
done
# Events of the last ~22 minutes (serving evaluates windows at the wall clock:
# a 1-2 h window then holds every event of a card).
start_ms=$(( $(date +%s%N) / 1000000 - 1300000 ))
produced_at=$(date -u -d '-60 seconds' +%Y-%m-%dT%H:%M:%SZ)   # before every message's Kafka timestamp
"$SLUICE" generate --schema "$T/s1.yaml" --source payments --brokers "$BOOT" --events $N --partitions 3 \
    --seed 5 --start-time $start_ms --spacing-us 20000 --entities 2000 --quiet || { echo "FAIL generate"; exit 1; }
"$SLUICE" ingest -c "$T/c1.yaml" --exit-at-eof 2> "$T/ingest1.err" && ok "ingest of the first definition" ||
    { fail "ingest: $(tail -3 "$T/ingest1.err")"; exit 1; }

# ---- 1: refusals name the exact command --------------------------------
want="sluice backfill -c $T/c2.yaml --view card_declines"
out=$("$SLUICE" ingest -c "$T/c2.yaml" --exit-at-eof 2>&1); rc=$?
[ $rc != 0 ] && [[ "$out" == *"$want"* ]] && [[ "$out" != *"card_activity"* ]] &&
    ok "ingest refuses the changed view and names \`$want\`" || fail "ingest (status $rc): $out"
out=$(timeout 120 "$SLUICE" run -c "$T/c2.yaml" 2>&1); rc=$?
[ $rc != 0 ] && [ $rc != 124 ] && [[ "$out" == *"$want"* ]] &&
    ok "run refuses the changed view and names the exact command" || fail "run (status $rc): $out"

# ---- 2: check against a running state dir -------------------------------
"$SLUICE" ingest -c "$T/c1.yaml" --ports-file "$T/ingest2.ports" 2> "$T/ingest2.err" &
ING=$!
# its ports file (no listener: empty) is written once it holds the state dir
# (up to 120 s), then up to 60 s for its partitions
wait_ports "$T/ingest2.ports" $ING
for _ in $(seq 1 600); do grep -q "assigned\|partitions" "$T/ingest2.err" && break; sleep 0.1; done
sleep 1
kill -0 $ING 2>/dev/null && ok "a live ingest holds the state dir" || fail "live ingest: $(cat "$T/ingest2.err")"
out=$("$SLUICE" check -c "$T/c2.yaml" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "card_declines .*NEEDS BACKFILL: definition changed" <<< "$out" &&
    grep -qF "      $want" <<< "$out" && grep -q "card_activity .* ok$" <<< "$out" &&
    grep -q "merchant_activity .* ok$" <<< "$out" && [ "$(grep -c 'sluice backfill' <<< "$out")" = 1 ] &&
    ok "check -c against the running dir: card_declines needs \`$want\`, the others ok" ||
    fail "check -c (status $rc): $out"
out=$("$SLUICE" check "$T/s2.yaml" --state-dir "$T/st" 2>&1); rc=$?
[ $rc = 1 ] && grep -qF "sluice backfill -c CONFIG --view card_declines" <<< "$out" &&
    ok "check --state-dir against the running dir (exit 1)" || fail "check --state-dir (status $rc): $out"
out=$("$SLUICE" backfill -c "$T/c2.yaml" --view card_declines 2>&1); rc=$?
[ $rc != 0 ] && [[ "$out" == *"does not host backfills"*"Stop it"* ]] &&
    ok "backfill refuses while \`sluice ingest\` owns the dir, says to stop it" ||
    fail "backfill beside ingest (status $rc): $out"
kill -TERM $ING; wait $ING; ING=

# ---- 3: progress, not on a terminal, then on one ----------------------------
# pct FILE: the overall percentages of the progress lines, one per line
pct() { sed -n 's/.*replay: [a-z-]* [a-z_0-9-]*: \([0-9.]*\)% .*/\1/p' "$1"; }
check_lines() {  # check_lines WHAT FILE: the non-terminal contract
    local what=$1 f=$2 n last
    n=$(grep -c " info  replay: " "$f")
    [ "$n" -ge 3 ] && ok "$what: $n progress log lines" || fail "$what: $n progress lines: $(cat "$f")"
    grep " info  replay: " "$f" | grep -Ev '[0-9.]+% [0-9.]+[kMG]?/[0-9.]+[kMG]? offsets, [0-9.]+[kMG]? msg/s, [0-9.]+[kMG]? events/s, ETA [0-9:?]+ \| p0=[0-9]+% p1=[0-9]+% p2=[0-9]+%$' > "$T/odd" &&
        fail "$what: lines off the format: $(head -2 "$T/odd")" || ok "$what: every line has offsets, msg/s, events/s, ETA, p0..p2"
    pct "$f" | awk 'NR > 1 && $1 + 0 < prev + 0 { bad = 1 } { prev = $1 } END { exit bad }' &&
        ok "$what: the percentage never goes down" || fail "$what: percentages $(pct "$f" | tr '\n' ' ')"
    last=$(grep " info  replay: " "$f" | tail -1)
    [[ "$last" == *"100.0% 60.0k/60.0k offsets"*"ETA 0:00 | p0=100% p1=100% p2=100%" ]] &&
        ok "$what: final line 100%, 60.0k/60.0k offsets" || fail "$what: final line: $last"
    [ "$(grep -c $'\r' "$f")" = 0 ] && ok "$what: no terminal redraws in a file" || fail "$what: CR in a file"
}
"$SLUICE" backfill -c "$T/c2.yaml" --view card_declines --progress-interval 10ms --commit-interval 200ms \
    2> "$T/bf.err"; rc=$?
[ $rc = 0 ] && ok "backfill of card_declines" || fail "backfill (status $rc): $(tail -5 "$T/bf.err")"
check_lines "backfill" "$T/bf.err"

out=$("$SLUICE" check -c "$T/c2.yaml" 2>&1); rc=$?
[ $rc = 0 ] && [ "$(grep -c ' ok$' <<< "$out")" = 3 ] && ok "check -c after the backfill: every view ok" ||
    fail "check after (status $rc): $out"

# --from: the first offset whose Kafka (producer) timestamp is at or after the
# time, RFC 3339 or epoch ms; every message was produced after $produced_at
# and before now.
out=$("$SLUICE" backfill -c "$T/c2.yaml" --view card_declines --force --quiet --from "$produced_at" 2>&1); rc=$?
[ $rc = 0 ] && [[ "$out" == *" 60000 messages replayed"* ]] && ok "--from $produced_at (RFC 3339): all 60000 messages" ||
    fail "--from before (status $rc): $out"
later=$(( $(date +%s%N) / 1000000 + 1000 ))
out=$("$SLUICE" backfill -c "$T/c2.yaml" --view card_declines --force --quiet --from $later 2>&1); rc=$?
[ $rc = 0 ] && [[ "$out" == *" 0 messages replayed"* ]] && ok "--from a later epoch ms: no message" ||
    fail "--from later (status $rc): $out"
out=$("$SLUICE" backfill -c "$T/c2.yaml" --view card_declines --force --from yesterday 2>&1); rc=$?
[ $rc = 2 ] && [[ "$out" == *"not 'earliest', epoch ms or RFC 3339"* ]] && ok "--from yesterday: usage error" ||
    fail "--from junk (status $rc): $out"
out=$("$SLUICE" backfill -c "$T/c2.yaml" --view card_declines --force --quiet --from earliest 2>&1); rc=$?
[ $rc = 0 ] && [[ "$out" == *" 60000 messages replayed"* ]] && ok "--from earliest: all 60000 messages again" ||
    fail "--from earliest (status $rc): $out"

python3 - "$T/labels.csv" "$start_ms" <<'EOF'
import random, sys
random.seed(3)
start = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    f.write("card_id,merchant_id,timestamp\n")
    for i in range(20000):
        f.write("card-%06d,merchant-%06d,%d\n" % (random.randint(1, 2000), random.randint(1, 2000),
                start + random.randint(0, 1300000)))
EOF
"$SLUICE" training-set -c "$T/c2.yaml" --service fraud_model_v1 --labels "$T/labels.csv" --out "$T/ts.csv" \
    --progress-interval 10ms --buffer 2000 2> "$T/ts.err"; rc=$?
[ $rc = 0 ] && [ "$(wc -l < "$T/ts.csv")" = 20001 ] && ok "training-set: 20000 rows" ||
    fail "training-set (status $rc): $(tail -3 "$T/ts.err")"
check_lines "training-set" "$T/ts.err"

# On a terminal: script(1) runs the command on a pty and copies what it drew.
script -qefc "'$SLUICE' training-set -c '$T/c2.yaml' --service fraud_model_v1 --labels '$T/labels.csv' --out '$T/ts2.csv'" \
    /dev/null > "$T/tty.out" 2>&1 < /dev/null; rc=$?
redraws=$(grep -o $'\r\e\[K[^\r]*training-set [a-z_0-9]*: [0-9.]*% ' "$T/tty.out" | wc -l)
[ $rc = 0 ] && [ "$redraws" -ge 1 ] && ! grep -q " info  replay: " "$T/tty.out" &&
    grep -q $'\r\e\[K[^\r]*: 100.0% 60.0k/60.0k offsets' "$T/tty.out" &&
    ok "on a terminal: $redraws redraws in place, no log lines, ends at 100%" ||
    fail "terminal (status $rc, $redraws redraws): $(tr '\r\033' '|~' < "$T/tty.out" | head -c 600)"
cmp -s "$T/ts.csv" "$T/ts2.csv" && ok "training-set output independent of --buffer and progress" ||
    fail "training-set outputs differ"

# ---- 4: the backfilled view equals a from-scratch build -----------------
sed -e "s#state_dir: $T/st#state_dir: $T/fresh#" -e "s/group_id: clireplay-$$/group_id: clireplay-fresh-$$/" \
    "$T/c2.yaml" > "$T/c3.yaml"
"$SLUICE" ingest -c "$T/c3.yaml" --exit-at-eof 2> "$T/ingest3.err" || fail "fresh ingest: $(tail -3 "$T/ingest3.err")"
reserve_ports 2
read -r p1 p2 <<<"$PORTS"
"$SLUICE" serve -c "$T/c2.yaml" --set resp_port=$p1 --ports-file "$T/srv1.ports" 2> "$T/srv1.err" & SRV1=$!
"$SLUICE" serve -c "$T/c3.yaml" --set resp_port=$p2 --ports-file "$T/srv2.ports" 2> "$T/srv2.err" & SRV2=$!
wait_ports "$T/srv1.ports" $SRV1 || fail "serve 1: $(tail -3 "$T/srv1.err")"
wait_ports "$T/srv2.ports" $SRV2 || fail "serve 2: $(tail -3 "$T/srv2.err")"
same=0 diff=0 nonempty=0
for i in $(seq 1 40); do
    k=$(printf 'card-%06d' "$i")
    a=$(redis-cli -p $p1 HGETALL "card_declines:$k"); b=$(redis-cli -p $p2 HGETALL "card_declines:$k")
    [ "$a" = "$b" ] && same=$((same+1)) || { diff=$((diff+1)); echo "  $k: backfilled [$a] fresh [$b]" | tr '\n' ' '; }
    [ "$(grep -c '^[0-9]' <<< "$a")" -ge 1 ] && nonempty=$((nonempty+1))
done
[ $diff = 0 ] && [ $nonempty -ge 20 ] && ok "backfilled card_declines = from-scratch ingest ($same cards, $nonempty with values)" ||
    fail "backfilled vs fresh: $diff differ, $nonempty non-empty"
finish cli_replay
