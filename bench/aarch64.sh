#!/usr/bin/env bash
# Cross-builds Weft for aarch64-unknown-linux-gnu (64-bit Arm Linux) with Debian's cross gcc and
# libc, and runs what it built under qemu-aarch64 (Debian's qemu-user) as cargo's target runner.
#
#   bench/aarch64.sh check                             # cargo check of the workspace for aarch64 (CI runs this)
#   bench/aarch64.sh build                             # release `weft`: build time, stripped size, a node under qemu
#   bench/aarch64.sh test --lib                        # the host's tests under qemu; arguments go to cargo test
#   bench/aarch64.sh test --test it -- functions::     # a module of the integration tests
#
# Installs what is missing: the Rust standard library for the target (rustup target add) and
# gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (apt-get, with sudo when not root).
# The linker, the C compiler of crates built with `cc` (ring, mimalloc) and the runner are set
# through cargo's environment variables; nothing in the repository names the target. The guests
# are still built for wasm32 by host/build.rs, in the target directory's wasm-guests/ as for a
# native build. Builds in CARGO_TARGET_DIR when set (the default target directory otherwise, so
# that CI reuses the guests its native build made).
# `build` starts `weft node` on loopback under qemu, checks /healthz, deploys `hello` with the
# aarch64 CLI and calls it. Tests that start the `weft` binary themselves cannot run under
# qemu-user without binfmt_misc (the kernel refuses to exec an Arm binary): see bench/RESULTS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
triple=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

mode=${1:-}
[ $# -eq 0 ] || shift
case "$mode" in
  check | build | test) ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
  || [ ! -f "$sysroot/lib/crt1.o" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
fi
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
target_dir=${CARGO_TARGET_DIR:-$root/target}
# host/build.rs would put the guests beside the aarch64 artifacts (<target>/aarch64-unknown-linux-gnu);
# beside the native ones, a native build has already built them.
export WEFT_GUEST_TARGET_DIR=${WEFT_GUEST_TARGET_DIR:-$target_dir/wasm-guests}
qemu=(qemu-aarch64 -L "$sysroot")

echo "rustc $(rustc --version | cut -d' ' -f2), $(aarch64-linux-gnu-gcc --version | head -1)," \
  "$(qemu-aarch64 --version | head -1)"

case "$mode" in
  check)
    cargo check --workspace --target "$triple" --locked
    ;;

  test)
    cargo test -p weft-host --target "$triple" --locked "$@"
    ;;

  build)
    command -v curl >/dev/null || { echo "curl is missing (apt-get install curl)" >&2; exit 1; }
    start=$SECONDS
    cargo build --release -p weft-host --bin weft --target "$triple" --locked
    echo "release build: $((SECONDS - start)) s"
    weft="$target_dir/$triple/release/weft"
    file -b "$weft" 2>/dev/null | cut -d, -f1-2 || true
    tmp=$(mktemp -d)
    pid=""
    cleanup() {
      [ -z "$pid" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
      rm -rf "$tmp"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    aarch64-linux-gnu-strip -o "$tmp/weft" "$weft"
    echo "size: $(stat -c %s "$weft") bytes, stripped $(stat -c %s "$tmp/weft") bytes"
    "${qemu[@]}" "$weft" --version

    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    WEFT_LOG=${WEFT_LOG:-warn} "${qemu[@]}" "$weft" node --data-dir "$tmp/data" \
      --http "127.0.0.1:$port" --listen 127.0.0.1:0 >"$tmp/node.log" 2>&1 &
    pid=$!
    start=$SECONDS
    until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
      kill -0 "$pid" 2>/dev/null || { cat "$tmp/node.log" >&2; echo "weft node exited under qemu" >&2; exit 1; }
      [ $((SECONDS - start)) -lt 60 ] || { cat "$tmp/node.log" >&2; echo "no /healthz after 60 s" >&2; exit 1; }
      sleep 0.2
    done
    echo "weft node under qemu: /healthz answers after $((SECONDS - start)) s"
    hello="$WEFT_GUEST_TARGET_DIR/wasm32-wasip2/release/hello.wasm"
    WEFT_TOKEN=$(cat "$tmp/data/token") "${qemu[@]}" "$weft" --node "http://127.0.0.1:$port" \
      deploy "$hello" --name hello
    curl -fsS "http://127.0.0.1:$port/fn/hello/aarch64"
    echo
    ;;
esac
