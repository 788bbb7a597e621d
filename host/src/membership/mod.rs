//! Cluster membership: the only module that knows foca.
//!
//! One task owns the state machine (`core::Core`, foca inside) and nothing else touches it.
//! It turns the core's outputs into transport sends, timers and direct checks, publishes the
//! member set on a `watch` channel, and remembers members in the store so that a restarted
//! node rejoins without being told a seed.

mod config;
pub mod core;
#[cfg(feature = "test-switches")]
pub mod sim;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use self::core::{Core, Output};
pub use self::core::{DetectorStats, Identity, MemberState, Meta, SyncMember};
pub use config::MembershipConfig;

use crate::id::NodeId;
use crate::rpc::{self, Router};
use crate::store::{Record, Store};
use crate::tasks::Tasks;
use crate::transport::{Datagram, MAX_GOSSIP_PAYLOAD, Transport};
use wire::MembershipWire;

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// The node's name.
    pub node: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its HTTP API.
    pub http: Option<SocketAddr>,
    /// Its labels.
    pub tags: Vec<String>,
    /// Wasm instances it can run at once.
    pub capacity: u32,
    /// Its id in the metadata group.
    pub group_id: u64,
    /// Instances it could start right now, as it last announced (when the figure moves by an
    /// eighth of its capacity, and every minute).
    pub free: Option<u32>,
    /// Alive, suspect or down.
    pub state: MemberState,
    /// SWIM incarnation: raised by the member each time it refutes a suspicion.
    pub incarnation: u16,
    /// Identity renewal counter (start time in ms, +1 per rejoin).
    pub bump: u64,
    /// Round-trip time over this node's connection to it, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// When this node last saw its state change (Unix ms).
    pub since_ms: u64,
    /// Whether this is the node answering.
    #[serde(rename = "self")]
    pub is_self: bool,
}

/// The member set, as published to the rest of the node.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemberSet {
    /// Every member, this node first, then by name.
    pub members: Vec<MemberView>,
    /// The failure detector's counters.
    pub stats: DetectorStats,
}

impl MemberSet {
    /// Members in `state` (this node counts as alive).
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

impl MemberSet {
    /// Appends the membership metrics: members by state, and the failure detector's counters.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, family, single};
        family(
            out,
            "weft_members",
            Kind::Gauge,
            "Cluster members by state, as this node sees them (itself included).",
            [
                ("alive", MemberState::Alive),
                ("suspect", MemberState::Suspect),
                ("down", MemberState::Down),
            ]
            .map(|(label, state)| (format!("state=\"{label}\""), self.count(state))),
        );
        let d = &self.stats;
        for (name, help, value) in [
            ("weft_probes_total", "Probe rounds started.", d.probes),
            (
                "weft_probes_failed_total",
                "Probes with no answer, direct or indirect.",
                d.probes_failed,
            ),
            (
                "weft_suspicions_total",
                "Suspicions started or learned.",
                d.suspicions,
            ),
            (
                "weft_suspicions_refuted_total",
                "Suspicions that ended with the member alive (false positives avoided).",
                d.refuted,
            ),
            (
                "weft_suspicions_extended_total",
                "Suspicions extended because the suspect answered a direct check.",
                d.extended,
            ),
            (
                "weft_members_declared_down_total",
                "Members this node saw declared down.",
                d.declared_down,
            ),
            (
                "weft_late_timers_total",
                "Membership timers that fired late (this node was stalled).",
                d.late_timers,
            ),
            (
                "weft_gossip_impostors_total",
                "Gossip and member lists dropped because their sender claimed a name its certificate does not carry.",
                d.impostors,
            ),
        ] {
            single(out, name, Kind::Counter, help, value);
        }
        single(
            out,
            "weft_local_health",
            Kind::Gauge,
            "Local health score (0 is healthy); stretches this node's timeouts.",
            d.health,
        );
    }
}

/// What the membership task is connected to.
pub struct Wiring {
    /// Sends gossip and direct checks.
    pub transport: Transport,
    /// Gossip received by the transport.
    pub datagrams: mpsc::Receiver<Datagram>,
    /// Where members are remembered across restarts.
    pub store: Store,
    /// Reads this node's free capacity.
    pub free: FreeCapacity,
}

/// Reads how many more Wasm instances this node can run now.
pub type FreeCapacity = Box<dyn Fn() -> u32 + Send>;

