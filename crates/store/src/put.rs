//! `put`: files and trees into the store. See the crate docs for the flow
//! and docs/STORE.md for why it is crash-safe.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cryptstream_pool::{Cancel, Pool};
use fastcdc::v2020::{Normalization, StreamCDC};

use crate::backend::Backend;
use crate::blob::{self, BLOB_SALT_LEN, COMPRESSION_NONE, COMPRESSION_ZSTD};
use crate::keys::StoreKeys;
use crate::manifest::{self, FileMac, FileRecord, Kind};
use crate::pack::{PackEntry, PackWriter};
use crate::registry::{
    FileRow, PendingFile, Registry, Role, SnapshotRow, SourceStat, UidRange, WriterLease,
};
use crate::snapshot::{SnapshotEntry, SnapshotMeta, SnapshotWriter};
use crate::{Progress, Settings, Store, StoreError};

/// Refs buffered for one file before they go to the registry.
const REF_FLUSH: usize = 65_536;
/// Files waiting for a pack commit before one is forced.
const READ_DONE_FLUSH: usize = 16_384;
/// Files up to this size are read whole into one buffer (a large file is
/// streamed through the chunker's buffer instead).
const WHOLE_FILE_MAX: u64 = 8 * 1024 * 1024;
/// Bytes of a large chunk compressed first, to see whether it shrinks.
const SAMPLE_LEN: usize = 64 * 1024;
/// A sample compressed to at least this percentage of its size means the
/// chunk is stored uncompressed.
const INCOMPRESSIBLE_PERCENT: usize = 97;
/// Bytes a chunk task accounts for beyond twice its length.
const TASK_OVERHEAD: u64 = 4096;

/// How a put runs.
#[derive(Clone, Debug)]
pub struct PutOptions {
    /// Bytes of chunks in flight at most (`--max-memory`).
    pub max_memory: u64,
    /// Read every file even when the registry says it is unchanged.
    pub force_read: bool,
    /// Stops the put (files already complete stay).
    pub cancel: Cancel,
    /// Tags of the snapshot (`--tag`).
    pub tags: Vec<String>,
    /// The host the snapshot names (`--host`; default: this host's name).
    pub host: Option<String>,
}

/// Reused uids buffered before they go to the registry's `put_refs`.
const PUT_REF_FLUSH: usize = 4096;

/// What happened to one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored (its data, manifest and registry row are durable).
    Stored,
    /// Not read: the registry has it from this very source, unchanged.
    Unchanged,
    /// A hard link to the earlier entry named (its content read once).
    HardLink(String),
    /// Skipped: not a file, directory or symlink.
    Skipped(String),
    /// Failed, with the reason.
    Failed(String),
}

/// One entry's result, reported as soon as it is known.
#[derive(Clone, Debug)]
pub struct PutReport {
    /// Its name in the store.
    pub name: String,
    /// Its uid (stored or unchanged).
    pub uid: Option<u64>,
    /// What it is.
    pub kind: Kind,
    /// Its size.
    pub size: u64,
    /// Bytes of new chunks it added.
    pub stored: u64,
    /// What happened.
    pub outcome: PutOutcome,
}

/// A sealed chunk.
struct Sealed {
    id: [u8; 32],
    raw_len: u32,
    compression: u8,
    blob: Vec<u8>,
}

/// What flows through the ordered pipeline.
enum Item {
    Begin(Box<PendingFile>, Option<Inode>),
    /// An entry the registry holds unchanged (not read).
    Unchanged(Box<FileRow>, Option<Inode>),
    /// A second name of an inode already walked.
    HardLink {
        name: String,
        inode: Inode,
    },
    Chunk(Result<Sealed, String>),
    End {
        bytes: u64,
        error: Option<String>,
    },
    /// An entry that failed before it had a record (reported as is).
    Failed(PutReport),
    /// The items of one batch of the walk, in order.
    Batch(Vec<Item>),
}

/// A file's device and inode (for hard links).
type Inode = (u64, u64);

/// The file whose chunks are arriving.
struct Current {
    file: PendingFile,
    inode: Option<Inode>,
    mac: FileMac,
    bytes: u64,
    error: Option<String>,
    /// Its whole chunk list (`file.refs` holds only what the registry
    /// does not have yet): the manifest is written from it.
    chunks: Vec<([u8; 32], u32)>,
}

/// A pack on its way to durability, committed on a thread of its own.
struct Committing {
    name: String,
    size: u64,
    entries: Vec<PackEntry>,
    thread: std::thread::JoinHandle<Result<(), StoreError>>,
}

/// What one pack commit of the put completes once every pack before it
/// and its own are durable (DECISIONS 578): the pack's registry rows,
/// then the manifest of the files read before it was sealed, then those
/// files, then the snapshot entries queued up to `release`.
struct Landing {
    pack: Option<Committing>,
    manifest: Option<(String, Vec<ReadDone>)>,
    release: u64,
}

/// A file whose chunks are all recorded, waiting for the pack commit.
struct ReadDone {
    file: PendingFile,
    /// Its chunk list, in order.
    chunks: Vec<([u8; 32], u32)>,
}

/// The caller-thread side of a put.
struct Consumer<'a> {
    registry: &'a mut Registry,
    backend: &'a dyn Backend,
    keys: &'a StoreKeys,
    settings: &'a Settings,
    lease: WriterLease,
    pack: Option<PackWriter>,
    open_ids: HashSet<[u8; 32]>,
    /// Packs the registry named for a reused chunk, and whether each is
    /// still in the store (checked once per put: no gc of another writer
    /// runs while a put holds its lease).
    packs_present: HashMap<String, bool>,
    current: Option<Current>,
    read_done: Vec<ReadDone>,
    /// Pack commits under way, oldest first; they land in this order.
    landings: VecDeque<Landing>,
    /// Most pack commits under way at once.
    most_landings: usize,
    failed: Option<StoreError>,
    progress: &'a dyn Progress,
    report: &'a mut dyn FnMut(&PutReport),
    /// The put's cancel flag (SIGINT, SIGTERM).
    cancel: &'a Cancel,
    /// Cancelled: the file whose Begin came after the cancel is being
    /// passed over, up to its End.
    skipping: bool,
    /// The snapshot being written, entry by entry in walk order.
    snapshot: SnapshotWriter,
    /// Entries that follow a file not yet complete: they go into the
    /// snapshot, in order, once it is.
    snapshot_queue: VecDeque<SnapshotEntry>,
    /// Entries queued so far.
    queued: u64,
    /// Uids reused unchanged, not yet in the registry's `put_refs`.
    reused: Vec<u64>,
    /// Whether this put may hold decisions to reuse a chunk or a record
    /// that are not in the registry yet (its writer row then carries the
    /// epoch the window opened at; DECISIONS 300).
    window_open: bool,
    /// Inodes with more than one link seen by the walk.
    inodes_seen: HashSet<Inode>,
    /// Where each such inode was stored: name, uid, mac.
    links: HashMap<Inode, (String, u64, [u8; 32])>,
    /// The uids of this put's new records, in walk order.
    uids: UidSequence,
}

