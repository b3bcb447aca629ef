#!/usr/bin/env bash
# demo_smoke.sh SLUICE SCHEMA OPERATIONS_MD [PYTHON] — the embedded demo as a
# new user meets it (issue 7):
#   - `sluice demo` with every port 0 picks free ports and prints them (the
#     servers' config treats 0 as "disabled"; the demo must not);
#   - every listening socket of the process is on 127.0.0.1 (the kernel's
#     /proc/net/tcp{,6} is the oracle);
#   - every redis-cli command of its "Try:" hints runs without an error, and
#     HGETALL of the hottest card returns the view's 12 features;
#   - its grpcurl hint is a valid request (parsed by protobuf's own JSON
#     parser) that the gRPC server answers with PRESENT values, between two
#     redis-cli reads of the same count (PYTHON: the serving tests' venv);
#   - the live line comes every few seconds with events/s, lag, freshness,
#     lookups/s and p99, and shows traffic;
#   - /metrics has every family docs/operations.md lists;
#   - the state dir is mode 0700 and a second demo on it is refused, naming
#     the holder's pid, while the first goes on serving;
#   - Ctrl-C (SIGINT) stops it: exit 0, probe without errors, and the final
#     commit holds exactly the messages it says it ingested (`sluice
#     snapshot list`: next offsets summed over the partitions);
#   - `sluice serve` on the stopped demo's state counts exactly the RESP and
#     gRPC requests made to it in sluice_requests_total{protocol,status};
#   - a state dir with an earlier run's offsets is refused (the mock Kafka
#     is new each run); --duration N stops it by itself, removing the
#     temporary state dir it made; --log-format json makes every log line
#     on stderr a JSON object; bad option values are usage errors.
set -uo pipefail
SLUICE=${1:?usage: demo_smoke.sh SLUICE_BINARY SCHEMA OPERATIONS_MD [PYTHON]}
SCHEMA=$(realpath "${2:?schema}")
OPSDOC=${3:?docs/operations.md}
PY=${4:-}
. "$(dirname "$0")/testlib.sh"
pid= pid2=
on_exit() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; [ -n "$pid2" ] && kill -9 "$pid2" 2>/dev/null; }

"$SLUICE" demo --schema "$SCHEMA" --duration 0 --rate 3000 --resp-port 0 --grpc-port 0 \
  --metrics-port 0 --state-dir "$T/state" >"$T/out" 2>&1 &
pid=$!

for _ in $(seq 1 600); do       # up to 120 s: a loaded machine starts slowly
  grep -q '^Try:' "$T/out" && break
  kill -0 $pid 2>/dev/null || { cat "$T/out"; echo "FAIL demo exited early"; exit 1; }
  sleep 0.2
done
grep -q '^Try:' "$T/out" || { cat "$T/out"; echo "FAIL demo did not start"; exit 1; }

ports=$(sed -n 's/^  RESP:  127.0.0.1:\([0-9]*\)    gRPC: 127.0.0.1:\([0-9]*\)    metrics: http:\/\/127.0.0.1:\([0-9]*\)\/metrics$/\1 \2 \3/p' "$T/out")
read -r resp grpc metrics <<<"$ports"
if [ "${resp:-0}" -gt 0 ] && [ "${grpc:-0}" -gt 0 ] && [ "${metrics:-0}" -gt 0 ]; then
  ok "port 0 = free ports: resp $resp grpc $grpc metrics $metrics"
else
  cat "$T/out"; echo "FAIL ports line: '$ports'"; exit 1
fi

# Loopback only: the listening sockets on the three ports, from the kernel.
python3 - "$resp" "$grpc" "$metrics" <<'EOF' || fails=$((fails+1))
import sys
ports = {int(p) for p in sys.argv[1:]}
loop4 = "0100007F"                                   # 127.0.0.1, little-endian hex
loop6 = {"0000000000000000FFFF00000100007F",         # ::ffff:127.0.0.1
         "00000000000000000000000001000000"}         # ::1
seen, bad = set(), []
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(name).read().splitlines()[1:]:
        f = line.split()
        addr, port = f[1].split(":")
        if f[3] != "0A" or int(port, 16) not in ports:   # 0A = LISTEN
            continue
        seen.add(int(port, 16))
        if addr != loop4 and addr not in loop6:
            bad.append((int(port, 16), addr))
