//! A deterministic simulation of many membership cores on one virtual network.
//!
//! Real clusters of a thousand nodes are expensive to start and impossible to replay, so this
//! module runs that many [`Core`]s in one thread against one virtual clock.
//! Datagrams take a seeded latency and may be lost, timers fire when due, and direct checks
//! (the driver's QUIC ping) are reliable but time out like the real RPC.
//! Nodes can start, join, crash and stall, which is enough to measure how fast a cluster
//! converges, how fast it detects a crash, how much it gossips, and whether a slow node is
//! wrongly declared down.
//! The same configuration and seed always give the same run.
//!
//! Nothing here does I/O or sleeps.
//! Virtual time is a [`Duration`] since the start of the run, added to one `Instant` taken when
//! the simulation is built only because the core's API takes instants; the core only compares
//! them, so the wall clock never shows in the results.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{Member, OwnedNotification, State, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::core::{Core, DetectorStats, Identity, Meta, Output, SyncMember};
use crate::id::NodeId;
use crate::membership::MembershipConfig;
use crate::transport::MAX_GOSSIP_PAYLOAD;
use crate::transport::TransportConfig;

/// Node `i` listens on `127.0.0.1:(BASE_PORT + i)`.
const BASE_PORT: u16 = 10_000;

/// Nodes other than the first start at random times within this window.
const START_WINDOW: Duration = Duration::from_secs(1);

/// How often convergence and detection are checked, in virtual time.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The free capacity every node announces; only its size on the wire matters here.
const FREE_CAPACITY: u32 = 48;

/// Identities carry a start time in Unix milliseconds; this one is 2026-01-01.
const BUMP_EPOCH_MS: u64 = 1_767_225_600_000;

/// A simulated cluster and its network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes started by [`Sim::join_all`].
    pub nodes: usize,
    /// Seeds every random choice: latency jitter, losses, start times, and each node's core.
    pub seed: u64,
    /// Chance (0 to 1) that one datagram is lost. Direct checks are never lost.
    pub loss: f64,
    /// One-way latency of the network; each datagram gets up to a tenth more, at random.
    pub latency: Duration,
    /// A direct check fails if its answer comes later than this after it was asked.
    /// Default: the transport's RPC timeout (5 s).
    pub check_timeout: Duration,
    /// How often each node announces its free capacity (a foca custom broadcast that rides on
    /// every kind of datagram), or `None` for never (the default). The node does every 5 s; at
    /// that rate the broadcasts cost each node tens of bytes per second per member, and the
    /// simulation several times the wall time.
    pub capacity_every: Option<Duration>,
    /// The membership settings every node runs with.
    pub membership: MembershipConfig,
}

impl SimConfig {
    /// `nodes` nodes on a lossless LAN (1 ms one way) with the LAN membership settings and no
    /// capacity announcements.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimConfig {
            nodes,
            seed,
            loss: 0.0,
            latency: Duration::from_millis(1),
            check_timeout: TransportConfig::default().rpc_timeout,
            capacity_every: None,
            membership: MembershipConfig::lan(),
        }
    }
}

/// One member declared down, as seen by one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Down {
    /// Virtual time of the declaration.
    pub at: Duration,
    /// The node that saw it.
    pub observer: usize,
    /// The node declared down.
    pub node: usize,
}

/// What happens to one node at one virtual time. Large parts are boxed: the queue moves
/// events around on every push and pop.
enum Event {
    /// The node starts and announces itself to its seed.
    Start,
    /// The driver's rejoin tick: announce again while no live member is known.
    Rejoin,
    /// The driver's capacity tick: announce this node's free capacity.
    Capacity,
    /// A datagram arrives.
    Deliver(Bytes),
    /// A timer falls due (`due` stays the original due time when the node is stalled).
    Timer {
        due: Duration,
        timer: Box<Timer<Identity>>,
    },
    /// A direct check from `from` reaches this node, asked at `asked`.
    CheckArrive {
        from: usize,
        member: Box<Identity>,
        incarnation: u16,
        asked: Duration,
    },
    /// The answer to a direct check comes back to this node.
    CheckAnswer {
        member: Box<Identity>,
        incarnation: u16,
    },
    /// The driver's full-state exchange tick.
    SyncTick,
    /// A member list from `from` reaches this node, which merges it and answers with its own.
    SyncArrive {
        from: usize,
        members: Vec<SyncMember>,
        asked: Duration,
    },
    /// The answer to a member-list exchange comes back.
    SyncAnswer { members: Vec<SyncMember> },
}