impl Consumer<'_> {
    /// Whether chunk `id` is stored and may be reused: the registry says
    /// so and its pack is still in the store. The registry is a cache; a
    /// gc of another writer (another user, machine or client, with a
    /// registry of its own) may have reclaimed the pack since, and a chunk
    /// reused from it would be lost. Such a pack's chunks are forgotten.
    fn reusable(&mut self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.open_window()?;
        self.registry.hold_reads()?;
        let Some(pack) = self.registry.usable_chunk_pack(id)? else {
            return Ok(false);
        };
        if let Some(present) = self.packs_present.get(&pack) {
            return Ok(*present);
        }
        let present = self.backend.exists(&pack)?;
        if !present {
            self.registry.forget_pack(&pack)?;
        }
        self.packs_present.insert(pack, present);
        Ok(present)
    }

    /// Opens this put's decision window, if it is closed, before a read
    /// that may decide to reuse a chunk or a record (DECISIONS 300).
    fn open_window(&mut self) -> Result<(), StoreError> {
        if !self.window_open {
            self.registry.open_window(self.lease)?;
            self.window_open = true;
        }
        Ok(())
    }

    fn consume(&mut self, item: Item) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.try_consume(item) {
            self.failed = Some(e);
        }
    }

    fn try_consume(&mut self, item: Item) -> Result<(), StoreError> {
        // Once the put is cancelled no new file is taken in, and the rest
        // of the file being taken fails as interrupted: what the workers
        // sealed before is dropped, not stored. A walk that had handed
        // every file to the workers would otherwise store them all after
        // a SIGINT (DECISIONS 575). What is complete stays complete.
        if self.cancel.is_cancelled() {
            match item {
                Item::Begin(..) => {
                    self.skipping = true;
                    return Ok(());
                }
                Item::Chunk(_) if self.skipping => return Ok(()),
                Item::End { .. } if self.skipping => {
                    self.skipping = false;
                    return Ok(());
                }
                Item::Chunk(Ok(_)) => {
                    if let Some(cur) = self.current.as_mut() {
                        cur.error.get_or_insert_with(|| "interrupted".to_owned());
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        match item {
            Item::Batch(items) => {
                for item in items {
                    self.consume(item);
                }
            }
            Item::Failed(report) => (self.report)(&report),
            Item::Unchanged(row, inode) => {
                let r = &row.record;
                if let Some(inode) = inode {
                    self.links.insert(inode, (r.name.clone(), r.uid, r.mac));
                }
                self.add_entry(SnapshotEntry {
                    name: r.name.clone(),
                    uid: r.uid,
                    mac: r.mac,
                    hard_link: None,
                })?;
                (self.report)(&PutReport {
                    name: r.name.clone(),
                    uid: Some(r.uid),
                    kind: r.kind,
                    size: r.size,
                    stored: 0,
                    outcome: PutOutcome::Unchanged,
                });
            }
            Item::HardLink { name, inode } => {
                let Some((target, uid, mac)) = self.links.get(&inode).cloned() else {
                    (self.report)(&PutReport {
                        name,
                        uid: None,
                        kind: Kind::File,
                        size: 0,
                        stored: 0,
                        outcome: PutOutcome::Failed(
                            "a hard link to a file that could not be stored".into(),
                        ),
                    });
                    return Ok(());
                };
                self.add_entry(SnapshotEntry {
                    name: name.clone(),
                    uid,
                    mac,
                    hard_link: Some(target.clone()),
                })?;
                (self.report)(&PutReport {
                    name,
                    uid: Some(uid),
                    kind: Kind::File,
                    size: 0,
                    stored: 0,
                    outcome: PutOutcome::HardLink(target),
                });
            }
            Item::Begin(file, inode) => {
                let mac = FileMac::new(self.keys, &file.record);
                self.current = Some(Current {
                    inode,
                    file: *file,
                    mac,
                    bytes: 0,
                    error: None,
                    chunks: Vec::new(),
                });
            }
            Item::Chunk(Err(e)) => {
                if let Some(cur) = self.current.as_mut() {
                    cur.error.get_or_insert(e);
                }
            }
            Item::Chunk(Ok(sealed)) => {
                let known = self.open_ids.contains(&sealed.id) || self.reusable(&sealed.id)?;
                let cur = self.current.as_mut().expect("a chunk follows its Begin");
                cur.mac.add_chunk(&sealed.id, sealed.raw_len);
                cur.bytes += u64::from(sealed.raw_len);
                cur.file.refs.push((sealed.id, sealed.raw_len));
                cur.chunks.push((sealed.id, sealed.raw_len));
                if !known {
                    if self.pack.is_none() {
                        self.pack = Some(PackWriter::create(self.backend)?);
                    }
                    let pack = self.pack.as_mut().expect("created above");
                    cur.file.stored += sealed.blob.len() as u64;
                    pack.add_owned(sealed.id, sealed.raw_len, sealed.compression, sealed.blob)?;
                    self.open_ids.insert(sealed.id);
                }
                let refs = cur.file.refs.len();
                self.progress.advance(u64::from(sealed.raw_len));
                crate::hooks::after_chunk();
                if self
                    .pack
                    .as_ref()
                    .is_some_and(|p| p.is_full(self.settings.pack_target))
                {
                    self.flush(true)?;
                } else if refs >= REF_FLUSH {
                    self.flush(false)?;
                }
            }
            Item::End { bytes, error } => {
                let cur = self.current.take().expect("an End follows its Begin");
                let error = error.or(cur.error).or_else(|| {
                    (cur.bytes != bytes || bytes != cur.file.record.size)
                        .then(|| "file changed while it was being read; try again".to_owned())
                });
                if let Some(reason) = error {
                    (self.report)(&PutReport {
                        name: cur.file.record.name.clone(),
                        uid: None,
                        kind: cur.file.record.kind,
                        size: cur.file.record.size,
                        stored: 0,
                        outcome: PutOutcome::Failed(reason),
                    });
                    // Its pending row (if any) goes when this writer ends.
                    return Ok(());
                }
                let mut file = cur.file;
                file.record.chunks = file.next_seq + file.refs.len() as u64;
                file.record.mac = cur.mac.finish();
                let r = &file.record;
                if let Some(inode) = cur.inode {
                    self.links.insert(inode, (r.name.clone(), r.uid, r.mac));
                }
                self.snapshot_queue.push_back(SnapshotEntry {
                    name: r.name.clone(),
                    uid: r.uid,
                    mac: r.mac,
                    hard_link: None,
                });
                self.queued += 1;
                self.read_done.push(ReadDone {
                    file,
                    chunks: cur.chunks,
                });
                if self.read_done.len() >= READ_DONE_FLUSH {
                    self.flush(true)?;
                }
            }
        }
        Ok(())
    }

    /// Adds an entry to the snapshot, after the entries of files still
    /// waiting for completion (walk order).
    fn add_entry(&mut self, entry: SnapshotEntry) -> Result<(), StoreError> {
        if self.snapshot_queue.is_empty() {
            self.snapshot.add(&entry)?;
        } else {
            self.snapshot_queue.push_back(entry);
            self.queued += 1;
        }
        if self.reused.len() >= PUT_REF_FLUSH {
            self.registry.add_put_refs(self.lease, &self.reused)?;
            self.reused.clear();
        }
        Ok(())
    }

    /// Writes buffered refs to the registry; with `commit_pack`, also
    /// seals the open pack and starts its commit, and names the manifest
    /// that will record the files waiting: what that completes lands once
    /// the pack and every pack before it are durable
    /// ([`Consumer::land`]).
    fn flush(&mut self, commit_pack: bool) -> Result<(), StoreError> {
        let sealed = match self.pack.take() {
            Some(pack) if commit_pack && !pack.is_empty() => Some(pack.seal(self.keys)?),
            pack => {
                self.pack = pack;
                None
            }
        };
        // The files read whole get the manifest that will record them, and
        // their final record, in this transaction (their rows written
        // once, not inserted then updated).
        let manifest = if commit_pack && !self.read_done.is_empty() {
            Some(manifest::new_manifest_name()?)
        } else {
            None
        };
        {
            let done = self.read_done.len();
            let mut files: Vec<&mut PendingFile> = self
                .read_done
                .iter_mut()
                .map(|d| &mut d.file)
                .chain(self.current.as_mut().map(|c| &mut c.file))
                .collect();
            self.registry.commit_batch(
                self.lease,
                &mut files,
                &self.reused,
                self.uids.drawn,
                manifest.as_deref().map(|name| (name, done)),
            )?;
        }
        self.reused.clear();
        self.window_open = false;
        if !commit_pack {
            return Ok(());
        }
        let pack = match sealed {
            Some(sealed) => {
                let writer = sealed.writer;
                let thread = std::thread::Builder::new()
                    .name("pack-commit".into())
                    .spawn(move || writer.commit().map_err(StoreError::from))
                    .map_err(|e| StoreError::Io {
                        path: PathBuf::from(&sealed.name),
                        source: e,
                    })?;
                Some(Committing {
                    name: sealed.name,
                    size: sealed.size,
                    entries: sealed.entries,
                    thread,
                })
            }
            None => None,
        };
        self.landings.push_back(Landing {
            pack,
            manifest: manifest.map(|name| (name, std::mem::take(&mut self.read_done))),
            release: self.queued,
        });
        self.land(self.most_landings - 1)
    }

    /// Lands pack commits in order until at most `most` are under way:
    /// those already done, then, waiting for each, the oldest.
    fn land(&mut self, most: usize) -> Result<(), StoreError> {
        while let Some(next) = self.landings.front() {
            let done = next.pack.as_ref().is_none_or(|p| p.thread.is_finished());
            if !done && self.landings.len() <= most {
                break;
            }
            let landing = self.landings.pop_front().expect("looked at above");
            self.land_one(landing)?;
        }
        Ok(())
    }

    /// Pack, then manifest, then registry: the files of `landing` become
    /// complete, and the snapshot entries it releases go in.
    fn land_one(&mut self, landing: Landing) -> Result<(), StoreError> {
        if let Some(pack) = landing.pack {
            pack.thread.join().map_err(|_| StoreError::Io {
                path: PathBuf::from(&pack.name),
                source: std::io::Error::other("the pack's commit panicked"),
            })??;
            self.registry
                .record_pack(self.lease, &pack.name, pack.size, &pack.entries)?;
            // The registry knows where these chunks are now.
            for entry in &pack.entries {
                self.open_ids.remove(&entry.id);
            }
        }
        if let Some((name, read_done)) = landing.manifest {
            self.complete_waiting(name, read_done)?;
        }
        // Entries queued after this landing's seal stay queued.
        let stay = usize::try_from(self.queued - landing.release).expect("a count of entries");
        while self.snapshot_queue.len() > stay {
            let entry = self.snapshot_queue.pop_front().expect("longer than `stay`");
            self.snapshot.add(&entry)?;
        }
        Ok(())
    }

    /// Waits for the pack commits under way without landing them (the put
    /// failed): none is left running when the put returns.
    fn abandon(&mut self) {
        for landing in self.landings.drain(..) {
            if let Some(pack) = landing.pack {
                let _ = pack.thread.join();
            }
        }
    }

    /// Manifest, then registry: the files in `read_done`, whose rows name
    /// manifest `name` already, become complete.
    fn complete_waiting(
        &mut self,
        name: String,
        read_done: Vec<ReadDone>,
    ) -> Result<(), StoreError> {
        crate::hooks::before_manifest();
        // The chunk lists are the ones the put kept (the same the registry
        // now holds), not read back from it.
        manifest::write_manifest(
            self.backend,
            self.keys,
            &name,
            read_done.len() as u64,
            |writer| {
                for d in &read_done {
                    let io = |e: std::io::Error| StoreError::Io {
                        path: PathBuf::from(&name),
                        source: e,
                    };
                    writer.record(&d.file.record).map_err(io)?;
                    for (id, len) in &d.chunks {
                        writer.chunk(id, *len).map_err(io)?;
                    }
                }
                Ok(())
            },
        )?;
        crate::hooks::before_complete();
        self.registry.complete_manifest(self.lease, &name)?;
        for d in read_done {
            (self.report)(&PutReport {
                name: d.file.record.name.clone(),
                uid: Some(d.file.record.uid),
                kind: d.file.record.kind,
                size: d.file.record.size,
                stored: d.file.stored,
                outcome: PutOutcome::Stored,
            });
        }
        Ok(())
    }
}

thread_local! {
    /// Each worker's zstd compressor (level, context), made once.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// Each worker's buffer that chunks are compressed into: sized for the
    /// worst case once, so a chunk's own buffer is allocated at its sealed
    /// size and never zeroed or shrunk whole.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hashes, compresses and seals one chunk (runs on a worker).
fn seal_chunk(keys: &StoreKeys, level: i32, data: &[u8]) -> Result<Sealed, String> {
    crate::hooks::in_chunk_task();
    let id = keys.chunk_id(data);
    let len = data.len();
    let raw_len = u32::try_from(len).map_err(|_| "chunk too large".to_owned())?;
    let bound = zstd::zstd_safe::compress_bound(len);
    // Salt, body, tag: the salt and tag room zeroed, as `seal_in_place`
    // takes them. Sized exactly: a sealed chunk may wait a while for the
    // walking thread (DECISIONS 471), and holds only what it needs.
    let sealed = |body: &[u8]| {
        let mut blob = Vec::with_capacity(BLOB_SALT_LEN + body.len() + cryptstream_format::TAG_LEN);
        blob.resize(BLOB_SALT_LEN, 0);
        blob.extend_from_slice(body);
        blob.resize(blob.len() + cryptstream_format::TAG_LEN, 0);
        blob
    };
    let compressed = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let (_, compressor) = slot.as_mut()?;
        COMPRESSED.with(|buffer| {
            let mut out = buffer.borrow_mut();
            if out.len() < bound {
                out.resize(bound, 0);
            }
            let out = &mut out[..bound];
            // A large chunk whose first SAMPLE_LEN bytes do not shrink is
            // taken as incompressible (random, already compressed,
            // encrypted) and not compressed: that costs a 64 KiB trial,
            // not a full pass.
            if len > 2 * SAMPLE_LEN {
                let n = compressor
                    .compress_to_buffer(&data[..SAMPLE_LEN], &mut *out)
                    .ok()?;
                if n * 100 >= SAMPLE_LEN * INCOMPRESSIBLE_PERCENT {
                    return None;
                }
            }
            let n = compressor.compress_to_buffer(data, &mut *out).ok()?;
            (n < len).then(|| sealed(&out[..n]))
        })
    });
    let (mut blob, compression) = match compressed {
        Some(blob) => (blob, COMPRESSION_ZSTD),
        None => (sealed(data), COMPRESSION_NONE),
    };
    blob::seal_in_place(keys, &blob::chunk_aad(&id, compression, raw_len), &mut blob)
        .map_err(|e| e.to_string())?;
    Ok(Sealed {
        id,
        raw_len,
        compression,
        blob,
    })
}

/// [`seal_chunk`], or "interrupted" at once after a signal: what is queued
/// behind the budget is not worked through before the put stops.
fn seal_unless_cancelled(
    cancel: &Cancel,
    keys: &StoreKeys,
    level: i32,
    data: &[u8],
) -> Result<Sealed, String> {
    if cancel.is_cancelled() {
        return Err("interrupted".to_owned());
    }
    seal_chunk(keys, level, data)
}

/// One entry found by the walk.
struct Entry {
    path: PathBuf,
    name: String,
    meta: Metadata,
    /// The name is not UTF-8 (shown lossily; the entry is refused).
    bad_name: bool,
}

fn source_stat(path: &Path, meta: &Metadata) -> SourceStat {
    SourceStat {
        path: path.to_string_lossy().into_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    }
}

/// The uids a put gives its new records: a random start, then one more
/// per record, in walk order (never 0). A uid only has to be unique in the
/// store; consecutive ones make the uid fields of a manifest and of the
/// snapshot compress to almost nothing where random ones cost 8 bytes a
/// record in each, and two puts' ranges meet no more often than random
/// uids would (DECISIONS 470).
struct UidSequence {
    next: u64,
    /// What it has handed out, first and last.
    drawn: Option<UidRange>,
}

impl UidSequence {
    fn new() -> Result<UidSequence, StoreError> {
        let mut bytes = [0u8; 8];
        cryptstream_format::fill_random(&mut bytes)?;
        Ok(UidSequence {
            next: u64::from_le_bytes(bytes),
            drawn: None,
        })
    }

    fn next(&mut self) -> u64 {
        loop {
            let uid = self.next;
            self.next = self.next.wrapping_add(1);
            if uid != 0 {
                let first = self.drawn.map_or(uid, |d| d.first);
                self.drawn = Some(UidRange { first, last: uid });
                return uid;
            }
        }
    }
}

/// Now, in nanoseconds since 1970 (UTC).
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Walks `path` (named `name` in the store) depth first in name order,
/// calling `each` for every entry; returns false when `each` asked to stop.
fn walk(
    path: &Path,
    name: String,
    meta: Metadata,
    bad_name: bool,
    each: &mut dyn FnMut(Entry) -> bool,
) -> bool {
    let is_dir = meta.is_dir();
    if !each(Entry {
        path: path.to_path_buf(),
        name: name.clone(),
        meta,
        bad_name,
    }) {
        return false;
    }
    if !is_dir || bad_name {
        return true;
    }
    let mut children: Vec<_> = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect(),
        Err(_) => return true,
    };
    children.sort();
    for child in children {
        let child_path = path.join(&child);
        let child_name = format!("{name}/{}", child.to_string_lossy());
        let Ok(meta) = std::fs::symlink_metadata(&child_path) else {
            continue;
        };
        if !walk(
            &child_path,
            child_name,
            meta,
            child.to_str().is_none(),
            each,
        ) {
            return false;
        }
    }
    true
}

/// A path given on the command line as the snapshot records it: absolute,
/// without `.` parts, and resolved when it ends in `..` (so that its last
/// component is the name its tree has in the store).
fn recorded_path(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let normal: PathBuf = absolute.components().collect();
    let resolved = if normal.file_name().is_none() {
        std::fs::canonicalize(path).unwrap_or(normal)
    } else {
        normal
    };
    resolved.to_string_lossy().into_owned()
}

/// The store name of a path given on the command line: its last component.
fn root_name(path: &Path) -> Option<String> {
    let absolute = std::path::absolute(path).ok()?;
    let normal: PathBuf = absolute.components().collect();
    let canonical = if normal.file_name().is_none() {
        std::fs::canonicalize(path).ok()?
    } else {
        normal
    };
    canonical.file_name()?.to_str().map(str::to_owned)
}

impl Store {
    /// Stores `paths` (files and trees) and records them as one snapshot,
    /// returned (`None` when nothing was stored). `report` hears about
    /// every entry as soon as its fate is known (stored entries once
    /// durable).
    ///
    /// # Errors
    /// Two paths of the same name ([`StoreError::Usage`], before anything
    /// is stored); a failure of the store itself (backend, registry);
    /// per-file failures are reported, not returned.
    /// [`StoreError::Cancelled`] after `opts.cancel` (complete files stay
    /// complete; no snapshot is recorded).
    pub fn put(
        &mut self,
        pool: &Pool,
        paths: &[PathBuf],
        opts: &PutOptions,
        progress: &dyn Progress,
        report: &mut dyn FnMut(&PutReport),
    ) -> Result<Option<SnapshotRow>, StoreError> {
        let mut names = HashMap::new();
        for path in paths {
            if let Some(name) = root_name(path) {
                if let Some(other) = names.insert(name.clone(), path) {
                    return Err(StoreError::Usage(format!(
                        "{} and {} would both be named {name} in the snapshot; \
                         put them in two runs (nothing was stored)",
                        other.display(),
                        path.display()
                    )));
                }
            }
        }
        if self.needs_migration()? {
            return Err(needs_migration());
        }
        let lease = self.registry.register_writer(Role::Put)?;
        let result = self.put_with_lease(pool, paths, opts, progress, report, lease);
        let ended = self.registry.end_writer(lease);
        let snapshot = result?;
        ended?;
        Ok(snapshot)
    }

    fn put_with_lease(
        &mut self,
        pool: &Pool,
        paths: &[PathBuf],
        opts: &PutOptions,
        progress: &dyn Progress,
        report: &mut dyn FnMut(&PutReport),
        lease: WriterLease,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        let Store {
            backend,
            registry,
            keys,
            settings,
            ..
        } = self;
        let keys: &StoreKeys = keys;
        let settings: &Settings = settings;
        let chunker = settings.chunker;
        let level = settings.zstd_level;
        let seed = keys.chunker_seed();
        let meta = SnapshotMeta {
            name: crate::snapshot::new_snapshot_name()?,
            time_ns: now_ns(),
            host: opts.host.clone().unwrap_or_else(crate::registry::host),
            paths: paths.iter().map(|p| recorded_path(p)).collect(),
            tags: opts.tags.clone(),
        };
        let snapshot = SnapshotWriter::create(&**backend, keys, &meta)?;
        let landings = most_landings(&**backend, settings.pack_target, opts.max_memory);
        let consumer = RefCell::new(Consumer {
            registry,
            backend: &**backend,
            keys,
            settings,
            lease,
            pack: None,
            open_ids: HashSet::new(),
            packs_present: HashMap::new(),
            current: None,
            read_done: Vec::new(),
            landings: VecDeque::new(),
            most_landings: landings,
            failed: None,
            progress,
            report,
            cancel: &opts.cancel,
            skipping: false,
            snapshot,
            snapshot_queue: VecDeque::new(),
            queued: 0,
            reused: Vec::new(),
            window_open: true,
            inodes_seen: HashSet::new(),
            links: HashMap::new(),
            uids: UidSequence::new()?,
        });
        let cancel = &opts.cancel;
        // The packs committing while the next one fills (object storage
        // holds each in memory until it is sent) come out of the budget;
        // one was always there (the pack being committed).
        let budget = opts
            .max_memory
            .saturating_sub((landings as u64 - 1) * settings.pack_target)
            .max(2 * u64::from(chunker.max) + TASK_OVERHEAD);
        let sealer = Sealer {
            keys,
            chunker,
            level,
            seed,
        };
        pool.scope(|scope| {
            let mut ordered =
                scope.ordered(budget, |item: Item| consumer.borrow_mut().consume(item));
            let mut batch = Batch::default();
            let stop =
                |c: &RefCell<Consumer<'_>>| cancel.is_cancelled() || c.borrow().failed.is_some();
            for path in paths {
                if stop(&consumer) {
                    break;
                }
                let failed = |name: String, reason: String| PutReport {
                    name,
                    uid: None,
                    kind: Kind::File,
                    size: 0,
                    stored: 0,
                    outcome: PutOutcome::Failed(reason),
                };
                let shown = path.display().to_string();
                let Some(name) = root_name(path) else {
                    (consumer.borrow_mut().report)(&failed(
                        shown,
                        "cannot name it in the store (not UTF-8, or no file name)".into(),
                    ));
                    continue;
                };
                let meta = match std::fs::metadata(path) {
                    Ok(meta) => meta,
                    Err(e) => {
                        (consumer.borrow_mut().report)(&failed(shown, e.to_string()));
                        continue;
                    }
                };
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                walk(&absolute, name, meta, false, &mut |entry| {
                    if stop(&consumer) {
                        return false;
                    }
                    submit_entry(&mut ordered, &mut batch, &consumer, entry, opts, sealer);
                    true
                });
            }
            batch.send(&mut ordered, sealer, cancel);
            ordered.finish();
        });
        let mut consumer = consumer.into_inner();
        if let Some(e) = consumer.failed.take() {
            consumer.abandon();
            return Err(e);
        }
        if let Err(e) = consumer.flush(true).and_then(|()| consumer.land(0)) {
            consumer.abandon();
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(StoreError::Cancelled);
        }
        // Every file the snapshot names is complete: the snapshot is
        // committed last, then the registry learns it.
        let Consumer {
            registry,
            snapshot,
            reused,
            ..
        } = consumer;
        if snapshot.entries() == 0 {
            return Ok(None);
        }
        registry.add_put_refs(lease, &reused)?;
        crate::hooks::before_snapshot();
        let (entries, size) = snapshot.commit()?;
        let row = meta.into_row(entries, size);
        registry.record_snapshot(lease, &row)?;
        Ok(Some(row))
    }
}

/// How many pack commits a put has under way at once, the one just sealed
/// included: as many as the backend takes ([`Backend::write_streams`]),
/// while each pack (which object storage holds in memory until it is
/// sent) fits twice in `max_memory`. With one, a put waits for each
/// commit before it fills the next pack.
fn most_landings(backend: &dyn Backend, pack_target: u64, max_memory: u64) -> usize {
    let fit = usize::try_from(max_memory / (2 * pack_target).max(1)).unwrap_or(usize::MAX);
    backend.write_streams().min(fit).max(1)
}

/// The one line that says a store from before snapshots must be migrated.
pub(crate) fn needs_migration() -> StoreError {
    StoreError::Usage(
        "this store was made before snapshots: run `cryptstream store migrate` once \
         (it records one snapshot holding the newest version of every name)"
            .into(),
    )
}

/// The registry's unchanged row for `name` from `source`, if its record
/// and chunk list still authenticate (else the file is read again). A row
/// that some snapshot references is safe to reuse until this put ends (its
/// references can only drop to zero after this put registered, and gc
/// keeps such rows while it runs; docs/STORE.md "gc"); a row that none
/// references (left by an interrupted put) is reused only once this put
/// has claimed it in the registry.
fn unchanged_row(
    registry: &mut Registry,
    lease: WriterLease,
    keys: &StoreKeys,
    name: &str,
    source: &SourceStat,
) -> Result<Option<FileRow>, StoreError> {
    let Some((row, refs)) = registry.unchanged(name, source)? else {
        return Ok(None);
    };
    let mut mac = FileMac::new(keys, &row.record);
    registry.for_each_chunk(row.row, |id, len| {
        mac.add_chunk(&id, len);
        Ok(())
    })?;
    if mac.finish() != row.record.mac {
        return Ok(None);
    }
    if refs == 0 && !registry.claim(lease, row.record.uid)? {
        return Ok(None);
    }
    Ok(Some(row))
}

/// What a worker needs to chunk and seal.
#[derive(Clone, Copy)]
struct Sealer<'env> {
    keys: &'env StoreKeys,
    chunker: crate::ChunkerParams,
    level: i32,
    seed: u64,
}

