//! Snapshots: what one `put` stored, as one encrypted object.
//!
//! A snapshot object `snapshots/XX/<32 hex digits>` is a cryptstream
//! container (format version 2, docs/FORMAT.md) sealed under the store's
//! snapshot key, written with `SealingWriter` as the put goes and read
//! with `OpeningReader`, so its size does not matter. Its plaintext is
//! `"CSTSNAP2"` then a zstd stream ([`crate::compressed`]) of the body
//! (all integers little-endian, every string a `u32` length then UTF-8
//! bytes):
//!
//! ```text
//! version u32 (1) | object name | time (ns since 1970, UTC) i64 | host
//!   | path count u32 | paths (absolute) | tag count u32 | tags
//! per entry:  1 u8 | name | uid u64 | mac [32]                 (an entry)
//!          or 2 u8 | name | uid u64 | mac [32] | target name   (a hard link)
//! 0 u8 | "CSTSEND1" | entry count u64
//! ```
//!
//! Entries are in walk order (the paths in the order given, each tree
//! depth first with the names of a directory sorted: a directory before
//! what it holds). An entry's `uid` and `mac` are those of the file record
//! it was stored as ([`crate::manifest::FileMac`]), which authenticates the
//! record (name, kind, mode, mtime, size, link target) and every chunk id
//! of it, so the snapshot authenticates its whole tree. A hard link is an
//! entry whose content and inode are those of the earlier entry `target`
//! (same uid and mac). The object's own name is inside the authenticated
//! plaintext: a snapshot copied under another name does not open; the
//! container authenticates its end, so a truncated one does not either.
//! Snapshots of the first layout (`"CSTSNAP1"` then the same body
//! uncompressed) are still read.

use std::io::{self, BufWriter, Read, Write};

use cryptstream_format::{seal_header, Cipher, EntryKind, HeaderParams, SealingWriter, SALT_LEN};

use crate::backend::{Backend, ObjectWriter};
use crate::compressed::CompressingWriter;
use crate::keys::StoreKeys;
use crate::manifest::{backend_io, open_body, BodyFields, SealedBody, MAX_NAME_LEN};
use crate::StoreError;

/// First bytes of a snapshot's plaintext: a compressed body.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CSTSNAP2";
/// First bytes of a snapshot of the first layout: the body as is.
pub const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"CSTSNAP1";
/// The marker after the last entry.
pub const SNAPSHOT_END: &[u8; 8] = b"CSTSEND1";
/// The version of the snapshot body (the same in both layouts).
pub const SNAPSHOT_VERSION: u32 = 1;
/// Where snapshot objects live.
pub const SNAPSHOT_PREFIX: &str = "snapshots/";
/// Hex digits of a snapshot id that people see and type.
pub const SHORT_ID_LEN: usize = 8;
/// Most paths or tags one snapshot may name.
pub const MAX_LIST_LEN: u32 = 65_536;
/// Plaintext bytes per container chunk of a snapshot.
const SNAPSHOT_CHUNK_SIZE: u32 = 64 * 1024;

/// Tag byte of an entry.
const TAG_ENTRY: u8 = 1;
/// Tag byte of a hard link.
const TAG_HARD_LINK: u8 = 2;
/// Tag byte of the end.
const TAG_END: u8 = 0;

/// What a snapshot says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Its object name (`snapshots/XX/<32 hex>`).
    pub name: String,
    /// When the put began: nanoseconds since 1970, UTC.
    pub time_ns: i64,
    /// The host it was taken on.
    pub host: String,
    /// The paths given to the put, absolute.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl SnapshotMeta {
    /// The registry row of this snapshot once its object holds `entries`
    /// entries in `size` bytes.
    pub fn into_row(self, entries: u64, size: u64) -> crate::registry::SnapshotRow {
        crate::registry::SnapshotRow {
            name: self.name,
            time_ns: self.time_ns,
            host: self.host,
            paths: self.paths,
            tags: self.tags,
            entries,
            size,
        }
    }

    /// Its id: the 32 hex digits of its name.
    pub fn id(&self) -> &str {
        snapshot_id(&self.name)
    }
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// Its name in the snapshot (relative, `/`-separated).
    pub name: String,
    /// The uid of its file record.
    pub uid: u64,
    /// The record's authenticator.
    pub mac: [u8; 32],
    /// For a hard link: the earlier entry whose inode it shares.
    pub hard_link: Option<String>,
}

