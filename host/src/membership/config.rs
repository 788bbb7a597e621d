//! Membership's configuration: SWIM's timings and Weft's additions to it.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// SWIM failure detection (foca) and Weft's additions to it. See ARCHITECTURE.md, "Membership".
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// How often this node probes one member. Default 1 s. Shorter detects crashes sooner and
    /// sends more datagrams.
    #[serde(with = "crate::millis")]
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe. Default 500 ms; must be
    /// below `probe_period`.
    #[serde(with = "crate::millis")]
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly. Default 3.
    pub indirect_probes: NonZeroUsize,
    /// Suspicion lasts `max(1, log10(members)) × this × probe_period` before a member is declared
    /// down. Default 4 (4 s with up to 10 members).
    pub suspicion_multiplier: f64,
    /// How often pending updates are gossiped, to `gossip_fanout` members. Default 200 ms.
    #[serde(with = "crate::millis")]
    pub gossip_interval: Duration,
    /// Members each gossip round goes to. Default 3.
    pub gossip_fanout: NonZeroUsize,
    /// Test only (`test-switches`): Weft's additions to plain SWIM (local health and suspicion
    /// confirmation). Default on; off gives plain foca, for comparison. Read it through
    /// [`MembershipConfig::lifeguard`].
    #[cfg(feature = "test-switches")]
    #[serde(skip, default = "yes")]
    pub lifeguard: bool,
    /// Test only (`test-switches`): take gossip and member lists whose sender claims another
    /// name than its certificate's.
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub trust_claimed_names: bool,
    /// Largest local-health multiplier: a node that finds itself slow stretches its probe
    /// timeouts and its suspicions up to `1 + this` times. Default 4.
    pub max_health_multiplier: u32,
    /// Times a suspicion is extended because the suspect answered a direct check (a reliable
    /// QUIC ping) meanwhile. Default 3. Each extension lasts one suspicion period.
    pub max_suspicion_extensions: u32,
    /// How often this node exchanges full member lists with one member (in turn), besides once
    /// on joining. Default 30 s. Gossip spreads changes fast; this fills the gaps a large
    /// cluster leaves in a newcomer's list, at the cost of one member list per interval.
    #[serde(with = "crate::millis")]
    pub sync_interval: Duration,
    /// While this node knows no live member, it announces itself to its seeds this often.
    /// Default 2 s.
    #[serde(with = "crate::millis")]
    pub rejoin_interval: Duration,
    /// How long a member declared down stays in the member list. Default 1 hour.
    #[serde(with = "crate::millis")]
    pub remove_down_after: Duration,
}

#[cfg(feature = "test-switches")]
fn yes() -> bool {
    true
}

impl MembershipConfig {
    /// Whether a sender claiming another name than its certificate's is believed: never,
    /// except in tests that show what the check guards against.
    pub fn trust_claimed_names(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.trust_claimed_names;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    /// Whether Weft's additions to plain SWIM are on: always, except in tests that compare
    /// them with plain foca.
    pub fn lifeguard(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.lifeguard;
        #[cfg(not(feature = "test-switches"))]
        true
    }

    /// For machines on one LAN (the default): crashes detected in about 6 s.
    pub fn lan() -> Self {
        MembershipConfig {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            indirect_probes: NonZeroUsize::new(3).expect("non-zero"),
            suspicion_multiplier: 4.0,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: NonZeroUsize::new(3).expect("non-zero"),
            #[cfg(feature = "test-switches")]
            lifeguard: true,
            #[cfg(feature = "test-switches")]
            trust_claimed_names: false,
            max_health_multiplier: 4,
            max_suspicion_extensions: 3,
            sync_interval: Duration::from_secs(30),
            rejoin_interval: Duration::from_secs(2),
            remove_down_after: Duration::from_secs(3600),
        }
    }

    /// For tests on one machine: the LAN settings five times faster.
    pub fn test() -> Self {
        MembershipConfig {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(50),
            rejoin_interval: Duration::from_millis(400),
            sync_interval: Duration::from_secs(6),
            ..Self::lan()
        }
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self::lan()
    }
}
