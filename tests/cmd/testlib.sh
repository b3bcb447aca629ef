# testlib.sh — sourced by the shell tests of tests/cmd: check results,
# reserved ports and ports files, a scratch dir removed on exit, the
# Prometheus reader and the payments source the tests' own schemas share.
#
#   . testlib.sh           sets T (scratch dir), fails=0; EXIT trap runs
#                          on_exit (define it to kill children), releases
#                          the reserved ports, then rm -rf T
set -u
fails=0
T=$(mktemp -d /tmp/sluice-test-XXXXXX)
TESTLIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
PORT_HOLDERS=
on_exit() { :; }
trap 'on_exit; [ -n "$PORT_HOLDERS" ] && kill $PORT_HOLDERS 2>/dev/null; rm -rf "$T"' EXIT

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails+1)); }
# reserve_ports N: N ports on 127.0.0.1, space-separated in $PORTS, that
# no other process can take until this script exits, while Sluice's
# listeners can still bind them (tests/pylib/sluice_proc.py holds them).
# Unlike a port that was free a moment ago, nobody can take one before the
# server binds it, nor between a kill and a restart on the same ports.
# Call it in the script's own shell (not in $(...)): the holder lives as
# long as its parent.
reserve_ports() {
    local f="$T/ports.$RANDOM$RANDOM" i
    python3 "$TESTLIB_DIR/../pylib/sluice_proc.py" hold "$1" "$f" </dev/null >/dev/null 2>&1 &
    PORT_HOLDERS="$PORT_HOLDERS $!"
    for i in $(seq 1 600); do [ -s "$f" ] && break; sleep 0.1; done
    [ -s "$f" ] || { echo "FAIL could not reserve $1 ports"; exit 1; }
    PORTS=$(tr '\n' ' ' < "$f")
}
# wait_ports FILE PID: up to 120 s until process PID wrote its ports file
# (--ports-file FILE, docs/operations.md): it listens then. Fails (1) if PID
# exits first or nothing comes.
wait_ports() {
    local i
    for i in $(seq 1 1200); do
        [ -e "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# port_of FILE NAME: the port of listener NAME (resp, grpc, metrics) in a ports file
port_of() { awk -v n="$2" '$1 == n {print $3}' "$1"; }

# metric PORT NAME: the value of an unlabelled metric ('' when absent, or
# when the endpoint does not answer within 10 s: a test must not hang on it)
metric() { curl -s --max-time 10 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
# committed_sum PORT: next offsets stored with the state, summed over partitions
committed_sum() {
    curl -s --max-time 10 "http://127.0.0.1:$1/metrics" | awk '/^sluice_partition_committed_offset/ {s += $2} END {print s+0}'
}
# wait_committed PORT N: up to 120 s (a loaded machine) for the committed
# offsets to sum to N
wait_committed() {
    local i
    for i in $(seq 1 480); do [ "$(committed_sum "$1")" = "$2" ] && return 0; sleep 0.25; done
    return 1
}

# payments_source TOPIC [MESSAGE_KEY]: the YAML of a payments source (the
# fields of schemas/examples/card_fraud.yaml) for the tests' own schemas.
payments_source() {
    cat <<YAML
sources:
  - name: payments
    topic: $1
    format: json
    fields: {card_id: string, merchant_id: string, amount: double, currency: string,
             country: string, status: string, ts: int}
    event_time: {field: ts, format: epoch_ms}
    watermark_delay: 5s
    allowed_lateness: 1m
YAML
    if [ -n "${2:-}" ]; then echo "    message_key: $2"; fi
}

# lifetime_totals [INDENT]: count/sum/min/max of amount over the lifetime,
# as feature list items (the tests compare them exactly with a Python oracle)
lifetime_totals() {
    local i=${1:-      }
    echo "$i- {name: n,   aggregate: count, window: lifetime}"
    echo "$i- {name: sum, aggregate: sum, field: amount, window: lifetime}"
    echo "$i- {name: min, aggregate: min, field: amount, window: lifetime}"
    echo "$i- {name: max, aggregate: max, field: amount, window: lifetime}"
}

# finish NAME: the verdict line and exit status
finish() {
    if [ "$fails" = 0 ]; then echo "all $1 checks passed"; exit 0; fi
    echo "$fails failed"
    exit 1
}
