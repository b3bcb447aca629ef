#!/usr/bin/env python3
"""Serving benchmark: Sluice beside its peers, measured in the same run.

RESP: redis-benchmark HGETALL of a 10-feature vector (random entity of N)
against `sluice serve` and against redis-server holding the same vectors as
hashes, 50 clients, without and with -P 16. Both servers first answer one
untimed pass over the key space (redis-server's hashes are in memory; this
puts Sluice's answers in its reply caches), then the two are measured back
to back, interleaved, --reps times (default 3); the median of each figure
and the ratio of the median throughputs are printed. Per server and run:
throughput, p50/p99, server CPU time per request (utime+stime from
/proc/PID/stat) and syscalls per request (perf stat -e raw_syscalls:sys_enter
on the server's pid; read+write from /proc/PID/io when perf is missing).

gRPC: GetOnlineFeatures for 1 and 100 entities against the echo service on
the same gRPC core (bench_grpc_echo), with ghz when it is installed (else a
multi-process grpcio load generator), interleaved, --reps times, median:
QPS, p50, p99, server CPU per call and ghz's CPU per call; each in two
shapes, entity maps in and a FeatureVector per row out ("rows"), key
columns in and the dense matrix out ("dense"), each beside an echo of its
own request size. ghz decodes
every response (dynamic protobuf), which costs it several times the
server's CPU and more for a feature vector than for an echo: on shared
cores that sets the ratio. So the same comparison is repeated with
bench_grpc_load (responses counted, not decoded: equal cost for both).
Then a constant rate (--rate, default 10 000 QPS) for 1 entity and for echo
(the p99 target), interleaved, --reps times: bench_grpc_load in open loop
(each call sent at its scheduled time whatever is in flight; latency from
the scheduled time, so a late client or a backlog counts in full: p50, p99,
p99.9, max; and how late the client itself was, send lag, to tell a busy
client from a slow server), then ghz --rps (latency from ghz's actual
send, so its own lateness is not counted; its CPU per call is printed)
and, when installed (Debian: nghttp2-client), h2load: a light HTTP/2
client, 4 connections with one call in flight each (latency from its own
send, like ghz), so that the client's CPU leaves the server's core alone.

--nice N runs the servers and the load generators at that nice value (e.g.
-10: ahead of other work on a shared box; needs root).

usage: serving_bench.py --build DIR [--entities N] [--requests N] [--reps N]
                        [--threads N] [--parts resp,grpc,fixed] [--rate QPS]
                        [--nice N] [--quick]
"""
import argparse
import csv
import io
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GHZ_CPU_US = float("nan")    # the load generator's CPU per call in its last run
LOAD_CPU_US = float("nan")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, what):
    t0 = time.time()
    while time.time() - t0 < 30:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                sys.exit("%s exited early" % what)
            time.sleep(0.1)
    sys.exit("%s did not start" % what)


