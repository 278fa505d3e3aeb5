//! Key material: master keys, key files, passphrases and the per-file
//! key derivation. Every secret here is zeroized on drop and has no
//! `Debug`/`Display` that could print it.

use std::sync::Mutex;

use aws_lc_rs::{hkdf, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::header::{Header, KeySource};
use crate::stream::ChunkCipher;
use crate::FormatError;

/// Length of a master key and of every derived key.
pub const KEY_LEN: usize = 32;
/// Length of a public key id.
pub(crate) const KEY_ID_LEN: usize = 16;
/// First line of a key file's payload line.
const KEY_FILE_PREFIX: &str = "cryptstream-key-v1:";
/// HKDF info strings; each derived value has its own (domain separation).
const INFO_KEY_ID: &[u8] = b"cryptstream v1 key id";
const INFO_PAYLOAD: &[u8] = b"cryptstream v1 payload key";
const INFO_MAC: &[u8] = b"cryptstream v1 header mac key";
const INFO_CHECK: &[u8] = b"cryptstream v1 key check";
/// The public id of a key file: HKDF of the key, safe to show and store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    pub(crate) fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> KeyId {
        KeyId(bytes)
    }

    /// The raw bytes of the id.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Argon2id costs, stored in the header of passphrase files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Number of passes.
    pub t: u32,
    /// Degree of parallelism (lanes).
    pub p: u32,
}

impl KdfParams {
    /// The defaults for new files: 64 MiB, 3 passes, 1 lane, the second
    /// recommended option of RFC 9106 with the lanes the `argon2` crate
    /// computes fastest.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Smallest memory cost, in KiB (Argon2's own minimum is 8 KiB per lane).
    pub const MIN_MEMORY_KIB: u32 = 8;
    /// Largest memory cost a reader accepts: 1 GiB, 16 times the writer's
    /// default of 64 MiB. This is the most RAM a hostile header can make a
    /// reader allocate.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Most passes a reader accepts: room above the default of 3.
    pub const MAX_PASSES: u32 = 10;
    /// Most lanes a reader accepts. Lanes add no work (the `argon2` crate
    /// computes them one after the other) but each needs its own memory
    /// segment, and no writer needs more than a core count.
    pub const MAX_LANES: u32 = 16;
    /// Largest memory x passes product, in KiB x passes: 4 GiB-passes, a
    /// few seconds of Argon2id on a current core. The default (64 MiB x 3)
    /// is 192 MiB-passes; this caps the worst hostile header at about 20
    /// times that, in the spirit of rage, which refuses scrypt work factors
    /// that would take more than ~16 s.
    pub const MAX_WORK_KIB_PASSES: u64 = 4 * 1024 * 1024;

    /// Checks that the costs are within what this build accepts, for writing
    /// and for reading, so that a damaged or hostile header cannot make a
    /// reader allocate more than [`KdfParams::MAX_MEMORY_KIB`] or work for
    /// more than a few seconds.
    ///
    /// # Errors
    /// [`FormatError::KdfParams`] when a cost is out of range.
    pub fn check(&self) -> Result<(), FormatError> {
        let work = u64::from(self.m_kib) * u64::from(self.t);
        let ok = (Self::MIN_MEMORY_KIB..=Self::MAX_MEMORY_KIB).contains(&self.m_kib)
            && (1..=Self::MAX_PASSES).contains(&self.t)
            && (1..=Self::MAX_LANES).contains(&self.p)
            && u64::from(self.m_kib) >= u64::from(Self::MIN_MEMORY_KIB) * u64::from(self.p)
            && work <= Self::MAX_WORK_KIB_PASSES;
        if ok {
            Ok(())
        } else {
            Err(FormatError::KdfParams {
                m_kib: self.m_kib,
                t: self.t,
                p: self.p,
            })
        }
    }
}

/// A passphrase, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(Vec<u8>);

impl Passphrase {
    /// Wraps the bytes of a passphrase (taken over, not copied).
    pub fn new(bytes: Vec<u8>) -> Passphrase {
        Passphrase(bytes)
    }

