//! Where received files go: a [`Destination`] opens an [`Incoming`] file
//! per announced file, the server writes ranges into it and commits it.
//!
//! [`DirDestination`] receives into a directory: each incoming file is a
//! partial file `.cst-part.KEY` in its target directory (opened below the
//! root without following any symbolic link, through
//! `cryptstream_output::DirFd`), written at offsets with `pwrite`, with a
//! sidecar `.cst-part.KEY.ranges` listing the byte ranges received, saved
//! every [`CHECKPOINT_BYTES`] and whenever the last connection holding the
//! file lets go. KEY is a hash of the name, size and mtime, so the next
//! `send` of the same file finds it and is told what is held. On commit
//! the whole-file BLAKE3 is checked, the mode and mtime are set, the data
//! is synced, and the partial is renamed to its final name: no file ever
//! appears under its final name before it is complete and verified.
//!
//! The rest of a tree goes through the same trait: whether a file is held
//! already ([`Destination::check`]), directories, symbolic links and hard
//! links (`entries` for [`DirDestination`]). Files and directories get
//! the modes of [`ModePolicy`].
//!
//! A store destination (`serve --store`) is meant to be a second
//! implementation of [`Destination`].

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use cryptstream_output::{DirFd, Timestamp};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::frame::{Compare, EntryTime, ErrorCode, FileMeta, HASH_LEN};
use crate::name::{RelName, PARTIAL_PREFIX};
use crate::ranges::RangeSet;
use crate::treehash::SegmentedHash;

/// Bytes received into a file between two saves of its sidecar.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// Magic of a sidecar file.
const SIDECAR_MAGIC: &[u8; 8] = b"CSTPART1";
/// Most ranges a sidecar may list (more means it is not ours).
const MAX_SIDECAR_RANGES: usize = 1 << 20;
/// Bytes of one segment of the whole-file hash (see `treehash`): one
/// connection's range of 16 MiB is hashed as it arrives.
const HASH_SEGMENT: u64 = 16 * 1024 * 1024;
/// Mode of directories created for received files: private while they
/// fill, as the engine's output tree makes them; the sender's `Mkdir`
/// gives each its own mode once everything inside arrived.
pub(crate) const DIR_MODE: u32 = cryptstream_output::PRIVATE_DIR_MODE;
/// Bytes of one segment of the whole-file hash, for `entries::check`.
pub(crate) const CHECK_HASH_SEGMENT: u64 = HASH_SEGMENT;
/// Hash states kept for partial files that no connection holds open.
const IDLE_HASHES: usize = 256;

/// Why a received file could not be opened, written or committed.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ReceiveError {
    /// The error code sent to the client.
    pub code: ErrorCode,
    /// The file's relative name.
    pub name: String,
    /// What went wrong.
    pub reason: String,
}

