//! Builds the guests in `plugins/` for `wasm32-wasip2` from source.
//!
//! Following the pattern of wasmtime's `crates/test-programs/artifacts/build.rs`, the guests are
//! compiled by a nested `cargo build` with a target directory of their own (beside the host's, so
//! debug and release builds of the host share it), and their location is handed to the host crate
//! through `WEFT_GUESTS_DIR`. The `weft` binary embeds the first-party plugins for `weft demo`;
//! the tests load every guest from that directory. No `.wasm` file is ever committed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every guest crate under `plugins/`, by package name.
const GUESTS: &[&str] = &[
    "hello",
    "counter",
    "cache",
    "bank",
    "ledger",
    "wordcount",
    "invindex",
    "logstats",
    "guest-loop",
    "guest-memhog",
    "guest-panic",
    "guest-memo",
    "guest-escape",
    "guest-stream",
    "guest-mapfaults",
    "guest-rawtask",
    "guest-records",
    "guest-standard",
];

const TARGET: &str = "wasm32-wasip2";

/// Guests that are plain WASI 0.1 programs (a `main`), built for `wasm32-wasip1`, by package
/// name and program name: the node turns them into components at deploy.
const WASIP1_GUESTS: &[(&str, &str)] = &[("wagi-echo", "wagi_echo")];

const WASIP1: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    for dir in ["plugins", "sdk"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=WEFT_GUEST_TARGET_DIR");

    let target_dir = guest_target_dir();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_wasm_target(TARGET);
    ensure_wasm_target(WASIP1);

    // One invocation per guest: cargo unifies the SDK's features across the packages of one
    // build, and a handler must not carry the map/reduce world (nor the other way round).
    let builds = GUESTS
        .iter()
        .map(|g| (*g, TARGET))
        .chain(WASIP1_GUESTS.iter().map(|(g, _)| (*g, WASIP1)));
    for (guest, target) in builds {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root)
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                target,
                "--package",
                guest,
            ])
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            // A 64 KiB shadow stack instead of rustc's 1 MiB default: the stack comes first in
            // linear memory, so this puts the stack, data and heap start in the first few hundred
            // KiB, which the runtime keeps resident between instances.
            .env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=-zstack-size=65536")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        // The outer build's settings are for the host, not for the guests.
        for var in [
            "RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "RUSTC_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
            "__CARGO_FIX_PLZ",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("could not run cargo to build guest `{guest}`: {e}"));
        if !status.success() {
            panic!("building guest `{guest}` for {target} failed (see the errors above)");
        }
    }

    let out = target_dir.join(TARGET).join("release");
    for guest in GUESTS {
        let file = out.join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(
            file.exists(),
            "guest `{guest}` built but {} is missing",
            file.display()
        );
    }
    println!("cargo:rustc-env=WEFT_GUESTS_DIR={}", out.display());
    let out = target_dir.join(WASIP1).join("release");
    for (guest, program) in WASIP1_GUESTS {
        let file = out.join(format!("{program}.wasm"));
        assert!(
            file.exists(),
            "guest `{guest}` built but {} is missing",
            file.display()
        );
    }
    println!("cargo:rustc-env=WEFT_WASIP1_GUESTS_DIR={}", out.display());
}

/// `target/wasm-guests` beside the host's own target directory, or `WEFT_GUEST_TARGET_DIR`.
fn guest_target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("WEFT_GUEST_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out.
    let target = out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("guests"));
    target.join("wasm-guests")
}

/// Fails the build with instructions when the standard library for `target` is missing.
/// `rust-toolchain.toml` names the target, so rustup installs it with the toolchain; a toolchain
/// that was installed before the file existed lacks it, and rustup adds it here when it can.
fn ensure_wasm_target(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(target).join("lib").is_dir();
    let Some(sysroot) = sysroot else { return };
    if installed(&sysroot) {
        return;
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut add = Command::new("rustup");
    add.args(["target", "add", target]);
    if let Some(t) = &toolchain {
        add.args(["--toolchain", t]);
    }
    let added = add.status().map(|s| s.success()).unwrap_or(false);
    if !(added && installed(&sysroot)) {
        panic!(
            "the Rust standard library for {target} is not installed, and Weft's guests need it.\n\
             Install it with:  rustup target add {target}\n\
             (rust-toolchain.toml lists it, so `rustup toolchain install` in the repository also works.)"
        );
    }
}
