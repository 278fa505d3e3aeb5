//! File keys, recipients (who a file is encrypted to) and identities (what
//! opens it): X25519, the post-quantum hybrid `mlkem768x25519`, and
//! scrypt passphrases; their text forms and key files.

use std::fmt;

use zeroize::Zeroizing;

use crate::encoding::{b64_decode, b64_encode, bech32_decode, bech32_encode};
use crate::header::Stanza;
use crate::ssh::{SshIdentity, SshRecipient};
use crate::{crypto, pq, ssh, AgeError};

/// Bytes of a file key.
pub const FILE_KEY_LEN: usize = 16;
/// The work factor (log2 N) that new scrypt stanzas use, as `age` does.
pub const SCRYPT_LOG_N: u8 = 18;
/// The largest scrypt work factor read: 2^22 (4 GiB of memory with r = 8,
/// about 10-20 s on one core), the cap of the Go `age`; 23 and above are a
/// header failure before any work is done.
pub const MAX_SCRYPT_LOG_N: u8 = 22;
/// The scrypt salt label.
const SCRYPT_LABEL: &[u8] = b"age-encryption.org/v1/scrypt";
/// The X25519 HKDF info.
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
/// The HPKE info of the hybrid stanza.
const HYBRID_INFO: &[u8] = b"age-encryption.org/mlkem768x25519";
/// Stanza types.
const X25519_TAG: &str = "X25519";
const SCRYPT_TAG: &str = "scrypt";
const HYBRID_TAG: &str = "mlkem768x25519";
/// Bech32 human-readable parts.
const X25519_RECIPIENT_HRP: &str = "age";
const HYBRID_RECIPIENT_HRP: &str = "age1pq";
const X25519_IDENTITY_HRP: &str = "age-secret-key-";
const HYBRID_IDENTITY_HRP: &str = "age-secret-key-pq-";
/// Stanza bodies are ChaCha20-Poly1305 with the all-zero nonce.
const ZERO_NONCE: [u8; 12] = [0; 12];
/// A wrapped file key: key plus tag.
const WRAPPED_LEN: usize = FILE_KEY_LEN + 16;

/// The 128-bit key of one file; wiped on drop, never printed.
pub struct FileKey(Zeroizing<[u8; FILE_KEY_LEN]>);

impl FileKey {
    /// A fresh random file key.
    ///
    /// # Errors
    /// [`AgeError::Random`] when the system random source fails.
    pub fn generate() -> Result<FileKey, AgeError> {
        Ok(FileKey(crypto::random::<FILE_KEY_LEN>()?))
    }

    /// A file key with these bytes (tests and vectors).
    pub fn from_bytes(bytes: [u8; FILE_KEY_LEN]) -> FileKey {
        FileKey(Zeroizing::new(bytes))
    }

    fn from_slice(bytes: &[u8]) -> Option<FileKey> {
        let bytes: [u8; FILE_KEY_LEN] = bytes.try_into().ok()?;
        Some(FileKey::from_bytes(bytes))
    }

    /// The header MAC key: HKDF-SHA-256(file key, salt "", info "header").
    pub(crate) fn mac_key(&self) -> Zeroizing<[u8; 32]> {
        crypto::hkdf(b"", &self.0[..], b"header")
    }

    /// The payload key: HKDF-SHA-256(file key, salt = nonce, info "payload").
    pub(crate) fn payload_key(&self, nonce: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        crypto::hkdf(nonce, &self.0[..], b"payload")
    }

    /// The key's bytes.
    pub fn expose(&self) -> &[u8; FILE_KEY_LEN] {
        &self.0
    }
}

/// Who a new file is encrypted to.
#[derive(Clone)]
pub enum Recipient {
    /// An X25519 public key (`age1...`).
    X25519([u8; 32]),
    /// A post-quantum hybrid public key (`age1pq1...`).
    Hybrid(Box<[u8; pq::PUBLIC_LEN]>),
    /// An OpenSSH public key (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`).
    Ssh(Box<SshRecipient>),
    /// A passphrase, stretched with scrypt at this work factor.
    Scrypt {
        /// The passphrase.
        passphrase: Zeroizing<Vec<u8>>,
        /// log2 of the scrypt N parameter.
        log_n: u8,
    },
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Scrypt { log_n, .. } => write!(f, "scrypt passphrase (2^{log_n})"),
            other => write!(f, "{}", other.encode().unwrap_or_default()),
        }
    }
}