/// Most files (and other entries) in one batch.
const BATCH_ENTRIES: usize = 256;
/// Most bytes a batch accounts for (its files' buffers).
const BATCH_COST: u64 = 4 * 1024 * 1024;

/// Tasks per worker a put's pool should queue (`Pool::with_queue`): a
/// queued batch is paths and sizes, its files are read when it runs, so
/// a deep queue costs little memory (what its results hold stays within
/// `--max-memory`). With 32 per worker and batches of [`BATCH_ENTRIES`]
/// the workers have some 16,000 small files to go on while the walking
/// thread commits 16,384 files to the registry (200-300 ms), where with
/// two batches of 64 they ran dry after a few milliseconds (DECISIONS
/// 471).
pub const PUT_QUEUED_TASKS_PER_WORKER: usize = 32;

/// Nice steps a put's workers run below its walking thread
/// (`Pool::with_queue_below_caller`). The walking thread takes the
/// workers' results in order and does the put's serial part (registry,
/// packs, manifests: about a quarter of its CPU on a tree of small files);
/// at equal priority it fell behind on two cores and finished that backlog
/// alone after the workers were done. Five steps let it run whenever it
/// has work: the 80,000-file put took 2.42 s instead of 2.60 (median of 8
/// alternated pairs; 19 steps measured the same; DECISIONS 568).
pub const PUT_WORKER_NICE_STEPS: u8 = 5;

