#!/usr/bin/env bash
# What a scrape costs as a node's data grows: the median time of `GET /metrics` and
# `GET /v1/status` on node 1 of a 3-node cluster on loopback, empty and then after wrk puts
# random keys (100-byte values) into a key space of KEYS keys, with the CPU the idle cluster
# burns in 30 s and node 1's RSS beside each (issue 14's measurements). NODE_ARGS are more
# arguments of every `weft node` (e.g. `--store-cache-mib 1024`, sled's own default).
#
#   bench/scrape-cost.sh                       # 300,000-key space, 45 s of puts
#   KEYS=1000000 LOAD_SECONDS=120 bench/scrape-cost.sh
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
  echo "scale=1; ($after - $before) / $(getconf CLK_TCK)" | bc
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
KV_SIDE=weft KV_OP=put KV_KEYS=$KEYS KV_NS=bench KV_TOKEN=$weft_token \
  wrk -t2 -c64 -d"${LOAD_SECONDS}s" --timeout 10s -s "$root/bench/kv-load.lua" "$node" >"$tmp/wrk.log" 2>&1
puts=$(grep '^RESULT ' "$tmp/wrk.log" || true)
sleep 30
row "after ${LOAD_SECONDS} s of puts over $KEYS keys, 30 s quiet"
echo
echo "wrk: $puts"
