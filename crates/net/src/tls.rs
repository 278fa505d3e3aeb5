//! TLS 1.3 with rustls on aws-lc-rs: the server's self-signed identity,
//! and the client's trust in it (a pinned SHA-256 fingerprint, or
//! trust-on-first-use recorded in a known-hosts file).
//!
//! There is no certificate authority: the server makes an ECDSA P-256
//! certificate on first start and keeps it beside its token file
//! (`TOKEN.cert.der`, `TOKEN.key.der`, mode 0600). Its fingerprint is the
//! SHA-256 of the certificate's DER bytes, printed by `serve`. A client
//! accepts exactly that certificate and checks the handshake signature
//! with it; names and dates are not checked, since the pin is the trust.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs as provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::NetError;

/// Bytes of a fingerprint.
pub const FINGERPRINT_LEN: usize = 32;
/// Largest certificate or key file read.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
        let mut out = [0u8; FINGERPRINT_LEN];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    /// Parses 64 hex digits (colons allowed between bytes).
    ///
    /// # Errors
    /// [`NetError::Fingerprint`] when it is not one.
    pub fn parse(text: &str) -> Result<Fingerprint, NetError> {
        let clean: String = text.trim().chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; FINGERPRINT_LEN];
        hex::decode_to_slice(&clean, &mut out)
            .map_err(|_| NetError::Fingerprint(format!("{text:?}: 64 hex digits expected")))?;
        Ok(Fingerprint(out))
    }

    /// Lower-case hex.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

