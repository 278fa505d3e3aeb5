//! SSH keys as age recipients and identities: the `ssh-ed25519` and
//! `ssh-rsa` stanzas of the age spec (<https://c2sp.org/age>), on the same
//! aws-lc primitives as the native stanzas.
//!
//! A recipient is an OpenSSH public key line (`ssh-ed25519 AAAA... comment`);
//! its Edwards point is mapped to the Montgomery curve (u = (1 + y) / (1 - y)
//! mod 2^255 - 19) so that X25519 can be used. An identity is an unencrypted
//! OpenSSH private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`); its X25519
//! scalar is the first half of SHA-512 of the Ed25519 seed, as Ed25519 itself
//! derives its scalar. The stanza is `-> ssh-ed25519 TAG SHARE`, where TAG is
//! the first 4 bytes of SHA-256 of the SSH public key blob, and the shared
//! secret is multiplied once more by a tweak derived from that blob, so that
//! the stanza is bound to the SSH key and not only to its X25519 form.
//!
//! `ssh-rsa` keys are RSA-OAEP with SHA-256 and MGF1-SHA-256 and the label
//! `age-encryption.org/v1/ssh-rsa`, one stanza `-> ssh-rsa TAG` whose body
//! is the OAEP ciphertext; the private key's CRT exponents (which OpenSSH
//! files leave out) are computed here so that aws-lc can load it.
//! Passphrase-protected private keys are refused with a line that says so.

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::encoding::{b64_decode, b64_encode};
use crate::header::Stanza;
use crate::{crypto, AgeError};

/// The stanza type and the SSH key type.
pub(crate) const ED25519_TAG: &str = "ssh-ed25519";
/// The HKDF info of the tweak and of the wrapping key.
const ED25519_LABEL: &[u8] = b"age-encryption.org/v1/ssh-ed25519";
/// The first line of an OpenSSH private key file.
pub(crate) const PRIVATE_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
/// Its last line.
const PRIVATE_END: &str = "-----END OPENSSH PRIVATE KEY-----";
/// The magic at the front of the decoded private key.
const PRIVATE_MAGIC: &[u8] = b"openssh-key-v1\0";

/// An `ssh-ed25519` public key as a recipient.
#[derive(Clone)]
pub struct Ed25519Recipient {
    /// The SSH wire form of the public key (type string, key string).
    blob: Vec<u8>,
    /// The key on the Montgomery curve.
    montgomery: [u8; 32],
}

/// An `ssh-ed25519` private key as an identity.
pub struct Ed25519Identity {
    /// The SSH wire form of the public key.
    blob: Vec<u8>,
    /// The X25519 scalar (first half of SHA-512 of the seed).
    secret: Zeroizing<[u8; 32]>,
    /// X25519 of the scalar: the key on the Montgomery curve.
    public: [u8; 32],
}

/// The SSH wire form of an Ed25519 public key.
fn ed25519_blob(key: &[u8; 32]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(51);
    put_string(&mut blob, ED25519_TAG.as_bytes());
    put_string(&mut blob, key);
    blob
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The stanza's first argument: 4 bytes of SHA-256 of the key blob.
fn fingerprint(blob: &[u8]) -> String {
    b64_encode(&digest::digest(&digest::SHA256, blob).as_ref()[..4])
}

/// The tweak scalar: HKDF-SHA-256(ikm = "", salt = blob, info = label).
fn tweak(blob: &[u8]) -> Zeroizing<[u8; 32]> {
    crypto::hkdf(blob, b"", ED25519_LABEL)
}

/// Standard base64 with padding, as OpenSSH writes it, decoded.
fn b64_padded_decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if !text.len().is_multiple_of(4) || text.len() - trimmed.len() > 2 {
        return None;
    }
    b64_decode(trimmed.as_bytes())
}

/// Reads one SSH wire string from the front of `input`.
fn take_string<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(input.get(..4)?.try_into().ok()?) as usize;
    let bytes = input.get(4..4 + len)?;
    *input = &input[4 + len..];
    Some(bytes)
}

