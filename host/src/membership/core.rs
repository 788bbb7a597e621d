//! The membership state machine: foca plus Weft's additions, with no I/O and no clock.
//!
//! The caller feeds it datagrams, due timers and the results of direct checks, each with the
//! current time, and carries out the [`Output`]s. The node's membership task and the
//! simulation in `bench/` drive the same code.
//!
//! The additions (on unless `MembershipConfig::lifeguard` is off), after Lifeguard
//! (Dadgar et al., "Lifeguard: Local Health Awareness for More Accurate Failure Detection", 2018):
//!
//! - **Local health.** A score from 0 to `max_health_multiplier` rises when this node's timers
//!   fire late (the node itself was stalled or starved of CPU), and falls with each probe
//!   answered. Probe timeouts, probe periods and suspicion timeouts stretch by `1 + score`, so a
//!   node that was just slow accuses others less readily. Unlike Lifeguard, a failed probe does
//!   not raise the score: when a member really crashed every prober fails, and stretching every
//!   node's timeouts for that delayed detection past the 8 s target.
//! - **Suspicion confirmation and reliable refutation.** When this node starts suspecting a
//!   member it asks for a direct check (the driver sends a reliable QUIC ping, which survives
//!   packet loss by retransmission) that tells the suspect the incarnation it is suspected at.
//!   The suspect refutes at once ([`Core::on_suspected`]) and answers with its new incarnation,
//!   which this node applies and gossips on ([`Core::on_alive`]). If the suspect answered while
//!   the suspicion ran, the suspicion is extended instead of ending in "down", up to
//!   `max_suspicion_extensions` times. A crashed node answers nothing, so its detection is not
//!   delayed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::sync::{Arc, Mutex};

use foca::{
    BroadcastHandler, Foca, Invalidates, Member, Message, Notification, PostcardCodec, State, Timer,
};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::MembershipConfig;
use crate::id::NodeId;

/// What a node is known by in the cluster. A new `bump` (start time, then +1 on each renewal)
/// makes a new identity for the same address, which wins over the older one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The node's name (from its certificate).
    pub node: NodeId,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Renewal counter; higher wins.
    pub bump: u64,
    /// What the node tells about itself.
    pub meta: Meta,
}

/// Node metadata gossiped with its identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// Where its HTTP API listens.
    pub http: Option<SocketAddr>,
    /// Labels such as `edge` or `server`.
    pub tags: Vec<String>,
    /// Wasm instances it can run at once.
    pub capacity: u32,
    /// Its id in the cluster's metadata group (never reused; a node whose data directory
    /// was wiped has a new one).
    pub group_id: u64,
}

impl Identity {
    /// A stand-in for a seed whose identity is not known yet: announcements only need the address.
    pub fn seed(addr: SocketAddr) -> Self {
        Identity {
            node: "seed".parse().expect("a valid name"),
            addr,
            bump: 0,
            meta: Meta::default(),
        }
    }
}

impl foca::Identity for Identity {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Identity {
            bump: self.bump + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// A member's state as others see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared down unless it refutes in time.
    Suspect,
    /// Declared down (crashed, partitioned, or left).
    Down,
}

impl From<State> for MemberState {
    fn from(s: State) -> Self {
        match s {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        }
    }
}

impl From<MemberState> for State {
    fn from(s: MemberState) -> Self {
        match s {
            MemberState::Alive => State::Alive,
            MemberState::Suspect => State::Suspect,
            MemberState::Down => State::Down,
        }
    }
}

/// One member in a full-state exchange between two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMember {
    /// Who.
    pub id: Identity,
    /// Its SWIM incarnation.
    pub incarnation: u16,
    /// Its state.
    pub state: MemberState,
    /// Its last free-capacity announcement (version, free).
    pub free: Option<(Version, u32)>,
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram.
    Send { to: SocketAddr, data: Bytes },
    /// Call [`Core::on_timer`] with `timer` after `after`.
    Schedule {
        after: Duration,
        timer: Box<Timer<Identity>>,
    },
    /// Check directly (reliably) whether `member` is alive, telling it it is suspected at
    /// `incarnation`; it answers with [`Core::on_suspected`]'s incarnation, which goes to
    /// [`Core::on_alive`].
    Check {
        member: Identity,
        incarnation: foca::Incarnation,
    },
    /// Exchange full member lists with `with` (reliably): send `members`, and hand its list to
    /// [`Core::on_sync`].
    Sync {
        with: SocketAddr,
        members: Vec<SyncMember>,
    },
    /// Membership changed (foca's notification).
    Notify(Box<foca::OwnedNotification<Identity>>),
}

