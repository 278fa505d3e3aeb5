//! File records, their authenticator, and manifests: the encrypted
//! objects that hold the records of the files a put completed, so that
//! `store reindex` can rebuild the registry from the data area alone.
//!
//! A manifest is a cryptstream container (format version 2, see
//! docs/FORMAT.md) sealed under the store's manifest key, named
//! `manifests/XX/<32 hex digits>`. Its plaintext is `"CSTMAN02"` then a
//! zstd stream ([`crate::compressed`]) of the body:
//!
//! ```text
//! file count u64
//! per file: uid u64 | kind u8 | mode u32 | mtime seconds i64 | mtime nanos u32 | size u64
//!           | created i64 | chunk count u64 | name length u32 | name
//!           | link length u32 | link target | chunk count x (id [32] | length u32)
//! ```
//! (all integers little-endian). A record's authenticator ([`FileMac`])
//! is recomputed from it as it is read. Manifests of the first layout
//! (`"CSTMAN01"`, the same body uncompressed, with each record's mac
//! after its chunk count) are still read.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use cryptstream_format::{
    seal_header, Cipher, EntryKind, Header, HeaderParams, OpeningReader, SealingWriter,
    MAX_HEADER_LEN, SALT_LEN,
};

use crate::backend::{Backend, BackendError};
use crate::compressed::{Body, BoundedDecoder, CompressingWriter};
use crate::keys::StoreKeys;
use crate::StoreError;

/// First bytes of a manifest's plaintext: a compressed body.
pub const MANIFEST_MAGIC: &[u8; 8] = b"CSTMAN02";
/// First bytes of a manifest of the first layout: the body as is, each
/// record with its mac.
pub const MANIFEST_MAGIC_V1: &[u8; 8] = b"CSTMAN01";
/// Plaintext bytes per container chunk of a manifest.
const MANIFEST_CHUNK_SIZE: u32 = 64 * 1024;
/// Longest name or link target a manifest may hold.
pub const MAX_NAME_LEN: usize = 64 * 1024;
/// Bytes fetched per read of a manifest object.
const READ_PIECE: usize = 1024 * 1024;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: its contents are its chunks.
    File,
    /// A symbolic link: `link` is its target.
    Symlink,
    /// A directory (no content; its mode and mtime are restored).
    Dir,
}

impl Kind {
    /// The byte stored for this kind.
    pub fn id(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Symlink => 2,
            Kind::Dir => 3,
        }
    }

    /// The kind of byte `id`.
    pub fn from_id(id: u8) -> Option<Kind> {
        match id {
            1 => Some(Kind::File),
            2 => Some(Kind::Symlink),
            3 => Some(Kind::Dir),
            _ => None,
        }
    }

    /// Its name for people.
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Dir => "dir",
        }
    }
}

/// Everything recorded about a stored entry except its chunk list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// Its public id.
    pub uid: u64,
    /// Its name in the store (`/`-separated, relative).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Content length.
    pub size: u64,
    /// Link target (symlinks only).
    pub link: Vec<u8>,
    /// When it was stored (Unix seconds).
    pub created: i64,
    /// Number of chunks.
    pub chunks: u64,
    /// The authenticator of the record and its chunk list ([`FileMac`]).
    pub mac: [u8; 32],
}

/// The uid as people see it: 16 hex digits.
pub fn format_uid(uid: u64) -> String {
    format!("{uid:016x}")
}

/// The whole-file hash, which is also the authenticator of a record: keyed
/// BLAKE3 (file-hash key) over the record's fields, then every chunk's id
/// and length in order, then the chunk count. Chunk ids are keyed BLAKE3
/// of the chunk plaintexts, so this is a two-level hash tree over the
/// file's bytes, and without the key nobody can make a record and chunk
/// list that pass: the registry, which is not encrypted, cannot be
/// altered to return other bytes.
pub struct FileMac {
    hasher: blake3::Hasher,
    chunks: u64,
}

