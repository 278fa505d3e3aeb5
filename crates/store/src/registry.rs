//! The registry: a SQLite database (WAL mode) that indexes the store.
//!
//! It holds packs, chunks (id -> pack, offset, lengths), files (records,
//! status, source stat for the unchanged-file check), chunk lists and the
//! writers in progress. Every question is a query; nothing is loaded whole.
//! Writers use `BEGIN IMMEDIATE` transactions (one writer at a time, the
//! others wait up to [`BUSY_TIMEOUT`]); readers never block writers. See
//! docs/STORE.md for the schema and why concurrent puts and gc are safe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::manifest::{FileRecord, Kind};
use crate::pack::PackEntry;
use crate::StoreError;

/// How long a writer waits for another writer's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// A writer on another host whose heartbeat is older than this is gone.
const STALE_WRITER_SECS: i64 = 3600;
/// The epoch of a put writer whose every decision to rely on a chunk or a
/// record is in the registry (its decision window is closed): it bounds
/// no sweep (docs/STORE.md "gc", DECISIONS 300).
pub const WINDOW_CLOSED: i64 = i64::MAX;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('epoch', 0);
CREATE TABLE IF NOT EXISTS packs(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
  id BLOB PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL, stored_len INTEGER NOT NULL,
  raw_len INTEGER NOT NULL, compression INTEGER NOT NULL, garbage_epoch INTEGER) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS files(
  id INTEGER PRIMARY KEY, uid INTEGER NOT NULL UNIQUE, name TEXT NOT NULL, kind INTEGER NOT NULL,
  mode INTEGER NOT NULL, mtime_s INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
  link BLOB NOT NULL, created INTEGER NOT NULL, chunks INTEGER NOT NULL, stored INTEGER NOT NULL,
  mac BLOB, status TEXT NOT NULL, writer INTEGER, manifest TEXT,
  source TEXT, src_dev INTEGER, src_ino INTEGER, src_size INTEGER, src_mtime_s INTEGER,
  src_mtime_ns INTEGER, src_ctime_s INTEGER, src_ctime_ns INTEGER,
  refs INTEGER NOT NULL DEFAULT 0, unref_epoch INTEGER);
DROP INDEX IF EXISTS files_name;
DROP INDEX IF EXISTS files_source;
DROP INDEX IF EXISTS files_status;
CREATE INDEX IF NOT EXISTS files_pending ON files(writer) WHERE writer IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_manifest ON files(manifest);
CREATE INDEX IF NOT EXISTS files_newest ON files(name, created DESC, id DESC) WHERE status = 'complete';
CREATE TABLE IF NOT EXISTS file_chunks(
  file INTEGER NOT NULL, seq INTEGER NOT NULL, chunk BLOB NOT NULL, len INTEGER NOT NULL,
  PRIMARY KEY(file, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS file_chunks_chunk ON file_chunks(chunk);
CREATE TABLE IF NOT EXISTS snapshots(
  name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, time_ns INTEGER NOT NULL, host TEXT NOT NULL,
  paths TEXT NOT NULL, tags TEXT NOT NULL, entries INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS put_refs(
  writer INTEGER NOT NULL, uid INTEGER NOT NULL, PRIMARY KEY(writer, uid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS put_refs_uid ON put_refs(uid);
CREATE TABLE IF NOT EXISTS writers(
  id INTEGER PRIMARY KEY, role TEXT NOT NULL, epoch INTEGER NOT NULL, pid INTEGER NOT NULL,
  start_ticks INTEGER NOT NULL, host TEXT NOT NULL, started INTEGER NOT NULL, heartbeat INTEGER NOT NULL,
  uids_first INTEGER, uids_last INTEGER);
";

/// Status of a file row.
pub const STATUS_PENDING: &str = "pending";
/// Status of a file whose data and manifest are durable.
pub const STATUS_COMPLETE: &str = "complete";
/// Status of a file being deleted.
pub const STATUS_DELETING: &str = "deleting";

/// What a writer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A put (may reuse existing chunks).
    Put,
    /// A gc (one at a time).
    Gc,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Put => "put",
            Role::Gc => "gc",
        }
    }
}

/// A registered writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterLease {
    /// Its row id.
    pub id: i64,
    /// The epoch at which it registered.
    pub epoch: i64,
}

/// Where the stat of a source file came from, for the unchanged check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStat {
    /// Absolute path of the source.
    pub path: String,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size.
    pub size: u64,
    /// Modification time.
    pub mtime: (i64, i64),
    /// Change time.
    pub ctime: (i64, i64),
}

/// A file row as listed.
#[derive(Clone, Debug)]
pub struct FileRow {
    /// Row id.
    pub row: i64,
    /// The record.
    pub record: FileRecord,
    /// Bytes this file added to the store (new chunks).
    pub stored: u64,
    /// Status.
    pub status: String,
}

/// A chunk's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Pack object name.
    pub pack: String,
    /// Offset of the blob.
    pub offset: u64,
    /// Blob length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Compression byte.
    pub compression: u8,
}

/// A file being put: its row (once inserted) and chunk refs not yet in the
/// registry.
pub struct PendingFile {
    /// The record (chunks and mac filled in when complete).
    pub record: FileRecord,
    /// The source stat.
    pub source: Option<SourceStat>,
    /// Row id once inserted.
    pub row: Option<i64>,
    /// Next sequence number to insert.
    pub next_seq: u64,
    /// Refs not yet inserted: id, length.
    pub refs: Vec<([u8; 32], u32)>,
    /// Bytes of new chunks this file added.
    pub stored: u64,
}

/// The uids a put has drawn, in the order it drew them: `first` to
/// `last`, each one more than the one before, wrapping (DECISIONS 470).
/// The put's new rows carry its snapshot's reference from the start, and
/// this range is how a put that ends without a snapshot (failed, killed)
/// finds them to take that reference back (DECISIONS 510).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid drawn.
    pub first: u64,
    /// The last uid drawn.
    pub last: u64,
}

impl UidRange {
    /// The range as the registry's signed integers compare it: one
    /// interval, or two where it passes from `i64::MAX` to `i64::MIN`.
    fn intervals(self) -> impl Iterator<Item = (i64, i64)> {
        let (first, last) = (self.first as i64, self.last as i64);
        let (one, two) = if first <= last {
            ((first, last), None)
        } else {
            ((first, i64::MAX), Some((i64::MIN, last)))
        };
        std::iter::once(one).chain(two)
    }

