//! Membership at scale, simulated: how long a cluster of N nodes takes to converge after its
//! start and after a join, how long until every node sees a crash, and how many gossip bytes
//! each node sends, on a lossless 1 ms LAN in virtual time (`membership::sim`).
//!
//! Run: `cargo bench -p weft-host --bench membership_sim`
//! (`WEFT_SIM_N=10,100` picks the cluster sizes, `WEFT_SIM_SEED` the seed,
//! `WEFT_SIM_LIFEGUARD=off` turns Weft's Lifeguard additions off, and `WEFT_SIM_CAPACITY=5`
//! has every node announce its free capacity every 5 s, as the node does; that is off by
//! default, since it makes large clusters far slower to simulate; `WEFT_SIM_LOSS=0.2` loses
//! that fraction of datagrams).
//! Prints a Markdown table; the figures depend only on the seed, the wall time on the machine.

use std::time::{Duration, Instant};

use weft_host::membership::sim::{self, SimConfig, SimReport};

fn main() {
    let sizes: Vec<usize> = match std::env::var("WEFT_SIM_N") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("WEFT_SIM_N: comma-separated node counts")
            })
            .collect(),
        Err(_) => vec![10, 100, 1000],
    };
    let seed = std::env::var("WEFT_SIM_SEED").map_or(1, |s| s.parse().expect("WEFT_SIM_SEED"));
    let lifeguard = std::env::var("WEFT_SIM_LIFEGUARD").map_or(true, |s| s != "off");
    let loss: f64 = std::env::var("WEFT_SIM_LOSS").map_or(0.0, |s| {
        s.parse()
            .expect("WEFT_SIM_LOSS: a fraction of datagrams lost")
    });
    let capacity = std::env::var("WEFT_SIM_CAPACITY").ok().map(|s| {
        Duration::from_secs_f64(
            s.parse()
                .expect("WEFT_SIM_CAPACITY: seconds between announcements"),
        )
    });
    if let Ok(secs) = std::env::var("WEFT_SIM_NOISE") {
        let run = Duration::from_secs(secs.parse().expect("WEFT_SIM_NOISE: seconds"));
        false_positives(&sizes, loss, run);
        return;
    }
    println!(
        "Seed {seed}, loss {loss}, lifeguard {}, capacity announcements {}; times in virtual seconds; \
         \"-\": not within the deadline (120 s + 2 s per node to converge, {} s to see a crash).",
        if lifeguard { "on" } else { "off" },
        capacity.map_or("off".to_string(), |d| format!(
            "every {} s",
            d.as_secs_f64()
        )),
        sim::DETECTION_DEADLINE.as_secs(),
    );
    println!();
    println!(
        "| N | start: 99% | start: all | join: seen by all | join: all | crash: seen by all | gossip B/node/s | datagrams/node/s | sync B/node/s | false downs | wall |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let started = Instant::now();
        let mut cfg = SimConfig::new(n, seed);
        cfg.membership.lifeguard = lifeguard;
        cfg.capacity_every = capacity;
        cfg.loss = loss;
        let r = sim::report_with(cfg);
        let wall = started.elapsed();
        println!("{}", row(&r, wall));
    }
}

fn row(r: &SimReport, wall: Duration) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.0} | {} | {:.1} s |",
        r.nodes,
        secs(r.start_99),
        secs(r.start_all),
        secs(r.join_seen),
        secs(r.join_all),
        secs(r.crash_seen),
        r.bytes_per_node_s,
        r.datagrams_per_node_s,
        r.sync_bytes_per_node_s,
        r.false_downs,
        wall.as_secs_f64(),
    )
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// Members declared down while nobody crashed, with and without Weft's additions, over five
/// seeds (`WEFT_SIM_NOISE=SECONDS`).
fn false_positives(sizes: &[usize], loss: f64, run: Duration) {
    println!(
        "False positives: {} s of virtual time after convergence, loss {loss}, nobody crashed; \
         \"downs\" counts every node's notification, \"rejoins\" the renewals they forced.",
        run.as_secs()
    );
    println!();
    println!(
        "| N | seed | Weft: downs | Weft: rejoins | plain foca: downs | plain foca: rejoins |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &n in sizes {
        for seed in 1..=5 {
            let run_with = |lifeguard: bool| {
                let mut cfg = SimConfig::new(n, seed);
                cfg.loss = loss;
                cfg.membership.lifeguard = lifeguard;
                sim::false_downs(cfg, run)
            };
            let (ours, plain) = (run_with(true), run_with(false));
            println!(
                "| {n} | {seed} | {} | {} | {} | {} |",
                ours.0, ours.1, plain.0, plain.1
            );
        }
    }
}
