#!/usr/bin/env bash
# What a scrape costs as a node's data grows: the median time of `GET /metrics` and
# `GET /v1/status` on node 1 of a 3-node cluster on loopback, empty and then after wrk puts
# random keys (100-byte values) into a key space of KEYS keys, with the CPU the idle cluster
# burns in 30 s and node 1's RSS beside each (issue 14's measurements). NODE_ARGS are more
# arguments of every `weft node` (e.g. `--store-cache-mib 1024`, sled's own default).
#
#   bench/scrape-cost.sh                       # 300,000-key space, 45 s of puts
#   KEYS=1000000 LOAD_SECONDS=120 bench/scrape-cost.sh
#   FILLS="1000 1000000" bench/scrape-cost.sh  # a row after each fill: keys 0 .. 999, then
#                                              # up to 999,999, each written once (N=3: every
#                                              # node holds them all), 30 s quiet before a row
#   FILLS=300000 DELETES=10 bench/scrape-cost.sh # then a row after deleting keys 0 .. 9
#
# Needs: wrk, python3, curl.
set -euo pipefail
KEYS=${KEYS:-300000}
LOAD_SECONDS=${LOAD_SECONDS:-45}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" wrk
# shellcheck disable=SC2086
start_weft ${NODE_ARGS:-}
node="http://127.0.0.1:${whttp[1]}"
until_ok "node 1's API" 60 curl -fs "$node/v1/status"
until_ok "three nodes on the ring" 60 python3 -c '
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/status"))
sys.exit(len(s["nodes"]) != 3)' "$node"

# median_ms PATH: the median of 21 timed GETs of PATH on node 1, in ms.
median_ms() {
  local i
  for i in $(seq 1 21); do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $weft_token" "$node$1"
  done | sort -n | sed -n 11p | awk '{printf "%.1f", $1 * 1000}'
}
# idle_cpu: CPU seconds all three nodes used in 30 s with no request.
idle_cpu() {
  local before after
  before=$(for p in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc)
  sleep 30
  after=$(for p in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc)
  printf "%.1f" "$(echo "scale=2; ($after - $before) / $(getconf CLK_TCK)" | bc)"
}
entries() {
  curl -s "$node/v1/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["keys"])'
}

rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/${pids[0]}/status"; }
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(entries)" "$(median_ms /metrics)" "$(median_ms /v1/status)" "$(idle_cpu)" "$(rss_mib)"; }
echo "weft $("$weft" --version | awk '{print $2}') ($weft_desc), 3 nodes on this machine; scrapes of node 1"
echo
echo "| data | entries on node 1 | /metrics ms (median of 21) | /v1/status ms | idle CPU-seconds in 30 s, 3 nodes | node 1 RSS MiB |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
row "empty"
if [ -n "${FILLS:-}" ]; then
  from=0
  for upto in $FILLS; do
    started=$SECONDS
    # wrk runs until node 1 holds every key.
    KV_SIDE=weft KV_OP=put KV_KEYS=$upto KV_FILL=$from KV_THREADS=2 KV_NS=bench KV_TOKEN=$weft_token \
      wrk -t2 -c64 -d3600s --timeout 10s -s "$root/bench/kv-load.lua" "$node" >"$tmp/wrk.log" 2>&1 &
    filler=$!
    held=0 still=0
    until [ "$held" -ge "$upto" ]; do
      kill -0 "$filler" 2>/dev/null || { echo "wrk ended before node 1 held $upto keys" >&2; exit 1; }
      sleep 1
      last=$held held=$(entries)
      if [ "$held" = "$last" ]; then still=$((still + 1)); else still=0; fi
      [ "$still" -lt 30 ] || { echo "node 1 stayed at $held keys for 30 s: $(tail -3 "$tmp/wrk.log")" >&2; exit 1; }
    done
    kill -INT "$filler"; wait "$filler" || true
    took=$((SECONDS - started))
    sleep 30
    row "keys 0 to $((upto - 1)) written once ($((upto - from)) puts in $took s), 30 s quiet"
    from=$upto
  done
  if [ -n "${DELETES:-}" ]; then
    # Deleted keys leave tombstones, collected after the grace (24 h): until then an idle
    # node should read nothing for them.
    for i in $(seq 0 $((DELETES - 1))); do
      curl -fs -o /dev/null -X DELETE -H "Authorization: Bearer $weft_token" \
        "$node/v1/kv/bench/$(printf 'k%07d' "$i")"
    done
    sleep 30
    row "then $DELETES of them deleted, 30 s quiet"
  fi
  exit 0
fi
KV_SIDE=weft KV_OP=put KV_KEYS=$KEYS KV_NS=bench KV_TOKEN=$weft_token \
  wrk -t2 -c64 -d"${LOAD_SECONDS}s" --timeout 10s -s "$root/bench/kv-load.lua" "$node" >"$tmp/wrk.log" 2>&1
puts=$(grep '^RESULT ' "$tmp/wrk.log" || true)
sleep 30
row "after ${LOAD_SECONDS} s of puts over $KEYS keys, 30 s quiet"
echo
echo "wrk: $puts"