    /// The range a put wrote in its writer row, if any.
    fn of_writer(
        tx: &rusqlite::Transaction<'_>,
        writer: i64,
    ) -> rusqlite::Result<Option<UidRange>> {
        tx.prepare_cached(UIDS_OF)?
            .query_row([writer], |r| {
                Ok(UidRange {
                    first: r.get::<_, i64>(0)? as u64,
                    last: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()
    }
}

/// A snapshot as the registry lists it (a cache of its object's head).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRow {
    /// Its object name.
    pub name: String,
    /// When it was taken: ns since 1970, UTC.
    pub time_ns: i64,
    /// The host.
    pub host: String,
    /// The paths given, absolute.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its entries.
    pub entries: u64,
    /// Its object's size.
    pub size: u64,
}

/// Dead writers' ids, and their pending files: (row, manifest named).
pub type DeadWriters = (Vec<i64>, Vec<(i64, Option<String>)>);

/// The open registry.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
    /// A read transaction [`Registry::hold_reads`] began, which the next
    /// write ends.
    read_held: bool,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// This process's start time in clock ticks since boot (field 22 of
/// `/proc/self/stat`), which with the pid names the process uniquely.
fn start_ticks(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A file row from a statement that selects [`FILE_COLUMNS`] first, in
/// that order (every such statement does; positions, because looking a
/// column up by name compares strings on every row of a large `get`).
fn row_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let kind: u8 = row.get(3)?;
    let mac: Option<Vec<u8>> = row.get(12)?;
    let mut mac_bytes = [0u8; 32];
    if let Some(mac) = mac.filter(|m| m.len() == 32) {
        mac_bytes.copy_from_slice(&mac);
    }
    Ok(FileRow {
        row: row.get(0)?,
        record: FileRecord {
            uid: row.get::<_, i64>(1)? as u64,
            name: row.get(2)?,
            kind: Kind::from_id(kind).unwrap_or(Kind::File),
            mode: row.get(4)?,
            mtime: (row.get(5)?, row.get(6)?),
            size: row.get::<_, i64>(7)? as u64,
            link: row.get(8)?,
            created: row.get(9)?,
            chunks: row.get::<_, i64>(10)? as u64,
            mac: mac_bytes,
        },
        stored: row.get::<_, i64>(11)? as u64,
        status: row.get(13)?,
    })
}

/// The columns of a file row, in the order [`row_record`] reads them.
macro_rules! file_columns {
    () => {
        "id, uid, name, kind, mode, mtime_s, mtime_ns, size, link, created, chunks, stored, mac, status"
    };
}

const FILE_COLUMNS: &str = file_columns!();

/// The statements that run once per entry, chunk or object of a command.
/// Each must find its rows through an index: one full scan in any of them
/// makes a command quadratic in the size of the store (a `get` of an
/// 80,000-entry tree once wrote nothing in ten minutes). The unit test
/// `per_entry_statements_search_through_indexes` reads the query plan of
/// every one listed in [`PER_ENTRY`].
mod per_entry {
    /// The pack of a chunk that may be reused (put, per chunk).
    pub const CHUNK_USABLE: &str = "SELECT p.name FROM chunks c JOIN packs p ON p.id = c.pack
         WHERE c.id = ?1 AND c.garbage_epoch IS NULL";
    /// The chunks of a pack that is gone from the store no longer count
    /// as stored (put, per missing pack).
    pub const FORGET_PACK: &str = "UPDATE chunks SET garbage_epoch = 0
         WHERE pack = (SELECT id FROM packs WHERE name = ?1) AND garbage_epoch IS NULL";
    /// The unchanged-file check (put, per entry).
    pub const UNCHANGED: &str = concat!(
        "SELECT ",
        file_columns!(),
        ", refs FROM files WHERE source = ?1 AND name = ?2 AND status = 'complete'
         AND src_dev = ?3 AND src_ino = ?4 AND src_size = ?5 AND src_mtime_s = ?6
         AND src_mtime_ns = ?7 AND src_ctime_s = ?8 AND src_ctime_ns = ?9
         ORDER BY created DESC LIMIT 1"
    );
    /// A put claims a complete row no snapshot references (put, per such
    /// reused entry).
    pub const CLAIM: &str = "INSERT OR IGNORE INTO put_refs(writer, uid)
         SELECT ?1, uid FROM files WHERE uid = ?2 AND status = 'complete'";
    /// Whether a put holds a reference to a uid (put, per claimed entry).
    pub const HAS_PUT_REF: &str = "SELECT 1 FROM put_refs WHERE writer = ?1 AND uid = ?2";
    /// A uid a put references (put, per new or reused entry).
    pub const ADD_PUT_REF: &str = "INSERT OR IGNORE INTO put_refs(writer, uid) VALUES (?1, ?2)";
    /// One less snapshot references a file (forget, per entry).
    pub const UNREF: &str = "UPDATE files SET refs = refs - 1,
         unref_epoch = CASE WHEN refs = 1 THEN ?2 ELSE unref_epoch END
         WHERE uid = ?1 AND refs > 0";
    /// Whether a snapshot object is known (gc, per object).
    pub const HAS_SNAPSHOT: &str = "SELECT 1 FROM snapshots WHERE name = ?1";
    /// A chunk of a committed pack (put, per chunk).
    pub const INSERT_CHUNK: &str =
        "INSERT INTO chunks(id, pack, offset, stored_len, raw_len, compression)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET pack = excluded.pack, offset = excluded.offset,
           stored_len = excluded.stored_len, raw_len = excluded.raw_len,
           compression = excluded.compression, garbage_epoch = NULL
         WHERE chunks.garbage_epoch IS NOT NULL";
    /// A new pending file (put, per entry). It carries the reference of
    /// the put's snapshot from the start (`refs = 1`, DECISIONS 510).
    pub const INSERT_FILE: &str =
        "INSERT INTO files(uid, name, kind, mode, mtime_s, mtime_ns, size, link, created,
           chunks, stored, mac, status, writer, source, src_dev, src_ino, src_size,
           src_mtime_s, src_mtime_ns, src_ctime_s, src_ctime_ns, refs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, 0, NULL, 'pending', ?10, ?11,
           ?12, ?13, ?14, ?15, ?16, ?17, ?18, 1)";
    /// A new pending file already read whole, with its final record and
    /// the manifest that will record it (put, per entry): the row
    /// [`INSERT_FILE`] then [`SET_MANIFEST`] make, in one statement.
    pub const INSERT_DONE_FILE: &str =
        "INSERT INTO files(uid, name, kind, mode, mtime_s, mtime_ns, size, link, created,
           chunks, stored, mac, status, writer, source, src_dev, src_ino, src_size,
           src_mtime_s, src_mtime_ns, src_ctime_s, src_ctime_ns, manifest, refs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?19, ?20, ?21, 'pending', ?10, ?11,
           ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?22, 1)";
    /// A chunk reference (put and reindex, per chunk).
    pub const INSERT_REF: &str =
        "INSERT INTO file_chunks(file, seq, chunk, len) VALUES (?1, ?2, ?3, ?4)";
    /// A file's final record (put, per entry).
    pub const SET_MANIFEST: &str =
        "UPDATE files SET manifest = ?1, size = ?2, chunks = ?3, mac = ?4, stored = ?5
         WHERE id = ?6";
    /// A file becomes complete (put and gc, per entry).
    pub const COMPLETE: &str = "UPDATE files SET status = 'complete', writer = NULL WHERE id = ?1";
    /// The files a put's manifest records become complete (put, per
    /// manifest).
    pub const COMPLETE_MANIFEST: &str = "UPDATE files SET status = 'complete', writer = NULL
         WHERE manifest = ?1 AND writer = ?2 AND status = 'pending'";
    /// A file's chunk list (get, put, verify, per entry).
    pub const CHUNK_LIST: &str = "SELECT chunk, len FROM file_chunks WHERE file = ?1 ORDER BY seq";
    /// A file's chunk list with where each chunk is (get, per entry).
    pub const CHUNK_PLAN: &str =
        "SELECT fc.chunk, fc.len, p.name, c.offset, c.stored_len, c.raw_len, c.compression
         FROM file_chunks fc LEFT JOIN chunks c ON c.id = fc.chunk
         LEFT JOIN packs p ON p.id = c.pack
         WHERE fc.file = ?1 ORDER BY fc.seq";
    /// Where a chunk is (get, per chunk).
    pub const LOCATION: &str = "SELECT p.name, c.offset, c.stored_len, c.raw_len, c.compression
         FROM chunks c JOIN packs p ON p.id = c.pack WHERE c.id = ?1";
    /// An entry by uid (get, ls, dump, verify: per entry).
    pub const BY_UID: &str = concat!(
        "SELECT ",
        file_columns!(),
        " FROM files WHERE uid = ?1 AND status = 'complete'"
    );
    /// The versions of one name, newest first (migrate, per name).
    pub const VERSIONS_OF: &str = concat!(
        "SELECT ",
        file_columns!(),
        " FROM files
         WHERE status = 'complete' AND name = ?1 ORDER BY created DESC, id DESC"
    );
    /// The versions of every name in `[?1, ?2)`, by name then newest
    /// first: a tree below a directory (migrate).
    pub const VERSIONS_IN: &str = concat!(
        "SELECT ",
        file_columns!(),
        " FROM files
         WHERE status = 'complete' AND name >= ?1 AND name < ?2
         ORDER BY name, created DESC, id DESC"
    );
    /// Whether a pack object is known (gc, per object).
    pub const HAS_PACK: &str = "SELECT 1 FROM packs WHERE name = ?1";
    /// Whether a manifest object is known (gc, per object).
    pub const HAS_MANIFEST: &str = "SELECT 1 FROM files WHERE manifest = ?1";
    /// The complete files of a manifest (verify and gc, per manifest).
    pub const FILES_IN_MANIFEST: &str = concat!(
        "SELECT ",
        file_columns!(),
        " FROM files
         WHERE manifest = ?1 AND status = 'complete'"
    );
    /// Points a manifest's files at its rewrite (gc, per manifest).
    pub const MOVE_MANIFEST: &str =
        "UPDATE files SET manifest = ?1 WHERE manifest = ?2 AND status = 'complete'";
    /// The refs of the deleted files of a manifest (gc, per manifest).
    pub const DROP_DELETING_REFS: &str = "DELETE FROM file_chunks WHERE file IN
         (SELECT id FROM files WHERE manifest = ?1 AND status = 'deleting')";
    /// The deleted files of a manifest (gc, per manifest).
    pub const DROP_DELETING_FILES: &str =
        "DELETE FROM files WHERE manifest = ?1 AND status = 'deleting'";
    /// The complete files that use a chunk (verify, per damaged chunk).
    pub const FILES_USING: &str = concat!(
        "SELECT ",
        file_columns!(),
        " FROM files WHERE status = 'complete' AND id IN
         (SELECT file FROM file_chunks WHERE chunk = ?1) ORDER BY name"
    );
    /// A file's manifest before it is deleted (gc, per unreferenced entry).
    pub const MANIFEST_OF: &str =
        "SELECT manifest FROM files WHERE id = ?1 AND status = 'complete'";
    /// A file marked deleted (gc, per unreferenced entry).
    pub const MARK_DELETING: &str =
        "UPDATE files SET status = 'deleting' WHERE id = ?1 AND status = 'complete'";
    /// A file's refs (gc, per dropped entry).
    pub const DROP_REFS: &str = "DELETE FROM file_chunks WHERE file = ?1";
    /// A file row (gc, per dropped entry).
    pub const DROP_FILE: &str = "DELETE FROM files WHERE id = ?1";
    /// The pending files of a dead writer (gc, per writer).
    pub const WRITER_FILES: &str =
        "SELECT id, manifest FROM files WHERE status = 'pending' AND writer = ?1";
    /// The chunks of a pack (gc and verify, per pack).
    pub const CHUNKS_IN_PACK: &str = "SELECT id, offset, stored_len, raw_len, compression
         FROM chunks WHERE pack = ?1 ORDER BY offset";
    /// Whether any chunk is still in a pack (gc, per pack).
    pub const PACK_USED: &str = "SELECT COUNT(*) FROM chunks WHERE pack = ?1";
    /// A pack row (gc, per pack).
    pub const DROP_PACK: &str = "DELETE FROM packs WHERE id = ?1";
    /// A chunk moved by a pack rewrite (gc, per chunk).
    pub const MOVE_CHUNK: &str =
        "UPDATE chunks SET pack = ?1, offset = ?2 WHERE id = ?3 AND pack = ?4";
    /// A writer's lease goes (gc, per dead writer; every command once).
    pub const DROP_WRITER: &str = "DELETE FROM writers WHERE id = ?1";
    /// A dead gc's lease goes (every writer, per dead gc).
    pub const DROP_DEAD_GC: &str = "DELETE FROM writers WHERE id = ?1 AND role = 'gc'";
    /// A writer's heartbeat (put, per pack).
    pub const HEARTBEAT: &str = "UPDATE writers SET heartbeat = ?1 WHERE id = ?2";
    /// A put's decision window opens (at a new epoch) or closes
    /// ([`super::WINDOW_CLOSED`]) (put, per batch).
    pub const SET_WINDOW: &str = "UPDATE writers SET epoch = ?1 WHERE id = ?2";
    /// The uids a put has drawn so far, first and last (put, per batch;
    /// cleared with `NULL`s when its snapshot is recorded).
    pub const SET_UIDS: &str = "UPDATE writers SET uids_first = ?1, uids_last = ?2 WHERE id = ?3";
    /// The uids a put drew (first, last), if it drew any and its snapshot
    /// is not recorded (put end, dead put).
    pub const UIDS_OF: &str = "SELECT uids_first, uids_last FROM writers
         WHERE id = ?1 AND uids_first IS NOT NULL AND uids_last IS NOT NULL";
    /// A put that ends without its snapshot takes back the reference its
    /// new rows carried from the start (put end, dead put, per interval).
    pub const UNREF_DRAWN: &str = "UPDATE files SET refs = refs - 1,
         unref_epoch = CASE WHEN refs = 1 THEN ?3 ELSE unref_epoch END
         WHERE uid BETWEEN ?1 AND ?2 AND refs > 0";
    /// A put's snapshot counts its own new rows already: they leave its
    /// reused uids (put end, per interval).
    pub const DROP_DRAWN_REFS: &str =
        "DELETE FROM put_refs WHERE writer = ?1 AND uid BETWEEN ?2 AND ?3";
    /// A committed pack (put and gc, per pack).
    pub const INSERT_PACK: &str = "INSERT INTO packs(name, size, created) VALUES (?1, ?2, ?3)";
    /// A pack found in the store (reindex, per pack).
    pub const ADD_PACK: &str =
        "INSERT OR IGNORE INTO packs(name, size, created) VALUES (?1, ?2, ?3)";
    /// A pack's row id (reindex, per pack).
    pub const PACK_ID: &str = "SELECT id FROM packs WHERE name = ?1";
    /// A chunk found in a pack's index (reindex, per chunk).
    pub const ADD_CHUNK: &str =
        "INSERT OR IGNORE INTO chunks(id, pack, offset, stored_len, raw_len, compression)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    /// A file found in a manifest (reindex, per entry).
    pub const ADD_FILE: &str =
        "INSERT OR IGNORE INTO files(uid, name, kind, mode, mtime_s, mtime_ns, size, link,
           created, chunks, stored, mac, status, manifest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, 'complete', ?12)";
}