impl Recipient {
    /// Parses an `age1...`, `age1pq1...`, `ssh-ed25519 ...` or `ssh-rsa ...`
    /// recipient.
    ///
    /// # Errors
    /// [`AgeError::Key`] for any other text.
    pub fn parse(text: &str) -> Result<Recipient, AgeError> {
        if let Some(ssh) = SshRecipient::parse(text)? {
            return Ok(Recipient::Ssh(Box::new(ssh)));
        }
        let bad = || AgeError::Key(format!("not an age recipient: {}", shorten(text)));
        let (hrp, data) = bech32_decode(text).ok_or_else(bad)?;
        match hrp.as_str() {
            X25519_RECIPIENT_HRP => Ok(Recipient::X25519(data.try_into().map_err(|_| bad())?)),
            HYBRID_RECIPIENT_HRP => {
                let key: Box<[u8; pq::PUBLIC_LEN]> =
                    data.into_boxed_slice().try_into().map_err(|_| bad())?;
                if !pq::check_public(&key) {
                    return Err(bad());
                }
                Ok(Recipient::Hybrid(key))
            }
            _ => Err(bad()),
        }
    }

    /// The text form (`None` for a passphrase).
    pub fn encode(&self) -> Option<String> {
        match self {
            Recipient::X25519(key) => Some(bech32_encode(X25519_RECIPIENT_HRP, key)),
            Recipient::Hybrid(key) => Some(bech32_encode(HYBRID_RECIPIENT_HRP, &key[..])),
            Recipient::Ssh(key) => Some(key.encode()),
            Recipient::Scrypt { .. } => None,
        }
    }

    /// Whether this recipient resists quantum computers.
    fn is_post_quantum(&self) -> bool {
        !matches!(self, Recipient::X25519(_) | Recipient::Ssh(_))
    }

    /// Wraps `file_key` in a new stanza for this recipient.
    ///
    /// # Errors
    /// [`AgeError::Random`], or [`AgeError::Key`] for an unusable key.
    pub fn wrap(&self, file_key: &FileKey) -> Result<Stanza, AgeError> {
        match self {
            Recipient::X25519(public) => {
                let ephemeral = crypto::random::<32>()?;
                let share = crypto::x25519_public(&ephemeral)?;
                let shared = crypto::x25519(&ephemeral, public).ok_or_else(|| {
                    AgeError::Key("invalid X25519 recipient (low-order point)".into())
                })?;
                let mut salt = [0u8; 64];
                salt[..32].copy_from_slice(&share);
                salt[32..].copy_from_slice(public);
                let key = crypto::hkdf(&salt, &shared[..], X25519_INFO);
                Ok(Stanza {
                    args: vec![X25519_TAG.into(), b64_encode(&share)],
                    body: crypto::seal(&key, ZERO_NONCE, file_key.expose()),
                })
            }
            Recipient::Ssh(key) => key.wrap(file_key.expose()),
            Recipient::Hybrid(public) => {
                let (enc, body) = pq::seal_base(public, HYBRID_INFO, file_key.expose())?;
                Ok(Stanza {
                    args: vec![HYBRID_TAG.into(), b64_encode(&enc[..])],
                    body,
                })
            }
            Recipient::Scrypt { passphrase, log_n } => {
                let salt = crypto::random::<16>()?;
                let key = scrypt_key(passphrase, &salt[..], *log_n)?;
                Ok(Stanza {
                    args: vec![SCRYPT_TAG.into(), b64_encode(&salt[..]), log_n.to_string()],
                    body: crypto::seal(&key, ZERO_NONCE, file_key.expose()),
                })
            }
        }
    }
}

/// The first characters of `text`, for messages about a bad key.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(24).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