/// How often this node looks at its free capacity; it announces it when it moved by an
/// eighth of the capacity (or to or from zero) since the last announcement.
const CAPACITY_CHECK: Duration = Duration::from_secs(1);
/// Announce at least this often even without change. Members that join meanwhile get the
/// figures from their full-state exchange, so this only refreshes.
const CAPACITY_REFRESH: Duration = Duration::from_secs(60);

enum Command {
    Alive(Identity, u16),
    Suspected(u16, oneshot::Sender<u16>),
    Synced(Vec<SyncMember>, Option<NodeId>),
    Exchange(
        Vec<SyncMember>,
        Option<NodeId>,
        oneshot::Sender<Result<Vec<SyncMember>, String>>,
    ),
    Leave(oneshot::Sender<()>),
}

/// The handle other parts of the node hold.
#[derive(Clone)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<MemberSet>,
}

impl Membership {
    /// Starts the membership task for `identity` over `transport`, joining `seeds` and every
    /// member remembered in `store`.
    pub fn start(
        identity: Identity,
        config: MembershipConfig,
        seeds: Vec<SocketAddr>,
        wiring: Wiring,
        tasks: Tasks,
    ) -> Membership {
        let Wiring {
            transport,
            datagrams,
            store,
            free,
        } = wiring;
        let remembered = remembered(&store);
        let mut all_seeds: Vec<SocketAddr> = seeds;
        all_seeds.extend(remembered);
        all_seeds.retain(|a| *a != identity.addr);
        all_seeds.sort();
        all_seeds.dedup();
        let (commands, rx) = mpsc::channel(256);
        let (publish, view) = watch::channel(MemberSet::default());
        let core = Core::new(
            identity,
            config.clone(),
            rand::make_rng::<rand::rngs::StdRng>(),
            MAX_GOSSIP_PAYLOAD,
            Instant::now(),
        );
        let task = Task {
            core,
            config,
            transport,
            store,
            seeds: all_seeds,
            timers: DelayQueue::new(),
            commands: commands.clone(),
            publish,
            since: HashMap::new(),
            saved: Vec::new(),
            leaving: false,
            free,
            tasks: tasks.clone(),
        };
        tasks.spawn_joined(task.run(rx, datagrams, tasks.token().clone()));
        Membership { commands, view }
    }

