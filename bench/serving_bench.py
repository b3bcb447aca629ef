#!/usr/bin/env python3
"""Serving benchmark: Sluice beside its peers, measured in the same run.

RESP: redis-benchmark HGETALL of a 10-feature vector (random entity of N)
against `sluice serve` and against redis-server holding the same vectors as
hashes, 50 clients, without and with -P 16; throughput, p50/p99, server CPU
time per request and read+write syscalls per request (/proc/PID/io).

gRPC: GetOnlineFeatures for 1 and 100 entities against the echo service on
the same gRPC core (bench_grpc_echo), with ghz when it is installed (else a
multi-process grpcio load generator): QPS, p50, p99; and a fixed 10 000 QPS
run for the 1-entity p99 target.

usage: serving_bench.py --build DIR [--entities N] [--requests N] [--quick]
"""
import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def redis_benchmark(port, n, pipeline, nkeys):
    cmd = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-P", str(pipeline),
           "-r", str(nkeys), "--csv", "HGETALL", "user_stats:u__rand_int__"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    hdr, row = rows[0], rows[-1]
    d = dict(zip(hdr, row))
    return float(d["rps"]), float(d["p50_latency_ms"]), float(d["p99_latency_ms"])


def measure(pid, fn):
    c0, s0 = proc_cpu(pid), proc_syscalls(pid)
    r = fn()
    return r, proc_cpu(pid) - c0, proc_syscalls(pid) - s0


# ---- gRPC load ------------------------------------------------------------------

def ghz_run(ghz, target, proto, import_path, call, data, n, conc, rps=None):
    cmd = [ghz, "--insecure", "--proto", proto, "--import-paths", import_path, "--call", call,
           "-d", json.dumps(data), "-n", str(n), "-c", str(conc), "--connections", "4",
           "-O", "json", "--skipFirst", str(min(1000, n // 10))]
    if rps:
        cmd += ["--rps", str(rps)]
    out = subprocess.run(cmd + [target], capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit("ghz failed: " + out.stderr)
    r = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in r.get("latencyDistribution") or []}
    codes = r.get("statusCodeDistribution", {})
    ok = codes.get("OK", 0)
    if ok < sum(codes.values()):
        sys.exit("gRPC errors in the benchmark: %r %r" % (codes, r.get("errorDistribution")))
    return r["rps"], lat.get(50, float("nan")), lat.get(99, float("nan"))


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
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.entities, a.requests = 1000, 20000
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
                               "--set", "serve_threads=2", "--set", "max_clients=4096"],
                              stderr=subprocess.DEVNULL)
        procs.append(sl)
        rd = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                               "--bind", "127.0.0.1", "--dir", work], stdout=subprocess.DEVNULL)
        procs.append(rd)
        ec = subprocess.Popen([echo, str(echo_port), "2"], stderr=subprocess.DEVNULL)
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

        print("RESP: redis-benchmark HGETALL of a 10-feature vector, %d random entities, 50 clients, %d requests"
              % (a.entities, a.requests))
        print("%-8s %-14s %12s %9s %9s %12s %12s" % ("pipeline", "server", "req/s", "p50 ms", "p99 ms",
                                                      "CPU us/req", "rw sysc/req"))
        for pipeline in (1, 16):
            results = {}
            for rep in range(2):                           # interleaved, best of two
                for name, port, pid in (("redis-server", redis_port, rd.pid), ("sluice", resp_port, sl.pid)):
                    (rps, p50, p99), cpu, sysc = measure(pid, lambda: redis_benchmark(port, a.requests, pipeline, a.entities))
                    row = (rps, p50, p99, cpu * 1e6 / a.requests, sysc / a.requests)
                    if name not in results or rps > results[name][0]:
                        results[name] = row
            for name in ("redis-server", "sluice"):
                rps, p50, p99, cpu, sysc = results[name]
                print("%-8d %-14s %12.0f %9.3f %9.3f %12.2f %12.3f" % (pipeline, name, rps, p50, p99, cpu, sysc))
            print("%-8d %-14s %11.2fx %9s %9s" % (pipeline, "ratio", results["sluice"][0] / results["redis-server"][0], "", ""))

        # gRPC
        ghz = shutil.which("ghz") or os.path.expanduser("~/go/bin/ghz")
        use_ghz = os.path.exists(ghz)
        print()
        print("gRPC: GetOnlineFeatures vs echo on the same gRPC core (load: %s)" % ("ghz" if use_ghz else "python grpcio, 4 processes"))
        print("%-22s %12s %9s %9s" % ("call", "QPS", "p50 ms", "p99 ms"))
        n = a.requests // 4
        sys.path.insert(0, os.path.join(a.build, "serving-py"))
        from sluice.v1 import feature_service_pb2 as pb
        for n_ent in (1, 100):
            ents = [{"keys": {"user_id": "u%012d" % rnd.randrange(a.entities)}} for _ in range(n_ent)]
            data = {"feature_service": "user_model", "entities": ents}
            if use_ghz:
                fs = ghz_run(ghz, "127.0.0.1:%d" % grpc_port, os.path.join(ROOT, "proto", "sluice", "v1", "feature_service.proto"),
                             os.path.join(ROOT, "proto"), "sluice.v1.FeatureService.GetOnlineFeatures", data, n, 50)
                size = len(pb.GetOnlineFeaturesRequest(feature_service="user_model",
                            entities=[pb.EntityRow(keys=e["keys"]) for e in ents]).SerializeToString())
                import base64
                ed = {"payload": base64.b64encode(b"x" * size).decode()}
                ee = ghz_run(ghz, "127.0.0.1:%d" % echo_port, os.path.join(ROOT, "bench", "echo.proto"),
                             os.path.join(ROOT, "bench"), "sluice.bench.Echo.Echo", ed, n, 50)
            else:
                req = pb.GetOnlineFeaturesRequest(feature_service="user_model",
                                                  entities=[pb.EntityRow(keys=e["keys"]) for e in ents]).SerializeToString()
                fs = py_grpc_run("127.0.0.1:%d" % grpc_port, "/sluice.v1.FeatureService/GetOnlineFeatures", req, n, 48)
                ee = py_grpc_run("127.0.0.1:%d" % echo_port, "/sluice.bench.Echo/Echo", b"\x0a" + bytes([len(req) % 128]) + b"x" * (len(req) % 128), n, 48)
            print("%-22s %12.0f %9.3f %9.3f" % ("features %d entit%s" % (n_ent, "y" if n_ent == 1 else "ies"), *fs))
            print("%-22s %12.0f %9.3f %9.3f" % ("echo (same size)", *ee))
            print("%-22s %11.2fx" % ("ratio", fs[0] / ee[0]))
        if use_ghz:
            data = {"feature_service": "user_model", "entities": [{"keys": {"user_id": "u%012d" % 7}}]}
            fixed = ghz_run(ghz, "127.0.0.1:%d" % grpc_port, os.path.join(ROOT, "proto", "sluice", "v1", "feature_service.proto"),
                            os.path.join(ROOT, "proto"), "sluice.v1.FeatureService.GetOnlineFeatures", data,
                            50000 if not a.quick else 10000, 20, rps=10000)
            print("%-22s %12.0f %9.3f %9.3f   (target p99 < 1 ms)" % ("1 entity @10k QPS", *fixed))
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
