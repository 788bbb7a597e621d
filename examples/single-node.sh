#!/usr/bin/env bash
# A single-node walkthrough with the real CLI: node, deploy, invoke, jobs (word count, inverted
# index, log analytics), rollback, metrics.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -q -p weft-host
weft="$root/target/release/weft"
guests="$root/target/wasm-guests/wasm32-wasip2/release"

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$weft" node --data-dir "$dir" --http "127.0.0.1:$port" --listen 127.0.0.1:0 &
node=$!
trap 'kill $node; wait $node 2>/dev/null; rm -rf "$dir"' EXIT
export WEFT_NODE="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$WEFT_NODE/healthz" >/dev/null && break; sleep 0.1; done
export WEFT_TOKEN=$(cat "$dir/token")

set -x
"$weft" deploy "$guests/hello.wasm" --name hello
"$weft" deploy "$guests/counter.wasm" --name counter
"$weft" deploy "$guests/wordcount.wasm" --name wordcount
"$weft" functions
"$weft" invoke hello /world
"$weft" invoke counter /apples
"$weft" invoke counter /apples
"$weft" job run wordcount --input README.md host/ARCHITECTURE.md --reducers 2
# An inverted index of the docs: each input line is DOC<TAB>TEXT.
for f in README.md host/ARCHITECTURE.md examples/README.md; do sed "s|^|$f\t|" "$f"; done >"$dir/docs.tsv"
"$weft" deploy "$guests/invindex.wasm" --name invindex
"$weft" job run invindex --input "$dir/docs.tsv" --reducers 2
# Log analytics: requests per status code and p95 response time per path, from an access log.
python3 -c '
import random
r = random.Random(1)
for i in range(5000):
    path, status = r.choice(["/", "/api/items", "/login"]), r.choice([200, 200, 200, 404, 500])
    print(f"10.0.0.{i % 250} - - [02/Dec/2026:10:00:00 +0000] \"GET {path} HTTP/1.1\" {status} 512 {r.expovariate(20):.3f}")
' >"$dir/access.log"
"$weft" deploy "$guests/logstats.wasm" --name logstats
"$weft" job run logstats --input "$dir/access.log" --reducers 2
"$weft" deploy "$guests/counter.wasm" --name hello
"$weft" invoke hello /now-a-counter
"$weft" rollback hello
"$weft" invoke hello /world
curl -s "$WEFT_NODE/metrics" | grep '^weft_invocations_total'