    /// The passphrase bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A 256-bit master key and where it came from. Zeroized on drop.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    source: KeySource,
}

impl MasterKey {
    /// A master key from the 32 random bytes of a key file.
    pub fn from_key_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let bytes = Zeroizing::new(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        expand(
            &hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&bytes[..]),
            INFO_KEY_ID,
            &mut id,
        );
        MasterKey {
            bytes,
            source: KeySource::KeyFile(KeyId(id)),
        }
    }

    /// Stretches `passphrase` with Argon2id.
    ///
    /// # Errors
    /// [`FormatError::KdfParams`] for out-of-range costs and
    /// [`FormatError::Kdf`] when Argon2id itself fails.
    pub fn from_passphrase(
        passphrase: &Passphrase,
        salt: [u8; 16],
        params: KdfParams,
    ) -> Result<MasterKey, FormatError> {
        params.check()?;
        let argon_params = argon2::Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN))
            .map_err(|e| FormatError::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon_params,
        );
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut bytes[..])
            .map_err(|e| FormatError::Kdf(e.to_string()))?;
        Ok(MasterKey {
            bytes,
            source: KeySource::Passphrase { salt, params },
        })
    }

    /// A key derived elsewhere, for example by the parent process of a
    /// worker that receives it over a private channel.
    pub fn from_parts(bytes: Zeroizing<[u8; KEY_LEN]>, source: KeySource) -> MasterKey {
        MasterKey { bytes, source }
    }

    /// The raw key bytes. Only to hand the key to a worker process over a
    /// private channel (a pipe, never the command line or the environment);
    /// everything else uses the key through this type.
    pub fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Where this key came from (what goes into the header).
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The key id, for key-file keys.
    pub fn key_id(&self) -> Option<KeyId> {
        match self.source {
            KeySource::KeyFile(id) => Some(id),
            KeySource::Passphrase { .. } => None,
        }
    }
}

/// The keys of one file, derived from the master key and the file's salt.
pub(crate) struct FileKeys {
    pub(crate) payload_key: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) mac_key: hmac::Key,
    pub(crate) key_check: [u8; 16],
}

/// HKDF-SHA256(salt = file salt, ikm = master key), expanded three times
/// with distinct info strings.
///
/// The extract step (HMAC-SHA256 keyed with the salt, RFC 5869 2.2) runs
/// once here: aws-lc-rs's `Salt::extract` only records its inputs and runs
/// the whole HKDF again at each expansion, which made three extracts per
/// file, a tenth of a small file's decryption. Every output fits one
/// SHA-256 block, so each expansion is the single step T(1) =
/// HMAC(PRK, info || 0x01) of RFC 5869 2.3, through one HMAC keyed with
/// the PRK once (its padded key hashed once, not at every expansion):
/// 14 SHA-256 compressions per file instead of 18.
pub(crate) fn derive_file_keys(key: &MasterKey, salt: &[u8]) -> FileKeys {
    let mut extracted = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), &key.bytes[..]);
    let prk = hmac::Key::new(hmac::HMAC_SHA256, extracted.as_ref());
    wipe_tag(&mut extracted);
    let mut payload_key = Zeroizing::new([0u8; KEY_LEN]);
    expand_one_block(&prk, INFO_PAYLOAD, &mut payload_key[..]);
    let mut mac_bytes = Zeroizing::new([0u8; KEY_LEN]);
    expand_one_block(&prk, INFO_MAC, &mut mac_bytes[..]);
    let mut key_check = [0u8; 16];
    expand_one_block(&prk, INFO_CHECK, &mut key_check);
    FileKeys {
        payload_key,
        mac_key: hmac::Key::new(hmac::HMAC_SHA256, &mac_bytes[..]),
        key_check,
    }
}

/// Length of an HMAC-SHA256 output: the most one HKDF-Expand step gives.
const HMAC_SHA256_LEN: usize = 32;