if bad or seen != ports:
    print("FAIL listening sockets: not loopback %r, ports seen %r of %r" % (bad, sorted(seen), sorted(ports)))
    sys.exit(1)
print("ok   every listening socket (%d ports) is on loopback" % len(ports))
EOF

# The hint names the hottest key; wait until its state is committed and served.
key=$(sed -n "s/.*HGETALL '\(card_activity:[^']*\)'.*/\1/p" "$T/out" | head -1)
[ -n "$key" ] || { cat "$T/out"; echo "FAIL no HGETALL hint"; exit 1; }
fields=0
for _ in $(seq 1 240); do       # up to 120 s
  fields=$(redis-cli -p "$resp" HGETALL "$key" | wc -l)
  [ "$fields" -ge 24 ] && break
  sleep 0.5
done
redis-cli -p "$resp" HGETALL "$key" > "$T/hgetall"
# card_activity has 12 features: 12 names + 12 values
[ "$fields" = 24 ] && ok "HGETALL $key: 12 features" || fail "HGETALL returned $fields lines, expected 24"
count() { redis-cli -p "$resp" HGET "$key" txn_count_1h; }
c=$(count)
[[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -gt 0 ] && ok "txn_count_1h=$c" || fail "txn_count_1h is '$c'"

# Every redis-cli hint, run as printed: no error reply.
n_hints=0
while read -r line; do
  eval "set -- $line"          # the hint's own quoting
  shift 3                      # redis-cli -p PORT
  out=$(redis-cli -p "$resp" "$@" 2>&1)
  n_hints=$((n_hints+1))
  if [ -z "$out" ] || [[ "$out" == *ERR* ]]; then fail "hint '$line': ${out:-empty reply}"; fi
done < <(sed -n "s/^  \(redis-cli -p $resp .*\)$/\1/p" "$T/out")
[ "$n_hints" -ge 3 ] && ok "$n_hints redis-cli hints answered" || fail "only $n_hints redis-cli hints"
[ "$(redis-cli -p "$resp" PING)" = PONG ] || fail "PING"
info=$(redis-cli -p "$resp" INFO)
grep -q '^# Server' <<<"$info" || fail "INFO has no Server section"

# The grpcurl hint: its request, through protobuf's JSON parser, to the server.
json=$(sed -n "s/^    -d '\(.*\)' \\\\$/\1/p" "$T/out")
[ -n "$json" ] && grep -q "^    127.0.0.1:$grpc sluice.v1.FeatureService/GetOnlineFeatures$" "$T/out" &&
  ok "grpcurl hint" || fail "no grpcurl hint for port $grpc"
if [ -n "$PY" ] && [ -n "$json" ]; then
  before=$(count)
  "$PY" - "$grpc" "$json" "$before" "$SLUICE" > "$T/grpc" 2>&1 <<'EOF'
import sys, grpc
from google.protobuf import json_format
from sluice.v1 import feature_service_pb2 as pb, feature_service_pb2_grpc as pbg
port, text, before = sys.argv[1], sys.argv[2], int(sys.argv[3])
req = json_format.Parse(text, pb.GetOnlineFeaturesRequest())
with grpc.insecure_channel("127.0.0.1:" + port) as ch:
    resp = pbg.FeatureServiceStub(ch).GetOnlineFeatures(req, timeout=10)
names = list(resp.feature_names)
row = resp.results[0]
bad = [n for n, v in zip(names, row.values) if v.status != pb.PRESENT]
assert len(resp.results) == 1 and len(names) == len(row.values) >= 8, resp
assert not bad, "not PRESENT: %r" % bad
i = [n.split(":")[-1] for n in names].index("txn_count_1h")
print(row.values[i].value.int64_value)
EOF
  rc=$?
  after=$(count)
  got=$(tail -1 "$T/grpc")
  if [ $rc = 0 ] && [ "$before" -le "$got" ] && [ "$got" -le "$after" ]; then
    ok "gRPC hint answered, txn_count_1h $before <= $got <= $after (redis-cli before/after)"
  else
    fail "gRPC hint: rc $rc, redis-cli $before / $after: $(cat "$T/grpc")"
  fi
fi

# The README's tour shows the same request and keys (with the default ports).
readme=$(dirname "$OPSDOC")/../README.md
tour=$(sed -n '/^## A 5-minute tour/,/^## /p' "$readme")
rjson=$(sed -n "s/^  -d '\(.*\)' \\\\$/\1/p" <<<"$tour")
hkey=$(sed -n "s/^redis-cli -p 6380 HGETALL '\([^']*\)'.*/\1/p" <<<"$tour")
[ -n "$rjson" ] && [ "$rjson" = "$json" ] && [ "$hkey" = "$key" ] && ok "README's tour matches the demo's hints" ||
  fail "README tour: request '$rjson' key '$hkey'; the demo printed '$json' and '$key'"

# Live lines: every 3 s; some show traffic and a served lookup rate.
for _ in $(seq 1 240); do [ "$(grep -c '^\[' "$T/out")" -ge 3 ] && break; sleep 0.25; done   # up to 60 s
python3 - "$T/out" <<'EOF' || fails=$((fails+1))
import re, sys
live = re.compile(r"^\[ *(\d+)s\] events +(\d+)/s  total (\d+) +bad (\d+) +late (\d+) +lag (\d+) +"
                  r"freshness +(-|[\d.]+s)  lookups +(\d+)/s p99 ([\d.]+)ms  commits (\d+)$")
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("[")]
m = [live.match(l) for l in lines]
busy = [x for x in m if x and int(x[2]) > 0 and x[7] != "-" and int(x[8]) > 0 and float(x[9]) > 0]
secs = [int(x[1]) for x in m if x]
if len(lines) < 3 or not all(m) or not busy or any(not 3 <= b - a <= 5 for a, b in zip(secs, secs[1:])):
    print("FAIL live lines: %d, %d well-formed, %d busy, at %r:\n%s"
          % (len(lines), sum(1 for x in m if x), len(busy), secs, "\n".join(lines)))
    sys.exit(1)
