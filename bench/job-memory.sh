#!/usr/bin/env bash
# Memory of a large word count: a 3-node cluster on loopback, all defaults (each node holds at
# most 256 MiB of map output in memory, `JobsConfig::shuffle_memory_bytes`, and spills the
# rest), runs `wordcount` over SIZE_MB of generated text; every node's resident set size is
# sampled every 100 ms from before the upload to the end of the job. Prints each node's
# largest RSS, how much map output was spilled, and the job's time.
#
#   bench/job-memory.sh                 # 1023 MiB (a job takes at most 1 GiB of input by default)
#   SIZE_MB=256 bench/job-memory.sh
#   NODE_ARGS="--shuffle-memory-mib 16" bench/job-memory.sh   # a smaller budget: more is spilled
#
# Needs: python3, curl.
set -euo pipefail
SIZE_MB=${SIZE_MB:-1023}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh"
wordcount="$root/target/wasm-guests/wasm32-wasip2/release/wordcount.wasm"
[ -f "$wordcount" ] || { echo "no $wordcount: build the host once (cargo build -p weft-host)" >&2; exit 1; }

corpus="$tmp/corpus.txt"
python3 "$root/bench/gen-text.py" "$SIZE_MB" 1 >"$corpus"
bytes=$(stat -c %s "$corpus")

# shellcheck disable=SC2086
start_weft ${NODE_ARGS:-}
until_ok "node 1's API" 60 curl -fs "http://127.0.0.1:${whttp[1]}/v1/status"
export WEFT_NODE="http://127.0.0.1:${whttp[1]}" WEFT_TOKEN=$weft_token
until_ok "a deploy of wordcount" 120 "$weft" deploy "$wordcount" --name wordcount

# Samples each node's RSS (kB) until told to stop.
sampler() {
  while [ ! -e "$tmp/stop" ]; do
    for p in "${pids[@]}"; do
      awk -v p="$p" '/^VmRSS:/ {print p, $2}' "/proc/$p/status" 2>/dev/null || true
    done
    sleep 0.1
  done >"$tmp/rss.txt"
}
idle=$(for p in "${pids[@]}"; do awk '/^VmRSS:/ {print $2}' "/proc/$p/status"; done | sort -n | tail -1)
sampler &
sampler_pid=$!
started=$(date +%s%N)
"$weft" job run wordcount --input "$corpus" --reducers 4 --json >"$tmp/job.json"
ended=$(date +%s%N)
touch "$tmp/stop"
wait "$sampler_pid"

echo "weft $("$weft" --version | awk '{print $2}') ($weft_desc), 3 nodes on this machine, node arguments: ${NODE_ARGS:-none (defaults)}"
echo "input: $((bytes / 1048576)) MiB of generated text (bench/gen-text.py $SIZE_MB 1); largest idle RSS before the job: $((idle / 1024)) MiB"
python3 - "$tmp/rss.txt" "$tmp/job.json" "$bytes" "$(((ended - started) / 1000000))" "${pids[@]}" <<'PY'
import collections, json, sys
rss = collections.defaultdict(int)
for line in open(sys.argv[1]):
    pid, kb = line.split()
    rss[pid] = max(rss[pid], int(kb))
job = json.load(open(sys.argv[2]))
assert job["status"] == "succeeded", job
size, ms, pids = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
print()
print("| node | largest RSS during the job |")
print("| --- | ---: |")
for i, pid in enumerate(pids, 1):
    print(f"| node-{i} | {rss[pid] / 1024:.0f} MiB |")
print()
print(f"job: {ms / 1000:.1f} s ({size / ms / 1000:.1f} MB/s), {job['progress']['maps_total']} map tasks, "
      f"{job['spilled_bytes'] / 2**20:.0f} MiB of map output spilled, {job['fetched_bytes'] / 2**20:.0f} MiB pulled between nodes, "
      f"attempts by node {job.get('tasks_by_node')}")
PY