impl ReceiveError {
    pub(crate) fn new(code: ErrorCode, name: &str, reason: impl Into<String>) -> ReceiveError {
        ReceiveError {
            code,
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Where received files go.
pub trait Destination: Send + Sync + 'static {
    /// Opens (or finds, or resumes) the incoming file `name` of `meta`.
    ///
    /// # Errors
    /// [`ReceiveError`] with the code to send to the client.
    fn open(&self, name: &RelName, meta: &FileMeta) -> Result<Arc<dyn Incoming>, ReceiveError>;

    /// Whether the file `name` is already held under its final name, the
    /// same as the sender's by `compare` (and `meta.size`); a file held
    /// gets the mode of `meta` (and, compared by content, its mtime).
    /// Anything else there (missing, another kind, not readable, behind a
    /// symbolic link) is "not held": the file is then sent.
    ///
    /// # Errors
    /// `Storage` when a held file's mode or mtime cannot be set.
    fn check(
        &self,
        name: &RelName,
        meta: &FileMeta,
        compare: Compare,
    ) -> Result<bool, ReceiveError>;

    /// Makes the directory `name` (and any missing parent), then gives it
    /// `mode` and `mtime`: sent after everything inside it arrived.
    ///
    /// # Errors
    /// `BadName` for a symbolic link or a non-directory on the way,
    /// `Storage` for the rest.
    fn make_dir(&self, name: &RelName, mode: u32, mtime: EntryTime) -> Result<(), ReceiveError>;

    /// Makes `name` a symbolic link to `target` (bytes, never resolved),
    /// replacing a file or link there.
    ///
    /// # Errors
    /// As [`Destination::make_dir`].
    fn make_symlink(
        &self,
        name: &RelName,
        target: &[u8],
        mtime: EntryTime,
    ) -> Result<(), ReceiveError>;

    /// Makes `name` a hard link to the regular file `target` below the
    /// root (reached without following a symbolic link), replacing a file
    /// or link there.
    ///
    /// # Errors
    /// `BadName` when `target` is not a regular file below the root or
    /// either path crosses a symbolic link; `Storage` for the rest.
    fn make_hard_link(&self, name: &RelName, target: &RelName) -> Result<(), ReceiveError>;

    /// Saves the state of every incoming file (the server is stopping).
    fn checkpoint_all(&self);
}

/// A file being received. Every method blocks (file I/O): call them from
/// a blocking thread.
pub trait Incoming: Send + Sync {
    /// The announced size.
    fn size(&self) -> u64;
    /// The ranges already held.
    fn held(&self) -> RangeSet;
    /// Writes `parts`, one after the other, from `offset` on (one
    /// vectored write for a run of contiguous `Data` frames).
    ///
    /// # Errors
    /// `OutOfRange` past the announced size, `Storage` on a write error.
    fn write_parts_at(&self, offset: u64, parts: &[&[u8]]) -> Result<(), ReceiveError>;
    /// Writes `bytes` at `offset`.
    ///
    /// # Errors
    /// As [`Incoming::write_parts_at`].
    fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), ReceiveError> {
        self.write_parts_at(offset, &[bytes])
    }
    /// Bytes held so far.
    fn held_bytes(&self) -> u64;
    /// Verifies `hash` over the whole file and makes it final.
    /// Committing a file already committed succeeds.
    ///
    /// # Errors
    /// `Incomplete`, `HashMismatch` (the partial is discarded) or `Storage`.
    fn commit(&self, hash: &[u8; HASH_LEN]) -> Result<(), ReceiveError>;
    /// One connection no longer uses this file.
    fn release(&self);
}

/// The modes received files and directories get: the one policy of
/// every restoring command, [`cryptstream_output::restored_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModePolicy {
    /// The server's umask.
    pub umask: u32,
    /// Keep setuid, setgid and sticky (`serve --keep-special-bits`).
    pub keep_special_bits: bool,
}

impl ModePolicy {
    /// The mode to give an entry sent with `mode`.
    pub fn apply(self, mode: u32) -> u32 {
        cryptstream_output::restored_mode(mode, self.umask, self.keep_special_bits)
    }
}

/// Receives into a directory tree.
pub struct DirDestination {
    root: DirFd,
    modes: ModePolicy,
    open: Arc<Mutex<HashMap<String, Arc<PartialFile>>>>,
    idle: Arc<IdleHashes>,
}

/// The whole-file hash states of partial files that were let go before
/// they were complete, by key. A client sends a large file as a run of
/// ranges, opening and closing it for each; without this, every reopen
/// would start a new hash and the commit would read the whole file back
/// from the disk to hash it again. A state is taken back only by a reopen
/// that finds the partial file exactly as it was left: the same inode,
/// size, mtime and change time (any write to it since, by anyone, moves
/// its change time, and then it is read back and checked as after a
/// restart), its held ranges kept and the file not reset. At most
/// [`IDLE_HASHES`] are kept; the oldest go first.
#[derive(Default)]
struct IdleHashes {
    states: Mutex<std::collections::VecDeque<IdleHash>>,
}

/// A kept hash state and the partial file it was fed from, as it was left.
struct IdleHash {
    key: String,
    hash: Arc<SegmentedHash>,
    stamp: FileStamp,
}

/// What changes when a file's bytes change: its inode, size, mtime and
/// change time (which no one can set back).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(file: &File) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

impl IdleHashes {
    fn put(&self, key: &str, hash: Arc<SegmentedHash>, stamp: FileStamp) {
        let mut states = self.states.lock().expect("the lock is never poisoned");
        states.retain(|idle| idle.key != key);
        if states.len() == IDLE_HASHES {
            states.pop_front();
        }
        states.push_back(IdleHash {
            key: key.to_owned(),
            hash,
            stamp,
        });
    }

    fn take(&self, key: &str) -> Option<IdleHash> {
        let mut states = self.states.lock().expect("the lock is never poisoned");
        let at = states.iter().position(|idle| idle.key == key)?;
        states.remove(at)
    }
}

impl DirDestination {
    /// Receives below `root` (which must exist); modes go through `umask`,
    /// and setuid, setgid and sticky bits are dropped (see
    /// [`DirDestination::keep_special_bits`]).
    ///
    /// # Errors
    /// When `root` cannot be opened as a directory.
    pub fn new(root: &Path, umask: u32) -> io::Result<DirDestination> {
        Ok(DirDestination {
            root: DirFd::open(root)?,
            modes: ModePolicy {
                umask: umask & 0o777,
                keep_special_bits: false,
            },
            open: Arc::new(Mutex::new(HashMap::new())),
            idle: Arc::default(),
        })
    }