fn take_u32(input: &mut &[u8]) -> Option<u32> {
    let value = u32::from_be_bytes(input.get(..4)?.try_into().ok()?);
    *input = &input[4..];
    Some(value)
}

/// An SSH public key as a recipient.
#[derive(Clone)]
pub enum SshRecipient {
    /// `ssh-ed25519`.
    Ed25519(Ed25519Recipient),
    /// `ssh-rsa`.
    Rsa(RsaRecipient),
}

impl SshRecipient {
    /// Parses `ssh-ed25519 BASE64 [comment]` or `ssh-rsa BASE64 [comment]`;
    /// `Ok(None)` when `text` is not an SSH public key line at all.
    ///
    /// # Errors
    /// [`AgeError::Key`] for a malformed key of these types.
    pub fn parse(text: &str) -> Result<Option<SshRecipient>, AgeError> {
        let mut fields = text.split_whitespace();
        match fields.next().unwrap_or_default() {
            ED25519_TAG => {
                Ed25519Recipient::parse(fields.next()).map(|r| Some(SshRecipient::Ed25519(r)))
            }
            RSA_TAG => RsaRecipient::parse(fields.next()).map(|r| Some(SshRecipient::Rsa(r))),
            _ => Ok(None),
        }
    }

    /// The OpenSSH text form, without a comment.
    pub fn encode(&self) -> String {
        match self {
            SshRecipient::Ed25519(key) => key.encode(),
            SshRecipient::Rsa(key) => key.encode(),
        }
    }

    /// Wraps `file_key` in a new stanza for this key.
    ///
    /// # Errors
    /// As the key type's `wrap`.
    pub(crate) fn wrap(&self, file_key: &[u8]) -> Result<Stanza, AgeError> {
        match self {
            SshRecipient::Ed25519(key) => key.wrap(file_key),
            SshRecipient::Rsa(key) => key.wrap(file_key),
        }
    }
}

/// An SSH private key as an identity.
pub enum SshIdentity {
    /// `ssh-ed25519`.
    Ed25519(Ed25519Identity),
    /// `ssh-rsa`.
    Rsa(RsaIdentity),
}

impl SshIdentity {
    /// The matching recipient.
    pub fn recipient(&self) -> SshRecipient {
        match self {
            SshIdentity::Ed25519(key) => SshRecipient::Ed25519(key.recipient()),
            SshIdentity::Rsa(key) => SshRecipient::Rsa(key.recipient()),
        }
    }

    /// Tries this identity on `stanza`: `Ok(None)` when the stanza is of
    /// another type, for another key, or does not open.
    ///
    /// # Errors
    /// A header failure for a malformed stanza of this key's type.
    pub(crate) fn unwrap(&self, stanza: &Stanza) -> Result<Option<Zeroizing<Vec<u8>>>, AgeError> {
        match (self, stanza.kind()) {
            (SshIdentity::Ed25519(key), ED25519_TAG) => key.unwrap(stanza),
            (SshIdentity::Rsa(key), RSA_TAG) => key.unwrap(stanza),
            _ => Ok(None),
        }
    }

