#!/usr/bin/env bash
# A read-modify-write under a lock: Weft's lock-protected counter against the same counter
# without a lock, and against a client doing the same read-modify-write under etcd's lock, on a
# 3-node Weft cluster and a 3-member etcd cluster on loopback on this machine, driven by the
# same generator (bench/locked-load.py) in alternating rounds. Prints requests/s, p50 and p99
# of each side and the ratios; each run also checks that the counters add up to the increments
# acknowledged (no lost update).
#
#   bench/compare-locked.sh                     # 3 rounds of 10 s per case
#   ROUNDS=5 SECONDS_PER_RUN=20 bench/compare-locked.sh
#   WEFT_BIN=/tmp/weft-release/release/weft bench/compare-locked.sh   # a prebuilt weft
#
# Cases, 16 clients each: 100 keys chosen at random, and one hot key.
# Weft: `weft node` x3 with defaults; the `counter` plugin deployed twice, as `lcounter` with
# `--lock path:1` and as `counter` without; clients spread over the three nodes (a request runs
# on its key's owner either way).
# etcd: 3 members with default settings (fsync on); per increment, lock, range, put, unlock
# through the JSON gateway on the leader, with one lease per client: what a program using
# `etcdctl lock` and `etcdctl put` does inside, without the process start and session set-up
# that the commands pay on every call.
#
# Needs: python3, curl, etcd and etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-16}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" "${ETCD:-etcd}" "${ETCDCTL:-etcdctl}"
load="$root/bench/locked-load.py"
counter="$root/target/wasm-guests/wasm32-wasip2/release/counter.wasm"
[ -f "$counter" ] || { echo "no $counter: build the host once (cargo build -p weft-host)" >&2; exit 1; }

start_weft
start_etcd
weft_urls="http://127.0.0.1:${whttp[1]},http://127.0.0.1:${whttp[2]},http://127.0.0.1:${whttp[3]}"
group_of_3() {
  curl -fs "http://127.0.0.1:${whttp[1]}/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)["consensus"]
sys.exit(0 if s.get("leader") and len(s["voters"]) == 3 else 1)'
}
until_ok "Weft's metadata group of 3 voters" 120 group_of_3
export WEFT_NODE="http://127.0.0.1:${whttp[1]}" WEFT_TOKEN=$weft_token
"$weft" deploy "$counter" --name lcounter --lock path:1 --lock-wait 30s >&2
"$weft" deploy "$counter" --name counter >&2

results="$tmp/results.tsv"
: >"$results"
run() { # ROUND SIDE KEYS
  local urls line
  if [ "$2" = etcd ]; then urls=$etcd_url; else urls=$weft_urls; fi
  line=$(python3 "$load" "$2" "$urls" "$CLIENTS" "$SECONDS_PER_RUN" "$3" "$weft_token" "r$1" | grep '^RESULT ') \
    || { echo "locked-load.py printed no RESULT line (or found lost updates)" >&2; exit 1; }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${line#RESULT }" >>"$results"
  echo "round $1  $2  keys=$3  ${line#RESULT }" >&2
}
for r in $(seq 1 "$ROUNDS"); do
  for keys in 100 1; do
    sides=(weft-locked weft-plain etcd)
    [ $((r % 2)) = 1 ] || sides=(etcd weft-plain weft-locked)
    for side in "${sides[@]}"; do run "$r" "$side" "$keys"; done
  done
done

echo
echo "weft $("$weft" --version | awk '{print $2}') ($weft_desc), 3 nodes; etcd $etcd_version, leader of 3; $CLIENTS clients"
echo "$ROUNDS rounds of ${SECONDS_PER_RUN} s per case; requests/s: mean over rounds; p50 and p99 in ms: median over rounds"
python3 - "$results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, side, keys, fields = line.rstrip("\n").split("\t")
    runs[(int(keys), side)].append({k: float(v) for k, v in (kv.split("=") for kv in fields.split())})
def fig(rs, key):
    xs = [r[key] for r in rs]
    return statistics.mean(xs) if key == "rps" else statistics.median(xs) / 1000
print()
print("| keys | side | requests/s | p50 ms | p99 ms | errors |")
print("| ---: | --- | ---: | ---: | ---: | ---: |")
bad = 0
for keys in sorted({k for k, _ in runs}, reverse=True):
    for side in ("weft-locked", "weft-plain", "etcd"):
        rs = runs[(keys, side)]
        errors = sum(int(r["errors"]) for r in rs)
        bad += errors
        print(f"| {keys} | {side} | {fig(rs,'rps'):,.0f} | {fig(rs,'p50_us'):.2f} | {fig(rs,'p99_us'):.2f} | {errors} |")
print()
for keys in sorted({k for k, _ in runs}, reverse=True):
    l, p, e = (fig(runs[(keys, s)], "rps") for s in ("weft-locked", "weft-plain", "etcd"))
    print(f"{keys} key(s): locked/unlocked {l/p:.2f} (overhead {p/l:.2f}x), locked/etcd {l/e:.2f}")
print()
print("errors: " + ("none" if not bad else str(bad)))
PY