/// scrypt(N = 2^log_n, r = 8, p = 1) of `passphrase` with age's salt.
fn scrypt_key(passphrase: &[u8], salt: &[u8], log_n: u8) -> Result<Zeroizing<[u8; 32]>, AgeError> {
    let params = scrypt::Params::new(log_n, 8, 1)
        .map_err(|_| AgeError::header(format!("invalid scrypt work factor {log_n}")))?;
    let mut full_salt = SCRYPT_LABEL.to_vec();
    full_salt.extend_from_slice(salt);
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase, &full_salt, &params, &mut key[..])
        .map_err(|_| AgeError::header("scrypt refused its parameters"))?;
    Ok(key)
}

/// What opens a file.
pub enum Identity {
    /// An X25519 secret key and its public key.
    X25519 {
        /// The secret scalar.
        secret: Zeroizing<[u8; 32]>,
        /// Its public key (part of the HKDF salt).
        public: [u8; 32],
    },
    /// A post-quantum hybrid secret key, expanded from its seed.
    Hybrid(Box<pq::HybridSecret>),
    /// An unencrypted OpenSSH private key (Ed25519 or RSA).
    Ssh(Box<SshIdentity>),
    /// A passphrase for scrypt stanzas, and the largest work factor accepted.
    Passphrase {
        /// The passphrase.
        passphrase: Zeroizing<Vec<u8>>,
        /// Stanzas above this work factor are refused (header failure).
        max_log_n: u8,
    },
}

/// What one identity made of one stanza.
enum Unwrapped {
    Key(FileKey),
    NotForUs,
}

impl Identity {
    /// Parses an `AGE-SECRET-KEY-1...` or `AGE-SECRET-KEY-PQ-1...` line.
    ///
    /// # Errors
    /// [`AgeError::Key`] for any other text (which is not repeated in the
    /// message: it may be a secret).
    pub fn parse(text: &str) -> Result<Identity, AgeError> {
        let bad = || AgeError::Key("not an age secret key (AGE-SECRET-KEY-1...)".into());
        let (hrp, data) = bech32_decode(text).ok_or_else(bad)?;
        let data = Zeroizing::new(data);
        let seed: [u8; 32] = data[..].try_into().map_err(|_| bad())?;
        let seed = Zeroizing::new(seed);
        match hrp.as_str() {
            X25519_IDENTITY_HRP => Ok(Identity::x25519(seed)),
            HYBRID_IDENTITY_HRP => Ok(Identity::Hybrid(Box::new(pq::HybridSecret::from_seed(
                &seed,
            )))),
            _ => Err(bad()),
        }
    }

    fn x25519(secret: Zeroizing<[u8; 32]>) -> Identity {
        let public = crypto::x25519_public(&secret).expect("any 32 bytes are an X25519 scalar");
        Identity::X25519 { secret, public }
    }

    /// A passphrase identity that accepts work factors up to [`MAX_SCRYPT_LOG_N`].
    pub fn passphrase(passphrase: Zeroizing<Vec<u8>>) -> Identity {
        Identity::Passphrase {
            passphrase,
            max_log_n: MAX_SCRYPT_LOG_N,
        }
    }

    /// A new random X25519 identity.
    ///
    /// # Errors
    /// [`AgeError::Random`].
    pub fn generate_x25519() -> Result<Identity, AgeError> {
        Ok(Identity::x25519(crypto::random::<32>()?))
    }

    /// A new random post-quantum hybrid identity and its seed's text.
    ///
    /// # Errors
    /// [`AgeError::Random`].
    pub fn generate_hybrid() -> Result<(Identity, Zeroizing<String>), AgeError> {
        let seed = crypto::random::<32>()?;
        let text = Zeroizing::new(bech32_encode(HYBRID_IDENTITY_HRP, &seed[..]).to_uppercase());
        Ok((
            Identity::Hybrid(Box::new(pq::HybridSecret::from_seed(&seed))),
            text,
        ))
    }

    /// The secret key's text (`AGE-SECRET-KEY-1...`), for X25519 keys.
    pub fn encode_x25519(&self) -> Option<Zeroizing<String>> {
        match self {
            Identity::X25519 { secret, .. } => Some(Zeroizing::new(
                bech32_encode(X25519_IDENTITY_HRP, &secret[..]).to_uppercase(),
            )),
            _ => None,
        }
    }