/// The object name of a new snapshot.
///
/// # Errors
/// Random source failure.
pub fn new_snapshot_name() -> Result<String, StoreError> {
    let mut id = [0u8; 16];
    cryptstream_format::fill_random(&mut id)?;
    let hex = hex::encode(id);
    Ok(format!("{SNAPSHOT_PREFIX}{}/{hex}", &hex[..2]))
}

/// The id (32 hex digits) of snapshot object `name`.
pub fn snapshot_id(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The short id people see: the first [`SHORT_ID_LEN`] hex digits.
pub fn short_id(name: &str) -> &str {
    let id = snapshot_id(name);
    &id[..id.len().min(SHORT_ID_LEN)]
}

fn write_string(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(&(text.len() as u32).to_le_bytes())?;
    out.write_all(text.as_bytes())
}

/// The head of a snapshot's body: version, name, time, host, paths, tags.
fn write_head(out: &mut impl Write, meta: &SnapshotMeta) -> io::Result<()> {
    out.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
    write_string(out, &meta.name)?;
    out.write_all(&meta.time_ns.to_le_bytes())?;
    write_string(out, &meta.host)?;
    for list in [&meta.paths, &meta.tags] {
        out.write_all(&(list.len() as u32).to_le_bytes())?;
        for item in list {
            write_string(out, item)?;
        }
    }
    Ok(())
}

/// One entry of a snapshot's plaintext.
fn write_entry(out: &mut impl Write, entry: &SnapshotEntry) -> io::Result<()> {
    let tag = if entry.hard_link.is_some() {
        TAG_HARD_LINK
    } else {
        TAG_ENTRY
    };
    out.write_all(&[tag])?;
    write_string(out, &entry.name)?;
    out.write_all(&entry.uid.to_le_bytes())?;
    out.write_all(&entry.mac)?;
    if let Some(target) = &entry.hard_link {
        write_string(out, target)?;
    }
    Ok(())
}

/// The end of a snapshot's plaintext.
fn write_end(out: &mut impl Write, entries: u64) -> io::Result<()> {
    out.write_all(&[TAG_END])?;
    out.write_all(SNAPSHOT_END)?;
    out.write_all(&entries.to_le_bytes())
}

/// The body of a snapshot, after the magic (test vectors; a put streams
/// the same bytes, compressed, into the container instead).
pub fn body(meta: &SnapshotMeta, entries: &[SnapshotEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let written = write_head(&mut out, meta)
        .and_then(|()| entries.iter().try_for_each(|e| write_entry(&mut out, e)))
        .and_then(|()| write_end(&mut out, entries.len() as u64));
    written.expect("writing to a Vec does not fail");
    out
}

/// Writes a snapshot as a put goes; nothing is visible under its name
/// until [`SnapshotWriter::commit`].
pub struct SnapshotWriter {
    name: String,
    out: CompressingWriter<SealingWriter<BufWriter<Box<dyn ObjectWriter>>>>,
    entries: u64,
}

impl SnapshotWriter {
    /// Starts snapshot `meta.name`.
    ///
    /// # Errors
    /// Backend, random source or format failures.
    pub fn create(
        backend: &dyn Backend,
        keys: &StoreKeys,
        meta: &SnapshotMeta,
    ) -> Result<SnapshotWriter, StoreError> {
        let mut salt = [0u8; SALT_LEN];
        cryptstream_format::fill_random(&mut salt)?;
        let params = HeaderParams {
            cipher: Cipher::Aes256Gcm,
            chunk_size: SNAPSHOT_CHUNK_SIZE,
            plaintext_len: None,
            mode: 0,
            kind: EntryKind::File,
            mtime: None,
        };
        let (header, cipher) = seal_header(keys.snapshot_key(), &params, salt)?;
        let mut object = backend.create(&meta.name)?;
        object
            .write_all(header.as_bytes())
            .map_err(|e| backend_io(&meta.name, e))?;
        let io = |e: io::Error| backend_io(&meta.name, e);
        let mut sealing = SealingWriter::new(BufWriter::new(object), cipher);
        sealing.write_all(SNAPSHOT_MAGIC).map_err(io)?;
        let mut writer = SnapshotWriter {
            name: meta.name.clone(),
            out: CompressingWriter::new(sealing).map_err(io)?,
            entries: 0,
        };
        write_head(&mut writer.out, meta).map_err(|e| backend_io(&meta.name, e))?;
        Ok(writer)
    }

    /// Adds the next entry (in walk order).
    ///
    /// # Errors
    /// Write failures.
    pub fn add(&mut self, entry: &SnapshotEntry) -> Result<(), StoreError> {
        write_entry(&mut self.out, entry).map_err(|e| backend_io(&self.name, e))?;
        self.entries += 1;
        Ok(())
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the end and makes the snapshot durable under its name.
    /// Returns the number of entries and the object's size.
    ///
    /// # Errors
    /// Backend failures (nothing is left under the name on failure).
    pub fn commit(mut self) -> Result<(u64, u64), StoreError> {
        let name = self.name.clone();
        let io = |e: io::Error| backend_io(&name, e);
        write_end(&mut self.out, self.entries).map_err(io)?;
        let sealing = self.out.finish().map_err(io)?;
        let (buffered, _) = sealing.finish().map_err(io)?;
        let object = buffered.into_inner().map_err(|e| io(e.into_error()))?;
        let size = object.written();
        object.commit()?;
        Ok((self.entries, size))
    }
}

/// Reads a snapshot entry by entry.
pub struct SnapshotReader<'a> {
    input: SealedBody<'a>,
    meta: SnapshotMeta,
    entries: u64,
    ended: bool,
}

impl BodyFields for SnapshotReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.input
            .read_exact(buf)
            .map_err(|e| StoreError::Damaged(format!("snapshot {}: {e}", self.meta.name)))
    }
}