print("ok   %d live lines every 3 s, %d with events, freshness, lookups and p99" % (len(lines), len(busy)))
EOF

# Every metric family of docs/operations.md's table is exported (the
# snapshot age once a snapshot exists: none here).
prom=$(curl -sf "http://127.0.0.1:$metrics/metrics")
grep -q '^sluice_ingest_messages_total [1-9]' <<<"$prom" || fail "no ingest counter in /metrics"
missing=$(sed -n '/^## Metrics/,/^## /p' "$OPSDOC" | grep '^| `sluice_' | cut -d'|' -f2 |
  grep -o '`sluice_[a-z_*]*`' | tr -d '`' | while read -r m; do
    [ "$m" = sluice_snapshot_age_seconds ] && continue
    re="^# TYPE ${m/\*/[a-z_]*} "
    grep -qE "$re" <<<"$prom" || echo "$m"
  done)
n_doc=$(sed -n '/^## Metrics/,/^## /p' "$OPSDOC" | grep '^| `sluice_' | grep -o '`sluice_[a-z_*]*`' | wc -l)
[ "$n_doc" -ge 20 ] && [ -z "$missing" ] && ok "/metrics has the $n_doc documented families" ||
  fail "families documented ($n_doc) but not exported: $missing"

# The exposition is well-formed text format 0.0.4: every sample under its own
# TYPE block, names and values valid, no duplicate family or series, and
# histogram buckets cumulative up to +Inf = _count.
python3 - <(printf '%s\n' "$prom") <<'EOF' || fails=$((fails+1))
import re, sys
types, series, errs, cur, buckets, checked = {}, set(), [], None, {}, set()
for ln, l in enumerate(open(sys.argv[1]).read().splitlines(), 1):
    if l.startswith("# TYPE "):
        _, _, n, t = l.split(" ", 3)
        if n in types or t not in ("counter", "gauge", "histogram", "summary", "untyped"):
            errs.append("line %d: %s" % (ln, l))
        types[n], cur = t, n
        continue
    if not l or l.startswith("# HELP "):
        continue
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*\})? (\S+)$', l)
    if not m:
        errs.append("line %d: %r" % (ln, l)); continue
    n, lab, v = m.groups()
    try:
        x = float(v)
    except ValueError:
        errs.append("line %d: value %r" % (ln, v)); continue
    base = next((n[:-len(s)] for s in ("_bucket", "_sum", "_count")
                 if n.endswith(s) and types.get(n[:-len(s)]) in ("histogram", "summary")), n)
    if base != cur:
        errs.append("line %d: %s outside its TYPE block" % (ln, n))
    if (n, lab) in series:
        errs.append("line %d: duplicate series %s%s" % (ln, n, lab or ""))
    series.add((n, lab))
    # a histogram's series are grouped by their labels other than le
    if n.endswith("_bucket"):
        le = re.search(r'le="([^"]*)"', lab or "")
        rest = re.sub(r',?le="[^"]*"', "", lab or "").replace("{,", "{")
        rest = "" if rest == "{}" else rest
        buckets.setdefault((base, rest), []).append((le.group(1) if le else None, x))
    if n.endswith("_count") and (base, lab or "") in buckets:
        checked.add((base, lab or ""))
        b = buckets[(base, lab or "")]
        if b[-1][0] != "+Inf" or b[-1][1] != x or any(p[1] > q[1] for p, q in zip(b, b[1:])):
            errs.append("%s%s: buckets %r, count %s" % (base, lab or "", b, x))