impl FileMac {
    /// Starts the authenticator of `record` (its `chunks` and `mac` are
    /// not used).
    pub fn new(keys: &StoreKeys, record: &FileRecord) -> FileMac {
        let mut hasher = keys.file_hasher();
        hasher.update(b"cryptstream store file v1");
        hasher.update(&record.uid.to_le_bytes());
        hasher.update(&[record.kind.id()]);
        hasher.update(&record.mode.to_le_bytes());
        hasher.update(&record.mtime.0.to_le_bytes());
        hasher.update(&record.mtime.1.to_le_bytes());
        hasher.update(&record.size.to_le_bytes());
        hasher.update(&(record.name.len() as u32).to_le_bytes());
        hasher.update(record.name.as_bytes());
        hasher.update(&(record.link.len() as u32).to_le_bytes());
        hasher.update(&record.link);
        FileMac { hasher, chunks: 0 }
    }

    /// Adds the next chunk.
    pub fn add_chunk(&mut self, id: &[u8; 32], len: u32) {
        self.hasher.update(id);
        self.hasher.update(&len.to_le_bytes());
        self.chunks += 1;
    }

    /// The authenticator.
    pub fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.chunks.to_le_bytes());
        *self.hasher.finalize().as_bytes()
    }
}

/// The object name of a new manifest.
///
/// # Errors
/// Random source failure.
pub fn new_manifest_name() -> Result<String, StoreError> {
    let mut id = [0u8; 16];
    cryptstream_format::fill_random(&mut id)?;
    let hex = hex::encode(id);
    Ok(format!("manifests/{}/{hex}", &hex[..2]))
}

pub(crate) fn backend_io(name: &str, source: io::Error) -> StoreError {
    StoreError::Backend(BackendError::Io {
        name: name.to_owned(),
        source,
    })
}

/// Writes a manifest of `count` files: `fill` is given a
/// [`ManifestWriter`] and must add exactly that many records, each followed
/// by its chunks.
///
/// # Errors
/// Backend, format or `fill` failures; nothing is left on failure.
pub fn write_manifest(
    backend: &dyn Backend,
    keys: &StoreKeys,
    name: &str,
    count: u64,
    fill: impl FnOnce(&mut ManifestWriter<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut salt = [0u8; SALT_LEN];
    cryptstream_format::fill_random(&mut salt)?;
    let params = HeaderParams {
        cipher: Cipher::Aes256Gcm,
        chunk_size: MANIFEST_CHUNK_SIZE,
        plaintext_len: None,
        mode: 0,
        kind: EntryKind::File,
        mtime: None,
    };
    let (header, cipher) = seal_header(keys.manifest_key(), &params, salt)?;
    let mut object = backend.create(name)?;
    object
        .write_all(header.as_bytes())
        .map_err(|e| backend_io(name, e))?;
    {
        let mut sealing = SealingWriter::new(io::BufWriter::new(&mut object), cipher);
        sealing
            .write_all(MANIFEST_MAGIC)
            .map_err(|e| backend_io(name, e))?;
        let out = CompressingWriter::new(sealing).map_err(|e| backend_io(name, e))?;
        let mut writer = ManifestWriter { out };
        writer
            .put(&count.to_le_bytes())
            .map_err(|e| backend_io(name, e))?;
        fill(&mut writer)?;
        let sealing = writer.out.finish().map_err(|e| backend_io(name, e))?;
        let (mut buffered, _) = sealing.finish().map_err(|e| backend_io(name, e))?;
        buffered.flush().map_err(|e| backend_io(name, e))?;
    }
    object.commit()?;
    Ok(())
}

/// Adds records to a manifest being written.
pub struct ManifestWriter<'a> {
    out: CompressingWriter<
        SealingWriter<io::BufWriter<&'a mut Box<dyn crate::backend::ObjectWriter>>>,
    >,
}

impl ManifestWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Adds a record (its `mac` is not written: a reader recomputes it);
    /// its chunks must follow.
    ///
    /// # Errors
    /// Write failures.
    pub fn record(&mut self, r: &FileRecord) -> io::Result<()> {
        write_record(&mut self.out, r, Layout::Compressed)
    }

    /// Adds the next chunk of the current record.
    ///
    /// # Errors
    /// Write failures.
    pub fn chunk(&mut self, id: &[u8; 32], len: u32) -> io::Result<()> {
        write_chunk(&mut self.out, id, len)
    }
}

