#!/bin/bash
# kafka_sasl.sh SLUICE — Kafka client security options pass through the
# config's `kafka:` mapping to librdkafka: the test broker's SASL_PLAINTEXT
# listener (mechanism PLAIN, user sluice) serves `sluice ingest` with the
# right credentials (every produced message consumed, counted exactly), and
# refuses a wrong password with an authentication error that the worker
# logs, consuming nothing.
SLUICE=$1
BOOT=$(cat "${SLUICE_TEST_BOOTSTRAP_FILE:?needs the kafka_broker fixture}")
SASL=$(cat "$(dirname "$SLUICE_TEST_BOOTSTRAP_FILE")/bootstrap_sasl")
. "$(dirname "$0")/testlib.sh"
W=
on_exit() { [ -n "$W" ] && kill -9 $W 2>/dev/null; }

topic="sasl_payments_$$_$RANDOM"
{ printf 'version: 1\nentities:\n  - {name: card, keys: [card_id], key_type: string}\n'
  payments_source "$topic" card_id
  cat <<'YAML'
feature_views:
  - name: card_totals
    entity: card
    source: payments
    features:
      - {name: n, aggregate: count, window: lifetime}
YAML
} > "$T/schema.yaml"
cat > "$T/sluice.yaml" <<YAML
schemas: [schema.yaml]
brokers: "$SASL"
group_id: sasl-$$
state_dir: $T/st
commit_interval: 200ms
resp_port: 0
grpc_port: 0
metrics_port: 0
kafka:
  security.protocol: SASL_PLAINTEXT
  sasl.mechanism: PLAIN
  sasl.username: sluice
  sasl.password: sluice-secret
YAML
"$SLUICE" generate --schema "$T/schema.yaml" --source payments --brokers "$BOOT" --events 3000 \
    --partitions 2 --bad-share 0 --quiet || { echo "FAIL generate"; exit 1; }

out=$(timeout 120 "$SLUICE" ingest -c "$T/sluice.yaml" --exit-at-eof --stats 2>&1); rc=$?
n=$(awk '$1 == "messages" {print $2}' <<< "$out")
[ $rc = 0 ] && [ "$n" = 3000 ] && ok "SASL/PLAIN: consumed $n of 3000" ||
    fail "SASL/PLAIN ingest: status $rc, messages '${n}': $(tail -5 <<< "$out")"

# A wrong password: the broker refuses, the worker logs it and consumes nothing.
rm -rf "$T/st"
"$SLUICE" ingest -c "$T/sluice.yaml" --set kafka.sasl.password=wrong --stats > "$T/bad.out" 2> "$T/bad.err" &
W=$!
for _ in $(seq 1 240); do grep -qi "authentication" "$T/bad.err" && break; sleep 0.25; done   # up to 60 s
kill -TERM $W; wait $W; W=
grep -qi "authentication failed\|SASL authentication error" "$T/bad.err" &&
    ok "wrong password: $(grep -i -m1 -o 'SASL authentication error[^(]*\|Authentication failed[^(]*' "$T/bad.err" | head -1)" ||
    fail "no authentication error logged: $(tail -3 "$T/bad.err")"
n=$(awk '$1 == "messages" {print $2}' "$T/bad.out")
[ "${n:-0}" = 0 ] && ok "wrong password consumed nothing" || fail "wrong password consumed $n"
finish sasl