/// Counters of the failure detector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    /// Probe rounds started.
    pub probes: u64,
    /// Probes that got no answer, direct or indirect.
    pub probes_failed: u64,
    /// Suspicions this node started or learned.
    pub suspicions: u64,
    /// Suspicions that ended with the member proving itself alive (false positives avoided).
    pub refuted: u64,
    /// Suspicions extended because the suspect answered a direct check.
    pub extended: u64,
    /// Members this node saw declared down.
    pub declared_down: u64,
    /// Timers that fired later than the probe timeout (this node was stalled or starved).
    pub late_timers: u64,
    /// Datagrams dropped because their sender claimed a name its certificate does not carry.
    pub impostors: u64,
    /// The current local-health score.
    pub health: u32,
}

/// One suspicion in progress.
#[derive(Debug)]
struct Suspicion {
    started: Instant,
    alive_at: Option<Instant>,
    extensions: u32,
}

/// foca plus local health and suspicion confirmation.
pub struct Core<R: RngExt> {
    foca: Foca<Identity, PostcardCodec, R, Capacity>,
    /// Free capacity by member address, as last announced (shared with foca's handler).
    free: Arc<Mutex<HashMap<SocketAddr, (Version, u32)>>>,
    /// Free-capacity announcements made by this node.
    announced: u64,
    /// Rotates full-state exchanges over the members.
    sync_cursor: usize,
    d: Detector,
    max_packet: usize,
    current_suspicion: Duration,
}

/// Everything but foca: what foca's runtime callbacks may touch while foca runs.
struct Detector {
    config: MembershipConfig,
    suspicions: HashMap<SocketAddr, Suspicion>,
    health: u32,
    stats: DetectorStats,
    out: Vec<Output>,
    now: Instant,
    /// This node just got in touch with the cluster: fetch a full member list.
    want_sync: bool,
    /// This node's own SWIM incarnation, as its latest datagram carried it.
    incarnation: foca::Incarnation,
}

/// Fewest times each membership update is sent on.
const MIN_TRANSMISSIONS: std::num::NonZeroU8 = std::num::NonZeroU8::new(8).expect("non-zero");

/// foca's configuration for `members` members under `config`.
pub fn foca_config(config: &MembershipConfig, members: usize, max_packet: usize) -> foca::Config {
    let n = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(n).expect("at least one"));
    c.probe_period = config.probe_period;
    c.probe_rtt = config.probe_rtt;
    c.num_indirect_probes = config.indirect_probes;
    c.suspect_to_down_after = suspicion_timeout(config, members);
    // foca sends each update `floor(4 log10(n + 1))` times: 3 in a 5-node cluster, and some of
    // those ride on probes of the very member that crashed. Measured on 5 processes, the other
    // nodes then learnt of a "down" 1-2 s after the first, from their own timers.
    c.max_transmissions = c.max_transmissions.max(MIN_TRANSMISSIONS);
    c.remove_down_after = Some(config.remove_down_after);
    c.max_packet_size = std::num::NonZeroUsize::new(max_packet).expect("non-zero packet size");
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: config.gossip_interval,
        num_members: config.gossip_fanout,
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(30),
        num_members: std::num::NonZeroUsize::new(1).expect("non-zero"),
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(15),
        num_members: std::num::NonZeroUsize::new(2).expect("non-zero"),
    });
    c
}

/// `max(1, log10(members)) × multiplier × probe period`.
pub fn suspicion_timeout(config: &MembershipConfig, members: usize) -> Duration {
    let scale = (members.max(1) as f64).log10().max(1.0);
    config
        .probe_period
        .mul_f64(scale * config.suspicion_multiplier.max(0.1))
}

