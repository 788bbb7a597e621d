#!/usr/bin/env python3
"""Lock load for bench/compare-locks.sh: CLIENTS threads, each on its own keep-alive HTTP
connection, take a lock and release it as fast as they can for SECONDS, and the script prints
one line: RESULT cycles=N rps=R p50_us=P p99_us=Q errors=E.

  lock-load.py SIDE URL CLIENTS SECONDS MODE TOKEN

SIDE is weft or etcd; MODE is `distinct` (each cycle a new key: no contention) or `one`
(every client on the key `hot`: they queue). A cycle is acquire, then release; its latency
runs from sending the acquire to the release's answer.

Weft: POST /v1/locks/KEY?lease=10s&wait=60s, then DELETE /v1/locks/KEY?token=T.
etcd: its v3 lock service through the JSON gateway, as a program using etcd's locks would:
one lease per client (POST /v3/lease/grant, TTL 60 s, as etcdctl's session does), then per
cycle POST /v3/lock/lock {name, lease} and POST /v3/lock/unlock {key}.
"""
import base64
import http.client
import json
import sys
import threading
import time
import urllib.parse

side, url, clients, seconds, mode, token = sys.argv[1:7]
clients, seconds = int(clients), float(seconds)
u = urllib.parse.urlsplit(url)
b64 = lambda s: base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
latencies, errors, lock = [], [0], threading.Lock()
deadline = time.monotonic() + seconds


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def worker(n):
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    auth = {"Authorization": "Bearer " + token}
    lease = None
    if side == "etcd":
        status, data = call(conn, "POST", "/v3/lease/grant", json.dumps({"TTL": 60}))
        lease = json.loads(data)["ID"]
    i = 0
    mine = []
    while time.monotonic() < deadline:
        i += 1
        key = "hot" if mode == "one" else f"d{n}-{i}"
        t0 = time.monotonic()
        try:
            if side == "weft":
                status, data = call(conn, "POST", f"/v1/locks/{key}?lease=10s&wait=60s", headers=auth)
                if status != 200:
                    raise RuntimeError(f"acquire: {status} {data[:200]!r}")
                t = json.loads(data)["token"]
                status, data = call(conn, "DELETE", f"/v1/locks/{key}?token={t}", headers=auth)
                if status != 204:
                    raise RuntimeError(f"release: {status} {data[:200]!r}")
            else:
                status, data = call(conn, "POST", "/v3/lock/lock", json.dumps({"name": b64(key), "lease": lease}))
                if status != 200:
                    raise RuntimeError(f"lock: {status} {data[:200]!r}")
                held = json.loads(data)["key"]
                status, data = call(conn, "POST", "/v3/lock/unlock", json.dumps({"key": held}))
                if status != 200:
                    raise RuntimeError(f"unlock: {status} {data[:200]!r}")
        except Exception as e:  # counted, and the connection renewed
            with lock:
                errors[0] += 1
                if errors[0] <= 3:
                    print(f"error on {side}: {e}", file=sys.stderr)
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            continue
        mine.append(time.monotonic() - t0)
    with lock:
        latencies.extend(mine)


threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
start = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
latencies.sort()
pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e6 if latencies else 0
print(f"RESULT cycles={len(latencies)} rps={len(latencies) / elapsed:.1f} p50_us={pct(0.5):.0f} p99_us={pct(0.99):.0f} errors={errors[0]}")