use per_entry::*;

/// Every statement of [`per_entry`], for the test that reads their plans.
#[cfg(test)]
const PER_ENTRY: &[&str] = &[
    CHUNK_USABLE,
    FORGET_PACK,
    UNCHANGED,
    CLAIM,
    HAS_PUT_REF,
    ADD_PUT_REF,
    UNREF,
    HAS_SNAPSHOT,
    INSERT_CHUNK,
    INSERT_FILE,
    INSERT_DONE_FILE,
    INSERT_REF,
    SET_MANIFEST,
    COMPLETE,
    COMPLETE_MANIFEST,
    CHUNK_LIST,
    CHUNK_PLAN,
    LOCATION,
    BY_UID,
    VERSIONS_OF,
    VERSIONS_IN,
    HAS_PACK,
    HAS_MANIFEST,
    FILES_IN_MANIFEST,
    MOVE_MANIFEST,
    DROP_DELETING_REFS,
    DROP_DELETING_FILES,
    FILES_USING,
    MANIFEST_OF,
    MARK_DELETING,
    DROP_REFS,
    DROP_FILE,
    WRITER_FILES,
    CHUNKS_IN_PACK,
    PACK_USED,
    DROP_PACK,
    MOVE_CHUNK,
    DROP_WRITER,
    DROP_DEAD_GC,
    HEARTBEAT,
    SET_WINDOW,
    SET_UIDS,
    UIDS_OF,
    UNREF_DRAWN,
    DROP_DRAWN_REFS,
    INSERT_PACK,
    ADD_PACK,
    PACK_ID,
    ADD_CHUNK,
    ADD_FILE,
];

/// Aggregates for `store stat`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Totals {
    /// Complete entries.
    pub files: u64,
    /// Sum of their sizes.
    pub logical_bytes: u64,
    /// Chunk references of complete files.
    pub chunk_refs: u64,
    /// Distinct chunks in the registry.
    pub chunks: u64,
    /// Plaintext bytes of distinct chunks.
    pub unique_bytes: u64,
    /// Stored (compressed, sealed) bytes of distinct chunks.
    pub stored_bytes: u64,
    /// Pack objects.
    pub packs: u64,
    /// Bytes of pack objects.
    pub pack_bytes: u64,
}

