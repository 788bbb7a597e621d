#!/usr/bin/env bash
# Lock acquire+release cycles on a 3-node Weft cluster and on a 3-member etcd cluster, both on
# loopback on this machine, driven by the same generator (bench/lock-load.py) in alternating
# rounds; prints cycles/s, p50 and p99 of each side and the ratios.
#
#   bench/compare-locks.sh                     # 3 rounds of 10 s per case
#   ROUNDS=5 SECONDS_PER_RUN=20 bench/compare-locks.sh
#   WEFT_BIN=/tmp/weft-release/release/weft bench/compare-locks.sh   # a prebuilt weft
#
# Cases: 1 client taking a new key each cycle (no contention), and 16 clients contending for
# one key (they queue). A cycle is acquire then release, each acknowledged by its group's
# quorum (flushed on 2 of 3).
# Weft: `weft node` x3 with defaults; the lock API (POST/DELETE /v1/locks/KEY).
# etcd: 3 members with default settings (fsync on); its v3 lock service through the JSON
# gateway with one lease per client, which is what `etcdctl lock` does inside, without the
# process start and session set-up that `etcdctl lock KEY CMD` pays on every call.
# Both sides get their requests on their leader (the best case; a follower forwards).
#
# Needs: python3, curl, etcd and etcdctl (apt-get install etcd-server etcd-client).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" "${ETCD:-etcd}" "${ETCDCTL:-etcdctl}"
load="$root/bench/lock-load.py"

start_weft
start_etcd
weft_leader() { # prints the HTTP URL of the node leading Weft's metadata group
  local i
  for i in 1 2 3; do
    curl -fs "http://127.0.0.1:${whttp[$i]}/v1/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)["consensus"]
sys.exit(0 if s["role"] == "leader" and len(s["voters"]) == 3 else 1)' \
      && { echo "http://127.0.0.1:${whttp[$i]}"; return 0; }
  done
  return 1
}
until_ok "Weft's metadata group of 3 voters" 120 weft_leader
weft_url=$(weft_leader)

results="$tmp/results.tsv"
: >"$results"
run() { # ROUND SIDE CLIENTS MODE
  local url line
  if [ "$2" = weft ]; then url=$weft_url; else url=$etcd_url; fi
  line=$(python3 "$load" "$2" "$url" "$3" "$SECONDS_PER_RUN" "$4" "$weft_token" | grep '^RESULT ') \
    || { echo "lock-load.py printed no RESULT line" >&2; exit 1; }
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$4" "$3" "${line#RESULT }" >>"$results"
  echo "round $1  $2  $4  clients=$3  ${line#RESULT }" >&2
}
for r in $(seq 1 "$ROUNDS"); do
  for c in "1 distinct" "16 one"; do
    set -- $c
    if [ $((r % 2)) = 1 ]; then run "$r" weft "$1" "$2"; run "$r" etcd "$1" "$2"
    else run "$r" etcd "$1" "$2"; run "$r" weft "$1" "$2"; fi
  done
done

echo
echo "weft $("$weft" --version | awk '{print $2}') ($weft_desc), leader of 3; etcd $etcd_version, leader of 3"
echo "$ROUNDS rounds of ${SECONDS_PER_RUN} s per case; cycles/s: mean over rounds; p50 and p99 in ms: median over rounds"
python3 - "$results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rnd, side, mode, clients, fields = line.rstrip("\n").split("\t")
    runs[(mode, int(clients), side)].append({k: float(v) for k, v in (kv.split("=") for kv in fields.split())})
def fig(rs, key):
    xs = [r[key] for r in rs]
    return statistics.mean(xs) if key == "rps" else statistics.median(xs) / 1000
print()
print("| case | clients | weft cycles/s | etcd cycles/s | weft/etcd | weft p50 | etcd p50 | weft p99 | etcd p99 | etcd/weft p99 |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
bad = 0
for mode, clients in sorted({(m, c) for m, c, _ in runs}, key=lambda k: k[1]):
    w, e = runs[(mode, clients, "weft")], runs[(mode, clients, "etcd")]
    name = "distinct keys" if mode == "distinct" else "one key"
    print(f"| {name} | {clients} | {fig(w,'rps'):,.0f} | {fig(e,'rps'):,.0f} | {fig(w,'rps')/fig(e,'rps'):.2f} | "
          f"{fig(w,'p50_us'):.2f} | {fig(e,'p50_us'):.2f} | {fig(w,'p99_us'):.2f} | {fig(e,'p99_us'):.2f} | {fig(e,'p99_us')/fig(w,'p99_us'):.2f} |")
    for side, rs in (("weft", w), ("etcd", e)):
        for r in rs:
            bad += int(r["errors"])
print()
print("errors: " + ("none" if not bad else str(bad)))
sys.exit(1 if bad else 0)
PY
