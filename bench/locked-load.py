#!/usr/bin/env python3
"""Counter load for bench/compare-locked.sh: CLIENTS threads, each on its own keep-alive HTTP
connection, increment counters on KEYS keys (chosen at random; with 1 key, all on one) as fast
as they can for SECONDS; then the counters are read back and their sum checked against the
increments acknowledged. Prints one line:
RESULT ops=N rps=R p50_us=P p99_us=Q errors=E counted=C

  locked-load.py SIDE URLS CLIENTS SECONDS KEYS TOKEN RUN

SIDE:
  weft-locked  GET /fn/lcounter/kN: the `counter` plugin deployed with --lock path:1, so each
               key's increments run on its owner, one at a time, under the key's lock.
  weft-plain   GET /fn/counter/kN: the same plugin without a lock (its increment is a
               compare-and-set loop on the replicated store).
  etcd         the same read-modify-write done by a client under etcd's lock, through the JSON
               gateway, as a program using `etcdctl lock` and `etcdctl put` would: one lease per
               client (TTL 60 s, as etcdctl's session), then per increment POST /v3/lock/lock,
               /v3/kv/range, /v3/kv/put, /v3/lock/unlock.
URLS is a comma-separated list of base URLs; client i uses URLS[i % len]. RUN prefixes the
keys, so every run starts from fresh counters.
"""
import base64
import http.client
import json
import random
import struct
import sys
import threading
import time
import urllib.parse

side, urls, clients, seconds, keys, token, run = sys.argv[1:8]
clients, seconds, keys = int(clients), float(seconds), int(keys)
urls = [urllib.parse.urlsplit(u) for u in urls.split(",")]
b64 = lambda s: base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
latencies, errors, lock = [], [0], threading.Lock()
acked = [0]
deadline = time.monotonic() + seconds
auth = {"Authorization": "Bearer " + token}


def key_of(i):
    return f"{run}k{i}"


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def connect(n):
    u = urls[n % len(urls)]
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def increment(conn, lease, key):
    if side in ("weft-locked", "weft-plain"):
        name = "lcounter" if side == "weft-locked" else "counter"
        status, data = call(conn, "GET", f"/fn/{name}/{key}")
        if status != 200:
            raise RuntimeError(f"{status} {data[:200]!r}")
        return
    status, data = call(conn, "POST", "/v3/lock/lock", json.dumps({"name": b64("lock/" + key), "lease": lease}))
    if status != 200:
        raise RuntimeError(f"lock: {status} {data[:200]!r}")
    held = json.loads(data)["key"]
    status, data = call(conn, "POST", "/v3/kv/range", json.dumps({"key": b64("c/" + key)}))
    if status != 200:
        raise RuntimeError(f"range: {status} {data[:200]!r}")
    kvs = json.loads(data).get("kvs") or []
    n = int(base64.b64decode(kvs[0]["value"])) if kvs else 0
    status, data = call(conn, "POST", "/v3/kv/put", json.dumps({"key": b64("c/" + key), "value": b64(str(n + 1))}))
    if status != 200:
        raise RuntimeError(f"put: {status} {data[:200]!r}")
    status, data = call(conn, "POST", "/v3/lock/unlock", json.dumps({"key": held}))
    if status != 200:
        raise RuntimeError(f"unlock: {status} {data[:200]!r}")


def worker(n):
    conn = connect(n)
    lease = None
    if side == "etcd":
        status, data = call(conn, "POST", "/v3/lease/grant", json.dumps({"TTL": 60}))
        lease = json.loads(data)["ID"]
    rng = random.Random(n)
    mine, ok = [], 0
    while time.monotonic() < deadline:
        key = key_of(rng.randrange(keys))
        t0 = time.monotonic()
        try:
            increment(conn, lease, key)
        except Exception as e:  # counted, and the connection renewed
            with lock:
                errors[0] += 1
                if errors[0] <= 3:
                    print(f"error on {side}: {e}", file=sys.stderr)
            conn.close()
            conn = connect(n)
            continue
        mine.append(time.monotonic() - t0)
        ok += 1
    with lock:
        latencies.extend(mine)
        acked[0] += ok


def counted():
    """The sum of the counters, read back."""
    conn = connect(0)
    total = 0
    for i in range(keys):
        key = key_of(i)
        if side == "etcd":
            status, data = call(conn, "POST", "/v3/kv/range", json.dumps({"key": b64("c/" + key)}))
            kvs = json.loads(data).get("kvs") or []
            total += int(base64.b64decode(kvs[0]["value"])) if kvs else 0
        else:
            ns = "fn.lcounter" if side == "weft-locked" else "fn.counter"
            status, data = call(conn, "GET", f"/v1/kv/{ns}/%2F{key}", headers=auth)
            if status == 200:
                total += struct.unpack("<q", data)[0]
            elif status != 404:
                raise RuntimeError(f"reading {key}: {status} {data[:200]!r}")
    return total


threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
start = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
latencies.sort()
pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6 if latencies else 0
total = counted()
print(
    f"RESULT ops={len(latencies)} rps={len(latencies) / elapsed:.1f} p50_us={pct(0.5):.0f} "
    f"p99_us={pct(0.99):.0f} errors={errors[0]} counted={total}"
)
if total < acked[0]:
    print(f"LOST UPDATES: {acked[0]} increments acknowledged, counters sum to {total}", file=sys.stderr)
    sys.exit(1)
