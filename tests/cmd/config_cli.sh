#!/usr/bin/env bash
# config_cli.sh SLUICE SCHEMA OPERATIONS_MD — the worker configuration as the
# commands see it (issue 7), no broker needed:
#   - an unknown key in the file stops config, run, ingest and serve with
#     FILE:LINE:COL; so does an unknown --set key;
#   - with no options set, every value `sluice config` prints is the
#     default docs/operations.md lists (loopback binds, ports, ...);
#   - secrets (password, kafka.sasl.password) are not printed;
#   - `kafka:` keys reach librdkafka unchanged: a TLS CA file that does not
#     exist, an unknown property and an unknown SASL mechanism each stop the
#     worker at startup with librdkafka's own message naming them;
#   - an unknown --log-level or --log-format is a usage error (exit 2).
set -uo pipefail
SLUICE=${1:?usage: config_cli.sh SLUICE SCHEMA OPERATIONS_MD}
SCHEMA=${2:?schema}
OPSDOC=${3:?docs/operations.md}
. "$(dirname "$0")/testlib.sh"

cp "$SCHEMA" "$T/schema.yaml"
printf 'schemas: [schema.yaml]\nresp_port: 0\ncommit_intervall: 1s\n' > "$T/bad.yaml"
for cmd in config run ingest serve; do
  if [ $cmd = config ]; then a=("$T/bad.yaml"); else a=(-c "$T/bad.yaml"); fi
  out=$(timeout 120 "$SLUICE" $cmd "${a[@]}" 2>&1); rc=$?   # 124 = hung; a loaded box starts slowly
  [ $rc != 0 ] && [ $rc != 124 ] && [[ "$out" == *"$T/bad.yaml:3:1: unknown option 'commit_intervall'"* ]] &&
    ok "$cmd: unknown key located" || fail "$cmd: exit $rc: $out"
done

printf 'schemas: [schema.yaml]\nstate_dir: %s/st\nbrokers: 127.0.0.1:1\n' "$T" > "$T/min.yaml"
out=$("$SLUICE" config "$T/min.yaml" --set resp_prot=1 2>&1); rc=$?
[ $rc != 0 ] && [[ "$out" == *"unknown option 'resp_prot'"* ]] && ok "--set: unknown key" || fail "--set resp_prot: $rc: $out"

# Defaults as printed against the documented table.
"$SLUICE" config "$T/min.yaml" > "$T/printed" 2>&1 || fail "config min.yaml: $(cat "$T/printed")"
python3 - "$T/printed" "$OPSDOC" <<'EOF' || fails=$((fails+1))
import re, sys
printed = dict(re.match(r"  (\S+): (.*)$", l).groups() for l in open(sys.argv[1]) if l.startswith("  "))
doc, section = {}, None
for l in open(sys.argv[2]):
    if l.startswith("## "):
        section = l.strip()
    if section != "## Configuration":
        continue
    m = re.match(r"\| `(\w+)` \| \w+ \| `([^`]*)` \|", l)
    if m:
        doc[m.group(1)] = m.group(2)
doc["schemas"] = printed.get("schemas")              # set by the file
doc["state_dir"], doc["brokers"] = printed.get("state_dir"), "127.0.0.1:1"
bad = {k: (v, printed.get(k)) for k, v in doc.items() if printed.get(k) != v}
loop = [doc[k] for k in ("resp_bind", "grpc_bind", "metrics_bind")]
if bad or len(doc) < 29 or set(printed) != set(doc) or loop != ["127.0.0.1"] * 3:
    print("FAIL defaults (documented, printed): %r; options documented %d, printed %d; binds %r"
          % (bad, len(doc), len(printed), loop))
    sys.exit(1)
print("ok   all %d options print their documented defaults (binds on 127.0.0.1)" % len(doc))
EOF

out=$("$SLUICE" config "$T/min.yaml" --set password=hunter2 --set kafka.sasl.password=s3cr3t 2>&1)
[[ "$out" != *hunter2* && "$out" != *s3cr3t* && "$out" == *"password: (set, not shown)"* ]] &&
  ok "secrets not printed" || fail "secrets printed: $out"

# kafka: pass-through, seen by librdkafka when the worker starts.
kafka() {   # kafka NAME TEXT... -- SET...: ingest must fail with every TEXT in its output
    local name=$1; shift
    local texts=()
    while [ "$1" != -- ]; do texts+=("$1"); shift; done; shift
    local sets=()
    for kv in "$@"; do sets+=(--set "$kv"); done
    out=$(timeout 120 "$SLUICE" ingest -c "$T/min.yaml" --set metrics_port=0 "${sets[@]}" 2>&1); rc=$?
    local miss=
    for t in "${texts[@]}"; do [[ "$out" == *"$t"* ]] || miss="$miss '$t'"; done
    [ $rc != 0 ] && [ $rc != 124 ] && [ -z "$miss" ] && ok "kafka $name" || fail "kafka $name: exit $rc, missing$miss: $out"
}
kafka "TLS CA file" "ssl.ca.location" "$T/no-ca.pem" -- \
  kafka.security.protocol=SSL "kafka.ssl.ca.location=$T/no-ca.pem"
kafka "unknown property" 'No such configuration property: "bogus.key"' -- kafka.bogus.key=1
kafka "SASL mechanism" "Unsupported SASL mechanism: NOPE" -- \
  kafka.security.protocol=SASL_SSL kafka.sasl.mechanism=NOPE

for a in "--log-level verbose" "--log-format xml"; do
  out=$("$SLUICE" ingest -c "$T/min.yaml" $a 2>&1); rc=$?
  [ $rc = 2 ] && ok "$a: usage error" || fail "$a: exit $rc: $out"
done

finish config
