//! SSH Ed25519 keys as age recipients and identities: the `ssh-ed25519`
//! stanza of the age spec (<https://c2sp.org/age#ssh-ed25519>), on the same
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
//! `ssh-rsa` keys and passphrase-protected private keys are refused with a
//! line that says so.

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

impl Ed25519Recipient {
    /// Parses `ssh-ed25519 BASE64 [comment]`; `Ok(None)` when `text` is not
    /// an SSH public key line at all.
    ///
    /// # Errors
    /// [`AgeError::Key`] for an `ssh-rsa` key (not supported) or a
    /// malformed `ssh-ed25519` line.
    pub fn parse(text: &str) -> Result<Option<Ed25519Recipient>, AgeError> {
        let mut fields = text.split_whitespace();
        let kind = fields.next().unwrap_or_default();
        if kind == "ssh-rsa" {
            return Err(AgeError::Key(
                "ssh-rsa keys are not supported: use an ssh-ed25519 key or an age recipient".into(),
            ));
        }
        if kind != ED25519_TAG {
            return Ok(None);
        }
        let bad = || AgeError::Key("not a valid ssh-ed25519 public key".into());
        let blob = fields.next().and_then(b64_padded_decode).ok_or_else(bad)?;
        let mut rest = &blob[..];
        let key_type = take_string(&mut rest).ok_or_else(bad)?;
        let key: [u8; 32] = take_string(&mut rest)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        if key_type != ED25519_TAG.as_bytes() || !rest.is_empty() {
            return Err(bad());
        }
        let montgomery = edwards_to_montgomery(&key).ok_or_else(bad)?;
        Ok(Some(Ed25519Recipient { blob, montgomery }))
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
    /// Parses an unencrypted OpenSSH private key file holding one
    /// Ed25519 key.
    ///
    /// # Errors
    /// [`AgeError::Key`] for a key protected by a passphrase, of another
    /// type (ssh-rsa), or malformed. The message never repeats the text.
    pub fn parse(text: &str) -> Result<Ed25519Identity, AgeError> {
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
        let key_type = take_string(&mut private).ok_or_else(bad)?;
        if key_type == b"ssh-rsa" {
            return Err(AgeError::Key(
                "ssh-rsa keys are not supported: use an ssh-ed25519 key or an age identity".into(),
            ));
        }
        if key_type != ED25519_TAG.as_bytes() {
            return Err(bad());
        }
        let public: [u8; 32] = take_string(&mut private)
            .and_then(|k| k.try_into().ok())
            .ok_or_else(bad)?;
        let pair = take_string(&mut private)
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
    fn rsa_keys_are_refused_with_a_reason() {
        let err = Ed25519Recipient::parse("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== x").err();
        assert!(err
            .unwrap()
            .to_string()
            .contains("ssh-rsa keys are not supported"));
    }
}
