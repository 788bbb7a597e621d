#!/usr/bin/env bash
# Loads `hello` on one `weft node` with wrk, in alternating rounds without and with abusive
# clients running beside the load (bench/abusers.py: 200 slowloris connections sending one header
# line every 3 s, 200 KB request heads and request bodies announced over the limit (2 GiB) 20 times a second each), and
# prints the well-behaved clients' requests/s and p99 latency of each round and the ratio of
# the p99s. Then checks that the node still serves, and prints what it closed (/metrics).
#
#   bench/abuse.sh                               # 3 rounds of each, 20 s, 32 connections
#   ROUNDS=5 DURATION=30s CONNS=64 bench/abuse.sh
#   WEFT_BIN=target/release/weft bench/abuse.sh   # a prebuilt weft
#
# The node runs with its default limits (header_timeout 10 s, max_header_bytes 16 KiB,
# max_request_body 1 GiB, max_connections 1024). Needs: wrk (apt-get install wrk), python3.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
SLOW=${SLOW:-200}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" wrk
hello="$root/target/wasm-guests/wasm32-wasip2/release/hello.wasm"
[ -f "$hello" ] || cargo build --release -q -p weft-host
echo "weft: $weft_desc"

port=$(free_port)
WEFT_LOG=warn "$weft" node --data-dir "$tmp/weft" --http "127.0.0.1:$port" --listen 127.0.0.1:0 >"$tmp/weft.log" 2>&1 &
pids+=($!)
until_ok "the node" 30 curl -fs "http://127.0.0.1:$port/healthz"
WEFT_TOKEN=$(cat "$tmp/weft/token") "$weft" --node "http://127.0.0.1:$port" deploy "$hello" --name hello >/dev/null
url="http://127.0.0.1:$port/fn/hello/bench"

# Requests/s and p99 in milliseconds of one wrk run.
load() {
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%s %s\n", rps, p99 }'
}

echo "round  clean_rps  clean_p99_ms  abused_rps  abused_p99_ms  p99_ratio  abusers"
sum=0
for r in $(seq 1 "$ROUNDS"); do
  read -r c_rps c_p99 <<<"$(load)"
  python3 "$root/bench/abusers.py" 127.0.0.1 "$port" "$SLOW" 3 >"$tmp/abusers.out" &
  abusers=$!
  sleep 2 # let the slow clients connect before the load starts
  read -r a_rps a_p99 <<<"$(load)"
  kill -TERM "$abusers"; wait "$abusers" || true
  ratio=$(python3 -c "print(f'{$a_p99/$c_p99:.2f}')")
  sum=$(python3 -c "print($sum+$ratio)")
  printf '%5d  %9.0f  %12.2f  %10.0f  %13.2f  %9s  %s\n' "$r" "$c_rps" "$c_p99" "$a_rps" "$a_p99" "$ratio" "$(cat "$tmp/abusers.out")"
done
python3 -c "print(f'mean p99 ratio (abused / clean): {$sum/$ROUNDS:.2f}')"
curl -fs "$url" >/dev/null || { echo "the node stopped serving" >&2; exit 1; }
echo "the node still serves; what it closed:"
curl -fs "http://127.0.0.1:$port/metrics" | grep '^weft_http_connections'