    /// Parses an unencrypted OpenSSH private key file holding one Ed25519
    /// or RSA key.
    ///
    /// # Errors
    /// [`AgeError::Key`] for a key protected by a passphrase, of another
    /// type, or malformed. The message never repeats the text.
    pub fn parse(text: &str) -> Result<SshIdentity, AgeError> {
        let bad = || AgeError::Key("not a valid OpenSSH private key".into());
        let body: String = text
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != PRIVATE_BEGIN)
            .skip(1)
            .take_while(|l| *l != PRIVATE_END)
            .collect();
        let decoded = Zeroizing::new(b64_padded_decode(&body).ok_or_else(bad)?);
        let mut rest = decoded.strip_prefix(PRIVATE_MAGIC).ok_or_else(bad)?;
        let cipher = take_string(&mut rest).ok_or_else(bad)?;
        let kdf = take_string(&mut rest).ok_or_else(bad)?;
        let _kdf_options = take_string(&mut rest).ok_or_else(bad)?;
        if cipher != b"none" || kdf != b"none" {
            return Err(AgeError::Key(
                "the SSH private key is protected by a passphrase, which is not supported: \
                 use an unprotected copy (ssh-keygen -p) or an age identity"
                    .into(),
            ));
        }
        if take_u32(&mut rest) != Some(1) {
            return Err(bad());
        }
        let public_blob = take_string(&mut rest).ok_or_else(bad)?;
        let mut private = take_string(&mut rest).ok_or_else(bad)?;
        let (check1, check2) = (take_u32(&mut private), take_u32(&mut private));
        if check1.is_none() || check1 != check2 {
            return Err(bad());
        }
        match take_string(&mut private).ok_or_else(bad)? {
            b"ssh-ed25519" => {
                Ed25519Identity::parse(&mut private, public_blob).map(SshIdentity::Ed25519)
            }
            b"ssh-rsa" => RsaIdentity::parse(&mut private, public_blob).map(SshIdentity::Rsa),
            _ => Err(AgeError::Key(
                "unsupported SSH key type: use an ssh-ed25519 or ssh-rsa key, or an age identity"
                    .into(),
            )),
        }
    }
}

impl Ed25519Recipient {
    /// Parses the base64 blob of an `ssh-ed25519` public key line.
    fn parse(blob_text: Option<&str>) -> Result<Ed25519Recipient, AgeError> {
        let bad = || AgeError::Key("not a valid ssh-ed25519 public key".into());
        let blob = blob_text.and_then(b64_padded_decode).ok_or_else(bad)?;
        let mut rest = &blob[..];
        let key_type = take_string(&mut rest).ok_or_else(bad)?;
        let key: [u8; 32] = take_string(&mut rest)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        if key_type != ED25519_TAG.as_bytes() || !rest.is_empty() {
            return Err(bad());
        }
        let montgomery = edwards_to_montgomery(&key).ok_or_else(bad)?;
        Ok(Ed25519Recipient { blob, montgomery })
    }

    /// The OpenSSH text form, without a comment.
    pub fn encode(&self) -> String {
        let mut text = b64_encode(&self.blob);
        while !text.len().is_multiple_of(4) {
            text.push('=');
        }
        format!("{ED25519_TAG} {text}")
    }

    /// Wraps `file_key` in a new `ssh-ed25519` stanza.
    ///
    /// # Errors
    /// [`AgeError::Random`], or [`AgeError::Key`] for a low-order key.
    pub(crate) fn wrap(&self, file_key: &[u8]) -> Result<Stanza, AgeError> {
        let low_order = || AgeError::Key("invalid ssh-ed25519 recipient (low-order point)".into());
        let ephemeral = crypto::random::<32>()?;
        let share = crypto::x25519_public(&ephemeral)?;
        let shared = crypto::x25519(&ephemeral, &self.montgomery).ok_or_else(low_order)?;
        let shared = crypto::x25519(&tweak(&self.blob), &shared).ok_or_else(low_order)?;
        let key = wrapping_key(&share, &self.montgomery, &shared);
        Ok(Stanza {
            args: vec![
                ED25519_TAG.into(),
                fingerprint(&self.blob),
                b64_encode(&share),
            ],
            body: crypto::seal(&key, [0; 12], file_key),
        })
    }
}

/// HKDF-SHA-256(ikm = shared, salt = share || recipient, info = label).
fn wrapping_key(share: &[u8; 32], recipient: &[u8; 32], shared: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(share);
    salt[32..].copy_from_slice(recipient);
    crypto::hkdf(&salt, shared, ED25519_LABEL)
}

