//! The file header: what it holds, how it is written and read.
//!
//! Version 2 (160 bytes) is written; version 1 (144 bytes) is still read.
//! Both end with the same 112-byte key block (file salt, key-derivation
//! block, key check, header MAC), so only the fields before it differ.

use aws_lc_rs::hmac;

use crate::key::{derive_file_keys, KdfParams, KeyId, MasterKey, KEY_ID_LEN, KEY_LEN};
use crate::layout::Layout;
use crate::stream::{ChunkCipher, NonceScheme};
use crate::FormatError;

/// The eight bytes every cryptstream file starts with (PNG-style: a high
/// byte, the name, then CR LF SUB LF so that text-mode transfers that mangle
/// line ends are caught at once).
pub const MAGIC: [u8; 8] = [0x89, b'C', b'S', b'T', 0x0d, 0x0a, 0x1a, 0x0a];
/// The format version [`seal_header`] writes. Readers also accept version 1.
pub const VERSION: u8 = 2;
/// The first version, still read: no entry kind, no modification time.
const VERSION_1: u8 = 1;
/// Length of a version 1 header; chunk 0 starts right after it.
pub const HEADER_LEN_V1: usize = 144;
/// Length of a version 2 header; chunk 0 starts right after it.
pub const HEADER_LEN_V2: usize = 160;
/// Length of the longest header any supported version has.
pub const MAX_HEADER_LEN: usize = HEADER_LEN_V2;
/// Bytes [`Header::encoded_len`] needs to tell the header length: the magic
/// and the version byte.
pub const MIN_HEADER_PREFIX: usize = MAGIC.len() + 1;
/// Length of the per-file random salt.
pub const SALT_LEN: usize = 32;
/// Default plaintext bytes per chunk (64 KiB, like age).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size a header may name.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk size a header may name (bounds the memory a reader needs).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Longest payload of a symbolic-link or hard-link entry (the link target or
/// the linked path), in bytes: Linux's `PATH_MAX`. It bounds what a reader
/// must hold in memory to restore a link.
pub const MAX_LINK_TARGET_LEN: usize = 4096;

/// Marker in the plaintext-length field for streams of unknown length.
const UNKNOWN_LEN: u64 = u64::MAX;
/// Marker in the mtime-nanoseconds field: no modification time recorded.
const NO_MTIME: u32 = u32::MAX;
/// Nanoseconds in a second: the nanoseconds field is below this.
const NANOS_PER_SECOND: u32 = 1_000_000_000;
/// The Unix permission bits (set-user-id, set-group-id, sticky, rwx x 3).
const MODE_MASK: u32 = 0o7777;
/// Length of the key-derivation block.
const KDF_BLOCK_LEN: usize = 32;
/// Length of the key-check value.
const KEY_CHECK_LEN: usize = 16;
/// Length of the header MAC (full HMAC-SHA256).
const MAC_LEN: usize = 32;
/// Length of the block every version ends with: salt, key-derivation block,
/// key check and MAC.
const KEY_BLOCK_LEN: usize = SALT_LEN + KDF_BLOCK_LEN + KEY_CHECK_LEN + MAC_LEN;
/// Offset of the version byte.
const VERSION_OFFSET: usize = MAGIC.len();
/// Offset of the cipher id.
const CIPHER_OFFSET: usize = 9;
/// Offset of the key-derivation id.
const KDF_ID_OFFSET: usize = 10;
/// Offset of the entry kind (version 2; reserved zero in version 1).
const KIND_OFFSET: usize = 11;
/// Offset of the chunk size (u32).
const CHUNK_SIZE_OFFSET: usize = 12;
/// Offset of the plaintext length (u64).
const LENGTH_OFFSET: usize = 16;
/// Offset of the permission bits (u32).
const MODE_OFFSET: usize = 24;
/// Offset of the mtime nanoseconds (u32, version 2; reserved zero in version 1).
const NANOS_OFFSET: usize = 28;
/// Offset of the mtime seconds (i64, version 2).
const SECONDS_OFFSET: usize = 32;
/// The reserved bytes of a version 2 header.
const RESERVED_V2: std::ops::Range<usize> = 40..48;
/// Key-derivation id of key files.
const KDF_KEY_FILE: u8 = 1;
/// Key-derivation id of passphrases (Argon2id).
const KDF_PASSPHRASE: u8 = 2;
/// Length of the Argon2id salt in the key-derivation block.
const ARGON2_SALT_LEN: usize = 16;

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
            KeySource::KeyFile(_) => KDF_KEY_FILE,
            KeySource::Passphrase { .. } => KDF_PASSPHRASE,
        }
    }
}