impl Event {
    /// At equal times, received data goes before timers, as in the driver's biased select:
    /// after a stall, the acks that arrived meanwhile are read before the timers that would
    /// count them as missing.
    fn class(&self) -> u8 {
        match self {
            Event::Deliver(_)
            | Event::CheckArrive { .. }
            | Event::CheckAnswer { .. }
            | Event::SyncArrive { .. }
            | Event::SyncAnswer { .. } => 0,
            Event::Start
            | Event::Rejoin
            | Event::Capacity
            | Event::SyncTick
            | Event::Timer { .. } => 1,
        }
    }
}

/// An event in the queue, ordered by (time, class, sequence number), earliest first.
struct Scheduled {
    at: Duration,
    class: u8,
    seq: u64,
    node: usize,
    event: Event,
}

impl Scheduled {
    fn key(&self) -> (Duration, u8, u64) {
        (self.at, self.class, self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // `BinaryHeap` is a max-heap: the earliest key must compare greatest.
        other.key().cmp(&self.key())
    }
}

struct Node {
    core: Core<StdRng>,
    /// The node it announces itself to, if any.
    seed: Option<usize>,
    crashed: bool,
    /// Events for the node wait until then.
    stalled_until: Duration,
    sent_bytes: u64,
    sent_datagrams: u64,
    /// Bytes of member lists sent in full-state exchanges (over QUIC streams in a real node).
    sync_bytes: u64,
}

/// A cluster of membership cores on a virtual network.
pub struct Sim {
    cfg: SimConfig,
    nodes: Vec<Node>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    now: Duration,
    /// The `Instant` virtual time zero maps to; only ever compared, never read again.
    epoch: Instant,
    rng: StdRng,
    downs: Vec<Down>,
    rejoins: u64,
    events: u64,
    outputs: Vec<Output>,
}

impl Sim {
    /// `cfg.nodes` nodes, none started yet.
    pub fn new(cfg: SimConfig) -> Self {
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: Duration::ZERO,
            epoch: Instant::now(),
            downs: Vec::new(),
            rejoins: 0,
            events: 0,
            outputs: Vec::new(),
        };
        for i in 0..sim.cfg.nodes {
            sim.push_node(if i == 0 { None } else { Some(0) });
        }
        sim
    }

    /// Starts the cluster: node 0 at once, every other node at a random time within a second,
    /// announcing itself to node 0.
    pub fn join_all(&mut self) {
        for i in 0..self.nodes.len() {
            let at = if i == 0 {
                self.now
            } else {
                self.now + START_WINDOW.mul_f64(self.rng.random::<f64>())
            };
            self.push(at, i, Event::Start);
        }
    }

