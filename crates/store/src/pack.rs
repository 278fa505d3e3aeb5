//! Pack files: many chunk blobs in one object, with an encrypted index at
//! the end so that the pack alone says what it holds.
//!
//! ```text
//! "CSTPACK1"                                   8 bytes
//! chunk blob, chunk blob, ...                  (see crate::blob)
//! index blob                                   sealed, AAD = "cryptstream pack index " || pack name
//! index blob length                            u32 little-endian
//! "CSTPIDX2"                                   8 bytes
//! ```
//!
//! The index blob's plaintext is one zstd frame (with its content size)
//! of the index: a `u32` count followed by one 49-byte entry per chunk:
//! id (32), offset of its blob in the pack (u64), blob length (u32),
//! plaintext length (u32), compression byte. Packs of the first layout
//! end in `"CSTPIDX1"` and their index blob holds the index as is.

use std::io::Write;

use crate::backend::{Backend, BackendError, ObjectWriter};
use crate::blob::{self, BLOB_OVERHEAD};
use crate::keys::StoreKeys;
use crate::StoreError;

/// First bytes of a pack.
pub const PACK_MAGIC: &[u8; 8] = b"CSTPACK1";
/// Last bytes of a pack: its index blob holds the index compressed.
pub const INDEX_MAGIC: &[u8; 8] = b"CSTPIDX2";
/// Last bytes of a pack of the first layout: the index as is.
pub const INDEX_MAGIC_V1: &[u8; 8] = b"CSTPIDX1";
/// zstd level of pack indexes.
const INDEX_ZSTD_LEVEL: i32 = 3;
/// Bytes of one index entry.
pub const INDEX_ENTRY_LEN: usize = 49;
/// Most chunks in one pack (bounds the index a reader accepts).
pub const MAX_PACK_CHUNKS: usize = 65_536;
/// Longest index plaintext (decompressed) a reader accepts.
const MAX_INDEX_LEN: usize = 4 + MAX_PACK_CHUNKS * INDEX_ENTRY_LEN;
/// Largest index blob a reader accepts (zstd adds at most a few bytes per
/// 128 KiB block to what it cannot shrink).
const MAX_INDEX_BLOB: usize = MAX_INDEX_LEN + MAX_INDEX_LEN / 1024 + 1024 + BLOB_OVERHEAD;
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

/// Bytes of blobs a [`PackWriter`] gathers before it writes them: a
/// pack of small files' chunks (1-2 KiB each sealed) is written in a few
/// hundred calls, not one a chunk (DECISIONS 472).
const WRITE_BUFFER: usize = 256 * 1024;

