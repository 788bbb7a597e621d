#!/usr/bin/env bash
# Replicated puts and gets on a 3-node Weft cluster and on a 3-member etcd cluster, both on
# loopback on this machine, loaded by the same generator (wrk with bench/kv-load.lua), in
# alternating rounds; prints requests/s, p50 and p99 of each side and the ratios.
#
#   bench/compare-kv.sh                      # 3 rounds of 10 s per case
#   ROUNDS=5 DURATION=20s bench/compare-kv.sh
#   WEFT_BIN=/tmp/weft-release/release/weft bench/compare-kv.sh   # a prebuilt weft
#   CASES="get 64" bench/compare-kv.sh         # only some of the cases below
#
# Cases: PUT and GET of random keys among KEYS (default 10,000) with VALUE_BYTES (default 100)
# values, over 1 connection (wrk -t1 -c1) and 64 connections (wrk -t2 -c64). Every key is
# written on both sides before the first round, so every GET hits.
#
# Weft: `weft node` x3 with N/R/W 3/2/2 (the default): a PUT answers once 2 of 3 replicas have
# flushed it (sled's flush, sync_file_range: see bench/RESULTS.md), a GET once 2 replicas have
# answered. Requests go to node-1 (any node coordinates).
# etcd: 3 members with default settings (fsync on), driven through its JSON gateway; PUT is
# /v3/kv/put, GET is a linearizable /v3/kv/range (SERIALIZABLE=1 adds serializable gets).
# Requests go to the leader, etcd's best case (a follower forwards to it).
# Both clusters run for the whole benchmark; the load generator shares the cores with them.
#
# Needs: wrk, python3, curl, etcd and etcdctl (apt-get install wrk etcd-server etcd-client).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
KEYS=${KEYS:-10000}
VALUE_BYTES=${VALUE_BYTES:-100}
SERIALIZABLE=${SERIALIZABLE:-0}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" wrk "${ETCD:-etcd}" "${ETCDCTL:-etcdctl}"
lua="$root/bench/kv-load.lua"

start_weft
# Settled: every node sees 3 nodes on the ring and no transition is under way (it ends once
# every node confirmed its handoff, a few seconds after the last join).
weft_settled() {
  local i
  for i in 1 2 3; do
    curl -fs "http://127.0.0.1:${whttp[$i]}/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if len(s["nodes"]) == 3 and not s["in_transition"] else 1)' || return 1
  done
}
start_etcd

echo "waiting for Weft's ring to settle (every node sees 3 nodes and no transition)" >&2
until_ok "Weft's ring to settle" 180 weft_settled
weft_url="http://127.0.0.1:${whttp[1]}"

# --- Preload: every key on both sides ----------------------------------------------------
preload() { # side base_url
  python3 - "$1" "$2" "$KEYS" "$VALUE_BYTES" "$weft_token" <<'EOF'
import base64, concurrent.futures, http.client, json, sys, threading, urllib.parse
side, url, keys, value_bytes, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
u = urllib.parse.urlsplit(url)
local = threading.local()
def put(i):
    key = "k%07d" % i
    value = (key + "=").ljust(value_bytes, "x").encode()
    if not hasattr(local, "conn"):
        local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    if side == "weft":
        local.conn.request("PUT", "/v1/kv/bench/" + key, body=value,
                           headers={"Authorization": "Bearer " + token})
    else:
        b64 = lambda b: base64.b64encode(b).decode()
        body = json.dumps({"key": b64(("bench/" + key).encode()), "value": b64(value)})
        local.conn.request("POST", "/v3/kv/put", body=body, headers={"Content-Type": "application/json"})
    r = local.conn.getresponse()
    r.read()
    if r.status != 200:
        raise SystemExit(f"preload of {key} on {side}: HTTP {r.status}")
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(put, range(keys)))
EOF
}
echo "preloading $KEYS keys of $VALUE_BYTES bytes on each side" >&2
preload weft "$weft_url"
preload etcd "$etcd_url"
# Check: every key is there (Weft: each node holds all of them, N=3; etcd: a count).
for i in 1 2 3; do
  held=$(curl -fs "http://127.0.0.1:${whttp[$i]}/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"])')
  [ "$held" -ge "$KEYS" ] || { echo "Weft node-$i holds $held keys, expected $KEYS" >&2; exit 1; }
