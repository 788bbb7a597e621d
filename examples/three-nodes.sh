#!/usr/bin/env bash
# A three-node cluster on loopback with the real CLI: a cluster CA, node certificates, joining,
# the members view, a node killed with SIGKILL and marked down, and its restart rejoining by itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p weft-host
weft="$root/target/release/weft"

dir=$(mktemp -d)
free() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"; }
declare -a pids http quic
start() { # start NAME INDEX [JOIN]
  "$weft" node --cluster "$dir/cluster" --name "$1" --data-dir "$dir/$1" \
    --http "127.0.0.1:${http[$2]}" --listen "127.0.0.1:${quic[$2]}" ${3:+--join "$3"} 2>>"$dir/$1.log" >/dev/null &
  pids[$2]=$!
}
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

set -x
"$weft" cluster init "$dir/cluster"
for i in 1 2 3; do
  "$weft" cluster issue "$dir/cluster" --node "node-$i"
  http[$i]=$(free SOCK_STREAM); quic[$i]=$(free SOCK_DGRAM)
done
set +x
start node-1 1
start node-2 2 "127.0.0.1:${quic[1]}"
start node-3 3 "127.0.0.1:${quic[1]}"
export WEFT_NODE="http://127.0.0.1:${http[1]}" WEFT_TOKEN=$(cat "$dir/cluster/admin.token")
until [ "$("$weft" members --json 2>/dev/null | grep -c '"state": "alive"')" = 3 ]; do sleep 0.2; done
"$weft" members

echo "== kill -9 node-3; the others mark it down in about 6 s"
kill -9 "${pids[3]}"
until "$weft" members --json | grep -A6 '"node-3"' | grep -q '"state": "down"'; do sleep 0.2; done
"$weft" members

echo "== restart node-3 on its data directory, without --join: it rejoins the members it remembers"
start node-3 3
until [ "$("$weft" members --json 2>/dev/null | grep -c '"state": "alive"')" = 3 ]; do sleep 0.2; done
"$weft" members
