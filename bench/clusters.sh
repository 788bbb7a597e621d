# Shared by the comparison scripts (sourced, not run): a 3-node Weft cluster and a 3-member
# etcd cluster on loopback, the processes cleaned up on exit, and small waiting helpers.
#
# Sets: root, weft, weft_desc, tmp, pids; after start_weft: whttp[1..3], wquic[1..3],
# weft_token; after start_etcd: eclient[1..3], etcd_endpoints, etcd_url (the leader),
# etcd_version.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install wrk etcd-server etcd-client python3 curl openjdk-17-jre-headless; rustc comes with rustup)" >&2; exit 1; }
  done
}
need python3 curl "$@"
if [ -n "${WEFT_BIN:-}" ]; then
  weft=$WEFT_BIN
  weft_desc="WEFT_BIN=$WEFT_BIN"
else
  weft_desc="built from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  [ -z "$(git status --porcelain -- host sdk plugins Cargo.toml Cargo.lock 2>/dev/null)" ] || weft_desc+=" with uncommitted changes"
  cargo build --release -q -p weft-host --bin weft
  weft="$root/target/release/weft"
fi

tmp=$(mktemp -d)
pids=()
any_alive() { local p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
cleanup() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # An etcd leader spends seconds trying to hand over leadership to members already gone.
  for i in $(seq 1 50); do any_alive || break; sleep 0.1; done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "${1:-SOCK_STREAM}"; }
# until_ok DESCRIPTION SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds.
until_ok() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
    sleep 0.2
  done
}

# start_weft [ARGS...]: three `weft node`s (node-1..3) as in examples/three-nodes.sh, each
# with ARGS, logging at WEFT_LOG (default warn) to $tmp/weft-N.log.
declare -a whttp wquic
start_weft() {
  local i join
  "$weft" cluster init "$tmp/cluster" >/dev/null
  for i in 1 2 3; do
    "$weft" cluster issue "$tmp/cluster" --node "node-$i" >/dev/null
    whttp[$i]=$(free_port SOCK_STREAM); wquic[$i]=$(free_port SOCK_DGRAM)
  done
  for i in 1 2 3; do
    join=()
    [ "$i" = 1 ] || join=(--join "127.0.0.1:${wquic[1]}")
    WEFT_LOG=${WEFT_LOG:-warn} "$weft" node --cluster "$tmp/cluster" --name "node-$i" --data-dir "$tmp/weft-$i" \
      --http "127.0.0.1:${whttp[$i]}" --listen "127.0.0.1:${wquic[$i]}" "${join[@]}" "$@" \
      >"$tmp/weft-$i.log" 2>&1 &
    pids+=($!)
  done
  weft_token=$(cat "$tmp/cluster/admin.token")
}

# start_etcd: three etcd members with default settings (fsync on); waits for a leader.
declare -a eclient epeer
start_etcd() {
  local i initial=""
  need "$ETCD" "$ETCDCTL"
  for i in 1 2 3; do
    eclient[$i]=$(free_port); epeer[$i]=$(free_port)
    initial+="${initial:+,}e$i=http://127.0.0.1:${epeer[$i]}"
  done
  for i in 1 2 3; do
    "$ETCD" --name "e$i" --data-dir "$tmp/etcd-$i" --logger zap --log-level warn \
      --listen-client-urls "http://127.0.0.1:${eclient[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${eclient[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${epeer[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${epeer[$i]}" \
      --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token weft-bench \
      >"$tmp/etcd-$i.log" 2>&1 &
    pids+=($!)
  done
  etcd_endpoints="http://127.0.0.1:${eclient[1]},http://127.0.0.1:${eclient[2]},http://127.0.0.1:${eclient[3]}"
  until_ok "etcd to be healthy" 60 env ETCDCTL_API=3 "$ETCDCTL" --endpoints "$etcd_endpoints" endpoint health
  until_ok "an etcd leader" 30 etcd_has_leader
  etcd_url=$(etcd_leader)
  etcd_version=$("$ETCD" --version | awk '/etcd Version/ {print $3}')
}
etcd_leader() {
  ETCDCTL_API=3 "$ETCDCTL" --endpoints "$etcd_endpoints" endpoint status -w json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["Status"]["header"]["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"])'
}
etcd_has_leader() { [ -n "$(etcd_leader)" ]; }
