#!/usr/bin/env python3
"""Hosted backfill: `sluice backfill` handed to a running `sluice run`, which
keeps serving during the whole backfill (real broker, real clients).

Stream: JSON events {user_id, amount, ts} produced with kcat (keyed by user,
so one user's events stay in order in one partition), event times strictly
increasing. Schema A has two views on the topic: user_totals (count, sum;
the "other" view) and big_spend (count of amount > 50). Schema B changes
big_spend: amount > 20, count + sum + max + a sliding 1d count. The oracles
are computed here from the generated events, independently of Sluice.

test_serving_goes_on: the node runs A and has ingested N1 events. Threads
look up big_spend and user_totals continuously with redis-py (HGETALL) and
grpcio (GetOnlineFeatures); the schema file is replaced by B and `sluice
backfill` is run (the node hosts it); N2 more events are produced meanwhile.
Asserts: no lookup failed or got a connection error; every big_spend answer
is wholly A's (fields of A, values = A's oracle at N1: the view is frozen)
or wholly B's (fields of B, values = B's oracle at some prefix of the user's
events), per client thread never A after B, only B after the command
exited; user_totals reached its oracle at N1+N2 while the backfill was still
running (the other view stays live); a request for another view meanwhile is
refused (one at a time); at the end both views equal the oracles at N1+N2.

test_kill9_resume_and_since: Ctrl-C of `sluice backfill` detaches it (exit
130) and the node goes on; the same command follows the running backfill.
The node is killed with SIGKILL in the middle
of a hosted backfill (with commits every 200 ms, after progress) and
restarted: it resumes the backfill itself; `sluice backfill` follows it;
big_spend then equals B's oracle exactly (exactly once). Then `--force
--from T` (T between two produced batches) rebuilds big_spend from the
second batch only: values = B's oracle over that batch, the sliding feature
answers partial_window and the lifetime ones present (view.<name>.since_ms);
a rebuild from the earliest offset makes it complete again. A request for
an up-to-date view exits 4, one for an unknown view 1, both with messages.

usage: test_hosted_backfill.py --sluice BIN --topic-create BIN --bootstrap-file F --work DIR
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import sluice_proc  # noqa: E402  (tests/pylib: reserved ports, --ports-file)

import grpc
import redis
from sluice.v1 import feature_service_pb2 as pb
from sluice.v1 import feature_service_pb2_grpc as pbg

ARGS = None
N_USERS = 200
OLD_FIELDS = {"n_big"}
NEW_FIELDS = {"n_big", "sum_big", "max_big", "n_big_1d"}

SCHEMA_HEAD = """version: 1
entities:
  - name: user
    keys: [user_id]
    key_type: string
sources:
  - name: events
    topic: %s
    format: json
    fields: {user_id: string, amount: int, ts: int}
    event_time: {field: ts, format: epoch_ms}
    watermark_delay: 1s
    allowed_lateness: 1h
feature_views:
  - name: user_totals
    entity: user
    source: events
    features:
      - {name: n, aggregate: count, window: lifetime}
      - {name: total, aggregate: sum, field: amount, window: lifetime}
"""
BIG_A = """  - name: big_spend
    entity: user
    source: events
    filter: {field: amount, op: gt, value: 50}
    features:
      - {name: n_big, aggregate: count, window: lifetime}
"""
BIG_B = """  - name: big_spend
    entity: user
    source: events
    filter: {field: amount, op: gt, value: 20}
    features:
      - {name: n_big, aggregate: count, window: lifetime}
      - {name: sum_big, aggregate: sum, field: amount, window: lifetime}
      - {name: max_big, aggregate: max, field: amount, window: lifetime}
      - {name: n_big_1d, aggregate: count, window: {sliding: 1d, hop: 1h}}
