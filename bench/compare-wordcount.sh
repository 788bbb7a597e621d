#!/usr/bin/env bash
# Word count: Weft's `wordcount` plugin against a naive single-threaded native Rust count (the
# COST baseline: McSherry et al., HotOS 2015) and pyspark in `local[nproc]`, on the same generated
# text, in one run. Prints MB/s of input for each and the ratios; checks that all three find
# the same number of words and distinct words.
#
#   bench/compare-wordcount.sh                  # 48 MiB of text, 3 rounds
#   SIZE_MB=200 ROUNDS=5 bench/compare-wordcount.sh
#   WEFT_BIN=/path/to/weft bench/compare-wordcount.sh
#
# Weft, twice: one `weft node` alone, and a cluster of three `weft node`s on loopback (on this
# machine all sharing its cores), all with defaults; `weft job run wordcount --input FILE
# --reducers 4` against node 1, timed from the CLI's start to its result (upload, chunking,
# map, shuffle, reduce, commit), with the corpus in the page cache. On the cluster the job's
# tasks spread over the three nodes (each runs as many at once as the machine has cores) and
# reducers pull map output over QUIC.
# Native: bench/wc-native.rs built with `rustc -O`, timed from reading the file to the count.
# pyspark: bench/wc-spark.py, `local[N]` with N = nproc (one worker thread per core), written
# with the RDD API (textFile + flatMap + reduceByKey + collect, Python workers) and with the
# DataFrame API (split + explode + groupBy().count(), all in the JVM); each API's rounds in one
# session after a warm-up run (the JVM's start and first-run compilation are not counted). The
# ratio is against the faster of the two. Every side gets the same one warm-up round; Weft's
# (the input's upload) is printed apart.
#
# Needs: python3, curl, rustc, pyspark (pip install pyspark) and Java 17.
# With WEFT_BIN, the host is that binary but the `wordcount` guest is this tree's build.
set -euo pipefail
SIZE_MB=${SIZE_MB:-48}
ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" rustc java
python3 -c 'import pyspark' 2>/dev/null || { echo "pyspark is missing: pip install pyspark" >&2; exit 1; }
wordcount="$root/target/wasm-guests/wasm32-wasip2/release/wordcount.wasm"
[ -f "$wordcount" ] || { echo "no $wordcount: build the host once (cargo build -p weft-host)" >&2; exit 1; }

# Spark gets one worker thread per core, as Weft's nodes use every core.
cores=$(nproc)
corpus="$tmp/corpus.txt"
python3 "$root/bench/gen-text.py" "$SIZE_MB" 1 >"$corpus"
bytes=$(stat -c %s "$corpus")
rustc -O --edition 2024 "$root/bench/wc-native.rs" -o "$tmp/wc-native"

start_weft
until_ok "node 1's API" 60 curl -fs "http://127.0.0.1:${whttp[1]}/v1/status"
cluster_node="http://127.0.0.1:${whttp[1]}"
export WEFT_TOKEN=$weft_token
until_ok "a deploy of wordcount" 120 env WEFT_NODE="$cluster_node" "$weft" deploy "$wordcount" --name wordcount
# The lone node: a cluster of its own (its own CA and token, in its data directory).
lone_http=$(free_port SOCK_STREAM)
WEFT_LOG=warn "$weft" node --name lone --data-dir "$tmp/weft-lone" --http "127.0.0.1:$lone_http" \
  --listen "127.0.0.1:$(free_port SOCK_DGRAM)" >"$tmp/weft-lone.log" 2>&1 &
pids+=($!)
lone_node="http://127.0.0.1:$lone_http"
until_ok "the lone node's API" 60 curl -fs "$lone_node/v1/status"
lone_token=$(cat "$tmp/weft-lone/token" 2>/dev/null || cat "$tmp/weft-lone/cluster/admin.token")
until_ok "a deploy of wordcount on the lone node" 120 env WEFT_NODE="$lone_node" WEFT_TOKEN="$lone_token" "$weft" deploy "$wordcount" --name wordcount

