//! Sealing and opening chunks with the STREAM construction.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};

use crate::{Cipher, FormatError, Layout};

/// Length of the authentication tag appended to every chunk.
pub const TAG_LEN: usize = 16;
/// Length of the AEAD keys (both ciphers take 256-bit keys).
pub const AEAD_KEY_LEN: usize = 32;
/// Value of the last nonce byte for the final chunk.
const LAST_CHUNK_FLAG: u8 = 1;
/// Zero bytes that open a STREAM nonce, before the 64-bit counter.
const COUNTER_OFFSET: usize = 3;
/// Where the last-chunk flag sits in the nonce.
const FLAG_OFFSET: usize = NONCE_LEN - 1;

/// How the nonce of each chunk is made from its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceScheme {
    /// The STREAM counter of Hoang, Reyhanitabar, Rogaway and Vizár (CRYPTO
    /// 2015): 3 zero bytes, the chunk index as a 64-bit big-endian counter,
    /// then a flag byte, `01` for the last chunk and `00` otherwise.
    ///
    /// age v1's payload nonce (an 11-byte big-endian counter followed by the
    /// same flag byte) is byte for byte the same nonce for every index below
    /// 2^64, so age's payload uses this scheme too.
    Stream,
}

impl NonceScheme {
    /// The 12-byte nonce of chunk `index`.
    pub fn nonce(self, index: u64, last: bool) -> [u8; NONCE_LEN] {
        match self {
            NonceScheme::Stream => {
                let mut bytes = [0u8; NONCE_LEN];
                bytes[COUNTER_OFFSET..FLAG_OFFSET].copy_from_slice(&index.to_be_bytes());
                if last {
                    bytes[FLAG_OFFSET] = LAST_CHUNK_FLAG;
                }
                bytes
            }
        }
    }
}

/// A [`ChunkCipher`] taken apart, to cross to a worker process. Holds the
/// key: zeroized on drop, never printed.
pub struct CipherParts {
    /// The AEAD.
    pub cipher: Cipher,
    /// Its key.
    pub key: zeroize::Zeroizing<[u8; AEAD_KEY_LEN]>,
    /// How chunk nonces are made.
    pub nonces: NonceScheme,
    /// The associated data of every chunk.
    pub aad: Vec<u8>,
    /// Plaintext bytes per full chunk.
    pub chunk_size: u32,
}

/// Seals or opens the chunks of one stream: an AEAD key, a nonce scheme and
/// associated data shared by every chunk. Cheap to share between threads
/// (`Send + Sync`; all methods take `&self`).
///
/// The key lives only inside aws-lc's AEAD context, which cleanses it when
/// the cipher is dropped; there is no `Debug` that could print it.
pub struct ChunkCipher {
    key: LessSafeKey,
    /// The AEAD and a copy of its key (zeroized on drop), so that the
    /// cipher can be handed to a worker process ([`ChunkCipher::to_parts`]).
    algorithm: Cipher,
    secret: zeroize::Zeroizing<[u8; AEAD_KEY_LEN]>,
    nonces: NonceScheme,
    aad: Box<[u8]>,
    chunk_size: u32,
}

impl ChunkCipher {
    /// A cipher for the chunks of one stream: `key` for `cipher`, nonces
    /// from `nonces`, and `aad` (copied) as the associated data of every
    /// chunk. In a cryptstream file the key is the file's payload key and
    /// `aad` the whole header; [`crate::seal_header`] and
    /// [`crate::Header::authenticate`] build it that way.
    pub fn new(
        cipher: Cipher,
        key: &[u8; AEAD_KEY_LEN],
        nonces: NonceScheme,
        aad: &[u8],
        chunk_size: u32,
    ) -> ChunkCipher {
        let algorithm = match cipher {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let unbound =
            UnboundKey::new(algorithm, key).expect("both AEADs take exactly 32-byte keys");
        ChunkCipher {
            key: LessSafeKey::new(unbound),
            algorithm: cipher,
            secret: zeroize::Zeroizing::new(*key),
            nonces,
            aad: aad.into(),
            chunk_size,
        }
    }

    /// Plaintext bytes per full chunk of this stream.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Everything this cipher is made of, secret key included, for a worker
    /// process that seals or opens chunks of the same file
    /// ([`ChunkCipher::from_parts`]). The key never leaves memory otherwise.
    pub fn to_parts(&self) -> CipherParts {
        CipherParts {
            cipher: self.algorithm,
            key: self.secret.clone(),
            nonces: self.nonces,
            aad: self.aad.to_vec(),
            chunk_size: self.chunk_size,
        }
    }

    /// The cipher [`ChunkCipher::to_parts`] describes.
    pub fn from_parts(parts: &CipherParts) -> ChunkCipher {
        ChunkCipher::new(
            parts.cipher,
            &parts.key,
            parts.nonces,
            &parts.aad,
            parts.chunk_size,
        )
    }

    fn nonce(&self, index: u64, last: bool) -> Nonce {
        Nonce::assume_unique_for_key(self.nonces.nonce(index, last))
    }

    /// Seals chunk `index` in place: `chunk` holds the plaintext followed by
    /// `TAG_LEN` bytes of room, which receive the tag.
    ///
    /// # Panics
    /// When `chunk` is shorter than `TAG_LEN` (a caller bug).
    pub fn seal_in_place(&self, index: u64, last: bool, chunk: &mut [u8]) {
        assert!(chunk.len() >= TAG_LEN, "a chunk has room for its tag");
        let (plain, tag_room) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(index, last), Aad::from(&self.aad[..]), plain)
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
            .open_in_place(self.nonce(index, last), Aad::from(&self.aad[..]), chunk)
            .map(|_| ())
            .map_err(|_| FormatError::ChunkAuth { index })
    }