/// A record's chunks in order: id and plaintext length of each.
pub type ChunkList = Vec<([u8; 32], u32)>;

/// Which layout a manifest or snapshot object has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The first: the plaintext as is (and a manifest's records carry
    /// their mac).
    Plain,
    /// The second: magic, then the body compressed.
    Compressed,
}

fn write_record(out: &mut impl Write, r: &FileRecord, layout: Layout) -> io::Result<()> {
    out.write_all(&r.uid.to_le_bytes())?;
    out.write_all(&[r.kind.id()])?;
    out.write_all(&r.mode.to_le_bytes())?;
    out.write_all(&r.mtime.0.to_le_bytes())?;
    out.write_all(&r.mtime.1.to_le_bytes())?;
    out.write_all(&r.size.to_le_bytes())?;
    out.write_all(&r.created.to_le_bytes())?;
    out.write_all(&r.chunks.to_le_bytes())?;
    if layout == Layout::Plain {
        out.write_all(&r.mac)?;
    }
    out.write_all(&(r.name.len() as u32).to_le_bytes())?;
    out.write_all(r.name.as_bytes())?;
    out.write_all(&(r.link.len() as u32).to_le_bytes())?;
    out.write_all(&r.link)
}

fn write_chunk(out: &mut impl Write, id: &[u8; 32], len: u32) -> io::Result<()> {
    out.write_all(id)?;
    out.write_all(&len.to_le_bytes())
}

/// The body of a manifest of `records` (each with its chunk list) in
/// `layout`, after the magic (test vectors; a put streams the same bytes).
pub fn body(records: &[(FileRecord, ChunkList)], layout: Layout) -> Vec<u8> {
    let mut out = (records.len() as u64).to_le_bytes().to_vec();
    for (record, chunks) in records {
        write_record(&mut out, record, layout).expect("writing to a Vec does not fail");
        for (id, len) in chunks {
            write_chunk(&mut out, id, *len).expect("writing to a Vec does not fail");
        }
    }
    out
}

/// The plaintext of the sealed container object `name` (`size` bytes;
/// a manifest or a snapshot, `kind` in messages) under `key`, read in
/// pieces: its header is parsed and authenticated first.
///
/// # Errors
/// The backend, or [`StoreError::Damaged`] naming the object.
pub(crate) fn open_sealed<'a>(
    backend: &'a dyn Backend,
    key: &cryptstream_format::MasterKey,
    kind: &str,
    name: &'a str,
    size: u64,
) -> Result<io::BufReader<OpeningReader<ObjectReader<'a>>>, StoreError> {
    let damaged = |why: String| StoreError::Damaged(format!("{kind} {name}: {why}"));
    let mut head = vec![0u8; MAX_HEADER_LEN.min(size as usize)];
    backend.get_range(name, 0, &mut head)?;
    let header = Header::parse(&head).map_err(|e| damaged(e.to_string()))?;
    let cipher = header
        .authenticate(key)
        .map_err(|e| damaged(e.to_string()))?;
    let object = ObjectReader {
        backend,
        name,
        pos: header.len() as u64,
        size,
    };
    Ok(io::BufReader::new(OpeningReader::new(object, cipher, None)))
}

/// The body of the sealed manifest or snapshot object `name` (`size`
/// bytes) under `key`, past its magic: `plain` for the first layout,
/// `compressed` for the second (decompressed with the bounds of
/// [`crate::compressed`]).
///
/// # Errors
/// The backend, or [`StoreError::Damaged`] naming the object (another
/// magic: `not a {kind}`).
pub(crate) fn open_body<'a>(
    backend: &'a dyn Backend,
    key: &cryptstream_format::MasterKey,
    kind: &str,
    name: &'a str,
    size: u64,
    plain: &[u8; 8],
    compressed: &[u8; 8],
) -> Result<(Layout, SealedBody<'a>), StoreError> {
    let damaged = |why: String| StoreError::Damaged(format!("{kind} {name}: {why}"));
    let mut input = open_sealed(backend, key, kind, name, size)?;
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|e| damaged(e.to_string()))?;
    if &magic == compressed {
        let decoder = BoundedDecoder::new(input, size).map_err(|e| damaged(e.to_string()))?;
        Ok((
            Layout::Compressed,
            Body::Compressed(io::BufReader::new(decoder)),
        ))
    } else if &magic == plain {
        Ok((Layout::Plain, Body::Plain(input)))
    } else {
        Err(damaged(format!("not a {kind}")))
    }
}

