//! The store's keys: one random master key per store, wrapped in the
//! config under the user's key file or passphrase, and the subkeys derived
//! from it with BLAKE3's key derivation mode (each with its own context
//! string, so no two uses share a key).

use std::io::Read;

use cryptstream_format::{
    seal_to_vec, Cipher, EntryKind, Header, HeaderParams, Keyring, MasterKey, OpeningReader,
    KEY_LEN, SALT_LEN,
};
use zeroize::Zeroizing;

use crate::StoreError;

/// Context of the chunk-id key (keyed BLAKE3 of a chunk's plaintext).
const CONTEXT_CHUNK_ID: &str = "cryptstream store v1 2026-11-30 chunk id";
/// Context of the blob key (per-blob AEAD keys are derived from it).
const CONTEXT_BLOB: &str = "cryptstream store v1 2026-11-30 blob key";
/// Context of the whole-file hash key.
const CONTEXT_FILE_HASH: &str = "cryptstream store v1 2026-11-30 file hash";
/// Context of the manifest master key.
const CONTEXT_MANIFEST: &str = "cryptstream store v1 2026-11-30 manifest key";
/// Context of the snapshot master key (snapshot objects are containers
/// sealed under it).
const CONTEXT_SNAPSHOT: &str = "cryptstream store v1 2026-12-02 snapshot key";
/// Context of the chunker's gear-table seed.
const CONTEXT_CHUNKER: &str = "cryptstream store v1 2026-11-30 chunker seed";
/// Plaintext bytes per chunk of the wrapped-key container (it is small).
const WRAP_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest wrapped-key plaintext accepted (the key plus the settings).
const MAX_WRAPPED_PLAINTEXT: u64 = 64 * 1024;

/// The keys of an open store. Zeroized on drop; no `Debug`.
pub struct StoreKeys {
    chunk_id: Zeroizing<[u8; KEY_LEN]>,
    blob: Zeroizing<[u8; KEY_LEN]>,
    file_hash: Zeroizing<[u8; KEY_LEN]>,
    manifest: MasterKey,
    snapshot: MasterKey,
    chunker_seed: u64,
}

impl StoreKeys {
    /// Derives every subkey from the store's master key.
    pub fn derive(master: &[u8; KEY_LEN]) -> StoreKeys {
        let derive = |context| Zeroizing::new(blake3::derive_key(context, master));
        let seed = derive(CONTEXT_CHUNKER);
        let mut seed_bytes = [0u8; 8];
        seed_bytes.copy_from_slice(&seed[..8]);
        StoreKeys {
            chunk_id: derive(CONTEXT_CHUNK_ID),
            blob: derive(CONTEXT_BLOB),
            file_hash: derive(CONTEXT_FILE_HASH),
            manifest: MasterKey::from_key_bytes(*derive(CONTEXT_MANIFEST)),
            snapshot: MasterKey::from_key_bytes(*derive(CONTEXT_SNAPSHOT)),
            chunker_seed: u64::from_le_bytes(seed_bytes),
        }
    }

    /// The id of a chunk: keyed BLAKE3 of its plaintext.
    pub fn chunk_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.chunk_id, plaintext).as_bytes()
    }

    /// A hasher for the whole-file hash (see [`crate::manifest`]).
    pub fn file_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.file_hash)
    }

    /// The AEAD key of one blob: keyed BLAKE3 (blob key) of its random salt
    /// and its associated data.
    pub(crate) fn blob_key(&self, salt: &[u8], aad: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let mut hasher = blake3::Hasher::new_keyed(&self.blob);
        hasher.update(salt);
        hasher.update(aad);
        Zeroizing::new(*hasher.finalize().as_bytes())
    }

    /// The keyed-BLAKE3 key of chunk ids (test vectors only).
    pub fn chunk_id_key(&self) -> &[u8; KEY_LEN] {
        &self.chunk_id
    }

    /// The blob key (test vectors only).
    pub fn blob_base_key(&self) -> &[u8; KEY_LEN] {
        &self.blob
    }

    /// The file-hash key (test vectors only).
    pub fn file_hash_key(&self) -> &[u8; KEY_LEN] {
        &self.file_hash
    }

    /// The master key that seals manifests (as cryptstream containers).
    pub fn manifest_key(&self) -> &MasterKey {
        &self.manifest
    }

    /// The master key that seals snapshot objects (as cryptstream
    /// containers).
    pub fn snapshot_key(&self) -> &MasterKey {
        &self.snapshot
    }

    /// The seed XORed into the chunker's gear table, so chunk boundaries
    /// depend on the key and say nothing about the content to others.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }
}

/// Seals `plaintext` (the master key and the settings) under `user_key` as
/// a cryptstream container (format version 2).
///
/// # Errors
/// Random source or format failures.
pub(crate) fn wrap(user_key: &MasterKey, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    cryptstream_format::fill_random(&mut salt)?;
    let params = HeaderParams {
        cipher: Cipher::Aes256Gcm,
        chunk_size: WRAP_CHUNK_SIZE,
        plaintext_len: Some(plaintext.len() as u64),
        mode: 0,
        kind: EntryKind::File,
        mtime: None,
    };
    Ok(seal_to_vec(user_key, &params, salt, plaintext)?.1)
}

/// The header of a wrapped key (to derive a passphrase key before
/// [`unwrap`], cancellably).
///
/// # Errors
/// A damaged container.
pub fn wrapped_header(wrapped: &[u8]) -> Result<Header, StoreError> {
    Ok(Header::parse(wrapped)?)
}

/// Opens a wrapped key with `keyring`.
///
/// # Errors
/// A wrong key or passphrase, or a damaged container.
pub(crate) fn unwrap(keyring: &Keyring, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let header = Header::parse(wrapped)?;
    let len = header
        .plaintext_len
        .filter(|&len| len <= MAX_WRAPPED_PLAINTEXT)
        .ok_or_else(|| StoreError::Config("the wrapped store key has a bad length".into()))?;
    let cipher = keyring.unlock(&header)?;
    let mut reader = OpeningReader::new(&wrapped[header.len()..], cipher, Some(len));
    let mut plain = Zeroizing::new(Vec::with_capacity(len as usize));
    reader
        .read_to_end(&mut plain)
        .map_err(|e| StoreError::Config(format!("the wrapped store key is damaged: {e}")))?;
    Ok(plain)
}
