//! Compiled artifacts on disk, keyed by the module's blake3 digest and the engine's fingerprint,
//! so a restarted node loads machine code instead of compiling again.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::RuntimeError;
use crate::id::Digest;
use crate::metrics::Metrics;

pub(super) struct ArtifactCache {
    engine: Engine,
    dir: PathBuf,
    /// Hex of a blake3 hash over everything that makes compiled code compatible with this engine
    /// (wasmtime version, target, configuration).
    fingerprint: String,
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
    pub(super) fn new(engine: &Engine, dir: PathBuf) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            RuntimeError::Host(format!("creating the module cache {}: {e}", dir.display()))
        })?;
        let mut h = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = h.0.finalize().to_hex()[..16].to_string();
        Ok(ArtifactCache {
            engine: engine.clone(),
            dir,
            fingerprint,
        })
    }

    fn path(&self, digest: Digest) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.fingerprint))
    }

    /// The compiled component for `digest`: from disk if cached (`false`), else compiled from
    /// `bytes` (`true`; the caller stores it with [`ArtifactCache::store`] once it has linked).
    pub(super) fn load_or_compile(
        &self,
        digest: Digest,
        bytes: &[u8],
        metrics: &Metrics,
    ) -> Result<(Component, bool), RuntimeError> {
        let path = self.path(digest);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with this
            // fingerprint into the node's private data directory; wasmtime also checks its header
            // against the engine and refuses an incompatible artifact.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
            match loaded {
                Ok(c) => {
                    metrics.cache_hit("disk");
                    return Ok((c, false));
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "discarding unusable cached artifact");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        metrics.cache_miss();
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| RuntimeError::Invalid(super::chain(&e)))?;
        metrics.compile_seconds(started.elapsed());
        tracing::info!(%digest, elapsed = ?started.elapsed(), "compiled module");
        Ok((component, true))
    }

    /// Writes a compiled component to the cache (best effort: a full disk only costs a
    /// recompile later). The file appears whole or not at all.
    pub(super) fn store(&self, digest: Digest, component: &Component) {
        let path = self.path(digest);
        match component.serialize() {
            Ok(artifact) => {
                let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
                let written =
                    std::fs::write(&tmp, artifact).and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    tracing::warn!(%digest, error = %e, "could not cache the compiled module");
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "could not serialize the compiled module")
            }
        }
    }
}