/// The server's certificate and private key.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// Loads the identity kept beside `token_path`, or makes and stores a
    /// new one when there is none.
    ///
    /// # Errors
    /// [`NetError::Identity`] when the files cannot be read or written.
    pub fn load_or_create(token_path: &Path) -> Result<Identity, NetError> {
        let (cert_path, key_path) = identity_paths(token_path);
        if cert_path.exists() || key_path.exists() {
            let cert = read_bounded(&cert_path)?;
            let key = read_bounded(&key_path)?;
            return Ok(Identity {
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
        let made =
            rcgen::generate_simple_self_signed(vec!["cryptstream".to_owned()]).map_err(|e| {
                NetError::Identity {
                    path: cert_path.clone(),
                    reason: format!("cannot make a certificate: {e}"),
                }
            })?;
        let cert = made.cert.der().to_vec();
        let key = made.key_pair.serialize_der();
        write_new(&key_path, &key)?;
        write_new(&cert_path, &cert)?;
        Ok(Identity {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// A TLS 1.3 server configuration presenting this identity.
    ///
    /// # Errors
    /// [`NetError::Tls`] when the key does not fit the certificate.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| NetError::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(
                    vec![self.cert.clone()],
                    PrivateKeyDer::Pkcs8(self.key.clone_key()),
                )
                .map_err(|e| NetError::Tls(e.to_string()))?;
        Ok(config)
    }
}

/// Where the certificate and key of the server with token `token_path` live.
pub fn identity_paths(token_path: &Path) -> (PathBuf, PathBuf) {
    let mut cert = token_path.as_os_str().to_owned();
    cert.push(".cert.der");
    let mut key = token_path.as_os_str().to_owned();
    key.push(".key.der");
    (PathBuf::from(cert), PathBuf::from(key))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, NetError> {
    use std::io::Read;
    let fail = |reason: String| NetError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_IDENTITY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_IDENTITY_FILE {
        return Err(fail("file too large".into()));
    }
    Ok(bytes)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    let fail = |e: std::io::Error| NetError::Identity {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    cryptstream_output::write_new_private(path, bytes).map_err(fail)
}

/// How a client decides to trust a server's certificate.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Exactly this fingerprint (`--server-fingerprint`).
    Pinned(Fingerprint),
    /// The fingerprint recorded for `host` in `file`; the first one seen
    /// when there is none (trust on first use), recorded after the session
    /// authenticates.
    KnownHosts {
        /// The known-hosts file (`HOST:PORT HEX` lines).
        file: PathBuf,
        /// The `HOST:PORT` key.
        host: String,
    },
}

impl ServerTrust {
    /// The fingerprint expected, if one is known yet.
    ///
    /// # Errors
    /// [`NetError::KnownHosts`] when the file cannot be read.
    pub fn expected(&self) -> Result<Option<Fingerprint>, NetError> {
        match self {
            ServerTrust::Pinned(fp) => Ok(Some(*fp)),
            ServerTrust::KnownHosts { file, host } => {
                Ok(known_host(file, host)?.map(|(fp, _line)| fp))
            }
        }
    }

    /// The error for a server at `address` that presented `seen` instead
    /// of the certificate trusted: which one was expected, where it is
    /// recorded, and how to accept the new one.
    pub fn mismatch(&self, address: &str, seen: Fingerprint) -> NetError {
        match self {
            ServerTrust::Pinned(expected) => NetError::PinMismatch {
                address: address.to_owned(),
                seen,
                expected: *expected,
            },
            ServerTrust::KnownHosts { file, host } => match known_host(file, host) {
                Ok(Some((recorded, line))) => NetError::HostChanged {
                    host: host.clone(),
                    file: file.clone(),
                    line,
                    seen,
                    recorded,
                },
                // Not recorded (yet): the certificate changed during this send.
                _ => NetError::Connect {
                    address: address.to_owned(),
                    reason: format!(
                        "the server changed its certificate during the send (now {})",
                        seen.to_hex()
                    ),
                },
            },
        }
    }
}

/// Looks `host` up in a known-hosts file (missing file: none): its
/// fingerprint and the line (from 1) that records it.
fn known_host(file: &Path, host: &str) -> Result<Option<(Fingerprint, usize)>, NetError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(NetError::KnownHosts {
                path: file.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    for (index, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(hex)) = (parts.next(), parts.next()) {
            if name == host {
                return Fingerprint::parse(hex)
                    .map(|fp| Some((fp, index + 1)))
                    .map_err(|_| NetError::KnownHosts {
                        path: file.to_path_buf(),
                        reason: format!("line {}: bad fingerprint recorded for {host}", index + 1),
                    });
            }
        }
    }
    Ok(None)
}

/// Records `fingerprint` for `host` at the end of a known-hosts file.
///
/// # Errors
/// [`NetError::KnownHosts`] when it cannot be written.
pub fn record_known_host(
    file: &Path,
    host: &str,
    fingerprint: Fingerprint,
) -> Result<(), NetError> {
    let fail = |e: std::io::Error| NetError::KnownHosts {
        path: file.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut out = File::options()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .map_err(fail)?;
    writeln!(out, "{host} {}", fingerprint.to_hex()).map_err(fail)
}

/// Accepts one certificate (or, with none expected, any, remembering it).
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
    refused: Mutex<Option<Fingerprint>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    /// A verifier for `expected` (`None`: trust on first use).
    pub fn new(expected: Option<Fingerprint>) -> PinnedVerifier {
        PinnedVerifier {
            expected,
            seen: Mutex::new(None),
            refused: Mutex::new(None),
            algorithms: provider::default_provider().signature_verification_algorithms,
        }
    }

    /// The fingerprint the last handshake presented.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock().expect("the lock is never poisoned")
    }

    /// The fingerprint of the last certificate refused (not the expected one).
    pub fn refused(&self) -> Option<Fingerprint> {
        *self.refused.lock().expect("the lock is never poisoned")
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = Fingerprint::of(end_entity);
        *self.seen.lock().expect("the lock is never poisoned") = Some(fingerprint);
        match self.expected {
            Some(expected) if expected != fingerprint => {
                *self.refused.lock().expect("the lock is never poisoned") = Some(fingerprint);
                Err(rustls::Error::General(format!(
                    "server certificate fingerprint {} is not the expected {}",
                    fingerprint.to_hex(),
                    expected.to_hex()
                )))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// rustls' error in plain words, one line, without links.
pub fn plain_reason(error: &rustls::Error) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => {
            "the other end does not speak TLS 1.3 (not cryptstream serve?)".into()
        }
        E::AlertReceived(alert) => format!("the other end ended the TLS handshake ({alert:?})"),
        E::PeerIncompatible(_) => {
            "the other end does not offer TLS 1.3 with the ciphers cryptstream uses".into()
        }
        E::PeerMisbehaved(_) => "the other end broke the TLS protocol".into(),
        E::InvalidCertificate(_) => "the other end's certificate is not valid".into(),
        E::DecryptError => "a TLS record did not decrypt (corrupted or forged)".into(),
        E::General(text) => text.clone(),
        other => format!("TLS failed: {}", without_link(&other.to_string())),
    }
}

/// Why a TLS handshake failed, in plain words: rustls' own error when it
/// is one, else the I/O failure.
pub fn handshake_reason(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => plain_reason(tls),
        None => format!("TLS handshake failed: {}", plain_io_reason(error)),
    }
}

/// An I/O error of a TLS session in plain words (rustls puts a link to
/// its manual in the text of a connection closed without `close_notify`).
pub fn plain_io_reason(error: &std::io::Error) -> String {
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return plain_reason(tls);
    }
    match error.kind() {
        std::io::ErrorKind::UnexpectedEof => "the other end closed the connection".into(),
        _ => without_link(&error.to_string()),
    }
}

/// `text` up to a link, if it has one.
fn without_link(text: &str) -> String {
    match text.find("https://") {
        Some(at) => text[..at].trim_end_matches([' ', ':']).to_owned(),
        None => text.to_owned(),
    }
}

/// A TLS 1.3 client configuration trusting what `verifier` accepts.
///
/// # Errors
/// [`NetError::Tls`] when the provider refuses TLS 1.3 (never with aws-lc-rs).
pub fn client_config(verifier: Arc<PinnedVerifier>) -> Result<rustls::ClientConfig, NetError> {
    let provider: Arc<CryptoProvider> = Arc::new(provider::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let first = Identity::load_or_create(&token).unwrap();
        let again = Identity::load_or_create(&token).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        first.server_config().unwrap();
        let hex = first.fingerprint().to_hex();
        assert_eq!(Fingerprint::parse(&hex).unwrap(), first.fingerprint());
        assert!(Fingerprint::parse("zz").is_err());
    }

    #[test]
    fn known_hosts_records_and_finds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        assert_eq!(known_host(&file, "h:1").unwrap(), None);
        let fp = Fingerprint([7; 32]);
        record_known_host(&file, "h:1", fp).unwrap();
        record_known_host(&file, "h:2", Fingerprint([8; 32])).unwrap();
        assert_eq!(known_host(&file, "h:1").unwrap(), Some((fp, 1)));
        assert_eq!(
            known_host(&file, "h:2").unwrap(),
            Some((Fingerprint([8; 32]), 2))
        );
        assert_eq!(known_host(&file, "h:3").unwrap(), None);
    }
}
