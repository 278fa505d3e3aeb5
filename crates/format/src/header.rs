//! The fixed-size file header: what it holds, how it is written and read.

use aws_lc_rs::hmac;

use crate::key::{derive_file_keys, KdfParams, KeyId, MasterKey, KEY_ID_LEN};
use crate::stream::ChunkCipher;
use crate::FormatError;

/// The eight bytes every cryptstream file starts with (PNG-style: a high
/// byte, the name, then CR LF SUB LF so that text-mode transfers that mangle
/// line ends are caught at once).
pub const MAGIC: [u8; 8] = [0x89, b'C', b'S', b'T', 0x0d, 0x0a, 0x1a, 0x0a];
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of the header in bytes; chunk 0 starts right after it.
pub const HEADER_LEN: usize = 144;
/// Length of the per-file random salt.
pub const SALT_LEN: usize = 32;
/// Default plaintext bytes per chunk (64 KiB, like age).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size a header may name.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size a header may name (bounds the memory a reader needs).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Marker in the plaintext-length field for streams of unknown length.
const UNKNOWN_LEN: u64 = u64::MAX;
/// Length of the key-check value.
const KEY_CHECK_LEN: usize = 16;
/// Length of the header MAC (full HMAC-SHA256).
const MAC_LEN: usize = 32;
/// Offset of the header MAC: everything before it is authenticated by it.
const MAC_OFFSET: usize = HEADER_LEN - MAC_LEN;
/// Offset of the key-check value.
const KEY_CHECK_OFFSET: usize = MAC_OFFSET - KEY_CHECK_LEN;
/// Offset of the 32-byte key-derivation block.
const KDF_OFFSET: usize = 64;
/// Offset of the per-file salt.
const SALT_OFFSET: usize = 32;

/// The AEAD that seals the chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256 in Galois/Counter Mode: the default, fastest with AES-NI.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439): for CPUs without AES instructions.
    ChaCha20Poly1305,
}

impl Cipher {
    /// The byte that names this cipher in the header.
    pub fn id(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
            Cipher::ChaCha20Poly1305 => 2,
        }
    }

    /// The cipher a header byte names.
    ///
    /// # Errors
    /// [`FormatError::UnknownCipher`] for any other byte.
    pub fn from_id(id: u8) -> Result<Cipher, FormatError> {
        match id {
            1 => Ok(Cipher::Aes256Gcm),
            2 => Ok(Cipher::ChaCha20Poly1305),
            other => Err(FormatError::UnknownCipher(other)),
        }
    }

    /// The name used on the command line and by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }
}

/// Where the master key of a file comes from, as recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A random key file; the header holds its public key id.
    KeyFile(KeyId),
    /// A passphrase stretched with Argon2id with this salt and these costs.
    Passphrase {
        /// The Argon2id salt (one per run of `encrypt`).
        salt: [u8; 16],
        /// The Argon2id costs.
        params: KdfParams,
    },
}

impl KeySource {
    fn kdf_id(&self) -> u8 {
        match self {
            KeySource::KeyFile(_) => 1,
            KeySource::Passphrase { .. } => 2,
        }
    }
}

/// What the writer of a file chooses; everything else in the header is
/// derived from the key and the salt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderParams {
    /// The AEAD for the chunks.
    pub cipher: Cipher,
    /// Plaintext bytes per chunk, in `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
    pub chunk_size: u32,
    /// Plaintext length, when known in advance (not for stdin).
    pub plaintext_len: Option<u64>,
    /// Unix permission bits of the plaintext file (0 when not recorded).
    pub mode: u32,
}

/// A parsed header. Parsing checks the structure only; [`crate::Keyring::unlock`]
/// authenticates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The AEAD for the chunks.
    pub cipher: Cipher,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Plaintext length, when the writer knew it.
    pub plaintext_len: Option<u64>,
    /// Unix permission bits of the plaintext file (0 when not recorded).
    pub mode: u32,
    /// The per-file random salt.
    pub salt: [u8; SALT_LEN],
    /// Where the master key comes from.
    pub key_source: KeySource,
    /// Proves knowledge of the file key without revealing it.
    pub(crate) key_check: [u8; KEY_CHECK_LEN],
    /// The encoded bytes, which are the associated data of every chunk.
    pub(crate) bytes: [u8; HEADER_LEN],
}

/// Builds and authenticates the header of a new file and returns it with the
/// cipher that seals its chunks.
///
/// `salt` must be fresh random bytes for every file (see [`crate::fill_random`]);
/// only test vectors fix it.
///
/// # Errors
/// [`FormatError::ChunkSize`] when `params.chunk_size` is out of range.
pub fn seal_header(
    key: &MasterKey,
    params: &HeaderParams,
    salt: [u8; SALT_LEN],
) -> Result<(Header, ChunkCipher), FormatError> {
    check_chunk_size(params.chunk_size)?;
    let keys = derive_file_keys(key, &salt);
    let mut bytes = [0u8; HEADER_LEN];
    bytes[0..8].copy_from_slice(&MAGIC);
    bytes[8] = VERSION;
    bytes[9] = params.cipher.id();
    bytes[10] = key.source().kdf_id();
    bytes[12..16].copy_from_slice(&params.chunk_size.to_le_bytes());
    let len = params.plaintext_len.unwrap_or(UNKNOWN_LEN);
    bytes[16..24].copy_from_slice(&len.to_le_bytes());
    bytes[24..28].copy_from_slice(&(params.mode & 0o7777).to_le_bytes());
    bytes[SALT_OFFSET..SALT_OFFSET + SALT_LEN].copy_from_slice(&salt);
    encode_key_source(key.source(), &mut bytes[KDF_OFFSET..KDF_OFFSET + 32]);
    bytes[KEY_CHECK_OFFSET..MAC_OFFSET].copy_from_slice(&keys.key_check);
    let mac = hmac::sign(&keys.mac_key, &bytes[..MAC_OFFSET]);
    bytes[MAC_OFFSET..].copy_from_slice(mac.as_ref());
    let header = Header::parse(&bytes)?;
    let cipher = ChunkCipher::new(params.cipher, &keys.payload_key, &header);
    Ok((header, cipher))
}

