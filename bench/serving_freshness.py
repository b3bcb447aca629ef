#!/usr/bin/env python3
"""Event-to-servable delay of a running `sluice run` (bench, not a test).

Produces one event at a time with kcat (a fresh entity each time), stamps the
moment the broker acknowledged it, then polls HGET over RESP every 2 ms until
the entity is servable. Prints p50/p90/max of the delay next to the
configured commit interval (the expected bound).

usage: serving_freshness.py --bootstrap HOST:PORT --topic T --resp-port P
                            [--n 30] [--view user_stats --feature clicks_total]
The events follow tests/serving/data/schema.yaml (source "clicks").
"""
import argparse
import json
import subprocess
import time

import redis

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--resp-port", type=int, required=True)
ap.add_argument("--n", type=int, default=30)
ap.add_argument("--view", default="user_stats")
ap.add_argument("--feature", default="clicks_total")
a = ap.parse_args()
r = redis.Redis(port=a.resp_port)
tag = int(time.time())
delays = []
for i in range(a.n):
    uid = "fresh-%d-%d" % (tag, i)
    ev = {"user_id": uid, "region": "eu", "driver": 1, "amount": 1.0, "page": "a",
          "ts": int(time.time() * 1000)}
    subprocess.run(["kcat", "-P", "-b", a.bootstrap, "-t", a.topic, "-k", uid, "-X", "acks=all"],
                   input=json.dumps(ev).encode(), check=True)
    acked = time.perf_counter()
    while r.hget("%s:%s" % (a.view, uid), a.feature) is None:
        if time.perf_counter() - acked > 30:
            raise SystemExit("event %d not servable after 30 s" % i)
        time.sleep(0.002)
    delays.append((time.perf_counter() - acked) * 1000)
delays.sort()
print("event-to-servable delay over %d events (broker ack -> HGET sees it): "
      "p50 %.0f ms, p90 %.0f ms, max %.0f ms" % (len(delays), delays[len(delays) // 2],
                                                 delays[int(len(delays) * 0.9)], delays[-1]))
