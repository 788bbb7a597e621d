//! Node configuration as plain data, with documented defaults and presets.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything a node needs to start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its sled database, compiled-module cache, job output and token.
    pub data_dir: PathBuf,
    /// The HTTP API's address. Port 0 picks a free port (tests and the demo use this).
    pub http: SocketAddr,
    /// Limits on what clients may send.
    #[serde(default)]
    pub limits: Limits,
    /// The Wasm runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
}

impl NodeConfig {
    /// A node on `127.0.0.1:0` keeping its state in `data_dir`, with default limits.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
        }
    }
}

/// Limits on client input. Each is checked before any work is done on the input.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest module accepted by `PUT /v1/functions/{name}`, in bytes. Default 50 MiB.
    /// Larger modules are refused with 413 before compiling.
    pub max_module_bytes: NonZeroUsize,
    /// Largest request body passed to an HTTP handler, in bytes. Default 10 MiB.
    pub max_request_body: NonZeroUsize,
    /// Largest map/reduce input accepted by `POST /v1/jobs`, in bytes. Default 1 GiB.
    pub max_job_input: NonZeroU64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: NonZeroUsize::new(50 << 20).expect("non-zero"),
            max_request_body: NonZeroUsize::new(10 << 20).expect("non-zero"),
            max_job_input: NonZeroU64::new(1 << 30).expect("non-zero"),
        }
    }
}

/// The Wasm runtime: per-invocation limits and the instance pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one invocation (one HTTP request, or one map/combine/reduce call)
    /// unless the function's manifest says otherwise. Default 10 s.
    /// A guest past its deadline is stopped at the next epoch tick and the request gets 504.
    #[serde(with = "millis")]
    pub default_timeout: Duration,
    /// Linear-memory cap of one instance unless the function's manifest says otherwise.
    /// Default 128 MiB. Growth past it fails, and the invocation ends with a clear error.
    pub default_memory_bytes: NonZeroU64,
    /// Upper bound for a per-function memory cap. Default 1 GiB.
    pub max_memory_bytes: NonZeroU64,
    /// Upper bound for a per-function timeout. Default 5 minutes.
    #[serde(with = "millis")]
    pub max_timeout: Duration,
    /// Instances alive at once (the pooling allocator's slot count). Default 256.
    /// Requests beyond it wait for a free slot. Each slot reserves address space, not memory.
    pub max_instances: NonZeroU32,
    /// How often the epoch ticks: the granularity of deadlines and of fair yielding between
    /// guests sharing a thread. Default 10 ms. Shorter is fairer and costs more wake-ups.
    #[serde(with = "millis")]
    pub epoch_tick: Duration,
    /// Largest output a single map or reduce call may emit, in bytes. Default 256 MiB.
    pub max_emit_bytes: NonZeroU64,
    /// Bytes at the start of each pooled linear memory kept resident between instances and reset
    /// with memset rather than returned with madvise. Default 128 KiB. Larger saves page faults
    /// for guests whose stack, data and heap start sit low in memory (Weft's plugins use a
    /// 64 KiB stack for this); each instance pays a memset of this size. 0 turns it off.
    pub memory_keep_resident_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default_timeout: Duration::from_secs(10),
            default_memory_bytes: NonZeroU64::new(128 << 20).expect("non-zero"),
            max_memory_bytes: NonZeroU64::new(1 << 30).expect("non-zero"),
            max_timeout: Duration::from_secs(300),
            max_instances: NonZeroU32::new(256).expect("non-zero"),
            epoch_tick: Duration::from_millis(10),
            max_emit_bytes: NonZeroU64::new(256 << 20).expect("non-zero"),
            memory_keep_resident_bytes: 128 << 10,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