/// What a file entry is: the payload of a version 2 file is the file's
/// bytes, a link target, or the path of the file a hard link points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file; the payload is its contents.
    File,
    /// A symbolic link; the payload is the link target, as bytes.
    Symlink,
    /// A hard link; the payload is the path, relative to the tree root and
    /// `/`-separated, of the plaintext file it links to.
    HardLink,
}

impl EntryKind {
    /// The byte that names this kind in a version 2 header.
    pub fn id(self) -> u8 {
        match self {
            EntryKind::File => 1,
            EntryKind::Symlink => 2,
            EntryKind::HardLink => 3,
        }
    }

    /// The kind a header byte names.
    ///
    /// # Errors
    /// [`FormatError::UnknownEntryKind`] for any other byte.
    pub fn from_id(id: u8) -> Result<EntryKind, FormatError> {
        match id {
            1 => Ok(EntryKind::File),
            2 => Ok(EntryKind::Symlink),
            3 => Ok(EntryKind::HardLink),
            other => Err(FormatError::UnknownEntryKind(other)),
        }
    }

    /// The name shown to people (`inspect`, error messages).
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::HardLink => "hard link",
        }
    }
}

/// A modification time: seconds since the Unix epoch (negative before it)
/// and nanoseconds within the second (`< 1_000_000_000`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mtime {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds after `seconds`, below one second.
    pub nanos: u32,
}

/// What the writer of a file chooses; everything else in the header is
/// derived from the key and the salt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderParams {
    /// The AEAD for the chunks.
    pub cipher: Cipher,
    /// Plaintext bytes per chunk, in `MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE`.
    pub chunk_size: u32,
    /// Plaintext length, when known in advance (not for stdin). Required for
    /// link entries.
    pub plaintext_len: Option<u64>,
    /// Unix permission bits of the plaintext file (0 when not recorded);
    /// bits above `0o7777` (the file type) are dropped.
    pub mode: u32,
    /// What the payload is.
    pub kind: EntryKind,
    /// Modification time of the plaintext entry, when recorded.
    pub mtime: Option<Mtime>,
}

/// A parsed header. Parsing checks the structure only; [`Header::authenticate`]
/// (or [`crate::Keyring::unlock`]) authenticates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version the header was written in (1 or 2).
    pub version: u8,
    /// The AEAD for the chunks.
    pub cipher: Cipher,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Plaintext length, when the writer knew it.
    pub plaintext_len: Option<u64>,
    /// Unix permission bits of the plaintext file (0 when not recorded).
    pub mode: u32,
    /// What the payload is (always [`EntryKind::File`] in version 1).
    pub kind: EntryKind,
    /// Modification time, when recorded (always `None` in version 1).
    pub mtime: Option<Mtime>,
    /// The per-file random salt.
    pub salt: [u8; SALT_LEN],
    /// Where the master key comes from.
    pub key_source: KeySource,
    /// Proves knowledge of the file key without revealing it.
    key_check: [u8; KEY_CHECK_LEN],
    /// The encoded bytes (the first `len`), which are the associated data of
    /// every chunk.
    bytes: [u8; MAX_HEADER_LEN],
    /// Length of the encoded header: [`HEADER_LEN_V1`] or [`HEADER_LEN_V2`].
    len: usize,
}