"""


LONG_STATE = "state-" + "x" * 100

def eventually(check, timeout=60):
    """Calls check() until it passes (no AssertionError / KeyError) or
    timeout seconds went by (then its last error is raised): for states the
    node reaches by itself a moment later, instead of a fixed sleep."""
    deadline = time.time() + timeout
    while True:
        try:
            return check()
        except (AssertionError, KeyError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def wait_answers(lookers, after=0.0, timeout=60):
    """Until every looker has an answer to a request it started after
    `after` (a time.time()), up to timeout seconds."""
    deadline = time.time() + timeout
    while not all(any(a[0] > after for a in lk.answers[-50:]) for lk in lookers):
        if time.time() > deadline:
            raise AssertionError("lookers without an answer after %.1f: %r"
                                 % (after, [(lk.fn, len(lk.answers), lk.errors[:1]) for lk in lookers]))
        time.sleep(0.05)


class Stream:
    """Generated events, in production order, and the oracles."""

    def __init__(self, seed):
        self.rnd = random.Random(seed)
        self.events = []
        self.ts = int(time.time() * 1000) - 600_000

    def gen(self, n):
        out = []
        for _ in range(n):
            self.ts += 1
            out.append(("u%d" % self.rnd.randrange(N_USERS), self.rnd.randint(1, 100), self.ts))
        self.events.extend(out)
        return out

    @staticmethod
    def totals(evs):
        o = {}
        for u, a, _ in evs:
            n, t = o.get(u, (0, 0))
            o[u] = (n + 1, t + a)
        return o

    @staticmethod
    def old(evs):
        o = {}
        for u, a, _ in evs:
            if a > 50:
                o[u] = o.get(u, 0) + 1
        return o

    @staticmethod
    def new(evs):
        o = {}
        for u, a, _ in evs:
            if a > 20:
                n, s, m = o.get(u, (0, 0, 0))
                o[u] = (n + 1, s + a, max(m, a))
        return o

    @staticmethod
    def new_prefixes(evs):
        """Per user, every state B's view can have after a prefix of the user's events."""
        o = {}
        cur = {}
        for u, a, _ in evs:
            o.setdefault(u, {None})
            if a > 20:
                n, s, m = cur.get(u, (0, 0, 0))
                cur[u] = (n + 1, s + a, max(m, a))
                o[u].add(cur[u])
        return o


def produce(boot, topic, evs):
    lines = "".join('%s|{"user_id":"%s","amount":%d,"ts":%d}\n' % (u, u, a, t) for u, a, t in evs)
    r = subprocess.run(["kcat", "-P", "-b", boot, "-t", topic, "-K", "|", "-X", "enable.idempotence=true"],
                       input=lines.encode(), capture_output=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("kcat: %s" % r.stderr.decode())


class Node:
    def __init__(self, name, boot):
        self.dir = os.path.join(ARGS.work, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.boot = boot
        self.topic = "hosted-%s-%d-%d" % (name, os.getpid(), int(time.time() * 1000))
        r = subprocess.run([ARGS.topic_create, boot, self.topic, "3"], capture_output=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.decode())
        self.schema = os.path.join(self.dir, "schema.yaml")
        self.config = os.path.join(self.dir, "sluice.yaml")
        # reserved for the node's life, restarts included (tests/pylib/sluice_proc.py)
        self.ports = sluice_proc.reserve_ports(3)
        self.resp_port, self.grpc_port, self.metrics_port = self.ports.ports
        with open(self.config, "w") as f:
            # a state dir longer than a Unix socket path (108 bytes): the
            # control socket must still be reachable
            f.write("brokers: %s\ngroup_id: g-%s\nstate_dir: %s/%s\nschemas: [%s]\n"
                    "resp_port: %d\ngrpc_port: %d\nmetrics_port: %d\ncommit_interval: 100ms\nserve_threads: 2\n"
                    "log_level: info\n"
                    # a killed node must not hold the consumer group for 45 s
                    "kafka:\n  session.timeout.ms: 6000\n  heartbeat.interval.ms: 1000\n" % (boot, self.topic, self.dir, LONG_STATE, self.schema, self.resp_port,
                                           self.grpc_port, self.metrics_port))
        self.set_schema(BIG_A)
        self.proc = None
        self.log = None

    def set_schema(self, big):
        tmp = self.schema + ".tmp"
        with open(tmp, "w") as f:
            f.write(SCHEMA_HEAD % self.topic + big)
        os.replace(tmp, self.schema)

    def start(self, delay_us, crash=None):
        env = dict(os.environ, SLUICE_TEST_BACKFILL_DELAY_US=str(delay_us))
        env.pop("SLUICE_TEST_CRASH", None)
        if crash:
            env["SLUICE_TEST_CRASH"] = crash
        log_path = os.path.join(self.dir, "node.log")
        self.log = open(log_path, "ab")
        self.proc, _ = sluice_proc.start(
            [ARGS.sluice, "run", "-c", self.config], os.path.join(self.dir, "node.ports"), log=log_path,
            want={"resp": self.resp_port, "grpc": self.grpc_port, "metrics": self.metrics_port},
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
        if self.proc:
            self.proc.wait(timeout=60)
        if self.log:
            self.log.close()
            self.log = None
        return self.proc.returncode if self.proc else None

    def client(self):
        return redis.Redis(port=self.resp_port, decode_responses=True, socket_timeout=10)

    def metric(self, name):
        """An unlabelled metric of the node's Prometheus endpoint."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as f:
            for line in f.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def wait_offsets(self, n, timeout=60):
        """Until the committed next offsets of the topic (INFO, read with redis-cli) sum to n."""
        deadline = time.time() + timeout
        tot = -1
        while time.time() < deadline:
            text = subprocess.run(["redis-cli", "-p", str(self.resp_port), "INFO"], capture_output=True,
                                  text=True, timeout=10).stdout
            pat = r"partition_%s_\d+:next_offset=(\d+)" % re.escape(self.topic)
            tot = sum(int(m) for m in re.findall(pat, text))
            if tot >= n:
                return
            time.sleep(0.1)
        raise AssertionError("node did not reach offset %d (at %d)" % (n, tot))

    def backfill(self, *extra, wait=True):
        cmd = [ARGS.sluice, "backfill", "-c", self.config, "--view", "big_spend"] + list(extra)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not wait:
            return p
        out, _ = p.communicate(timeout=300)
        return p.returncode, out


