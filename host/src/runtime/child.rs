//! Compiling modules in a short-lived child process instead of on the node's own threads.
//!
//! The `weft` binary runs each compile as `weft __weft-compile-module`, a copy of itself that
//! reads the runtime configuration and the module on stdin, builds an engine of the same
//! configuration, writes the compiled artifact to stdout and exits. The node then loads the
//! artifact as it loads one from its disk cache. Three things come of it:
//! - the compiler's memory goes back to the system when the child exits, however large the
//!   module (a JavaScript or Python runtime takes hundreds of MB to compile);
//! - the node never runs Cranelift's code, so those pages of the binary are never made
//!   resident in it (measured in bench/RESULTS.md, "Footprint");
//! - a compiler that crashes or is killed (out of memory) fails that deploy, not the node.
//!
//! It costs a process start per compile (a few milliseconds beside a compile's tens to
//! thousands). A library user (the tests' in-process nodes) compiles on its own threads unless
//! it calls [`compile_in_child`]; so does the binary when the child cannot be started, or when
//! its artifact does not load (with a warning).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;

use super::RuntimeConfig;

/// The first argument that makes `weft` the compiler child (not a command anyone types).
pub const CHILD_ARG: &str = "__weft-compile-module";

/// Exit status of a child whose module did not compile (its stderr says why).
const INVALID: u8 = 2;

/// The executable a compile runs as, if compiles go to a child.
static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Makes this process compile modules in children of `exe` (which must handle [`CHILD_ARG`]
/// through [`child_main`]). Only the first call counts.
pub fn compile_in_child(exe: PathBuf) {
    let _ = COMPILER.set(exe);
}

/// What a compile in a child gave.
pub(super) enum Compiled {
    /// The serialized artifact.
    Artifact(Vec<u8>),
    /// The module is not valid: the compiler's message.
    Invalid(String),
    /// The child failed (crashed, was killed, or wrote something unexpected).
    Failed(String),
}

/// Compiles `bytes` in a child, or `None` when compiles are not configured to go to one or
/// the child could not be started (the caller compiles on its own threads).
pub(super) fn compile(config: &RuntimeConfig, bytes: &[u8]) -> Option<Compiled> {
    compile_with(COMPILER.get()?, config, bytes)
}

/// [`compile`] with `exe` as the compiler.
fn compile_with(exe: &Path, config: &RuntimeConfig, bytes: &[u8]) -> Option<Compiled> {
    let header = serde_json::to_vec(config).expect("the runtime config serializes");
    let mut child = match Command::new(exe)
        .arg(CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(exe = %exe.display(), error = %e, "could not start the compiler process; compiling on the node's threads");
            return None;
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    // Written from a thread of its own while this one reads the child's output: the child reads
    // all of its input before it writes, but a pipe holds only so much of either.
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            stdin.write_all(&(header.len() as u64).to_le_bytes())?;
            stdin.write_all(&header)?;
            stdin.write_all(bytes)
        });
        let output = child.wait_with_output();
        let written = writer.join().unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the thread writing to the compiler panicked",
            ))
        });
        (written, output)
    });
    let output = match output {
        Ok(o) => o,
        Err(e) => return Some(Compiled::Failed(format!("waiting for the compiler: {e}"))),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Some(match output.status.code() {
        Some(0) => match written {
            Ok(()) => Compiled::Artifact(output.stdout),
            Err(e) => Compiled::Failed(format!("sending the module to the compiler: {e}")),
        },
        Some(code) if code == i32::from(INVALID) => Compiled::Invalid(stderr),
        _ => Compiled::Failed(format!(
            "the compiler process ended with {}{}",
            output.status,
            if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            }
        )),
    })
}

/// The child's side: reads the configuration and the module from stdin, writes the compiled
/// artifact to stdout. Exit status 0 when compiled, [`INVALID`] when the module is not valid,
/// 1 on anything else; the reason goes to stderr.
pub fn child_main() -> ExitCode {
    match compile_stdin() {
        Ok(Ok(artifact)) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writing the artifact: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Err(invalid)) => {
            eprintln!("{invalid}");
            ExitCode::from(INVALID)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(Err(message))` for a module that does not compile; `Err` for a broken request.
fn compile_stdin() -> Result<Result<Vec<u8>, String>, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let (len, rest) = input
        .split_first_chunk::<8>()
        .ok_or("stdin holds no configuration")?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|e| e.to_string())?;
    if rest.len() < len {
        return Err("stdin ends inside the configuration".into());
    }
    let (header, module) = rest.split_at(len);
    let config: RuntimeConfig =
        serde_json::from_slice(header).map_err(|e| format!("the configuration: {e}"))?;
    let engine = wasmtime::Engine::new(&super::engine_config(&config))
        .map_err(|e| format!("creating the engine: {e}"))?;
    Ok(engine
        .precompile_component(module)
        .map_err(|e| super::chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `compile_with` on a shell script standing in for the compiler.
    fn with_script(script: &str) -> Option<Compiled> {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("compiler");
        std::fs::write(&exe, format!("#!/bin/sh\ncat >/dev/null\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        compile_with(&exe, &RuntimeConfig::default(), &[0u8; 300_000])
    }

    #[test]
    fn each_way_a_compiler_child_ends_is_told_apart() {
        // The module is larger than a pipe holds, so a child that reads it all is needed.
        match with_script("printf artifact") {
            Some(Compiled::Artifact(a)) => assert_eq!(a, b"artifact"),
            _ => panic!("a child exiting 0 gives its stdout as the artifact"),
        }
        match with_script("echo 'invalid section' >&2; exit 2") {
            Some(Compiled::Invalid(m)) => assert_eq!(m, "invalid section"),
            _ => panic!("exit 2 means the module is invalid"),
        }
        match with_script("echo 'out of memory' >&2; kill -9 $$") {
            Some(Compiled::Failed(m)) => {
                assert!(
                    m.contains("signal: 9") && m.contains("out of memory"),
                    "{m}"
                )
            }
            _ => panic!("a killed child is a failure"),
        }
        match with_script("exit 1") {
            Some(Compiled::Failed(m)) => assert!(m.contains("exit status: 1"), "{m}"),
            _ => panic!("exit 1 is a failure"),
        }
        let missing = Path::new("/nonexistent/weft");
        assert!(
            compile_with(missing, &RuntimeConfig::default(), b"").is_none(),
            "a compiler that cannot start leaves the compile to the caller"
        );
    }
}
