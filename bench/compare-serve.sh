#!/usr/bin/env bash
# Serves the same `hello` component through `weft node` and through `wasmtime serve`
# (wasmtime-cli 48.0.8) and loads both with the same generator (wrk) on loopback, in alternating
# rounds, printing requests/s of each and the ratio.
#
#   bench/compare-serve.sh            # 3 rounds of 10 s each, 32 connections
#   ROUNDS=5 DURATION=20s CONNS=64 bench/compare-serve.sh
#   WEFT_BIN=/tmp/before/release/weft bench/compare-serve.sh   # a prebuilt weft
#
# `wasmtime serve` runs in its best documented configuration for this workload, tuned as
# Weft's runtime is: the pooling allocator, with the same keep-resident sizes as Weft's
# defaults (128 KiB of linear memory, 16 KiB of tables; RuntimeConfig), and `-S cli`.
#
# Needs: wrk (apt-get install wrk) and wasmtime 48.0.8
#   (cargo install wasmtime-cli --version 48.0.8 --locked   # about 10 minutes on 2 cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
[ -n "$WASMTIME" ] || { echo "wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked" >&2; exit 1; }
"$WASMTIME" --version | grep -q '^wasmtime 48\.' || echo "warning: $("$WASMTIME" --version) is not 48.x" >&2

if [ -n "${WEFT_BIN:-}" ]; then
  weft=$WEFT_BIN
else
  cargo build --release -q -p weft-host
  weft="$root/target/release/weft"
fi
hello="$root/target/wasm-guests/wasm32-wasip2/release/hello.wasm"
[ -f "$hello" ] || cargo build --release -q -p weft-host

tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2; return 1
}

weft_port=$(free_port)
WEFT_LOG=warn "$weft" node --data-dir "$tmp/weft" --http "127.0.0.1:$weft_port" --listen 127.0.0.1:0 >"$tmp/weft.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$weft_port/healthz"
WEFT_TOKEN=$(cat "$tmp/weft/token") "$weft" --node "http://127.0.0.1:$weft_port" deploy "$hello" --name hello >/dev/null

wt_port=$(free_port)
"$WASMTIME" serve -S cli \
  -O pooling-allocator=y,pooling-memory-keep-resident=131072,pooling-table-keep-resident=16384 \
  --addr "127.0.0.1:$wt_port" "$hello" >"$tmp/wasmtime.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$wt_port/bench"

weft_url="http://127.0.0.1:$weft_port/fn/hello/bench"
wt_url="http://127.0.0.1:$wt_port/bench"
[ "$(curl -fs "$weft_url")" = "$(curl -fs "$wt_url")" ] || { echo "the two servers answer differently" >&2; exit 1; }

rps() { wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$1" | awk '/Requests\/sec/ {print $2}'; }
total_w=0; total_t=0
echo "round  weft_rps  wasmtime_serve_rps  ratio"
for r in $(seq 1 "$ROUNDS"); do
  w=$(rps "$weft_url"); t=$(rps "$wt_url")
  total_w=$(python3 -c "print($total_w+$w)"); total_t=$(python3 -c "print($total_t+$t)")
  printf '%5d  %8.0f  %18.0f  %5.2f\n' "$r" "$w" "$t" "$(python3 -c "print($w/$t)")"
done
python3 -c "w=$total_w/$ROUNDS; t=$total_t/$ROUNDS; print(f'mean   {w:8.0f}  {t:18.0f}  {w/t:5.2f}  (weft / wasmtime serve)')"
