//! Cluster identity: the cluster's CA, node certificates signed by it, and the rustls
//! configurations that make both ends of every QUIC connection prove membership.
//!
//! A cluster directory holds:
//!
//! ```text
//! ca.pem              the CA certificate (public; every node needs it)
//! ca.key              the CA's private key (0600; only where nodes are issued)
//! admin.token         the API token shared by every node of the cluster (0600)
//! nodes/NAME.pem      a node's certificate
//! nodes/NAME.key      its private key (0600)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::frame::ClusterId;
use crate::id::NodeId;

/// The application protocol negotiated on every connection.
pub(crate) const ALPN: &[u8] = b"weft/1";
/// The DNS name every node certificate carries besides the node's own name; dialers verify it.
pub(crate) const SERVER_NAME: &str = "weft-node";
/// The subject of every cluster CA. Constant, so a node certificate can be issued later from
/// `ca.key` alone; clusters still differ by their keys (and so by their [`ClusterId`]).
const CA_NAME: &str = "Weft cluster CA";
/// How long a new CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a node certificate is valid.
const NODE_DAYS: i64 = 825;

/// Why cluster identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A PEM file did not hold what it should.
    #[error("{path} does not hold a valid {what}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// `cluster init` on a directory that already has a CA.
    #[error(
        "{0} already holds a cluster CA; use a new directory or `weft cluster issue` on this one"
    )]
    Exists(PathBuf),
    /// Issuing without the CA key.
    #[error(
        "{0} has no ca.key, so no node certificate can be issued here: run `weft cluster issue` where the CA key is and copy nodes/NAME.pem and nodes/NAME.key"
    )]
    NoCaKey(PathBuf),
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The files of a cluster directory.
#[derive(Clone, Debug)]
pub struct ClusterDir {
    dir: PathBuf,
}

