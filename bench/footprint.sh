#!/usr/bin/env bash
# The footprint of one `weft node`: the stripped binary's size, and the node's resident memory
# (VmRSS) in each profile, each figure taken after 5 s of quiet: fresh; after deploying `hello`;
# after LOAD of wrk on it; after a burst of BURST connections opened at once and closed.
#
#   bench/footprint.sh                               # default and edge profiles
#   PROFILES=edge WEFT_BIN=target/release/weft bench/footprint.sh
#
# Goals (issue 16): at most 40 MB (default) and 25 MB (edge) in every phase, binary at most
# 30 MiB. Needs: wrk (apt-get install wrk), python3, binutils (strip).
set -euo pipefail
PROFILES=${PROFILES:-default edge}
LOAD=${LOAD:-5s}
BURST=${BURST:-2000}
QUIET=${QUIET:-5}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" wrk strip
hello="$root/target/wasm-guests/wasm32-wasip2/release/hello.wasm"
[ -f "$hello" ] || cargo build --release -q -p weft-host
echo "weft: $weft_desc"
strip -o "$tmp/weft.stripped" "$weft"
python3 -c "import os,sys; print(f'stripped binary: {os.path.getsize(sys.argv[1]) / 2**20:.1f} MiB')" "$tmp/weft.stripped"

# VmRSS, then (after the slash) the anonymous part of it, RssAnon: the rest is file-backed, mostly
# the binary's own pages, which the kernel maps 64 KiB around each page touched (fault-around).
rss() { awk '/^VmRSS/ { t = $2 } /^RssAnon/ { a = $2 } END { printf "%.1f/%.1f", t / 1024, a / 1024 }' "/proc/$1/status"; }

printf '%-8s %10s %10s %10s %10s   (MB resident/of it anonymous)\n' profile fresh deployed loaded burst
for profile in $PROFILES; do
  port=$(free_port)
  WEFT_LOG=warn "$weft" node --profile "$profile" --data-dir "$tmp/$profile" \
    --http "127.0.0.1:$port" --listen 127.0.0.1:0 >"$tmp/$profile.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  until_ok "the $profile node" 30 curl -fs "http://127.0.0.1:$port/healthz"
  sleep "$QUIET"
  fresh=$(rss "$pid")
  WEFT_TOKEN=$(cat "$tmp/$profile/token") "$weft" --node "http://127.0.0.1:$port" deploy "$hello" --name hello >/dev/null
  curl -fs "http://127.0.0.1:$port/fn/hello/" >/dev/null
  sleep "$QUIET"
  deployed=$(rss "$pid")
  wrk -t1 -c32 -d"$LOAD" "http://127.0.0.1:$port/fn/hello/bench" >/dev/null
  sleep "$QUIET"
  loaded=$(rss "$pid")
  python3 - "$port" "$BURST" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conns = []
for _ in range(n):
    try:
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError:
        pass
for c in conns:
    c.close()
PY
  sleep "$QUIET"
  burst=$(rss "$pid")
  printf '%-8s %10s %10s %10s %10s\n' "$profile" "$fresh" "$deployed" "$loaded" "$burst"
  kill "$pid"
done