    /// Starts one more node, announcing itself to node 0 now; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.push_node(Some(0));
        self.push(self.now, i, Event::Start);
        i
    }

    /// Crashes node `i`: from now on it handles nothing and answers nothing.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
    }

    /// Stalls node `i` for `duration` from now (a long GC pause, SIGSTOP, a starved VM).
    /// What arrives or falls due meanwhile waits, then is handled at the end of the stall,
    /// received data first, timers with how late they are.
    pub fn stall(&mut self, i: usize, duration: Duration) {
        let until = self.now + duration;
        let node = &mut self.nodes[i];
        node.stalled_until = node.stalled_until.max(until);
    }

    /// Runs every event due up to `time` (virtual, since the start), then sets the clock to it.
    pub fn run_until(&mut self, time: Duration) {
        while self.queue.peek().is_some_and(|e| e.at <= time) {
            let e = self.queue.pop().expect("peeked");
            self.handle(e);
        }
        self.now = self.now.max(time);
    }

    /// Runs until every live node sees every other live node alive; returns how long that
    /// took from now, or `None` if not so by `deadline` (virtual, since the start).
    pub fn run_until_converged(&mut self, deadline: Duration) -> Option<Duration> {
        self.run_until_condition(deadline, Sim::converged)
    }

    /// Runs until every live node sees node `i` down; returns how long that took from now, or
    /// `None` if not so by `deadline` (virtual, since the start).
    pub fn time_until_all_see_down(&mut self, i: usize, deadline: Duration) -> Option<Duration> {
        self.run_until_condition(deadline, |sim| sim.all_see_down(i))
    }

    /// Runs until `done` holds, testing it every 100 ms of virtual time; returns how long that
    /// took from now, or `None` if it does not hold by `deadline` (virtual, since the start).
    pub fn run_until_condition(
        &mut self,
        deadline: Duration,
        done: impl Fn(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now >= deadline {
                return None;
            }
            self.run_until((self.now + CHECK_EVERY).min(deadline));
        }
    }

    /// Whether every live node sees every other live node alive, with its current identity.
    pub fn converged(&self) -> bool {
        let live = self.live_nodes();
        let want = live.len().saturating_sub(1);
        // Cheap test first: foca counts live members as they change.
        if live
            .iter()
            .any(|&k| self.nodes[k].core.live_members() < want)
        {
            return false;
        }
        live.iter().all(|&k| self.alive_seen_by(k) == want)
    }

    /// The share (0 to 1) of (observer, member) pairs of live nodes where the observer counts
    /// the member as live, from foca's counts alone: cheap, but a crashed member not yet
    /// declared down still counts.
    pub fn coverage(&self) -> f64 {
        let live = self.live_nodes();
        let want = live.len().saturating_sub(1);
        if want == 0 {
            return 1.0;
        }
        let known: usize = live
            .iter()
            .map(|&k| self.nodes[k].core.live_members().min(want))
            .sum();
        known as f64 / (live.len() * want) as f64
    }

    /// Whether every live node other than `i` sees `i` alive, with its current identity.
    pub fn all_see_alive(&self, i: usize) -> bool {
        let id = self.nodes[i].core.identity();
        self.others_see(i, |m| m.id() == id && m.state() == State::Alive)
    }

    /// Whether node `i` sees every other live node alive, with its current identity.
    pub fn sees_all_alive(&self, i: usize) -> bool {
        let want = self.live_nodes().len() - usize::from(!self.nodes[i].crashed);
        self.nodes[i].core.live_members() >= want && self.alive_seen_by(i) == want
    }

    /// Whether every live node other than `i` sees `i` down.
    pub fn all_see_down(&self, i: usize) -> bool {
        self.others_see(i, |m| m.state() == State::Down)
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Nodes, crashed ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes at all.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes not crashed.
    pub fn live(&self) -> usize {
        self.nodes.iter().filter(|n| !n.crashed).count()
    }

    /// Node `i`'s core, to inspect.
    pub fn core(&self, i: usize) -> &Core<StdRng> {
        &self.nodes[i].core
    }

    /// Node `i`'s failure-detector counters.
    pub fn stats(&self, i: usize) -> DetectorStats {
        self.nodes[i].core.stats()
    }

    /// Every "member down" each node saw, in order.
    pub fn downs(&self) -> &[Down] {
        &self.downs
    }

    /// Times a node rejoined with a renewed identity after being declared down.
    pub fn rejoins(&self) -> u64 {
        self.rejoins
    }

    /// Events handled so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Gossip payload bytes node `i` sent (foca's datagrams, before framing and encryption).
    pub fn sent_bytes(&self, i: usize) -> u64 {
        self.nodes[i].sent_bytes
    }

    /// Member-list bytes node `i` sent in full-state exchanges.
    pub fn sync_bytes(&self, i: usize) -> u64 {
        self.nodes[i].sync_bytes
    }

    /// Datagrams node `i` sent, lost ones included.
    pub fn sent_datagrams(&self, i: usize) -> u64 {
        self.nodes[i].sent_datagrams
    }

    /// Sets every node's byte and datagram counters back to zero.
    pub fn reset_traffic(&mut self) {
        for n in &mut self.nodes {
            n.sent_bytes = 0;
            n.sent_datagrams = 0;
            n.sync_bytes = 0;
        }
    }

    /// Live nodes other than `k` that `k` sees alive with their current identity.
    fn alive_seen_by(&self, k: usize) -> usize {
        self.nodes[k]
            .core
            .members()
            .filter(|m| m.state() == State::Alive)
            .filter(|m| {
                self.index(m.id().addr).is_some_and(|j| {
                    j != k && !self.nodes[j].crashed && m.id() == self.nodes[j].core.identity()
                })
            })
            .count()
    }

    fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].crashed)
            .collect()
    }

    /// Whether every live node other than `i` knows a member at `i`'s address that passes `test`.
    fn others_see(&self, i: usize, test: impl Fn(&Member<Identity>) -> bool) -> bool {
        let addr = addr_of(i);
        (0..self.nodes.len())
            .filter(|&k| k != i && !self.nodes[k].crashed)
            .all(|k| {
                self.nodes[k]
                    .core
                    .members()
                    .find(|m| m.id().addr == addr)
                    .is_some_and(&test)
            })
    }

    fn push_node(&mut self, seed: Option<usize>) -> usize {
        let i = self.nodes.len();
        let port = BASE_PORT + u16::try_from(i).expect("at most 55,535 nodes");
        let identity = Identity {
            node: format!("n{i}").parse::<NodeId>().expect("a valid name"),
            addr: addr_of(i),
            bump: BUMP_EPOCH_MS + self.now.as_millis() as u64,
            meta: Meta {
                http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port + 10_000))),
                tags: vec![],
                capacity: 64,
                group_id: i as u64 + 1,
            },
        };
        let rng = StdRng::seed_from_u64(
            self.cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let core = Core::new(
            identity,
            self.cfg.membership.clone(),
            rng,
            MAX_GOSSIP_PAYLOAD,
            self.epoch + self.now,
        );
        self.nodes.push(Node {
            core,
            seed,
            crashed: false,
            stalled_until: Duration::ZERO,
            sent_bytes: 0,
            sent_datagrams: 0,
            sync_bytes: 0,
        });
        i
    }

    fn index(&self, addr: SocketAddr) -> Option<usize> {
        let i = usize::from(addr.port().checked_sub(BASE_PORT)?);
        (addr.ip() == Ipv4Addr::LOCALHOST && i < self.nodes.len()).then_some(i)
    }

    fn push(&mut self, at: Duration, node: usize, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            class: event.class(),
            seq: self.seq,
            node,
            event,
        });
    }

    fn handle(&mut self, e: Scheduled) {
        self.now = e.at;
        let i = e.node;
        if self.nodes[i].crashed {
            return;
        }
        let until = self.nodes[i].stalled_until;
        if until > self.now {
            self.push(until, i, e.event);
            return;
        }
        self.events += 1;
        let now = self.epoch + self.now;
        match e.event {
            Event::Start => {
                if let Some(seed) = self.nodes[i].seed {
                    self.nodes[i].core.announce(addr_of(seed), now);
                    let next = self.now + self.cfg.membership.rejoin_interval;
                    self.push(next, i, Event::Rejoin);
                }
                if self.cfg.capacity_every.is_some() {
                    self.push(self.now, i, Event::Capacity);
                }
                let next = self.now + self.cfg.membership.sync_interval;
                self.push(next, i, Event::SyncTick);
            }
            Event::SyncTick => {
                self.nodes[i].core.sync_tick();
                let next = self.now + self.cfg.membership.sync_interval;
                self.push(next, i, Event::SyncTick);
            }
            Event::SyncArrive {
                from,
                members,
                asked,
            } => {
                self.nodes[i].core.on_sync(members, now);
                let back = self.now + self.cfg.latency;
                if back - asked <= self.cfg.check_timeout {
                    let members = self.nodes[i].core.member_list();
                    self.nodes[i].sync_bytes += encoded_len(&members);
                    self.push(back, from, Event::SyncAnswer { members });
                }
            }
            Event::SyncAnswer { members } => self.nodes[i].core.on_sync(members, now),
            Event::Capacity => {
                if let Some(every) = self.cfg.capacity_every {
                    self.nodes[i].core.announce_free(FREE_CAPACITY, now);
                    self.push(self.now + every, i, Event::Capacity);
                }
            }
            Event::Rejoin => {
                if let Some(seed) = self.nodes[i].seed {
                    if self.nodes[i].core.live_members() == 0 {
                        self.nodes[i].core.announce(addr_of(seed), now);
                    }
                    let next = self.now + self.cfg.membership.rejoin_interval;
                    self.push(next, i, Event::Rejoin);
                }
            }
            Event::Deliver(data) => self.nodes[i].core.on_data(&data, now),
            Event::Timer { due, timer } => {
                self.nodes[i].core.on_timer(*timer, self.now - due, now);
            }
            Event::CheckArrive {
                from,
                member,
                incarnation,
                asked,
            } => {
                let back = self.now + self.cfg.latency;
                if back - asked <= self.cfg.check_timeout {
                    let incarnation = self.nodes[i].core.on_suspected(incarnation, now);
                    self.push(
                        back,
                        from,
                        Event::CheckAnswer {
                            member,
                            incarnation,
                        },
                    );
                }
            }
            Event::CheckAnswer {
                member,
                incarnation,
            } => self.nodes[i].core.on_alive(&member, incarnation, now),
        }
        self.carry_out(i);
    }

    /// Turns what node `i`'s core asked for into events.
    fn carry_out(&mut self, i: usize) {
        let mut outputs = std::mem::take(&mut self.outputs);
        outputs.extend(self.nodes[i].core.drain());
        for out in outputs.drain(..) {
            match out {
                Output::Send { to, data } => {
                    self.nodes[i].sent_bytes += data.len() as u64;
                    self.nodes[i].sent_datagrams += 1;
                    let lost = self.rng.random::<f64>() < self.cfg.loss;
                    let jitter = self.cfg.latency.mul_f64(self.rng.random::<f64>() / 10.0);
                    if let Some(j) = self.index(to)
                        && !lost
                        && !self.nodes[j].crashed
                    {
                        let at = self.now + self.cfg.latency + jitter;
                        self.push(at, j, Event::Deliver(data));
                    }
                }
                Output::Schedule { after, timer } => {
                    let due = self.now + after;
                    self.push(due, i, Event::Timer { due, timer });
                }
                Output::Check {
                    member,
                    incarnation,
                } => {
                    if let Some(j) = self.index(member.addr) {
                        let event = Event::CheckArrive {
                            from: i,
                            member: Box::new(member),
                            incarnation,
                            asked: self.now,
                        };
                        self.push(self.now + self.cfg.latency, j, event);
                    }
                }
                Output::Sync { with, members } => {
                    self.nodes[i].sync_bytes += encoded_len(&members);
                    if let Some(j) = self.index(with)
                        && !self.nodes[j].crashed
                    {
                        let event = Event::SyncArrive {
                            from: i,
                            members,
                            asked: self.now,
                        };
                        self.push(self.now + self.cfg.latency, j, event);
                    }
                }
                Output::Notify(n) => match *n {
                    OwnedNotification::MemberDown(id) => {
                        if let Some(node) = self.index(id.addr) {
                            self.downs.push(Down {
                                at: self.now,
                                observer: i,
                                node,
                            });
                        }
                    }
                    OwnedNotification::Rejoin(_) => self.rejoins += 1,
                    _ => {}
                },
            }
        }
        self.outputs = outputs;
    }
}