/// Seals `plaintext` whole into a new container in memory: the header of
/// [`seal_header`] (its `plaintext_len` set to the length of `plaintext`)
/// followed by every sealed chunk. The one way a small buffer (a link
/// target, a wrapped store key) becomes a container; files and streams go
/// through [`crate::SealingWriter`].
///
/// # Errors
/// As [`seal_header`].
pub fn seal_to_vec(
    key: &MasterKey,
    params: &HeaderParams,
    salt: [u8; SALT_LEN],
    plaintext: &[u8],
) -> Result<(Header, Vec<u8>), FormatError> {
    use std::io::Write;
    let params = HeaderParams {
        plaintext_len: Some(plaintext.len() as u64),
        ..*params
    };
    let (header, cipher) = seal_header(key, &params, salt)?;
    let mut bytes = header.as_bytes().to_vec();
    let mut writer = crate::SealingWriter::new(&mut bytes, cipher);
    let written = writer.write_all(plaintext).and_then(|()| writer.finish());
    written.expect("writing into a Vec cannot fail");
    Ok((header, bytes))
}

/// Builds and authenticates the (version 2) header of a new file and returns
/// it with the cipher that seals its chunks.
///
/// `salt` must be fresh random bytes for every file (see [`crate::fill_random`]);
/// only test vectors fix it.
///
/// # Errors
/// [`FormatError::ChunkSize`] when `params.chunk_size` is out of range,
/// [`FormatError::LengthTooLarge`] when the file would be longer than
/// `u64::MAX` bytes, [`FormatError::Mtime`] for nanoseconds of a second or
/// more, [`FormatError::LinkLength`] for a link entry without a length in
/// `1..=MAX_LINK_TARGET_LEN`, and [`FormatError::KdfParams`] for
/// passphrase keys with costs out of range.
pub fn seal_header(
    key: &MasterKey,
    params: &HeaderParams,
    salt: [u8; SALT_LEN],
) -> Result<(Header, ChunkCipher), FormatError> {
    check_chunk_size(params.chunk_size)?;
    if let Some(len) = params.plaintext_len {
        // Also rules out `u64::MAX`, which would read back as "unknown".
        Layout::new(HEADER_LEN_V2, params.chunk_size, len)?;
    }
    let (nanos, seconds) = match params.mtime {
        Some(m) if m.nanos >= NANOS_PER_SECOND => {
            return Err(FormatError::Mtime {
                seconds: m.seconds,
                nanos: m.nanos,
            })
        }
        Some(m) => (m.nanos, m.seconds),
        None => (NO_MTIME, 0),
    };
    let keys = derive_file_keys(key, &salt);
    let len = HEADER_LEN_V2;
    let mut bytes = [0u8; MAX_HEADER_LEN];
    bytes[..MAGIC.len()].copy_from_slice(&MAGIC);
    bytes[VERSION_OFFSET] = VERSION;
    bytes[CIPHER_OFFSET] = params.cipher.id();
    bytes[KDF_ID_OFFSET] = key.source().kdf_id();
    bytes[KIND_OFFSET] = params.kind.id();
    put(
        &mut bytes,
        CHUNK_SIZE_OFFSET,
        &params.chunk_size.to_le_bytes(),
    );
    let stated = params.plaintext_len.unwrap_or(UNKNOWN_LEN);
    put(&mut bytes, LENGTH_OFFSET, &stated.to_le_bytes());
    put(
        &mut bytes,
        MODE_OFFSET,
        &(params.mode & MODE_MASK).to_le_bytes(),
    );
    put(&mut bytes, NANOS_OFFSET, &nanos.to_le_bytes());
    put(&mut bytes, SECONDS_OFFSET, &seconds.to_le_bytes());
    put(&mut bytes, salt_offset(len), &salt);
    encode_key_source(
        key.source(),
        &mut bytes[kdf_offset(len)..kdf_offset(len) + KDF_BLOCK_LEN],
    );
    put(&mut bytes, key_check_offset(len), &keys.key_check);
    let mac = hmac::sign(&keys.mac_key, &bytes[..mac_offset(len)]);
    put(&mut bytes, mac_offset(len), mac.as_ref());
    let header = Header::parse(&bytes[..len])?;
    let cipher = header.chunk_cipher(&keys.payload_key);
    Ok((header, cipher))
}

/// Offset of the file salt in a header of `len` bytes.
fn salt_offset(len: usize) -> usize {
    len - KEY_BLOCK_LEN
}

