//! Blobs: one sealed object inside a pack (a chunk, or a pack's index).
//!
//! ```text
//! salt (16 random bytes) | AEAD ciphertext | tag (16)
//! ```
//!
//! The AEAD is AES-256-GCM through [`ChunkCipher`] with a key used for
//! this one blob only: `keyed_blake3(blob_key, salt || aad)`, so the nonce
//! can be the fixed STREAM nonce of a single last chunk (index 0, last
//! flag set) and nothing depends on a counter shared between writers. The
//! associated data binds the blob to what it claims to be: for a chunk,
//! its id, its compression byte and its plaintext length.

use cryptstream_format::{ChunkCipher, Cipher, NonceScheme, TAG_LEN};

use crate::keys::StoreKeys;

/// Random salt at the start of every blob.
pub const BLOB_SALT_LEN: usize = 16;
/// Bytes a blob adds to its (compressed) plaintext.
pub const BLOB_OVERHEAD: usize = BLOB_SALT_LEN + TAG_LEN;
/// Compression byte: stored as is.
pub const COMPRESSION_NONE: u8 = 0;
/// Compression byte: zstd frame.
pub const COMPRESSION_ZSTD: u8 = 1;

/// Associated data of a lease holder note (S3 leases): binds the sealed
/// note to its purpose.
pub const LEASE_AAD: &[u8] = b"cryptstream lease holder v1";

/// A blob could not be opened: wrong key, damaged or misplaced bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobDamaged;

/// Associated data of a chunk blob: id, compression byte, plaintext length.
pub fn chunk_aad(id: &[u8; 32], compression: u8, raw_len: u32) -> [u8; 37] {
    let mut aad = [0u8; 37];
    aad[..32].copy_from_slice(id);
    aad[32] = compression;
    aad[33..].copy_from_slice(&raw_len.to_le_bytes());
    aad
}

fn cipher(keys: &StoreKeys, salt: &[u8], aad: &[u8], len: usize) -> ChunkCipher {
    let key = keys.blob_key(salt, aad);
    ChunkCipher::new(
        Cipher::Aes256Gcm,
        &key,
        NonceScheme::Stream,
        aad,
        u32::try_from(len).unwrap_or(u32::MAX),
    )
}

/// Seals `blob` in place. It must be laid out as `salt room | plaintext |
/// tag room`; the salt is filled with random bytes here.
///
/// # Errors
/// Only when the system random source fails.
pub fn seal_in_place(
    keys: &StoreKeys,
    aad: &[u8],
    blob: &mut [u8],
) -> Result<(), cryptstream_format::FormatError> {
    assert!(
        blob.len() >= BLOB_OVERHEAD,
        "a blob has room for salt and tag"
    );
    // From this thread's reserve of salts: one `getrandom` call per 32
    // blobs, not per blob (DECISIONS 550).
    cryptstream_format::fill_fresh(&mut blob[..BLOB_SALT_LEN])?;
    seal_body(keys, aad, blob);
    Ok(())
}

/// Opens `blob` in place and returns its plaintext part.
///
/// # Errors
/// [`BlobDamaged`] when it does not authenticate.
pub fn open_in_place<'a>(
    keys: &StoreKeys,
    aad: &[u8],
    blob: &'a mut [u8],
) -> Result<&'a mut [u8], BlobDamaged> {
    if blob.len() < BLOB_OVERHEAD {
        return Err(BlobDamaged);
    }
    let (salt, body) = blob.split_at_mut(BLOB_SALT_LEN);
    let len = body.len();
    cipher(keys, salt, aad, len)
        .open_in_place(0, true, body)
        .map_err(|_| BlobDamaged)?;
    Ok(&mut body[..len - TAG_LEN])
}

/// Seals `plaintext` into a new blob with the given salt (test vectors;
/// everything else uses [`seal`], which draws a random salt).
pub fn seal_with_salt(
    keys: &StoreKeys,
    aad: &[u8],
    plaintext: &[u8],
    salt: &[u8; BLOB_SALT_LEN],
) -> Vec<u8> {
    let mut blob = laid_out(plaintext);
    blob[..BLOB_SALT_LEN].copy_from_slice(salt);
    seal_body(keys, aad, &mut blob);
    blob
}

/// `plaintext` in a new buffer laid out as `salt room | plaintext | tag room`.
fn laid_out(plaintext: &[u8]) -> Vec<u8> {
    let mut blob = vec![0u8; plaintext.len() + BLOB_OVERHEAD];
    blob[BLOB_SALT_LEN..BLOB_SALT_LEN + plaintext.len()].copy_from_slice(plaintext);
    blob
}

/// Seals the body of `blob` under the salt already at its start.
fn seal_body(keys: &StoreKeys, aad: &[u8], blob: &mut [u8]) {
    let (salt, body) = blob.split_at_mut(BLOB_SALT_LEN);
    cipher(keys, salt, aad, body.len()).seal_in_place(0, true, body);
}

/// Seals `plaintext` into a new blob.
///
/// # Errors
/// Only when the system random source fails.
pub fn seal(
    keys: &StoreKeys,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, cryptstream_format::FormatError> {
    let mut blob = laid_out(plaintext);
    seal_in_place(keys, aad, &mut blob)?;
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_bind_their_associated_data() {
        let keys = StoreKeys::derive(&[7u8; 32]);
        let mut blob = seal(&keys, b"aad", b"hello").unwrap();
        let mut copy = blob.clone();
        assert_eq!(open_in_place(&keys, b"aad", &mut copy).unwrap(), b"hello");
        let mut copy = blob.clone();
        assert_eq!(open_in_place(&keys, b"aae", &mut copy), Err(BlobDamaged));
        blob[BLOB_SALT_LEN] ^= 1;
        assert_eq!(open_in_place(&keys, b"aad", &mut blob), Err(BlobDamaged));
    }
}
