//! The primitives of age on aws-lc: HKDF-SHA-256 and HMAC-SHA-256 (RFC
//! 5869 / 2104), ChaCha20-Poly1305 with the zero nonce for stanza bodies,
//! X25519, and random bytes.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::AgeError;

/// HKDF-Extract (RFC 5869): HMAC-SHA-256 keyed with `salt` over `ikm`. An
/// empty salt is the same key as 32 zero bytes (HMAC pads keys with zeros).
pub(crate) fn hkdf_extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    for part in ikm {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// HKDF-Expand (RFC 5869) for at most 32 bytes of output: the first block.
pub(crate) fn hkdf_expand(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8]) {
    assert!(out.len() <= 32, "one HKDF block is enough for age's keys");
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut ctx = hmac::Context::with_key(&key);
    for part in info {
        ctx.update(part);
    }
    ctx.update(&[1]);
    let tag = ctx.sign();
    out.copy_from_slice(&tag.as_ref()[..out.len()]);
}

/// HKDF-SHA-256 with a 32-byte output, as the age spec uses it.
pub(crate) fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf_extract(salt, &[ikm]);
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf_expand(&prk, &[info], &mut out[..]);
    out
}

/// HMAC-SHA-256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks an HMAC-SHA-256 tag in constant time.
pub(crate) fn hmac_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), data, tag).is_ok()
}

fn chacha(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&aead::CHACHA20_POLY1305, key).expect("ChaCha20-Poly1305 takes 32 bytes"),
    )
}

/// Seals `plain` with ChaCha20-Poly1305 under `key` and `nonce`.
pub(crate) fn seal(key: &[u8; 32], nonce: [u8; 12], plain: &[u8]) -> Vec<u8> {
    let mut out = plain.to_vec();
    chacha(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut out)
        .expect("a file key is far below the AEAD limit");
    out
}

/// Opens a ChaCha20-Poly1305 box; `None` when it does not authenticate.
pub(crate) fn open(key: &[u8; 32], nonce: [u8; 12], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = chacha(key)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// X25519(`scalar`, basepoint).
pub(crate) fn x25519_public(scalar: &[u8; 32]) -> Result<[u8; 32], AgeError> {
    let key = PrivateKey::from_private_key(&X25519, scalar)
        .map_err(|_| AgeError::Key("invalid X25519 secret key".into()))?;
    let public = key
        .compute_public_key()
        .map_err(|_| AgeError::Key("invalid X25519 secret key".into()))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(public.as_ref());
    Ok(out)
}

/// X25519(`scalar`, `point`); `None` when the result is all zeros (a
/// low-order or identity point), which age requires to be refused.
pub(crate) fn x25519(scalar: &[u8; 32], point: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let key = PrivateKey::from_private_key(&X25519, scalar).ok()?;
    let shared = agreement::agree(&key, UnparsedPublicKey::new(&X25519, point), (), |secret| {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(secret);
        Ok(out)
    })
    .ok()?;
    if shared.iter().all(|&b| b == 0) {
        return None;
    }
    Some(shared)
}

/// Random bytes from the kernel.
pub(crate) fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, AgeError> {
    let mut out = Zeroizing::new([0u8; N]);
    cryptstream_format::fill_random(&mut out[..]).map_err(|_| AgeError::Random)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_matches_rfc5869_test_case_1_prefix() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0..=0x0cu8).collect();
        let info: Vec<u8> = (0xf0..=0xf9u8).collect();
        let okm = hkdf(&salt, &ikm, &info);
        assert_eq!(
            hex::encode(&okm[..]),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }
}