    /// The current member set.
    pub fn members(&self) -> MemberSet {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new member set.
    pub fn watch(&self) -> watch::Receiver<MemberSet> {
        self.view.clone()
    }

    /// A peer suspects this node at `incarnation`; returns the incarnation it refuted at.
    pub async fn suspected(&self, incarnation: u16) -> Option<u16> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Suspected(incarnation, tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Answers other nodes' membership requests ([`wire::Request`]) as node `me`.
    pub fn serve(&self, router: &Router, me: NodeId) {
        use futures::FutureExt;
        let membership = self.clone();
        router.register::<MembershipWire, _>(move |caller, request| {
            let (m, me) = (membership.clone(), me.clone());
            async move {
                Ok(match request {
                    wire::Request::Ping { suspected } => {
                        let incarnation = match suspected {
                            Some(inc) => m.suspected(inc).await.unwrap_or(0),
                            None => 0,
                        };
                        wire::Response::Pong {
                            node: me,
                            incarnation,
                        }
                    }
                    wire::Request::Sync(theirs) => {
                        wire::Response::Members(m.exchange(theirs, caller).await?)
                    }
                })
            }
            .boxed()
        });
    }

    /// Merges a peer's full member list and returns this node's (the answer to its
    /// [`wire::Request::Sync`]).
    pub async fn exchange(
        &self,
        theirs: Vec<SyncMember>,
        from: crate::transport::Caller,
    ) -> Result<Vec<SyncMember>, String> {
        let gone = || "membership is shutting down".to_string();
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Exchange(theirs, from.node, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Tells the cluster this node leaves on purpose; returns once the news is sent.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Seeds remembered from the last run.
fn remembered(store: &Store) -> Vec<SocketAddr> {
    match store.members() {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Identity>(&v).ok())
            .map(|i| i.addr)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read remembered members");
            vec![]
        }
    }
}

struct Task {
    core: Core<rand::rngs::StdRng>,
    config: MembershipConfig,
    transport: Transport,
    store: Store,
    seeds: Vec<SocketAddr>,
    timers: DelayQueue<(foca::Timer<Identity>, Instant)>,
    commands: mpsc::Sender<Command>,
    publish: watch::Sender<MemberSet>,
    /// Per address: the last (identity, state, incarnation) seen and when it changed.
    since: HashMap<SocketAddr, ((u64, MemberState, u16), u64)>,
    /// Members last written to the store.
    saved: Vec<Record>,
    /// This node is leaving on purpose.
    leaving: bool,
    /// Reads this node's free capacity.
    free: FreeCapacity,
    /// Where its checks and exchanges run.
    tasks: Tasks,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut datagrams: mpsc::Receiver<Datagram>,
        cancel: CancellationToken,
    ) {
        let mut rejoin = tokio::time::interval(self.config.rejoin_interval);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut capacity = tokio::time::interval(CAPACITY_CHECK);
        let mut announced: Option<(u32, Instant)> = None;
        capacity.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sync = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.sync_interval,
            self.config.sync_interval,
        );
        sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(Duration::from_millis(250));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Received datagrams go first: after a stall, the acks that arrived meanwhile are
            // read before the timers that would count them as missing.
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(cmd) = commands.recv() => match cmd {
                    Command::Alive(member, inc) => self.core.on_alive(&member, inc, Instant::now()),
                    Command::Suspected(inc, reply) => {
                        let _ = reply.send(self.core.on_suspected(inc, Instant::now()));
                    }
                    Command::Synced(members, sender) => {
                        let _ = self.core.on_sync_from(members, sender.as_ref(), Instant::now());
                    }
                    Command::Exchange(theirs, sender, reply) => {
                        let answer = self
                            .core
                            .on_sync_from(theirs, sender.as_ref(), Instant::now())
                            .map(|()| self.core.member_list());
                        let _ = reply.send(answer);
                    }
                    Command::Leave(done) => {
                        self.leaving = true;
                        self.core.leave(Instant::now());
                        self.carry_out();
                        let _ = done.send(());
                    }
                },
                Some(d) = datagrams.recv() => match &d.node {
                    Some(node) => self.core.on_data_from(&d.payload, node, Instant::now()),
                    None => tracing::debug!(peer = %d.from, "gossip from a certificate without a node name dropped"),
                },
                Some(expired) = self.timers.next() => {
                    let (timer, due) = expired.into_inner();
                    let now = Instant::now();
                    self.core.on_timer(timer, now.saturating_duration_since(due), now);
                }
                _ = rejoin.tick() => {
                    if self.core.live_members() == 0 {
                        for seed in self.seeds.clone() {
                            self.core.announce(seed, Instant::now());
                        }
                    }
                }
                _ = refresh.tick() => self.refresh(),
                _ = sync.tick() => self.core.sync_tick(),
                _ = capacity.tick() => {
                    let (free, now) = ((self.free)(), Instant::now());
                    let step = (self.core.identity().meta.capacity / 8).max(1);
                    let due = announced.is_none_or(|(last, at)| {
                        free.abs_diff(last) >= step
                            || (free == 0) != (last == 0)
                            || now.duration_since(at) >= CAPACITY_REFRESH
                    });
                    if due {
                        self.core.announce_free(free, now);
                        announced = Some((free, now));
                    }
                }
            }
            self.carry_out();
        }
        self.refresh();
    }

    /// Carries out what the core asked for.
    fn carry_out(&mut self) {
        let now = Instant::now();
        let outputs: Vec<Output> = self.core.drain().collect();
        let mut changed = false;
        for out in outputs {
            match out {
                Output::Send { to, data } => self.transport.send_gossip(to, &data),
                Output::Schedule { after, timer } => {
                    self.timers.insert((*timer, now + after), after);
                }
                Output::Check {
                    member,
                    incarnation,
                } => {
                    let transport = self.transport.clone();
                    let commands = self.commands.clone();
                    self.tasks.spawn(async move {
                        let ping = wire::Request::Ping {
                            suspected: Some(incarnation),
                        };
                        if let Ok(wire::Response::Pong { incarnation, .. }) =
                            rpc::call::<MembershipWire>(&transport, member.addr, &ping).await
                        {
                            let _ = commands.send(Command::Alive(member, incarnation)).await;
                        }
                    });
                }
                Output::Sync { with, members } => {
                    let transport = self.transport.clone();
                    let commands = self.commands.clone();
                    self.tasks.spawn(async move {
                        let sync = wire::Request::Sync(members);
                        match rpc::call::<MembershipWire>(&transport, with, &sync).await {
                            Ok(wire::Response::Members(theirs)) => {
                                let sender = transport.peer_node(with);
                                let _ = commands.send(Command::Synced(theirs, sender)).await;
                            }
                            Ok(other) => {
                                tracing::debug!(peer = %with, ?other, "unexpected answer to a member-list exchange")
                            }
                            Err(e) => {
                                tracing::debug!(peer = %with, error = %e, "member-list exchange failed")
                            }
                        }
                    });
                }
                Output::Notify(n) => {
                    use foca::OwnedNotification as N;
                    match n.as_ref() {
                        N::MemberUp(m) => {
                            tracing::info!(node = %m.node, addr = %m.addr, "member up")
                        }
                        N::MemberDown(m) => {
                            tracing::info!(node = %m.node, addr = %m.addr, "member down")
                        }
                        N::Rename(a, b) => {
                            tracing::info!(node = %b.node, addr = %b.addr, old = a.bump, new = b.bump, "member renewed its identity")
                        }
                        N::Rejoin(me) => tracing::info!(
                            bump = me.bump,
                            "rejoined the cluster with a renewed identity"
                        ),
                        N::Defunct => {
                            tracing::warn!("declared down by the cluster and could not rejoin")
                        }
                        N::Active => tracing::info!("in touch with the cluster"),
                        N::Idle => tracing::info!("no live member known; announcing to seeds"),
                        _ => {}
                    }
                    changed = true;
                }
            }
        }
        if changed {
            self.refresh();
        }
    }

    /// Publishes the member set if it changed, and remembers live members.
    fn refresh(&mut self) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let me = self.core.identity().clone();
        let mut members = vec![self.view(&me, MemberState::Alive, 0, true, now_ms)];
        let mut others: Vec<(Identity, MemberState, u16)> = self
            .core
            .members()
            .map(|m| (m.id().clone(), m.state().into(), m.incarnation()))
            .collect();
        others.sort_by(|a, b| a.0.node.cmp(&b.0.node).then(a.0.addr.cmp(&b.0.addr)));
        for (id, state, inc) in &others {
            members.push(self.view(id, *state, *inc, false, now_ms));
        }
        // Forget the change times of members foca no longer lists.
        self.since
            .retain(|addr, _| members.iter().any(|m| m.addr == *addr));
        let set = MemberSet {
            members,
            stats: self.core.stats(),
        };
        self.publish.send_if_modified(|old| {
            let differs = old.members != set.members || old.stats != set.stats;
            if differs {
                *old = set;
            }
            differs
        });
        let mut live: Vec<Record> = others
            .iter()
            .filter(|(_, s, _)| *s != MemberState::Down)
            .map(|(id, _, _)| {
                (
                    id.addr.to_string().into_bytes(),
                    serde_json::to_vec(id).expect("identities encode"),
                )
            })
            .collect();
        live.sort();
        if live != self.saved && !live.is_empty() {
            if let Err(e) = self.store.set_members(&live) {
                tracing::warn!(error = %e, "could not remember the members");
            }
            self.saved = live;
        }
    }

    fn view(
        &mut self,
        id: &Identity,
        state: MemberState,
        incarnation: u16,
        is_self: bool,
        now_ms: u64,
    ) -> MemberView {
        let key = (id.bump, state, incarnation);
        let entry = self.since.entry(id.addr).or_insert((key, now_ms));
        if entry.0 != key {
            *entry = (key, now_ms);
        }
        MemberView {
            node: id.node.clone(),
            addr: id.addr,
            http: id.meta.http,
            tags: id.meta.tags.clone(),
            capacity: id.meta.capacity,
            group_id: id.meta.group_id,
            free: if is_self {
                Some((self.free)())
            } else {
                self.core.free_of(id.addr)
            },
            state,
            incarnation,
            bump: id.bump,
            rtt_ms: if is_self || state == MemberState::Down {
                None
            } else {
                self.transport
                    .rtt(id.addr)
                    .map(|d| (d.as_secs_f64() * 1e5).round() / 100.0)
            },
            since_ms: entry.1,
            is_self,
        }
    }
}