impl<R: RngExt> Core<R> {
    /// A node known as `identity`, alone until it announces itself or is announced to.
    pub fn new(
        identity: Identity,
        config: MembershipConfig,
        rng: R,
        max_packet: usize,
        now: Instant,
    ) -> Self {
        let free = Arc::new(Mutex::new(HashMap::new()));
        let foca = Foca::with_custom_broadcast(
            identity,
            foca_config(&config, 1, max_packet),
            rng,
            PostcardCodec,
            Capacity(free.clone()),
        );
        let current_suspicion = suspicion_timeout(&config, 1);
        Core {
            foca,
            free,
            announced: 0,
            sync_cursor: 0,
            d: Detector {
                config,
                suspicions: HashMap::new(),
                health: 0,
                stats: DetectorStats::default(),
                out: Vec::new(),
                now,
                want_sync: false,
                incarnation: 0,
            },
            max_packet,
            current_suspicion,
        }
    }

    /// This node's current identity.
    pub fn identity(&self) -> &Identity {
        self.foca.identity()
    }

    /// Every member this node knows of, down ones included (itself excluded).
    pub fn members(&self) -> impl Iterator<Item = &Member<Identity>> {
        self.foca.iter_membership_state()
    }

    /// Live (alive or suspect) members, itself excluded.
    pub fn live_members(&self) -> usize {
        self.foca.num_members()
    }