/// The size of a member list on the wire.
fn encoded_len(members: &[SyncMember]) -> u64 {
    postcard::to_stdvec(members).map_or(0, |v| v.len() as u64)
}

fn addr_of(i: usize) -> SocketAddr {
    let port = BASE_PORT + u16::try_from(i).expect("at most 55,535 nodes");
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Figures from one standard run: start, one join, a steady window, one crash.
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    /// Nodes started together.
    pub nodes: usize,
    /// The run's seed.
    pub seed: u64,
    /// Whether Weft's Lifeguard additions were on.
    pub lifeguard: bool,
    /// From the first node's start until 99% of (observer, member) pairs are known live.
    pub start_99: Option<Duration>,
    /// From the first node's start until every node sees every other alive.
    pub start_all: Option<Duration>,
    /// From one more node's start until every other node sees it alive.
    pub join_seen: Option<Duration>,
    /// From that start until, in addition, the newcomer sees every other node alive.
    pub join_all: Option<Duration>,
    /// From one node's crash until every other node sees it down.
    pub crash_seen: Option<Duration>,
    /// Gossip payload bytes each node sent per second over the steady window, on average.
    pub bytes_per_node_s: f64,
    /// Datagrams each node sent per second over the steady window, on average.
    pub datagrams_per_node_s: f64,
    /// Member-list bytes each node sent per second in full-state exchanges, on average.
    pub sync_bytes_per_node_s: f64,
    /// "Member down" notifications about nodes that had not crashed (false positives).
    pub false_downs: usize,
    /// Virtual time the whole run took.
    pub virtual_time: Duration,
    /// Events handled.
    pub events: u64,
}