def proc_cpu(pid):
    """utime+stime of a process in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_syscalls(pid):
    """read+write syscalls so far (/proc/PID/io: syscr + syscw)."""
    vals = {}
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            k, v = line.split(":")
            vals[k] = int(v)
    return vals["syscr"] + vals["syscw"]


PERF = shutil.which("perf")


class SyscallCounter:
    """Every syscall of a process (all threads) while active: perf stat on
    the raw_syscalls:sys_enter tracepoint (a counter, no per-call tracing);
    falls back to read+write from /proc/PID/io."""

    def __init__(self, pid):
        self.pid, self.proc, self.out = pid, None, None
        if PERF:
            self.out = tempfile.NamedTemporaryFile(prefix="perfstat-", suffix=".csv", delete=False).name
            self.proc = subprocess.Popen([PERF, "stat", "-x,", "-o", self.out, "-e", "raw_syscalls:sys_enter",
                                          "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            if self.proc.poll() is not None:
                self.proc = None
        if not self.proc:
            self.start = proc_syscalls(pid)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=20)
            with open(self.out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and parts[2].startswith("raw_syscalls:sys_enter"):
                        os.unlink(self.out)
                        return int(parts[0])
            os.unlink(self.out)
            return float("nan")
        return proc_syscalls(self.pid) - self.start


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def medians(runs):
    """{case: [row per run]} -> {case: the median of each column}."""
    return {k: [median(col) for col in zip(*rows)] for k, rows in runs.items()}


def interleaved(cases, reps, run, fmt):
    """Runs run(case) -> row for each case in turn, reps times, printing
    each row with fmt % (case name, *row), then the medians; returns
    {name: [rows]}. A case is a tuple whose first item is its name."""
    runs = {c[0]: [] for c in cases}
    for _ in range(reps):
        for c in cases:
            row = run(c)
            runs[c[0]].append(row)
            print(fmt % (c[0], *row))
    print("median of %d:" % reps)
    for name, m in medians(runs).items():
        print(fmt % (name, *m))
    return runs


def redis_benchmark(port, n, pipeline, nkeys):
    cmd = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-P", str(pipeline),
           "-r", str(nkeys), "--csv", "HGETALL", "user_stats:u__rand_int__"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, preexec_fn=nice_fn).stdout
    rows = list(csv.reader(io.StringIO(out)))
    hdr, row = rows[0], rows[-1]
    d = dict(zip(hdr, row))
    return float(d["rps"]), float(d["p50_latency_ms"]), float(d["p99_latency_ms"])


def measure(pid, fn):
    """fn() with the server's CPU seconds and syscalls during it."""
    sc = SyscallCounter(pid)
    c0 = proc_cpu(pid)
    r = fn()
    cpu = proc_cpu(pid) - c0
    return r, cpu, sc.stop()


# ---- gRPC load ------------------------------------------------------------------

def ghz_run(ghz, target, proto, import_path, call, data, n, conc, rps=None):
    """data: the request as serialized bytes (sent as is, -B: no JSON to
    protobuf conversion per call on the client) or a JSON-able dict."""
    cmd = [ghz, "--insecure", "--proto", proto, "--import-paths", import_path, "--call", call,
           "-n", str(n), "-c", str(conc), "--connections", "4",
           "-O", "json", "--skipFirst", str(min(1000, n // 10))]
    if isinstance(data, bytes):
        bf = tempfile.NamedTemporaryFile(prefix="ghz-", suffix=".bin", delete=False)
        bf.write(data)
        bf.close()
        cmd += ["-B", bf.name]
    else:
        cmd += ["-d", json.dumps(data)]
    if rps:
        cmd += ["--rps", str(rps)]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd + [target], capture_output=True, text=True, preexec_fn=nice_fn)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    global GHZ_CPU_US
    GHZ_CPU_US = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) * 1e6 / n
    if isinstance(data, bytes):
        os.unlink(bf.name)
    if out.returncode not in (0, 1):
        sys.exit("ghz failed: " + out.stderr)
    r = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
    codes = r.get("statusCodeDistribution", {})
    ok = codes.get("OK", 0)
    if ok < sum(codes.values()):
        sys.exit("gRPC errors in the benchmark: %r %r" % (codes, r.get("errorDistribution")))
    return r["rps"], lat.get(50, float("nan")), lat.get(99, float("nan"))


LOAD_LAST = {}               # every figure of the last bench_grpc_load run
NICE = 0


def nice_fn():
    """preexec_fn of the processes under test (--nice)."""
    if NICE:
        os.nice(NICE)


def load_run(load, target, method, req, n, conc, rps=None):
    """bench_grpc_load (responses not decoded): (qps, p50 ms, p99 ms), its
    CPU per call in LOAD_CPU_US and every printed figure in LOAD_LAST."""
    with tempfile.NamedTemporaryFile(prefix="grpcload-", suffix=".bin", delete=False) as bf:
        bf.write(req)
    cmd = [load, target, method, bf.name, str(n), str(conc), "4"] + ([str(rps)] if rps else [])
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=nice_fn)
    os.unlink(bf.name)
    if out.returncode != 0:
        sys.exit("bench_grpc_load failed: %s %s" % (out.stdout, out.stderr))
    d = dict(kv.split("=") for kv in out.stdout.split())
    global LOAD_CPU_US, LOAD_LAST
    LOAD_CPU_US = float(d["client_cpu_us_per_call"])
    LOAD_LAST = {k: float(v) for k, v in d.items()}
    return float(d["qps"]), float(d["p50_ms"]), float(d["p99_ms"])