/// A pack being written.
pub struct PackWriter {
    name: String,
    writer: Box<dyn ObjectWriter>,
    /// Blobs added and not yet written.
    buffer: Vec<u8>,
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
            buffer: Vec::new(),
            entries: Vec::new(),
        })
    }

    /// The pack's object name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes added so far (written or still buffered).
    pub fn len(&self) -> u64 {
        self.writer.written() + self.buffer.len() as u64
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
        if self.buffer.len() + blob.len() > WRITE_BUFFER {
            self.write_buffer()?;
        }
        if blob.len() >= WRITE_BUFFER {
            self.writer.write_all(blob).map_err(|e| io(&self.name, e))?;
        } else {
            self.buffer.extend_from_slice(blob);
        }
        Ok(self.record(id, offset, blob.len(), raw_len, compression))
    }

    /// As [`PackWriter::add`], handing a blob of [`WRITE_BUFFER`] or more
    /// to the object writer, which may keep it rather than copy it
    /// ([`ObjectWriter::write_owned`]); a smaller one is gathered as
    /// `add` does.
    ///
    /// # Errors
    /// Write failures.
    pub fn add_owned(
        &mut self,
        id: [u8; 32],
        raw_len: u32,
        compression: u8,
        blob: Vec<u8>,
    ) -> Result<PackEntry, StoreError> {
        if blob.len() < WRITE_BUFFER {
            return self.add(id, raw_len, compression, &blob);
        }
        self.write_buffer()?;
        let offset = self.len();
        let len = blob.len();
        self.writer
            .write_owned(blob)
            .map_err(|e| io(&self.name, e))?;
        Ok(self.record(id, offset, len, raw_len, compression))
    }

    /// Records the entry of a blob of `len` bytes written at `offset`.
    fn record(
        &mut self,
        id: [u8; 32],
        offset: u64,
        len: usize,
        raw_len: u32,
        compression: u8,
    ) -> PackEntry {
        let entry = PackEntry {
            id,
            offset,
            stored_len: u32::try_from(len).expect("a blob is below 4 GiB"),
            raw_len,
            compression,
        };
        self.entries.push(entry);
        entry
    }

    /// Writes what is buffered.
    fn write_buffer(&mut self) -> Result<(), StoreError> {
        if !self.buffer.is_empty() {
            self.writer
                .write_all(&self.buffer)
                .map_err(|e| io(&self.name, e))?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Writes the index and makes the pack durable. Returns its name, size
    /// and entries.
    ///
    /// # Errors
    /// Write or commit failures.
    pub fn finish(self, keys: &StoreKeys) -> Result<(String, u64, Vec<PackEntry>), StoreError> {
        let sealed = self.seal(keys)?;
        sealed.writer.commit()?;
        Ok((sealed.name, sealed.size, sealed.entries))
    }

    /// Writes the index: what is left is to make the pack durable
    /// ([`SealedPack::writer`]'s commit), which may run on a thread of its
    /// own while the next pack fills.
    ///
    /// # Errors
    /// Write failures.
    pub fn seal(mut self, keys: &StoreKeys) -> Result<SealedPack, StoreError> {
        self.write_buffer()?;
        let name = self.name.clone();
        let index = compress_index(&encode_index(&self.entries)).map_err(|e| io(&name, e))?;
        let sealed = blob::seal(keys, &index_aad(&self.name), &index)?;
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
        Ok(SealedPack {
            name,
            size,
            entries: self.entries,
            writer: self.writer,
        })
    }
}

/// A pack whose every byte is written, not yet durable.
pub struct SealedPack {
    /// Its object name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks.
    pub entries: Vec<PackEntry>,
    /// Its object, to commit.
    pub writer: Box<dyn ObjectWriter>,
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

/// The plaintext of an index blob: one zstd frame, with its content
/// size, of the index `plain`.
///
/// # Errors
/// zstd could not make its context.
pub fn compress_index(plain: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(plain, INDEX_ZSTD_LEVEL)
}

/// The index in the plaintext of an index blob of the second layout: its
/// frame must state its content size, at most [`MAX_INDEX_LEN`], and
/// decompress to exactly that (so nothing larger is ever allocated).
fn decompress_index(frame: &[u8]) -> Result<Vec<u8>, String> {
    let len = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(len)) => len,
        Ok(None) => return Err("index frame does not state its size".into()),
        Err(_) => return Err("index frame is malformed".into()),
    };
    if len > MAX_INDEX_LEN as u64 {
        return Err(format!(
            "index would decompress to {len} bytes, more than {MAX_INDEX_LEN}"
        ));
    }
    let plain = zstd::bulk::decompress(frame, len as usize)
        .map_err(|e| format!("index does not decompress: {e}"))?;
    if plain.len() as u64 != len {
        return Err("index frame is shorter than it states".into());
    }
    Ok(plain)
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
    let compressed = match &trailer[4..] {
        m if m == INDEX_MAGIC => true,
        m if m == INDEX_MAGIC_V1 => false,
        _ => return Err(damaged("no index at its end")),
    };
    let len = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_INDEX_BLOB || (len + TRAILER_LEN + PACK_MAGIC.len()) as u64 > size {
        return Err(damaged("index length out of range"));
    }
    let mut sealed = vec![0u8; len];
    backend.get_range(name, size - (TRAILER_LEN + len) as u64, &mut sealed)?;
    let plain = blob::open_in_place(keys, &index_aad(name), &mut sealed)
        .map_err(|_| damaged("index does not authenticate"))?;
    if compressed {
        let plain = decompress_index(plain).map_err(|why| damaged(&why))?;
        decode_index(&plain)
    } else {
        decode_index(plain)
    }
    .ok_or_else(|| damaged("index is malformed"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalDir;

    fn entry(offset: u64) -> PackEntry {
        PackEntry {
            id: [offset as u8; 32],
            offset,
            stored_len: 40,
            raw_len: 8,
            compression: blob::COMPRESSION_NONE,
        }
    }

    /// Writes pack object `name` holding `index` under `trailer` (the
    /// chunk blobs are not needed to read an index).
    fn write_pack(
        backend: &LocalDir,
        keys: &StoreKeys,
        name: &str,
        index: &[u8],
        trailer: &[u8; 8],
    ) {
        let sealed = blob::seal(keys, &index_aad(name), index).unwrap();
        let mut object = backend.create(name).unwrap();
        object.write_all(PACK_MAGIC).unwrap();
        object.write_all(&[0; 80]).unwrap();
        object.write_all(&sealed).unwrap();
        object
            .write_all(&(sealed.len() as u32).to_le_bytes())
            .unwrap();
        object.write_all(trailer).unwrap();
        object.commit().unwrap();
    }

    #[test]
    fn a_pack_index_round_trips_compressed() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[3; 32]);
        let mut pack = PackWriter::create(&backend).unwrap();
        let blob = vec![0u8; 48];
        pack.add([1; 32], 16, blob::COMPRESSION_NONE, &blob)
            .unwrap();
        pack.add([2; 32], 16, blob::COMPRESSION_NONE, &blob)
            .unwrap();
        let (name, size, entries) = pack.finish(&keys).unwrap();
        assert_eq!(read_index(&backend, &keys, &name, size).unwrap(), entries);
        let mut trailer = [0u8; 8];
        backend.get_range(&name, size - 8, &mut trailer).unwrap();
        assert_eq!(&trailer, INDEX_MAGIC);
    }

    #[test]
    fn a_pack_of_the_first_layout_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[3; 32]);
        let entries = vec![entry(8), entry(48)];
        let name = new_pack_name().unwrap();
        write_pack(
            &backend,
            &keys,
            &name,
            &encode_index(&entries),
            INDEX_MAGIC_V1,
        );
        let size = backend.size(&name).unwrap().unwrap();
        assert_eq!(read_index(&backend, &keys, &name, size).unwrap(), entries);
    }

    #[test]
    fn an_index_that_would_decompress_past_its_bound_is_refused_naming_the_pack() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[3; 32]);
        let name = new_pack_name().unwrap();
        // A few KiB that state (and hold) one byte more than any index.
        let bomb = compress_index(&vec![0u8; MAX_INDEX_LEN + 1]).unwrap();
        write_pack(&backend, &keys, &name, &bomb, INDEX_MAGIC);
        let size = backend.size(&name).unwrap().unwrap();
        let err = read_index(&backend, &keys, &name, size)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&name), "{err}");
        assert!(err.contains("would decompress to"), "{err}");
    }
}