/// Entries of the walk gathered for one worker task. A tree of small
/// files would otherwise cost three pool tasks per file (its Begin, its
/// chunk, its End), each a hand-off between threads, and leave the
/// walking thread opening and reading every file while the workers idle:
/// a batch's files (up to 8 MiB each, [`read_on_worker`]) are opened,
/// read, chunked and sealed on the worker, and the walk's other entries
/// ride along, in order.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    cost: u64,
}

/// One entry of a [`Batch`].
enum Job {
    /// An item the walking thread already made.
    Ready(Item),
    /// A file read whole (its size from the walk's stat; see
    /// [`read_on_worker`]), to open, read, chunk and seal on the worker.
    Whole {
        path: PathBuf,
        name: String,
        size: u64,
        inode: Option<Inode>,
        /// Its record's uid (given in walk order, here).
        uid: u64,
    },
}

impl Batch {
    /// Adds an item that needs no work.
    fn ready<'env, C: FnMut(Item)>(
        &mut self,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        sealer: Sealer<'env>,
        cancel: &Cancel,
        item: Item,
    ) {
        self.push(ordered, sealer, cancel, Job::Ready(item));
    }

    /// Adds a file read whole on the worker (sending the batch first when
    /// it is full).
    fn whole<'env, C: FnMut(Item)>(
        &mut self,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        sealer: Sealer<'env>,
        cancel: &Cancel,
        job: Job,
        cost: u64,
    ) {
        if self.cost + cost > BATCH_COST {
            self.send(ordered, sealer, cancel);
        }
        self.cost += cost;
        self.push(ordered, sealer, cancel, job);
    }

    /// Adds `job`, sending the batch when it holds [`BATCH_ENTRIES`].
    fn push<'env, C: FnMut(Item)>(
        &mut self,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        sealer: Sealer<'env>,
        cancel: &Cancel,
        job: Job,
    ) {
        self.jobs.push(job);
        if self.jobs.len() >= BATCH_ENTRIES {
            self.send(ordered, sealer, cancel);
        }
    }

    /// Sends the gathered entries as one task (nothing when empty).
    fn send<'env, C: FnMut(Item)>(
        &mut self,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        sealer: Sealer<'env>,
        cancel: &Cancel,
    ) {
        if self.jobs.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.jobs);
        let cost = std::mem::take(&mut self.cost);
        let cancel = cancel.clone();
        ordered.submit(cost, move |_| {
            let mut items = Vec::with_capacity(jobs.len() * 3);
            for job in jobs {
                match job {
                    Job::Ready(item) => items.push(item),
                    Job::Whole {
                        path,
                        name,
                        size,
                        inode,
                        uid,
                    } => {
                        let file = WholeFile {
                            path: &path,
                            name,
                            size,
                            inode,
                            uid,
                        };
                        whole_file(sealer, &cancel, file, &mut items);
                    }
                }
            }
            Item::Batch(items)
        });
    }
}

