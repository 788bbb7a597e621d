//! Instantiate-and-call latency of `hello` (pooling allocator + `InstancePre`), the same call
//! in an instance reused from the request before (`--reuse`), and compile time against loading
//! the compiled artifact from the disk cache.
//!
//! Run: `cargo bench -p weft-host --bench instantiate`
//!
//! It allocates with mimalloc, set up as the `weft` binary sets it up, so the figures are the
//! node's. For experiments, `WEFT_BENCH_KEEP_MEMORY` and `WEFT_BENCH_KEEP_TABLE` (bytes) set
//! the runtime's `memory_keep_resident_bytes` and `table_keep_resident_bytes`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use weft_host::config::RuntimeConfig;
use weft_host::id::{Digest, FunctionName};
use weft_host::metrics::Metrics;
use weft_host::plugins;
use weft_host::runtime::FunctionLimits;
use weft_host::runtime::{Access, Prepared, Reuse, Runtime};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Minor page faults of this process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// The runtime config under test: the defaults, or the experiment's keep-resident sizes.
fn config() -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    let bytes = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    if let Some(b) = bytes("WEFT_BENCH_KEEP_MEMORY") {
        config.memory_keep_resident_bytes = b;
    }
    if let Some(b) = bytes("WEFT_BENCH_KEEP_TABLE") {
        config.table_keep_resident_bytes = b;
    }
    config
}

fn request() -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri("/bench")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    weft_host::cli::return_freed_memory_at_once();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(
        config(),
        dir.path().join("cache"),
        Arc::new(Metrics::default()),
        weft_host::tasks::Tasks::default(),
    )
    .unwrap();
    let digest = Digest::of(plugins::HELLO);
    let Prepared::Http(pre) = runtime.prepare(digest, plugins::HELLO, None).unwrap() else {
        panic!("hello is HTTP")
    };
    let name: FunctionName = "hello".parse().unwrap();
    let limits = runtime.limits(&FunctionLimits::default());

    let reuse = Reuse {
        max: std::num::NonZeroU32::MAX,
        digest,
        deployed_at_ms: 0,
    };
    let call = |reuse: Option<&Reuse>| {
        let (runtime, pre, name) = (&runtime, &pre, &name);
        let reuse = reuse.cloned();
        async move {
            let slot = runtime.slot_for(name, reuse).await.unwrap();
            let resp = runtime
                .handle_http(name, pre, limits, Access::default(), request(), slot)
                .await
                .unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"Hello, bench! (from Weft)\n");
        }
    };

    for (label, reuse) in [("instantiate", None), ("reused instance", Some(&reuse))] {
        c.bench_function(&format!("hello: {label} + handle + read body"), |b| {
            b.to_async(&rt).iter(|| call(reuse))
        });

        // Percentiles, which criterion does not print: 20,000 sequential calls.
        let mut samples: Vec<Duration> = rt.block_on(async {
            for _ in 0..1000 {
                call(reuse).await;
            }
            let mut v = Vec::with_capacity(20_000);
            let faults = minor_faults();
            for _ in 0..20_000 {
                let t = Instant::now();
                call(reuse).await;
                v.push(t.elapsed());
            }
            let faults = minor_faults() - faults;
            println!(
                "hello {label}+call: {:.2} minor page faults per call",
                faults as f64 / 20_000.0
            );
            v
        });
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        println!(
            "hello {label}+call over {} calls: p50 {:?}  p90 {:?}  p99 {:?}",
            samples.len(),
            pct(0.50),
            pct(0.90),
            pct(0.99)
        );
    }

    let mut group = c.benchmark_group("module load");
    group.sample_size(10);
    group.bench_function("hello: compile (cold cache)", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let r = Runtime::new(
                    RuntimeConfig::default(),
                    d.path().join("cache"),
                    Arc::new(Metrics::default()),
                    weft_host::tasks::Tasks::default(),
                )
                .unwrap();
                (d, r)
            },
            |(_d, r)| r.prepare(digest, plugins::HELLO, None).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("hello: load from disk cache (restart)", |b| {
        b.iter_batched(
            || {
                Runtime::new(
                    RuntimeConfig::default(),
                    dir.path().join("cache"),
                    Arc::new(Metrics::default()),
                    weft_host::tasks::Tasks::default(),
                )
                .unwrap()
            },
            |r| r.prepare(digest, plugins::HELLO, None).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
