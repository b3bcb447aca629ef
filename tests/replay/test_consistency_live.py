#!/usr/bin/env python3
"""Online/offline consistency over the wire, during a live run.

A `sluice run` node (the card_fraud example: 3 views, 18 features of every
kind) ingests a stream produced in real time (`sluice generate --rate`, event
times = wall time, with the generator's out-of-order, late and bad events).
After each of three bursts, once the node has committed every message, the
test asks the node's gRPC server for fraud_model_v1 (11 features over card
and merchant views) for 40 cards and their merchants, and records each
answer with the time it was evaluated at (served_at_ms) and its consistency
token (which must cover every message produced: the state was exactly that).
The node keeps running. Then `sluice training-set` (a separate process on the
same topic) gets one label row per recorded (card, merchant, served_at_ms),
and every cell must equal what the server returned: exactly for integers,
strings and lists, within 1e-9 relative for doubles (sums and sketches folded
in another order or merged across partitions); nil where serving said
NOT_FOUND or OUTSIDE_TTL. All events precede the query times, so no window
precision slack applies (docs/backfill.md, "Window precision").

Late arrivals. Training-set as of t counts every accepted event with time
<= t, also one that arrived AFTER t (out of order, within the lateness);
the server at t had not seen it. So the comparison is exact at t when no
later message carries a time <= t: burst 1 has the generator's out-of-order
and late events (judged alike online and offline), bursts 2 and 3 none, so
nothing produced after a query predates it.

usage: test_consistency_live.py --sluice BIN --schema card_fraud.yaml --work DIR
"""
import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import sluice_proc  # noqa: E402  (tests/pylib: reserved ports, --ports-file)

import grpc
from sluice.v1 import feature_service_pb2 as pb
from sluice.v1 import feature_service_pb2_grpc as pbg

ARGS = None
BURST_EVENTS = 6000
RATE = 3000           # events/s of wall time, event time = production time
N_CARDS = 40


def metric_sum(port, prefix):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(prefix))


def cell_of(fv):
    """What training-set writes for a served FeatureValue: None = empty cell."""
    if fv.status in (pb.NOT_FOUND, pb.OUTSIDE_TTL):
        return None
    v = fv.value
    kind = v.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "list_value":
        return [getattr(i, i.WhichOneof("kind")) if i.WhichOneof("kind") else None for i in v.list_value.items]
    return getattr(v, kind)


def same_value(a, b):
    """A served scalar a against a parsed training-set scalar b."""
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return a == b


def same(served, text):
    """Served value against a training-set cell (text)."""
    if served is None:
        return text == ""
    if isinstance(served, list):
        try:
            got = json.loads(text)
        except ValueError:
            return False
        return isinstance(got, list) and len(got) == len(served) and all(map(same_value, served, got))
    if isinstance(served, int):
        return text == str(served)
    if isinstance(served, float):
        try:
            return same_value(served, float(text))
        except ValueError:
            return False
    return served == text