/// Offset of the key-derivation block in a header of `len` bytes.
fn kdf_offset(len: usize) -> usize {
    salt_offset(len) + SALT_LEN
}

/// Offset of the key check in a header of `len` bytes.
fn key_check_offset(len: usize) -> usize {
    kdf_offset(len) + KDF_BLOCK_LEN
}

/// Offset of the MAC in a header of `len` bytes: everything before it is
/// authenticated by it.
fn mac_offset(len: usize) -> usize {
    key_check_offset(len) + KEY_CHECK_LEN
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

fn encode_key_source(source: &KeySource, out: &mut [u8]) {
    match source {
        KeySource::KeyFile(id) => out[..KEY_ID_LEN].copy_from_slice(id.as_bytes()),
        KeySource::Passphrase { salt, params } => {
            out[..ARGON2_SALT_LEN].copy_from_slice(salt);
            let costs = &mut out[ARGON2_SALT_LEN..];
            costs[0..4].copy_from_slice(&params.m_kib.to_le_bytes());
            costs[4..8].copy_from_slice(&params.t.to_le_bytes());
            costs[8..12].copy_from_slice(&params.p.to_le_bytes());
        }
    }
}

fn decode_key_source(id: u8, block: &[u8]) -> Result<KeySource, FormatError> {
    match id {
        KDF_KEY_FILE => {
            if block[KEY_ID_LEN..].iter().any(|&b| b != 0) {
                return Err(FormatError::Reserved);
            }
            let mut key_id = [0u8; KEY_ID_LEN];
            key_id.copy_from_slice(&block[..KEY_ID_LEN]);
            Ok(KeySource::KeyFile(KeyId::from_bytes(key_id)))
        }
        KDF_PASSPHRASE => {
            let costs = &block[ARGON2_SALT_LEN..];
            if costs[12..].iter().any(|&b| b != 0) {
                return Err(FormatError::Reserved);
            }
            let mut salt = [0u8; ARGON2_SALT_LEN];
            salt.copy_from_slice(&block[..ARGON2_SALT_LEN]);
            let params = KdfParams {
                m_kib: le_u32(costs, 0),
                t: le_u32(costs, 4),
                p: le_u32(costs, 8),
            };
            params.check()?;
            Ok(KeySource::Passphrase { salt, params })
        }
        other => Err(FormatError::UnknownKdf(other)),
    }
}

fn check_chunk_size(size: u32) -> Result<(), FormatError> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(FormatError::ChunkSize(size))
    }
}

/// The modification time that a version 2 header's two fields encode.
fn decode_mtime(nanos: u32, seconds: i64) -> Result<Option<Mtime>, FormatError> {
    match nanos {
        NO_MTIME if seconds == 0 => Ok(None),
        n if n < NANOS_PER_SECOND => Ok(Some(Mtime { seconds, nanos })),
        _ => Err(FormatError::Mtime { seconds, nanos }),
    }
}