impl Ed25519Identity {
    /// Reads the Ed25519 fields of an OpenSSH private key section (after
    /// its key type) whose public blob is `public_blob`.
    fn parse(private: &mut &[u8], public_blob: &[u8]) -> Result<Ed25519Identity, AgeError> {
        let bad = || AgeError::Key("not a valid OpenSSH private key".into());
        let public: [u8; 32] = take_string(private)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        let pair = take_string(private)
            .filter(|p| p.len() == 64)
            .ok_or_else(bad)?;
        if pair[32..] != public || public_blob != ed25519_blob(&public) {
            return Err(bad());
        }
        let hash = digest::digest(&digest::SHA512, &pair[..32]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&hash.as_ref()[..32]);
        let montgomery = crypto::x25519_public(&secret)?;
        Ok(Ed25519Identity {
            blob: ed25519_blob(&public),
            secret,
            public: montgomery,
        })
    }

    /// The matching recipient.
    pub fn recipient(&self) -> Ed25519Recipient {
        Ed25519Recipient {
            blob: self.blob.clone(),
            montgomery: self.public,
        }
    }

    /// Tries this identity on an `ssh-ed25519` stanza: `Ok(None)` when the
    /// stanza is for another key (its tag differs) or does not open.
    ///
    /// # Errors
    /// A header failure for a malformed stanza of this type.
    pub(crate) fn unwrap(&self, stanza: &Stanza) -> Result<Option<Zeroizing<Vec<u8>>>, AgeError> {
        let (tag, share) = match &stanza.args[..] {
            [_, tag, share] => (tag, share),
            _ => {
                return Err(AgeError::header(
                    "an ssh-ed25519 stanza needs a tag and a share",
                ))
            }
        };
        let share: [u8; 32] = b64_decode(share.as_bytes())
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                AgeError::header("an ssh-ed25519 stanza needs one canonical 32-byte share")
            })?;
        if b64_decode(tag.as_bytes()).map(|t| t.len()) != Some(4) {
            return Err(AgeError::header(
                "an ssh-ed25519 tag is not 4 canonical bytes",
            ));
        }
        if *tag != fingerprint(&self.blob) {
            return Ok(None);
        }
        let shared = crypto::x25519(&self.secret, &share)
            .ok_or_else(|| AgeError::header("an ssh-ed25519 share is a low-order point"))?;
        let Some(shared) = crypto::x25519(&tweak(&self.blob), &shared) else {
            return Ok(None);
        };
        let key = wrapping_key(&share, &self.public, &shared);
        Ok(crypto::open(&key, [0; 12], &stanza.body))
    }
}

// ---------------------------------------------------------------------------
// ssh-rsa: RSA-OAEP (SHA-256, MGF1-SHA-256) with the age label
// ---------------------------------------------------------------------------

/// The stanza type and the SSH key type of RSA keys.
pub(crate) const RSA_TAG: &str = "ssh-rsa";
/// The OAEP label of `ssh-rsa` stanzas.
const RSA_LABEL: &[u8] = b"age-encryption.org/v1/ssh-rsa";

/// An `ssh-rsa` public key as a recipient.
#[derive(Clone)]
pub struct RsaRecipient {
    /// The SSH wire form of the public key.
    blob: Vec<u8>,
    /// The key as aws-lc holds it.
    key: aws_lc_rs::rsa::PublicEncryptingKey,
}

/// An `ssh-rsa` private key as an identity.
pub struct RsaIdentity {
    /// The SSH wire form of the public key.
    blob: Vec<u8>,
    /// The key as aws-lc holds it.
    key: aws_lc_rs::rsa::PrivateDecryptingKey,
    /// Its public half.
    public: aws_lc_rs::rsa::PublicEncryptingKey,
}

/// The SSH wire form of an RSA public key.
fn rsa_blob(e: &[u8], n: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, RSA_TAG.as_bytes());
    put_string(&mut blob, &mpint(e));
    put_string(&mut blob, &mpint(n));
    blob
}