def hgetall(r, view, u):
    return r.execute_command("HGETALL", "%s:%s" % (view, u))


def as_dict(x):
    if isinstance(x, dict):
        return x
    return dict(zip(x[0::2], x[1::2]))


def num(v):
    return float(v)


def classify_big(d, old_oracle, prefixes, u):
    """'A', 'B', or raises. d: field -> value of one answer."""
    if not d:
        # no state: A when A's oracle has none, B when B's can be empty
        if old_oracle.get(u, 0) == 0:
            return "empty"
        if None in prefixes.get(u, {None}):
            return "B"
        raise AssertionError("user %s: empty answer fits no oracle" % u)
    keys = set(d)
    if keys == OLD_FIELDS:
        if num(d["n_big"]) != old_oracle.get(u, 0):
            raise AssertionError("user %s: A-shaped answer %r != A oracle %r" % (u, d, old_oracle.get(u)))
        return "A"
    if keys == NEW_FIELDS:
        st = (int(num(d["n_big"])), int(num(d["sum_big"])), int(num(d["max_big"])))
        if st not in prefixes.get(u, set()) or num(d["n_big_1d"]) != st[0]:
            raise AssertionError("user %s: B-shaped answer %r is no prefix of B's oracle" % (u, d))
        return "B"
    raise AssertionError("user %s: fields %r are neither A's nor B's (a mix)" % (u, sorted(keys)))