/// A file a worker reads whole and stores: what the walk knew of it.
struct WholeFile<'a> {
    path: &'a Path,
    name: String,
    size: u64,
    inode: Option<Inode>,
    uid: u64,
}

/// Opens, reads, chunks and seals one file read whole (on a worker): its
/// Begin, chunks and End, or a failure.
fn whole_file(sealer: Sealer<'_>, cancel: &Cancel, file: WholeFile<'_>, items: &mut Vec<Item>) {
    use std::io::Read;
    let WholeFile {
        path,
        name,
        size,
        inode,
        uid,
    } = file;
    let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m)));
    let (file, stat) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            items.push(Item::Failed(PutReport {
                name,
                uid: None,
                kind: Kind::File,
                size,
                stored: 0,
                outcome: PutOutcome::Failed(e.to_string()),
            }));
            return;
        }
    };
    let source = source_stat(path, &stat);
    let pending = pending_file(uid, name, Kind::File, &stat, Vec::new(), source);
    items.push(Item::Begin(pending, inode));
    // At most one byte more than the walk's stat said (what the batch
    // accounts for, whatever the file has grown to since): a file that
    // grew is read no further, and fails as changed while read.
    let limit = size.min(stat.len()) + 1;
    let mut data = Vec::with_capacity(limit as usize);
    let (bytes, error) = match file.take(limit).read_to_end(&mut data) {
        Ok(n) => {
            for (offset, length) in cut(sealer, &data) {
                items.push(Item::Chunk(seal_unless_cancelled(
                    cancel,
                    sealer.keys,
                    sealer.level,
                    &data[offset..offset + length],
                )));
            }
            (n as u64, None)
        }
        Err(e) => (0, Some(format!("read error: {e}"))),
    };
    items.push(Item::End { bytes, error });
}