/// A non-negative big-endian integer as an SSH mpint body: no leading
/// zeros, one zero byte first when the top bit is set.
fn mpint(value: &[u8]) -> Vec<u8> {
    let digits = strip_zeros(value);
    let mut out = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

fn strip_zeros(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
    &value[start..]
}

/// DER: a tag, its length and `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let digits = strip_zeros(&bytes);
        out.push(0x80 | digits.len() as u8);
        out.extend_from_slice(digits);
    }
    out.extend_from_slice(content);
    out
}

/// DER INTEGER of a non-negative big-endian value.
fn der_uint(value: &[u8]) -> Vec<u8> {
    let body = mpint(value);
    if body.is_empty() {
        return der(0x02, &[0]);
    }
    der(0x02, &body)
}

/// The DER of AlgorithmIdentifier { rsaEncryption, NULL }.
fn rsa_algorithm() -> Vec<u8> {
    const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let mut content = der(0x06, &RSA_ENCRYPTION);
    content.extend_from_slice(&[0x05, 0x00]);
    der(0x30, &content)
}

/// `value mod modulus` of big-endian integers, by binary long division.
/// The values are a private key's: every bit of `value` costs the same
/// work whatever the digits (the subtraction is always computed and kept
/// or dropped with a mask, never a branch).
fn big_mod(value: &[u8], modulus: &[u8]) -> Zeroizing<Vec<u8>> {
    let modulus = strip_zeros(modulus);
    let width = modulus.len() + 1;
    let mut padded = vec![0u8; 1];
    padded.extend_from_slice(modulus);
    let mut rest = Zeroizing::new(vec![0u8; width]);
    let mut diff = Zeroizing::new(vec![0u8; width]);
    for byte in value {
        for bit in (0..8).rev() {
            // rest = 2 * rest + bit
            let mut carry = byte >> bit & 1;
            for digit in rest.iter_mut().rev() {
                let next = *digit >> 7;
                *digit = *digit << 1 | carry;
                carry = next;
            }
            // diff = rest - modulus; kept when there is no borrow.
            let mut borrow = 0u16;
            for ((d, r), m) in diff.iter_mut().zip(rest.iter()).zip(&padded).rev() {
                let wide = u16::from(*r)
                    .wrapping_sub(u16::from(*m))
                    .wrapping_sub(borrow);
                *d = wide as u8;
                borrow = wide >> 15;
            }
            let keep_rest = (borrow as u8).wrapping_neg();
            for (r, d) in rest.iter_mut().zip(diff.iter()) {
                *r = (*r & keep_rest) | (*d & !keep_rest);
            }
        }
    }
    rest
}

/// `value - 1` of a positive big-endian integer.
fn minus_one(value: &[u8]) -> Vec<u8> {
    let mut out = value.to_vec();
    for digit in out.iter_mut().rev() {
        let (d, borrow) = digit.overflowing_sub(1);
        *digit = d;
        if !borrow {
            break;
        }
    }
    out
}

/// An RSA public key from its exponent and modulus.
fn rsa_public_key(e: &[u8], n: &[u8]) -> Option<aws_lc_rs::rsa::PublicEncryptingKey> {
    let mut key = der_uint(n);
    key.extend_from_slice(&der_uint(e));
    let key = der(0x30, &key);
    let mut bits = vec![0u8];
    bits.extend_from_slice(&key);
    let mut spki = rsa_algorithm();
    spki.extend_from_slice(&der(0x03, &bits));
    aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der(0x30, &spki)).ok()
}