impl<'a> SnapshotReader<'a> {
    /// Opens snapshot object `name` and reads its head.
    ///
    /// # Errors
    /// [`StoreError::Damaged`] when it does not authenticate, parse, or
    /// name itself; backend failures (a missing object).
    pub fn open(
        backend: &'a dyn Backend,
        keys: &StoreKeys,
        name: &'a str,
    ) -> Result<SnapshotReader<'a>, StoreError> {
        let size = backend.size(name)?.ok_or_else(|| {
            StoreError::Backend(crate::backend::BackendError::NotFound(name.to_owned()))
        })?;
        let (_, input) = open_body(
            backend,
            keys.snapshot_key(),
            "snapshot",
            name,
            size,
            SNAPSHOT_MAGIC_V1,
            SNAPSHOT_MAGIC,
        )?;
        let mut reader = SnapshotReader {
            input,
            meta: SnapshotMeta {
                name: name.to_owned(),
                time_ns: 0,
                host: String::new(),
                paths: Vec::new(),
                tags: Vec::new(),
            },
            entries: 0,
            ended: false,
        };
        let version = reader.u32()?;
        if version != SNAPSHOT_VERSION {
            return Err(reader.damaged(&format!("unknown snapshot version {version}")));
        }
        let inside = reader.string()?;
        if inside != name {
            return Err(reader.damaged(&format!(
                "it names itself {inside}: copied or moved from another name"
            )));
        }
        reader.meta.time_ns = reader.u64()? as i64;
        reader.meta.host = reader.string()?;
        reader.meta.paths = reader.list()?;
        reader.meta.tags = reader.list()?;
        Ok(reader)
    }

    /// What the snapshot says about itself.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    fn damaged(&self, why: &str) -> StoreError {
        StoreError::Damaged(format!("snapshot {}: {why}", self.meta.name))
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let len = self.u32()? as usize;
        if len > MAX_NAME_LEN {
            return Err(self.damaged("name too long"));
        }
        let mut out = vec![0u8; len];
        self.read(&mut out)?;
        String::from_utf8(out).map_err(|_| self.damaged("name not UTF-8"))
    }

    fn list(&mut self) -> Result<Vec<String>, StoreError> {
        let count = self.u32()?;
        if count > MAX_LIST_LEN {
            return Err(self.damaged("too many paths or tags"));
        }
        (0..count).map(|_| self.string()).collect()
    }

    /// The next entry, or `None` after the last one (whose end marker,
    /// count and authenticated end of stream are checked then).
    ///
    /// # Errors
    /// [`StoreError::Damaged`].
    pub fn next_entry(&mut self) -> Result<Option<SnapshotEntry>, StoreError> {
        if self.ended {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.read(&mut tag)?;
        match tag[0] {
            TAG_END => {
                let mut end = [0u8; 8];
                self.read(&mut end)?;
                if &end != SNAPSHOT_END || self.u64()? != self.entries {
                    return Err(self.damaged("bad end marker"));
                }
                let mut extra = [0u8; 1];
                match self.input.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) => return Err(self.damaged("bytes after the end")),
                    Err(e) => return Err(self.damaged(&e.to_string())),
                }
                self.ended = true;
                Ok(None)
            }
            TAG_ENTRY | TAG_HARD_LINK => {
                let name = self.string()?;
                let uid = self.u64()?;
                let mut mac = [0u8; 32];
                self.read(&mut mac)?;
                let hard_link = if tag[0] == TAG_HARD_LINK {
                    Some(self.string()?)
                } else {
                    None
                };
                self.entries += 1;
                Ok(Some(SnapshotEntry {
                    name,
                    uid,
                    mac,
                    hard_link,
                }))
            }
            other => Err(self.damaged(&format!("unknown entry tag {other}"))),
        }
    }

    /// Reads every entry to the authenticated end, calling `each`.
    ///
    /// # Errors
    /// [`StoreError::Damaged`], or what `each` returns.
    pub fn for_each(
        mut self,
        mut each: impl FnMut(SnapshotEntry) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        while let Some(entry) = self.next_entry()? {
            each(entry)?;
        }
        Ok(self.entries)
    }
}