    /// Keeps setuid, setgid and sticky bits of received files and
    /// directories (`serve --keep-special-bits`).
    pub fn keep_special_bits(mut self, keep: bool) -> DirDestination {
        self.modes.keep_special_bits = keep;
        self
    }

    /// The root directory, open.
    pub(crate) fn root(&self) -> &DirFd {
        &self.root
    }

    /// The mode policy.
    pub(crate) fn modes(&self) -> ModePolicy {
        self.modes
    }
}

/// The partial-file key of a file: hash of name, size and mtime.
fn partial_key(name: &RelName, meta: &FileMeta) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cryptstream-net partial v1\0");
    hasher.update(&(name.as_bytes().len() as u64).to_be_bytes());
    hasher.update(name.as_bytes());
    hasher.update(&meta.size.to_be_bytes());
    hasher.update(&meta.mtime_seconds.to_be_bytes());
    hasher.update(&meta.mtime_nanos.to_be_bytes());
    hex::encode(&hasher.finalize().as_bytes()[..16])
}

impl Destination for DirDestination {
    fn open(&self, name: &RelName, meta: &FileMeta) -> Result<Arc<dyn Incoming>, ReceiveError> {
        let shown = name.display();
        let key = partial_key(name, meta);
        let mut open = self.open.lock().expect("the lock is never poisoned");
        if let Some(file) = open.get(&key) {
            file.state
                .lock()
                .expect("the lock is never poisoned")
                .openers += 1;
            return Ok(file.clone());
        }
        let (parent, last) = name.split_parent();
        let dir = self
            .root
            .create_dirs_beneath(&parent, DIR_MODE)
            .map_err(|e| path_error(&shown, "cannot create its directory", &e))?;
        make_writable(&dir);
        // Before anything is allocated for it: a file must fit in the
        // free space (beside what its partial already holds).
        check_free_space(&dir, &key, &shown, meta.size)?;
        let idle = self.idle.take(&key);
        let file = PartialFile::open(dir, last, &key, &shown, meta.clone(), self.modes, idle)?;
        let file = Arc::new(PartialFile {
            registry: Arc::downgrade(&self.open),
            idle: Arc::downgrade(&self.idle),
            ..file
        });
        open.insert(key, file.clone());
        Ok(file)
    }

    fn check(
        &self,
        name: &RelName,
        meta: &FileMeta,
        compare: Compare,
    ) -> Result<bool, ReceiveError> {
        crate::entries::check(self, name, meta, compare)
    }

    fn make_dir(&self, name: &RelName, mode: u32, mtime: EntryTime) -> Result<(), ReceiveError> {
        crate::entries::make_dir(self, name, mode, mtime)
    }

    fn make_symlink(
        &self,
        name: &RelName,
        target: &[u8],
        mtime: EntryTime,
    ) -> Result<(), ReceiveError> {
        crate::entries::make_symlink(self, name, target, mtime)
    }

    fn make_hard_link(&self, name: &RelName, target: &RelName) -> Result<(), ReceiveError> {
        crate::entries::make_hard_link(self, name, target)
    }

    fn checkpoint_all(&self) {
        let open = self.open.lock().expect("the lock is never poisoned");
        for file in open.values() {
            file.checkpoint();
        }
    }
}

/// The mutable state of a partial file.
struct PartialState {
    ranges: RangeSet,
    /// Bytes written since the last sidecar save.
    unsaved: u64,
    committed: bool,
    /// Failed its hash check and was removed.
    discarded: bool,
    /// Connections that opened it and have not released it.
    openers: usize,
}

/// A file being received into a directory.
struct PartialFile {
    dir: DirFd,
    final_name: OsString,
    part_name: OsString,
    sidecar_name: OsString,
    key: String,
    shown: String,
    meta: FileMeta,
    modes: ModePolicy,
    file: File,
    /// The whole-file hash, fed as bytes arrive.
    hash: Arc<SegmentedHash>,
    state: Mutex<PartialState>,
    /// Serialises sidecar saves.
    saving: Mutex<()>,
    /// Writes hold it shared, a commit exclusive: no byte is written into
    /// a file once its commit began (it may be renamed to its final name).
    writing: RwLock<()>,
    registry: std::sync::Weak<Mutex<HashMap<String, Arc<PartialFile>>>>,
    /// Where the hash state goes when the last connection lets go.
    idle: std::sync::Weak<IdleHashes>,
}