errs += ["%s%s: buckets without a matching _count" % k for k in set(buckets) - checked]
if errs or len(types) < 20:
    print("FAIL exposition (%d families): %s" % (len(types), "; ".join(errs[:5])))
    sys.exit(1)
print("ok   exposition well-formed: %d families, %d series" % (len(types), len(series)))
EOF

# The state dir: 0700, and a second process on it is refused.
mode=$(stat -c %a "$T/state")
[ "$mode" = 700 ] && ok "state dir mode 700" || fail "state dir mode $mode"
out=$("$SLUICE" demo --schema "$SCHEMA" --duration 2 --resp-port 0 --grpc-port 0 --metrics-port 0 \
      --state-dir "$T/state" 2>&1); rc=$?
if [ $rc != 0 ] && [[ "$out" == *"state dir $T/state is in use by pid $pid"* ]]; then
  ok "second demo on the state dir refused"
else
  fail "second demo: exit $rc: $(tail -3 <<<"$out")"
fi
c2=$(count)
[[ "$c2" =~ ^[0-9]+$ ]] && [ "$c2" -ge "$c" ] && ok "first demo still serving ($c2)" || fail "after the refused second: '$c2'"

# Ctrl-C: a clean stop, the final commit holding what was ingested.
kill -INT $pid
for _ in $(seq 1 120); do kill -0 $pid 2>/dev/null || break; sleep 0.25; done
status=0
wait $pid || status=$?
pid=
[ $status = 0 ] && ok "Ctrl-C: exit 0" || fail "Ctrl-C: exit $status"
grep -q '^stopping: ' "$T/out" || fail "no 'stopping' line"
grep -q '(0 errors)' "$T/out" && ok "probe without errors" || fail "the demo's probe saw errors: $(tail -1 "$T/out")"
ingested=$(sed -n 's/.*, ingested \([0-9]*\) messages,.*/\1/p' "$T/out")
"$SLUICE" snapshot create final --state-dir "$T/state" >/dev/null 2>&1 || fail "snapshot of the stopped state"
next=$("$SLUICE" snapshot list --state-dir "$T/state" 2>&1 | awk '$1 == "final"' | grep -o 'next=[0-9]*' | cut -d= -f2)
[ -n "$ingested" ] && [ "${ingested:-0}" -gt 0 ] && [ "${next:-x}" = "$ingested" ] &&
  ok "final commit holds the $ingested messages ingested" || fail "committed next offsets ${next:-none}, ingested ${ingested:-none}"