impl RsaRecipient {
    /// Parses the base64 blob of an `ssh-rsa` public key line.
    ///
    /// # Errors
    /// [`AgeError::Key`] for a malformed key or one aws-lc refuses
    /// (below 2048 bits).
    fn parse(blob_text: Option<&str>) -> Result<RsaRecipient, AgeError> {
        let bad = || {
            AgeError::Key("not a usable ssh-rsa public key (2048 to 8192 bits are accepted)".into())
        };
        let blob = blob_text.and_then(b64_padded_decode).ok_or_else(bad)?;
        let mut rest = &blob[..];
        let key_type = take_string(&mut rest).ok_or_else(bad)?;
        let e = take_string(&mut rest).ok_or_else(bad)?;
        let n = take_string(&mut rest).ok_or_else(bad)?;
        if key_type != RSA_TAG.as_bytes() || !rest.is_empty() || rsa_blob(e, n) != blob {
            return Err(bad());
        }
        let key = rsa_public_key(e, n).ok_or_else(bad)?;
        Ok(RsaRecipient { blob, key })
    }

    /// The OpenSSH text form, without a comment.
    pub fn encode(&self) -> String {
        let mut text = b64_encode(&self.blob);
        while !text.len().is_multiple_of(4) {
            text.push('=');
        }
        format!("{RSA_TAG} {text}")
    }

    /// Wraps `file_key` in a new `ssh-rsa` stanza.
    ///
    /// # Errors
    /// [`AgeError::Key`] when aws-lc cannot encrypt to the key.
    pub(crate) fn wrap(&self, file_key: &[u8]) -> Result<Stanza, AgeError> {
        use aws_lc_rs::rsa::{OaepPublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
        let failed = || AgeError::Key("cannot encrypt to this ssh-rsa key".into());
        let key = OaepPublicEncryptingKey::new(self.key.clone()).map_err(|_| failed())?;
        let mut body = vec![0u8; key.ciphertext_size()];
        let len = key
            .encrypt(
                &OAEP_SHA256_MGF1SHA256,
                file_key,
                &mut body,
                Some(RSA_LABEL),
            )
            .map_err(|_| failed())?
            .len();
        body.truncate(len);
        Ok(Stanza {
            args: vec![RSA_TAG.into(), fingerprint(&self.blob)],
            body,
        })
    }
}

impl RsaIdentity {
    /// Reads the RSA fields of an OpenSSH private key section (after its
    /// key type) whose public blob is `public_blob`.
    fn parse(private: &mut &[u8], public_blob: &[u8]) -> Result<RsaIdentity, AgeError> {
        let bad = || {
            AgeError::Key(
                "not a usable ssh-rsa private key (2048 to 8192 bits are accepted)".into(),
            )
        };
        let mut field = || take_string(private).ok_or_else(bad);
        let (n, e, d, iqmp, p, q) = (field()?, field()?, field()?, field()?, field()?, field()?);
        if rsa_blob(e, n) != public_blob {
            return Err(bad());
        }
        let d_p = big_mod(d, &minus_one(strip_zeros(p)));
        let d_q = big_mod(d, &minus_one(strip_zeros(q)));
        let mut fields = der_uint(&[0]);
        for value in [n, e, d, p, q, &d_p[..], &d_q[..], iqmp] {
            fields.extend_from_slice(&der_uint(value));
        }
        let private_key = Zeroizing::new(der(0x30, &fields));
        drop(Zeroizing::new(fields));
        let mut pkcs8 = der_uint(&[0]);
        pkcs8.extend_from_slice(&rsa_algorithm());
        pkcs8.extend_from_slice(&der(0x04, &private_key));
        let pkcs8 = Zeroizing::new(der(0x30, &pkcs8));
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|_| bad())?;
        let public = rsa_public_key(e, n).ok_or_else(bad)?;
        Ok(RsaIdentity {
            blob: public_blob.to_vec(),
            key,
            public,
        })
    }

    /// The matching recipient.
    pub fn recipient(&self) -> RsaRecipient {
        RsaRecipient {
            blob: self.blob.clone(),
            key: self.public.clone(),
        }
    }