/// The body of a manifest or snapshot as it is read.
pub(crate) type SealedBody<'a> = Body<io::BufReader<OpeningReader<ObjectReader<'a>>>>;

/// Reads an object in pieces (never whole into memory).
pub(crate) struct ObjectReader<'a> {
    pub(crate) backend: &'a dyn Backend,
    pub(crate) name: &'a str,
    pub(crate) pos: u64,
    pub(crate) size: u64,
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size - self.pos;
        let n = (buf.len() as u64).min(left).min(READ_PIECE as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.backend
            .get_range(self.name, self.pos, &mut buf[..n])
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a manifest record by record.
pub struct ManifestReader<'a> {
    input: SealedBody<'a>,
    layout: Layout,
    keys: &'a StoreKeys,
    name: String,
    files_left: u64,
    chunks_left: u64,
    /// The current record's chunks, read ahead to compute its mac (the
    /// second layout does not store it).
    chunks: VecDeque<([u8; 32], u32)>,
}

/// The little-endian fields of a sealed object's body (a manifest, a
/// snapshot), read in order; a short body is damage naming the object.
pub(crate) trait BodyFields {
    /// Fills `buf` from the body.
    fn read(&mut self, buf: &mut [u8]) -> Result<(), StoreError>;

    /// The next `u64`.
    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The next `u32`.
    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

impl BodyFields for ManifestReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.input
            .read_exact(buf)
            .map_err(|e| StoreError::Damaged(format!("manifest {}: {e}", self.name)))
    }
}

