#!/usr/bin/env bash
# Serving speed, side by side on loopback with one load generator (wrk), in alternating rounds:
# three components (Rust `hello`; a JavaScript hello built with componentize-js; a Python hello
# built with componentize-py), each served by
#   - `weft node`, a fresh instance per request (the default),
#   - another `weft node`, the same component deployed with `--reuse 1000000`,
#   - `wasmtime serve` (wasmtime-cli 48.0.8), a fresh instance per request,
# and, for `hello`, a plain axum handler answering the same text (bench/axum-hello): the HTTP
# limit on this machine. Every side is a process of its own, serving one component.
# Prints requests/s of each side and the ratios issue 17 asks for, and the CPU time each
# server spent per request (user + system, from /proc/PID/stat around each wrk run), which
# does not depend on how the cores are shared with the load generator.
#
#   bench/compare-serve.sh                       # 3 rounds of 10 s each, 8 connections
#   PIN=1 bench/compare-serve.sh                 # servers on CPU 0 only, wrk on CPU 1 only
#   ROUNDS=5 DURATION=20s CONNS=32 bench/compare-serve.sh
#   COMPONENTS="hello py" bench/compare-serve.sh
#   WEFT_BIN=/tmp/before/release/weft bench/compare-serve.sh   # a prebuilt weft
#   GUEST_PROCESSES=2 COMPONENTS="js py" bench/compare-serve.sh  # Weft's guest processes
#
# `wasmtime serve` runs in its best documented configuration for this workload, tuned as
# Weft's runtime is: the pooling allocator, with the same keep-resident sizes as Weft's
# defaults (8 MiB of linear memory, 16 KiB of tables; RuntimeConfig), resetting only the pages
# written (`pooling-pagemap-scan`, as Weft's `pagemap_scan`), and `-S cli`.
#
# The JavaScript and Python components are built here, outside the workspace's build, into
# GUESTS (default target/bench-guests), from npm (@bytecodealliance/componentize-js 0.23.0)
# and PyPI (componentize-py 0.25.1), against the wasi:http WIT of the wasmtime-wasi-http crate
# in use. The JavaScript handler implements `wasi:http/incoming-handler` directly rather than
# through a `fetch` event listener: StarlingMonkey cannot serve a second fetch event in one
# instance (bytecodealliance/StarlingMonkey#247), so a fetch-event component cannot be reused.
#
# Needs: wrk (apt-get install wrk), node and npm, python3 with venv, and wasmtime 48.0.8
#   (cargo install wasmtime-cli --version 48.0.8 --locked   # 10 to 17 minutes on 2 cores)
set -euo pipefail
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-8}
THREADS=${THREADS:-1}
COMPONENTS=${COMPONENTS:-hello js py}
# PIN=1: every server runs on SERVER_CPUS and wrk on LOAD_CPUS (taskset), so the load
# generator never takes CPU from the server it measures. Unpinned (the default), all share.
PIN=${PIN:-}
# GUEST_PROCESSES=N: every Weft side runs its WASI-only components in N guest processes
# (RuntimeConfig::guest_processes); their CPU is counted with the node's.
GUEST_PROCESSES=${GUEST_PROCESSES:-0}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
on_server=() on_load=()
if [ -n "$PIN" ]; then
  command -v taskset >/dev/null || { echo "taskset is missing (apt-get install util-linux)" >&2; exit 1; }
  on_server=(taskset -c "$SERVER_CPUS") on_load=(taskset -c "$LOAD_CPUS")
fi
# shellcheck source=bench/clusters.sh
source "$(dirname "$0")/clusters.sh" wrk node npm
GUESTS=${GUESTS:-$root/target/bench-guests}
WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
[ -n "$WASMTIME" ] || { echo "wasmtime is missing: cargo install wasmtime-cli --version 48.0.8 --locked" >&2; exit 1; }
"$WASMTIME" --version | grep -q '^wasmtime 48\.' || echo "warning: $("$WASMTIME" --version) is not 48.x" >&2
echo "weft: $weft_desc; $("$WASMTIME" --version); $(date -u +%FT%TZ)${PIN:+; servers on CPU $SERVER_CPUS, wrk on CPU $LOAD_CPUS}; guest processes: $GUEST_PROCESSES"

hello="$root/target/wasm-guests/wasm32-wasip2/release/hello.wasm"
[ -f "$hello" ] || cargo build --release -q -p weft-host
cargo build --release -q -p axum-hello
axum="$root/target/release/axum-hello"