/// HKDF-Expand (RFC 5869 2.3) of at most [`HMAC_SHA256_LEN`] bytes with
/// `prk` already keyed: the first block T(1) = HMAC(PRK, info || 0x01),
/// cut to `out`'s length.
fn expand_one_block(prk: &hmac::Key, info: &[u8], out: &mut [u8]) {
    assert!(
        out.len() <= HMAC_SHA256_LEN,
        "one HKDF-Expand block is {HMAC_SHA256_LEN} bytes and callers ask for at most that"
    );
    let mut ctx = hmac::Context::with_key(prk);
    ctx.update(info);
    ctx.update(&[1]);
    let mut block = ctx.sign();
    out.copy_from_slice(&block.as_ref()[..out.len()]);
    wipe_tag(&mut block);
}

/// Zeroes an HMAC output that held key material (`hmac::Tag` is `Copy`
/// and does not wipe itself).
fn wipe_tag(tag: &mut hmac::Tag) {
    // SAFETY: `Tag` is a byte array and a length: no pointers, no `Drop`,
    // and all zeros is a valid value of it (an empty tag).
    unsafe { zeroize::zeroize_flat_type(tag) }
}

/// Output length for HKDF-Expand.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8]) {
    let info = [info];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF-SHA256 can expand up to 8160 bytes and we ask for at most 32");
}

/// Writes a new random key in the key-file text format and returns the
/// text and the key's id.
///
/// # Errors
/// [`FormatError::Random`] when the system random source fails.
pub fn generate_key_file() -> Result<(Zeroizing<String>, KeyId), FormatError> {
    let mut bytes = [0u8; KEY_LEN];
    crate::fill_random(&mut bytes)?;
    let key = MasterKey::from_key_bytes(bytes);
    bytes.zeroize();
    let id = key.key_id().expect("a key from bytes has a key id");
    let text = Zeroizing::new(format!(
        "# cryptstream key file: keep it secret; anyone with it can decrypt.\n\
         # key id: {id}\n{KEY_FILE_PREFIX}{}\n",
        hex::encode(&key.bytes[..])
    ));
    Ok((text, id))
}

/// Reads a key file's text: `#` comment lines, then one line
/// `cryptstream-key-v1:` followed by 64 hex digits.
///
/// # Errors
/// [`FormatError::KeyFile`] when no valid key line is found.
pub fn parse_key_file(text: &str) -> Result<MasterKey, FormatError> {
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let hex_part = line
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or(FormatError::KeyFile(
                "expected a line starting with 'cryptstream-key-v1:'",
            ))?;
        if found.is_some() {
            return Err(FormatError::KeyFile("more than one key line"));
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(hex_part, &mut bytes[..])
            .map_err(|_| FormatError::KeyFile("the key must be 64 hex digits"))?;
        found = Some(MasterKey::from_key_bytes(*bytes));
    }
    found.ok_or(FormatError::KeyFile("no key line found"))
}

/// The secrets a run may use, and a cache of passphrase-derived keys so that
/// Argon2id runs once per distinct (salt, costs), not once per file.
pub struct Keyring {
    key_files: Vec<MasterKey>,
    passphrase: Option<Passphrase>,
    derived: Mutex<Vec<std::sync::Arc<MasterKey>>>,
}

impl Keyring {
    /// A keyring of key files (first one encrypts) and an optional passphrase.
    pub fn new(key_files: Vec<MasterKey>, passphrase: Option<Passphrase>) -> Keyring {
        Keyring {
            key_files,
            passphrase,
            derived: Mutex::new(Vec::new()),
        }
    }

    /// Adds a key already stretched from the passphrase (for example by a
    /// parent process), so that [`Keyring::unlock`] uses it instead of
    /// running Argon2id again. A key for a (salt, costs) already present is
    /// not added twice.
    pub fn insert_derived(&self, key: MasterKey) {
        let mut cache = self.lock_derived();
        if !cache.iter().any(|k| k.source == key.source) {
            cache.push(std::sync::Arc::new(key));
        }
    }