class Looker(threading.Thread):
    """Looks up continuously until stopped; records (t_start, kind, result)."""

    def __init__(self, node, fn):
        super().__init__(daemon=True)
        self.node, self.fn = node, fn
        self.stop_flag = threading.Event()
        self.answers, self.errors = [], []

    def run(self):
        i = 0
        state = self.node.client() if self.fn != "grpc" else None
        chan = grpc.insecure_channel("127.0.0.1:%d" % self.node.grpc_port) if self.fn == "grpc" else None
        stub = pbg.FeatureServiceStub(chan) if chan else None
        while not self.stop_flag.is_set():
            u = "u%d" % (i % N_USERS)
            i += 7
            t0 = time.time()
            try:
                if self.fn == "grpc":
                    us = ["u%d" % ((i + k) % N_USERS) for k in range(4)]
                    resp = stub.GetOnlineFeatures(pb.GetOnlineFeaturesRequest(
                        feature_refs=pb.FeatureRefList(refs=["big_spend:*", "user_totals:*"]),
                        entities=[pb.EntityRow(keys={"user_id": x}) for x in us]), timeout=10)
                    self.answers.append((t0, us, list(resp.feature_names), resp.results))
                else:
                    self.answers.append((t0, u, as_dict(hgetall(state, self.fn, u))))
            except Exception as e:    # any failure counts: connection errors included
                self.errors.append((t0, repr(e)))
        if chan:
            chan.close()


def grpc_answers_to_dicts(a):
    """(t0, users, names, results) -> [(user, {field: value} of big_spend)]."""
    t0, us, names, results = a
    out = []
    for u, fv in zip(us, results):
        d = {}
        for name, v in zip(names, fv.values):
            view, feat = name.split(":", 1)
            if view != "big_spend" or v.status == pb.NOT_FOUND:
                continue
            which = v.value.WhichOneof("kind")
            d[feat] = getattr(v.value, which) if which else 0
        out.append((u, d))
    return out