impl<'a> ManifestReader<'a> {
    /// Opens manifest `name` (`size` bytes).
    ///
    /// # Errors
    /// [`StoreError::Damaged`] when it does not authenticate or parse.
    pub fn open(
        backend: &'a dyn Backend,
        keys: &'a StoreKeys,
        name: &'a str,
        size: u64,
    ) -> Result<ManifestReader<'a>, StoreError> {
        let (layout, input) = open_body(
            backend,
            keys.manifest_key(),
            "manifest",
            name,
            size,
            MANIFEST_MAGIC_V1,
            MANIFEST_MAGIC,
        )?;
        let mut reader = ManifestReader {
            input,
            layout,
            keys,
            name: name.to_owned(),
            files_left: 0,
            chunks_left: 0,
            chunks: VecDeque::new(),
        };
        reader.files_left = reader.u64()?;
        Ok(reader)
    }

    fn damaged(&self, why: &str) -> StoreError {
        StoreError::Damaged(format!("manifest {}: {why}", self.name))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        let len = self.u32()? as usize;
        if len > MAX_NAME_LEN {
            return Err(self.damaged("name too long"));
        }
        let mut out = vec![0u8; len];
        self.read(&mut out)?;
        Ok(out)
    }

    /// The next record, or `None` after the last one. Every chunk of the
    /// previous record must have been read with [`ManifestReader::chunk`].
    ///
    /// # Errors
    /// [`StoreError::Damaged`].
    pub fn next_record(&mut self) -> Result<Option<FileRecord>, StoreError> {
        assert_eq!(
            self.chunks_left, 0,
            "the previous record's chunks were read"
        );
        if self.files_left == 0 {
            return Ok(None);
        }
        self.files_left -= 1;
        let uid = self.u64()?;
        let mut kind = [0u8; 1];
        self.read(&mut kind)?;
        let kind = Kind::from_id(kind[0]).ok_or_else(|| self.damaged("unknown entry kind"))?;
        let mode = self.u32()?;
        let seconds = self.u64()? as i64;
        let nanos = self.u32()?;
        let size = self.u64()?;
        let created = self.u64()? as i64;
        let chunks = self.u64()?;
        let mut mac = [0u8; 32];
        if self.layout == Layout::Plain {
            self.read(&mut mac)?;
        }
        let name = String::from_utf8(self.bytes()?).map_err(|_| self.damaged("name not UTF-8"))?;
        let link = self.bytes()?;
        if chunks > size {
            return Err(self.damaged("more chunks than bytes"));
        }
        self.chunks_left = chunks;
        let mut record = FileRecord {
            uid,
            name,
            kind,
            mode,
            mtime: (seconds, nanos),
            size,
            link,
            created,
            chunks,
            mac,
        };
        if self.layout == Layout::Compressed {
            // Read ahead (as far as the object's bytes go: its chunks are
            // pushed one by one, never allocated by the count).
            let mut file_mac = FileMac::new(self.keys, &record);
            for _ in 0..chunks {
                let chunk = self.read_chunk()?;
                file_mac.add_chunk(&chunk.0, chunk.1);
                self.chunks.push_back(chunk);
            }
            record.mac = file_mac.finish();
        }
        Ok(Some(record))
    }

    fn read_chunk(&mut self) -> Result<([u8; 32], u32), StoreError> {
        let mut id = [0u8; 32];
        self.read(&mut id)?;
        Ok((id, self.u32()?))
    }

    /// Checks that nothing follows the last record (which also
    /// authenticates the end of the stream: a truncated manifest fails).
    ///
    /// # Errors
    /// [`StoreError::Damaged`].
    pub fn finish(mut self) -> Result<(), StoreError> {
        assert!(
            self.files_left == 0 && self.chunks_left == 0,
            "every record was read"
        );
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(_) => Err(self.damaged("bytes after the last record")),
            Err(e) => Err(self.damaged(&e.to_string())),
        }
    }

    /// The next chunk of the current record.
    ///
    /// # Errors
    /// [`StoreError::Damaged`].
    pub fn chunk(&mut self) -> Result<([u8; 32], u32), StoreError> {
        assert!(self.chunks_left > 0, "the record has chunks left");
        self.chunks_left -= 1;
        match self.chunks.pop_front() {
            Some(chunk) => Ok(chunk),
            None => self.read_chunk(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalDir;

    /// A manifest of one record whose fields are written by `fields`
    /// as they come (so any length can be claimed), read back: the error.
    fn read_crafted(fields: impl FnOnce(&mut ManifestWriter<'_>) -> io::Result<()>) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[9; 32]);
        let name = new_manifest_name().unwrap();
        write_manifest(&backend, &keys, &name, 1, |w| {
            fields(w).map_err(|e| backend_io("crafted", e))
        })
        .unwrap();
        let size = backend.size(&name).unwrap().unwrap();
        let mut reader = ManifestReader::open(&backend, &keys, &name, size).unwrap();
        let err = reader
            .next_record()
            .expect_err("a crafted record is refused");
        err.to_string()
    }

    /// uid, kind, mode, mtime, size, created, chunk count and mac of a
    /// record of `size` bytes in `chunks` chunks.
    fn head(w: &mut ManifestWriter<'_>, size: u64, chunks: u64) -> io::Result<()> {
        w.put(&7u64.to_le_bytes())?;
        w.put(&[Kind::File.id()])?;
        w.put(&0o644u32.to_le_bytes())?;
        w.put(&0i64.to_le_bytes())?;
        w.put(&0u32.to_le_bytes())?;
        w.put(&size.to_le_bytes())?;
        w.put(&0i64.to_le_bytes())?;
        w.put(&chunks.to_le_bytes())
    }

    #[test]
    fn a_length_larger_than_a_name_can_be_is_refused_before_any_allocation() {
        // 4 GiB claimed, nothing behind it: refused by the bound, not by
        // an allocation of 4 GiB or by the end of the stream.
        let err = read_crafted(|w| {
            head(w, 1, 1)?;
            w.put(&u32::MAX.to_le_bytes())
        });
        assert!(err.contains("name too long"), "{err}");
        let err = read_crafted(|w| {
            head(w, 1, 1)?;
            w.put(&0u32.to_le_bytes())?;
            w.put(&((MAX_NAME_LEN + 1) as u32).to_le_bytes())
        });
        assert!(err.contains("name too long"), "link: {err}");
    }

    fn record(uid: u64, name: &str, chunks: u64) -> FileRecord {
        FileRecord {
            uid,
            name: name.into(),
            kind: Kind::File,
            mode: 0o640,
            mtime: (1_700_000_000, 9),
            size: 100 * chunks,
            link: Vec::new(),
            created: 1_700_000_001,
            chunks,
            mac: [0; 32],
        }
    }

    /// Records with their chunk lists and macs.
    fn records(keys: &StoreKeys) -> Vec<(FileRecord, ChunkList)> {
        (0..50u64)
            .map(|i| {
                let mut r = record(i + 1, &format!("dir/sub/file-{i:04}.txt"), i % 3);
                let chunks: Vec<_> = (0..r.chunks).map(|c| ([(i + c) as u8; 32], 100)).collect();
                let mut mac = FileMac::new(keys, &r);
                for (id, len) in &chunks {
                    mac.add_chunk(id, *len);
                }
                r.mac = mac.finish();
                (r, chunks)
            })
            .collect()
    }

    fn read_all(
        backend: &LocalDir,
        keys: &StoreKeys,
        name: &str,
    ) -> Result<Vec<(FileRecord, ChunkList)>, StoreError> {
        let size = backend.size(name)?.expect("the manifest exists");
        let mut reader = ManifestReader::open(backend, keys, name, size)?;
        let mut out = Vec::new();
        while let Some(r) = reader.next_record()? {
            let chunks = (0..r.chunks)
                .map(|_| reader.chunk())
                .collect::<Result<_, _>>()?;
            out.push((r, chunks));
        }
        reader.finish()?;
        Ok(out)
    }

    /// The container plaintext of object `name`.
    fn plaintext_of(backend: &LocalDir, keys: &StoreKeys, name: &str) -> Vec<u8> {
        let size = backend.size(name).unwrap().unwrap();
        let mut out = Vec::new();
        open_sealed(backend, keys.manifest_key(), "manifest", name, size)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_compressed_manifest_round_trips_with_its_macs_recomputed() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[9; 32]);
        let want = records(&keys);
        let name = new_manifest_name().unwrap();
        write_manifest(&backend, &keys, &name, want.len() as u64, |w| {
            for (r, chunks) in &want {
                w.record(r).map_err(|e| backend_io("test", e))?;
                for (id, len) in chunks {
                    w.chunk(id, *len).map_err(|e| backend_io("test", e))?;
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(read_all(&backend, &keys, &name).unwrap(), want);
        let plaintext = plaintext_of(&backend, &keys, &name);
        assert_eq!(&plaintext[..8], MANIFEST_MAGIC);
        let body = body(&want, Layout::Compressed);
        assert!(
            plaintext.len() < body.len(),
            "{} >= {}",
            plaintext.len(),
            body.len()
        );
        let mut inflated = Vec::new();
        zstd::stream::read::Decoder::new(&plaintext[8..])
            .unwrap()
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, body);
    }

    #[test]
    fn a_manifest_of_the_first_layout_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[9; 32]);
        let want = records(&keys);
        let name = new_manifest_name().unwrap();
        let params = HeaderParams {
            cipher: Cipher::Aes256Gcm,
            chunk_size: MANIFEST_CHUNK_SIZE,
            plaintext_len: None,
            mode: 0,
            kind: EntryKind::File,
            mtime: None,
        };
        let (header, cipher) = seal_header(keys.manifest_key(), &params, [1; SALT_LEN]).unwrap();
        let mut object = backend.create(&name).unwrap();
        object.write_all(header.as_bytes()).unwrap();
        let mut sealing = SealingWriter::new(&mut object, cipher);
        sealing.write_all(MANIFEST_MAGIC_V1).unwrap();
        sealing.write_all(&body(&want, Layout::Plain)).unwrap();
        sealing.finish().unwrap();
        object.commit().unwrap();
        assert_eq!(read_all(&backend, &keys, &name).unwrap(), want);
    }

    #[test]
    fn more_chunks_than_bytes_is_refused_before_any_chunk_is_read() {
        let err = read_crafted(|w| {
            head(w, 10, u64::MAX)?;
            w.put(&1u32.to_le_bytes())?;
            w.put(b"a")?;
            w.put(&0u32.to_le_bytes())
        });
        assert!(err.contains("more chunks than bytes"), "{err}");
    }
}