/// Checks that a link entry states a payload length a reader can hold.
fn check_link_len(kind: EntryKind, len: Option<u64>) -> Result<(), FormatError> {
    let max = MAX_LINK_TARGET_LEN as u64;
    match len {
        Some(n) if (1..=max).contains(&n) => Ok(()),
        _ => Err(FormatError::LinkLength {
            kind: kind.name(),
            len,
        }),
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl Header {
    /// The length of the header that `prefix`, the first bytes of a file
    /// (at least [`MIN_HEADER_PREFIX`] of them), starts: [`HEADER_LEN_V1`]
    /// or [`HEADER_LEN_V2`]. Lets a reader read exactly the header and
    /// nothing more.
    ///
    /// # Errors
    /// [`FormatError::NotCryptstream`] when the magic is missing,
    /// [`FormatError::ShortHeader`] when `prefix` is shorter than
    /// [`MIN_HEADER_PREFIX`] and [`FormatError::UnsupportedVersion`] for an
    /// unknown version.
    pub fn encoded_len(prefix: &[u8]) -> Result<usize, FormatError> {
        let magic_len = prefix.len().min(MAGIC.len());
        if prefix[..magic_len] != MAGIC[..magic_len] {
            return Err(FormatError::NotCryptstream);
        }
        if prefix.len() < MIN_HEADER_PREFIX {
            return Err(FormatError::ShortHeader { len: prefix.len() });
        }
        match prefix[VERSION_OFFSET] {
            VERSION_1 => Ok(HEADER_LEN_V1),
            VERSION => Ok(HEADER_LEN_V2),
            other => Err(FormatError::UnsupportedVersion(other)),
        }
    }

    /// Parses the structure of a header from the first bytes of a file
    /// (`data` may go on past the header).
    ///
    /// Nothing is authenticated here; the key is not needed. Every field is
    /// checked: a header that parses has a chunk size in range, a stated
    /// length whose file fits in `u64`, link payloads of at most
    /// [`MAX_LINK_TARGET_LEN`] bytes and Argon2id costs this build accepts.
    ///
    /// # Errors
    /// [`FormatError::NotCryptstream`] when the magic is missing,
    /// [`FormatError::ShortHeader`], [`FormatError::UnsupportedVersion`],
    /// and one of the "header damaged" errors when a field is out of range.
    pub fn parse(data: &[u8]) -> Result<Header, FormatError> {
        let len = Header::encoded_len(data)?;
        if data.len() < len {
            return Err(FormatError::ShortHeader { len: data.len() });
        }
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[..len].copy_from_slice(&data[..len]);
        let h = &bytes[..len];
        let version = h[VERSION_OFFSET];
        let cipher = Cipher::from_id(h[CIPHER_OFFSET])?;
        let chunk_size = le_u32(h, CHUNK_SIZE_OFFSET);
        check_chunk_size(chunk_size)?;
        let plaintext_len = match le_u64(h, LENGTH_OFFSET) {
            UNKNOWN_LEN => None,
            n => Some(n),
        };
        let mode = le_u32(h, MODE_OFFSET);
        if mode & !MODE_MASK != 0 {
            return Err(FormatError::Mode(mode));
        }
        let (kind, mtime) = if version == VERSION_1 {
            if h[KIND_OFFSET] != 0 || h[NANOS_OFFSET..salt_offset(len)].iter().any(|&b| b != 0) {
                return Err(FormatError::Reserved);
            }
            (EntryKind::File, None)
        } else {
            let kind = EntryKind::from_id(h[KIND_OFFSET])?;
            if h[RESERVED_V2].iter().any(|&b| b != 0) {
                return Err(FormatError::Reserved);
            }
            let seconds = i64::from_le_bytes(le_u64(h, SECONDS_OFFSET).to_le_bytes());
            (kind, decode_mtime(le_u32(h, NANOS_OFFSET), seconds)?)
        };
        if let Some(n) = plaintext_len {
            Layout::new(len, chunk_size, n)?;
        }
        if kind != EntryKind::File {
            check_link_len(kind, plaintext_len)?;
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&h[salt_offset(len)..kdf_offset(len)]);
        let key_source =
            decode_key_source(h[KDF_ID_OFFSET], &h[kdf_offset(len)..key_check_offset(len)])?;
        let mut key_check = [0u8; KEY_CHECK_LEN];
        key_check.copy_from_slice(&h[key_check_offset(len)..mac_offset(len)]);
        Ok(Header {
            version,
            cipher,
            chunk_size,
            plaintext_len,
            mode,
            kind,
            mtime,
            salt,
            key_source,
            key_check,
            bytes,
            len,
        })
    }

    /// Length of the encoded header: [`HEADER_LEN_V1`] or [`HEADER_LEN_V2`].
    /// Chunk 0 starts at this offset.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The encoded header, exactly as it is on disk ([`Header::len`] bytes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The layout of this file's chunks for a payload of `plaintext_len`
    /// bytes (the stated length, or one found from the file length).
    ///
    /// # Errors
    /// [`FormatError::LengthTooLarge`] when the file would not fit in `u64`.
    pub fn layout(&self, plaintext_len: u64) -> Result<Layout, FormatError> {
        Layout::new(self.len, self.chunk_size, plaintext_len)
    }

    /// The writer's choices recorded in this header.
    pub fn params(&self) -> HeaderParams {
        HeaderParams {
            cipher: self.cipher,
            chunk_size: self.chunk_size,
            plaintext_len: self.plaintext_len,
            mode: self.mode,
            kind: self.kind,
            mtime: self.mtime,
        }
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
        let mac_at = mac_offset(self.len);
        hmac::verify(
            &keys.mac_key,
            &self.bytes[..mac_at],
            &self.bytes[mac_at..self.len],
        )
        .map_err(|_| FormatError::HeaderModified)?;
        Ok(self.chunk_cipher(&keys.payload_key))
    }

    /// The STREAM cipher of this file's chunks: the header bytes are the
    /// associated data of every chunk.
    fn chunk_cipher(&self, payload_key: &[u8; KEY_LEN]) -> ChunkCipher {
        ChunkCipher::new(
            self.cipher,
            payload_key,
            NonceScheme::Stream,
            self.as_bytes(),
            self.chunk_size,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> HeaderParams {
        HeaderParams {
            cipher: Cipher::Aes256Gcm,
            chunk_size: DEFAULT_CHUNK_SIZE,
            plaintext_len: Some(100),
            mode: 0o644,
            kind: EntryKind::File,
            mtime: Some(Mtime {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
        }
    }

    fn key() -> MasterKey {
        MasterKey::from_key_bytes([3; KEY_LEN])
    }

    fn sealed(p: &HeaderParams) -> Vec<u8> {
        seal_header(&key(), p, [1; SALT_LEN])
            .unwrap()
            .0
            .as_bytes()
            .to_vec()
    }

    fn with(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
        put(&mut bytes, at, value);
        bytes
    }

    #[test]
    fn a_sealed_header_parses_back_to_its_params() {
        for kind in [EntryKind::File, EntryKind::Symlink, EntryKind::HardLink] {
            for mtime in [
                None,
                Some(Mtime {
                    seconds: -5,
                    nanos: 999_999_999,
                }),
            ] {
                let p = HeaderParams {
                    kind,
                    mtime,
                    ..params()
                };
                let (header, _) = seal_header(&key(), &p, [1; SALT_LEN]).unwrap();
                assert_eq!(header.version, VERSION);
                assert_eq!(header.len(), HEADER_LEN_V2);
                assert_eq!(header.params(), p);
                let mut longer = header.as_bytes().to_vec();
                longer.extend_from_slice(b"chunk bytes follow");
                assert_eq!(Header::parse(&longer).unwrap(), header);
                assert!(header.authenticate(&key()).is_ok());
            }
        }
    }

    #[test]
    fn seal_header_drops_file_type_bits_and_refuses_bad_params() {
        let p = HeaderParams {
            mode: 0o100_755,
            ..params()
        };
        assert_eq!(
            seal_header(&key(), &p, [0; SALT_LEN]).unwrap().0.mode,
            0o755
        );
        let bad = [
            HeaderParams {
                mtime: Some(Mtime {
                    seconds: 0,
                    nanos: NANOS_PER_SECOND,
                }),
                ..params()
            },
            HeaderParams {
                plaintext_len: Some(u64::MAX),
                ..params()
            },
            HeaderParams {
                chunk_size: MIN_CHUNK_SIZE - 1,
                ..params()
            },
            HeaderParams {
                kind: EntryKind::Symlink,
                plaintext_len: None,
                ..params()
            },
        ];
        for p in bad {
            assert!(seal_header(&key(), &p, [0; SALT_LEN]).is_err(), "{p:?}");
        }
    }

    #[test]
    fn encoded_len_needs_the_magic_and_a_known_version() {
        let v2 = sealed(&params());
        assert_eq!(
            Header::encoded_len(&v2[..MIN_HEADER_PREFIX]),
            Ok(HEADER_LEN_V2)
        );
        let v1 = with(v2.clone(), VERSION_OFFSET, &[VERSION_1]);
        assert_eq!(
            Header::encoded_len(&v1[..MIN_HEADER_PREFIX]),
            Ok(HEADER_LEN_V1)
        );
        for short in 0..MIN_HEADER_PREFIX {
            assert_eq!(
                Header::encoded_len(&v2[..short]),
                Err(FormatError::ShortHeader { len: short })
            );
        }
        assert_eq!(
            Header::encoded_len(b"PK\x03\x04 zip"),
            Err(FormatError::NotCryptstream)
        );
        let v3 = with(v2.clone(), VERSION_OFFSET, &[3]);
        assert_eq!(Header::parse(&v3), Err(FormatError::UnsupportedVersion(3)));
        assert_eq!(
            Header::parse(&v2[..HEADER_LEN_V2 - 1]),
            Err(FormatError::ShortHeader {
                len: HEADER_LEN_V2 - 1
            })
        );
    }

    #[test]
    fn parse_rejects_each_bad_field() {
        let good = sealed(&params());
        let cases: Vec<(Vec<u8>, FormatError)> = vec![
            (
                with(good.clone(), CIPHER_OFFSET, &[3]),
                FormatError::UnknownCipher(3),
            ),
            (
                with(good.clone(), KDF_ID_OFFSET, &[0]),
                FormatError::UnknownKdf(0),
            ),
            (
                with(good.clone(), KIND_OFFSET, &[0]),
                FormatError::UnknownEntryKind(0),
            ),
            (
                with(good.clone(), KIND_OFFSET, &[4]),
                FormatError::UnknownEntryKind(4),
            ),
            (
                with(
                    good.clone(),
                    CHUNK_SIZE_OFFSET,
                    &(MAX_CHUNK_SIZE + 1).to_le_bytes(),
                ),
                FormatError::ChunkSize(MAX_CHUNK_SIZE + 1),
            ),
            (
                with(good.clone(), MODE_OFFSET, &0o10000u32.to_le_bytes()),
                FormatError::Mode(0o10000),
            ),
            (
                with(good.clone(), NANOS_OFFSET, &NANOS_PER_SECOND.to_le_bytes()),
                FormatError::Mtime {
                    seconds: 1_700_000_000,
                    nanos: NANOS_PER_SECOND,
                },
            ),
            (
                with(good.clone(), NANOS_OFFSET, &NO_MTIME.to_le_bytes()),
                FormatError::Mtime {
                    seconds: 1_700_000_000,
                    nanos: NO_MTIME,
                },
            ),
            (
                with(good.clone(), LENGTH_OFFSET, &(u64::MAX - 1).to_le_bytes()),
                FormatError::LengthTooLarge,
            ),
            (
                with(good.clone(), LENGTH_OFFSET, &(u64::MAX - 200).to_le_bytes()),
                FormatError::LengthTooLarge,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Header::parse(&bytes), Err(expected));
        }
        for at in RESERVED_V2
            .chain(kdf_offset(HEADER_LEN_V2) + KEY_ID_LEN..key_check_offset(HEADER_LEN_V2))
        {
            let bad = with(good.clone(), at, &[1]);
            assert_eq!(Header::parse(&bad), Err(FormatError::Reserved), "byte {at}");
        }
        // The "no mtime" marker with zero seconds is valid.
        let none = with(
            with(good.clone(), NANOS_OFFSET, &NO_MTIME.to_le_bytes()),
            SECONDS_OFFSET,
            &[0; 8],
        );
        assert_eq!(Header::parse(&none).unwrap().mtime, None);
    }

    #[test]
    fn version_1_headers_have_their_own_reserved_bytes() {
        // A version 1 header: the v2 prefix fields, then the key block at 32.
        let v2 = sealed(&HeaderParams {
            mtime: None,
            ..params()
        });
        let mut v1 = v2[..NANOS_OFFSET].to_vec();
        v1[VERSION_OFFSET] = VERSION_1;
        v1[KIND_OFFSET] = 0;
        v1.extend_from_slice(&[0; 4]);
        v1.extend_from_slice(&v2[salt_offset(HEADER_LEN_V2)..]);
        let header = Header::parse(&v1).unwrap();
        assert_eq!((header.version, header.len()), (VERSION_1, HEADER_LEN_V1));
        assert_eq!((header.kind, header.mtime), (EntryKind::File, None));
        for at in [KIND_OFFSET, NANOS_OFFSET, NANOS_OFFSET + 3] {
            let bad = with(v1.clone(), at, &[1]);
            assert_eq!(Header::parse(&bad), Err(FormatError::Reserved), "byte {at}");
        }
        assert!(Header::parse(&v1[..HEADER_LEN_V1 - 1]).is_err());
    }

    #[test]
    fn link_entries_need_a_payload_length_a_reader_can_hold() {
        for kind in [EntryKind::Symlink, EntryKind::HardLink] {
            let good = sealed(&HeaderParams {
                kind,
                plaintext_len: Some(1),
                ..params()
            });
            let max = MAX_LINK_TARGET_LEN as u64;
            let ok = with(good.clone(), LENGTH_OFFSET, &max.to_le_bytes());
            assert_eq!(Header::parse(&ok).unwrap().plaintext_len, Some(max));
            for len in [Some(0), Some(max + 1), None] {
                let bad = with(
                    good.clone(),
                    LENGTH_OFFSET,
                    &len.unwrap_or(UNKNOWN_LEN).to_le_bytes(),
                );
                assert_eq!(
                    Header::parse(&bad),
                    Err(FormatError::LinkLength {
                        kind: kind.name(),
                        len
                    })
                );
            }
        }
    }

    #[test]
    fn a_buffer_sealed_to_a_vec_opens_to_its_plaintext_and_length() {
        use std::io::Read;
        let plain: Vec<u8> = (0..3 * MIN_CHUNK_SIZE + 7).map(|i| i as u8).collect();
        let small = HeaderParams {
            chunk_size: MIN_CHUNK_SIZE,
            plaintext_len: None,
            ..params()
        };
        let (header, bytes) = seal_to_vec(&key(), &small, [1; SALT_LEN], &plain).unwrap();
        let parsed = Header::parse(&bytes).unwrap();
        assert_eq!(parsed.plaintext_len, Some(plain.len() as u64));
        assert_eq!(parsed.as_bytes(), header.as_bytes());
        let cipher = parsed.authenticate(&key()).unwrap();
        let mut back = Vec::new();
        crate::OpeningReader::new(&bytes[parsed.len()..], cipher, parsed.plaintext_len)
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn hostile_argon2_costs_are_refused_by_parse() {
        let source = KeySource::Passphrase {
            salt: [2; ARGON2_SALT_LEN],
            params: KdfParams {
                m_kib: 64,
                t: 1,
                p: 1,
            },
        };
        let key = MasterKey::from_parts(zeroize::Zeroizing::new([4; KEY_LEN]), source);
        let (header, _) = seal_header(&key, &params(), [1; SALT_LEN]).unwrap();
        let good = header.as_bytes().to_vec();
        let costs = kdf_offset(HEADER_LEN_V2) + ARGON2_SALT_LEN;
        let gib4 = 4 * 1024 * 1024u32;
        for (m, t, p) in [
            (gib4, 64u32, 64u32),
            (gib4, 1, 1),
            (KdfParams::MAX_MEMORY_KIB + 1, 1, 1),
            (KdfParams::MAX_MEMORY_KIB, 5, 1),
            (64, 11, 1),
            (1024, 1, 17),
            (64, 1, 9),
            (7, 1, 1),
            (64, 0, 1),
            (64, 1, 0),
        ] {
            let mut bad = good.clone();
            put(&mut bad, costs, &m.to_le_bytes());
            put(&mut bad, costs + 4, &t.to_le_bytes());
            put(&mut bad, costs + 8, &p.to_le_bytes());
            assert_eq!(
                Header::parse(&bad),
                Err(FormatError::KdfParams { m_kib: m, t, p }),
                "{m} KiB {t} passes {p} lanes"
            );
        }
        let mut edge = good.clone();
        put(&mut edge, costs, &KdfParams::MAX_MEMORY_KIB.to_le_bytes());
        put(&mut edge, costs + 4, &4u32.to_le_bytes());
        put(&mut edge, costs + 8, &16u32.to_le_bytes());
        assert!(
            Header::parse(&edge).is_ok(),
            "1 GiB x 4 passes x 16 lanes is accepted"
        );
        assert!(KdfParams::DEFAULT.check().is_ok());
    }
}
