//! The MLKEM768-X25519 hybrid KEM (X-Wing, as `filippo.io/hpke-pq` and
//! draft-ietf-hpke-pq specify it) and the HPKE base mode (RFC 9180) that
//! age's `mlkem768x25519` stanza uses, with HKDF-SHA-256 and
//! ChaCha20-Poly1305.
//!
//! ML-KEM-768 comes from RustCrypto's `ml-kem`: identities are 32-byte
//! seeds that must be expanded (FIPS 203 `KeyGen_internal(d, z)`), which
//! aws-lc does not expose. Everything else is aws-lc.

use ml_kem::{Decapsulate, KeyExport};
use shake::{ExtendableOutput, Update, XofReader};
use zeroize::Zeroizing;

use crate::crypto;

/// ML-KEM-768 encapsulation key length.
const MLKEM_PUBLIC_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length.
const MLKEM_CIPHERTEXT_LEN: usize = 1088;
/// A hybrid public key: ML-KEM-768 key then X25519 point.
pub const PUBLIC_LEN: usize = MLKEM_PUBLIC_LEN + 32;
/// A hybrid encapsulated key: ML-KEM-768 ciphertext then X25519 share.
pub const ENC_LEN: usize = MLKEM_CIPHERTEXT_LEN + 32;
/// X-Wing's domain separator, the last input of its combiner.
const XWING_LABEL: &[u8] = b"\\.//^\\";
/// HPKE suite: KEM 0x647a (MLKEM768-X25519), KDF 0x0001 (HKDF-SHA256),
/// AEAD 0x0003 (ChaCha20Poly1305).
const SUITE_ID: &[u8] = b"HPKE\x64\x7a\x00\x01\x00\x03";

type MlKemSecret = ml_kem::ml_kem_768::DecapsulationKey;
type MlKemPublic = ml_kem::ml_kem_768::EncapsulationKey;

/// A hybrid secret key expanded from its 32-byte seed.
pub struct HybridSecret {
    mlkem: MlKemSecret,
    x25519: Zeroizing<[u8; 32]>,
    public: Box<[u8; PUBLIC_LEN]>,
}

impl HybridSecret {
    /// Expands `seed`: SHAKE256(seed) gives 96 bytes, the ML-KEM seed
    /// (d || z) and the X25519 scalar.
    pub fn from_seed(seed: &[u8; 32]) -> HybridSecret {
        let mut shake = shake::Shake256::default();
        shake.update(seed);
        let mut expanded = Zeroizing::new([0u8; 96]);
        shake.finalize_xof().read(&mut expanded[..]);
        let mut mlkem_seed = ml_kem::Seed::default();
        mlkem_seed.copy_from_slice(&expanded[..64]);
        let mlkem = MlKemSecret::from_seed(mlkem_seed);
        let mut x25519 = Zeroizing::new([0u8; 32]);
        x25519.copy_from_slice(&expanded[64..]);
        let mut public = Box::new([0u8; PUBLIC_LEN]);
        public[..MLKEM_PUBLIC_LEN].copy_from_slice(&mlkem.encapsulation_key().to_bytes());
        let point = crypto::x25519_public(&x25519).expect("any 32 bytes are an X25519 scalar");
        public[MLKEM_PUBLIC_LEN..].copy_from_slice(&point);
        HybridSecret {
            mlkem,
            x25519,
            public,
        }
    }

    /// The public key (the recipient's bytes).
    pub fn public(&self) -> &[u8; PUBLIC_LEN] {
        &self.public
    }

    /// Decapsulates `enc`; `None` when its X25519 part gives the all-zero
    /// secret (a low-order point), which must be refused.
    fn decapsulate(&self, enc: &[u8; ENC_LEN]) -> Option<Zeroizing<[u8; 32]>> {
        let (ct_m, ct_x) = enc.split_at(MLKEM_CIPHERTEXT_LEN);
        let ct_x: &[u8; 32] = ct_x.try_into().expect("split at a fixed length");
        let ss_m = self
            .mlkem
            .decapsulate_slice(ct_m)
            .expect("the ciphertext has the ML-KEM-768 length");
        let ss_x = crypto::x25519(&self.x25519, ct_x)?;
        Some(combine(
            &ss_m,
            &ss_x[..],
            ct_x,
            &self.public[MLKEM_PUBLIC_LEN..],
        ))
    }
}