    /// Tries this identity on an `ssh-rsa` stanza: `Ok(None)` when the
    /// stanza is for another key or does not open.
    ///
    /// # Errors
    /// A header failure for a malformed stanza of this type.
    pub(crate) fn unwrap(&self, stanza: &Stanza) -> Result<Option<Zeroizing<Vec<u8>>>, AgeError> {
        use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, OAEP_SHA256_MGF1SHA256};
        let [_, tag] = &stanza.args[..] else {
            return Err(AgeError::header("an ssh-rsa stanza needs one tag"));
        };
        if b64_decode(tag.as_bytes()).map(|t| t.len()) != Some(4) {
            return Err(AgeError::header("an ssh-rsa tag is not 4 canonical bytes"));
        }
        if *tag != fingerprint(&self.blob) {
            return Ok(None);
        }
        let Ok(key) = OaepPrivateDecryptingKey::new(self.key.clone()) else {
            return Ok(None);
        };
        let mut plain = Zeroizing::new(vec![0u8; key.min_output_size()]);
        let Ok(opened) = key.decrypt(
            &OAEP_SHA256_MGF1SHA256,
            &stanza.body,
            &mut plain,
            Some(RSA_LABEL),
        ) else {
            return Ok(None);
        };
        let len = opened.len();
        plain.truncate(len);
        Ok(Some(plain))
    }
}

// ---------------------------------------------------------------------------
// Edwards to Montgomery: arithmetic modulo p = 2^255 - 19 on public values
// ---------------------------------------------------------------------------

/// A field element: four little-endian 64-bit limbs, always below p.
type Fe = [u64; 4];

/// p = 2^255 - 19.
const P: Fe = [
    0xffff_ffff_ffff_ffed,
    u64::MAX,
    u64::MAX,
    0x7fff_ffff_ffff_ffff,
];
/// p - 2, the exponent of the inverse (Fermat).
const P_MINUS_2: Fe = [
    0xffff_ffff_ffff_ffeb,
    u64::MAX,
    u64::MAX,
    0x7fff_ffff_ffff_ffff,
];
const ONE: Fe = [1, 0, 0, 0];

fn fe_from_bytes(bytes: &[u8; 32]) -> Fe {
    let mut out = [0u64; 4];
    for (limb, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *limb = u64::from_le_bytes(chunk.try_into().expect("8-byte chunks"));
    }
    out
}

fn fe_to_bytes(a: &Fe) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, limb) in out.chunks_exact_mut(8).zip(a) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    out
}

/// Whether `a >= p`.
fn at_least_p(a: &Fe) -> bool {
    for i in (0..4).rev() {
        if a[i] != P[i] {
            return a[i] > P[i];
        }
    }
    true
}

/// `a - p` when `a >= p`, else `a`.
fn reduce_once(a: Fe) -> Fe {
    if !at_least_p(&a) {
        return a;
    }
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d, b1) = a[i].overflowing_sub(P[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        out[i] = d;
        borrow = b1 || b2;
    }
    out
}

/// `a + b mod p` (both below p, so the sum fits in 256 bits).
fn fe_add(a: &Fe, b: &Fe) -> Fe {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (s, c1) = a[i].overflowing_add(b[i]);
        let (s, c2) = s.overflowing_add(u64::from(carry));
        out[i] = s;
        carry = c1 || c2;
    }
    reduce_once(out)
}

/// `a - b mod p`, as `a + (p - b)`.
fn fe_sub(a: &Fe, b: &Fe) -> Fe {
    let mut negated = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d, b1) = P[i].overflowing_sub(b[i]);
        let (d, b2) = d.overflowing_sub(u64::from(borrow));
        negated[i] = d;
        borrow = b1 || b2;
    }
    fe_add(a, &reduce_once(negated))
}

