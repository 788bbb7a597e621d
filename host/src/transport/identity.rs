//! What a running endpoint proves and whom it accepts, changeable while it runs: this node's
//! certificate and key, renewed in place when their files change (`weft cluster issue`
//! again), and the node names it refuses (the cluster's deny list). Every handshake reads
//! both as they are at that moment; connections already open keep what they were made with,
//! except that those to a node just denied are closed ([`super::Transport::set_denied`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::tls::{self, Credentials, TlsError};
use crate::id::NodeId;

/// A certificate expiring within this long is warned about (log and metric).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// This node's certificate as it is now, and the deny list.
pub(crate) struct Identity {
    node: NodeId,
    current: RwLock<Loaded>,
    denied: RwLock<HashSet<NodeId>>,
    /// When the current certificate runs out (Unix seconds).
    pub(crate) not_after: AtomicI64,
    /// Certificates taken up since start, and renewed files refused.
    pub(crate) renewed: AtomicU64,
    pub(crate) refused: AtomicU64,
    /// Handshakes refused because the peer is on the deny list.
    pub(crate) denied_handshakes: AtomicU64,
    server_verifier: Arc<WebPkiServerVerifier>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// blake3 of the chain and key as loaded, to notice a change of the files.
    fingerprint: blake3::Hash,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node", &self.node)
            .finish()
    }
}

impl Identity {
    /// `creds` as the endpoint's identity.
    pub(crate) fn new(creds: &Credentials) -> Result<Arc<Identity>, TlsError> {
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(creds.roots()?, tls::provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let (key, not_after) = certified(creds)?;
        Ok(Arc::new(Identity {
            node: creds.node.clone(),
            current: RwLock::new(Loaded {
                key,
                fingerprint: creds.fingerprint(),
            }),
            denied: RwLock::default(),
            not_after: AtomicI64::new(not_after),
            renewed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            denied_handshakes: AtomicU64::new(0),
            server_verifier,
        }))
    }

    /// The server side: TLS 1.3 only; the client must present a certificate from the CA for a
    /// node not on the deny list; the certificate presented is this identity's current one.
    pub(crate) fn server_config(
        self: &Arc<Self>,
        creds: &Credentials,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let identity = self;
        let provider = tls::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            creds.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = Arc::new(ClientCheck {
            inner: verifier,
            identity: identity.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(identity.clone());
        config.alpn_protocols = vec![tls::ALPN.to_vec()];
        Ok(config)
    }

    /// The client side: trusts the CA only, refuses a node on the deny list, and presents
    /// this identity's current certificate.
    pub(crate) fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, TlsError> {
        let identity = self;
        let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck {
                identity: identity.clone(),
            }))
            .with_client_cert_resolver(identity.clone());
        config.alpn_protocols = vec![tls::ALPN.to_vec()];
        Ok(config)
    }

    /// Whether `creds` differ from what the endpoint presents now.
    pub(crate) fn differs(&self, creds: &Credentials) -> bool {
        self.current.read().expect("not poisoned").fingerprint != creds.fingerprint()
    }

    /// Presents `creds` from the next handshake on, if they are this node's, from the same CA,
    /// valid now and their key matches; otherwise keeps the current ones and says why.
    pub(crate) fn renew(&self, creds: &Credentials) -> Result<i64, String> {
        let (key, not_after) = certified(creds).map_err(|e| e.to_string())?;
        let leaf = key.end_entity_cert().map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(tls::SERVER_NAME).expect("a valid DNS name");
        self.server_verifier
            .verify_server_cert(leaf, &[], &server_name, &[], UnixTime::now())
            .map_err(|e| {
                format!("the new certificate does not check out against the cluster's CA: {e}")
            })?;
        match tls::node_of(leaf) {
            Some(n) if n == self.node => {}
            other => {
                return Err(format!(
                    "the new certificate is for {}, not for this node `{}`",
                    other.map_or("no node".into(), |n| format!("node `{n}`")),
                    self.node
                ));
            }
        }
        *self.current.write().expect("not poisoned") = Loaded {
            key,
            fingerprint: creds.fingerprint(),
        };
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(not_after)
    }

    /// Refuses handshakes with these nodes from now on.
    pub(crate) fn set_denied(&self, names: HashSet<NodeId>) {
        *self.denied.write().expect("not poisoned") = names;
    }

    /// Whether `node` is on the deny list.
    pub(crate) fn denies(&self, node: Option<&NodeId>) -> bool {
        node.is_some_and(|n| self.denied.read().expect("not poisoned").contains(n))
    }

    /// A peer certificate's node, refused if denied.
    fn check_denied(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let node = tls::node_of(end_entity);
        if self.denies(node.as_ref()) {
            self.denied_handshakes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %node.expect("denied names a node"), "refused a handshake: the node is on the cluster's deny list");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(())
    }

    /// Seconds until the certificate runs out (negative once it has).
    pub(crate) fn expires_in(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_after.load(Ordering::Relaxed) - now
    }

    /// Appends the certificate's and the deny list's metrics.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, family, single};
        let left = self.expires_in();
        single(
            out,
            "weft_tls_certificate_expires_in_seconds",
            Kind::Gauge,
            "Seconds until this node's certificate runs out (renew it with `weft cluster issue`).",
            left,
        );
        single(
            out,
            "weft_tls_certificate_expiring",
            Kind::Gauge,
            "1 when this node's certificate runs out within 30 days.",
            u8::from(left < EXPIRY_WARNING.as_secs() as i64),
        );
        family(
            out,
            "weft_tls_certificate_reloads_total",
            Kind::Counter,
            "Changed certificate files taken up without a restart (renewed), or refused (kept the old).",
            [("renewed", &self.renewed), ("refused", &self.refused)]
                .map(|(r, c)| (format!("result=\"{r}\""), c.load(Ordering::Relaxed))),
        );
        single(
            out,
            "weft_handshakes_denied_total",
            Kind::Counter,
            "Handshakes refused because the peer is on the cluster's deny list.",
            self.denied_handshakes.load(Ordering::Relaxed),
        );
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().expect("not poisoned").key.clone()
    }
}