    /// The detector's counters.
    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            health: self.d.health,
            ..self.d.stats
        }
    }

    /// Takes what the driver must do now.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.d.out.drain(..)
    }

    /// Asks `seed` (an address, possibly of a node not yet known) to let this node in.
    pub fn announce(&mut self, seed: SocketAddr, now: Instant) {
        self.d.now = now;
        let r = self.foca.announce(Identity::seed(seed), &mut self.d);
        log_error("announce", r);
        self.after_call();
    }

    /// A datagram arrived from a peer whose certificate names `sender`. A packet whose sender
    /// claims another node's name is dropped: a certificate vouches for one name only.
    pub fn on_data_from(&mut self, data: &[u8], sender: &NodeId, now: Instant) {
        use foca::Codec;
        let header: Result<foca::Header<Identity>, _> = PostcardCodec.decode_header(data);
        if let Ok(header) = header
            && header.src.node != *sender
            && !self.d.config.trust_claimed_names()
        {
            self.d.stats.impostors += 1;
            tracing::warn!(certificate = %sender, claims = %header.src.node, addr = %header.src.addr, "dropped gossip claiming another node's name");
            return;
        }
        self.on_data(data, now);
    }

    /// A datagram arrived.
    pub fn on_data(&mut self, data: &[u8], now: Instant) {
        self.d.now = now;
        let r = self.foca.handle_data(data, &mut self.d);
        log_error("handle_data", r);
        self.after_call();
    }

    /// A timer scheduled through [`Output::Schedule`] is due; `late` is how long after its due
    /// time it is delivered.
    pub fn on_timer(&mut self, timer: Timer<Identity>, late: Duration, now: Instant) {
        if late > self.d.config.probe_rtt {
            self.d.stats.late_timers += 1;
            if self.d.config.lifeguard() {
                self.d.health = (self.d.health + 2).min(self.d.config.max_health_multiplier);
            }
        }
        match &timer {
            Timer::ProbeRandomMember(_) => self.d.stats.probes += 1,
            Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } => {
                let refuted = self
                    .members()
                    .find(|m| m.id().addr == member_id.addr)
                    .is_some_and(|m| {
                        m.id() != member_id
                            || m.incarnation() > *incarnation
                            || m.state() == State::Alive
                    });
                if refuted {
                    // The suspect proved itself alive (or was replaced by a newer identity).
                    // foca would find nothing to do, yet still send the suspect a "you are
                    // down" notice, making a healthy node renew its identity and rejoin
                    // (found by the simulation): the timer ends here.
                    self.d.suspicions.remove(&member_id.addr);
                    self.d.stats.refuted += 1;
                    return;
                }
                if self.extend_suspicion(&timer, member_id, now) {
                    return;
                }
                self.d.suspicions.remove(&member_id.addr);
            }
            _ => {}
        }
        self.d.now = now;
        let r = self.foca.handle_timer(timer, &mut self.d);
        log_error("handle_timer", r);
        self.after_call();
    }

    /// A direct check of `member` (asked for by [`Output::Check`]) was answered, with the
    /// incarnation the member refuted its suspicion at. The refutation is applied here and
    /// gossiped on, so it no longer depends on the suspect's own datagrams getting through.
    pub fn on_alive(&mut self, member: &Identity, incarnation: foca::Incarnation, now: Instant) {
        if let Some(s) = self.d.suspicions.get_mut(&member.addr) {
            s.alive_at = Some(now);
        }
        let current = self
            .members()
            .find(|m| m.id() == member)
            .map(|m| m.incarnation());
        if current.is_some_and(|c| incarnation > c) {
            self.d.now = now;
            let update = Member::new(member.clone(), incarnation, State::Alive);
            let r = self
                .foca
                .apply_many(std::iter::once(update), true, &mut self.d);
            log_error("apply_many", r);
            self.after_call();
        }
    }

    /// A member checking on this node says it suspects it at `incarnation` (Lifeguard's
    /// "buddy system", over a reliable stream): refute at once. Returns the incarnation to
    /// answer with, above `incarnation` when the suspicion is about this node's current self.
    pub fn on_suspected(
        &mut self,
        incarnation: foca::Incarnation,
        now: Instant,
    ) -> foca::Incarnation {
        if self.d.config.lifeguard() && incarnation >= self.d.incarnation {
            self.d.now = now;
            let me = self.foca.identity().clone();
            let update = Member::new(me, incarnation, State::Suspect);
            let r = self
                .foca
                .apply_many(std::iter::once(update), true, &mut self.d);
            log_error("apply_many", r);
            self.after_call();
            // foca refutes by raising its incarnation above the suspicion's; its next
            // datagram carries the new figure (tracked in `Detector::incarnation`).
            return self.d.incarnation.max(incarnation.saturating_add(1));
        }
        self.d.incarnation
    }

    /// Tells the cluster how many more instances this node can run now. Announcements are
    /// versioned by identity and sequence, so the newest wins wherever it arrives; repeat them
    /// now and then, since members that join later never see older ones.
    pub fn announce_free(&mut self, free: u32, now: Instant) {
        self.announced += 1;
        let item = CapacityItem {
            addr: self.foca.identity().addr,
            version: (self.foca.identity().bump, self.announced),
            free,
        };
        let bytes = postcard::to_stdvec(&item).expect("capacity items encode");
        if let Err(e) = self.foca.add_broadcast(&bytes) {
            tracing::debug!(error = %e, "capacity announcement");
        }
        self.d.now = now;
        let r = self.foca.broadcast(&mut self.d);
        log_error("broadcast", r);
    }

    /// The free capacity `addr` last announced.
    pub fn free_of(&self, addr: SocketAddr) -> Option<u32> {
        self.free
            .lock()
            .expect("not poisoned")
            .get(&addr)
            .map(|(_, f)| *f)
    }

    /// Every member this node knows, itself included, for a full-state exchange.
    pub fn member_list(&self) -> Vec<SyncMember> {
        let free = self.free.lock().expect("not poisoned");
        let me = self.foca.identity();
        std::iter::once(SyncMember {
            id: me.clone(),
            incarnation: 0,
            state: MemberState::Alive,
            free: free.get(&me.addr).copied(),
        })
        .chain(self.foca.iter_membership_state().map(|m| SyncMember {
            id: m.id().clone(),
            incarnation: m.incarnation(),
            state: m.state().into(),
            free: free.get(&m.id().addr).copied(),
        }))
        .collect()
    }

    /// Merges a member list that `sender` (the node name in the certificate of the connection
    /// it came on) sent or answered with. The list's first entry is its sender: a list whose
    /// sender claims another name, or that lists another name as alive at the sender's own
    /// address, is refused whole and counted as an impostor's, as gossip is.
    pub fn on_sync_from(
        &mut self,
        members: Vec<SyncMember>,
        sender: Option<&NodeId>,
        now: Instant,
    ) -> Result<(), String> {
        if !self.d.config.trust_claimed_names() {
            let Some(sender) = sender else {
                return Err("a member list needs a certificate that names its sender".into());
            };
            let Some(first) = members.first() else {
                return Err("an empty member list: the first entry must be its sender".into());
            };
            let claims = if first.id.node != *sender {
                Some(&first.id.node)
            } else {
                members
                    .iter()
                    .find(|m| {
                        m.id.addr == first.id.addr
                            && m.id.node != *sender
                            && m.state != MemberState::Down
                    })
                    .map(|m| &m.id.node)
            };
            if let Some(claims) = claims {
                self.d.stats.impostors += 1;
                tracing::warn!(certificate = %sender, %claims, addr = %first.id.addr, "refused a member list claiming another node's name");
                return Err(format!(
                    "the certificate names `{sender}`, and this member list speaks for `{claims}`: a node speaks for itself only"
                ));
            }
        }
        self.on_sync(members, now);
        Ok(())
    }

    /// Merges a member list from another node (an answer to [`Output::Sync`], or a request
    /// for one). Nothing is gossiped on: the exchange is between the two nodes.
    pub fn on_sync(&mut self, members: Vec<SyncMember>, now: Instant) {
        {
            let mut free = self.free.lock().expect("not poisoned");
            for m in &members {
                if let Some((version, f)) = m.free
                    && free.get(&m.id.addr).is_none_or(|(v, _)| *v < version)
                {
                    free.insert(m.id.addr, (version, f));
                }
            }
        }
        let updates = members
            .into_iter()
            .map(|m| Member::new(m.id, m.incarnation, m.state.into()));
        self.d.now = now;
        let r = self.foca.apply_many(updates, false, &mut self.d);
        log_error("apply_many", r);
        self.after_call();
    }

    /// Asks for a full-state exchange with the next member in turn (the driver calls this every
    /// `sync_interval`): gossip converges fast on the few members that changed, and this
    /// closes the gaps a large cluster leaves in a new member's list.
    pub fn sync_tick(&mut self) {
        let n = self.foca.num_members();
        if n == 0 {
            return;
        }
        self.sync_cursor = (self.sync_cursor + 1) % n;
        if let Some(with) = self.foca.iter_members().nth(self.sync_cursor) {
            let with = with.id().addr;
            let members = self.member_list();
            self.d.out.push(Output::Sync { with, members });
        }
    }

    /// Leaves the cluster: tells others this node is going down on purpose.
    pub fn leave(&mut self, now: Instant) {
        self.d.now = now;
        // foca gossips the notice to `indirect_probes` members and lets them spread it; a
        // member not among them may probe this node first, find it gone, and suspect it.
        // Tell every member directly instead.
        let n = self.foca.num_members() + 1;
        let mut c = foca_config(&self.d.config, n, self.max_packet);
        c.num_indirect_probes = std::num::NonZeroUsize::new(n).expect("at least one");
        log_error("set_config", self.foca.set_config(c));
        let r = self.foca.leave_cluster(&mut self.d);
        log_error("leave_cluster", r);
    }

    /// Whether a suspicion should go on instead of ending: the suspect answered a direct check
    /// since the suspicion (or its last extension) started. Re-arms the same timer if so; foca
    /// ignores it should the suspect refute meanwhile.
    fn extend_suspicion(
        &mut self,
        timer: &Timer<Identity>,
        member: &Identity,
        now: Instant,
    ) -> bool {
        if !self.d.config.lifeguard() {
            return false;
        }
        let max = self.d.config.max_suspicion_extensions;
        let Some(s) = self.d.suspicions.get_mut(&member.addr) else {
            return false;
        };
        let answered = s.alive_at.is_some_and(|t| t >= s.started);
        if !answered || s.extensions >= max {
            return false;
        }
        s.extensions += 1;
        s.started = now;
        s.alive_at = None;
        self.d.stats.extended += 1;
        let after = self.stretch(suspicion_timeout(
            &self.d.config,
            self.foca.num_members() + 1,
        ));
        if let Timer::ChangeSuspectToDown { incarnation, .. } = timer {
            self.d.out.push(Output::Check {
                member: member.clone(),
                incarnation: *incarnation,
            });
        }
        self.d.out.push(Output::Schedule {
            after,
            timer: Box::new(timer.clone()),
        });
        true
    }

    /// `d` stretched by the local-health score.
    fn stretch(&self, d: Duration) -> Duration {
        if self.d.config.lifeguard() {
            d * (1 + self.d.health)
        } else {
            d
        }
    }

    /// Keeps foca's timeouts in step with the cluster's size, and asks for a full member list
    /// once this node gets in touch with the cluster.
    fn after_call(&mut self) {
        if std::mem::take(&mut self.d.want_sync) {
            self.sync_tick();
        }
        let n = self.foca.num_members() + 1;
        let want = suspicion_timeout(&self.d.config, n);
        if self.current_suspicion != want {
            let max_packet = self.max_packet;
            let r = self
                .foca
                .set_config(foca_config(&self.d.config, n, max_packet));
            log_error("set_config", r);
            self.current_suspicion = want;
        }
    }
}

