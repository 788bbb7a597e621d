//! The QUIC transport's configuration: timeouts and frame limits.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Timeouts and bounds of the QUIC transport.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Time allowed to set up a connection (QUIC and TLS handshake). Default 2 s.
    /// A peer that cannot be reached is not dialled again for this long.
    #[serde(with = "crate::millis")]
    pub connect_timeout: Duration,
    /// Time allowed for one RPC: request written and response read. Default 5 s.
    #[serde(with = "crate::millis")]
    pub rpc_timeout: Duration,
    /// A connection with no traffic for this long is closed. Default 10 s; keep-alives go out
    /// at a third of it, so a connection to a live peer never idles out.
    #[serde(with = "crate::millis")]
    pub idle_timeout: Duration,
    /// Largest RPC request or response accepted, in bytes. Default 16 MiB.
    pub max_frame_bytes: NonZeroU32,
    /// How often the node reads its certificate and key files again, to take up a renewed
    /// certificate (`weft cluster issue` again) without a restart: a change is taken up at
    /// the second check that sees it. Default 60 s; 0 never reads them again.
    #[serde(with = "crate::millis")]
    pub certificate_check_interval: Duration,
    /// Test only (`test-switches`): the fraction (0 to 1) of outgoing datagrams dropped on
    /// purpose, to measure failure detection on a lossy network. Default 0.
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub drop_datagrams: f64,
    /// Test only (`test-switches`): keep a cached connection to an address that a peer dials
    /// anew (the behaviour that got restarted nodes declared down).
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub keep_cached_connections: bool,
    /// Test only (`test-switches`): keep the deny list empty whatever the cluster's says, so
    /// a control test shows the deny-list test fails without it.
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub ignore_deny_list: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            max_frame_bytes: NonZeroU32::new(16 << 20).expect("non-zero"),
            certificate_check_interval: Duration::from_secs(60),
            #[cfg(feature = "test-switches")]
            drop_datagrams: 0.0,
            #[cfg(feature = "test-switches")]
            keep_cached_connections: false,
            #[cfg(feature = "test-switches")]
            ignore_deny_list: false,
        }
    }
}