impl PartialFile {
    fn open(
        dir: DirFd,
        final_name: &OsStr,
        key: &str,
        shown: &str,
        meta: FileMeta,
        modes: ModePolicy,
        idle_hash: Option<IdleHash>,
    ) -> Result<PartialFile, ReceiveError> {
        let storage = |what: &str, e: io::Error| {
            ReceiveError::new(ErrorCode::Storage, shown, format!("{what}: {e}"))
        };
        let part_name = OsString::from(format!("{PARTIAL_PREFIX}{key}"));
        let sidecar_name = OsString::from(format!("{PARTIAL_PREFIX}{key}.ranges"));
        let fd: OwnedFd = rustix::fs::openat(
            dir.as_fd(),
            &part_name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| storage("cannot open its partial file", e.into()))?;
        let file = File::from(fd);
        // Before anything here touches the file: was it left as it is?
        let untouched = idle_hash.filter(|idle| FileStamp::of(&file) == Some(idle.stamp));
        let on_disk = file
            .metadata()
            .map_err(|e| storage("cannot stat its partial file", e))?
            .len();
        let mut ranges = read_sidecar(&dir, &sidecar_name, meta.size).unwrap_or_default();
        if ranges
            .to_ranges()
            .last()
            .is_some_and(|&(o, l)| o + l > on_disk)
        {
            // The sidecar claims bytes the file does not have: trust neither.
            ranges = RangeSet::new();
        }
        if ranges.is_empty() && on_disk > 0 {
            file.set_len(0)
                .map_err(|e| storage("cannot reset its partial file", e))?;
        }
        // A kept hash state is good only for the bytes it was fed, which
        // are in the file as they were fed unless someone wrote to it (its
        // stamp moved) or it was reset here.
        let hash = untouched
            .filter(|_| !ranges.is_empty())
            .map(|idle| idle.hash)
            .unwrap_or_else(|| Arc::new(SegmentedHash::new(meta.size, HASH_SEGMENT)));
        Ok(PartialFile {
            hash,
            dir,
            final_name: final_name.to_owned(),
            part_name,
            sidecar_name,
            key: key.to_owned(),
            shown: shown.to_owned(),
            meta,
            modes,
            file,
            state: Mutex::new(PartialState {
                ranges,
                unsaved: 0,
                committed: false,
                discarded: false,
                openers: 1,
            }),
            saving: Mutex::new(()),
            writing: RwLock::new(()),
            registry: std::sync::Weak::new(),
            idle: std::sync::Weak::new(),
        })
    }

    fn error(&self, code: ErrorCode, reason: impl Into<String>) -> ReceiveError {
        ReceiveError::new(code, &self.shown, reason)
    }

    /// Saves the sidecar (best effort: a failed save only costs a resend).
    fn checkpoint(&self) {
        let _saving = self.saving.lock().expect("the lock is never poisoned");
        let ranges = {
            let mut state = self.state.lock().expect("the lock is never poisoned");
            if state.committed || state.discarded {
                return;
            }
            state.unsaved = 0;
            state.ranges.clone()
        };
        if let Err(e) = write_sidecar(&self.dir, &self.sidecar_name, self.meta.size, &ranges) {
            tracing::warn!("{}: cannot save the received ranges: {e}", self.shown);
        }
    }

    /// Removes the partial and its sidecar.
    fn discard(&self) {
        let _ = rustix::fs::unlinkat(
            self.dir.as_fd(),
            &self.part_name,
            rustix::fs::AtFlags::empty(),
        );
        let _ = rustix::fs::unlinkat(
            self.dir.as_fd(),
            &self.sidecar_name,
            rustix::fs::AtFlags::empty(),
        );
    }

    fn unregister(&self) {
        if let Some(registry) = self.registry.upgrade() {
            registry
                .lock()
                .expect("the lock is never poisoned")
                .remove(&self.key);
        }
    }
}

impl Incoming for PartialFile {
    fn size(&self) -> u64 {
        self.meta.size
    }

    fn held(&self) -> RangeSet {
        self.state
            .lock()
            .expect("the lock is never poisoned")
            .ranges
            .clone()
    }

    fn held_bytes(&self) -> u64 {
        self.state
            .lock()
            .expect("the lock is never poisoned")
            .ranges
            .total()
    }

