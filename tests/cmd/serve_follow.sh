#!/bin/bash
# serve_follow.sh SLUICE SCHEMA — a separate `sluice serve` process follows the
# live owner of the state directory (`sluice run`, which ingests from the real
# test broker and serves itself): the follower's HGETALL answers equal the
# owner's for the hottest cards, before and after more events arrive, and it
# catches up with new commits within a few commit intervals. The owner's own
# answers are the second implementation (they are checked against an oracle
# in tests/serving); values are compared as whole replies.
SLUICE=$1
SCHEMA_SRC=$2
BOOT=$(cat "${SLUICE_TEST_BOOTSTRAP_FILE:?needs the kafka_broker fixture}")
. "$(dirname "$0")/testlib.sh"
OWNER= FOLLOWER=
on_exit() { [ -n "$OWNER" ] && kill -9 $OWNER 2>/dev/null; [ -n "$FOLLOWER" ] && kill -9 $FOLLOWER 2>/dev/null; }

topic="follow_payments_$$_$RANDOM"
sed "s/topic: payments/topic: $topic/" "$SCHEMA_SRC" > "$T/schema.yaml"
reserve_ports 3
read -r pa pb pm <<<"$PORTS"
cat > "$T/sluice.yaml" <<EOF
schemas: [schema.yaml]
brokers: "$BOOT"
group_id: follow-$$
state_dir: $T/st
commit_interval: 200ms
resp_port: $pa
grpc_port: 0
metrics_port: $pm
EOF
now_ms=$(( $(date +%s%N) / 1000000 ))
gen() {  # gen SEED N START_MS
    "$SLUICE" generate --schema "$T/schema.yaml" --source payments --brokers "$BOOT" --events "$2" \
        --partitions 3 --seed "$1" --start-time "$3" --spacing-us 5000 --bad-share 0 --quiet &&
    "$SLUICE" generate --schema "$T/schema.yaml" --source payments --out - --events "$2" \
        --seed "$1" --start-time "$3" --spacing-us 5000 --bad-share 0 --quiet >> "$T/events.jsonl"
}

gen 11 20000 $((now_ms - 200000)) || { echo "FAIL generate"; exit 1; }
"$SLUICE" run -c "$T/sluice.yaml" 2> "$T/owner.err" &
OWNER=$!
# committed, not just consumed: lookups answer from committed state
wait_committed $pm 20000 && ok "owner committed 20000" || fail "owner committed $(committed_sum $pm) of 20000"

"$SLUICE" serve -c "$T/sluice.yaml" --set resp_port=$pb --set metrics_port=0 --ports-file "$T/follower.ports" \
    2> "$T/follower.err" &
FOLLOWER=$!
wait_ports "$T/follower.ports" $FOLLOWER
grep -q "following its owner" "$T/follower.err" && ok "follower started" ||
    { fail "follower did not start in follow mode: $(cat "$T/follower.err")"; exit 1; }

keys=$(python3 -c '
import json, sys, collections
c = collections.Counter(json.loads(l)["card_id"] for l in open(sys.argv[1]) if l.strip())
print(" ".join(k for k, _ in c.most_common(5)))' "$T/events.jsonl")

# Every feature but spend_decayed, a decayed sum that moves with the request
# time itself (two requests a millisecond apart differ).
F="txn_count_10m txn_count_1h amount_sum_1h amount_max_24h amount_mean_7d amount_std_7d merchants_24h countries_24h amount_p95_7d last_merchants first_seen_amount"
same_answers() {  # every hot key: the follower's answer equals the owner's
    for k in $keys; do
        a=$(redis-cli -p $pa HMGET "card_activity:$k" $F); b=$(redis-cli -p $pb HMGET "card_activity:$k" $F)
        [ -n "$a" ] && [ "$a" = "$b" ] || return 1
    done
}
compare() {  # retried (up to 30 s: the follower refreshes every 100 ms, later
              # on a loaded machine; a window hop may pass between the two requests)
    for _ in $(seq 1 150); do same_answers && return 0; sleep 0.2; done
    return 1
}
show_diff() {
    for k in $keys; do
        diff <(redis-cli -p $pa HMGET "card_activity:$k" $F) <(redis-cli -p $pb HMGET "card_activity:$k" $F) |
            sed "s/^/  $k: /"
    done
}
compare && ok "follower == owner for 5 hot cards" || { fail "answers differ:"; show_diff; }

# More events: the follower must see them once the owner committed them.
k1=${keys%% *}
before=$(redis-cli -p $pb HGET "card_activity:$k1" txn_count_1h)
gen 12 5000 $((now_ms - 99000)) || fail "second generate"
wait_committed $pm 25000 && ok "owner committed 25000" || fail "owner committed $(committed_sum $pm) of 25000"
t0=$(date +%s%N)
compare && ok "follower caught up in $(( ($(date +%s%N) - t0) / 1000000 )) ms after the owner's commit" ||
    fail "follower did not catch up"
after=$(redis-cli -p $pb HGET "card_activity:$k1" txn_count_1h)
[ "$after" != "$before" ] && ok "txn_count_1h of $k1 moved $before -> $after" ||
    fail "the follower's value did not move ($before)"

# A backfill hosted by the owner changes card_declines: the follower notices
# the new stored definition, re-reads the schema files and serves it too.
sed -i 's/^      - {name: declines_day, aggregate: count, window: {tumbling: 1d}}$/&\n      - {name: declines_10m, aggregate: count, window: {sliding: 10m, hop: 1m}}/' "$T/schema.yaml"
grep -q declines_10m "$T/schema.yaml" || fail "schema edit"
out=$("$SLUICE" backfill -c "$T/sluice.yaml" --view card_declines --quiet 2>&1); rc=$?
[ $rc = 0 ] && ok "hosted backfill of card_declines" || fail "backfill: status $rc: $out"
declines_same() {
    local k a b seen=0
    for k in $keys; do
        a=$(redis-cli -p $pa HGETALL "card_declines:$k"); b=$(redis-cli -p $pb HGETALL "card_declines:$k")
        [ "$a" = "$b" ] || return 1
        case "$b" in *declines_10m*) seen=1;; esac
    done
    [ $seen = 1 ]
}
t0=$(date +%s%N)
for _ in $(seq 1 600); do declines_same && break; sleep 0.1; done   # up to 60 s
declines_same && ok "follower serves the new definition, equal to the owner, $(( ($(date +%s%N) - t0) / 1000000 )) ms after the cut-over" ||
    fail "follower after the backfill: $(redis-cli -p $pb HGETALL "card_declines:$k1" | tr '\n' ' ') vs owner $(redis-cli -p $pa HGETALL "card_declines:$k1" | tr '\n' ' ')"
grep -q "serving its new definition" "$T/follower.err" && ok "follower logged the switch" ||
    fail "no switch in the follower's log: $(tail -3 "$T/follower.err")"

kill -TERM $FOLLOWER; wait $FOLLOWER; rc=$?; FOLLOWER=
[ $rc = 0 ] && ok "follower SIGTERM exit 0" || fail "follower exit $rc"
kill -TERM $OWNER; wait $OWNER; rc=$?; OWNER=
[ $rc = 0 ] && ok "owner SIGTERM exit 0" || fail "owner exit $rc"

finish follow