impl Registry {
    /// Opens (creating) the registry at `path`, privately: the file is
    /// created mode 0600 (an existing one, and its `-wal` and `-shm`, are
    /// made 0600), and neither it nor the files SQLite keeps beside it is
    /// ever opened through a symbolic link (the directory may be reached
    /// through one; the file itself may not).
    ///
    /// # Errors
    /// [`StoreError::Refused`] for a link or a non-regular file where a
    /// registry file belongs; [`StoreError::Registry`].
    pub fn open(path: &Path) -> Result<Registry, StoreError> {
        let path = &private_db_path(path)?;
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| reg(path, e))?;
        Registry::prepare(conn, path)
    }

    /// Copies the registry at `from` (checked and opened as
    /// [`Registry::open`] does) into a new file `to`, in one consistent
    /// read (SQLite's `VACUUM INTO`), and makes `to` private (0600).
    /// `to` must not exist, and is not a registry until the caller puts
    /// it in place.
    ///
    /// # Errors
    /// [`StoreError::Refused`] for a link where the registry belongs or a
    /// `to` that is not UTF-8; [`StoreError::Registry`] for one SQLite
    /// cannot read or copy.
    pub fn copy_into(from: &Path, to: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let source = Registry::open(from)?;
        let target = to.to_str().ok_or_else(|| StoreError::Refused {
            path: to.to_path_buf(),
            why: "not UTF-8; SQLite cannot copy a registry there".into(),
        })?;
        source
            .conn
            .execute("VACUUM INTO ?1", [target])
            .map_err(|e| reg(from, e))?;
        let copied = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(to)
            .and_then(|f| {
                f.set_permissions(std::fs::Permissions::from_mode(REGISTRY_MODE))?;
                f.sync_all()
            });
        copied.map_err(|source| StoreError::Io {
            path: to.to_path_buf(),
            source,
        })
    }

    /// Copies, from the registry at `old`, what put knew of the sources of
    /// the complete files that are also in this one (same uid), so that
    /// put's unchanged-file check survives a rebuild from the objects
    /// (which hold no source paths). Best effort: a registry at `old`
    /// that cannot be read gives nothing.
    pub(crate) fn keep_sources_of(&mut self, old: &Path) {
        let Some(old) = old.to_str().filter(|p| *p != ":memory:") else {
            return;
        };
        if self
            .conn
            .execute("ATTACH DATABASE ?1 AS old", [old])
            .is_err()
        {
            return;
        }
        let _ = self.conn.execute_batch(
            "UPDATE main.files SET source = o.source, src_dev = o.src_dev, src_ino = o.src_ino,
               src_size = o.src_size, src_mtime_s = o.src_mtime_s, src_mtime_ns = o.src_mtime_ns,
               src_ctime_s = o.src_ctime_s, src_ctime_ns = o.src_ctime_ns
             FROM old.files AS o
             WHERE o.uid = main.files.uid AND o.status = 'complete' AND o.source IS NOT NULL",
        );
        // The id stays, so that the puts of this registry are still its own.
        let _ = self.conn.execute(
            "UPDATE main.meta SET value = (SELECT value FROM old.meta WHERE key = 'registry_id')
             WHERE key = 'registry_id' AND EXISTS (SELECT 1 FROM old.meta WHERE key = 'registry_id')",
            [],
        );
        let _ = self.conn.execute("DETACH DATABASE old", []);
    }

    /// A registry in memory, for the moment a file registry is replaced.
    pub(crate) fn in_memory() -> Result<Registry, StoreError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| reg(path, e))?;
        Registry::prepare(conn, path)
    }

    fn prepare(conn: Connection, path: &Path) -> Result<Registry, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| reg(path, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| reg(path, e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| reg(path, e))?;
        conn.pragma_update(None, "cache_size", -8192)
            .map_err(|e| reg(path, e))?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
            .map_err(|e| reg(path, e))?;
        add_snapshot_columns(&conn).map_err(|e| reg(path, e))?;
        add_uid_range_columns(&conn).map_err(|e| reg(path, e))?;
        let mut id = [0u8; 8];
        cryptstream_format::fill_random(&mut id)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('registry_id', ?1)",
            [i64::from_le_bytes(id) & i64::MAX],
        )
        .map_err(|e| reg(path, e))?;
        Ok(Registry {
            conn,
            path: path.to_path_buf(),
            read_held: false,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        reg(&self.path, e)
    }

    /// Makes the reads that follow share one read transaction until the
    /// next write of this registry (which ends it first) or
    /// [`Registry::release_reads`]: SQLite then takes its read lock once,
    /// not twice per statement (a put reads twice per file: whether it is
    /// unchanged, whether its chunk is stored; 324,000 `fcntl` calls on an
    /// 80,000-file tree, DECISIONS 474). What the reads see is the registry
    /// as of the first of them, after this connection's last write.
    ///
    /// # Errors
    /// Registry failures.
    pub fn hold_reads(&mut self) -> Result<(), StoreError> {
        if !self.read_held && self.conn.is_autocommit() {
            self.conn
                .execute_batch("BEGIN DEFERRED")
                .map_err(|e| self.err(e))?;
            self.read_held = true;
        }
        Ok(())
    }

    /// Ends the read transaction [`Registry::hold_reads`] began, if any.
    ///
    /// # Errors
    /// Registry failures.
    pub fn release_reads(&mut self) -> Result<(), StoreError> {
        if self.read_held {
            self.read_held = false;
            self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.release_reads()?;
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| reg(&path, e))?;
        let value = f(&tx).map_err(|e| reg(&path, e))?;
        tx.commit().map_err(|e| reg(&path, e))?;
        Ok(value)
    }

    fn next_epoch(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
        tx.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'", [])?;
        tx.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })
    }

    /// Registers this process as a writer.
    ///
    /// # Errors
    /// [`StoreError::Busy`] for a second gc; registry failures.
    pub fn register_writer(&mut self, role: Role) -> Result<WriterLease, StoreError> {
        self.remove_dead_writers_rows()?;
        let pid = std::process::id();
        let ticks = start_ticks(pid).unwrap_or(0);
        let host = host();
        let lease = self.write(|tx| {
            if role == Role::Gc {
                let others: i64 =
                    tx.query_row("SELECT COUNT(*) FROM writers WHERE role = 'gc'", [], |r| {
                        r.get(0)
                    })?;
                if others > 0 {
                    return Ok(None);
                }
            }
            let epoch = Self::next_epoch(tx)?;
            tx.execute(
                "INSERT INTO writers(role, epoch, pid, start_ticks, host, started, heartbeat)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![role.name(), epoch, pid, ticks, host, now()],
            )?;
            Ok(Some(WriterLease {
                id: tx.last_insert_rowid(),
                epoch,
            }))
        })?;
        lease.ok_or_else(|| StoreError::Busy("another gc is running on this store".into()))
    }

    /// Removes this writer's lease.
    ///
    /// # Errors
    /// Registry failures.
    pub fn unregister_writer(&mut self, lease: WriterLease) -> Result<(), StoreError> {
        self.write(|tx| tx.prepare_cached(DROP_WRITER)?.execute([lease.id]))?;
        Ok(())
    }

    /// Ends a put: its files still pending (failed or interrupted) are
    /// removed with their refs, then its lease.
    ///
    /// # Errors
    /// Registry failures.
    pub fn end_writer(&mut self, lease: WriterLease) -> Result<(), StoreError> {
        self.write(|tx| {
            Self::release_put_refs(tx, lease.id)?;
            tx.execute(
                "DELETE FROM file_chunks WHERE file IN
                   (SELECT id FROM files WHERE writer = ?1 AND status = 'pending')",
                [lease.id],
            )?;
            tx.execute(
                "DELETE FROM files WHERE writer = ?1 AND status = 'pending'",
                [lease.id],
            )?;
            tx.prepare_cached(DROP_WRITER)?.execute([lease.id])
        })?;
        Ok(())
    }

    /// Whether writer row (pid, start ticks, host, heartbeat) is alive.
    fn writer_alive(pid: i64, ticks: i64, host_name: &str, heartbeat: i64) -> bool {
        if host_name == host() {
            u32::try_from(pid)
                .ok()
                .and_then(start_ticks)
                .is_some_and(|t| t == ticks)
        } else {
            now() - heartbeat < STALE_WRITER_SECS
        }
    }

    /// Dead writers: (row id, role).
    fn dead_writers(&self) -> Result<Vec<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pid, start_ticks, host, heartbeat FROM writers")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut dead = Vec::new();
        for row in rows {
            let (id, pid, ticks, host_name, heartbeat) = row.map_err(|e| self.err(e))?;
            if !Self::writer_alive(pid, ticks, &host_name, heartbeat) {
                dead.push(id);
            }
        }
        Ok(dead)
    }

    /// Removes gc leases of dead processes (their pending files are dealt
    /// with by gc: [`Registry::dead_writer_files`]).
    fn remove_dead_writers_rows(&mut self) -> Result<(), StoreError> {
        let dead = self.dead_writers()?;
        self.write(|tx| {
            for id in &dead {
                tx.prepare_cached(DROP_DEAD_GC)?.execute([id])?;
            }
            Ok(())
        })
    }

    /// The pending files of dead writers: (row, manifest name if one was
    /// being written), and the dead writers' ids.
    ///
    /// # Errors
    /// Registry failures.
    pub fn dead_writer_files(&self) -> Result<DeadWriters, StoreError> {
        let dead = self.dead_writers()?;
        let mut files = Vec::new();
        let mut stmt = self.conn.prepare(WRITER_FILES).map_err(|e| self.err(e))?;
        for w in &dead {
            let rows = stmt
                .query_map([w], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.err(e))?;
            for row in rows {
                files.push(row.map_err(|e| self.err(e))?);
            }
        }
        Ok((dead, files))
    }

    /// Settles a dead writer's files: those whose manifest exists become
    /// complete (all their data is durable), the others are removed; then
    /// the writers' leases go.
    ///
    /// # Errors
    /// Registry failures.
    pub fn settle_dead(
        &mut self,
        writers: &[i64],
        complete: &[i64],
        remove: &[i64],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            for f in complete {
                tx.prepare_cached(COMPLETE)?.execute([f])?;
            }
            for f in remove {
                tx.prepare_cached(DROP_REFS)?.execute([f])?;
                tx.prepare_cached(DROP_FILE)?.execute([f])?;
            }
            for w in writers {
                Self::release_put_refs(tx, *w)?;
                tx.prepare_cached(DROP_WRITER)?.execute([w])?;
            }
            Ok(())
        })
    }

    /// Updates this writer's heartbeat.
    ///
    /// # Errors
    /// Registry failures.
    pub fn heartbeat(&self, lease: WriterLease) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(HEARTBEAT)
            .and_then(|mut stmt| stmt.execute(params![now(), lease.id]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The pack of chunk `id` when the registry says it is stored and may
    /// be reused (not marked garbage); the caller checks that the pack is
    /// still in the store (this registry may be a stale cache).
    ///
    /// # Errors
    /// Registry failures.
    pub fn usable_chunk_pack(&self, id: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(CHUNK_USABLE)
            .map_err(|e| self.err(e))?;
        stmt.query_row([&id[..]], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Marks every chunk of pack `name`, which is gone from the store (a
    /// gc of another writer removed it), as not stored: no put reuses
    /// them, and a put that stores one again moves its row to the new
    /// pack.
    ///
    /// # Errors
    /// Registry failures.
    pub fn forget_pack(&mut self, name: &str) -> Result<(), StoreError> {
        self.write(|tx| tx.prepare_cached(FORGET_PACK)?.execute([name]))?;
        Ok(())
    }

    /// The uid of a complete entry named `name` stored from exactly this
    /// source (same path, device, inode, size, mtime and ctime).
    ///
    /// # Errors
    /// Registry failures.
    pub fn unchanged(
        &self,
        name: &str,
        src: &SourceStat,
    ) -> Result<Option<(FileRow, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(UNCHANGED)
            .map_err(|e| self.err(e))?;
        stmt.query_row(
            params![
                src.path,
                name,
                src.dev as i64,
                src.ino as i64,
                src.size as i64,
                src.mtime.0,
                src.mtime.1,
                src.ctime.0,
                src.ctime.1
            ],
            |r| Ok((row_record(r)?, r.get::<_, i64>(14)? as u64)),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// One transaction: pack `name`, just made durable, and its chunks (a
    /// chunk already present and not garbage keeps its place; one marked
    /// garbage moves to this pack and is live again). Its chunks' refs may
    /// already be rows ([`Registry::commit_batch`]); until this commits,
    /// no reader and no gc knows where those chunks are, and a put keeps
    /// them out of every other pack itself.
    ///
    /// # Errors
    /// Registry failures.
    pub fn record_pack(
        &mut self,
        lease: WriterLease,
        name: &str,
        size: u64,
        entries: &[PackEntry],
    ) -> Result<(), StoreError> {
        let created = now();
        self.write(|tx| {
            tx.prepare_cached(INSERT_PACK)?
                .execute(params![name, size as i64, created])?;
            let pack_row = tx.last_insert_rowid();
            let mut stmt = tx.prepare_cached(INSERT_CHUNK)?;
            // In id order: each insert lands next to the one before in the
            // chunks table's b-tree, not on a random page.
            let mut sorted: Vec<&PackEntry> = entries.iter().collect();
            sorted.sort_unstable_by_key(|e| e.id);
            for e in sorted {
                stmt.execute(params![
                    &e.id[..],
                    pack_row,
                    e.offset as i64,
                    e.stored_len,
                    e.raw_len,
                    e.compression
                ])?;
            }
            tx.prepare_cached(HEARTBEAT)?
                .execute(params![created, lease.id])?;
            Ok(())
        })
    }

    /// One transaction: new pending file rows and the chunk refs buffered
    /// in `files` (their chunks are stored, or in packs of this put that
    /// [`Registry::record_pack`] records once durable). With
    /// `done = Some((manifest, n))`, the first `n` of `files` are read
    /// whole: their final record (size, chunk count, authenticator, new
    /// bytes) and `manifest`, the manifest that will record them, are
    /// written too (in the row's insert when it is new).
    ///
    /// # Errors
    /// Registry failures.
    pub fn commit_batch(
        &mut self,
        lease: WriterLease,
        files: &mut [&mut PendingFile],
        reused: &[u64],
        drawn: Option<UidRange>,
        done: Option<(&str, usize)>,
    ) -> Result<(), StoreError> {
        let created = now();
        self.write(|tx| {
            // Before the rows that carry a reference this put may have to
            // take back (DECISIONS 510).
            if let Some(range) = drawn {
                tx.prepare_cached(SET_UIDS)?.execute(params![
                    range.first as i64,
                    range.last as i64,
                    lease.id
                ])?;
            }
            // Each statement looked up in the cache once per transaction,
            // not once per file (DECISIONS 473).
            let mut insert_done = tx.prepare_cached(INSERT_DONE_FILE)?;
            let mut insert_file = tx.prepare_cached(INSERT_FILE)?;
            let mut add_put_ref = tx.prepare_cached(ADD_PUT_REF)?;
            let mut insert_ref = tx.prepare_cached(INSERT_REF)?;
            let mut set_manifest = tx.prepare_cached(SET_MANIFEST)?;
            for (i, f) in files.iter_mut().enumerate() {
                let manifest = done.and_then(|(name, n)| (i < n).then_some(name));
                let mut recorded = false;
                if f.row.is_none() {
                    let r = &f.record;
                    let s = f.source.as_ref();
                    let head = params![
                        r.uid as i64,
                        r.name,
                        r.kind.id(),
                        r.mode,
                        r.mtime.0,
                        r.mtime.1,
                        r.size as i64,
                        r.link,
                        r.created,
                        lease.id,
                        s.map(|s| s.path.as_str()),
                        s.map(|s| s.dev as i64),
                        s.map(|s| s.ino as i64),
                        s.map(|s| s.size as i64),
                        s.map(|s| s.mtime.0),
                        s.map(|s| s.mtime.1),
                        s.map(|s| s.ctime.0),
                        s.map(|s| s.ctime.1),
                    ];
                    match manifest {
                        Some(manifest) => {
                            let tail =
                                params![r.chunks as i64, f.stored as i64, &r.mac[..], manifest];
                            let all: Vec<&dyn rusqlite::ToSql> =
                                head.iter().chain(tail.iter()).copied().collect();
                            insert_done.execute(&all[..])?;
                            recorded = true;
                        }
                        None => {
                            insert_file.execute(head)?;
                        }
                    }
                    // No `put_refs` row: the row carries the snapshot's
                    // reference itself (DECISIONS 510).
                    f.row = Some(tx.last_insert_rowid());
                }
                let row = f.row.expect("inserted above");
                for (id, len) in f.refs.drain(..) {
                    insert_ref.execute(params![row, f.next_seq as i64, &id[..], len])?;
                    f.next_seq += 1;
                }
                if let (Some(manifest), false) = (manifest, recorded) {
                    let r = &f.record;
                    set_manifest.execute(params![
                        manifest,
                        r.size as i64,
                        r.chunks as i64,
                        &r.mac[..],
                        f.stored as i64,
                        row
                    ])?;
                }
            }
            for uid in reused {
                add_put_ref.execute(params![lease.id, *uid as i64])?;
            }
            tx.prepare_cached(HEARTBEAT)?
                .execute(params![created, lease.id])?;
            // Every chunk and record this put relies on is now in the
            // registry: its window closes (DECISIONS 300).
            tx.prepare_cached(SET_WINDOW)?
                .execute(params![WINDOW_CLOSED, lease.id])?;
            Ok(())
        })
    }

    /// Opens put `lease`'s decision window at a new epoch, before it reads
    /// whether a chunk or a record may be reused: a gc marks and sweeps
    /// only what was unreferenced before every open window began, and
    /// what a put read after this transaction sees every earlier mark. It
    /// closes at the next [`Registry::commit_batch`], which records every
    /// reuse decided meanwhile (DECISIONS 300).
    ///
    /// # Errors
    /// Registry failures.
    pub fn open_window(&mut self, lease: WriterLease) -> Result<(), StoreError> {
        self.write(|tx| {
            let epoch = Self::next_epoch(tx)?;
            tx.prepare_cached(SET_WINDOW)?
                .execute(params![epoch, lease.id])
        })?;
        Ok(())
    }

    /// This registry's random id, made when it was created and kept by
    /// `reindex`: a put's lease carries it (sealed), so that a gc can tell
    /// the puts of its own registry from other writers'.
    ///
    /// # Errors
    /// Registry failures.
    pub fn id(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'registry_id'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Whether a put registered in this registry by process `pid` of this
    /// host is alive (the same process: its start time matches).
    ///
    /// # Errors
    /// Registry failures.
    pub fn live_put(&self, pid: u32) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT start_ticks, host FROM writers WHERE role = 'put' AND pid = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([i64::from(pid)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let here = host();
        for row in rows {
            let (ticks, host_name) = row.map_err(|e| self.err(e))?;
            if host_name == here && start_ticks(pid).is_some_and(|t| t == ticks) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Marks the pending files of put `lease` that manifest `name` records
    /// complete: their data and that manifest are durable. One statement
    /// (through the `manifest` index), not one per file.
    ///
    /// # Errors
    /// Registry failures.
    pub fn complete_manifest(&mut self, lease: WriterLease, name: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(COMPLETE_MANIFEST)?
                .execute(params![name, lease.id])?;
            Ok(())
        })
    }

    /// Calls `each` with the chunk list of file `row`, in order.
    ///
    /// # Errors
    /// Registry failures or `each`'s error.
    pub fn for_each_chunk(
        &self,
        row: i64,
        mut each: impl FnMut([u8; 32], u32) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(CHUNK_LIST)
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([row]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: Vec<u8> = r.get(0).map_err(|e| self.err(e))?;
            let len: u32 = r.get(1).map_err(|e| self.err(e))?;
            let id: [u8; 32] = id
                .try_into()
                .map_err(|_| StoreError::Damaged("registry: a chunk id is not 32 bytes".into()))?;
            each(id, len)?;
        }
        Ok(())
    }

    /// Calls `each` with the chunk list of file `row`, in order, and
    /// where each chunk is (`None` when the registry does not know it):
    /// one statement per file where [`Registry::for_each_chunk`] and
    /// [`Registry::location`] take one per chunk more.
    ///
    /// # Errors
    /// Registry failures or `each`'s error.
    pub fn for_each_chunk_located(
        &self,
        row: i64,
        mut each: impl FnMut([u8; 32], u32, Option<Location>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(CHUNK_PLAN)
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([row]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let located = |r: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
                let id: Vec<u8> = r.get(0)?;
                let len: u32 = r.get(1)?;
                let loc = match r.get::<_, Option<String>>(2)? {
                    Some(pack) => Some(Location {
                        pack,
                        offset: r.get::<_, i64>(3)? as u64,
                        stored_len: r.get(4)?,
                        raw_len: r.get(5)?,
                        compression: r.get(6)?,
                    }),
                    None => None,
                };
                Ok((id, len, loc))
            };
            let (id, len, loc) = located(r).map_err(|e| self.err(e))?;
            let id: [u8; 32] = id
                .try_into()
                .map_err(|_| StoreError::Damaged("registry: a chunk id is not 32 bytes".into()))?;
            each(id, len, loc)?;
        }
        Ok(())
    }

    /// Runs `f` inside one read transaction: what it reads is one
    /// consistent state of the registry, and SQLite takes its read lock
    /// once, not once per statement (a get reads several rows for every
    /// entry). `f` must not write. Inside a transaction already, just
    /// runs `f`.
    ///
    /// # Errors
    /// Registry failures or `f`'s error.
    pub fn reading<T>(&self, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if !self.conn.is_autocommit() {
            return f();
        }
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let value = f();
        // Nothing was written: ending the transaction either way is the same.
        let ended = tx.rollback();
        let value = value?;
        ended.map_err(|e| self.err(e))?;
        Ok(value)
    }

    /// Where chunk `id` is.
    ///
    /// # Errors
    /// Registry failures.
    pub fn location(&self, id: &[u8; 32]) -> Result<Option<Location>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(LOCATION)
            .map_err(|e| self.err(e))?;
        stmt.query_row([&id[..]], |r| {
            Ok(Location {
                pack: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
                stored_len: r.get(2)?,
                raw_len: r.get(3)?,
                compression: r.get(4)?,
            })
        })
        .optional()
        .map_err(|e| self.err(e))
    }

    /// The complete entry with this uid.
    ///
    /// # Errors
    /// Registry failures.
    pub fn by_uid(&self, uid: u64) -> Result<Option<FileRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(BY_UID).map_err(|e| self.err(e))?;
        stmt.query_row([uid as i64], row_record)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest complete version of `name` and of every name below it
    /// (`name/...`), in name order, streamed (one indexed range read, no
    /// per-entry lookup). An empty `name` means every entry.
    ///
    /// # Errors
    /// Registry failures or `each`'s.
    pub fn by_name(
        &self,
        name: &str,
        mut each: impl FnMut(FileRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if name.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {FILE_COLUMNS} FROM files WHERE status = 'complete'
                     ORDER BY name, created DESC, id DESC"
                ))
                .map_err(|e| self.err(e))?;
            return self.newest_of_each(&mut stmt, [], &mut each);
        }
        let mut stmt = self
            .conn
            .prepare_cached(VERSIONS_OF)
            .map_err(|e| self.err(e))?;
        self.newest_of_each(&mut stmt, [name], &mut each)?;
        // `/` + 1 is `0`: every name that starts with `name/`.
        let (low, high) = (format!("{name}/"), format!("{name}0"));
        let mut stmt = self
            .conn
            .prepare_cached(VERSIONS_IN)
            .map_err(|e| self.err(e))?;
        self.newest_of_each(&mut stmt, [low, high], &mut each)
    }

    /// Runs `stmt` (rows by name, newest version first) and calls `each`
    /// with the first row of every name.
    fn newest_of_each(
        &self,
        stmt: &mut rusqlite::Statement<'_>,
        params: impl rusqlite::Params,
        each: &mut dyn FnMut(FileRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut rows = stmt.query(params).map_err(|e| self.err(e))?;
        let mut last: Option<String> = None;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let name: String = r.get("name").map_err(|e| self.err(e))?;
            if last.as_deref() == Some(name.as_str()) {
                continue;
            }
            each(row_record(r).map_err(|e| self.err(e))?)?;
            last = Some(name);
        }
        Ok(())
    }

    /// Every complete file row, in name order, newest first (the order of
    /// `files_newest`, which the query reads: no sort).
    ///
    /// # Errors
    /// Registry failures or `each`'s.
    pub fn for_each_file(
        &self,
        mut each: impl FnMut(FileRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE status = 'complete'
                 ORDER BY name, created DESC, id DESC"
            ))
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            each(row_record(r).map_err(|e| self.err(e))?)?;
        }
        Ok(())
    }

    /// Manifests that hold files being deleted.
    ///
    /// # Errors
    /// Registry failures.
    pub fn deleting_manifests(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT manifest FROM files WHERE status = 'deleting' AND manifest IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err(e))
    }

    /// The complete files recorded in `manifest`.
    ///
    /// # Errors
    /// Registry failures.
    pub fn files_in_manifest(&self, manifest: &str) -> Result<Vec<FileRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(FILES_IN_MANIFEST)
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([manifest], row_record)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Points the files of `old` manifest at `new`.
    ///
    /// # Errors
    /// Registry failures.
    pub fn move_manifest(&mut self, old: &str, new: &str) -> Result<(), StoreError> {
        self.write(|tx| tx.prepare_cached(MOVE_MANIFEST)?.execute(params![new, old]))?;
        Ok(())
    }

    /// Removes the rows of files being deleted whose manifest is gone.
    ///
    /// # Errors
    /// Registry failures.
    pub fn drop_deleting(&mut self, manifest: &str) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(DROP_DELETING_REFS)?.execute([manifest])?;
            Ok(tx
                .prepare_cached(DROP_DELETING_FILES)?
                .execute([manifest])? as u64)
        })
    }

    /// Removes the rows of deleted files that have no manifest.
    ///
    /// # Errors
    /// Registry failures.
    pub fn drop_deleting_without_manifest(&mut self) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM file_chunks WHERE file IN
                   (SELECT id FROM files WHERE status = 'deleting' AND manifest IS NULL)",
                [],
            )?;
            Ok(tx.execute(
                "DELETE FROM files WHERE status = 'deleting' AND manifest IS NULL",
                [],
            )? as u64)
        })
    }

    /// Gc phase one: marks unreferenced chunks as garbage at a new epoch
    /// and clears the mark of referenced ones. Returns the epoch.
    ///
    /// # Errors
    /// Registry failures.
    pub fn mark_garbage(&mut self) -> Result<i64, StoreError> {
        self.write(|tx| {
            let epoch = Self::next_epoch(tx)?;
            tx.execute(
                "UPDATE chunks SET garbage_epoch = ?1 WHERE garbage_epoch IS NULL
                   AND NOT EXISTS (SELECT 1 FROM file_chunks r WHERE r.chunk = chunks.id)",
                [epoch],
            )?;
            tx.execute(
                "UPDATE chunks SET garbage_epoch = NULL WHERE garbage_epoch IS NOT NULL
                   AND EXISTS (SELECT 1 FROM file_chunks r WHERE r.chunk = chunks.id)",
                [],
            )?;
            Ok(epoch)
        })
    }

    /// Gc phase two: forgets chunks marked garbage before every running put
    /// registered and still unreferenced. Returns (chunks, stored bytes).
    ///
    /// # Errors
    /// Registry failures.
    pub fn sweep_garbage(&mut self) -> Result<(u64, u64), StoreError> {
        self.write(|tx| {
            let oldest: Option<i64> = tx.query_row(
                "SELECT MIN(epoch) FROM writers WHERE role = 'put'",
                [],
                |r| r.get(0),
            )?;
            let bound = oldest.unwrap_or(i64::MAX);
            let cond = "garbage_epoch IS NOT NULL AND garbage_epoch < ?1
                 AND NOT EXISTS (SELECT 1 FROM file_chunks r WHERE r.chunk = chunks.id)";
            let (count, bytes): (i64, Option<i64>) = tx.query_row(
                &format!("SELECT COUNT(*), SUM(stored_len) FROM chunks WHERE {cond}"),
                [bound],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            tx.execute(&format!("DELETE FROM chunks WHERE {cond}"), [bound])?;
            Ok((count as u64, bytes.unwrap_or(0) as u64))
        })
    }

    /// Every pack with its size and live bytes (stored bytes of the chunks
    /// located in it).
    ///
    /// # Errors
    /// Registry failures.
    pub fn pack_usage(&self) -> Result<Vec<(i64, String, u64, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT p.id, p.name, p.size, COALESCE(SUM(c.stored_len), 0)
                 FROM packs p LEFT JOIN chunks c ON c.pack = p.id GROUP BY p.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get::<_, i64>(2)? as u64,
                    r.get::<_, i64>(3)? as u64,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// The chunks located in pack `pack`, in offset order.
    ///
    /// # Errors
    /// Registry failures.
    pub fn chunks_in_pack(&self, pack: i64) -> Result<Vec<PackEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(CHUNKS_IN_PACK)
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([pack], |r| {
                let id: Vec<u8> = r.get(0)?;
                let mut bytes = [0u8; 32];
                if id.len() == 32 {
                    bytes.copy_from_slice(&id);
                }
                Ok(PackEntry {
                    id: bytes,
                    offset: r.get::<_, i64>(1)? as u64,
                    stored_len: r.get(2)?,
                    raw_len: r.get(3)?,
                    compression: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Forgets pack `pack` if no chunk is located in it any more; returns
    /// whether it did.
    ///
    /// # Errors
    /// Registry failures.
    pub fn drop_pack_if_empty(&mut self, pack: i64) -> Result<bool, StoreError> {
        self.write(|tx| {
            let used: i64 = tx
                .prepare_cached(PACK_USED)?
                .query_row([pack], |r| r.get(0))?;
            if used > 0 {
                return Ok(false);
            }
            tx.prepare_cached(DROP_PACK)?.execute([pack])?;
            Ok(true)
        })
    }

    /// After a pack rewrite: the new pack, and the chunks still located in
    /// `old` moved to it.
    ///
    /// # Errors
    /// Registry failures.
    pub fn move_chunks(
        &mut self,
        old: i64,
        new_name: &str,
        new_size: u64,
        entries: &[PackEntry],
    ) -> Result<(), StoreError> {
        let created = now();
        self.write(|tx| {
            tx.prepare_cached(INSERT_PACK)?
                .execute(params![new_name, new_size as i64, created])?;
            let new = tx.last_insert_rowid();
            let mut stmt = tx.prepare_cached(MOVE_CHUNK)?;
            for e in entries {
                stmt.execute(params![new, e.offset as i64, &e.id[..], old])?;
            }
            Ok(())
        })
    }

    /// Whether a put is registered, and the current epoch.
    ///
    /// # Errors
    /// Registry failures.
    pub fn puts_running(&self) -> Result<(bool, i64), StoreError> {
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM writers WHERE role = 'put'),
                        (SELECT value FROM meta WHERE key = 'epoch')",
                [],
                |r| Ok((r.get::<_, i64>(0)? > 0, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// Whether pack object `name` is in the registry.
    ///
    /// # Errors
    /// Registry failures.
    pub fn has_pack(&self, name: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(HAS_PACK)
            .map_err(|e| self.err(e))?;
        stmt.exists([name]).map_err(|e| self.err(e))
    }

    /// Whether any file row names manifest `name`.
    ///
    /// # Errors
    /// Registry failures.
    pub fn has_manifest(&self, name: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(HAS_MANIFEST)
            .map_err(|e| self.err(e))?;
        stmt.exists([name]).map_err(|e| self.err(e))
    }

    /// Every manifest that a complete file row names.
    ///
    /// # Errors
    /// Registry failures.
    pub fn manifests(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT manifest FROM files
                 WHERE status = 'complete' AND manifest IS NOT NULL ORDER BY manifest",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Every pack: (name, size).
    ///
    /// # Errors
    /// Registry failures.
    pub fn packs(&self) -> Result<Vec<(i64, String, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, size FROM packs ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Complete files that reference a chunk missing from the chunks
    /// table: (file row, chunk id).
    ///
    /// # Errors
    /// Registry failures.
    pub fn missing_chunks(
        &self,
        mut each: impl FnMut(FileRow, [u8; 32]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {FILE_COLUMNS}, r.chunk FROM file_chunks r JOIN files f ON f.id = r.file
                 WHERE f.status = 'complete' AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = r.chunk)"
            ))
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let file = row_record(r).map_err(|e| self.err(e))?;
            let id: Vec<u8> = r.get(14).map_err(|e| self.err(e))?;
            let mut bytes = [0u8; 32];
            if id.len() == 32 {
                bytes.copy_from_slice(&id);
            }
            each(file, bytes)?;
        }
        Ok(())
    }

    /// Complete files that use chunk `id`.
    ///
    /// # Errors
    /// Registry failures.
    pub fn files_using(&self, id: &[u8; 32]) -> Result<Vec<FileRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(FILES_USING)
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([&id[..]], row_record)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Totals for `store stat`.
    ///
    /// # Errors
    /// Registry failures.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        let q = |sql: &str| -> Result<i64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0))
                .map_err(|e| self.err(e))
        };
        Ok(Totals {
            files: q("SELECT COUNT(*) FROM files WHERE status = 'complete'")? as u64,
            logical_bytes: q("SELECT SUM(size) FROM files WHERE status = 'complete'")? as u64,
            chunk_refs: q(
                "SELECT COUNT(*) FROM file_chunks r JOIN files f ON f.id = r.file
                           WHERE f.status = 'complete'",
            )? as u64,
            chunks: q("SELECT COUNT(*) FROM chunks")? as u64,
            unique_bytes: q("SELECT SUM(raw_len) FROM chunks")? as u64,
            stored_bytes: q("SELECT SUM(stored_len) FROM chunks")? as u64,
            packs: q("SELECT COUNT(*) FROM packs")? as u64,
            pack_bytes: q("SELECT SUM(size) FROM packs")? as u64,
        })
    }

    /// A put that ends without recording its snapshot (failed, killed,
    /// interrupted): the rows it made or reused that no snapshot
    /// references become reclaimable from a new epoch on, and its
    /// references go. Its new rows give back the reference they carried
    /// from the start (DECISIONS 510); after its snapshot is recorded the
    /// writer row names no uids and there is nothing to give back.
    fn release_put_refs(tx: &rusqlite::Transaction<'_>, writer: i64) -> rusqlite::Result<()> {
        let epoch = Self::next_epoch(tx)?;
        if let Some(range) = UidRange::of_writer(tx, writer)? {
            let mut unref = tx.prepare_cached(UNREF_DRAWN)?;
            for (lo, hi) in range.intervals() {
                unref.execute(params![lo, hi, epoch])?;
            }
            tx.prepare_cached(SET_UIDS)?
                .execute(params![None::<i64>, None::<i64>, writer])?;
        }
        tx.execute(
            "UPDATE files SET unref_epoch = ?2 WHERE refs = 0 AND unref_epoch IS NULL
               AND uid IN (SELECT uid FROM put_refs WHERE writer = ?1)",
            params![writer, epoch],
        )?;
        tx.execute("DELETE FROM put_refs WHERE writer = ?1", [writer])?;
        Ok(())
    }

    /// Claims the complete row `uid`, which no snapshot references, for
    /// put `lease` (one transaction: gc, which decides and marks in one
    /// transaction too, either sees the claim or has already taken the
    /// row, and then the claim fails). Returns whether the put holds it.
    ///
    /// # Errors
    /// Registry failures.
    pub fn claim(&mut self, lease: WriterLease, uid: u64) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(CLAIM)?
                .execute(params![lease.id, uid as i64])?;
            tx.prepare_cached(HAS_PUT_REF)?
                .exists(params![lease.id, uid as i64])
        })
    }

    /// gc: marks `deleting`, in one transaction, the complete rows that no
    /// snapshot references, no running put has claimed, and that lost
    /// their last reference before every running put registered; returns
    /// how many, and the manifests that hold them.
    ///
    /// # Errors
    /// Registry failures.
    pub fn mark_unreferenced(&mut self) -> Result<(u64, Vec<String>), StoreError> {
        self.write(|tx| {
            let ids: Vec<i64> = tx
                .prepare(
                    "SELECT f.id FROM files f WHERE f.status = 'complete' AND f.refs = 0
                       AND f.unref_epoch IS NOT NULL
                       AND f.unref_epoch < COALESCE(
                         (SELECT MIN(epoch) FROM writers WHERE role = 'put'), 9223372036854775807)
                       AND NOT EXISTS (SELECT 1 FROM put_refs p WHERE p.uid = f.uid)",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut manifests = Vec::new();
            for row in &ids {
                let manifest: Option<String> = tx
                    .prepare_cached(MANIFEST_OF)?
                    .query_row([row], |r| r.get(0))
                    .optional()?
                    .flatten();
                tx.prepare_cached(MARK_DELETING)?.execute([row])?;
                if let Some(m) = manifest {
                    if !manifests.contains(&m) {
                        manifests.push(m);
                    }
                }
            }
            Ok((ids.len() as u64, manifests))
        })
    }

    /// Records that the put `lease` references `uids` (its unchanged
    /// entries; its new ones are recorded with their rows).
    ///
    /// # Errors
    /// Registry failures.
    pub fn add_put_refs(&mut self, lease: WriterLease, uids: &[u64]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(ADD_PUT_REF)?;
            for uid in uids {
                stmt.execute(params![lease.id, *uid as i64])?;
            }
            Ok(())
        })
    }

    /// The snapshot of put `lease` is durable: in one transaction its row
    /// is added and every file it references counts one more reference:
    /// the rows it reused through `put_refs`, while its new rows carry
    /// that reference since they were inserted (DECISIONS 510) and its
    /// writer row stops naming them.
    ///
    /// # Errors
    /// Registry failures.
    pub fn record_snapshot(
        &mut self,
        lease: WriterLease,
        snapshot: &SnapshotRow,
    ) -> Result<(), StoreError> {
        let paths = serde_json::to_string(&snapshot.paths).unwrap_or_default();
        let tags = serde_json::to_string(&snapshot.tags).unwrap_or_default();
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO snapshots(name, id, time_ns, host, paths, tags, entries, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    snapshot.name,
                    crate::snapshot::snapshot_id(&snapshot.name),
                    snapshot.time_ns,
                    snapshot.host,
                    paths,
                    tags,
                    snapshot.entries as i64,
                    snapshot.size as i64
                ],
            )?;
            if let Some(range) = UidRange::of_writer(tx, lease.id)? {
                // A new row of this put that it also reused (the same
                // file named twice) is counted once, like any other.
                let mut drop = tx.prepare_cached(DROP_DRAWN_REFS)?;
                for (lo, hi) in range.intervals() {
                    drop.execute(params![lease.id, lo, hi])?;
                }
                tx.prepare_cached(SET_UIDS)?
                    .execute(params![None::<i64>, None::<i64>, lease.id])?;
            }
            tx.execute(
                "UPDATE files SET refs = refs + 1, unref_epoch = NULL
                 WHERE uid IN (SELECT uid FROM put_refs WHERE writer = ?1)",
                [lease.id],
            )?;
            tx.execute("DELETE FROM put_refs WHERE writer = ?1", [lease.id])?;
            tx.execute(
                "INSERT OR REPLACE INTO meta VALUES ('snapshots', 1)",
                [],
            )?;
            Ok(())
        })
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// Registry failures.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        self.query_snapshots(
            "SELECT name, time_ns, host, paths, tags, entries, size FROM snapshots
             ORDER BY time_ns, name",
            [],
        )
    }

    /// The snapshots whose id starts with `prefix` (at most two: one is an
    /// answer, two an ambiguity).
    ///
    /// # Errors
    /// Registry failures.
    pub fn snapshots_with_prefix(&self, prefix: &str) -> Result<Vec<SnapshotRow>, StoreError> {
        // `prefix` is hex (checked by the caller): no LIKE wildcard in it.
        self.query_snapshots(
            "SELECT name, time_ns, host, paths, tags, entries, size FROM snapshots
             WHERE id LIKE ?1 || '%' ORDER BY time_ns LIMIT 2",
            [prefix],
        )
    }

    fn query_snapshots(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<SnapshotRow>, StoreError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, |r| {
                let paths: String = r.get(3)?;
                let tags: String = r.get(4)?;
                Ok(SnapshotRow {
                    name: r.get(0)?,
                    time_ns: r.get(1)?,
                    host: r.get(2)?,
                    paths: serde_json::from_str(&paths).unwrap_or_default(),
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    entries: r.get::<_, i64>(5)? as u64,
                    size: r.get::<_, i64>(6)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Whether snapshot object `name` is known.
    ///
    /// # Errors
    /// Registry failures.
    pub fn has_snapshot(&self, name: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(HAS_SNAPSHOT)
            .map_err(|e| self.err(e))?;
        stmt.exists([name]).map_err(|e| self.err(e))
    }

    /// Forgets snapshot `name`, whose distinct uids are `uids` (read from
    /// its object; `None` when the object is gone, and then the references
    /// are recounted by the next reindex). One transaction: the row goes,
    /// each file loses a reference, and those left with none record the
    /// epoch at which that happened (gc reclaims them once every put that
    /// was running then has ended).
    ///
    /// # Errors
    /// Registry failures.
    pub fn forget_snapshot(&mut self, name: &str, uids: Option<&[u64]>) -> Result<(), StoreError> {
        self.write(|tx| {
            let epoch = Self::next_epoch(tx)?;
            tx.execute("DELETE FROM snapshots WHERE name = ?1", [name])?;
            let mut stmt = tx.prepare_cached(UNREF)?;
            for uid in uids.unwrap_or(&[]) {
                stmt.execute(params![*uid as i64, epoch])?;
            }
            Ok(())
        })
    }

    /// A store from before snapshots: complete files and no record that
    /// this registry ever knew snapshots (see `store migrate`).
    ///
    /// # Errors
    /// Registry failures.
    pub fn needs_migration(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM meta WHERE key = 'snapshots')
                   AND EXISTS (SELECT 1 FROM files WHERE status = 'complete')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Notes that this store keeps snapshots (every file it holds is in
    /// one, or reclaimable).
    ///
    /// # Errors
    /// Registry failures.
    pub fn mark_snapshots_kept(&mut self) -> Result<(), StoreError> {
        self.write(|tx| tx.execute("INSERT OR REPLACE INTO meta VALUES ('snapshots', 1)", []))?;
        Ok(())
    }

    /// Reindex or migrate: every complete row no snapshot references
    /// becomes reclaimable from now on; `kept` records whether this store
    /// keeps snapshots.
    ///
    /// # Errors
    /// Registry failures.
    pub fn settle_unreferenced(&mut self, kept: bool) -> Result<(), StoreError> {
        self.write(|tx| {
            let epoch = Self::next_epoch(tx)?;
            tx.execute(
                "UPDATE files SET unref_epoch = ?1 WHERE refs = 0 AND unref_epoch IS NULL
                   AND status = 'complete'",
                [epoch],
            )?;
            if kept {
                tx.execute("INSERT OR REPLACE INTO meta VALUES ('snapshots', 1)", [])?;
            } else {
                tx.execute("DELETE FROM meta WHERE key = 'snapshots'", [])?;
            }
            Ok(())
        })
    }

    /// Reindex: adds a pack and its chunks (first location of a chunk wins).
    ///
    /// # Errors
    /// Registry failures.
    pub fn add_pack(
        &mut self,
        name: &str,
        size: u64,
        entries: &[PackEntry],
    ) -> Result<(), StoreError> {
        let created = now();
        self.write(|tx| {
            tx.prepare_cached(ADD_PACK)?
                .execute(params![name, size as i64, created])?;
            let pack: i64 = tx
                .prepare_cached(PACK_ID)?
                .query_row([name], |r| r.get(0))?;
            let mut stmt = tx.prepare_cached(ADD_CHUNK)?;
            for e in entries {
                stmt.execute(params![
                    &e.id[..],
                    pack,
                    e.offset as i64,
                    e.stored_len,
                    e.raw_len,
                    e.compression
                ])?;
            }
            Ok(())
        })
    }

    /// Reindex: adds a complete file from a manifest (ignored when its uid
    /// is already present). Returns whether it was added.
    ///
    /// # Errors
    /// Registry failures.
    pub fn add_complete_file(
        &mut self,
        record: &FileRecord,
        manifest: &str,
        chunks: &[([u8; 32], u32)],
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let added = tx.prepare_cached(ADD_FILE)?.execute(params![
                record.uid as i64,
                record.name,
                record.kind.id(),
                record.mode,
                record.mtime.0,
                record.mtime.1,
                record.size as i64,
                record.link,
                record.created,
                record.chunks as i64,
                &record.mac[..],
                manifest
            ])?;
            if added == 0 {
                return Ok(false);
            }
            let row = tx.last_insert_rowid();
            let mut stmt = tx.prepare_cached(INSERT_REF)?;
            for (seq, (id, len)) in chunks.iter().enumerate() {
                stmt.execute(params![row, seq as i64, &id[..], len])?;
            }
            Ok(true)
        })
    }
}

/// Mode of a registry file and of the files SQLite keeps beside it (SQLite
/// gives its `-wal` and `-shm` the database file's mode).
const REGISTRY_MODE: u32 = 0o600;
/// The files SQLite keeps beside a database in WAL mode, by suffix.
pub const SIDE_FILES: [&str; 2] = ["-wal", "-shm"];

/// `path` with `suffix` appended to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Checks and prepares the files of a registry before SQLite opens it, and
/// returns the path to give SQLite: the canonical directory (symbolic links
/// above the registry are the user's choice) joined with the file name.
/// A symbolic link or a non-regular file in the place of the registry, its
/// `-wal` or its `-shm` is refused; a missing registry is created empty,
/// mode 0600, without following links; a group- or world-readable one (a
/// store made before registries were private) is made 0600.
fn private_db_path(path: &Path) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let io = |p: &Path, source: std::io::Error| StoreError::Io {
        path: p.to_path_buf(),
        source,
    };
    let name = path.file_name().ok_or_else(|| StoreError::Refused {
        path: path.to_path_buf(),
        why: "not a file name".into(),
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let full = std::fs::canonicalize(parent)
        .map_err(|e| io(parent, e))?
        .join(name);
    let no_follow = |options: &mut std::fs::OpenOptions| {
        options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    };
    for suffix in std::iter::once("").chain(SIDE_FILES) {
        let file = with_suffix(&full, suffix);
        match std::fs::symlink_metadata(&file) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StoreError::Refused {
                    path: file,
                    why: "is a symbolic link; a registry is never opened through one \
                          (remove the link; `store reindex` rebuilds a lost registry)"
                        .into(),
                })
            }
            Ok(meta) if !meta.is_file() => {
                return Err(StoreError::Refused {
                    path: file,
                    why: "is not a regular file".into(),
                })
            }
            Ok(meta) if meta.mode() & 0o077 != 0 => {
                let mut options = std::fs::OpenOptions::new();
                options.read(true);
                no_follow(&mut options);
                let opened = options.open(&file).map_err(|e| io(&file, e))?;
                opened
                    .set_permissions(std::fs::Permissions::from_mode(REGISTRY_MODE))
                    .map_err(|e| io(&file, e))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if suffix.is_empty() {
                    let mut options = std::fs::OpenOptions::new();
                    options.write(true).create_new(true).mode(REGISTRY_MODE);
                    no_follow(&mut options);
                    match options.open(&file) {
                        Ok(_) => {}
                        // Another process created it meanwhile; SQLite
                        // opens it without following links.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io(&file, e)),
                    }
                }
            }
            Err(e) => return Err(io(&file, e)),
        }
    }
    Ok(full)
}