    /// The matching recipient (`None` for a passphrase).
    pub fn recipient(&self) -> Option<Recipient> {
        match self {
            Identity::X25519 { public, .. } => Some(Recipient::X25519(*public)),
            Identity::Hybrid(secret) => Some(Recipient::Hybrid(Box::new(*secret.public()))),
            Identity::Ssh(key) => Some(Recipient::Ssh(Box::new(key.recipient()))),
            Identity::Passphrase { .. } => None,
        }
    }

    /// Tries this identity on `stanza`.
    fn unwrap_stanza(&self, stanza: &Stanza) -> Result<Unwrapped, AgeError> {
        let args = &stanza.args;
        let body_len_ok = || {
            if stanza.body.len() == WRAPPED_LEN {
                Ok(())
            } else {
                Err(AgeError::header(format!(
                    "a {} stanza body is {} bytes, not {WRAPPED_LEN}",
                    stanza.kind(),
                    stanza.body.len()
                )))
            }
        };
        let opened = match self {
            Identity::X25519 { secret, public } => {
                if stanza.kind() != X25519_TAG {
                    return Ok(Unwrapped::NotForUs);
                }
                let share: [u8; 32] = match &args[..] {
                    [_, share] => b64_decode(share.as_bytes()).and_then(|s| s.try_into().ok()),
                    _ => None,
                }
                .ok_or_else(|| {
                    AgeError::header("an X25519 stanza needs one canonical 32-byte share")
                })?;
                body_len_ok()?;
                let shared = crypto::x25519(secret, &share)
                    .ok_or_else(|| AgeError::header("an X25519 share is a low-order point"))?;
                let mut salt = [0u8; 64];
                salt[..32].copy_from_slice(&share);
                salt[32..].copy_from_slice(public);
                let key = crypto::hkdf(&salt, &shared[..], X25519_INFO);
                crypto::open(&key, ZERO_NONCE, &stanza.body)
            }
            Identity::Ssh(key) => {
                if stanza.kind() == ssh::ED25519_TAG {
                    body_len_ok()?;
                }
                key.unwrap(stanza)?
            }
            Identity::Hybrid(secret) => {
                if stanza.kind() != HYBRID_TAG {
                    return Ok(Unwrapped::NotForUs);
                }
                let enc: Box<[u8; pq::ENC_LEN]> = match &args[..] {
                    [_, enc] => b64_decode(enc.as_bytes())
                        .and_then(|e| e.into_boxed_slice().try_into().ok()),
                    _ => None,
                }
                .ok_or_else(|| {
                    AgeError::header("an mlkem768x25519 stanza needs one canonical 1120-byte enc")
                })?;
                body_len_ok()?;
                match pq::open_base(secret, &enc, HYBRID_INFO, &stanza.body) {
                    pq::Opened::Plain(plain) => Some(plain),
                    pq::Opened::NotForUs => None,
                    pq::Opened::LowOrder => {
                        return Err(AgeError::header(
                            "the X25519 part of an mlkem768x25519 enc is a low-order point",
                        ))
                    }
                }
            }
            Identity::Passphrase {
                passphrase,
                max_log_n,
            } => {
                if stanza.kind() != SCRYPT_TAG {
                    return Ok(Unwrapped::NotForUs);
                }
                let [_, salt, work] = &args[..] else {
                    return Err(AgeError::header(
                        "an scrypt stanza needs a salt and a work factor",
                    ));
                };
                let salt = b64_decode(salt.as_bytes())
                    .filter(|s| s.len() == 16)
                    .ok_or_else(|| AgeError::header("an scrypt salt is not 16 canonical bytes"))?;
                let log_n = parse_work_factor(work)?;
                if log_n > *max_log_n {
                    return Err(AgeError::header(format!(
                        "scrypt work factor 2^{log_n} is above the limit of 2^{max_log_n}"
                    )));
                }
                body_len_ok()?;
                let key = scrypt_key(passphrase, &salt, log_n)?;
                crypto::open(&key, ZERO_NONCE, &stanza.body)
            }
        };
        Ok(match opened.and_then(|plain| FileKey::from_slice(&plain)) {
            Some(key) => Unwrapped::Key(key),
            None => Unwrapped::NotForUs,
        })
    }
}