# The stopped demo's state, served by `sluice serve`: sluice_requests_total
# counts exactly the requests made here, by protocol and outcome.
# Reserved ports (testlib.sh): this serve's three, and the second serve's RESP.
reserve_ports 4
read -r pr pg pm pr2 <<<"$PORTS"
cat > "$T/serve.yaml" <<EOF
schemas: [$SCHEMA]
state_dir: $T/state
resp_port: $pr
grpc_port: $pg
metrics_port: $pm
grpc_token: t0k
EOF
"$SLUICE" serve -c "$T/serve.yaml" --ports-file "$T/serve.ports" 2> "$T/serve.err" &
pid=$!
wait_ports "$T/serve.ports" $pid || fail "serve did not start: $(tail -3 "$T/serve.err")"
for i in 1 2 3 4 5; do redis-cli -p $pr HGETALL "$key" > /dev/null; done
for i in 1 2 3; do redis-cli -p $pr HGETALL "card_activity:card-nobody-$i" > /dev/null; done
want='resp/hit=5 resp/miss=3 resp/error=0'
if [ -n "$PY" ]; then
  "$PY" - "$pg" "${key#card_activity:}" > "$T/grpc2" 2>&1 <<'EOF'
import sys, grpc
from sluice.v1 import feature_service_pb2 as pb, feature_service_pb2_grpc as pbg
port, card = sys.argv[1], sys.argv[2]
tok = [("authorization", "Bearer t0k")]
def req(ref):
    return pb.GetOnlineFeaturesRequest(feature_refs=pb.FeatureRefList(refs=[ref]),
                                       entities=[pb.EntityRow(keys={"card_id": card})])
with grpc.insecure_channel("127.0.0.1:" + port) as ch:
    stub = pbg.FeatureServiceStub(ch)
    for _ in range(2):
        assert stub.GetOnlineFeatures(req("card_activity:*"), metadata=tok, timeout=10).results
    for md, ref, code in ((None, "card_activity:*", grpc.StatusCode.UNAUTHENTICATED),
                          (tok, "no_such_view:*", grpc.StatusCode.NOT_FOUND)):
        try:
            stub.GetOnlineFeatures(req(ref), metadata=md, timeout=10)
            raise SystemExit("%s: no error" % ref)
        except grpc.RpcError as e:
            assert e.code() == code, (ref, e.code())
print("grpc done")
EOF
  [ $? = 0 ] || fail "gRPC requests: $(cat "$T/grpc2")"
  want="$want grpc/ok=2 grpc/unauthenticated=1 grpc/error=1"
fi
got=$(curl -s "http://127.0.0.1:$pm/metrics" | sed -n 's/^sluice_requests_total{protocol="\([a-z]*\)",status="\([a-z]*\)"} \([0-9]*\)$/\1\/\2=\3/p' |
      grep -E "$(tr ' ' '\n' <<<"$want" | cut -d= -f1 | paste -sd'|')" | sort | paste -sd' ')
[ "$got" = "$(tr ' ' '\n' <<<"$want" | sort | paste -sd' ')" ] && ok "sluice_requests_total: $got" ||
  fail "sluice_requests_total: got '$got', want '$want'"
# The servers' own latency histograms count every request once: RESP every
# command the server counted (the 8 HGETALL above and the PINGs), gRPC the 4
# calls made above; the scrape's histogram sum is positive.
m=$(curl -s "http://127.0.0.1:$pm/metrics")
hc() { awk -v k="sluice_request_duration_seconds_$1{protocol=\"$2\"}" '$1 == k {print $2}' <<< "$m"; }
cmds=$(awk '$1 == "sluice_serving_resp_commands" {print $2}' <<< "$m")
if [ -n "$cmds" ] && [ "$(hc count resp)" = "$cmds" ] && [ "$cmds" -ge 8 ] &&
   awk -v s="$(hc sum resp)" 'BEGIN { exit !(s > 0) }'; then
  ok "request duration histogram (resp): $cmds commands"
else
  fail "request duration histogram (resp): count $(hc count resp), commands $cmds, sum $(hc sum resp)"
fi
if [ -n "$PY" ]; then
  [ "$(hc count grpc)" = 4 ] && ok "request duration histogram (grpc): 4 calls" ||
    fail "request duration histogram (grpc): count $(hc count grpc), want 4"