/// Time allowed for the cluster to converge after its start, or a newcomer after its join:
/// 120 s plus 2 s per node. A node that missed the news of a member learns of it when that
/// member probes it, and probes go round the whole member list, one per probe period, so the
/// last pairs can take about N probe periods.
pub fn convergence_deadline(nodes: usize) -> Duration {
    Duration::from_secs(120 + 2 * nodes as u64)
}

/// Time allowed for every node to see a crash.
pub const DETECTION_DEADLINE: Duration = Duration::from_secs(120);
/// Quiet time after the join before gossip is counted, so leftover news does not count.
const SETTLE: Duration = Duration::from_secs(10);
/// The steady window over which gossip is counted.
const WINDOW: Duration = Duration::from_secs(30);

/// Starts `cfg`'s cluster, waits for it to converge, then runs it for `run` with nobody
/// crashing; returns the "member down" notifications meanwhile (each a false positive) and
/// the rejoins they caused.
pub fn false_downs(cfg: SimConfig, run: Duration) -> (usize, u64) {
    let nodes = cfg.nodes;
    let mut sim = Sim::new(cfg);
    sim.join_all();
    sim.run_until_converged(convergence_deadline(nodes));
    let (downs, rejoins) = (sim.downs().len(), sim.rejoins());
    sim.run_until(sim.now() + run);
    (sim.downs().len() - downs, sim.rejoins() - rejoins)
}