/// A decimal work factor with no sign, no leading zero, at most 2 digits
/// (anything larger is above every cap).
fn parse_work_factor(text: &str) -> Result<u8, AgeError> {
    let bad = || AgeError::header(format!("invalid scrypt work factor {}", shorten(text)));
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes[0] == b'0' || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if bytes.len() > 2 {
        return Err(AgeError::header("scrypt work factor above the limit"));
    }
    text.parse().map_err(|_| bad())
}

/// Finds the file key in `stanzas` with `identities`, in order: for each
/// identity, every stanza is tried; a stanza of its type that is malformed
/// stops the search with a header failure, as the Go `age` does.
pub(crate) fn unwrap_file_key(
    stanzas: &[Stanza],
    identities: &[Identity],
) -> Result<FileKey, AgeError> {
    if stanzas.iter().any(|s| s.kind() == SCRYPT_TAG) && stanzas.len() != 1 {
        return Err(AgeError::header(
            "an scrypt stanza must be the only stanza of a header",
        ));
    }
    for identity in identities {
        for stanza in stanzas {
            if let Unwrapped::Key(key) = identity.unwrap_stanza(stanza)? {
                return Ok(key);
            }
        }
    }
    let passphrase = identities
        .iter()
        .any(|i| matches!(i, Identity::Passphrase { .. }));
    let scrypt = stanzas.iter().any(|s| s.kind() == SCRYPT_TAG);
    Err(AgeError::NoMatch(
        match (scrypt, passphrase) {
            (true, true) => "wrong passphrase",
            (true, false) => "the file is encrypted with a passphrase; give the passphrase",
            (false, _) if identities.is_empty() => "no identity given (use -i FILE)",
            (false, _) => "no identity matches any recipient of the file",
        }
        .into(),
    ))
}

/// Checks the recipients of one file: at least one, a passphrase alone, and
/// post-quantum recipients not mixed with X25519 ones (which would give up
/// their quantum resistance).
pub(crate) fn check_recipients(recipients: &[Recipient]) -> Result<(), AgeError> {
    if recipients.is_empty() {
        return Err(AgeError::Key("no recipient".into()));
    }
    let scrypt = recipients
        .iter()
        .any(|r| matches!(r, Recipient::Scrypt { .. }));
    if scrypt && recipients.len() > 1 {
        return Err(AgeError::Key(
            "a passphrase cannot be combined with other recipients".into(),
        ));
    }
    let pq = recipients.iter().filter(|r| r.is_post_quantum()).count();
    if !scrypt && pq > 0 && pq < recipients.len() {
        return Err(AgeError::Key(
            "post-quantum (age1pq1...) and X25519 (age1...) recipients cannot be mixed".into(),
        ));
    }
    Ok(())
}

/// Reads an identity file as `age-keygen` writes it: one secret key per
/// line; empty lines and `#` comments are skipped. An OpenSSH private key
/// file (`-----BEGIN OPENSSH PRIVATE KEY-----`) holds one SSH identity
/// (Ed25519 or RSA).
///
/// # Errors
/// [`AgeError::Key`] naming the first bad line's number, or a file with no
/// key; an SSH key that is protected or of another type.
pub fn parse_identity_file(text: &str) -> Result<Vec<Identity>, AgeError> {
    if text.trim_start().starts_with(ssh::PRIVATE_BEGIN) {
        return Ok(vec![Identity::Ssh(Box::new(SshIdentity::parse(text)?))]);
    }
    let mut identities = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        identities.push(
            Identity::parse(line).map_err(|e| AgeError::Key(format!("line {}: {e}", n + 1)))?,
        );
    }
    if identities.is_empty() {
        return Err(AgeError::Key("no identity in the file".into()));
    }
    Ok(identities)
}

/// Reads a recipients file as `age -R` does: one recipient per line; empty
/// lines and `#` comments are skipped.
///
/// # Errors
/// [`AgeError::Key`] naming the first bad line, or a file with no recipient.
pub fn parse_recipients_file(text: &str) -> Result<Vec<Recipient>, AgeError> {
    let mut recipients = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        recipients.push(
            Recipient::parse(line).map_err(|e| AgeError::Key(format!("line {}: {e}", n + 1)))?,
        );
    }
    if recipients.is_empty() {
        return Err(AgeError::Key("no recipient in the file".into()));
    }
    Ok(recipients)
}