/// foca's window on the world during one call: collects outputs and applies the local-health
/// rules to timers and notifications as they come.
impl foca::Runtime<Identity> for Detector {
    fn notify(&mut self, notification: Notification<'_, Identity>) {
        let lifeguard = self.config.lifeguard();
        match notification {
            Notification::DataSent(h) => self.incarnation = h.src_incarnation,
            Notification::DataReceived(h) => {
                if lifeguard && matches!(h.message, Message::Ack(_) | Message::ForwardedAck { .. })
                {
                    self.health = self.health.saturating_sub(1);
                }
            }
            // Lifeguard also raises the score on a failed probe. Here a failed probe only counts:
            // when a member has really crashed, every prober fails, and stretching every
            // prober's suspicion to 8 s for it put detection past the 8 s target
            // (see bench/RESULTS.md).
            Notification::ProbeFailed(_, _) => self.stats.probes_failed += 1,
            n => {
                match n {
                    Notification::MemberDown(_) => self.stats.declared_down += 1,
                    Notification::Active => self.want_sync = true,
                    _ => {}
                }
                self.out.push(Output::Notify(Box::new(n.to_owned())));
            }
        }
    }

    fn send_to(&mut self, to: Identity, data: &[u8]) {
        self.out.push(Output::Send {
            to: to.addr,
            data: Bytes::copy_from_slice(data),
        });
    }