fn encode_key_source(source: &KeySource, out: &mut [u8]) {
    match source {
        KeySource::KeyFile(id) => out[..KEY_ID_LEN].copy_from_slice(id.as_bytes()),
        KeySource::Passphrase { salt, params } => {
            out[..16].copy_from_slice(salt);
            out[16..20].copy_from_slice(&params.m_kib.to_le_bytes());
            out[20..24].copy_from_slice(&params.t.to_le_bytes());
            out[24..28].copy_from_slice(&params.p.to_le_bytes());
        }
    }
}

fn check_chunk_size(size: u32) -> Result<(), FormatError> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(FormatError::ChunkSize(size))
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

impl Header {
    /// Parses the structure of a header from the first bytes of a file.
    ///
    /// Nothing is authenticated here; the key is not needed.
    ///
    /// # Errors
    /// [`FormatError::NotCryptstream`] when the magic is missing, and one of
    /// the "header damaged" errors when a field is out of range.
    pub fn parse(data: &[u8]) -> Result<Header, FormatError> {
        let magic_len = data.len().min(MAGIC.len());
        if data[..magic_len] != MAGIC[..magic_len] {
            return Err(FormatError::NotCryptstream);
        }
        if data.len() < HEADER_LEN {
            return Err(FormatError::ShortHeader { len: data.len() });
        }
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(&data[..HEADER_LEN]);
        if bytes[8] != VERSION {
            return Err(FormatError::UnsupportedVersion(bytes[8]));
        }
        let cipher = Cipher::from_id(bytes[9])?;
        if bytes[11] != 0 || bytes[28..32] != [0; 4] {
            return Err(FormatError::Reserved);
        }
        let chunk_size = le_u32(&bytes, 12);
        check_chunk_size(chunk_size)?;
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[16..24]);
        let plaintext_len = match u64::from_le_bytes(len) {
            UNKNOWN_LEN => None,
            n => Some(n),
        };
        let mode = le_u32(&bytes, 24);
        if mode & !0o7777 != 0 {
            return Err(FormatError::Reserved);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[SALT_OFFSET..SALT_OFFSET + SALT_LEN]);
        let kdf = &bytes[KDF_OFFSET..KDF_OFFSET + 32];
        let key_source = match bytes[10] {
            1 => {
                if kdf[KEY_ID_LEN..] != [0; 32 - KEY_ID_LEN] {
                    return Err(FormatError::Reserved);
                }
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&kdf[..KEY_ID_LEN]);
                KeySource::KeyFile(KeyId::from_bytes(id))
            }
            2 => {
                if kdf[28..] != [0; 4] {
                    return Err(FormatError::Reserved);
                }
                let mut salt = [0u8; 16];
                salt.copy_from_slice(&kdf[..16]);
                let params = KdfParams {
                    m_kib: le_u32(kdf, 16),
                    t: le_u32(kdf, 20),
                    p: le_u32(kdf, 24),
                };
                params.check()?;
                KeySource::Passphrase { salt, params }
            }
            other => return Err(FormatError::UnknownKdf(other)),
        };
        let mut key_check = [0u8; KEY_CHECK_LEN];
        key_check.copy_from_slice(&bytes[KEY_CHECK_OFFSET..MAC_OFFSET]);
        Ok(Header {
            cipher,
            chunk_size,
            plaintext_len,
            mode,
            salt,
            key_source,
            key_check,
            bytes,
        })
    }

    /// The encoded header, exactly as it is on disk.
    pub fn as_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.bytes
    }

    /// Checks the key-check value and the MAC with `key`, and returns the
    /// cipher for the chunks.
    ///
    /// # Errors
    /// [`FormatError::HeaderModified`] (or [`FormatError::WrongPassphrase`]
    /// for passphrase files, where a wrong passphrase and a damaged header
    /// look the same) when the header does not authenticate under `key`.
    pub fn authenticate(&self, key: &MasterKey) -> Result<ChunkCipher, FormatError> {
        let keys = derive_file_keys(key, &self.salt);
        let key_check_ok =
            aws_lc_rs::constant_time::verify_slices_are_equal(&keys.key_check, &self.key_check)
                .is_ok();
        if !key_check_ok {
            return Err(match self.key_source {
                KeySource::Passphrase { .. } => FormatError::WrongPassphrase,
                KeySource::KeyFile(_) => FormatError::HeaderModified,
            });
        }
        hmac::verify(
            &keys.mac_key,
            &self.bytes[..MAC_OFFSET],
            &self.bytes[MAC_OFFSET..],
        )
        .map_err(|_| FormatError::HeaderModified)?;
        Ok(ChunkCipher::new(self.cipher, &keys.payload_key, self))
    }
}
