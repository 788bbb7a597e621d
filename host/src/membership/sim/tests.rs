//! The simulator's own tests: small clusters, checked in debug builds.

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// A cluster of `n` nodes on the LAN settings, started and converged.
fn converged(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig::new(n, seed));
    sim.join_all();
    let took = sim.run_until_converged(30 * SECOND);
    assert!(took.is_some(), "{n} nodes did not converge in 30 s");
    sim
}

#[test]
fn ten_nodes_converge_after_start() {
    let sim = converged(10, 1);
    assert!(sim.converged());
    assert!(sim.downs().is_empty(), "{:?}", sim.downs());
}

#[test]
fn thirty_nodes_converge_despite_loss() {
    let mut cfg = SimConfig::new(30, 2);
    cfg.loss = 0.05;
    let mut sim = Sim::new(cfg);
    sim.join_all();
    assert!(sim.run_until_converged(60 * SECOND).is_some());
}

#[test]
fn a_joining_node_is_seen_by_all_and_sees_all() {
    let mut sim = converged(10, 3);
    let new = sim.add_node();
    assert!(!sim.all_see_alive(new));
    let deadline = sim.now() + 30 * SECOND;
    assert!(sim.run_until_converged(deadline).is_some());
    assert!(sim.all_see_alive(new) && sim.sees_all_alive(new));
    assert_eq!(sim.core(0).live_members(), 10);
}

#[test]
fn a_crashed_node_is_seen_down_by_all_others() {
    let mut sim = converged(30, 4);
    sim.crash(7);
    let deadline = sim.now() + 60 * SECOND;
    let took = sim.time_until_all_see_down(7, deadline).expect("detected");
    // Suspicion alone lasts log10(30) × 4 × 1 s ≈ 5.9 s.
    assert!(took > 5 * SECOND, "{took:?}");
    let observers: Vec<usize> = sim
        .downs()
        .iter()
        .filter(|d| d.node == 7)
        .map(|d| d.observer)
        .collect();
    assert_eq!(observers.len(), 29, "{observers:?}");
    assert!(sim.downs().iter().all(|d| d.node == 7));
}

/// Stalls node 3 of a converged ten-node cluster for `stall`, runs 30 s past the stall,
/// and returns the nodes that declared it down.
fn stall_node(stall: Duration, lifeguard: bool) -> (Sim, Vec<usize>) {
    let mut cfg = SimConfig::new(10, 5);
    cfg.membership.lifeguard = lifeguard;
    let mut sim = Sim::new(cfg);
    sim.join_all();
    assert!(sim.run_until_converged(30 * SECOND).is_some());
    sim.run_until(sim.now() + 5 * SECOND);
    sim.stall(3, stall);
    sim.run_until(sim.now() + stall + 30 * SECOND);
    let accusers = sim
        .downs()
        .iter()
        .filter(|d| d.node == 3)
        .map(|d| d.observer)
        .collect();
    (sim, accusers)
}

#[test]
fn a_short_stall_is_not_taken_for_a_crash() {
    let (sim, accusers) = stall_node(2 * SECOND, true);
    assert!(accusers.is_empty(), "declared down by {accusers:?}");
    assert!(sim.downs().is_empty(), "{:?}", sim.downs());
    let declared: u64 = (0..sim.len()).map(|i| sim.stats(i).declared_down).sum();
    assert_eq!(declared, 0);
    // The stall really happened: node 3's timers fired late once it resumed.
    assert!(sim.stats(3).late_timers > 0);
    assert!(sim.converged());
}

#[test]
fn a_long_stall_is_taken_for_a_crash() {
    let (mut sim, accusers) = stall_node(30 * SECOND, true);
    // Every other node of the ten sees it down.
    assert_eq!(accusers.len(), 9, "{accusers:?}");
    let declared: u64 = (0..sim.len()).map(|i| sim.stats(i).declared_down).sum();
    assert!(declared > 0);
    // Once it resumes, the node learns it was declared down and rejoins as a new identity,
    // once.
    assert_eq!(sim.rejoins(), 1);
    let deadline = sim.now() + 60 * SECOND;
    assert!(sim.run_until_converged(deadline).is_some());
}

/// A suspicion the suspect refuted in time should leave its identity alone.
/// foca 2.0 sends `TurnUndead` to the suspect whenever the suspicion timer fires and the
/// member still exists, refuted or not, so the suspect renews its identity and rejoins.
#[test]
fn a_refuted_suspicion_does_not_force_a_rejoin() {
    let (sim, accusers) = stall_node(2 * SECOND, true);
    assert!(accusers.is_empty());
    let refuted: u64 = (0..sim.len()).map(|i| sim.stats(i).refuted).sum();
    assert!(refuted > 0);
    assert_eq!(sim.rejoins(), 0);
}

#[test]
fn capacity_announcements_reach_every_node() {
    let mut cfg = SimConfig::new(10, 6);
    cfg.capacity_every = Some(5 * SECOND);
    let mut sim = Sim::new(cfg);
    sim.join_all();
    assert!(sim.run_until_converged(30 * SECOND).is_some());
    sim.run_until(sim.now() + 10 * SECOND);
    for k in 0..10 {
        for j in (0..10).filter(|&j| j != k) {
            assert_eq!(
                sim.core(k).free_of(addr_of(j)),
                Some(FREE_CAPACITY),
                "{k} of {j}"
            );
        }
    }
}

#[test]
fn same_seed_same_report() {
    let a = report(10, 9, true);
    assert!(a.start_all.is_some(), "{a:?}");
    assert!(a.join_all.is_some(), "{a:?}");
    assert!(a.crash_seen.is_some(), "{a:?}");
    assert!(a.bytes_per_node_s > 0.0, "{a:?}");
    assert_eq!(a, report(10, 9, true));
}

/// Weft's additions to SWIM, both ways: on a network that loses 40% of datagrams, plain foca
/// declares healthy nodes down, and Weft's detector (direct checks over QUIC, refutations
/// carried back, local health) declares none.
#[test]
fn heavy_loss_declares_healthy_nodes_down_under_plain_swim_only() {
    const NODES: usize = 30;
    const LOSS: f64 = 0.4;
    let run = |lifeguard: bool| {
        let mut cfg = SimConfig::new(NODES, 1);
        cfg.loss = LOSS;
        cfg.membership.lifeguard = lifeguard;
        false_downs(cfg, 60 * SECOND)
    };
    let (weft, weft_rejoins) = run(true);
    let (plain, plain_rejoins) = run(false);
    eprintln!(
        "{LOSS} loss, {NODES} nodes, 60 s: Weft {weft} downs ({weft_rejoins} rejoins), plain foca {plain} downs ({plain_rejoins} rejoins)"
    );
    assert_eq!(
        (weft, weft_rejoins),
        (0, 0),
        "Weft declared healthy nodes down"
    );
    assert!(
        plain > 0,
        "plain foca declared no healthy node down: the scenario is too easy to show anything"
    );
}
