//! Pack files: many chunk blobs in one object, with an encrypted index at
//! the end so that the pack alone says what it holds.
//!
//! ```text
//! "CSTPACK1"                                   8 bytes
//! chunk blob, chunk blob, ...                  (see crate::blob)
//! index blob                                   sealed, AAD = "cryptstream pack index " || pack name
//! index blob length                            u32 little-endian
//! "CSTPIDX1"                                   8 bytes
//! ```
//!
//! The index plaintext is a `u32` count followed by one 49-byte entry per
//! chunk: id (32), offset of its blob in the pack (u64), blob length (u32),
//! plaintext length (u32), compression byte.

use std::io::Write;

use crate::backend::{Backend, BackendError, ObjectWriter};
use crate::blob::{self, BLOB_OVERHEAD};
use crate::keys::StoreKeys;
use crate::StoreError;

/// First bytes of a pack.
pub const PACK_MAGIC: &[u8; 8] = b"CSTPACK1";
/// Last bytes of a pack.
pub const INDEX_MAGIC: &[u8; 8] = b"CSTPIDX1";
/// Bytes of one index entry.
pub const INDEX_ENTRY_LEN: usize = 49;
/// Most chunks in one pack (bounds the index a reader accepts).
pub const MAX_PACK_CHUNKS: usize = 65_536;
/// Largest index blob a reader accepts.
const MAX_INDEX_BLOB: usize = 4 + MAX_PACK_CHUNKS * INDEX_ENTRY_LEN + BLOB_OVERHEAD;
/// Trailer: index length and magic.
const TRAILER_LEN: usize = 4 + 8;

/// Where a chunk lives in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk id.
    pub id: [u8; 32],
    /// Offset of its blob in the pack.
    pub offset: u64,
    /// Length of its blob.
    pub stored_len: u32,
    /// Length of its plaintext.
    pub raw_len: u32,
    /// Its compression byte.
    pub compression: u8,
}

/// The object name of a new pack: `packs/XX/<32 hex digits>`.
///
/// # Errors
/// Random source failure.
pub fn new_pack_name() -> Result<String, StoreError> {
    let mut id = [0u8; 16];
    cryptstream_format::fill_random(&mut id)?;
    let hex = hex::encode(id);
    Ok(format!("packs/{}/{hex}", &hex[..2]))
}

fn index_aad(name: &str) -> Vec<u8> {
    let mut aad = b"cryptstream pack index ".to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// A pack being written.
pub struct PackWriter {
    name: String,
    writer: Box<dyn ObjectWriter>,
    entries: Vec<PackEntry>,
}

impl PackWriter {
    /// Starts a new pack.
    ///
    /// # Errors
    /// Backend failures.
    pub fn create(backend: &dyn Backend) -> Result<PackWriter, StoreError> {
        let name = new_pack_name()?;
        let mut writer = backend.create(&name)?;
        writer.write_all(PACK_MAGIC).map_err(|e| io(&name, e))?;
        Ok(PackWriter {
            name,
            writer,
            entries: Vec::new(),
        })
    }

    /// The pack's object name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.writer.written()
    }

    /// Chunks added so far.
    pub fn chunks(&self) -> usize {
        self.entries.len()
    }

    /// Whether no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether it is full (by bytes or by count).
    pub fn is_full(&self, target: u64) -> bool {
        self.len() >= target || self.entries.len() >= MAX_PACK_CHUNKS
    }

    /// Appends a sealed chunk blob.
    ///
    /// # Errors
    /// Write failures.
    pub fn add(
        &mut self,
        id: [u8; 32],
        raw_len: u32,
        compression: u8,
        blob: &[u8],
    ) -> Result<PackEntry, StoreError> {
        let offset = self.len();
        self.writer.write_all(blob).map_err(|e| io(&self.name, e))?;
        let entry = PackEntry {
            id,
            offset,
            stored_len: u32::try_from(blob.len()).expect("a blob is below 4 GiB"),
            raw_len,
            compression,
        };
        self.entries.push(entry);
        Ok(entry)
    }

    /// Writes the index and makes the pack durable. Returns its name, size
    /// and entries.
    ///
    /// # Errors
    /// Write or commit failures.
    pub fn finish(mut self, keys: &StoreKeys) -> Result<(String, u64, Vec<PackEntry>), StoreError> {
        let index = encode_index(&self.entries);
        let sealed = blob::seal(keys, &index_aad(&self.name), &index)?;
        let name = self.name.clone();
        self.writer.write_all(&sealed).map_err(|e| io(&name, e))?;
        self.writer
            .write_all(
                &u32::try_from(sealed.len())
                    .expect("index fits")
                    .to_le_bytes(),
            )
            .map_err(|e| io(&name, e))?;
        self.writer
            .write_all(INDEX_MAGIC)
            .map_err(|e| io(&name, e))?;
        let size = self.writer.written();
        self.writer.commit()?;
        Ok((name, size, self.entries))
    }
}

fn io(name: &str, source: std::io::Error) -> StoreError {
    StoreError::Backend(BackendError::Io {
        name: name.to_owned(),
        source,
    })
}

/// Encodes the index plaintext.
pub fn encode_index(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * INDEX_ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.id);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.stored_len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.push(e.compression);
    }
    out
}

/// Reads and authenticates the index of pack `name` (`size` bytes).
///
/// # Errors
/// [`StoreError::Damaged`] for a pack whose trailer or index is wrong.
pub fn read_index(
    backend: &dyn Backend,
    keys: &StoreKeys,
    name: &str,
    size: u64,
) -> Result<Vec<PackEntry>, StoreError> {
    let damaged = |why: &str| StoreError::Damaged(format!("pack {name}: {why}"));
    if size < (PACK_MAGIC.len() + TRAILER_LEN + BLOB_OVERHEAD) as u64 {
        return Err(damaged("too short to be a pack"));
    }
    let mut trailer = [0u8; TRAILER_LEN];
    backend.get_range(name, size - TRAILER_LEN as u64, &mut trailer)?;
    if &trailer[4..] != INDEX_MAGIC {
        return Err(damaged("no index at its end"));
    }
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_INDEX_BLOB || (len + TRAILER_LEN + PACK_MAGIC.len()) as u64 > size {
        return Err(damaged("index length out of range"));
    }
    let mut sealed = vec![0u8; len];
    backend.get_range(name, size - (TRAILER_LEN + len) as u64, &mut sealed)?;
    let plain = blob::open_in_place(keys, &index_aad(name), &mut sealed)
        .map_err(|_| damaged("index does not authenticate"))?;
    decode_index(plain).ok_or_else(|| damaged("index is malformed"))
}

/// Decodes an index plaintext.
pub fn decode_index(plain: &[u8]) -> Option<Vec<PackEntry>> {
    let count = u32::from_le_bytes(plain.get(..4)?.try_into().ok()?) as usize;
    if plain.len() != 4 + count * INDEX_ENTRY_LEN {
        return None;
    }
    Some(
        plain[4..]
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| PackEntry {
                id: e[..32].try_into().expect("32 bytes"),
                offset: u64::from_le_bytes(e[32..40].try_into().expect("8 bytes")),
                stored_len: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
                raw_len: u32::from_le_bytes(e[44..48].try_into().expect("4 bytes")),
                compression: e[48],
            })
            .collect(),
    )
}