/// A registry made before snapshots gets their columns; a registry that
/// holds no file yet is marked as one of a store that keeps snapshots.
fn add_snapshot_columns(conn: &Connection) -> rusqlite::Result<()> {
    let has_refs: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('files') WHERE name = 'refs')",
        [],
        |r| r.get(0),
    )?;
    let mut sql = String::from("BEGIN IMMEDIATE;");
    if !has_refs {
        sql.push_str(
            "ALTER TABLE files ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE files ADD COLUMN unref_epoch INTEGER;",
        );
    }
    sql.push_str(
        "INSERT OR IGNORE INTO meta SELECT 'snapshots', 1
           WHERE NOT EXISTS (SELECT 1 FROM files); COMMIT;",
    );
    conn.execute_batch(&sql)
}

/// A registry made before puts' new rows carried their snapshot's
/// reference gets the writer columns that name those rows (DECISIONS 510).
fn add_uid_range_columns(conn: &Connection) -> rusqlite::Result<()> {
    let has_range: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('writers') WHERE name = 'uids_first')",
        [],
        |r| r.get(0),
    )?;
    if has_range {
        return Ok(());
    }
    // Looked at again inside the transaction: another process may have
    // added them since.
    conn.execute_batch("BEGIN IMMEDIATE;")?;
    let added = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('writers') WHERE name = 'uids_first')",
            [],
            |r| r.get::<_, bool>(0),
        )
        .and_then(|has| {
            if has {
                Ok(())
            } else {
                conn.execute_batch(
                    "ALTER TABLE writers ADD COLUMN uids_first INTEGER;
                     ALTER TABLE writers ADD COLUMN uids_last INTEGER;",
                )
            }
        });
    match added {
        Ok(()) => conn.execute_batch("COMMIT;"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK;");
            Err(e)
        }
    }
}