impl ClusterDir {
    /// The cluster directory at `dir` (nothing is read yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ClusterDir { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The admin token file.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("admin.token")
    }
    /// Where `node`'s certificate lives.
    pub fn node_cert(&self, node: &NodeId) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.pem"))
    }
    fn node_key(&self, node: &NodeId) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.key"))
    }

    /// Creates a new cluster: a CA (10 years) and an admin token.
    pub fn init(&self) -> Result<ClusterId, TlsError> {
        if self.ca_key().exists() || self.ca_cert().exists() {
            return Err(TlsError::Exists(self.dir.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| TlsError::Io {
            what: "creating",
            path: self.dir.clone(),
            source,
        })?;
        let key = KeyPair::generate()?;
        let now = time::OffsetDateTime::now_utc();
        let mut params = ca_params();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CA_DAYS);
        let cert = params.self_signed(&key)?;
        write_file(&self.ca_key(), key.serialize_pem().as_bytes(), true)?;
        write_file(&self.ca_cert(), cert.pem().as_bytes(), false)?;
        let token = random_token();
        write_file(&self.token_path(), token.as_bytes(), true)?;
        Ok(ClusterId::of_ca(cert.der()))
    }

    /// Issues a certificate for `node`, valid for about 27 months, replacing any earlier one.
    pub fn issue(&self, node: &NodeId) -> Result<PathBuf, TlsError> {
        self.issue_valid(node, None)
    }

    /// Issues a certificate valid over `[not_before, not_after]` (tests make expired ones).
    pub fn issue_valid(
        &self,
        node: &NodeId,
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> Result<PathBuf, TlsError> {
        let ca_key_path = self.ca_key();
        if !ca_key_path.exists() {
            return Err(TlsError::NoCaKey(self.dir.clone()));
        }
        let ca_pem = read(&ca_key_path, "reading")?;
        let ca_key = KeyPair::from_pem(&ca_pem).map_err(|e| TlsError::Pem {
            what: "CA key",
            path: ca_key_path.clone(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let mut params = CertificateParams::new(vec![node.to_string(), SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = validity.unwrap_or((
            now - time::Duration::hours(1),
            now + time::Duration::days(NODE_DAYS),
        ));
        params.not_before = from;
        params.not_after = until;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let nodes = self.dir.join("nodes");
        std::fs::create_dir_all(&nodes).map_err(|source| TlsError::Io {
            what: "creating",
            path: nodes,
            source,
        })?;
        write_file(&self.node_key(node), key.serialize_pem().as_bytes(), true)?;
        let path = self.node_cert(node);
        write_file(&path, cert.pem().as_bytes(), false)?;
        Ok(path)
    }

    /// The node names with a certificate in this directory.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut names: Vec<NodeId> = std::fs::read_dir(self.dir.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".pem")?.parse().ok()
            })
            .collect();
        names.sort();
        names
    }

    /// Whether this directory can issue certificates.
    pub fn can_issue(&self) -> bool {
        self.ca_key().exists()
    }

    /// Loads `node`'s credentials.
    pub fn load(&self, node: &NodeId) -> Result<Credentials, TlsError> {
        let ca_path = self.ca_cert();
        let ca =
            CertificateDer::from_pem_slice(read(&ca_path, "reading")?.as_bytes()).map_err(|e| {
                TlsError::Pem {
                    what: "CA certificate",
                    path: ca_path.clone(),
                    reason: e.to_string(),
                }
            })?;
        let cert_path = self.node_cert(node);
        let chain = CertificateDer::pem_slice_iter(read(&cert_path, "reading")?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "node certificate",
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let key_path = self.node_key(node);
        let key =
            PrivateKeyDer::from_pem_slice(read(&key_path, "reading")?.as_bytes()).map_err(|e| {
                TlsError::Pem {
                    what: "node key",
                    path: key_path.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Credentials {
            cluster: ClusterId::of_ca(&ca),
            node: node.clone(),
            dir: self.clone(),
            ca,
            chain,
            key: Arc::new(key),
        })
    }

    /// The admin token, if this directory has one.
    pub fn token(&self) -> Result<Option<String>, TlsError> {
        let path = self.token_path();
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TlsError::Io {
                what: "reading",
                path,
                source,
            }),
        }
    }
}

/// A node's proof of membership: the CA it trusts and its own certificate and key.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The cluster, derived from the CA certificate.
    pub cluster: ClusterId,
    /// The node they are for.
    pub(super) node: NodeId,
    /// Where they were loaded from (and are loaded again from when renewed).
    pub(super) dir: ClusterDir,
    ca: CertificateDer<'static>,
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: Arc<PrivateKeyDer<'static>>,
}

impl Credentials {
    /// These credentials as they are on disk now.
    pub(crate) fn reload(&self) -> Result<Credentials, TlsError> {
        self.dir.load(&self.node)
    }

    /// A digest of the certificate chain and key, to tell a renewal from the same files.
    pub(super) fn fingerprint(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for c in &self.chain {
            h.update(c.as_ref());
        }
        h.update(self.key.secret_der());
        h.finalize()
    }

    /// A client that trusts the CA but presents no certificate (tests show it is refused).
    #[cfg(feature = "test-switches")]
    pub(crate) fn anonymous_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// Trusts `other`'s CA instead of this cluster's (tests mix the two).
    #[cfg(feature = "test-switches")]
    pub(crate) fn set_ca(&mut self, other: &Credentials) {
        self.ca = other.ca.clone();
    }

    pub(super) fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }
}

/// The node name in a peer's certificate (its DNS name other than [`SERVER_NAME`]), from
/// what quinn reports as the peer's identity.
pub(crate) fn peer_node(identity: Option<Box<dyn std::any::Any>>) -> Option<NodeId> {
    let chain = identity?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_of(chain.first()?)
}

/// The node name a certificate vouches for (its DNS name other than [`SERVER_NAME`]).
pub(crate) fn node_of(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let leaf = webpki::EndEntityCert::try_from(cert).ok()?;
    leaf.valid_dns_names()
        .filter(|n| *n != SERVER_NAME)
        .find_map(|n| n.parse().ok())
}

/// 32 random bytes in hex: an API token.
pub(crate) fn random_token() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Writes a file readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn read(path: &Path, what: &'static str) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a file; private ones are readable by their owner only.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let written = if private {
        write_private(path, bytes)
    } else {
        std::fs::write(path, bytes)
    };
    written.map_err(|source| TlsError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_load_and_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClusterDir::new(tmp.path().join("c"));
        let id = dir.init().unwrap();
        assert!(matches!(dir.init(), Err(TlsError::Exists(_))));
        let n: NodeId = "edge-1".parse().unwrap();
        dir.issue(&n).unwrap();
        assert_eq!(dir.nodes(), vec![n.clone()]);
        let creds = dir.load(&n).unwrap();
        assert_eq!(creds.cluster, id);
        assert_eq!(dir.token().unwrap().unwrap().len(), 64);
        #[cfg(unix)]
        for f in ["ca.key", "admin.token", "nodes/edge-1.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let other = ClusterDir::new(tmp.path().join("other"));
        assert!(matches!(other.issue(&n), Err(TlsError::NoCaKey(_))));
    }
}