    fn write_parts_at(&self, offset: u64, parts: &[&[u8]]) -> Result<(), ReceiveError> {
        let len: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.meta.size)
            .ok_or_else(|| {
                self.error(
                    ErrorCode::OutOfRange,
                    format!("bytes {offset}..+{len} past its size of {}", self.meta.size),
                )
            })?;
        let _writing = self.writing.read().expect("the lock is never poisoned");
        {
            let state = self.state.lock().expect("the lock is never poisoned");
            if state.committed {
                return Err(self.error(
                    ErrorCode::AlreadyCommitted,
                    "bytes for a file already committed are refused",
                ));
            }
            if state.discarded {
                return Err(self.error(
                    ErrorCode::HashMismatch,
                    "the file failed its hash check and was discarded; send it again",
                ));
            }
        }
        pwritev_all(&self.file, parts, offset)
            .map_err(|e| self.error(ErrorCode::Storage, format!("cannot write: {e}")))?;
        let mut at = offset;
        for part in parts {
            self.hash.feed(at, part);
            at += part.len() as u64;
        }
        let save = {
            let mut state = self.state.lock().expect("the lock is never poisoned");
            if state.committed || state.discarded {
                return Ok(());
            }
            state.ranges.insert(offset, end);
            state.unsaved += len;
            state.unsaved >= checkpoint_bytes()
        };
        if save {
            self.checkpoint();
        }
        Ok(())
    }

    fn commit(&self, hash: &[u8; HASH_LEN]) -> Result<(), ReceiveError> {
        let _exclusive = self.writing.write().expect("the lock is never poisoned");
        let mut state = self.state.lock().expect("the lock is never poisoned");
        if state.committed {
            return Ok(());
        }
        if state.discarded {
            return Err(self.error(
                ErrorCode::HashMismatch,
                "the received bytes did not have the sender's hash; discarded, send it again",
            ));
        }
        if !state.ranges.covers(self.meta.size) {
            return Err(self.error(
                ErrorCode::Incomplete,
                format!(
                    "commit with {} of {} bytes received",
                    state.ranges.total(),
                    self.meta.size
                ),
            ));
        }
        let storage =
            |what: &str, e: io::Error| self.error(ErrorCode::Storage, format!("{what}: {e}"));
        self.file
            .set_len(self.meta.size)
            .map_err(|e| storage("cannot size", e))?;
        let actual = self
            .hash
            .finish(|buf, offset| self.file.read_exact_at(buf, offset))
            .map_err(|e| storage("cannot read back", e))?;
        if actual.as_bytes() != hash {
            state.discarded = true;
            drop(state);
            self.discard();
            self.unregister();
            return Err(self.error(
                ErrorCode::HashMismatch,
                "the received bytes do not have the sender's BLAKE3 hash; discarded, send it again",
            ));
        }
        let mode = self.modes.apply(self.meta.mode);
        rustix::fs::fchmod(self.file.as_fd(), Mode::from_raw_mode(mode))
            .map_err(|e| storage("cannot set its mode", e.into()))?;
        let mtime = Timestamp {
            seconds: self.meta.mtime_seconds,
            nanos: self.meta.mtime_nanos,
        };
        rustix::fs::futimens(self.file.as_fd(), &mtime.as_mtime_only())
            .map_err(|e| storage("cannot set its mtime", e.into()))?;
        self.file
            .sync_data()
            .map_err(|e| storage("cannot sync", e))?;
        rustix::fs::renameat(
            self.dir.as_fd(),
            &self.part_name,
            self.dir.as_fd(),
            &self.final_name,
        )
        .map_err(|e| storage("cannot rename into place", e.into()))?;
        state.committed = true;
        drop(state);
        let _ = rustix::fs::unlinkat(
            self.dir.as_fd(),
            &self.sidecar_name,
            rustix::fs::AtFlags::empty(),
        );
        let _ = rustix::fs::fsync(self.dir.as_fd());
        self.unregister();
        Ok(())
    }

    fn release(&self) {
        // Under the registry's lock, like `open`: a session that opens the
        // same file meanwhile either finds this one still registered (and
        // counted) or, once it is gone, a sidecar that is already saved.
        // Two live `PartialFile`s of one file would each miss the other's
        // ranges.
        let registry = self.registry.upgrade();
        let mut open = registry
            .as_ref()
            .map(|r| r.lock().expect("the lock is never poisoned"));
        let last = {
            let mut state = self.state.lock().expect("the lock is never poisoned");
            state.openers = state.openers.saturating_sub(1);
            state.openers == 0 && !state.committed && !state.discarded
        };
        if last {
            self.checkpoint();
            if let Some(open) = open.as_mut() {
                open.remove(&self.key);
            }
            if let (Some(idle), Some(stamp)) = (self.idle.upgrade(), FileStamp::of(&self.file)) {
                idle.put(&self.key, self.hash.clone(), stamp);
            }
        }
    }
}