fn reg(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Registry {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry's row of snapshot `snapshots/s` with `entries` entries.
    fn snapshot_row(entries: u64) -> SnapshotRow {
        SnapshotRow {
            name: "snapshots/s".into(),
            time_ns: 1,
            host: "h".into(),
            paths: Vec::new(),
            tags: Vec::new(),
            entries,
            size: 1,
        }
    }

    /// A regular file's record: empty, mode 0644, no chunks.
    fn file_record(uid: u64, name: &str, created: i64) -> FileRecord {
        FileRecord {
            uid,
            name: name.into(),
            kind: Kind::File,
            mode: 0o644,
            mtime: (0, 0),
            size: 0,
            link: Vec::new(),
            created,
            chunks: 0,
            mac: [0; 32],
        }
    }

    /// The plan of `sql`: one line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        // Parameters stay unbound (NULL): a plan does not depend on them.
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get::<_, String>(3).unwrap());
        }
        steps
    }

    #[test]
    fn per_entry_statements_search_through_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(&dir.path().join("registry.sqlite")).unwrap();
        for sql in PER_ENTRY {
            let steps = plan(&registry.conn, sql);
            for step in &steps {
                // A full pass over a table (`SCAN t`, `SCAN t USING INDEX`)
                // or an index SQLite builds for this one statement (which
                // costs a full pass each time) makes the caller quadratic.
                let scans = step.starts_with("SCAN ") && step != "SCAN CONSTANT ROW";
                assert!(
                    !scans && !step.contains("AUTOMATIC"),
                    "{sql}\nreads a whole table: {steps:?}"
                );
            }
        }
        // The test can fail: a lookup by a column without an index scans.
        let steps = plan(&registry.conn, "SELECT 1 FROM files WHERE mode = ?1");
        assert!(steps.iter().any(|s| s.starts_with("SCAN ")), "{steps:?}");
    }

    #[test]
    fn a_put_window_bounds_gc_while_open_and_nothing_once_its_decisions_are_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(&dir.path().join("registry.sqlite")).unwrap();
        let chunk = |n: u8| PackEntry {
            id: [n; 32],
            offset: u64::from(n) * 100,
            stored_len: 100,
            raw_len: 100,
            compression: 0,
        };
        // Chunk 1 belongs to record 1, which one snapshot references;
        // chunk 2 belongs to nothing.
        registry
            .add_pack("packs/p", 300, &[chunk(1), chunk(2)])
            .unwrap();
        let record = FileRecord {
            size: 100,
            chunks: 1,
            ..file_record(1, "f", 1)
        };
        assert!(registry
            .add_complete_file(&record, "manifests/m", &[([1; 32], 100)])
            .unwrap());
        let snapshot = snapshot_row(1);
        let old = WriterLease { id: -1, epoch: 0 };
        registry.add_put_refs(old, &[1]).unwrap();
        registry.record_snapshot(old, &snapshot).unwrap();
        let window = |r: &Registry, lease: WriterLease| -> i64 {
            r.conn
                .query_row(
                    "SELECT epoch FROM writers WHERE id = ?1",
                    [lease.id],
                    |row| row.get(0),
                )
                .unwrap()
        };

        // A put registers (its window opens) and decides, in memory only,
        // to reuse record 1; then the snapshot is forgotten.
        let put = registry.register_writer(Role::Put).unwrap();
        assert_ne!(window(&registry, put), WINDOW_CLOSED);
        registry.forget_snapshot("snapshots/s", Some(&[1])).unwrap();
        // Open window: a gc removes neither the record nor the chunk that
        // became garbage after the window opened.
        assert_eq!(registry.mark_unreferenced().unwrap().0, 0);
        registry.mark_garbage().unwrap();
        assert_eq!(registry.sweep_garbage().unwrap().0, 0);
        // The batch commit records the reuse and closes the window: the
        // record is kept by `put_refs`, and chunk 2, marked while the
        // window was open and relied on by nothing, goes.
        registry
            .commit_batch(put, &mut [], &[1], None, None)
            .unwrap();
        assert_eq!(window(&registry, put), WINDOW_CLOSED);
        assert_eq!(registry.mark_unreferenced().unwrap().0, 0);
        registry.mark_garbage().unwrap();
        assert_eq!(registry.sweep_garbage().unwrap(), (1, 100));
        assert!(registry.location(&[1; 32]).unwrap().is_some());
        // A window opened again bounds what is marked after it.
        registry.open_window(put).unwrap();
        assert_ne!(window(&registry, put), WINDOW_CLOSED);
        registry.add_pack("packs/q", 100, &[chunk(3)]).unwrap();
        registry.mark_garbage().unwrap();
        assert_eq!(registry.sweep_garbage().unwrap().0, 0);
        // The put ends without a snapshot: the record is reclaimable, and
        // with no put running the marked chunk goes.
        registry.end_writer(put).unwrap();
        assert_eq!(registry.mark_unreferenced().unwrap().0, 1);
        assert_eq!(registry.sweep_garbage().unwrap(), (1, 100));
    }

    #[test]
    fn a_puts_new_rows_carry_its_snapshots_reference_and_give_it_back_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(&dir.path().join("registry.sqlite")).unwrap();
        let record = |uid: u64| file_record(uid, &format!("f{uid:x}"), 1);
        let snapshot = snapshot_row(2);
        let refs = |r: &Registry, uid: u64| -> (i64, Option<i64>) {
            r.conn
                .query_row(
                    "SELECT refs, unref_epoch FROM files WHERE uid = ?1",
                    [uid as i64],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap()
        };
        // A put draws uids across i64::MAX (the registry's order wraps
        // there) and commits two new rows with their manifest.
        let put_two = |r: &mut Registry, first: u64| -> WriterLease {
            let lease = r.register_writer(Role::Put).unwrap();
            let mut files: Vec<PendingFile> = [first, first.wrapping_add(1)]
                .into_iter()
                .map(|uid| PendingFile {
                    record: record(uid),
                    source: None,
                    row: None,
                    next_seq: 0,
                    refs: Vec::new(),
                    stored: 0,
                })
                .collect();
            let mut files: Vec<&mut PendingFile> = files.iter_mut().collect();
            let drawn = UidRange {
                first,
                last: first.wrapping_add(1),
            };
            r.commit_batch(
                lease,
                &mut files,
                &[],
                Some(drawn),
                Some(("manifests/m", 2)),
            )
            .unwrap();
            r.complete_manifest(lease, "manifests/m").unwrap();
            lease
        };
        // Another row, outside both puts' ranges, that no snapshot holds.
        assert!(registry
            .add_complete_file(&record(5), "manifests/o", &[])
            .unwrap());

        // New rows count their snapshot's reference from their insert: a
        // gc beside the put finds nothing to remove, and the snapshot
        // adds nothing when it is recorded.
        let wrap = i64::MAX as u64;
        let put = put_two(&mut registry, wrap);
        assert_eq!(refs(&registry, wrap), (1, None));
        assert_eq!(refs(&registry, wrap + 1), (1, None));
        assert_eq!(registry.mark_unreferenced().unwrap().0, 0);
        registry.record_snapshot(put, &snapshot).unwrap();
        registry.end_writer(put).unwrap();
        assert_eq!(refs(&registry, wrap), (1, None));
        assert_eq!(refs(&registry, wrap + 1), (1, None));

        // A put that ends without its snapshot takes the reference back:
        // its rows become reclaimable, and no other row changes.
        let failed = put_two(&mut registry, 100);
        assert_eq!(refs(&registry, 100), (1, None));
        registry.end_writer(failed).unwrap();
        assert_eq!(refs(&registry, 100).0, 0);
        assert_eq!(refs(&registry, 101).0, 0);
        assert!(refs(&registry, 100).1.is_some());
        assert_eq!(refs(&registry, 5), (0, None));
        assert_eq!(refs(&registry, wrap), (1, None));
        assert_eq!(registry.mark_unreferenced().unwrap().0, 2);

        // A put that died is settled by a gc the same way.
        let dead = put_two(&mut registry, 200);
        registry.settle_dead(&[dead.id], &[], &[]).unwrap();
        assert_eq!(refs(&registry, 200).0, 0);
        assert_eq!(refs(&registry, 201).0, 0);
        assert_eq!(refs(&registry, wrap), (1, None));
        assert_eq!(registry.mark_unreferenced().unwrap().0, 2);
    }

    #[test]
    fn newest_version_of_each_name_is_streamed_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::open(&dir.path().join("registry.sqlite")).unwrap();
        let record = |uid: u64, name: &str, created: i64| FileRecord {
            size: uid,
            ..file_record(uid, name, created)
        };
        for (uid, name, created) in [
            (1, "a", 10),
            (2, "a/x", 10),
            (3, "a/x", 20),
            (4, "a-b", 30),
            (5, "a/y/z", 5),
            (6, "b", 1),
            (7, "a/x", 20),
        ] {
            assert!(registry
                .add_complete_file(&record(uid, name, created), "m", &[])
                .unwrap());
        }
        let names = |sel: &str| {
            let mut out = Vec::new();
            registry
                .by_name(sel, |row| {
                    out.push((row.record.name, row.record.uid));
                    Ok(())
                })
                .unwrap();
            out
        };
        // Same time: the later row wins.
        let want = [("a", 1), ("a/x", 7), ("a/y/z", 5)];
        assert_eq!(names("a"), want.map(|(n, u)| (n.to_owned(), u)));
        assert_eq!(names("a/x"), vec![("a/x".to_owned(), 7)]);
        assert_eq!(names("").len(), 5);
    }

    #[test]
    fn a_registry_is_private_and_never_opened_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.sqlite");
        let registry = Registry::open(&path).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let mode = std::fs::metadata(with_suffix(&path, suffix))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "registry{suffix}");
        }
        drop(registry);
        let elsewhere = dir.path().join("elsewhere.sqlite");
        std::fs::write(&elsewhere, b"not yours").unwrap();
        for suffix in ["", "-wal"] {
            let link = with_suffix(&path, suffix);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
            let err = Registry::open(&path).err().expect("a link is refused");
            assert!(
                matches!(&err, StoreError::Refused { path, .. } if *path == link),
                "{err}"
            );
            std::fs::remove_file(&link).unwrap();
            assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not yours");
        }
    }
}
