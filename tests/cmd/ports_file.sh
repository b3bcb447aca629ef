#!/bin/bash
# ports_file.sh SLUICE SCHEMA — `--ports-file PATH` (docs/operations.md):
# once `sluice serve` listens, PATH holds one "NAME BIND PORT" line per
# listener, exactly the ports it answers on; disabled listeners have no line;
# no temporary file is left; an unwritable path stops the command (exit 1)
# and a missing value is a usage error (exit 2). The ports come from
# reserve_ports (testlib.sh), which the listeners can bind while nobody else
# can take them.
SLUICE=$1
SCHEMA=$2
. "$(dirname "$0")/testlib.sh"
pid=
on_exit() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; }

cat > "$T/serve.yaml" <<EOF
schemas: [$SCHEMA]
state_dir: $T/state
EOF

reserve_ports 3
read -r pr pg pm <<<"$PORTS"
mkdir -p "$T/run"
"$SLUICE" serve -c "$T/serve.yaml" --set resp_port=$pr --set grpc_port=$pg --set metrics_port=$pm \
    --ports-file "$T/run/ports" 2> "$T/serve.err" &
pid=$!
if wait_ports "$T/run/ports" $pid; then
    want=$(printf 'resp 127.0.0.1 %s\ngrpc 127.0.0.1 %s\nmetrics 127.0.0.1 %s' $pr $pg $pm)
    [ "$(cat "$T/run/ports")" = "$want" ] && ok "ports file lists the three listeners" ||
        fail "ports file: '$(cat "$T/run/ports")', want '$want'"
    [ "$(redis-cli -p "$(port_of "$T/run/ports" resp)" PING 2>&1)" = PONG ] && ok "RESP answers on its listed port" ||
        fail "no PONG on the listed RESP port"
    curl -sf "http://127.0.0.1:$(port_of "$T/run/ports" metrics)/metrics" | grep -q '^sluice_' &&
        ok "metrics answer on their listed port" || fail "no metrics on the listed port"
    python3 - "$(port_of "$T/run/ports" grpc)" <<'EOF' && ok "gRPC accepts on its listed port" || fail "gRPC port"
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
EOF
    leftover=$(ls -A "$T/run" | grep -v '^ports$')
    [ -z "$leftover" ] && ok "no temporary file left" || fail "left in the directory: $leftover"
else
    fail "no ports file: $(tail -3 "$T/serve.err")"
fi
kill -TERM $pid; wait $pid; rc=$?; pid=
[ $rc = 0 ] && ok "serve exits 0" || fail "serve exit $rc"

# Disabled listeners are left out (gRPC and metrics off: one line).
"$SLUICE" serve -c "$T/serve.yaml" --set resp_port=$pr --set grpc_port=0 --set metrics_port=0 \
    --ports-file "$T/one" 2> "$T/serve1.err" &
pid=$!
if wait_ports "$T/one" $pid; then
    [ "$(cat "$T/one")" = "resp 127.0.0.1 $pr" ] && ok "disabled listeners have no line" ||
        fail "ports file with gRPC and metrics off: '$(cat "$T/one")'"
else
    fail "no ports file: $(tail -3 "$T/serve1.err")"
fi
kill -TERM $pid; wait $pid; pid=

# An unwritable path stops the command; a missing value is a usage error.
out=$(timeout 60 "$SLUICE" serve -c "$T/serve.yaml" --set resp_port=$pr --set grpc_port=0 --set metrics_port=0 \
      --ports-file "$T/no/such/dir/ports" 2>&1); rc=$?
[ $rc = 1 ] && grep -q -- "--ports-file" <<<"$out" && ok "unwritable ports file: exit 1, named" ||
    fail "unwritable ports file: exit $rc: $out"
out=$(timeout 60 "$SLUICE" serve -c "$T/serve.yaml" --ports-file 2>&1); rc=$?
[ $rc = 2 ] && ok "--ports-file without a path: usage error" || fail "--ports-file without a path: exit $rc"
for c in serve run ingest; do
    "$SLUICE" $c --help | grep -q -- "--ports-file PATH" && ok "$c --help documents --ports-file" ||
        fail "$c --help lacks --ports-file"
done
finish ports_file