class LiveConsistency(unittest.TestCase):
    def test_served_equals_training_set(self):
        boot = open(ARGS.bootstrap_file).read().strip()
        work = ARGS.work
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        topic = "consistency-live-%d-%d" % (os.getpid(), int(time.time() * 1000))
        with open(ARGS.schema) as f:
            text = f.read().replace("topic: payments", "topic: " + topic)
        schema = os.path.join(work, "schema.yaml")
        with open(schema, "w") as f:
            f.write(text)
        ports = sluice_proc.reserve_ports(2)         # held until the node is gone
        grpc_port, metrics_port = ports.ports
        config = os.path.join(work, "sluice.yaml")
        with open(config, "w") as f:
            f.write("schemas: [schema.yaml]\nbrokers: \"%s\"\ngroup_id: g-%s\nstate_dir: %s/state\n"
                    "resp_port: 0\ngrpc_port: %d\nmetrics_port: %d\ncommit_interval: 100ms\nlog_level: info\n"
                    % (boot, topic, work, grpc_port, metrics_port))
        # the topic first (4 partitions), then the node
        t0 = int(time.time() * 1000)
        gen = [ARGS.sluice, "generate", "--schema", schema, "--source", "payments", "--brokers", boot,
               "--partitions", "4", "--entities", "300", "--quiet"]
        subprocess.run(gen + ["--events", "200", "--seed", "100", "--start-time", str(t0 - 60000),
                              "--spacing-us", "1000"], check=True, timeout=120)
        produced = 200
        log_path = os.path.join(work, "node.log")
        log = open(log_path, "wb")
        node, _ = sluice_proc.start([ARGS.sluice, "run", "-c", config], os.path.join(work, "node.ports"),
                                    want={"grpc": grpc_port, "metrics": metrics_port}, log=log_path,
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            channel = grpc.insecure_channel("127.0.0.1:%d" % grpc_port)
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pbg.FeatureServiceStub(channel)
            records = []          # (card, merchant, served_at_ms, [cells])
            names = None
            for burst in range(3):
                start = int(time.time() * 1000)
                clean = ["--ooo-share", "0", "--late-share", "0"] if burst > 0 else []
                subprocess.run(gen + clean + ["--events", str(BURST_EVENTS), "--seed", str(burst + 1),
                                              "--rate", str(RATE), "--start-time", str(start),
                                              "--spacing-us", str(1000000 // RATE)],
                               check=True, timeout=120)
                produced += BURST_EVENTS
                deadline = time.time() + 120           # a loaded machine
                while metric_sum(metrics_port, "sluice_partition_committed_offset") < produced:
                    self.assertLess(time.time(), deadline, "node did not commit %d messages" % produced)
                    time.sleep(0.1)
                time.sleep(0.05)
                req = pb.GetOnlineFeaturesRequest(feature_service="fraud_model_v1")
                for i in range(N_CARDS):
                    row = req.entities.add()
                    row.keys["card_id"] = "card-%06d" % (i + 1)
                    row.keys["merchant_id"] = "merchant-%06d" % (i + 1)
                resp = stub.GetOnlineFeatures(req, timeout=10)
                self.assertEqual(sum(p.next_offset for p in resp.token.partitions), produced,
                                 "the state served is exactly the messages produced")
                self.assertGreater(resp.served_at_ms, start + BURST_EVENTS * 1000 // RATE,
                                   "every event precedes the query time")
                names = list(resp.feature_names)
                for i, vec in enumerate(resp.results):
                    records.append(("card-%06d" % (i + 1), "merchant-%06d" % (i + 1), resp.served_at_ms,
                                    [cell_of(fv) for fv in vec.values]))
            self.assertIsNone(node.poll(), "the node is still running")

            labels = os.path.join(work, "labels.csv")
            out = os.path.join(work, "out.csv")
            with open(labels, "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["card_id", "merchant_id", "timestamp"])
                for card, merchant, ts, _ in records:
                    w.writerow([card, merchant, ts])
            r = subprocess.run([ARGS.sluice, "training-set", "-c", config, "--service", "fraud_model_v1",
                                "--labels", labels, "--out", out, "--quiet"], capture_output=True, text=True,
                               timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(out, newline="") as f:
                rows = list(csv.reader(f))
            header = rows[0]
            self.assertEqual(header[3:], [n.replace(":", ".") for n in names])
            cells = diff = present = 0
            for (card, merchant, ts, served), row in zip(records, rows[1:]):
                self.assertEqual(row[:3], [card, merchant, str(ts)])
                for c, s in enumerate(served):
                    cells += 1
                    present += s is not None
                    if not same(s, row[3 + c]):
                        diff += 1
                        if diff <= 10:
                            sys.stderr.write("%s/%s @%d %s: served %r, training-set %r\n"
                                             % (card, merchant, ts, names[c], s, row[3 + c]))
            self.assertEqual(len(rows) - 1, len(records))
            sys.stderr.write("compared %d cells (%d with a value) over %d (entity, time) pairs\n"
                             % (cells, present, len(records)))
            self.assertGreater(present, cells // 2, "most cells hold a value")
            self.assertEqual(diff, 0, "%d of %d cells differ between serving and training-set" % (diff, cells))
        finally:
            node.terminate()
            node.wait(timeout=60)
            log.close()
            ports.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--bootstrap-file", default=os.environ.get("SLUICE_TEST_BOOTSTRAP_FILE"))
    ap.add_argument("--work", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