    /// Seals the consecutive chunks starting at `first` that fill `buf`,
    /// laid out as in the file (plaintext of each chunk followed by room for
    /// its tag).
    ///
    /// # Panics
    /// When `buf` does not end at a chunk boundary of `layout` (a caller bug:
    /// size it with [`Layout::span_len`]).
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
    /// [`FormatError::ChunkAuth`] naming the first chunk that fails, or the
    /// chunk that `buf` cuts short.
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
            if buf.len() - at < len {
                return Err(FormatError::ChunkAuth { index });
            }
            self.open_in_place(index, layout.is_last(index), &mut buf[at..at + len])?;
            at += len;
            index += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cipher rebuilt from its parts (what a worker process receives)
    /// opens what the original sealed, and only that.
    #[test]
    fn a_cipher_rebuilt_from_its_parts_opens_what_the_original_sealed() {
        let original = ChunkCipher::new(
            Cipher::Aes256Gcm,
            &[4; AEAD_KEY_LEN],
            NonceScheme::Stream,
            b"header",
            1024,
        );
        let rebuilt = ChunkCipher::from_parts(&original.to_parts());
        assert_eq!(rebuilt.chunk_size(), 1024);
        let mut chunk = vec![1u8; 50 + TAG_LEN];
        original.seal_in_place(2, false, &mut chunk);
        let mut wrong = chunk.clone();
        assert!(rebuilt.open_in_place(3, false, &mut wrong).is_err());
        rebuilt.open_in_place(2, false, &mut chunk).unwrap();
        assert_eq!(&chunk[..50], &[1u8; 50][..]);
    }

    #[test]
    fn chunk_cipher_is_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ChunkCipher>();
    }

    #[test]
    fn stream_nonces_match_age_payload_nonces() {
        for (index, last) in [
            (0u64, false),
            (1, true),
            (0x0102_0304_0506_0708, false),
            (u64::MAX, true),
        ] {
            // age: 11-byte big-endian counter, then the flag byte.
            let mut age = [0u8; NONCE_LEN];
            age[..11].copy_from_slice(&u128::from(index).to_be_bytes()[16 - 11..]);
            age[11] = u8::from(last);
            assert_eq!(NonceScheme::Stream.nonce(index, last), age);
        }
    }

    #[test]
    fn chunks_bind_index_flag_and_associated_data() {
        let key = [9u8; AEAD_KEY_LEN];
        for algorithm in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let cipher = ChunkCipher::new(algorithm, &key, NonceScheme::Stream, b"aad", 1024);
            let other_aad = ChunkCipher::new(algorithm, &key, NonceScheme::Stream, b"aae", 1024);
            let mut sealed = *b"plaintext.......tag room........";
            cipher.seal_in_place(5, false, &mut sealed);
            for (index, last, opener) in [
                (4, false, &cipher),
                (5, true, &cipher),
                (5, false, &other_aad),
            ] {
                let mut copy = sealed;
                assert_eq!(
                    opener.open_in_place(index, last, &mut copy),
                    Err(FormatError::ChunkAuth { index })
                );
            }
            let mut copy = sealed;
            cipher.open_in_place(5, false, &mut copy).unwrap();
            assert_eq!(&copy[..16], b"plaintext.......");
            assert!(cipher
                .open_in_place(0, true, &mut [0u8; TAG_LEN - 1])
                .is_err());
        }
    }

    /// Chunk indexes past 2^32 (files past 4 TiB with 1 KiB chunks, or
    /// 256 TiB with 64 KiB ones) keep distinct nonces: a counter cut to 32
    /// bits would reuse the nonce of index `i - 2^32`.
    #[test]
    fn chunk_indexes_past_2_pow_32_have_their_own_nonces() {
        let key = [3u8; AEAD_KEY_LEN];
        let cipher = ChunkCipher::new(
            Cipher::ChaCha20Poly1305,
            &key,
            NonceScheme::Stream,
            b"",
            1024,
        );
        for high in [1u64 << 32, (1 << 32) + 1, 1 << 36, (1 << 40) + 7] {
            let low = high & u64::from(u32::MAX);
            assert_ne!(
                NonceScheme::Stream.nonce(high, false),
                NonceScheme::Stream.nonce(low, false),
                "index {high}"
            );
            let mut sealed = [7u8; 64 + TAG_LEN];
            cipher.seal_in_place(high, true, &mut sealed);
            let mut copy = sealed;
            assert!(cipher.open_in_place(low, true, &mut copy).is_err());
            let mut copy = sealed;
            assert!(cipher.open_in_place(high, false, &mut copy).is_err());
            let mut copy = sealed;
            cipher.open_in_place(high, true, &mut copy).unwrap();
            assert_eq!(copy[..64], [7u8; 64]);
        }
    }
}