/// Whether `name` is `path` or below it (`path` empty: everything).
pub fn is_within(name: &str, path: &str) -> bool {
    path.is_empty()
        || name == path
        || (name.len() > path.len()
            && name.starts_with(path)
            && name.as_bytes()[path.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalDir;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            name: new_snapshot_name().unwrap(),
            time_ns: 1_700_000_000_000_000_005,
            host: "host".into(),
            paths: vec!["/home/u/dir".into()],
            tags: vec!["daily".into()],
        }
    }

    fn entries() -> Vec<SnapshotEntry> {
        (0..2000u64)
            .map(|i| SnapshotEntry {
                name: format!("dir/sub/file-{i:05}.txt"),
                uid: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                mac: [(i % 251) as u8; 32],
                hard_link: (i % 10 == 9).then(|| format!("dir/sub/file-{:05}.txt", i - 1)),
            })
            .collect()
    }

    fn read_all(
        backend: &LocalDir,
        keys: &StoreKeys,
        name: &str,
    ) -> Result<(SnapshotMeta, Vec<SnapshotEntry>), StoreError> {
        let reader = SnapshotReader::open(backend, keys, name)?;
        let meta = reader.meta().clone();
        let mut out = Vec::new();
        reader.for_each(|e| {
            out.push(e);
            Ok(())
        })?;
        Ok((meta, out))
    }

    #[test]
    fn a_compressed_snapshot_round_trips_and_is_smaller_than_its_body() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[5; 32]);
        let (meta, want) = (meta(), entries());
        let mut writer = SnapshotWriter::create(&backend, &keys, &meta).unwrap();
        for e in &want {
            writer.add(e).unwrap();
        }
        let (count, size) = writer.commit().unwrap();
        assert_eq!(count, want.len() as u64);
        assert!(size < body(&meta, &want).len() as u64 / 2, "{size} bytes");
        assert_eq!(read_all(&backend, &keys, &meta.name).unwrap(), (meta, want));
    }

    #[test]
    fn a_snapshot_of_the_first_layout_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(tmp.path()).unwrap();
        let keys = StoreKeys::derive(&[5; 32]);
        let (meta, want) = (meta(), entries());
        let params = HeaderParams {
            cipher: Cipher::Aes256Gcm,
            chunk_size: SNAPSHOT_CHUNK_SIZE,
            plaintext_len: None,
            mode: 0,
            kind: EntryKind::File,
            mtime: None,
        };
        let (header, cipher) = seal_header(keys.snapshot_key(), &params, [1; SALT_LEN]).unwrap();
        let mut object = backend.create(&meta.name).unwrap();
        object.write_all(header.as_bytes()).unwrap();
        let mut sealing = SealingWriter::new(&mut object, cipher);
        sealing.write_all(SNAPSHOT_MAGIC_V1).unwrap();
        sealing.write_all(&body(&meta, &want)).unwrap();
        sealing.finish().unwrap();
        object.commit().unwrap();
        assert_eq!(read_all(&backend, &keys, &meta.name).unwrap(), (meta, want));
    }
}