def echo_msg(size):
    """A serialized EchoMessage {bytes payload = 1} of exactly `size` bytes."""
    for plen in range(max(0, size - 12), size + 1):
        hdr = [0x0a]
        v = plen
        while v >= 0x80:
            hdr.append((v & 0x7f) | 0x80)
            v >>= 7
        hdr.append(v)
        if len(hdr) + plen == size:
            return bytes(hdr) + b"x" * plen
    return b"\x0a\x00"


def py_grpc_worker(args):
    """One load-generating process: closed loop over one channel."""
    target, method, payload, n, conc = args
    import threading
    import grpc
    ch = grpc.insecure_channel(target)
    call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
    lats = []
    lock = threading.Lock()

    def loop(k):
        mine = []
        for _ in range(k):
            t = time.perf_counter()
            call(payload)
            mine.append(time.perf_counter() - t)
        with lock:
            lats.extend(mine)
    ts = [threading.Thread(target=loop, args=(n // conc,)) for _ in range(conc)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lats, time.perf_counter() - t0


def py_grpc_run(target, method, payload, n, conc):
    from multiprocessing import Pool
    procs = 4
    with Pool(procs) as p:
        res = p.map(py_grpc_worker, [(target, method, payload, n // procs, conc // procs)] * procs)
    lats = sorted(x for r in res for x in r[0])
    wall = max(r[1] for r in res)
    return len(lats) / wall, lats[len(lats) // 2] * 1e3, lats[int(len(lats) * 0.99)] * 1e3


# ---- main --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True, help="a non-sanitized build directory")
    ap.add_argument("--entities", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="serve_threads of sluice and threads of the echo server")
    ap.add_argument("--parts", default="resp,grpc,fixed",
                    help="resp, grpc (closed loop), fixed (constant rate), comma-separated")
    ap.add_argument("--rate", type=int, default=10000, help="QPS of the constant-rate part")
    ap.add_argument("--nice", type=int, default=0, help="nice value of servers and load generators")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.entities, a.requests, a.reps = 1000, 20000, 1
    global NICE
    NICE = a.nice
    sluice = os.path.join(a.build, "cmd", "sluice")
    seed = os.path.join(a.build, "tests", "serving", "seed_state")
    echo = os.path.join(a.build, "bench", "bench_grpc_echo")
    work = tempfile.mkdtemp(prefix="sluice-serving-bench-")
    procs = []
    try:
        shutil.copy(os.path.join(ROOT, "tests", "serving", "data", "schema.yaml"), work)
        with open(os.path.join(work, "config.yaml"), "w") as f:
            f.write("schemas: [schema.yaml]\nstate_dir: %s/state\n" % work)
        now = int(time.time() * 1000)
        rnd = random.Random(1)
        with open(os.path.join(work, "events.tsv"), "w") as f:
            for i in range(a.entities):
                for k in range(3):
                    ev = {"user_id": "u%012d" % i, "region": "eu", "driver": i % 50,
                          "amount": round(rnd.uniform(1, 100), 2), "page": rnd.choice(["home", "cart"]),
                          "ts": now - rnd.randint(60_000, 3_000_000) - k}
                    f.write("clicks\t%d\t%s\n" % (i % 4, json.dumps(ev)))
        subprocess.run([seed, os.path.join(work, "config.yaml"), os.path.join(work, "events.tsv")],
                       check=True, stdout=subprocess.DEVNULL)
        resp_port, grpc_port, redis_port, echo_port = free_port(), free_port(), free_port(), free_port()
        sl = subprocess.Popen([sluice, "serve", "-c", os.path.join(work, "config.yaml"),
                               "--set", "resp_port=%d" % resp_port, "--set", "grpc_port=%d" % grpc_port,
                               "--set", "serve_threads=%d" % a.threads, "--set", "max_clients=4096"],
                              stderr=subprocess.DEVNULL, preexec_fn=nice_fn)
        procs.append(sl)
        rd = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                               "--bind", "127.0.0.1", "--dir", work], stdout=subprocess.DEVNULL,
                              preexec_fn=nice_fn)
        procs.append(rd)
        ec = subprocess.Popen([echo, str(echo_port), str(a.threads)], stderr=subprocess.DEVNULL,
                              preexec_fn=nice_fn)
        procs.append(ec)
        wait_port(resp_port, sl, "sluice")
        wait_port(redis_port, rd, "redis-server")
        wait_port(echo_port, ec, "echo")

        # redis-server gets exactly the vectors Sluice serves
        import redis
        s_cli = redis.Redis(port=resp_port)
        r_cli = redis.Redis(port=redis_port)
        for start in range(0, a.entities, 500):
            keys = ["user_stats:u%012d" % i for i in range(start, min(a.entities, start + 500))]
            p = s_cli.pipeline(transaction=False)
            for k in keys:
                p.hgetall(k)
            vecs = p.execute()
            q = r_cli.pipeline(transaction=False)
            for k, v in zip(keys, vecs):
                assert len(v) == 10, (k, v)
                q.hset(k, mapping={fk: (fv if fv is not None else b"") for fk, fv in v.items()})
            q.execute()

        print("box: %d cores, load average %s at start; clients and servers share the cores"
              % (os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
        print("RESP: redis-benchmark HGETALL of a 10-feature vector, %d random entities, 50 clients, "
              "%d requests per run, sluice serve_threads=%d, median of %d interleaved runs"
              % (a.entities, a.requests, a.threads, a.reps))
        for name, port in (("redis-server", redis_port), ("sluice", resp_port)):    # untimed warm-up
            redis_benchmark(port, 3 * a.entities, 16, a.entities)
        parts = a.parts.split(",")
        print("%-8s %-14s %12s %9s %9s %12s %12s" % ("pipeline", "server", "req/s", "p50 ms", "p99 ms",
                                                      "CPU us/req", "sysc/req"))
        for pipeline in ((1, 16) if "resp" in parts else ()):
            runs = {"redis-server": [], "sluice": []}
            for rep in range(a.reps):                          # interleaved, back to back
                for name, port, pid in (("redis-server", redis_port, rd.pid), ("sluice", resp_port, sl.pid)):
                    (rps, p50, p99), cpu, sysc = measure(pid, lambda: redis_benchmark(port, a.requests, pipeline, a.entities))
                    runs[name].append((rps, p50, p99, cpu * 1e6 / a.requests, sysc / a.requests))
            med = medians(runs)
            for name in ("redis-server", "sluice"):
                print("%-8d %-14s %12.0f %9.3f %9.3f %12.2f %12.3f" % (pipeline, name, *med[name]))
            ratios = " ".join("%.2f" % (x[0] / y[0]) for x, y in zip(runs["sluice"], runs["redis-server"]))
            print("%-8d %-14s %11.2fx %9s %8.2fx %11.2fx   (throughput per run: %s)" % (
                pipeline, "sluice/redis", med["sluice"][0] / med["redis-server"][0], "",
                med["sluice"][2] / med["redis-server"][2], med["sluice"][3] / med["redis-server"][3], ratios))

        # gRPC
        closed = "grpc" in parts
        if not closed and "fixed" not in parts:
            return
        ghz = shutil.which("ghz") or os.path.expanduser("~/go/bin/ghz")
        use_ghz = os.path.exists(ghz)
        n = a.requests // 4
        if closed:
            print()
            print("gRPC: GetOnlineFeatures vs echo on the same gRPC core (load: %s, 50 concurrent, %d calls per run "
                  "(100 entities: %d), median of %d interleaved runs)" % (
                      "ghz, 4 connections" if use_ghz else "python grpcio, 4 processes", n, n // 10, a.reps))
            print("%-24s %12s %9s %9s %12s %12s" % ("call", "QPS", "p50 ms", "p99 ms", "CPU us/call",
                                                      "ghz us/call"))
        sys.path.insert(0, os.path.join(a.build, "serving-py"))
        from sluice.v1 import feature_service_pb2 as pb
        fs_proto = (os.path.join(ROOT, "proto", "sluice", "v1", "feature_service.proto"), os.path.join(ROOT, "proto"),
                    "sluice.v1.FeatureService.GetOnlineFeatures")
        echo_proto = (os.path.join(ROOT, "bench", "echo.proto"), os.path.join(ROOT, "bench"), "sluice.bench.Echo.Echo")
        for n_ent in ((1, 100) if closed else ()):
            n = a.requests // 4 if n_ent == 1 else a.requests // 40     # 100 entities: 1/10 the calls
            ents = [{"keys": {"user_id": "u%012d" % rnd.randrange(a.entities)}} for _ in range(n_ent)]

            rows = [pb.EntityRow(keys=e["keys"]) for e in ents]
            # the two shapes of a call: entity maps in, a FeatureVector of
            # FeatureValues per row out (two messages per value to decode);
            # or key columns in, the dense matrix (flat byte arrays) out
            cols = [pb.EntityKeyColumn(name="user_id", values=[e["keys"]["user_id"] for e in ents])]
            reqs = {"rows": pb.GetOnlineFeaturesRequest(feature_service="user_model", entities=rows).SerializeToString(),
                    "dense": pb.GetOnlineFeaturesRequest(feature_service="user_model", entity_columns=cols,
                                                         layout=pb.LAYOUT_DENSE).SerializeToString()}
            # echo: an EchoMessage of the same encoded size as the request;
            # all sent as serialized bytes (ghz -B)
            eds = {k: echo_msg(len(v)) for k, v in reqs.items()}
            runs = {"rows": [], "dense": [], "echo": [], "echo dense": []}
            for rep in range(a.reps):
                for name, port, pid in (("rows", grpc_port, sl.pid), ("echo", echo_port, ec.pid),
                                        ("dense", grpc_port, sl.pid), ("echo dense", echo_port, ec.pid)):
                    is_echo = name.startswith("echo")
                    body = eds[name[5:] or "rows"] if is_echo else reqs[name]
                    if use_ghz:
                        pr = echo_proto if is_echo else fs_proto
                        fn = lambda: ghz_run(ghz, "127.0.0.1:%d" % port, *pr, body, n, 50)
                    else:
                        meth = "/sluice.bench.Echo/Echo" if is_echo else "/sluice.v1.FeatureService/GetOnlineFeatures"
                        fn = lambda: py_grpc_run("127.0.0.1:%d" % port, meth, body, n, 48)
                    (qps, p50, p99), cpu, _ = measure(pid, fn)
                    runs[name].append((qps, p50, p99, cpu * 1e6 / n, GHZ_CPU_US))
            med = medians(runs)
            ents_txt = "%d entit%s" % (n_ent, "y" if n_ent == 1 else "ies")
            for lay, echo in (("rows", "echo"), ("dense", "echo dense")):
                print("%-24s %12.0f %9.3f %9.3f %12.1f %12.1f" % ("%s, %s" % (ents_txt, lay), *med[lay]))
                print("%-24s %12.0f %9.3f %9.3f %12.1f %12.1f" % ("echo (same size)", *med[echo]))
                ratios = " ".join("%.2f" % (x[0] / y[0]) for x, y in zip(runs[lay], runs[echo]))
                print("%-24s %11.2fx   (per run: %s)" % ("%s/echo QPS" % lay, med[lay][0] / med[echo][0], ratios))
        # the same comparison with a load generator that does not decode
        # responses (ghz's decoding cost differs between the two services)
        load = os.path.join(a.build, "bench", "bench_grpc_load")
        lreps = max(a.reps, 5) if not a.quick else 1
        if closed:
            print()
            print("gRPC, light client (bench_grpc_load: no response decoding, 1 thread, 4 channels, 50 in flight), "
                  "median of %d interleaved runs" % lreps)
            print("%-24s %12s %9s %9s %12s %12s" % ("call", "QPS", "p50 ms", "p99 ms", "CPU us/call", "load us/call"))
        for n_ent in ((1, 100) if closed else ()):
            nl = a.requests // 5 if n_ent == 1 else a.requests // 20
            keys = ["u%012d" % rnd.randrange(a.entities) for _ in range(n_ent)]
            ents = [pb.EntityRow(keys={"user_id": k}) for k in keys]
            reqs = {"rows": pb.GetOnlineFeaturesRequest(feature_service="user_model", entities=ents).SerializeToString()}
            if n_ent > 1:     # the server's cost of the dense shape (the client's is the same here)
                reqs["dense"] = pb.GetOnlineFeaturesRequest(
                    feature_service="user_model", layout=pb.LAYOUT_DENSE,
                    entity_columns=[pb.EntityKeyColumn(name="user_id", values=keys)]).SerializeToString()
            cases = []
            for lay, req in reqs.items():
                cases += [(lay, grpc_port, sl.pid, "/sluice.v1.FeatureService/GetOnlineFeatures", req),
                          ("echo " + lay, echo_port, ec.pid, "/sluice.bench.Echo/Echo", echo_msg(len(req)))]
            runs = {c[0]: [] for c in cases}
            for rep in range(lreps):
                for name, port, pid, meth, body in cases:
                    (qps, p50, p99), cpu, _ = measure(pid, lambda: load_run(load, "127.0.0.1:%d" % port, meth, body, nl, 50))
                    runs[name].append((qps, p50, p99, cpu * 1e6 / nl, LOAD_CPU_US))
            med = medians(runs)
            ents_txt = "%d entit%s" % (n_ent, "y" if n_ent == 1 else "ies")
            for lay in reqs:
                print("%-24s %12.0f %9.3f %9.3f %12.1f %12.1f" % ("%s, %s" % (ents_txt, lay), *med[lay]))
                print("%-24s %12.0f %9.3f %9.3f %12.1f %12.1f" % ("echo (same size)", *med["echo " + lay]))
                ratios = " ".join("%.2f" % (x[0] / y[0]) for x, y in zip(runs[lay], runs["echo " + lay]))
                print("%-24s %11.2fx   (per run: %s)" % ("%s/echo QPS" % lay, med[lay][0] / med["echo " + lay][0], ratios))
        if "fixed" not in parts:
            return
        # constant rate, open loop: every call sent at its scheduled time,
        # latency from that time (a late client or a server backlog counts)
        req1 = pb.GetOnlineFeaturesRequest(feature_service="user_model",
                                           entities=[pb.EntityRow(keys={"user_id": "u%012d" % 7})]).SerializeToString()
        ed1 = echo_msg(len(req1))
        nfix = a.rate * 5 if not a.quick else a.rate
        cases = (("features 1 entity", grpc_port, sl.pid, "/sluice.v1.FeatureService/GetOnlineFeatures", req1),
                 ("echo (same size)", echo_port, ec.pid, "/sluice.bench.Echo/Echo", ed1))
        print()
        print("constant rate %d QPS, bench_grpc_load open loop (sender thread on a fixed schedule, 4 channels, "
              "latency from the scheduled send), %d calls per run, %d interleaved runs "
              "(target: p99 < 1 ms for 1 entity)" % (a.rate, nfix, a.reps))
        keys = ("qps", "p50_ms", "p99_ms", "p999_ms", "max_ms", "send_lag_p99_ms", "svc_p99_ms")
        hdr = ("%-20s %9s %8s %8s %8s %8s %9s %9s %9s %9s" %
               ("call", "reached", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "lag p99", "svc p99",
                "srv us/c", "load us/c"))
        print(hdr)
        runs = {c[0]: [] for c in cases}
        for rep in range(a.reps):
            for name, port, pid, meth, body in cases:
                _, cpu, _ = measure(pid, lambda: load_run(load, "127.0.0.1:%d" % port, meth, body, nfix, 50,
                                                          rps=a.rate))
                row = [LOAD_LAST[k] for k in keys] + [cpu * 1e6 / nfix, LOAD_CPU_US]
                runs[name].append(row)
                print("%-20s %9.0f %8.3f %8.3f %8.3f %8.2f %9.3f %9.3f %9.1f %9.1f" % (name, *row))
        print("median of %d:" % a.reps)
        med = medians(runs)
        for name, *_ in cases:
            print("%-20s %9.0f %8.3f %8.3f %8.3f %8.2f %9.3f %9.3f %9.1f %9.1f" % (name, *med[name]))
        f, e = med[cases[0][0]], med[cases[1][0]]
        print("%-20s %9s %7.2fx %7.2fx %7.2fx %8s %9s %9s %8.2fx" % (
            "features/echo", "", f[1] / e[1], f[2] / e[2], f[3] / e[3], "", "", "", f[7] / e[7]))
        print("(lag: how late the client itself started calls; svc: latency from the actual start)")
        h2load = shutil.which("h2load")
        if h2load:
            # a light HTTP/2 client (nghttp2's h2load, ~15-40 us of CPU per
            # call against 85+ for the gRPC core client): 4 connections, one
            # call in flight on each, each at rate/4; latency from its own
            # send, as ghz measures. The gRPC frames are written by hand.
            def h2_run(port, path, msg, pid):
                with tempfile.NamedTemporaryFile(prefix="h2body-", delete=False) as bf:
                    bf.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
                log = bf.name + ".log"
                c0 = proc_cpu(pid)
                out = subprocess.run([h2load, "-n", str(nfix), "-c", "4", "-m", "1", "--rps", str(max(1, a.rate // 4)),
                                      "-d", bf.name, "-H", "content-type: application/grpc", "-H", "te: trailers",
                                      "--log-file=" + log, "http://127.0.0.1:%d%s" % (port, path)],
                                     capture_output=True, text=True, preexec_fn=nice_fn)
                cpu = proc_cpu(pid) - c0
                lat = []
                with open(log) as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) >= 3 and parts[1] == "200":
                            lat.append(int(parts[2]) / 1000.0)
                os.unlink(bf.name)
                os.unlink(log)
                if out.returncode != 0 or not lat:
                    sys.exit("h2load failed: %s %s" % (out.stdout[-500:], out.stderr[-500:]))
                lat.sort()
                q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
                fin = [l for l in out.stdout.splitlines() if l.startswith("finished in")]
                reached = float(fin[0].split(",")[1].split()[0]) if fin else float("nan")
                return [reached, q(0.5), q(0.99), q(0.999), lat[-1], cpu * 1e6 / len(lat)]
            print()
            print("constant rate: h2load, %d QPS as 4 connections x 1 call in flight x --rps %d, %d calls "
                  "(latency from its own send; the gRPC status is not read, HTTP 200 counted), %d interleaved runs"
                  % (a.rate, max(1, a.rate // 4), nfix, a.reps))
            print("%-20s %9s %8s %8s %8s %8s %9s" % ("call", "reached", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                                                    "srv us/c"))
            interleaved(cases, a.reps, lambda c: h2_run(c[1], c[3], c[4], c[2]), "%-20s %9.0f %8.3f %8.3f %8.3f %8.2f %9.1f")
        else:
            print("(h2load not installed: apt-get install nghttp2-client for the light-client constant-rate part)")
        if use_ghz:
            print()
            print("constant rate: ghz --rps %d, %d calls, -c 50, 4 connections (latency from ghz's own send: "
                  "its lateness is not counted), %d interleaved runs" % (a.rate, nfix, a.reps))
            print("%-20s %9s %8s %8s %9s %9s" % ("call", "reached", "p50 ms", "p99 ms", "srv us/c", "ghz us/c"))
            def ghz_case(c):
                _, port, pid, pr, body = c
                (qps, p50, p99), cpu, _ = measure(pid, lambda: ghz_run(ghz, "127.0.0.1:%d" % port, *pr, body,
                                                                      nfix, 50, rps=a.rate))
                return [qps, p50, p99, cpu * 1e6 / nfix, GHZ_CPU_US]
            interleaved((("features 1 entity", grpc_port, sl.pid, fs_proto, req1),
                         ("echo (same size)", echo_port, ec.pid, echo_proto, ed1)),
                        a.reps, ghz_case, "%-20s %9.0f %8.3f %8.3f %9.1f %9.1f")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