/// The signing key of `creds` with their chain, and when the certificate runs out.
fn certified(creds: &Credentials) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
    let key = CertifiedKey::from_der(creds.chain.clone(), creds.key.clone_key(), &tls::provider())?;
    let leaf = key.end_entity_cert()?;
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .map_err(|e| rustls::Error::General(format!("reading the certificate's validity: {e}")))?;
    Ok((Arc::new(key), not_after))
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The server side's check of a dialling node: the cluster's CA, then the deny list.
#[derive(Debug)]
pub(crate) struct ClientCheck {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) identity: Arc<Identity>,
}

impl ClientCertVerifier for ClientCheck {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.identity.check_denied(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The dialling side's check of the node it reached: the cluster's CA, then the deny list.
#[derive(Debug)]
pub(crate) struct ServerCheck {
    pub(crate) identity: Arc<Identity>,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.identity.server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.identity.check_denied(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.identity
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.identity
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.identity.server_verifier.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ClusterDir;

    #[test]
    fn an_identity_builds_both_sides_and_takes_only_its_own_renewal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClusterDir::new(tmp.path());
        dir.init().unwrap();
        let (a, b): (NodeId, NodeId) = ("a".parse().unwrap(), "b".parse().unwrap());
        dir.issue(&a).unwrap();
        dir.issue(&b).unwrap();
        let creds = dir.load(&a).unwrap();
        let identity = Identity::new(&creds).unwrap();
        identity.server_config(&creds).unwrap();
        identity.client_config().unwrap();
        assert!(!identity.differs(&creds));
        assert!(identity.expires_in() > EXPIRY_WARNING.as_secs() as i64);

        dir.issue(&a).unwrap();
        let renewed = creds.reload().unwrap();
        assert!(identity.differs(&renewed));
        identity.renew(&renewed).unwrap();
        assert!(!identity.differs(&renewed));

        // Another node's certificate and key, in this node's files.
        let mut other = dir.load(&b).unwrap();
        other.node = a.clone();
        let e = identity.renew(&other).unwrap_err();
        assert!(e.contains("node `b`"), "{e}");
        assert!(identity.differs(&other), "kept its own");
    }
}
