//! Compiled artifacts on disk, keyed by the module's blake3 digest and the engine's fingerprint,
//! so a restarted node loads machine code instead of compiling again.
//!
//! The directory is held to a budget (`RuntimeConfig::compiled_cache_bytes`): after each store,
//! the least recently used artifacts go until the rest fit (the one just stored stays), and a
//! module whose artifact went is compiled again when next needed. Recency is the file's
//! modification time, refreshed on every load, so it survives restarts; artifacts of another
//! engine (an earlier wasmtime, another configuration) are never used and go first.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::child::Compiled;
use super::{RuntimeConfig, RuntimeError};
use crate::id::Digest;
use crate::metrics::Metrics;

/// Where [`ArtifactCache::load_or_compile`] got a component.
pub(super) enum Origin {
    /// The cache file: nothing to store.
    Disk,
    /// A compiler child, with the artifact it wrote, which is what the cache file holds.
    Child(Vec<u8>),
    /// A compile on the node's own threads.
    Node,
}

pub(super) struct ArtifactCache {
    engine: Engine,
    dir: PathBuf,
    /// Hex of a blake3 hash over everything that makes compiled code compatible with this engine
    /// (wasmtime version, target, configuration).
    fingerprint: String,
    /// The most the artifacts may take together.
    budget: u64,
    /// Each artifact file: its size and when it was last used.
    files: Mutex<HashMap<PathBuf, (u64, SystemTime)>>,
    metrics: Arc<Metrics>,
}

/// Feeds `Hash` data into blake3, which is stable across Rust versions (unlike `DefaultHasher`).
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        let hash = self.0.finalize();
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

impl ArtifactCache {
    pub(super) fn new(
        engine: &Engine,
        dir: PathBuf,
        budget: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            RuntimeError::Host(format!("creating the module cache {}: {e}", dir.display()))
        })?;
        let mut h = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = h.0.finalize().to_hex()[..16].to_string();
        let mut files = HashMap::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp-") {
                // A store cut short by a crash.
                let _ = std::fs::remove_file(&path);
            } else if name.ends_with(".cwasm") && meta.is_file() {
                let used = if name.contains(&fingerprint) {
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
                } else {
                    SystemTime::UNIX_EPOCH
                };
                files.insert(path, (meta.len(), used));
            }
        }
        let cache = ArtifactCache {
            engine: engine.clone(),
            dir,
            fingerprint,
            budget,
            files: Mutex::new(files),
            metrics,
        };
        cache.evict(None);
        Ok(cache)
    }

    /// Removes the least recently used artifacts, except `keep`, until the rest fit the budget.
    fn evict(&self, keep: Option<&PathBuf>) {
        let mut files = self.files.lock().expect("not poisoned");
        let mut total: u64 = files.values().map(|(size, _)| size).sum();
        if total > self.budget {
            let mut by_age: Vec<(SystemTime, PathBuf, u64)> = files
                .iter()
                .filter(|(p, _)| Some(*p) != keep)
                .map(|(p, (size, used))| (*used, p.clone(), *size))
                .collect();
            by_age.sort();
            for (_, path, size) in by_age {
                if total <= self.budget {
                    break;
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not evict a compiled module");
                        continue;
                    }
                }
                files.remove(&path);
                total -= size;
                self.metrics.cache_evicted();
                tracing::debug!(path = %path.display(), "evicted a compiled module (least recently used)");
            }
        }
        self.metrics.cache_disk_bytes(total);
    }

    /// Marks `path` used now, on disk too (its modification time), so recency survives a restart.
    fn touch(&self, path: &PathBuf, size: u64) {
        let now = SystemTime::now();
        if let Ok(f) = std::fs::File::options().write(true).open(path) {
            let _ = f.set_modified(now);
        }
        self.files
            .lock()
            .expect("not poisoned")
            .insert(path.clone(), (size, now));
    }

    fn path(&self, digest: Digest) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.fingerprint))
    }

    /// The compiled component for `digest`: from disk if cached, else compiled from `bytes`
    /// (the caller stores it with [`ArtifactCache::store`] once it has linked).
    pub(super) fn load_or_compile(
        &self,
        digest: Digest,
        bytes: &[u8],
        config: &RuntimeConfig,
        metrics: &Metrics,
    ) -> Result<(Component, Origin), RuntimeError> {
        let path = self.path(digest);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with this
            // fingerprint into the node's private data directory; wasmtime also checks its header
            // against the engine and refuses an incompatible artifact.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
            match loaded {
                Ok(c) => {
                    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                    self.touch(&path, size);
                    metrics.cache_hit("disk");
                    return Ok((c, Origin::Disk));
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "discarding unusable cached artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        metrics.cache_miss();
        let started = std::time::Instant::now();
        let (component, origin) = match super::child::compile(config, bytes) {
            Some(Compiled::Artifact(artifact)) => {
                // SAFETY: the artifact was made by `Engine::precompile_component` in a child
                // running this very executable, for an engine of this configuration, and came
                // over a private pipe; wasmtime also checks its header against the engine.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(&self.engine, &artifact) };
                match loaded {
                    Ok(c) => (c, Origin::Child(artifact)),
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "the compiler process's artifact does not load; compiling on the node's threads");
                        (self.compile_here(bytes)?, Origin::Node)
                    }
                }
            }
            Some(Compiled::Invalid(message)) => return Err(RuntimeError::Invalid(message)),
            Some(Compiled::Failed(message)) => {
                return Err(RuntimeError::Host(format!(
                    "compiling module {digest}: {message}"
                )));
            }
            None => (self.compile_here(bytes)?, Origin::Node),
        };
        let process = match origin {
            Origin::Child(_) => "child",
            _ => "node",
        };
        metrics.compiled(process, started.elapsed());
        tracing::info!(%digest, elapsed = ?started.elapsed(), process, "compiled module");
        Ok((component, origin))
    }

    fn compile_here(&self, bytes: &[u8]) -> Result<Component, RuntimeError> {
        Component::new(&self.engine, bytes).map_err(|e| RuntimeError::Invalid(super::chain(&e)))
    }

    /// Writes a compiled component to the cache: `artifact` if the child made it, else the
    /// component serialized (best effort: a full disk only costs a recompile later). The file
    /// appears whole or not at all.
    pub(super) fn store(&self, digest: Digest, component: &Component, artifact: Option<Vec<u8>>) {
        let path = self.path(digest);
        match artifact.map_or_else(|| component.serialize(), Ok) {
            Ok(artifact) => {
                let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
                let size = artifact.len() as u64;
                let written =
                    std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &path));
                match written {
                    Ok(()) => {
                        self.touch(&path, size);
                        self.evict(Some(&path));
                    }
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "could not cache the compiled module");
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "could not serialize the compiled module")
            }
        }
    }
}