done
counted=$(ETCDCTL_API=3 "$ETCDCTL" --endpoints "$etcd_url" get bench/ --prefix --limit=1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')
[ "$counted" -eq "$KEYS" ] || { echo "etcd holds $counted keys, expected $KEYS" >&2; exit 1; }
[ "$(curl -fs -H "Authorization: Bearer $weft_token" "$weft_url/v1/kv/bench/k0000000")" = "$(printf '%-*s' "$VALUE_BYTES" "k0000000=" | tr ' ' x)" ] \
  || { echo "Weft returns a different value for k0000000" >&2; exit 1; }

# --- Rounds --------------------------------------------------------------------------------
results="$tmp/results.tsv"
: >"$results"
# load ROUND SIDE OP CONNS [serializable]: one wrk run; appends a line to $results.
load() {
  local round=$1 side=$2 op=$3 conns=$4 ser=${5:-0} threads=1 url out line
  [ "$conns" -gt 1 ] && threads=2
  if [ "$side" = weft ]; then url=$weft_url; else url=$etcd_url; fi
  out=$(KV_SIDE=$side KV_OP=$op KV_KEYS=$KEYS KV_VALUE_BYTES=$VALUE_BYTES KV_TOKEN=$weft_token \
    KV_SERIALIZABLE=$ser wrk -t"$threads" -c"$conns" -d"$DURATION" --timeout 10s -s "$lua" "$url")
  echo "$out" >>"$tmp/wrk.log"
  line=$(grep '^RESULT ' <<<"$out") || { echo "wrk printed no RESULT line:" >&2; echo "$out" >&2; exit 1; }
  local case="$op"
  [ "$ser" = 1 ] && case="$op-serializable"
  printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$side" "$case" "$conns" "${line#RESULT }" >>"$results"
  echo "round $round  $side  $case  c=$conns  ${line#RESULT }" >&2
}
# CASES="get 64" (or any of the four, comma-separated) runs only those.
IFS=, read -r -a cases <<<"${CASES:-put 1,put 64,get 1,get 64}"
for r in $(seq 1 "$ROUNDS"); do
  for c in "${cases[@]}"; do
    set -- $c
    # Alternate which side goes first, so neither always runs on a warmer or cooler machine.
    if [ $((r % 2)) = 1 ]; then load "$r" weft "$1" "$2"; load "$r" etcd "$1" "$2"
    else load "$r" etcd "$1" "$2"; load "$r" weft "$1" "$2"; fi
  done
  if [ "$SERIALIZABLE" = 1 ]; then
    load "$r" etcd get 1 1
    load "$r" etcd get 64 1
  fi
done

# --- Table ---------------------------------------------------------------------------------
echo
echo "weft $("$weft" --version | awk '{print $2}') ($weft_desc), node-1 of 3; etcd $etcd_version, leader of 3"
echo "$KEYS keys, $VALUE_BYTES-byte values, $ROUNDS rounds of $DURATION per case"
echo "req/s: mean over rounds; p50 and p99 in ms: median over rounds of each run's percentile"
python3 - "$results" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)  # (case, conns, side) -> one dict per round
for line in open(sys.argv[1]):
    rnd, side, case, conns, fields = line.rstrip("\n").split("\t")
    runs[(case, int(conns), side)].append({k: float(v) for k, v in (kv.split("=") for kv in fields.split())})
order = sorted({(c, n) for c, n, _ in runs}, key=lambda k: ({"put": 0, "get": 1}.get(k[0], 2), k[0], k[1]))

def figure(rs, key):
    if not rs:
        return None
    xs = [r[key] for r in rs]
    return statistics.mean(xs) if key == "rps" else statistics.median(xs) / 1000

def cell(x, fmt):
    return "—" if x is None else format(x, fmt)

def ratio(a, b):
    return "—" if a is None or b is None or not b else f"{a / b:.2f}"

print()
print("| case | conns | weft req/s | etcd req/s | weft/etcd | weft p50 | etcd p50 | etcd/weft | weft p99 | etcd p99 | etcd/weft |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for case, conns in order:
    w, e = runs.get((case, conns, "weft")), runs.get((case, conns, "etcd"))
    row = [case, str(conns)]
    for key, fmt, ours_over_theirs in (("rps", ",.0f", True), ("p50_us", ".2f", False), ("p99_us", ".2f", False)):
        a, b = figure(w, key), figure(e, key)
        row += [cell(a, fmt), cell(b, fmt), ratio(a, b) if ours_over_theirs else ratio(b, a)]
    print("| " + " | ".join(row) + " |")

print()
print("each round: req/s p50/p99 (ms)")
for case, conns in order:
    for side in ("weft", "etcd"):
        rs = runs.get((case, conns, side), [])
        if rs:
            print(f"  {case:>16} c={conns:<3} {side}  " + "   ".join(
                f"{r['rps']:>7,.0f} {r['p50_us'] / 1000:.2f}/{r['p99_us'] / 1000:.2f}" for r in rs))

bad = 0
for (case, conns, side), rs in sorted(runs.items()):
    for r in rs:
        errs = {k: int(r[k]) for k in ("non2xx", "connect", "read", "write", "timeout") if r[k]}
        if errs:
            bad += 1
            print(f"ERRORS {side} {case} c={conns}: {errs}")
if not bad:
    print("\nno errors: 0 non-2xx/3xx responses, 0 socket errors, 0 timeouts on either side")
sys.exit(1 if bad else 0)
EOF