    fn submit_after(&mut self, timer: Timer<Identity>, after: Duration) {
        let stretch = if self.config.lifeguard() {
            1 + self.health
        } else {
            1
        };
        let after = match &timer {
            Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } => after * stretch,
            Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } => {
                self.stats.suspicions += 1;
                tracing::info!(
                    member = %member_id.node,
                    incarnation,
                    "suspecting {}: it did not answer probes",
                    member_id.node
                );
                if self.config.lifeguard() {
                    self.suspicions.insert(
                        member_id.addr,
                        Suspicion {
                            started: self.now,
                            alive_at: None,
                            extensions: 0,
                        },
                    );
                    self.out.push(Output::Check {
                        member: member_id.clone(),
                        incarnation: *incarnation,
                    });
                }
                after * stretch
            }
            _ => after,
        };
        self.out.push(Output::Schedule {
            after,
            timer: Box::new(timer),
        });
    }
}

/// A free-capacity announcement's version: the announcer's identity bump, then its sequence.
pub type Version = (u64, u64);

/// One free-capacity announcement, gossiped as a foca custom broadcast.
#[derive(Serialize, Deserialize)]
struct CapacityItem {
    addr: SocketAddr,
    version: Version,
    free: u32,
}

/// Identifies an announcement; a newer one from the same address replaces older ones still
/// waiting to be sent on.
struct CapacityKey {
    addr: SocketAddr,
    version: Version,
}

impl Invalidates for CapacityKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr && self.version > other.version
    }
}

/// foca's handler of capacity announcements: keeps the newest per address, passes on only news.
struct Capacity(Arc<Mutex<HashMap<SocketAddr, (Version, u32)>>>);

impl BroadcastHandler<Identity> for Capacity {
    type Key = CapacityKey;
    type Error = postcard::Error;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Identity>,
    ) -> Result<Option<CapacityKey>, postcard::Error> {
        let item: CapacityItem = postcard::from_bytes(data)?;
        let mut latest = self.0.lock().expect("not poisoned");
        if latest
            .get(&item.addr)
            .is_some_and(|(v, _)| *v >= item.version)
        {
            return Ok(None);
        }
        latest.insert(item.addr, (item.version, item.free));
        Ok(Some(CapacityKey {
            addr: item.addr,
            version: item.version,
        }))
    }
}

fn log_error(what: &str, r: Result<(), foca::Error>) {
    if let Err(e) = r {
        match e {
            foca::Error::DataFromOurselves | foca::Error::NotConnected => {
                tracing::trace!(error = %e, "{what}")
            }
            _ => tracing::debug!(error = %e, "{what}"),
        }
    }
}