/// Whether a file of `len` bytes is opened, read, chunked and sealed
/// whole on a worker (in a [`Batch`]) rather than read and chunked on the
/// walking thread with its chunks sealed on the workers. Files of one
/// chunk always are; a file of several up to [`WHOLE_FILE_MAX`] is too
/// when four such tasks fit in `max_memory`. The walking thread reading
/// and cutting every file was the put's ceiling on many cores: 1000 x 1
/// MiB went no faster with 16 workers than with one (DECISIONS 575).
fn read_on_worker(len: u64, chunker: crate::ChunkerParams, max_memory: u64) -> bool {
    len <= u64::from(chunker.min)
        || (len <= WHOLE_FILE_MAX && 4 * (2 * len + TASK_OVERHEAD) <= max_memory)
}

/// The chunk boundaries of a file read whole: offset and length of each.
fn cut(sealer: Sealer<'_>, data: &[u8]) -> Vec<(usize, usize)> {
    let chunker = sealer.chunker;
    fastcdc::v2020::FastCDC::with_level_and_seed(
        data,
        chunker.min,
        chunker.avg,
        chunker.max,
        Normalization::Level1,
        sealer.seed,
    )
    .map(|c| (c.offset, c.length))
    .collect()
}

/// A new pending file: its record, from `stat` (`link`: a symlink's
/// target), under the fresh `uid`.
fn pending_file(
    uid: u64,
    name: String,
    kind: Kind,
    stat: &Metadata,
    link: Vec<u8>,
    source: SourceStat,
) -> Box<PendingFile> {
    let size = match kind {
        Kind::File => stat.len(),
        Kind::Symlink | Kind::Dir => 0,
    };
    let record = FileRecord {
        uid,
        name,
        kind,
        mode: stat.mode() & 0o7777,
        mtime: (stat.mtime(), stat.mtime_nsec().clamp(0, 999_999_999) as u32),
        size,
        link,
        created: now(),
        chunks: 0,
        mac: [0; 32],
    };
    Box::new(PendingFile {
        record,
        source: Some(source),
        row: None,
        next_seq: 0,
        refs: Vec::new(),
        stored: 0,
    })
}

