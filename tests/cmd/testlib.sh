# testlib.sh — sourced by the shell tests of tests/cmd: check results, free
# ports, a scratch dir removed on exit, the Prometheus reader and the
# payments source the tests' own schemas share.
#
#   . testlib.sh           sets T (scratch dir), fails=0; EXIT trap runs
#                          on_exit (define it to kill children) then rm -rf T
set -u
fails=0
T=$(mktemp -d /tmp/sluice-test-XXXXXX)
on_exit() { :; }
trap 'on_exit; rm -rf "$T"' EXIT

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails+1)); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# metric PORT NAME: the value of an unlabelled metric ('' when absent)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
# committed_sum PORT: next offsets stored with the state, summed over partitions
committed_sum() {
    curl -s "http://127.0.0.1:$1/metrics" | awk '/^sluice_partition_committed_offset/ {s += $2} END {print s+0}'
}
# wait_committed PORT N: up to 60 s for the committed offsets to sum to N
wait_committed() {
    local i
    for i in $(seq 1 240); do [ "$(committed_sum "$1")" = "$2" ] && return 0; sleep 0.25; done
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
