//! The wire frame: a fixed header (magic, protocol version, cluster id, kind, length) before
//! every payload, on datagrams and on streams alike. Pure code: encoding and checking only.
//!
//! ```text
//! 0      2        4            12     13         17
//! | "WF" | version | cluster id | kind | length    | payload (length bytes)
//! ```
//!
//! Error frames keep this layout in every protocol version, so a node always understands why a
//! peer of another version refused it.

use std::fmt;

/// The protocol this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 17;
const MAGIC: [u8; 2] = *b"WF";

/// The cluster a frame belongs to: the first 8 bytes of the blake3 digest of the cluster CA's
/// certificate, so it needs no configuration and two clusters never share one by accident.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; 8]);

impl ClusterId {
    /// The id of the cluster whose CA certificate (DER) is `ca_der`.
    pub fn of_ca(ca_der: &[u8]) -> Self {
        let mut id = [0; 8];
        id.copy_from_slice(&blake3::hash(ca_der).as_bytes()[..8]);
        ClusterId(id)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A membership (SWIM) message, on a datagram.
    Gossip = 1,
    /// An RPC request, on a fresh bidirectional stream.
    Request = 2,
    /// The answer to a request, on the same stream.
    Response = 3,
    /// A refusal, in place of a response: the payload is a UTF-8 message. It also ends a
    /// streamed answer that failed part-way.
    Error = 4,
    /// One piece of a streamed answer, after its response frame.
    Piece = 5,
    /// The end of a streamed answer (empty payload).
    End = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Gossip,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Error,
            5 => Kind::Piece,
            6 => Kind::End,
            _ => return None,
        })
    }
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's protocol version.
    pub version: u16,
    /// The sender's cluster.
    pub cluster: ClusterId,
    /// What follows.
    pub kind: Kind,
    /// Payload bytes.
    pub len: u32,
}

/// Why a frame was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header, or than the header's length.
    #[error("truncated frame: {got} bytes where {need} were expected")]
    Truncated { got: usize, need: usize },
    /// Not a Weft frame at all.
    #[error("not a Weft frame (bad magic bytes)")]
    BadMagic,
    /// A peer speaking another protocol version.
    #[error(
        "peer speaks protocol version {theirs}, this node speaks version {PROTOCOL_VERSION}: \
         upgrade the older node"
    )]
    UnknownVersion { theirs: u16 },
    /// A peer of another cluster.
    #[error("frame from cluster {theirs}, this node belongs to cluster {ours}")]
    WrongCluster { theirs: ClusterId, ours: ClusterId },
    /// A kind this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A payload over the limit for its kind.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
}

/// Writes a header for `len` payload bytes.
pub fn header(cluster: ClusterId, kind: Kind, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[0..2].copy_from_slice(&MAGIC);
    h[2..4].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    h[4..12].copy_from_slice(&cluster.0);
    h[12] = kind as u8;
    h[13..17].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    h
}

/// A whole frame (header and payload) in one buffer.
pub fn encode(cluster: ClusterId, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&header(cluster, kind, payload.len()));
    v.extend_from_slice(payload);
    v
}

/// Checks a header against this node's cluster and a payload limit.
///
/// Error frames are accepted from any version (their layout never changes), so the caller can
/// show the peer's reason; every other kind must match this node's version and cluster.
pub fn decode_header(bytes: &[u8], ours: ClusterId, max_len: u32) -> Result<Header, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated {
            got: bytes.len(),
            need: HEADER_LEN,
        });
    }
    if bytes[0..2] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[2], bytes[3]]);
    let cluster = ClusterId(bytes[4..12].try_into().expect("8 bytes"));
    let kind = bytes[12];
    let len = u32::from_be_bytes(bytes[13..17].try_into().expect("4 bytes"));
    if kind == Kind::Error as u8 {
        return Ok(Header {
            version,
            cluster,
            kind: Kind::Error,
            len: len.min(max_len),
        });
    }
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnknownVersion { theirs: version });
    }
    if cluster != ours {
        return Err(FrameError::WrongCluster {
            theirs: cluster,
            ours,
        });
    }
    let kind = Kind::from_u8(kind).ok_or(FrameError::UnknownKind(kind))?;
    if len > max_len {
        return Err(FrameError::TooLarge {
            len: len.into(),
            max: max_len.into(),
        });
    }
    Ok(Header {
        version,
        cluster,
        kind,
        len,
    })
}

/// Splits a datagram into its header and payload.
pub fn decode_datagram(
    bytes: &[u8],
    ours: ClusterId,
    max_len: u32,
) -> Result<(Header, &[u8]), FrameError> {
    let h = decode_header(bytes, ours, max_len)?;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != h.len as usize {
        return Err(FrameError::Truncated {
            got: payload.len(),
            need: h.len as usize,
        });
    }
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: ClusterId = ClusterId([1; 8]);

    fn check(bytes: &[u8], expected: Result<(Kind, &[u8]), FrameError>) {
        let got = decode_datagram(bytes, US, 64).map(|(h, p)| (h.kind, p));
        assert_eq!(got, expected, "decoding {bytes:?}");
    }

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        check(
            &encode(US, Kind::Gossip, b"ping"),
            Ok((Kind::Gossip, b"ping")),
        );
        check(&encode(US, Kind::Request, b""), Ok((Kind::Request, b"")));
        check(
            b"WF",
            Err(FrameError::Truncated {
                got: 2,
                need: HEADER_LEN,
            }),
        );
        let mut f = encode(US, Kind::Gossip, b"ping");
        f.pop();
        check(&f, Err(FrameError::Truncated { got: 3, need: 4 }));
        let mut f = encode(US, Kind::Gossip, b"ping");
        f[0] = b'X';
        check(&f, Err(FrameError::BadMagic));
        let mut f = encode(US, Kind::Gossip, b"ping");
        f[3] = 9;
        check(&f, Err(FrameError::UnknownVersion { theirs: 9 }));
        let f = encode(ClusterId([2; 8]), Kind::Gossip, b"ping");
        check(
            &f,
            Err(FrameError::WrongCluster {
                theirs: ClusterId([2; 8]),
                ours: US,
            }),
        );
        let mut f = encode(US, Kind::Gossip, b"ping");
        f[12] = 77;
        check(&f, Err(FrameError::UnknownKind(77)));
        check(
            &encode(US, Kind::Gossip, &[0; 65]),
            Err(FrameError::TooLarge { len: 65, max: 64 }),
        );
    }

    #[test]
    fn error_frames_are_readable_from_any_version_and_cluster() {
        let mut f = encode(ClusterId([3; 8]), Kind::Error, b"go away");
        f[2..4].copy_from_slice(&7u16.to_be_bytes());
        check(&f, Ok((Kind::Error, b"go away")));
    }
}