class HostedBackfill(unittest.TestCase):
    def setUp(self):
        self.boot = open(ARGS.bootstrap_file).read().strip()
        self.nodes = []

    def tearDown(self):
        for n in self.nodes:
            n.stop(signal.SIGKILL)
            n.ports.close()

    def check_views(self, node, evs):
        r = node.client()
        tot, new = Stream.totals(evs), Stream.new(evs)
        for i in range(N_USERS):
            u = "u%d" % i
            d = as_dict(hgetall(r, "user_totals", u))
            want = tot.get(u)
            self.assertEqual((int(num(d["n"])), int(num(d["total"]))) if d else None, want, u)
            d = as_dict(hgetall(r, "big_spend", u))
            want = new.get(u)
            got = (int(num(d["n_big"])), int(num(d["sum_big"])), int(num(d["max_big"]))) if d else None
            self.assertEqual(got, want, "big_spend " + u)
            if d:
                self.assertEqual(int(num(d["n_big_1d"])), want[0])

    def test_serving_goes_on(self):
        s = Stream(1)
        node = Node("serve", self.boot)
        self.nodes.append(node)
        n1, n2 = 20000, 3000
        produce(self.boot, node.topic, s.gen(n1))
        node.start(delay_us=250)
        node.wait_offsets(n1)
        old_oracle = Stream.old(s.events)
        r = node.client()
        for i in range(N_USERS):
            u = "u%d" % i
            d = as_dict(hgetall(r, "big_spend", u))
            self.assertEqual(int(num(d["n_big"])) if d else 0, old_oracle.get(u, 0), u)
        lookers = [Looker(node, "big_spend"), Looker(node, "big_spend"), Looker(node, "user_totals"),
                   Looker(node, "grpc")]
        for lk in lookers:
            lk.start()
        wait_answers(lookers)                    # every looker has answers on A before the switch
        node.set_schema(BIG_B)
        t_cmd = time.time()
        p = node.backfill(wait=False)
        lines = []
        hosted = threading.Event()

        def reader():
            for line in p.stdout:
                lines.append(line)
                if "hosts the backfill" in line:
                    hosted.set()
        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        self.assertTrue(hosted.wait(120), "".join(lines))
        # one at a time: another view's request is refused while this one runs
        r2 = subprocess.run([ARGS.sluice, "backfill", "-c", node.config, "--view", "user_totals"],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(r2.returncode, 1, r2.stderr)
        self.assertIn("already running", r2.stderr)
        batch2 = s.gen(n2)
        produce(self.boot, node.topic, batch2)
        # the other view catches up with batch 2 while the backfill still runs
        tot_all = Stream.totals(s.events)
        fresh_at = None
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None:
            ok = all(as_dict(hgetall(r, "user_totals", "u%d" % i)).get("n") == str(tot_all["u%d" % i][0])
                     for i in range(0, N_USERS, 10) if "u%d" % i in tot_all)
            if ok:
                fresh_at = time.time()
                break
            time.sleep(0.05)
        rc = p.wait(timeout=300)
        t_exit = time.time()
        rt.join(5)
        out = "".join(lines)
        sys.stderr.write(out)
        self.assertEqual(rc, 0, out)
        self.assertIn("now serves version 2", out)
        self.assertIsNotNone(fresh_at, "user_totals did not catch up while the backfill ran:\n" + out)
        wait_answers(lookers, after=t_exit)      # every looker has answers after the exit (all B)
        for lk in lookers:
            lk.stop_flag.set()
        for lk in lookers:
            lk.join(30)
        # no failed lookup, of any kind
        for lk in lookers:
            self.assertEqual(lk.errors, [], "%s: %d errors, first %r" % (lk.fn, len(lk.errors), lk.errors[:3]))
        # big_spend: wholly A (frozen at N1) or wholly B (a prefix), A never after B, B after exit
        prefixes = Stream.new_prefixes(s.events)
        counts = {"A": 0, "B": 0, "empty": 0}
        for lk in lookers:
            if lk.fn == "user_totals":
                continue
            seen_b = False
            rows = []
            for a in lk.answers:
                if lk.fn == "grpc":
                    rows.extend((a[0], u, d) for u, d in grpc_answers_to_dicts(a))
                else:
                    rows.append(a)
            for t0, u, d in rows:
                k = classify_big(d, old_oracle, prefixes, u)
                counts[k] += 1
                if k == "B":
                    seen_b = True
                if k == "A":
                    self.assertFalse(seen_b, "%s: an A answer after a B answer" % lk.fn)
                    self.assertLess(t0, t_exit, "%s: an A answer after the command exited" % lk.fn)
        total = sum(len(lk.answers) for lk in lookers)
        sys.stderr.write("lookups during the run: %d (A %d, B %d, empty %d), errors 0; backfill %.1fs, "
                         "user_totals fresh after %.1fs\n" % (total, counts["A"], counts["B"], counts["empty"],
                                                            t_exit - t_cmd, fresh_at - t_cmd))
        self.assertGreater(counts["A"], 0)
        self.assertGreater(counts["B"], 0)
        node.wait_offsets(n1 + n2)
        # the metrics follow the worker the node restarted after the cut-over
        m0 = node.metric("sluice_ingest_messages_total")
        n3 = 500
        produce(self.boot, node.topic, s.gen(n3))
        node.wait_offsets(n1 + n2 + n3)
        m1 = node.metric("sluice_ingest_messages_total")
        self.assertGreaterEqual(m1 - m0, n3, "ingest metrics frozen after the backfill (%s -> %s)" % (m0, m1))
        self.check_views(node, s.events)
        self.assertEqual(node.stop(), 0)

    def test_new_view_added(self):
        """A view ADDED to the schema of a running node (big_spend, absent
        from A): ingest refuses it (it would start mid-stream), the node
        hosts its backfill while more events arrive and user_totals stays
        live, and afterwards both views equal their oracles over RESP,
        exactly once; a second backfill finds nothing to do."""
        s = Stream(4)
        node = Node("added", self.boot)
        self.nodes.append(node)
        node.set_schema("")                     # A: user_totals only
        produce(self.boot, node.topic, s.gen(8000))
        node.start(delay_us=100)
        node.wait_offsets(len(s.events))
        r = node.client()
        self.assertRaises(redis.exceptions.ResponseError, hgetall, r, "big_spend", "u1")
        node.set_schema(BIG_B)                  # B: + big_spend, new on a consumed topic
        out = subprocess.run([ARGS.sluice, "check", "-c", node.config], capture_output=True, text=True,
                             timeout=60).stdout
        self.assertRegex(out, r"big_spend .*NEEDS BACKFILL: new view on a topic already consumed")
        self.assertIn("sluice backfill -c %s --view big_spend" % node.config, out)
        p = node.backfill(wait=False)
        produce(self.boot, node.topic, s.gen(1500))   # while it replays
        out, _ = p.communicate(timeout=300)
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("now serves version", out)
        produce(self.boot, node.topic, s.gen(500))    # after: the live worker on B takes them
        node.wait_offsets(len(s.events))
        deadline = time.time() + 60
        while True:
            try:
                self.check_views(node, s.events)
                break
            except (AssertionError, KeyError):
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        rc, out = node.backfill()
        self.assertEqual(rc, 4, out)            # up to date
        self.assertEqual(node.stop(), 0)

    def test_kill9_resume_and_since(self):
        s = Stream(2)
        node = Node("kill", self.boot)
        self.nodes.append(node)
        n1, n2 = 15000, 2000
        produce(self.boot, node.topic, s.gen(n1))
        # 1 ms per replayed message: the backfill takes >= 15 s, so that the
        # follower command (started after a detach, slowly on a loaded
        # machine) sees it between 15 % and 60 % and the kill lands >= 6 s
        # before its end (300 us once left ~0.15 s between the 90 % line and
        # the end)
        node.start(delay_us=1000)
        node.wait_offsets(n1)
        node.set_schema(BIG_B)
        # Ctrl-C of the command detaches it (130); the node goes on
        p0 = node.backfill("--commit-interval", "200ms", wait=False)
        first = p0.stdout.readline()
        self.assertIn("hosts the backfill", first)
        p0.send_signal(signal.SIGINT)
        out0 = first + p0.communicate(timeout=30)[0]
        self.assertEqual(p0.returncode, 130, out0)
        self.assertIn("detached", out0)
        # the same command follows the running backfill
        p = node.backfill(wait=False)
        lines = []
        progressed = threading.Event()

        def reader():
            for line in p.stdout:
                lines.append(line)
                m = re.search(r"backfill big_spend: ([\d.]+)%", line)
                if m and 15.0 <= float(m.group(1)) < 60.0:
                    progressed.set()
        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        self.assertTrue(progressed.wait(120), "".join(lines))
        self.assertIn("following it", "".join(lines))
        time.sleep(0.3)
        node.stop(signal.SIGKILL)
        rc = p.wait(timeout=30)
        rt.join(5)
        self.assertNotEqual(rc, 0, "".join(lines))
        self.assertIn("went away", "".join(lines))
        # restart: the node resumes by itself; the command follows it (or finds it done)
        node.start(delay_us=1000)                # >= 40 % left: >= 6 s before the cut-over
        # until the cut-over the view answers from its current version with the
        # definition that version was built with (stored before the backfill
        # began: the schema files hold B now), as before the kill; then B
        r = node.client()
        old_oracle = Stream.old(s.events)        # every event so far was ingested before the backfill
        prefixes = Stream.new_prefixes(s.events)
        kinds = [classify_big(as_dict(hgetall(r, "big_spend", "u%d" % i)), old_oracle, prefixes, "u%d" % i)
                 for i in range(N_USERS)]
        self.assertIn(kinds[0], ("A", "empty"), "the first lookup after the restart: %s" % kinds[:5])
        rc, out = node.backfill()
        sys.stderr.write(out)
        self.assertIn(rc, (0, 4), out)
        if rc == 0:
            self.assertIn("resumed", out)
        time.sleep(0.3)
        t_mid = int(time.time() * 1000)
        time.sleep(0.3)
        batch2 = s.gen(n2)
        produce(self.boot, node.topic, batch2)
        node.wait_offsets(n1 + n2)
        self.check_views(node, s.events)          # exactly once across the kill
        # --from T: only batch 2, the sliding feature partial, lifetime ones present
        rc, out = node.backfill("--force", "--from", str(t_mid))
        self.assertEqual(rc, 0, out)
        r = node.client()
        new2 = Stream.new(batch2)

        def only_batch2():
            for i in range(N_USERS):
                u = "u%d" % i
                d = as_dict(hgetall(r, "big_spend", u))
                got = (int(num(d["n_big"])), int(num(d["sum_big"])), int(num(d["max_big"]))) if d else None
                self.assertEqual(got, new2.get(u), u)
                if d:
                    meta = {m[0]: m[1] for m in r.execute_command("FEATURES.META", "big_spend:" + u)}
                    self.assertEqual(meta["n_big_1d"], "partial_window", u)
                    self.assertEqual(meta["n_big"], "present", u)
        # coverage entries are re-read once a second: polled (up to 60 s)
        # instead of a fixed 1.2 s sleep
        eventually(only_batch2)
        # from the earliest offset: complete again
        rc, out = node.backfill("--force")
        self.assertEqual(rc, 0, out)
        self.check_views(node, s.events)
        u = next(u for u in ("u%d" % i for i in range(N_USERS)) if u in Stream.new(s.events))

        def complete_again():
            meta = {m[0]: m[1] for m in r.execute_command("FEATURES.META", "big_spend:" + u)}
            self.assertEqual(meta["n_big_1d"], "present")
        eventually(complete_again)
        # a second request while none runs and nothing changed: up to date, non-zero
        rc, out = node.backfill()
        self.assertEqual(rc, 4, out)
        self.assertIn("up to date", out)
        # an unknown view: a clear refusal from the node, non-zero
        r2 = subprocess.run([ARGS.sluice, "backfill", "-c", node.config, "--view", "nope"],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(r2.returncode, 1, r2.stderr)
        self.assertIn("no feature view 'nope'", r2.stderr)
        self.assertEqual(node.stop(), 0)


class HostedCrashPoints(unittest.TestCase):
    """The node killed at each crash point of the cut-over (C1: after the final
    batch, C2: after the switch was recorded, C3: after the switch), events
    produced while it is down, restarted: it finishes the backfill itself and
    both views equal the oracles (exactly once)."""

    def test_crash_points_resume(self):
        boot = open(ARGS.bootstrap_file).read().strip()
        s = Stream(3)
        node = Node("points", boot)
        try:
            produce(boot, node.topic, s.gen(6000))
            for i, point in enumerate(("C1", "C2", "C3")):
                if i:
                    node.stop()
                node.start(delay_us=0, crash=point)
                node.wait_offsets(len(s.events))
                node.set_schema(BIG_B)           # A the first time, then B already
                rc, out = node.backfill(*(["--force"] if i else []))
                self.assertNotEqual(rc, 0, out)
                self.assertIn("went away", out)
                self.assertEqual(node.stop(), -signal.SIGKILL, point)
                produce(boot, node.topic, s.gen(500))
                node.start(delay_us=0)
                node.wait_offsets(len(s.events))
                deadline = time.time() + 60
                while True:                      # until the resumed cut-over and live ingest are done
                    try:
                        HostedBackfill.check_views(self, node, s.events)
                        break
                    except (AssertionError, redis.exceptions.ResponseError, KeyError):
                        if time.time() > deadline:
                            raise
                        time.sleep(0.2)
                log = open(os.path.join(node.dir, "node.log"), errors="replace").read()
                self.assertIn("SLUICE_TEST_CRASH=%s" % point, log)
            rc, out = node.backfill()
            self.assertEqual(rc, 4, out)             # up to date: nothing pending is left
            self.assertEqual(node.stop(), 0)
        finally:
            node.stop(signal.SIGKILL)
            node.ports.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--topic-create", required=True)
    ap.add_argument("--bootstrap-file", default=os.environ.get("SLUICE_TEST_BOOTSTRAP_FILE"))
    ap.add_argument("--work", required=True)
    ARGS, rest = ap.parse_known_args()
    os.makedirs(ARGS.work, exist_ok=True)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
