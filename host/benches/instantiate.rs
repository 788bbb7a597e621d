//! Instantiate-and-call latency of `hello` (pooling allocator + `InstancePre`), the same call
//! in an instance reused from the request before (`--reuse`), and compile time against loading
//! the compiled artifact from the disk cache.
//!
//! Run: `cargo bench -p weft-host --bench instantiate`

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

fn request() -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri("/bench")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(
        RuntimeConfig::default(),
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
            for _ in 0..20_000 {
                let t = Instant::now();
                call(reuse).await;
                v.push(t.elapsed());
            }
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