fi
# A second serve (a follower of the first) on the same metrics port: it
# warns and serves without metrics.
"$SLUICE" serve -c "$T/serve.yaml" --set resp_port=$pr2 --set grpc_port=0 --ports-file "$T/serve2.ports" \
  2> "$T/serve2.err" &
pid2=$!
wait_ports "$T/serve2.ports" $pid2
[ "$(redis-cli -p $pr2 PING 2>/dev/null)" = PONG ] && grep -q "serving without a metrics endpoint" "$T/serve2.err" &&
  ok "serve beside a taken metrics port: warns and serves" || fail "second serve: $(tail -3 "$T/serve2.err")"
kill -TERM $pid2; wait $pid2 || fail "second serve: exit $?"; pid2=
kill -TERM $pid; status=0; wait $pid || status=$?; pid=
[ $status = 0 ] && ok "serve: SIGTERM exit 0" || fail "serve: SIGTERM exit $status: $(tail -3 "$T/serve.err")"

# The stopped demo's state is not reused: its in-process Kafka is gone.
out=$("$SLUICE" demo --schema "$SCHEMA" --duration 2 --resp-port 0 --grpc-port 0 --metrics-port 0 \
      --state-dir "$T/state" 2>&1); rc=$?
[ $rc = 1 ] && [[ "$out" == *"state dir $T/state holds the state of an earlier run"* ]] &&
  ok "an earlier run's state dir refused" || fail "rerun on the old state: exit $rc: $(tail -2 <<<"$out")"

# --duration: stops by itself; without --state-dir its temporary state goes.
t0=$(date +%s)
"$SLUICE" demo --schema "$SCHEMA" --duration 3 --rate 1500 --resp-port 0 --grpc-port 0 --metrics-port 0 \
  --log-format json > "$T/out2" 2> "$T/err2" &
pid=$!
for _ in $(seq 1 480); do kill -0 $pid 2>/dev/null || break; sleep 0.25; done   # up to 120 s
status=0
kill -0 $pid 2>/dev/null && status=timeout
wait $pid || status=$?
pid=
el=$(( $(date +%s) - t0 ))
[ "$status" = 0 ] && [ $el -ge 3 ] && ok "--duration 3: exit 0 after ${el}s" || fail "--duration 3: status $status after ${el}s"
python3 - "$T/err2" <<'EOF' || fails=$((fails+1))
import json, sys
lines = open(sys.argv[1]).read().splitlines()
try:
    objs = [json.loads(l) for l in lines]
    ok = len(objs) >= 3 and all({"ts", "level", "component", "msg"} <= set(o) for o in objs)
except ValueError as e:
    ok, objs = False, e
if not ok:
    print("FAIL --log-format json: %r" % (lines[:3],)); sys.exit(1)
print("ok   --log-format json: %d log lines, each a JSON object" % len(objs))
EOF
produced=$(sed -n 's/^produced \([0-9]*\) events,.*/\1/p' "$T/out2")
[ "${produced:-0}" -ge 3600 ] && [ "${produced:-0}" -le 5200 ] && ok "--rate 1500 for 3 s: $produced events" ||
  fail "--rate 1500 for 3 s: ${produced:-no} events produced"
tmpstate=$(sed -n 's/^  state: \(\/tmp\/sluice-demo-[^ ]*\) (removed at exit.*/\1/p' "$T/out2")
[ -n "$tmpstate" ] && [ ! -e "$tmpstate" ] && ok "temporary state $tmpstate removed" ||
  fail "temporary state '${tmpstate:-not printed}' left behind"

out=$("$SLUICE" demo --log-format xml 2>&1); rc=$?
[ $rc = 2 ] && [[ "$out" == *"--log-format 'xml'"* ]] && ok "refused: --log-format xml" || fail "demo --log-format xml: exit $rc: $out"
# Bad option values are usage errors naming the option.
for a in "--rate x" "--resp-port 70000" "--duration -1"; do
  out=$("$SLUICE" demo $a 2>&1); rc=$?
  [ $rc = 2 ] && [[ "$out" == *"bad value '${a#* }' for ${a%% *}"* ]] && ok "refused: $a" || fail "demo $a: exit $rc: $out"
done

finish demo