/// Gives the owner write and search permission on `dir` if it lacks them
/// (a directory made read-only by an earlier send, that this one adds
/// to); the sender's `Mkdir` sets its mode again once everything inside
/// arrived. Best effort: where it fails, the write that follows says why.
pub(crate) fn make_writable(dir: &DirFd) {
    if let Ok(st) = rustix::fs::fstat(dir.as_fd()) {
        let mode = st.st_mode & 0o7777;
        if mode & 0o300 != 0o300 {
            let _ = rustix::fs::fchmod(dir.as_fd(), Mode::from_raw_mode(mode | 0o300));
        }
    }
}

/// The error for `what` failing with `e` on the way to `shown`: a symbolic
/// link or a non-directory on the way is a refused name, the rest a
/// storage error.
pub(crate) fn path_error(shown: &str, what: &str, e: &io::Error) -> ReceiveError {
    let code = match e.raw_os_error() {
        Some(c) if c == Errno::LOOP.raw_os_error() || c == Errno::NOTDIR.raw_os_error() => {
            ErrorCode::BadName
        }
        _ if e.kind() == io::ErrorKind::InvalidInput => ErrorCode::BadName,
        _ => ErrorCode::Storage,
    };
    let reason = if code == ErrorCode::BadName {
        format!("{what}: a symbolic link or a file is on its way ({e}); refused")
    } else {
        format!("{what}: {e}")
    };
    ReceiveError::new(code, shown, reason)
}