/// Runs the standard scenario ([`report_with`]) on [`SimConfig::new`]'s network: a lossless
/// 1 ms LAN, the LAN settings, no capacity announcements.
pub fn report(nodes: usize, seed: u64, lifeguard: bool) -> SimReport {
    let mut cfg = SimConfig::new(nodes, seed);
    cfg.membership.lifeguard = lifeguard;
    report_with(cfg)
}

/// Runs the standard scenario: `cfg.nodes` nodes start together, one more joins, gossip is
/// counted over 30 quiet seconds, then one node crashes. Each step has its own deadline
/// ([`convergence_deadline`], [`DETECTION_DEADLINE`]) and the next begins when it is met or
/// missed.
pub fn report_with(cfg: SimConfig) -> SimReport {
    let (nodes, seed, lifeguard) = (cfg.nodes, cfg.seed, cfg.membership.lifeguard);
    let mut sim = Sim::new(cfg);
    sim.join_all();
    let deadline = convergence_deadline(nodes);
    let start_99 = sim.run_until_condition(deadline, |s| s.coverage() >= 0.99);
    // The run started at virtual time zero.
    let start_all = sim.run_until_converged(deadline).map(|_| sim.now());
    let new = sim.add_node();
    let joined = sim.now();
    let deadline = joined + convergence_deadline(nodes);
    let join_seen = sim.run_until_condition(deadline, |s| s.all_see_alive(new));
    // The newcomer's own view first: it is cheap to test and the last to complete.
    let join_all = sim
        .run_until_condition(deadline, |s| s.sees_all_alive(new) && s.all_see_alive(new))
        .map(|_| sim.now() - joined);
    sim.run_until(sim.now() + SETTLE);
    sim.reset_traffic();
    sim.run_until(sim.now() + WINDOW);
    let live = sim.live() as f64;
    let window = WINDOW.as_secs_f64();
    let bytes: u64 = (0..sim.len()).map(|i| sim.sent_bytes(i)).sum();
    let datagrams: u64 = (0..sim.len()).map(|i| sim.sent_datagrams(i)).sum();
    let sync: u64 = (0..sim.len()).map(|i| sim.sync_bytes(i)).sum();
    let victim = new / 2;
    sim.crash(victim);
    let crash_seen = sim.time_until_all_see_down(victim, sim.now() + DETECTION_DEADLINE);
    SimReport {
        nodes,
        seed,
        lifeguard,
        start_99,
        start_all,
        join_seen,
        join_all,
        crash_seen,
        bytes_per_node_s: bytes as f64 / live / window,
        datagrams_per_node_s: datagrams as f64 / live / window,
        sync_bytes_per_node_s: sync as f64 / live / window,
        false_downs: sim.downs().iter().filter(|d| d.node != victim).count(),
        virtual_time: sim.now(),
        events: sim.events(),
    }
}

#[cfg(test)]
mod tests;
