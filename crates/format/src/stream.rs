//! Sealing and opening chunks with the STREAM construction.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};

use crate::{Cipher, FormatError, Header, Layout, HEADER_LEN};

/// Length of the authentication tag appended to every chunk.
pub const TAG_LEN: usize = 16;
/// Value of the last nonce byte for the final chunk.
const LAST_CHUNK_FLAG: u8 = 1;

/// Seals or opens the chunks of one file. Cheap to share between threads.
///
/// The nonce of chunk `i` is 3 zero bytes, `i` as a 64-bit big-endian
/// counter, and a last-chunk flag byte; the associated data is the 144-byte
/// header. A per-file key makes nonces unique without any coordination.
pub struct ChunkCipher {
    key: LessSafeKey,
    aad: [u8; HEADER_LEN],
    layout_chunk_size: u32,
}

impl ChunkCipher {
    pub(crate) fn new(cipher: Cipher, key: &[u8; 32], header: &Header) -> ChunkCipher {
        let algorithm = match cipher {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let unbound =
            UnboundKey::new(algorithm, key).expect("both AEADs take exactly 32-byte keys");
        ChunkCipher {
            key: LessSafeKey::new(unbound),
            aad: header.bytes,
            layout_chunk_size: header.chunk_size,
        }
    }

    /// Plaintext bytes per full chunk of this file.
    pub fn chunk_size(&self) -> u32 {
        self.layout_chunk_size
    }

    fn nonce(index: u64, last: bool) -> Nonce {
        let mut bytes = [0u8; NONCE_LEN];
        bytes[3..11].copy_from_slice(&index.to_be_bytes());
        if last {
            bytes[11] = LAST_CHUNK_FLAG;
        }
        Nonce::assume_unique_for_key(bytes)
    }

    /// Seals chunk `index` in place: `chunk` holds the plaintext followed by
    /// `TAG_LEN` bytes of room, which receive the tag.
    pub fn seal_in_place(&self, index: u64, last: bool, chunk: &mut [u8]) {
        let (plain, tag_room) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(Self::nonce(index, last), Aad::from(&self.aad), plain)
            .expect("a chunk is far below the AEAD's message size limit");
        tag_room.copy_from_slice(tag.as_ref());
    }

    /// Opens chunk `index` in place: `chunk` holds ciphertext and tag; on
    /// success its first `chunk.len() - TAG_LEN` bytes are the plaintext.
    ///
    /// # Errors
    /// [`FormatError::ChunkAuth`] when the chunk does not authenticate (wrong
    /// position, wrong last flag, modified bytes). The buffer then holds
    /// garbage that must not be used.
    pub fn open_in_place(
        &self,
        index: u64,
        last: bool,
        chunk: &mut [u8],
    ) -> Result<(), FormatError> {
        if chunk.len() < TAG_LEN {
            return Err(FormatError::ChunkAuth { index });
        }
        self.key
            .open_in_place(Self::nonce(index, last), Aad::from(&self.aad), chunk)
            .map(|_| ())
            .map_err(|_| FormatError::ChunkAuth { index })
    }

    /// Seals the consecutive chunks starting at `first` that fill `buf`,
    /// laid out as in the file (plaintext of each chunk followed by room for
    /// its tag).
    pub fn seal_span(&self, layout: &Layout, first: u64, buf: &mut [u8]) {
        let mut at = 0;
        let mut index = first;
        while at < buf.len() {
            let len = layout.chunk_plaintext_len(index) + TAG_LEN;
            self.seal_in_place(index, layout.is_last(index), &mut buf[at..at + len]);
            at += len;
            index += 1;
        }
    }

    /// Opens the consecutive chunks starting at `first` that fill `buf`.
    ///
    /// # Errors
    /// [`FormatError::ChunkAuth`] naming the first chunk that fails.
    pub fn open_span(
        &self,
        layout: &Layout,
        first: u64,
        buf: &mut [u8],
    ) -> Result<(), FormatError> {
        let mut at = 0;
        let mut index = first;
        while at < buf.len() {
            let len = layout.chunk_plaintext_len(index) + TAG_LEN;
            if at + len > buf.len() {
                return Err(FormatError::ChunkAuth { index });
            }
            self.open_in_place(index, layout.is_last(index), &mut buf[at..at + len])?;
            at += len;
            index += 1;
        }
        Ok(())
    }
}
