#!/usr/bin/env bash
# A large request body streamed into a handler, side by side on loopback, in alternating rounds:
# `weft node` and `wasmtime serve` (wasmtime-cli 48.0.8) each serve `guest-stream`, whose
# `/count` reads the body as it comes, keeping nothing, and answers its length and hash. curl
# sends MIB MiB of zeros, chunked (no Content-Length). Prints each side's MB/s and how much its
# peak resident memory (VmHWM) grew over all the rounds: a server that held the body whole
# would grow by the body's size.
#
#   bench/upload.sh                         # 3 rounds of 1 GiB (weft's default limit)
#   MIB=256 ROUNDS=5 bench/upload.sh
#   WEFT_BIN=/tmp/before/release/weft bench/upload.sh   # a prebuilt weft
#
# `wasmtime serve` runs as in bench/compare-serve.sh: the pooling allocator with Weft's
# keep-resident sizes and page-map scan, and `-S cli`.
#
# Needs: curl, and wasmtime 48.0.8 (cargo install wasmtime-cli --version 48.0.8 --locked).
set -euo pipefail
MIB=${MIB:-1024}
ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" curl
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
[ -n "$WASMTIME" ] || { echo "wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked" >&2; exit 1; }
echo "weft: $weft_desc; $("$WASMTIME" --version); $(date -u +%FT%TZ); $MIB MiB per upload"

guest="$root/target/wasm-guests/wasm32-wasip2/release/guest_stream.wasm"
[ -f "$guest" ] || cargo build --release -q -p weft-host

weft_port=$(free_port)
WEFT_LOG=warn "$weft" node --data-dir "$tmp/weft" --http "127.0.0.1:$weft_port" --listen 127.0.0.1:0 >"$tmp/weft.log" 2>&1 &
weft_pid=$!
pids+=("$weft_pid")
until_ok "weft node" 30 curl -fs "http://127.0.0.1:$weft_port/healthz"
WEFT_TOKEN=$(cat "$tmp/weft/token") "$weft" --node "http://127.0.0.1:$weft_port" deploy "$guest" --name stream >/dev/null
wasmtime_port=$(free_port)
"$WASMTIME" serve -S cli \
  -O pooling-allocator=y,pooling-memory-keep-resident=8388608,pooling-table-keep-resident=16384,pooling-pagemap-scan=y \
  --addr "127.0.0.1:$wasmtime_port" "$guest" >"$tmp/wasmtime.log" 2>&1 &
wasmtime_pid=$!
pids+=("$wasmtime_pid")
until_ok "wasmtime serve" 60 curl -fs "http://127.0.0.1:$wasmtime_port/served"
declare -A url=([weft]="http://127.0.0.1:$weft_port/fn/stream/count" [wasmtime]="http://127.0.0.1:$wasmtime_port/count")
declare -A pid=([weft]=$weft_pid [wasmtime]=$wasmtime_pid)

peak() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
declare -A before rates
for side in weft wasmtime; do
  # One small upload first, so what a first request allocates is not counted.
  [ "$(printf abc | curl -fs -T - "${url[$side]}" | cut -d' ' -f1)" = 3 ] || { echo "$side: /count answers wrongly" >&2; exit 1; }
  before[$side]=$(peak "${pid[$side]}")
done
for round in $(seq "$ROUNDS"); do
  for side in weft wasmtime; do
    start=$(date +%s.%N)
    answer=$(head -c $((MIB << 20)) /dev/zero | curl -fsS -T - -H 'content-type: application/octet-stream' "${url[$side]}")
    end=$(date +%s.%N)
    [ "${answer%% *}" = $((MIB << 20)) ] || { echo "$side: answered '$answer' for $MIB MiB" >&2; exit 1; }
    rate=$(echo "$start $end" | awk -v mib="$MIB" '{ printf "%.0f", mib * 1.048576 / ($2 - $1) }')
    rates[$side]+="$rate "
    printf 'round %s  %-9s %6s MB/s\n' "$round" "$side" "$rate"
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
printf '%-9s %8s %24s\n' side "MB/s" "peak memory, MiB"
for side in weft wasmtime; do
  printf '%-9s %8s %24s\n' "$side" "$(echo "${rates[$side]}" | median)" "${before[$side]} -> $(peak "${pid[$side]}")"
done
w=$(echo "${rates[weft]}" | median)
m=$(echo "${rates[wasmtime]}" | median)
echo "weft/wasmtime: $(awk -v a="$w" -v b="$m" 'BEGIN { printf "%.2f", a / b }')"