/// `a * b mod p`, folding the high half with 2^256 = 38 (mod p).
fn fe_mul(a: &Fe, b: &Fe) -> Fe {
    let mut wide = [0u64; 8];
    for i in 0..4 {
        let mut carry = 0u128;
        for j in 0..4 {
            let cur = u128::from(wide[i + j]) + u128::from(a[i]) * u128::from(b[j]) + carry;
            wide[i + j] = cur as u64;
            carry = cur >> 64;
        }
        wide[i + 4] = carry as u64;
    }
    let mut folded = [0u64; 4];
    let mut carry = 0u128;
    for i in 0..4 {
        let cur = u128::from(wide[i]) + 38 * u128::from(wide[i + 4]) + carry;
        folded[i] = cur as u64;
        carry = cur >> 64;
    }
    // carry * 2^256 = carry * 38; at most one more wrap, worth 38 again.
    let mut extra = carry * 38;
    while extra != 0 {
        let mut c = extra;
        for limb in folded.iter_mut() {
            let cur = u128::from(*limb) + c;
            *limb = cur as u64;
            c = cur >> 64;
        }
        extra = c * 38;
    }
    // Now below 2^256 < 3p.
    reduce_once(reduce_once(folded))
}

/// `a^(p-2) = 1/a mod p` (0 for 0).
fn fe_invert(a: &Fe) -> Fe {
    let mut result = ONE;
    for i in (0..4).rev() {
        for bit in (0..64).rev() {
            result = fe_mul(&result, &result);
            if P_MINUS_2[i] >> bit & 1 == 1 {
                result = fe_mul(&result, a);
            }
        }
    }
    result
}

/// The Montgomery u-coordinate of the Edwards25519 point encoded in `key`:
/// u = (1 + y) / (1 - y). `None` for a non-canonical y or y = 1 (the
/// identity point). The sign bit of x does not change u.
fn edwards_to_montgomery(key: &[u8; 32]) -> Option<[u8; 32]> {
    let mut bytes = *key;
    bytes[31] &= 0x7f;
    let y = fe_from_bytes(&bytes);
    if at_least_p(&y) {
        return None;
    }
    let denominator = fe_sub(&ONE, &y);
    if denominator == [0; 4] {
        return None;
    }
    let u = fe_mul(&fe_add(&ONE, &y), &fe_invert(&denominator));
    Some(fe_to_bytes(&u))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    #[test]
    fn inverse_times_value_is_one() {
        for value in [2u64, 3, 19, 0xdead_beef] {
            let a = [value, 7, 0, 1];
            assert_eq!(fe_mul(&a, &fe_invert(&a)), ONE);
        }
        let p_minus_1 = fe_sub(&[0; 4], &ONE);
        assert_eq!(fe_mul(&p_minus_1, &p_minus_1), ONE);
    }

    /// The Montgomery form of an Ed25519 public key is X25519 of the
    /// scalar Ed25519 derives from the seed: the two halves of this module
    /// agree with each other and with aws-lc's Ed25519.
    #[test]
    fn converted_public_keys_match_x25519_of_the_seed_scalar() {
        for seed_byte in [0u8, 1, 7, 42, 255] {
            let seed = [seed_byte; 32];
            let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("a seed");
            let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
            let hash = digest::digest(&digest::SHA512, &seed);
            let scalar: [u8; 32] = hash.as_ref()[..32].try_into().unwrap();
            assert_eq!(
                edwards_to_montgomery(&public),
                Some(crypto::x25519_public(&scalar).unwrap())
            );
        }
    }

    #[test]
    fn the_identity_point_and_non_canonical_y_are_refused() {
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(edwards_to_montgomery(&one), None);
        assert_eq!(edwards_to_montgomery(&fe_to_bytes(&P)), None);
    }

    #[test]
    fn big_mod_matches_small_numbers() {
        let cases: [(u64, u64); 5] = [
            (100, 7),
            (0, 5),
            (5, 5),
            (u64::MAX, 1_000_003),
            (12345, 99_999),
        ];
        for (value, modulus) in cases {
            let got = big_mod(&value.to_be_bytes(), &modulus.to_be_bytes());
            let got = got.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
            assert_eq!(got, value % modulus, "{value} mod {modulus}");
        }
        assert_eq!(minus_one(&[1, 0, 0]), [0, 0xff, 0xff]);
    }
}
