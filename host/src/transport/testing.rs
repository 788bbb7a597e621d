//! Adversarial peers for tests: raw UDP, clients without a certificate or with another
//! cluster's, and hand-made frames. Kept here because only this module knows quinn.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::{Credentials, quic_client};

/// How a test client identifies itself.
#[derive(Clone, Copy, Debug)]
pub enum ClientCert<'a> {
    /// The certificate in these credentials (which may come from another CA, or be expired).
    From(&'a Credentials),
    /// No certificate at all.
    None,
}

/// Sends raw bytes to `addr` over plain UDP.
pub async fn send_udp(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(bytes, addr).await?;
    Ok(())
}

/// Connects to `addr` trusting `trust`'s CA and presenting `cert`, then writes `stream` on one
/// bidirectional stream and `datagram` (if any) as a datagram; returns what came back on the
/// stream (at most 1 MiB), or why the exchange failed.
pub async fn exchange(
    addr: SocketAddr,
    trust: &Credentials,
    cert: ClientCert<'_>,
    stream: &[u8],
    datagram: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let tls = match cert {
        ClientCert::From(c) => {
            // Trust the node's CA, present `c`'s certificate.
            let mut mixed = c.clone();
            mixed.set_ca(trust);
            super::identity::Identity::new(&mixed).and_then(|id| id.client_config())
        }
        ClientCert::None => trust.anonymous_client_config(),
    }
    .map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(
        quic_client(tls).map_err(|e| e.to_string())?,
    ));
    let work = async {
        let conn = endpoint
            .connect(addr, super::tls::SERVER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if let Some(d) = datagram {
            conn.send_datagram(Bytes::copy_from_slice(d))
                .map_err(|e| e.to_string())?;
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(stream).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let answer = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())?;
        conn.close(0u32.into(), b"done");
        Ok(answer)
    };
    let result = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
    endpoint.close(0u32.into(), b"done");
    result
}