    /// The passphrase keys derived or inserted so far, to hand to workers.
    pub fn derived_keys(&self) -> Vec<std::sync::Arc<MasterKey>> {
        self.lock_derived().clone()
    }

    /// The passphrase, when one was given.
    pub fn passphrase(&self) -> Option<&Passphrase> {
        self.passphrase.as_ref()
    }

    /// Whether a passphrase was given.
    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// Parses key-file texts into a keyring.
    ///
    /// # Errors
    /// [`FormatError::KeyFile`] for a text that is not a key file.
    pub fn from_key_file_texts<'a>(
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Keyring, FormatError> {
        let keys = texts
            .into_iter()
            .map(parse_key_file)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring::new(keys, None))
    }

    /// The key that encrypts new files: the first key file, or the passphrase
    /// stretched once with a fresh Argon2id salt and `params`.
    ///
    /// # Errors
    /// Fails when the keyring is empty or Argon2id fails.
    pub fn encryption_key(
        &self,
        params: KdfParams,
    ) -> Result<std::sync::Arc<MasterKey>, FormatError> {
        if let Some(key) = self.key_files.first() {
            return Ok(std::sync::Arc::new(MasterKey {
                bytes: key.bytes.clone(),
                source: key.source,
            }));
        }
        let passphrase = self
            .passphrase
            .as_ref()
            .ok_or(FormatError::NeedsPassphrase)?;
        let mut salt = [0u8; 16];
        crate::fill_random(&mut salt)?;
        let key = std::sync::Arc::new(MasterKey::from_passphrase(passphrase, salt, params)?);
        self.lock_derived().push(key.clone());
        Ok(key)
    }

    /// The key files of the keyring, in the order given (the first one
    /// encrypts).
    pub fn key_files(&self) -> &[MasterKey] {
        &self.key_files
    }

    /// Finds the master key for `header`, authenticates the header and
    /// returns the chunk cipher.
    ///
    /// # Errors
    /// [`FormatError::WrongKey`], [`FormatError::NeedsPassphrase`],
    /// [`FormatError::NeedsKeyFile`], [`FormatError::WrongPassphrase`] or
    /// [`FormatError::HeaderModified`].
    pub fn unlock(&self, header: &Header) -> Result<ChunkCipher, FormatError> {
        match header.key_source {
            KeySource::KeyFile(id) => {
                if self.key_files.is_empty() {
                    return Err(FormatError::NeedsKeyFile {
                        needed: id.to_string(),
                    });
                }
                let key = self
                    .key_files
                    .iter()
                    .find(|k| k.key_id() == Some(id))
                    .ok_or_else(|| FormatError::WrongKey {
                        needed: id.to_string(),
                    })?;
                header.authenticate(key)
            }
            KeySource::Passphrase { salt, params } => {
                let key = self.passphrase_key(salt, params)?;
                header.authenticate(&key)
            }
        }
    }

    fn lock_derived(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Arc<MasterKey>>> {
        // A panic while holding the lock cannot leave the cache inconsistent:
        // entries are only ever pushed whole.
        self.derived.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn passphrase_key(
        &self,
        salt: [u8; 16],
        params: KdfParams,
    ) -> Result<std::sync::Arc<MasterKey>, FormatError> {
        let wanted = KeySource::Passphrase { salt, params };
        // Holding the lock while deriving makes concurrent workers wait for
        // one Argon2id run instead of all running it.
        let mut cache = self.lock_derived();
        if let Some(key) = cache.iter().find(|k| k.source == wanted) {
            return Ok(key.clone());
        }
        let passphrase = self
            .passphrase
            .as_ref()
            .ok_or(FormatError::NeedsPassphrase)?;
        let key = std::sync::Arc::new(MasterKey::from_passphrase(passphrase, salt, params)?);
        cache.push(key.clone());
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{seal_header, Cipher, EntryKind, HeaderParams, DEFAULT_CHUNK_SIZE, SALT_LEN};

    fn passphrase_key() -> MasterKey {
        let params = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        MasterKey::from_passphrase(&Passphrase::new(b"right".to_vec()), [7; 16], params).unwrap()
    }

    /// RFC 5869 A.1 (test case 1): the first 32 bytes of its OKM are T(1).
    #[test]
    fn one_block_expansion_matches_rfc_5869_test_case_1() {
        let prk = hex::decode("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
            .unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let mut okm = [0u8; 32];
        expand_one_block(&hmac::Key::new(hmac::HMAC_SHA256, &prk), &info, &mut okm);
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    /// The file keys equal plain HKDF-SHA256 (aws-lc-rs's own extract and
    /// expand) with the salt, the master key and each info string.
    #[test]
    fn file_keys_equal_plain_hkdf() {
        for seed in 0..8u8 {
            let key = MasterKey::from_key_bytes([seed.wrapping_mul(31); KEY_LEN]);
            let salt = [seed; SALT_LEN];
            let keys = derive_file_keys(&key, &salt);
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&key.bytes[..]);
            let mut payload = [0u8; KEY_LEN];
            expand(&prk, INFO_PAYLOAD, &mut payload);
            assert_eq!(&keys.payload_key[..], &payload[..]);
            let mut mac = [0u8; KEY_LEN];
            expand(&prk, INFO_MAC, &mut mac);
            let message = b"header bytes";
            assert_eq!(
                hmac::sign(&keys.mac_key, message).as_ref(),
                hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &mac), message).as_ref()
            );
            let mut check = [0u8; 16];
            expand(&prk, INFO_CHECK, &mut check);
            assert_eq!(keys.key_check, check);
        }
    }

    fn header_for(key: &MasterKey) -> Header {
        let params = HeaderParams {
            cipher: Cipher::Aes256Gcm,
            chunk_size: DEFAULT_CHUNK_SIZE,
            plaintext_len: Some(0),
            mode: 0,
            kind: EntryKind::File,
            mtime: None,
        };
        seal_header(key, &params, [0; SALT_LEN]).unwrap().0
    }

    #[test]
    fn a_key_handed_over_in_parts_is_the_same_key() {
        let key = passphrase_key();
        let copy = MasterKey::from_parts(Zeroizing::new(*key.expose_bytes()), *key.source());
        assert!(header_for(&key).authenticate(&copy).is_ok());
    }

    #[test]
    fn unlock_uses_inserted_keys_before_deriving() {
        let key = passphrase_key();
        let header = header_for(&key);
        // The keyring's own passphrase is wrong: only the inserted key opens.
        let ring = Keyring::new(Vec::new(), Some(Passphrase::new(b"wrong".to_vec())));
        assert!(ring.has_passphrase());
        assert_eq!(
            ring.passphrase().map(Passphrase::as_bytes),
            Some(&b"wrong"[..])
        );
        assert!(matches!(
            ring.unlock(&header),
            Err(FormatError::WrongPassphrase)
        ));
        let fresh = Keyring::new(Vec::new(), Some(Passphrase::new(b"wrong".to_vec())));
        fresh.insert_derived(MasterKey::from_parts(
            Zeroizing::new(*key.expose_bytes()),
            *key.source(),
        ));
        fresh.insert_derived(MasterKey::from_parts(
            Zeroizing::new([0; KEY_LEN]),
            *key.source(),
        ));
        assert_eq!(fresh.derived_keys().len(), 1, "one key per (salt, costs)");
        assert!(fresh.unlock(&header).is_ok());
        assert!(!Keyring::new(Vec::new(), None).has_passphrase());
    }

    #[test]
    fn kdf_caps_are_named_in_the_refusal() {
        let hostile = KdfParams {
            m_kib: 4 * 1024 * 1024,
            t: 64,
            p: 64,
        };
        let message = hostile.check().unwrap_err().to_string();
        assert!(
            message.contains("above what this build accepts"),
            "{message}"
        );
        assert!(
            message.contains("1048576 KiB") && message.contains("4194304"),
            "{message}"
        );
    }
}