# --- The JavaScript and Python components -------------------------------------------------
mkdir -p "$GUESTS"
build_guests() {
  local version http_crate wit=$GUESTS/wit
  version=$(grep -A1 '^name = "wasmtime-wasi-http"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
  http_crate=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"wasmtime-wasi-http-$version" | head -1)
  [ -d "$http_crate/wit/deps" ] || { echo "no wit/ in wasmtime-wasi-http $version: cargo fetch" >&2; exit 1; }
  rm -rf "$wit" && mkdir -p "$wit" && cp -r "$http_crate/wit/deps" "$wit/"
  # componentize-js 0.23's StarlingMonkey is built against wasi:http 0.2.10; the 0.2.x
  # interfaces are the same, and wasmtime links any 0.2.x.
  local wit_version
  wit_version=$(sed -n 's/^package wasi:http@\(.*\);$/\1/p' "$wit/deps/http.wit")
  sed -i "s/${wit_version//./\\.}/0.2.10/g" "$wit"/deps/*.wit
  cat >"$wit/world.wit" <<'WIT'
package local:hello;
world hello {
  import wasi:http/types@0.2.10;
  export wasi:http/incoming-handler@0.2.10;
}
WIT
  if [ ! -x "$GUESTS/node_modules/.bin/componentize-js" ]; then
    (cd "$GUESTS" && npm init -y >/dev/null && npm install --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0 >/dev/null)
  fi
  cat >"$GUESTS/hello.js" <<'JS'
import { Fields, OutgoingResponse, OutgoingBody, ResponseOutparam } from 'wasi:http/types@0.2.10';
const encoder = new TextEncoder();
export const incomingHandler = {
  handle(request, responseOut) {
    const name = (request.pathWithQuery() || '/').split('?')[0].split('/').pop();
    const response = new OutgoingResponse(Fields.fromList([['content-type', encoder.encode('text/plain')]]));
    const body = response.body();
    ResponseOutparam.set(responseOut, { tag: 'ok', val: response });
    const stream = body.write();
    stream.blockingWriteAndFlush(encoder.encode(`Hello, ${name}! (from JavaScript)\n`));
    stream[Symbol.dispose]();
    OutgoingBody.finish(body, undefined);
  },
};
JS
  "$GUESTS/node_modules/.bin/componentize-js" "$GUESTS/hello.js" --wit "$wit" -n hello \
    -d fetch-event -o "$GUESTS/hello-js.wasm" >/dev/null

  if [ ! -x "$GUESTS/venv/bin/componentize-py" ]; then
    python3 -m venv "$GUESTS/venv"
    "$GUESTS/venv/bin/pip" install -q componentize-py==0.25.1
  fi
  mkdir -p "$GUESTS/py"
  cat >"$GUESTS/py/app.py" <<'PY'
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        name = (request.path_with_query() or "/").split("?")[0].split("/")[-1]
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(f"Hello, {name}! (from Python)\n".encode())
        OutgoingBody.finish(body, None)
PY
  (cd "$GUESTS/py" && "$GUESTS/venv/bin/componentize-py" -d "$wit" -w hello componentize app \
    -o "$GUESTS/hello-py.wasm" >/dev/null)
}
case " $COMPONENTS " in *" js "* | *" py "*) build_guests ;; esac
component() { case $1 in hello) echo "$hello" ;; js) echo "$GUESTS/hello-js.wasm" ;; py) echo "$GUESTS/hello-py.wasm" ;; esac; }

# --- The servers ---------------------------------------------------------------------------
# weft_side NAME COMPONENT [DEPLOY ARGS...]: a `weft node` of its own serving COMPONENT as
# NAME, as `wasmtime serve` gets a process of its own per component. Sets url and pid.
# (Sides share no node: a node where a reused instance of a large component has run spends
# more CPU on that component's fresh instances; bench/RESULTS.md, session 27.)
declare -A url pid
weft_side() {
  local side=$1 f=$2 port dir
  shift 2
  port=$(free_port) dir="$tmp/weft-$side"
  WEFT_LOG=warn "${on_server[@]}" "$weft" node --data-dir "$dir" --http "127.0.0.1:$port" --listen 127.0.0.1:0 \
    --guest-processes "$GUEST_PROCESSES" >"$dir.log" 2>&1 &
  pids+=($!) pid[$side]=$!
  until_ok "weft node for $side" 30 curl -fs "http://127.0.0.1:$port/healthz"
  WEFT_TOKEN=$(cat "$dir/token") "$weft" --node "http://127.0.0.1:$port" deploy "$f" --name "${side%%.*}" "$@" >/dev/null
  url[$side]="http://127.0.0.1:$port/fn/${side%%.*}/bench"
}
for c in $COMPONENTS; do
  f=$(component "$c")
  printf '%s: %s bytes\n' "$c" "$(stat -c %s "$f")"
  weft_side "$c.weft" "$f"
  weft_side "$c.reuse" "$f" --reuse 1000000
  port=$(free_port)
  "${on_server[@]}" "$WASMTIME" serve -S cli \
    -O pooling-allocator=y,pooling-memory-keep-resident=8388608,pooling-table-keep-resident=16384,pooling-pagemap-scan=y \
    --addr "127.0.0.1:$port" "$f" >"$tmp/wasmtime-$c.log" 2>&1 &
  pids+=($!) pid[$c.wasmtime]=$!
  until_ok "wasmtime serve $c" 60 curl -fs "http://127.0.0.1:$port/bench"
  url[$c.wasmtime]="http://127.0.0.1:$port/bench"
  for side in weft reuse wasmtime; do
    [ "$(curl -fs "${url[$c.$side]}")" = "$(curl -fs "${url[$c.weft]}")" ] || { echo "$c: $side answers differently" >&2; exit 1; }
  done
done
sides_of() { if [ "$1" = hello ]; then echo "weft reuse wasmtime axum"; else echo "weft reuse wasmtime"; fi; }
case " $COMPONENTS " in *" hello "*)
  port=$(free_port)
  "${on_server[@]}" "$axum" "127.0.0.1:$port" &
  pids+=($!) pid[hello.axum]=$!
  until_ok "axum-hello" 30 curl -fs "http://127.0.0.1:$port/fn/hello/bench"
  url[hello.axum]="http://127.0.0.1:$port/fn/hello/bench"
  [ "$(curl -fs "${url[hello.axum]}")" = "$(curl -fs "${url[hello.weft]}")" ] || { echo "axum-hello answers differently" >&2; exit 1; } ;;
esac

# --- The load --------------------------------------------------------------------------------
# cpu_ticks PID: the user and system time PID and its running children (a node's guest
# processes) have used, in clock ticks.
cpu_ticks() {
  local p sum=0
  for p in "$1" $(pgrep -P "$1" || true); do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
tick=$(getconf CLK_TCK)
# run URL PID: prints requests/s and the server's CPU microseconds per request.
run() {
  local out before after
  before=$(cpu_ticks "$2")
  out=$("${on_load[@]}" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$1")
  after=$(cpu_ticks "$2")
  if grep -q 'Non-2xx' <<<"$out"; then echo "$1: $(grep 'Non-2xx' <<<"$out")" >&2; exit 1; fi
  awk -v ticks=$((after - before)) -v tick="$tick" '
    /requests in/ {n = $1}
    /Requests\/sec/ {rps = $2}
    END {printf "%s %.1f\n", rps, ticks / tick * 1e6 / n}' <<<"$out"
}
results="$tmp/results"
: >"$results"
for r in $(seq 1 "$ROUNDS"); do
  for c in $COMPONENTS; do
    for side in $(sides_of "$c"); do
      read -r v cpu < <(run "${url[$c.$side]}" "${pid[$c.$side]}")
      printf '%s %s %s %s %s\n' "$r" "$c" "$side" "$v" "$cpu" >>"$results"
      printf 'round %d  %-5s  %-8s  %10.0f req/s  %8.1f µs of server CPU per request\n' "$r" "$c" "$side" "$v" "$cpu"
    done
  done
done
python3 - "$results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, c, side, v, cpu = line.split()
    runs[(c, side, "rate")].append(float(v))
    runs[(c, side, "cpu")].append(float(cpu))
m = {k: statistics.median(v) for k, v in runs.items()}

def table(title, what, digits, ratios):
    """One row per component; `ratios` names three columns and says how each is made of the
    component's weft, reuse, wasmtime and axum figures (so that above 1 is better for weft)."""
    print(f"\n{title}")
    print(f"{'component':<10}{'weft':>10}{'weft --reuse':>14}{'wasmtime serve':>16}{'axum':>10}"
          + "".join(f"{name:>{width}}" for (name, _), width in zip(ratios, (15, 11, 13))))
    for c in dict.fromkeys(c for c, _, _ in m):
        x = [m.get((c, s, what)) for s in ("weft", "reuse", "wasmtime", "axum")]
        cells = [f"{v:.{digits}f}" if v else "-" for v in x]
        made = []
        for _, ratio in ratios:
            try:
                made.append(f"{ratio(*x):.2f}")
            except TypeError:  # no axum side for this component
                made.append("-")
        print(f"{c:<10}" + "".join(f"{v:>{w}}" for v, w in zip(cells + made, (10, 14, 16, 10, 15, 11, 13))))

table("medians (req/s) and ratios", "rate", 0, [
    ("weft/wasmtime", lambda w, r, t, a: w / t),
    ("weft/axum", lambda w, r, t, a: w / a),
    ("reuse/fresh", lambda w, r, t, a: r / w)])
table("median server CPU per request (µs; user + system) and its ratios (higher is better for weft)", "cpu", 1, [
    ("wasmtime/weft", lambda w, r, t, a: t / w),
    ("axum/weft", lambda w, r, t, a: a / w),
    ("fresh/reuse", lambda w, r, t, a: w / r)])
PY
