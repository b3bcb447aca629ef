#!/usr/bin/env bash
# resp_shutdown.sh SLUICE SCHEMA — graceful SIGTERM of `sluice serve` as
# issue 7 asks: "stop accepting, finish in-flight lookups, exit 0". A client
# pipelines 30000 HGETALL (~16 MB of replies) without reading, so most
# replies wait in the server's output buffers; then the server gets SIGTERM
# and the client reads to the end. The oracle is the server's own count of
# the commands it executed (`--stats` at exit): each of them must reach the
# client as a whole reply, the stream must not end inside a reply, and the
# listening port must refuse new connections once the server is gone.
#
# Before resp_server_stop stopped gracefully, it closed every connection at
# once and dropped the replies not yet written (in one run, 7753 of 30000
# executed lookups reached the client, the last one cut short).
set -uo pipefail
SLUICE=${1:?usage: resp_shutdown.sh SLUICE SCHEMA}
SCHEMA=$(realpath "${2:?schema}")
. "$(dirname "$0")/testlib.sh"

# Reserved ports (testlib.sh): the demo's three, then serve's; held until the
# end, so that "the port refuses new connections" can only mean serve closed it.
reserve_ports 4
read -r dresp dgrpc dmetrics port <<<"$PORTS"
# State to look up: a short demo run.
"$SLUICE" demo --schema "$SCHEMA" --duration 4 --rate 4000 --resp-port $dresp --grpc-port $dgrpc \
  --metrics-port $dmetrics --state-dir "$T/st" > "$T/demo.out" 2>&1 || { tail "$T/demo.out"; echo "FAIL demo"; exit 1; }
cat > "$T/serve.yaml" <<EOF
schemas: [$SCHEMA]
state_dir: $T/st
resp_port: $port
grpc_port: 0
metrics_port: 0
EOF

python3 - "$SLUICE" "$T/serve.yaml" "$port" "$T" <<'EOF' || fails=$((fails+1))
import os, select, signal, socket, subprocess, sys, time
sluice, cfg, port, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
N = 30000
srv = subprocess.Popen([sluice, "serve", "-c", cfg, "--stats", "--ports-file", tmp + "/serve.ports"],
                       stdout=open(tmp + "/stats", "w"), stderr=open(tmp + "/serve.err", "w"))
deadline = time.time() + 120            # a loaded machine starts slowly
while not os.path.exists(tmp + "/serve.ports"):
    if srv.poll() is not None or time.time() > deadline:
        print("FAIL serve did not start: " + open(tmp + "/serve.err").read()); sys.exit(1)
    time.sleep(0.05)
s = socket.create_connection(("127.0.0.1", port))
key = b"card_activity:card-000001"
one = b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(key), key)
s.sendall(one * N)
# The server is executing (a first reply is readable; up to 60 s on a loaded
# machine), then it reads and executes what it can for a while.
if not select.select([s], [], [], 60)[0]:
    print("FAIL no reply within 60 s"); sys.exit(1)
time.sleep(1.5)
srv.send_signal(signal.SIGTERM)
s.settimeout(20)
data, err = bytearray(), None
while True:
    try:
        b = s.recv(1 << 20)
    except (ConnectionResetError, socket.timeout) as e:
        err = repr(e); break
    if not b:
        break
    data += b
rc = srv.wait(timeout=30)
stats = dict(l.split() for l in open(tmp + "/stats") if len(l.split()) == 2)
executed = int(stats.get("resp_commands", -1))

# Split the stream into whole replies (arrays of bulk strings, or errors).
def replies(buf):
    n, i = 0, 0
    while i < len(buf):
        j = buf.find(b"\r\n", i)
        if j < 0:
            return n, False
        head = buf[i:j]
        i = j + 2
        if head[:1] == b"*":
            for _ in range(int(head[1:])):
                j = buf.find(b"\r\n", i)
                if j < 0:
                    return n, False
                size = int(buf[i + 1:j])
                if j + 2 + size + 2 > len(buf):
                    return n, False
                i = j + 2 + size + 2
        n += 1
    return n, True
got, whole = replies(bytes(data))
refused = False
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
except OSError:
    refused = True
if rc != 0 or executed <= 0 or got != executed or not whole or not refused:
    print("FAIL exit %d; executed %d lookups, %d whole replies reached the client%s%s; new connections %s"
          % (rc, executed, got, "" if whole else ", then a cut reply", " (%s)" % err if err else "",
             "refused" if refused else "accepted"))
    sys.exit(1)
print("ok   SIGTERM: exit 0, all %d executed lookups answered in whole, port closed" % executed)
EOF
finish resp_shutdown