results="$tmp/results.tsv"
: >"$results"
# weft_round SIDE NODE TOKEN
weft_round() {
  local side=$1 started ended id
  export WEFT_NODE=$2 WEFT_TOKEN=$3
  started=$(date +%s%N)
  id=$("$weft" job run wordcount --input "$corpus" --reducers 4 --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["status"] == "succeeded", r
print(r["id"])')
  ended=$(date +%s%N)
  "$weft" job output "$id" | python3 -c '
import json, sys
words = distinct = 0
for line in sys.stdin:
    words += json.loads(line)["value"]; distinct += 1
print(f"{sys.argv[2]}\t{int(sys.argv[1]) / 1e9:.3f}\t{words}\t{distinct}")' "$((ended - started))" "$side" >>"$results"
}
native_round() {
  "$tmp/wc-native" "$corpus" | sed -E 's/words=([0-9]+) distinct=([0-9]+) seconds=([0-9.]+)/native\t\3\t\1\t\2/' >>"$results"
}
# A warm-up round for every side, not counted, as pyspark gets one (its JVM's start and
# first compilation): Weft's first run uploads the input (later runs find every chunk held)
# and fills its caches. Its time is printed apart.
native_round
weft_round weft "$lone_node" "$lone_token"
weft_round weft-3 "$cluster_node" "$weft_token"
first=$(tail -3 "$results" | cut -f1,2 | tr '\n' ' ')
echo "warm-up (with the upload): $first" >&2
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
  native_round
  weft_round weft "$lone_node" "$lone_token"
  weft_round weft-3 "$cluster_node" "$weft_token"
  echo "round $r: $(tail -3 "$results" | cut -f1,2 | tr '\n' ' ')" >&2
done
python3 "$root/bench/wc-spark.py" "$corpus" "$cores" $((ROUNDS + 1)) >"$tmp/spark.out" 2>"$tmp/spark.log" ||
  { tail -20 "$tmp/spark.log" >&2; echo "pyspark failed (its log above)" >&2; exit 1; }
for api in rdd df; do
  grep "^RESULT api=$api " "$tmp/spark.out" | tail -n "$ROUNDS" |
    sed -E "s/RESULT api=$api seconds=([0-9.]+) words=([0-9]+) distinct=([0-9]+)/spark-$api\t\1\t\2\t\3/" >>"$results"
done

echo
echo "weft $("$weft" --version | awk '{print $2}') ($weft_desc): one node alone, and 3 nodes with the job submitted to node 1"
echo "input: $((bytes / 1048576)) MiB of generated text (bench/gen-text.py $SIZE_MB 1); $ROUNDS rounds after one warm-up round per side; MB/s = 10^6 bytes per second, mean over rounds"
echo "warm-up round, seconds (Weft's includes uploading the input): $first"
python3 - "$results" "$bytes" "$cores" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
answers = set()
for line in open(sys.argv[1]):
    side, seconds, words, distinct = line.split()
    runs[side].append(float(seconds))
    answers.add((int(words), int(distinct)))
size, cores = int(sys.argv[2]), int(sys.argv[3])
rate = {s: statistics.mean(size / t / 1e6 for t in ts) for s, ts in runs.items()}
print()
print("| side | seconds (median) | MB/s |")
print("| --- | ---: | ---: |")
names = {
    "weft": "Weft `wordcount` job, one node",
    "weft-3": "Weft `wordcount` job, 3 nodes on this machine",
    "native": "naive native count, 1 thread",
    "spark-rdd": f"pyspark `local[{cores}]`, RDD API (Python workers)",
    "spark-df": f"pyspark `local[{cores}]`, DataFrame API (JVM only)",
}
for s in ("weft", "weft-3", "native", "spark-rdd", "spark-df"):
    print(f"| {names[s]} | {statistics.median(runs[s]):.2f} | {rate[s]:.1f} |")
print()
spark = max(rate["spark-rdd"], rate["spark-df"])
for s, label in (("weft", "one node"), ("weft-3", "3 nodes")):
    print(f"weft ({label})/pyspark (its faster API) {rate[s] / spark:.2f}x; weft/native {rate[s] / rate['native']:.2f}x "
          f"(per core, {cores} cores: {rate[s] / cores / rate['native']:.2f}x)")
if len(answers) != 1:
    sys.exit(f"the sides disagree on (words, distinct): {sorted(answers)}")
print(f"all sides counted {answers.pop()[0]:,} words")
PY