/// Sends one entry through the pipeline: Begin, its chunks, End (a file
/// read on a worker, and any entry that needs no reading, through
/// `batch`).
fn submit_entry<'env, C: FnMut(Item)>(
    ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
    batch: &mut Batch,
    consumer: &RefCell<Consumer<'_>>,
    entry: Entry,
    opts: &PutOptions,
    sealer: Sealer<'env>,
) {
    let Sealer {
        keys,
        chunker,
        level,
        seed,
    } = sealer;
    let cancel = &opts.cancel;
    let meta = &entry.meta;
    if entry.bad_name {
        (consumer.borrow_mut().report)(&PutReport {
            name: entry.name,
            uid: None,
            kind: Kind::File,
            size: 0,
            stored: 0,
            outcome: PutOutcome::Failed(
                "its name is not UTF-8; not stored (with what is below it)".into(),
            ),
        });
        return;
    }
    let kind = if meta.is_dir() {
        Kind::Dir
    } else if meta.file_type().is_symlink() {
        Kind::Symlink
    } else if meta.is_file() {
        Kind::File
    } else {
        (consumer.borrow_mut().report)(&PutReport {
            name: entry.name,
            uid: None,
            kind: Kind::File,
            size: 0,
            stored: 0,
            outcome: PutOutcome::Skipped("not a regular file, directory or symbolic link".into()),
        });
        return;
    };
    let mut inode = None;
    if kind == Kind::File && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if !consumer.borrow_mut().inodes_seen.insert(key) {
            let name = entry.name;
            batch.ready(ordered, sealer, cancel, Item::HardLink { name, inode: key });
            return;
        }
        inode = Some(key);
    }
    let mut source = source_stat(&entry.path, meta);
    if !opts.force_read {
        let found = {
            let c = &mut *consumer.borrow_mut();
            c.open_window().and_then(|()| {
                c.registry.hold_reads()?;
                let row = unchanged_row(c.registry, c.lease, keys, &entry.name, &source)?;
                // Recorded as relied on from the moment it is decided: the
                // next batch commit puts it in `put_refs` (DECISIONS 300).
                if let Some(row) = &row {
                    c.reused.push(row.record.uid);
                }
                Ok(row)
            })
        };
        match found {
            Ok(Some(row)) => {
                consumer.borrow().progress.advance(meta.len());
                let item = Item::Unchanged(Box::new(row), inode);
                batch.ready(ordered, sealer, cancel, item);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                consumer.borrow_mut().failed.get_or_insert(e);
                return;
            }
        }
    }
    if kind == Kind::File && read_on_worker(meta.len(), chunker, opts.max_memory) {
        crate::hooks::after_chunk();
        let cost = 2 * meta.len() + TASK_OVERHEAD;
        let job = Job::Whole {
            path: entry.path,
            name: entry.name,
            size: meta.len(),
            inode,
            uid: consumer.borrow_mut().uids.next(),
        };
        batch.whole(ordered, sealer, cancel, job, cost);
        return;
    }
    let failed = |reason: String| PutReport {
        name: entry.name.clone(),
        uid: None,
        kind,
        size: meta.len(),
        stored: 0,
        outcome: PutOutcome::Failed(reason),
    };
    let (file, link) = match kind {
        Kind::File => match File::open(&entry.path) {
            Ok(f) => match f.metadata() {
                Ok(m) => {
                    source = source_stat(&entry.path, &m);
                    (Some((f, m)), Vec::new())
                }
                Err(e) => return (consumer.borrow_mut().report)(&failed(e.to_string())),
            },
            Err(e) => return (consumer.borrow_mut().report)(&failed(e.to_string())),
        },
        Kind::Symlink => match std::fs::read_link(&entry.path) {
            Ok(target) => (
                None,
                std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()).to_vec(),
            ),
            Err(e) => return (consumer.borrow_mut().report)(&failed(e.to_string())),
        },
        Kind::Dir => (None, Vec::new()),
    };
    let stat = file.as_ref().map_or(meta, |(_, m)| m);
    let uid = consumer.borrow_mut().uids.next();
    let pending = pending_file(uid, entry.name.clone(), kind, stat, link, source);
    let Some((mut file, stat)) = file else {
        // A directory or symlink: nothing to read.
        batch.ready(ordered, sealer, cancel, Item::Begin(pending, inode));
        let end = Item::End {
            bytes: 0,
            error: None,
        };
        batch.ready(ordered, sealer, cancel, end);
        return;
    };
    // A file of more than one chunk: the batch before it goes first.
    batch.send(ordered, sealer, cancel);
    ordered.submit(0, move |_| Item::Begin(pending, inode));
    let mut bytes = 0u64;
    let mut error = None;
    {
        if stat.len() <= WHOLE_FILE_MAX {
            // A file of at most 8 MiB that `read_on_worker` left here (a
            // small --max-memory) is read whole once and its chunks are
            // slices of that one buffer (no per-file chunker buffer, no
            // copies).
            let mut data = Vec::with_capacity(stat.len() as usize + 1);
            match std::io::Read::read_to_end(&mut file, &mut data) {
                Ok(_) => {
                    let data = std::sync::Arc::new(data);
                    bytes = data.len() as u64;
                    for (offset, length) in cut(sealer, &data) {
                        let data = data.clone();
                        let cost = 2 * length as u64 + TASK_OVERHEAD;
                        let cancel = opts.cancel.clone();
                        ordered.submit(cost, move |_| {
                            Item::Chunk(seal_unless_cancelled(
                                &cancel,
                                keys,
                                level,
                                &data[offset..offset + length],
                            ))
                        });
                    }
                }
                Err(e) => error = Some(format!("read error: {e}")),
            }
        } else {
            let chunks = StreamCDC::with_level_and_seed(
                file,
                chunker.min,
                chunker.avg,
                chunker.max,
                Normalization::Level1,
                seed,
            );
            for chunk in chunks {
                if opts.cancel.is_cancelled() || consumer.borrow().failed.is_some() {
                    error = Some("interrupted".to_owned());
                    break;
                }
                match chunk {
                    Ok(chunk) => {
                        let data = chunk.data;
                        bytes += data.len() as u64;
                        let cost = 2 * data.len() as u64 + TASK_OVERHEAD;
                        let cancel = opts.cancel.clone();
                        ordered.submit(cost, move |_| {
                            Item::Chunk(seal_unless_cancelled(&cancel, keys, level, &data))
                        });
                    }
                    Err(e) => {
                        error = Some(format!("read error: {e}"));
                        break;
                    }
                }
            }
        }
    }
    ordered.submit(0, move |_| Item::End { bytes, error });
}

#[cfg(test)]
mod tests {
    use super::{UidRange, UidSequence};

    #[test]
    fn uids_follow_each_other_and_skip_zero_when_they_wrap() {
        let mut uids = UidSequence {
            next: u64::MAX - 1,
            drawn: None,
        };
        let got: Vec<u64> = (0..4).map(|_| uids.next()).collect();
        assert_eq!(got, [u64::MAX - 1, u64::MAX, 1, 2]);
        assert_eq!(
            uids.drawn,
            Some(UidRange {
                first: u64::MAX - 1,
                last: 2
            })
        );
    }
}