/// The X-Wing combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || label).
fn combine(ss_m: &[u8], ss_x: &[u8], ct_x: &[u8], pk_x: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA3_256);
    for part in [ss_m, ss_x, ct_x, pk_x, XWING_LABEL] {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Checks that `public` is a valid hybrid public key.
pub fn check_public(public: &[u8; PUBLIC_LEN]) -> bool {
    mlkem_public(public).is_some()
}

fn mlkem_public(public: &[u8; PUBLIC_LEN]) -> Option<MlKemPublic> {
    let key = ml_kem::Key::<MlKemPublic>::try_from(&public[..MLKEM_PUBLIC_LEN]).ok()?;
    MlKemPublic::new(&key).ok()
}

/// An encapsulated key and its shared secret.
type Encapsulated = (Box<[u8; ENC_LEN]>, Zeroizing<[u8; 32]>);

/// Encapsulates to `public`: the encapsulated key and the shared secret.
fn encapsulate(public: &[u8; PUBLIC_LEN]) -> Result<Encapsulated, crate::AgeError> {
    let mlkem = mlkem_public(public)
        .ok_or_else(|| crate::AgeError::Key("invalid post-quantum recipient".into()))?;
    let m = crypto::random::<32>()?;
    let mut m_arr = ml_kem::B32::default();
    m_arr.copy_from_slice(&m[..]);
    let (ct_m, ss_m) = mlkem.encapsulate_deterministic(&m_arr);
    let pk_x: &[u8; 32] = public[MLKEM_PUBLIC_LEN..].try_into().expect("fixed length");
    let ek = crypto::random::<32>()?;
    let ct_x = crypto::x25519_public(&ek)?;
    let ss_x = crypto::x25519(&ek, pk_x).ok_or_else(|| {
        crate::AgeError::Key("invalid post-quantum recipient (low-order X25519 point)".into())
    })?;
    let mut enc = Box::new([0u8; ENC_LEN]);
    enc[..MLKEM_CIPHERTEXT_LEN].copy_from_slice(&ct_m);
    enc[MLKEM_CIPHERTEXT_LEN..].copy_from_slice(&ct_x);
    let ss = combine(&ss_m, &ss_x[..], &ct_x, pk_x);
    Ok((enc, ss))
}

/// The HPKE base-mode key schedule: the AEAD key and base nonce for
/// `shared_secret` and `info`.
fn key_schedule(shared_secret: &[u8; 32], info: &[u8]) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let labeled_extract = |salt: &[u8], label: &[u8], ikm: &[u8]| {
        crypto::hkdf_extract(salt, &[b"HPKE-v1", SUITE_ID, label, ikm])
    };
    let psk_id_hash = labeled_extract(b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(b"", b"info_hash", info);
    let mut context = Vec::with_capacity(65);
    context.push(0u8); // mode_base
    context.extend_from_slice(&psk_id_hash[..]);
    context.extend_from_slice(&info_hash[..]);
    let secret = labeled_extract(&shared_secret[..], b"secret", b"");
    let labeled_expand = |label: &[u8], out: &mut [u8]| {
        let len = (out.len() as u16).to_be_bytes();
        crypto::hkdf_expand(&secret, &[&len, b"HPKE-v1", SUITE_ID, label, &context], out);
    };
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(b"key", &mut key[..]);
    let mut nonce = [0u8; 12];
    labeled_expand(b"base_nonce", &mut nonce);
    (key, nonce)
}

/// HPKE SealBase of `plain` to `public` with `info` and empty associated
/// data: the encapsulated key and the ciphertext.
pub fn seal_base(
    public: &[u8; PUBLIC_LEN],
    info: &[u8],
    plain: &[u8],
) -> Result<(Box<[u8; ENC_LEN]>, Vec<u8>), crate::AgeError> {
    let (enc, ss) = encapsulate(public)?;
    let (key, nonce) = key_schedule(&ss, info);
    Ok((enc, crypto::seal(&key, nonce, plain)))
}

/// The outcome of [`open_base`].
pub enum Opened {
    /// The plaintext.
    Plain(Zeroizing<Vec<u8>>),
    /// The ciphertext did not authenticate: not for this key.
    NotForUs,
    /// The X25519 share was a low-order point.
    LowOrder,
}

/// HPKE OpenBase of `sealed` with `secret`, `enc` and `info`.
pub fn open_base(secret: &HybridSecret, enc: &[u8; ENC_LEN], info: &[u8], sealed: &[u8]) -> Opened {
    let Some(ss) = secret.decapsulate(enc) else {
        return Opened::LowOrder;
    };
    let (key, nonce) = key_schedule(&ss, info);
    match crypto::open(&key, nonce, sealed) {
        Some(plain) => Opened::Plain(plain),
        None => Opened::NotForUs,
    }
}