/// Refuses a file of `size` bytes that would not fit in the free space of
/// `dir`'s file system, counting what its partial file `key` holds.
fn check_free_space(dir: &DirFd, key: &str, shown: &str, size: u64) -> Result<(), ReceiveError> {
    let stats = rustix::fs::fstatvfs(dir.as_fd()).map_err(|e| {
        ReceiveError::new(
            ErrorCode::Storage,
            shown,
            format!("cannot read the free space: {e}"),
        )
    })?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    let held = rustix::fs::statat(
        dir.as_fd(),
        format!("{PARTIAL_PREFIX}{key}"),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map(|st| u64::try_from(st.st_size).unwrap_or(0))
    .unwrap_or(0);
    let needed = size.saturating_sub(held);
    if needed > free {
        return Err(ReceiveError::new(
            ErrorCode::Storage,
            shown,
            format!("announces {size} bytes, more than the {free} bytes free on the server"),
        ));
    }
    Ok(())
}

/// Bytes between two sidecar saves ([`CHECKPOINT_BYTES`]; debug builds
/// let a test hook lower it).
fn checkpoint_bytes() -> u64 {
    #[cfg(any(test, feature = "test-knobs"))]
    return crate::hooks::checkpoint_bytes(CHECKPOINT_BYTES);
    #[cfg(not(any(test, feature = "test-knobs")))]
    CHECKPOINT_BYTES
}

/// Reads a sidecar; `None` when missing or not valid (then nothing is held).
fn read_sidecar(dir: &DirFd, name: &OsStr, size: u64) -> Option<RangeSet> {
    let fd = rustix::fs::openat(
        dir.as_fd(),
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut bytes = Vec::new();
    let limit = (8 + 8 + 4 + MAX_SIDECAR_RANGES * 16 + 32) as u64;
    io::Read::read_to_end(&mut io::Read::take(File::from(fd), limit + 1), &mut bytes).ok()?;
    let body_len = bytes.len().checked_sub(32)?;
    let (body, check) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != check || body.get(..8)? != SIDECAR_MAGIC {
        return None;
    }
    let recorded = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    let count = u32::from_be_bytes(body.get(16..20)?.try_into().ok()?) as usize;
    if recorded != size || body.len() != 20 + count * 16 {
        return None;
    }
    let mut set = RangeSet::new();
    for pair in body[20..].chunks_exact(16) {
        let offset = u64::from_be_bytes(pair[..8].try_into().ok()?);
        let len = u64::from_be_bytes(pair[8..].try_into().ok()?);
        let end = offset.checked_add(len).filter(|&e| e <= size)?;
        set.insert(offset, end);
    }
    Some(set)
}

/// Writes a sidecar through a temp name and a rename.
fn write_sidecar(dir: &DirFd, name: &OsStr, size: u64, ranges: &RangeSet) -> io::Result<()> {
    let mut body = Vec::with_capacity(20 + ranges.len() * 16 + 32);
    body.extend_from_slice(SIDECAR_MAGIC);
    body.extend_from_slice(&size.to_be_bytes());
    body.extend_from_slice(&(ranges.len() as u32).to_be_bytes());
    for (offset, len) in ranges.to_ranges() {
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&len.to_be_bytes());
    }
    let check = *blake3::hash(&body).as_bytes();
    body.extend_from_slice(&check);
    let mut temp = name.to_owned();
    temp.push(".tmp");
    let fd = rustix::fs::openat(
        dir.as_fd(),
        &temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    File::from(fd).write_all_at(&body, 0)?;
    rustix::fs::renameat(dir.as_fd(), &temp, dir.as_fd(), name)?;
    Ok(())
}

/// The partial and sidecar names a file of `name` and `meta` would use
/// (for tests and tools that look for leftovers).
pub fn partial_paths(name: &RelName, meta: &FileMeta) -> (PathBuf, PathBuf) {
    let key = partial_key(name, meta);
    let (parent, _) = name.split_parent();
    (
        parent.join(format!("{PARTIAL_PREFIX}{key}")),
        parent.join(format!("{PARTIAL_PREFIX}{key}.ranges")),
    )
}

/// Linux takes at most this many slices per vectored call.
const IOV_MAX: usize = 1024;

/// `pwritev` of `parts` at `offset` until every byte is written (again
/// after a short write or EINTR).
fn pwritev_all(file: &File, parts: &[&[u8]], offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| io::IoSlice::new(part))
        .collect();
    let mut rest = &mut slices[..];
    let mut at = offset;
    while !rest.is_empty() {
        let count = rest.len().min(IOV_MAX);
        match rustix::io::pwritev(file.as_fd(), &rest[..count], at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                at += n as u64;
                io::IoSlice::advance_slices(&mut rest, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            size,
            mtime_seconds: 1_700_000_000,
            mtime_nanos: 5,
            mode: 0o640,
        }
    }

    #[test]
    fn out_of_order_writes_commit_with_the_right_hash_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let name = RelName::parse(b"d/e/f.bin").unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let file = dest.open(&name, &meta(data.len() as u64)).unwrap();
        file.write_at(60_000, &data[60_000..]).unwrap();
        file.write_at(0, &data[..60_000]).unwrap();
        assert!(file.write_at(99_999, b"xx").is_err());
        assert!(!tmp.path().join("d/e/f.bin").exists());
        let bad = [0u8; 32];
        let err = file.commit(&bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::HashMismatch);
        assert!(!tmp.path().join("d/e/f.bin").exists());
        // Discarded: a new open starts from nothing.
        let file = dest.open(&name, &meta(data.len() as u64)).unwrap();
        assert_eq!(file.held_bytes(), 0);
        file.write_at(0, &data).unwrap();
        file.commit(blake3::hash(&data).as_bytes()).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("d/e/f.bin")).unwrap(), data);
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("d/e")).unwrap().collect();
        assert_eq!(names.len(), 1, "no partial or sidecar left");
    }

    #[test]
    fn parts_written_at_once_land_in_order_and_hash_like_one_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let name = RelName::parse(b"parts.bin").unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let file = dest.open(&name, &meta(data.len() as u64)).unwrap();
        // Four frames' worth with an empty one among them, then the rest
        // as one part; past the end is refused and writes nothing.
        file.write_parts_at(0, &[&data[..70_000], &[], &data[70_000..150_000]])
            .unwrap();
        assert_eq!(file.held_bytes(), 150_000);
        assert!(file
            .write_parts_at(150_000, &[&data[150_000..], b"x"])
            .is_err());
        assert_eq!(file.held_bytes(), 150_000);
        file.write_parts_at(150_000, &[&data[150_000..]]).unwrap();
        file.write_parts_at(300_000, &[&[]]).unwrap();
        file.commit(blake3::hash(&data).as_bytes()).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("parts.bin")).unwrap(), data);
    }

    #[test]
    fn a_released_partial_resumes_with_its_ranges() {
        let tmp = tempfile::tempdir().unwrap();
        let name = RelName::parse(b"big").unwrap();
        let data = vec![42u8; 50_000];
        {
            let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
            let file = dest.open(&name, &meta(50_000)).unwrap();
            file.write_at(0, &data[..20_000]).unwrap();
            file.write_at(30_000, &data[30_000..40_000]).unwrap();
            file.release();
        }
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let file = dest.open(&name, &meta(50_000)).unwrap();
        assert_eq!(file.held().to_ranges(), vec![(0, 20_000), (30_000, 10_000)]);
        // Another size is another partial.
        let other = dest.open(&name, &meta(50_001)).unwrap();
        assert_eq!(other.held_bytes(), 0);
        other.release();
        assert_eq!(
            file.commit(blake3::hash(&data).as_bytes())
                .unwrap_err()
                .code,
            ErrorCode::Incomplete
        );
        file.write_at(20_000, &data[20_000..30_000]).unwrap();
        file.write_at(40_000, &data[40_000..]).unwrap();
        file.commit(blake3::hash(&data).as_bytes()).unwrap();
        let meta_out = std::fs::metadata(tmp.path().join("big")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta_out.mode() & 0o777, 0o640);
        assert_eq!(meta_out.mtime(), 1_700_000_000);
    }

    /// Opens `name` as the concrete partial file, to look at its hash.
    fn open_partial(dest: &DirDestination, name: &RelName, size: u64) -> Arc<PartialFile> {
        dest.open(name, &meta(size)).unwrap();
        let key = partial_key(name, &meta(size));
        dest.open.lock().unwrap().get(&key).unwrap().clone()
    }

    #[test]
    fn a_file_let_go_between_ranges_keeps_its_hash_state() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let name = RelName::parse(b"ranges").unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        let size = data.len() as u64;
        let file = open_partial(&dest, &name, size);
        file.write_at(0, &data[..60_000]).unwrap();
        file.release();
        file.release();
        drop(file);
        let file = open_partial(&dest, &name, size);
        assert_eq!(file.held_bytes(), 60_000);
        file.write_at(60_000, &data[60_000..]).unwrap();
        file.commit(blake3::hash(&data).as_bytes()).unwrap();
        assert_eq!(file.hash.read_back(), 0, "nothing read back to hash");
        assert_eq!(std::fs::read(tmp.path().join("ranges")).unwrap(), data);
    }

    #[test]
    fn a_partial_written_to_while_let_go_is_read_back_and_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let name = RelName::parse(b"ranges").unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        let size = data.len() as u64;
        let file = dest.open(&name, &meta(size)).unwrap();
        file.write_at(0, &data[..60_000]).unwrap();
        file.release();
        // Behind the receiver's back, bytes it already hashed change on
        // the disk (the same length, the same place).
        let (part, _) = partial_paths(&name, &meta(size));
        let disk = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path().join(part))
            .unwrap();
        disk.write_all_at(&[0u8; 1000], 0).unwrap();
        drop(disk);
        let file = open_partial(&dest, &name, size);
        file.write_at(60_000, &data[60_000..]).unwrap();
        let err = file.commit(blake3::hash(&data).as_bytes()).unwrap_err();
        assert_eq!(err.code, ErrorCode::HashMismatch);
        // A new hash state: the whole file (one segment) is read back.
        assert_eq!(file.hash.read_back(), size, "the held bytes were read back");
        assert!(!tmp.path().join("ranges").exists(), "never a wrong file");
    }

    #[test]
    fn sessions_that_open_and_release_at_once_lose_no_range() {
        const PIECE: usize = 4096;
        const PIECES: usize = 96;
        const THREADS: usize = 8;
        let tmp = tempfile::tempdir().unwrap();
        let dest = Arc::new(DirDestination::new(tmp.path(), 0o022).unwrap());
        let name = RelName::parse(b"shared").unwrap();
        let data: Vec<u8> = (0..PIECE * PIECES).map(|i| (i % 251) as u8).collect();
        let size = data.len() as u64;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (dest, name, data) = (dest.clone(), &name, &data);
                scope.spawn(move || {
                    for piece in (t..PIECES).step_by(THREADS) {
                        let file = dest.open(name, &meta(size)).unwrap();
                        let at = piece * PIECE;
                        file.write_at(at as u64, &data[at..at + PIECE]).unwrap();
                        file.release();
                    }
                });
            }
        });
        let file = dest.open(&name, &meta(size)).unwrap();
        assert_eq!(file.held_bytes(), size);
        file.commit(blake3::hash(&data).as_bytes()).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("shared")).unwrap(), data);
    }

    #[test]
    fn directories_are_created_private_while_they_fill() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let file = dest
            .open(&RelName::parse(b"a/b/f").unwrap(), &meta(1))
            .unwrap();
        for dir in ["a", "a/b"] {
            let mode = std::fs::metadata(tmp.path().join(dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{dir}");
        }
        file.release();
    }

    #[test]
    fn a_read_only_directory_is_made_writable_for_what_goes_into_it() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ro = tmp.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let file = dest
            .open(&RelName::parse(b"ro/f").unwrap(), &meta(1))
            .unwrap();
        let mode = std::fs::metadata(&ro).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        file.write_at(0, b"x").unwrap();
        file.commit(blake3::hash(b"x").as_bytes()).unwrap();
        assert_eq!(std::fs::read(ro.join("f")).unwrap(), b"x");
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let name = RelName::parse(b"link/x").unwrap();
        let err = dest.open(&name, &meta(1)).err().unwrap();
        assert_eq!(err.code, ErrorCode::BadName);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
