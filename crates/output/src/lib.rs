//! Safe file output: files that appear under their final name only when
//! complete, written into directory trees that are created and walked
//! through directory descriptors, never through a path that can be swapped.
//!
//! An [`OutputTree`] holds the root directory of a run open and adds the
//! directories below it one by one ([`OutputTree::add_dir`]): each is
//! created private (0700) with `mkdirat` in its already-open parent, and an
//! existing entry that is a symbolic link is refused rather than followed.
//! A [`DirFd`] is such an open directory. Files are written as an
//! [`AtomicFile`]: an unnamed `O_TMPFILE` in its directory (mode 0600, or
//! its final mode where the kernel is known to give exactly that:
//! [`AtomicFile::create_with_mode`]), linked under its name by
//! [`AtomicFile::commit`] only when complete, so a crash, SIGKILL included,
//! leaves nothing. Large outputs start their writeback as they are written
//! ([`start_writeback`], [`drop_written`]). Filesystems without `O_TMPFILE`
//! get a hidden named temp file (`.cst-tmp.PID.N.NAME`, mode 0600) that is
//! renamed into place; one left behind by a killed process is removed by
//! the next run that writes into that directory ([`remove_stale_temps`]).
//! A new tree can be staged instead ([`OutputTree::open_staged`]): built
//! under a hidden name beside its own, its files created directly under
//! their names (mode 0 until complete), and renamed into place at the end
//! ([`OutputTree::publish`]); a killed run's stage is taken over by
//! [`adopt_interrupted`] or removed by the next run.
//! Symbolic links ([`create_symlink`]) and hard links ([`hard_link`]) are
//! made the same way: relative to directory descriptors, never following
//! a link on the way. Directories get their final mode and mtime last,
//! deepest first ([`OutputTree::finish_dirs`]), so a directory stays
//! private while it is being filled and a read-only one does not stop its
//! own contents from being written.
//!
//! The engine writes every output through this crate; the chunk store and
//! the network receiver are meant to do the same.

#![deny(missing_docs)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps, CWD};
use rustix::io::Errno;

mod stage;
pub use stage::adopt_interrupted;

/// Mode of every file and directory while it is being written: private.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of directories created by a run until the run ends.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode a restored file or directory gets for recorded `mode` bits:
/// the one policy of every restoring command (`decrypt`, `store get`, the
/// network receiver). Without `keep_special_bits`, `mode & 0o777 & !umask`
/// (setuid, setgid and sticky dropped, as `tar` does for an ordinary user);
/// 0 (no mode recorded) gives `0o666 & !umask`.
pub fn restored_mode(mode: u32, umask: u32, keep_special_bits: bool) -> u32 {
    let mode = if mode == 0 { 0o666 } else { mode };
    let allowed = if keep_special_bits { 0o7777 } else { 0o777 };
    mode & allowed & !(umask & 0o777)
}
/// Creates `path` as a new private file (mode [`PRIVATE_FILE_MODE`]) that
/// holds `bytes`, synced to disk: the one way a key, token or identity file
/// is written. An existing entry is never replaced nor followed (a symbolic
/// link there is `AlreadyExists` too), and a failed write removes the file
/// again, so nothing half-written is left under the name.
///
/// # Errors
/// `AlreadyExists` when something is at `path`, and any I/O error.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}
/// Asks the kernel to start writing the dirty pages of `file` in
/// `offset..offset + len` to disk now, without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A writer of a large output
/// calls it on each region it completes, so that the disk works while the
/// next regions are computed instead of after the last one, when the
/// kernel's dirty-page limits would otherwise stall the writers. A hint:
/// nothing is promised about durability (that is `fsync`'s job), errors
/// are ignored, and on a filesystem without writeback (tmpfs) it does
/// nothing.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    sync_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE);
}

/// Drops from the page cache the pages of `file` in `offset..offset + len`
/// that are already written to disk (`POSIX_FADV_DONTNEED`; pages still
/// dirty or being written stay): a writer calls it on a region well behind
/// the one it just wrote, whose writeback [`start_writeback`] started, so
/// that a large output gives its written pages back to the free list
/// instead of filling memory. It never waits for the disk. A hint like
/// [`start_writeback`]: errors are ignored; on tmpfs it does nothing.
pub fn drop_written(file: &File, offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

/// Reserves the blocks of `file`'s first `len` bytes now and makes that
/// its length (`fallocate`), so that the writes that fill it in later, at
/// any positions, find them there. `Ok(false)` where the file system (or
/// the platform) has no such call: the caller then does without. A full
/// file system fails here, before anything is written. On this project's
/// tmpfs a 2 GiB store get, its chunks written by two workers at their
/// positions, spent a third of the system time with its pages reserved
/// first; restic's restore reserves every file it writes the same way
/// (DECISIONS 572).
pub fn reserve_blocks(file: &File, len: u64) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        if len == 0 {
            return Ok(true);
        }
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(true),
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, len);
        Ok(false)
    }
}

/// `sync_file_range(file, offset, len, flags)`, its result ignored.
fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    if len == 0 {
        // A length of 0 means "to the end of the file" to the kernel.
        return;
    }
    // SAFETY: `sync_file_range` takes no pointer; the descriptor is open
    // for the whole call, borrowed from `file`.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
}
/// Whether `path` is a plain relative name: one or more `/`-separated
/// parts, none empty, `.` or `..`, and no NUL. The one check of a name
/// that comes from a file, a store or a peer before it is used below an
/// output root (a hard link's target, a restored store path).
pub fn is_plain_relative(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    !bytes.is_empty()
        && !bytes.contains(&0)
        && bytes
            .split(|&b| b == b'/')
            .all(|part| !part.is_empty() && part != b"." && part != b"..")
}
/// Prefix of named temp files (on filesystems without `O_TMPFILE`).
const TEMP_PREFIX: &str = ".cst-tmp.";
/// Directories of a tree held open at once; deeper in a larger tree, a
/// directory is opened again below the root (without following links)
/// each time it is needed, so a tree of any size fits any descriptor limit.
const MAX_OPEN_DIRS: usize = 512;
/// Longest part of the final name kept in a temp name (NAME_MAX is 255).
const TEMP_NAME_KEEP: usize = 200;

/// Counter that makes temp names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Whether `linkat(fd, "", AT_EMPTY_PATH)` is allowed (cleared on the first refusal).
static EMPTY_PATH_WORKS: AtomicBool = AtomicBool::new(true);
/// Set by a test build to behave as on a filesystem without `O_TMPFILE`.
static NAMED_TEMPS_ONLY: AtomicBool = AtomicBool::new(false);

/// Makes every [`AtomicFile`] use a named temp file, as on NFS, CIFS or
/// FUSE. `test-knobs` builds only: the binary calls it when its debug hook asks.
#[cfg(any(test, feature = "test-knobs"))]
pub fn force_named_temp_files() {
    NAMED_TEMPS_ONLY.store(true, Ordering::Relaxed);
}

/// A modification (or access) time with nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch (negative before it).
    pub seconds: i64,
    /// Nanoseconds, below 1 000 000 000.
    pub nanos: u32,
}

impl Timestamp {
    /// The modification time of `meta`.
    pub fn mtime_of(meta: &std::fs::Metadata) -> Timestamp {
        use std::os::unix::fs::MetadataExt;
        Timestamp {
            seconds: meta.mtime(),
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        }
    }

    /// These times as `utimensat` takes them: mtime set, atime left alone.
    pub fn as_mtime_only(self) -> Timestamps {
        Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: self.seconds,
                tv_nsec: i64::from(self.nanos),
            },
        }
    }
}

/// What to do when the final name already exists at commit time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Fail with `AlreadyExists`: never clobber.
    Never,
    /// Atomically replace what is there (a file or a symlink; the link
    /// itself is replaced, never written through).
    Always,
}

/// An open directory that outputs are created in. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DirFd(Arc<OpenDir>);

/// What a [`DirFd`] shares between its clones.
#[derive(Debug)]
struct OpenDir {
    /// The descriptor.
    fd: OwnedFd,
    /// The permission bits that a file created here keeps of those it asks
    /// for (what the umask, or a default ACL of the directory, lets
    /// through), once [`named_temps_possible`] has created a file to see.
    creation_mask: OnceLock<u32>,
    /// Whether this directory is inside a staged tree (see
    /// [`OutputTree::open_staged`]): no one can reach it under a final name
    /// until the whole tree is published, so files are created here
    /// directly under their names ([`AtomicFile`]'s direct mode).
    staged: bool,
}

impl DirFd {
    /// Wraps an open directory.
    fn from_fd(fd: OwnedFd) -> DirFd {
        DirFd(Arc::new(OpenDir {
            fd,
            creation_mask: OnceLock::new(),
            staged: false,
        }))
    }

    /// Wraps the open root of a staged tree.
    fn staged_from_fd(fd: OwnedFd) -> DirFd {
        DirFd(Arc::new(OpenDir {
            fd,
            creation_mask: OnceLock::new(),
            staged: true,
        }))
    }

    /// Wraps a directory opened below this one: it is staged when this
    /// one is.
    fn child(&self, fd: OwnedFd) -> DirFd {
        DirFd(Arc::new(OpenDir {
            fd,
            creation_mask: OnceLock::new(),
            staged: self.0.staged,
        }))
    }

    /// Opens the root of a staged tree that another process of this run
    /// made ([`OutputTree::work_path`]; the process engine's workers): its
    /// files are created directly under their names, as in
    /// [`OutputTree::open_staged`].
    ///
    /// # Errors
    /// As [`DirFd::open`].
    pub fn open_staged(path: &Path) -> io::Result<DirFd> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirFd::staged_from_fd(fd))
    }
}

impl DirFd {
    /// Opens the directory at `path`, following symbolic links: for the
    /// root a user named on the command line, never for paths below it.
    ///
    /// # Errors
    /// Any error opening it; `NotADirectory` when it is not a directory.
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirFd::from_fd(fd))
    }

    /// Opens the directory `relative` below this one without following any
    /// symbolic link and without leaving this directory (`openat2` with
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; component by component
    /// with `O_NOFOLLOW` where `openat2` is missing).
    ///
    /// # Errors
    /// `ELOOP` when a component is a symbolic link, `EXDEV`/`InvalidInput`
    /// for a path that leaves this directory, and any open error.
    pub fn open_beneath(&self, relative: &Path) -> io::Result<DirFd> {
        if relative.as_os_str().is_empty() {
            return Ok(self.clone());
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.0.fd, relative, flags, Mode::empty(), resolve) {
            Ok(fd) => return Ok(self.child(fd)),
            Err(Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
        let mut dir = self.clone();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "path leaves the output directory",
                ));
            };
            let fd = rustix::fs::openat(&dir.0.fd, name, flags | OFlags::NOFOLLOW, Mode::empty())?;
            dir = dir.child(fd);
        }
        Ok(dir)
    }

    /// Opens the directory `relative` below this one, creating each
    /// missing component with `mode` (through the umask) on the way, and
    /// never following a symbolic link (`mkdirat` then
    /// `openat(O_NOFOLLOW | O_DIRECTORY)` in the already-open parent, one
    /// component at a time). For receivers that get one relative name at a
    /// time (the network server), where an [`OutputTree`] planned ahead
    /// does not fit.
    ///
    /// # Errors
    /// `InvalidInput` for a component other than a plain name (`..`, `/`),
    /// `ELOOP`/`ENOTDIR` when a component is a symbolic link or not a
    /// directory, and any other error of `mkdirat`/`openat`.
    pub fn create_dirs_beneath(&self, relative: &Path, mode: u32) -> io::Result<DirFd> {
        let mut dir = self.clone();
        for component in relative.components() {
            let name = match component {
                Component::Normal(name) => name,
                Component::CurDir => continue,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "path leaves the output directory",
                    ))
                }
            };
            match rustix::fs::mkdirat(&dir.0.fd, name, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(&dir.0.fd, name, flags, Mode::empty())?;
            dir = dir.child(fd);
        }
        Ok(dir)
    }

    /// The descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd.as_fd()
    }
}

/// A directory of an [`OutputTree`]: where it is and what it becomes.
struct TreeDir {
    /// Path below the root ("" for the root).
    relative: PathBuf,
    /// The open directory, once opened.
    fd: OnceLock<DirFd>,
    /// Mode and mtime to give it when the run ends.
    finish: Option<DirFinish>,
}

/// What a directory of the tree becomes once its contents are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirFinish {
    /// Permission bits.
    pub mode: u32,
    /// Modification time, when known.
    pub mtime: Option<Timestamp>,
}

/// The index of a directory in an [`OutputTree`].
pub type DirIndex = usize;

/// Why a directory of the tree could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// An existing entry on the way is a symbolic link.
    #[error("{}: is a symbolic link; refusing to write through it", .0.display())]
    Symlink(PathBuf),
    /// An existing entry on the way is not a directory.
    #[error("{}: exists and is not a directory", .0.display())]
    NotDir(PathBuf),
    /// Anything else.
    #[error("{}: cannot create directory: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// The directory tree a run writes into, held open from its root.
pub struct OutputTree {
    root_path: PathBuf,
    dirs: Vec<TreeDir>,
    /// How many directories are held open (at most [`MAX_OPEN_DIRS`]).
    open: std::sync::atomic::AtomicUsize,
    /// Where a staged tree is built until it is published.
    stage: Option<stage::Stage>,
}

impl OutputTree {
    /// Opens the root `path` (which a user named: symlinks in it are
    /// followed), creating it private when missing. `finish` is what the
    /// root becomes at the end, if anything.
    ///
    /// # Errors
    /// [`TreeError`] when it cannot be created or opened.
    pub fn open_root(path: &Path, finish: Option<DirFinish>) -> Result<OutputTree, TreeError> {
        let io_err = |source| TreeError::Io {
            path: path.to_path_buf(),
            source,
        };
        match rustix::fs::mkdir(path, Mode::from_raw_mode(PRIVATE_DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(e.into())),
        }
        let fd = DirFd::open(path).map_err(|e| match e.raw_os_error() {
            Some(code) if code == Errno::NOTDIR.raw_os_error() => {
                TreeError::NotDir(path.to_path_buf())
            }
            _ => io_err(e),
        })?;
        remove_stale_temps(&fd);
        let root = TreeDir {
            relative: PathBuf::new(),
            fd: OnceLock::from(fd),
            finish,
        };
        Ok(OutputTree {
            root_path: path.to_path_buf(),
            dirs: vec![root],
            open: std::sync::atomic::AtomicUsize::new(1),
            stage: None,
        })
    }

    /// Opens a new root `path` (which does not exist yet) as a staged
    /// tree: it is built under a hidden name beside `path`
    /// (`.NAME.cst-partial.PID`, mode 0700), its files are created directly
    /// under their names (mode 0 until each is complete), and
    /// [`OutputTree::publish`] renames it to `path` at the end of the run.
    /// Nothing appears under `path` before then, and each file costs one
    /// `openat` where an unnamed temp file costs an `openat` and a
    /// `linkat`. A staged tree left by a process that is gone (SIGKILL, a
    /// power cut) is removed first, or taken over by
    /// [`adopt_interrupted`]. Falls back to [`OutputTree::open_root`] where
    /// `path` has no file name.
    ///
    /// # Errors
    /// [`TreeError`] when the stage cannot be created or opened.
    pub fn open_staged(path: &Path, finish: Option<DirFinish>) -> Result<OutputTree, TreeError> {
        let Some(stage) = stage::Stage::create(path)? else {
            return OutputTree::open_root(path, finish);
        };
        let fd = stage.root().clone();
        Ok(OutputTree {
            root_path: path.to_path_buf(),
            dirs: vec![TreeDir {
                relative: PathBuf::new(),
                fd: OnceLock::from(fd),
                finish,
            }],
            open: std::sync::atomic::AtomicUsize::new(1),
            stage: Some(stage),
        })
    }

    /// Where the tree is now: its stage until [`OutputTree::publish`],
    /// otherwise its root. What another process of the run opens
    /// ([`DirFd::open_staged`] when [`OutputTree::is_staged`]).
    pub fn work_path(&self) -> &Path {
        match &self.stage {
            Some(stage) if !stage.is_published() => stage.path(),
            _ => &self.root_path,
        }
    }

    /// Whether the tree is being built under a stage not yet published.
    pub fn is_staged(&self) -> bool {
        self.stage.as_ref().is_some_and(|s| !s.is_published())
    }

    /// Renames a staged tree to its root path (with `durable`, then fsyncs
    /// the parent directory); nothing for a tree that is not staged or is
    /// already published. Call it after [`OutputTree::finish_dirs`]; a
    /// staged tree that is dropped unpublished is published then.
    ///
    /// # Errors
    /// When the root path was taken while the run went on (the error
    /// names the stage, which is left as it is), or the rename fails.
    pub fn publish(&self, durable: bool) -> io::Result<()> {
        match &self.stage {
            Some(stage) => stage.publish(durable),
            None => Ok(()),
        }
    }

    /// Opens the existing directory `path` as the root of a run that
    /// writes single files into it (nothing is created, and the directory
    /// itself is left as it is).
    ///
    /// # Errors
    /// [`TreeError`] when it cannot be opened or is not a directory.
    pub fn open_existing(path: &Path) -> Result<OutputTree, TreeError> {
        let fd = DirFd::open(path).map_err(|source| TreeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        remove_stale_temps(&fd);
        Ok(OutputTree {
            root_path: path.to_path_buf(),
            dirs: vec![TreeDir {
                relative: PathBuf::new(),
                fd: OnceLock::from(fd),
                finish: None,
            }],
            open: std::sync::atomic::AtomicUsize::new(1),
            stage: None,
        })
    }

    /// The path the root was opened with (for messages).
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The root directory.
    pub fn root(&self) -> DirFd {
        self.dirs[0]
            .fd
            .get()
            .expect("the root is opened first")
            .clone()
    }

    /// Adds the directory `name` inside directory `parent` (already added):
    /// creates it private (0700) when missing and opens it, refusing a
    /// symbolic link. `finish` is applied by [`OutputTree::finish_dirs`].
    ///
    /// # Errors
    /// [`TreeError`]; nothing outside the tree is touched.
    pub fn add_dir(
        &mut self,
        parent: DirIndex,
        name: &OsStr,
        finish: Option<DirFinish>,
    ) -> Result<DirIndex, TreeError> {
        let relative = self.dirs[parent].relative.join(name);
        let shown = self.root_path.join(&relative);
        let parent_fd = self.dir(parent).map_err(|source| TreeError::Io {
            path: shown.clone(),
            source,
        })?;
        match rustix::fs::mkdirat(
            parent_fd.as_fd(),
            name,
            Mode::from_raw_mode(PRIVATE_DIR_MODE),
        ) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(TreeError::Io {
                    path: shown,
                    source: e.into(),
                })
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(parent_fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => parent_fd.child(fd),
            Err(Errno::LOOP) => return Err(TreeError::Symlink(shown)),
            Err(Errno::NOTDIR) => {
                // O_NOFOLLOW on a symlink to a directory also says ENOTDIR
                // on some kernels: tell the two apart.
                let is_link =
                    rustix::fs::statat(parent_fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| {
                            rustix::fs::FileType::from_raw_mode(st.st_mode)
                                == rustix::fs::FileType::Symlink
                        });
                return Err(if is_link {
                    TreeError::Symlink(shown)
                } else {
                    TreeError::NotDir(shown)
                });
            }
            Err(e) => {
                return Err(TreeError::Io {
                    path: shown,
                    source: e.into(),
                })
            }
        };
        if !fd.0.staged {
            remove_stale_temps(&fd);
        }
        let slot = OnceLock::new();
        if self.open.load(Ordering::Relaxed) < MAX_OPEN_DIRS {
            self.open.fetch_add(1, Ordering::Relaxed);
            let _ = slot.set(fd);
        }
        self.dirs.push(TreeDir {
            relative,
            fd: slot,
            finish,
        });
        Ok(self.dirs.len() - 1)
    }

    /// The open directory `index`.
    ///
    /// # Errors
    /// Only when a directory that was closed cannot be opened again.
    pub fn dir(&self, index: DirIndex) -> io::Result<DirFd> {
        let dir = &self.dirs[index];
        if let Some(fd) = dir.fd.get() {
            return Ok(fd.clone());
        }
        let fd = self.root().open_beneath(&dir.relative)?;
        if self.open.fetch_add(1, Ordering::Relaxed) < MAX_OPEN_DIRS {
            return Ok(dir.fd.get_or_init(|| fd).clone());
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        Ok(fd)
    }

    /// The path of directory `index` below the root.
    pub fn relative(&self, index: DirIndex) -> &Path {
        &self.dirs[index].relative
    }

    /// Gives every directory that has a [`DirFinish`] its mode (through
    /// `mode_of`, which applies the run's policy) and mtime, deepest first.
    /// Returns the directories that failed, with the cause.
    pub fn finish_dirs(&self, mode_of: impl Fn(u32) -> u32) -> Vec<(PathBuf, io::Error)> {
        let mut failed = Vec::new();
        for dir in self.dirs.iter().rev() {
            let Some(finish) = dir.finish else { continue };
            let fd = match dir.fd.get() {
                Some(fd) => fd.clone(),
                None => match self.root().open_beneath(&dir.relative) {
                    Ok(fd) => fd,
                    Err(e) => {
                        failed.push((self.root_path.join(&dir.relative), e));
                        continue;
                    }
                },
            };
            let result = rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(mode_of(finish.mode)))
                .and_then(|()| match finish.mtime {
                    Some(mtime) => rustix::fs::futimens(fd.as_fd(), &mtime.as_mtime_only()),
                    None => Ok(()),
                });
            if let Err(e) = result {
                failed.push((self.root_path.join(&dir.relative), e.into()));
            }
        }
        failed
    }
}

/// A hidden temp name for `name` in its directory.
fn temp_name(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    let keep = &bytes[..bytes.len().min(TEMP_NAME_KEEP)];
    let mut temp = OsString::from(format!(
        "{TEMP_PREFIX}{}.{}.",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    temp.push(OsStr::from_bytes(keep));
    temp
}

/// The process id in a temp name made by [`temp_name`].
fn temp_owner(name: &[u8]) -> Option<i32> {
    let rest = name.strip_prefix(TEMP_PREFIX.as_bytes())?;
    let end = rest.iter().position(|&b| b == b'.')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Removes the named temp files in `dir` whose process is gone (left by a
/// run that was killed on a filesystem without `O_TMPFILE`); returns how
/// many. Temp files of live processes are left alone.
pub fn remove_stale_temps(dir: &DirFd) -> usize {
    if named_temps_possible(dir) {
        sweep_stale_temps(dir)
    } else {
        0
    }
}

/// Removes the stale temp files of [`remove_stale_temps`] without asking
/// whether the filesystem could hold any.
fn sweep_stale_temps(dir: &DirFd) -> usize {
    let Ok(fd) = rustix::fs::openat(
        dir.as_fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return 0;
    };
    let Ok(mut entries) = rustix::fs::Dir::read_from(&fd) else {
        return 0;
    };
    let mut removed = 0;
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.file_name().to_bytes();
        let Some(pid) = temp_owner(name) else {
            continue;
        };
        if !process_alive(pid)
            && rustix::fs::unlinkat(dir.as_fd(), entry.file_name(), AtFlags::empty()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Removes `name` from the staged directory `dir` when it is a file marked
/// incomplete (mode 0: a direct [`AtomicFile`] of a process that died
/// before its commit); returns whether it did. Nothing outside a staged
/// tree is touched.
pub fn remove_incomplete(dir: &DirFd, name: &OsStr) -> bool {
    if !dir.0.staged {
        return false;
    }
    let incomplete =
        rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
                && st.st_mode & 0o7777 == 0
        });
    incomplete && rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty()).is_ok()
}

/// Whether process `pid` may still be running (it exists, whoever owns it).
fn process_alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| !matches!(rustix::process::test_kill_process(p), Err(Errno::SRCH)))
}

/// Whether this directory can hold named temp files of ours: only where
/// `O_TMPFILE` is refused (or a test build forces named temps), so that the
/// scan costs nothing on ordinary filesystems.
fn named_temps_possible(dir: &DirFd) -> bool {
    if NAMED_TEMPS_ONLY.load(Ordering::Relaxed) {
        return true;
    }
    // The probe asks for every permission bit and keeps what it got: the
    // creation mask that lets later files be created with their final
    // mode ([`AtomicFile::create_with_mode`]). Unnamed and closed at once,
    // it is never reachable by anyone.
    match rustix::fs::openat(
        dir.as_fd(),
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o777),
    ) {
        Ok(probe) => {
            if let Ok(stat) = rustix::fs::fstat(&probe) {
                let _ = dir.0.creation_mask.set(stat.st_mode & 0o777);
            }
            false
        }
        Err(e) => tmpfile_unsupported(e),
    }
}

/// Whether `e` from an `O_TMPFILE` open means the filesystem lacks it.
fn tmpfile_unsupported(e: Errno) -> bool {
    e == Errno::OPNOTSUPP || e == Errno::ISDIR || e == Errno::INVAL
}

enum Temp {
    /// An `O_TMPFILE`: no name until linked.
    Unnamed,
    /// A hidden temp file beside the final name.
    Named(OsString),
    /// Created under its final name in a staged tree, mode 0 (the mark of
    /// a file not yet complete) until [`AtomicFile::commit`] gives it its
    /// mode.
    Direct,
}

/// No mode set yet on a direct file ([`AtomicFile::set_mode`]).
const NO_MODE: u32 = u32::MAX;

/// A file being written that becomes visible only on [`commit`](Self::commit).
/// Dropping it without committing leaves nothing.
pub struct AtomicFile {
    file: File,
    dir: DirFd,
    name: OsString,
    temp: Temp,
    /// The permission bits the file was created with, when they are known
    /// to be exactly those ([`AtomicFile::create_with_mode`]).
    mode: Option<u32>,
    /// A direct file's mode, given at commit ([`NO_MODE`]: 0600).
    pending_mode: std::sync::atomic::AtomicU32,
}

impl AtomicFile {
    /// Creates the temp file for `name` in `dir`, mode 0600 whatever the
    /// final mode will be.
    ///
    /// # Errors
    /// Any error creating the file.
    pub fn create(dir: &DirFd, name: &OsStr) -> io::Result<AtomicFile> {
        if dir.0.staged {
            if let Some(file) = AtomicFile::create_direct(dir, name)? {
                return Ok(file);
            }
        }
        if !NAMED_TEMPS_ONLY.load(Ordering::Relaxed) {
            if let Some(file) = AtomicFile::create_unnamed(dir, name, PRIVATE_FILE_MODE, None)? {
                return Ok(file);
            }
        }
        AtomicFile::create_named(dir, name)
    }

    /// An unnamed `O_TMPFILE` for `name` in `dir` created with `mode`
    /// (`recorded`: the mode [`AtomicFile::set_mode`] then needs not set);
    /// `None` where the file system has no `O_TMPFILE`.
    fn create_unnamed(
        dir: &DirFd,
        name: &OsStr,
        mode: u32,
        recorded: Option<u32>,
    ) -> io::Result<Option<AtomicFile>> {
        match rustix::fs::openat(
            dir.as_fd(),
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => Ok(Some(AtomicFile {
                file: File::from(fd),
                dir: dir.clone(),
                name: name.to_os_string(),
                temp: Temp::Unnamed,
                mode: recorded,
                pending_mode: NO_MODE.into(),
            })),
            Err(e) if tmpfile_unsupported(e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the temp file for `name` in `dir` already with the
    /// permission bits `mode` it will end with, when the kernel is known to
    /// give exactly those: an unnamed `O_TMPFILE` (which no one else can
    /// open, whatever its mode, until it is linked), `mode` without
    /// setuid, setgid or sticky bits, and all of it let through by the
    /// directory's creation mask (the umask, or a default ACL), as the
    /// directory's probe saw it, and readable and writable by its owner
    /// (so that it can be opened again for writing, as a 0600 file can). Then [`AtomicFile::set_mode`] with the same
    /// bits makes no call. Otherwise it is [`AtomicFile::create`]: mode
    /// 0600 until `set_mode`.
    ///
    /// # Errors
    /// Any error creating the file.
    pub fn create_with_mode(dir: &DirFd, name: &OsStr, mode: u32) -> io::Result<AtomicFile> {
        if dir.0.staged {
            return AtomicFile::create(dir, name);
        }
        let exact = !NAMED_TEMPS_ONLY.load(Ordering::Relaxed)
            && mode & !0o777 == 0
            && mode & PRIVATE_FILE_MODE == PRIVATE_FILE_MODE
            && dir
                .0
                .creation_mask
                .get()
                .is_some_and(|mask| mode & !mask == 0);
        if exact {
            if let Some(file) = AtomicFile::create_unnamed(dir, name, mode, Some(mode))? {
                return Ok(file);
            }
        }
        AtomicFile::create(dir, name)
    }

    /// Creates `name` in the staged directory `dir` under its own name,
    /// mode 0 until committed; `None` when the name is taken (two inputs
    /// with one output name), which the ordinary temp file and its commit
    /// then decide as anywhere else.
    fn create_direct(dir: &DirFd, name: &OsStr) -> io::Result<Option<AtomicFile>> {
        match rustix::fs::openat(
            dir.as_fd(),
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(AtomicFile {
                file: File::from(fd),
                dir: dir.clone(),
                name: name.to_os_string(),
                temp: Temp::Direct,
                mode: None,
                pending_mode: NO_MODE.into(),
            })),
            Err(Errno::EXIST) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a hidden named temp file for `name` in `dir`, mode 0600.
    fn create_named(dir: &DirFd, name: &OsStr) -> io::Result<AtomicFile> {
        let temp = temp_name(name);
        let fd = rustix::fs::openat(
            dir.as_fd(),
            &temp,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(PRIVATE_FILE_MODE),
        )?;
        // The umask may have taken bits away, never added them; make sure.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(PRIVATE_FILE_MODE))?;
        Ok(AtomicFile {
            file: File::from(fd),
            dir: dir.clone(),
            name: name.to_os_string(),
            temp: Temp::Named(temp),
            mode: None,
            pending_mode: NO_MODE.into(),
        })
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The final name.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// Sets the permission bits exactly (the umask does not apply here:
    /// the caller applies its policy first). A file in a staged tree keeps
    /// mode 0 until [`AtomicFile::commit`] gives it these bits.
    ///
    /// # Errors
    /// Any error from `fchmod`.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        if self.mode == Some(mode) {
            return Ok(());
        }
        if matches!(self.temp, Temp::Direct) {
            // Mode 0 marks it incomplete until the commit.
            self.pending_mode.store(mode & 0o7777, Ordering::Relaxed);
            return Ok(());
        }
        Ok(rustix::fs::fchmod(
            self.file.as_fd(),
            Mode::from_raw_mode(mode),
        )?)
    }

    /// Sets the modification time (the access time is left alone). Call it
    /// after the last write.
    ///
    /// # Errors
    /// Any error from `futimens`.
    pub fn set_mtime(&self, mtime: Timestamp) -> io::Result<()> {
        Ok(rustix::fs::futimens(
            self.file.as_fd(),
            &mtime.as_mtime_only(),
        )?)
    }

    /// Makes the file visible under its final name; with `durable`, fsyncs
    /// the file before and the directory after.
    ///
    /// # Errors
    /// `AlreadyExists` when the name exists and `replace` is
    /// [`Replace::Never`]; otherwise any I/O error. The temp file is removed
    /// on error.
    pub fn commit(mut self, replace: Replace, durable: bool) -> io::Result<()> {
        if durable {
            self.file.sync_all()?;
        }
        match std::mem::replace(&mut self.temp, Temp::Unnamed) {
            Temp::Unnamed => self.link_unnamed(replace)?,
            Temp::Direct => {
                let mode = match self.pending_mode.load(Ordering::Relaxed) {
                    NO_MODE => PRIVATE_FILE_MODE,
                    mode => mode,
                };
                if let Err(e) = rustix::fs::fchmod(self.file.as_fd(), Mode::from_raw_mode(mode)) {
                    let _ = rustix::fs::unlinkat(self.dir.as_fd(), &self.name, AtFlags::empty());
                    return Err(e.into());
                }
            }
            Temp::Named(temp) => {
                if let Err(e) = rename_into_place(&self.dir, &temp, &self.name, replace) {
                    let _ = rustix::fs::unlinkat(self.dir.as_fd(), &temp, AtFlags::empty());
                    return Err(e);
                }
            }
        }
        if durable {
            rustix::fs::fsync(self.dir.as_fd())?;
        }
        Ok(())
    }

    fn link_unnamed(&self, replace: Replace) -> io::Result<()> {
        match replace {
            Replace::Never => self.link_to(&self.name),
            Replace::Always => {
                // Link under a hidden name, then rename over the old entry:
                // the final name always holds either the old or the new file.
                let temp = temp_name(&self.name);
                self.link_to(&temp)?;
                rename_into_place(&self.dir, &temp, &self.name, Replace::Always).inspect_err(|_| {
                    let _ = rustix::fs::unlinkat(self.dir.as_fd(), &temp, AtFlags::empty());
                })
            }
        }
    }

    fn link_to(&self, name: &OsStr) -> io::Result<()> {
        // AT_EMPTY_PATH links the descriptor itself without a path lookup;
        // it needs CAP_DAC_READ_SEARCH. Without it, the /proc/self/fd path
        // does the same for any user.
        if EMPTY_PATH_WORKS.load(Ordering::Relaxed) {
            match rustix::fs::linkat(
                self.file.as_fd(),
                "",
                self.dir.as_fd(),
                name,
                AtFlags::EMPTY_PATH,
            ) {
                Ok(()) => return Ok(()),
                Err(Errno::NOENT) | Err(Errno::PERM) => {
                    EMPTY_PATH_WORKS.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        Ok(rustix::fs::linkat(
            CWD,
            proc_path.as_str(),
            self.dir.as_fd(),
            name,
            AtFlags::SYMLINK_FOLLOW,
        )?)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        match &self.temp {
            Temp::Named(temp) => {
                let _ = rustix::fs::unlinkat(self.dir.as_fd(), temp.as_os_str(), AtFlags::empty());
            }
            Temp::Direct => {
                let _ = rustix::fs::unlinkat(self.dir.as_fd(), &self.name, AtFlags::empty());
            }
            Temp::Unnamed => {}
        }
    }
}

/// Renames `temp` to `name` in `dir`; with [`Replace::Never`] the rename
/// fails when `name` exists (whatever it is, a dangling symlink included).
fn rename_into_place(dir: &DirFd, temp: &OsStr, name: &OsStr, replace: Replace) -> io::Result<()> {
    let flags = match replace {
        Replace::Never => RenameFlags::NOREPLACE,
        Replace::Always => RenameFlags::empty(),
    };
    Ok(rustix::fs::renameat_with(
        dir.as_fd(),
        temp,
        dir.as_fd(),
        name,
        flags,
    )?)
}

/// Creates the symbolic link `name` in `dir` pointing at `target` (any
/// bytes: relative, absolute, dangling), with modification time `mtime`.
/// The link is made under a temp name and renamed into place, so the name
/// appears complete, with its time, or not at all.
///
/// # Errors
/// `AlreadyExists` with [`Replace::Never`] when `name` exists; any I/O
/// error. Nothing is left under a temp name on error.
pub fn create_symlink(
    dir: &DirFd,
    name: &OsStr,
    target: &[u8],
    mtime: Option<Timestamp>,
    replace: Replace,
) -> io::Result<()> {
    let temp = temp_name(name);
    rustix::fs::symlinkat(OsStr::from_bytes(target), dir.as_fd(), &temp)?;
    let result = (|| {
        if let Some(mtime) = mtime {
            rustix::fs::utimensat(
                dir.as_fd(),
                &temp,
                &mtime.as_mtime_only(),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        rename_into_place(dir, &temp, name, replace)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir.as_fd(), &temp, AtFlags::empty());
    }
    result
}

/// Makes `name` in `dir` a hard link to the file at `target`, a path below
/// `root` that is resolved without following any symbolic link and without
/// leaving `root`.
///
/// # Errors
/// `InvalidInput` for a target that is absolute or leaves the root,
/// `AlreadyExists` with [`Replace::Never`] when `name` exists, and any I/O
/// error (the target missing, a symlink on its path).
pub fn hard_link(
    root: &DirFd,
    target: &Path,
    dir: &DirFd,
    name: &OsStr,
    replace: Replace,
) -> io::Result<()> {
    let leaves = !is_plain_relative(target);
    let (Some(target_name), false) = (target.file_name(), leaves) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "hard link target leaves the tree",
        ));
    };
    let target_dir = root.open_beneath(target.parent().unwrap_or(Path::new("")))?;
    match replace {
        Replace::Never => Ok(rustix::fs::linkat(
            target_dir.as_fd(),
            target_name,
            dir.as_fd(),
            name,
            AtFlags::empty(),
        )?),
        Replace::Always => {
            let temp = temp_name(name);
            rustix::fs::linkat(
                target_dir.as_fd(),
                target_name,
                dir.as_fd(),
                &temp,
                AtFlags::empty(),
            )?;
            let renamed = rename_into_place(dir, &temp, name, Replace::Always);
            // Renaming onto another name of the same file does nothing and
            // leaves the temp name (rename(2)): remove it in every case.
            let _ = rustix::fs::unlinkat(dir.as_fd(), &temp, AtFlags::empty());
            renamed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reserved_blocks_are_there_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 << 20;
        let file = File::create(dir.path().join("out")).unwrap();
        // Linux test machines keep temp dirs on tmpfs or ext4, both of
        // which have `fallocate`.
        assert_eq!(
            reserve_blocks(&file, size).unwrap(),
            cfg!(target_os = "linux")
        );
        let meta = file.metadata().unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(meta.len(), size);
            let allocated = meta.blocks() * 512;
            assert!(allocated >= size, "{allocated} bytes allocated");
        } else {
            assert_eq!(meta.len(), 0);
        }
    }

    #[test]
    fn plain_relative_names_have_only_plain_parts() {
        for good in ["a", "a/b", "a.b/.c/d..e"] {
            assert!(is_plain_relative(Path::new(good)), "{good}");
        }
        for bad in [
            "", "/a", "a//b", "a/", "./a", "a/./b", "..", "a/../b", "a\0b",
        ] {
            assert!(!is_plain_relative(Path::new(bad)), "{bad:?}");
        }
    }

    #[test]
    fn a_new_private_file_is_0600_and_never_replaces_what_is_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_new_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = write_new_private(&path, b"other").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret", "left as it was");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        let refused = write_new_private(&link, b"x").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            !dir.path().join("elsewhere").exists(),
            "the link is not followed"
        );
    }

    #[test]
    fn restored_modes_drop_special_bits_and_follow_the_umask_unless_asked() {
        assert_eq!(restored_mode(0o6777, 0o022, false), 0o755);
        assert_eq!(restored_mode(0o1777, 0o077, false), 0o700);
        assert_eq!(restored_mode(0, 0o022, false), 0o644);
        assert_eq!(restored_mode(0o6777, 0o027, true), 0o6750);
        // Bits of the umask above 0o777 never clear special bits.
        assert_eq!(restored_mode(0o4755, 0o7022, true), 0o4755);
    }

    #[test]
    fn create_dirs_beneath_makes_missing_dirs_and_refuses_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = DirFd::open(tmp.path()).unwrap();
        root.create_dirs_beneath(Path::new("a/b/c"), 0o755).unwrap();
        assert!(tmp.path().join("a/b/c").is_dir());
        root.create_dirs_beneath(Path::new("a/b"), 0o755).unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("a/link")).unwrap();
        assert!(root
            .create_dirs_beneath(Path::new("a/link/x"), 0o755)
            .is_err());
        assert!(root.create_dirs_beneath(Path::new("../x"), 0o755).is_err());
        assert!(names(outside.path()).is_empty());
    }

    #[test]
    fn nothing_is_visible_before_commit_and_the_temp_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DirFd::open(tmp.path()).unwrap();
        let out = AtomicFile::create(&dir, OsStr::new("out")).unwrap();
        assert_eq!(out.file().metadata().unwrap().mode() & 0o777, 0o600);
        std::io::Write::write_all(&mut out.file(), b"hello").unwrap();
        assert!(names(tmp.path()).is_empty());
        out.set_mtime(Timestamp {
            seconds: 1_000_000_000,
            nanos: 123_456_789,
        })
        .unwrap();
        out.commit(Replace::Never, true).unwrap();
        let meta = std::fs::metadata(tmp.path().join("out")).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("out")).unwrap(), b"hello");
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (1_000_000_000, 123_456_789)
        );
    }

    /// The process umask, from `/proc/self/status`.
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
    }

    #[test]
    fn a_file_is_created_with_its_final_mode_only_where_the_kernel_gives_it_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = OutputTree::open_root(&tmp.path().join("out"), None).unwrap();
        let umask = umask();
        for (i, mode) in [0o600, 0o644, 0o640, 0o755, 0o666, 0o777, 0o444, 0o4755]
            .into_iter()
            .enumerate()
        {
            let name = format!("f{i}");
            let out = AtomicFile::create_with_mode(&tree.root(), OsStr::new(&name), mode).unwrap();
            let exact = mode & !0o777 == 0 && mode & 0o600 == 0o600 && mode & umask == 0;
            let created = out.file().metadata().unwrap().mode() & 0o7777;
            let expected = if exact { mode } else { PRIVATE_FILE_MODE };
            assert_eq!(created, expected, "{mode:o} (umask {umask:o})");
            out.set_mode(mode).unwrap();
            out.commit(Replace::Never, false).unwrap();
            let meta = std::fs::metadata(tmp.path().join("out").join(&name)).unwrap();
            assert_eq!(meta.mode() & 0o7777, mode, "{mode:o}");
        }
        // A directory nobody probed: the private mode, then the final one.
        let unprobed = DirFd::open(&tmp.path().join("out")).unwrap();
        let out = AtomicFile::create_with_mode(&unprobed, OsStr::new("g"), 0o644).unwrap();
        assert_eq!(out.file().metadata().unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn writeback_hints_take_any_range_and_change_no_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        start_writeback(&file, 0, 1 << 20);
        start_writeback(&file, 1 << 20, 0);
        drop_written(&file, 0, 2 << 20);
        drop_written(&file, u64::MAX, 1);
        drop(file);
        assert!(std::fs::read(&path).unwrap() == bytes);
    }

    #[test]
    fn never_refuses_an_existing_name_and_always_replaces_a_symlink_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("out")).unwrap();
        let dir = DirFd::open(tmp.path()).unwrap();
        let out = AtomicFile::create(&dir, OsStr::new("out")).unwrap();
        let err = out.commit(Replace::Never, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let out = AtomicFile::create(&dir, OsStr::new("out")).unwrap();
        std::io::Write::write_all(&mut out.file(), b"new").unwrap();
        out.commit(Replace::Always, false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(tmp.path().join("out"))
            .unwrap()
            .is_file());
        assert_eq!(names(tmp.path()), ["out"]);
    }

    #[test]
    fn named_temps_are_private_and_stale_ones_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // A temp left by a process that no longer exists (pid far above
        // pid_max), and one of a live process (ours).
        let stale = format!("{TEMP_PREFIX}999999999.0.file");
        std::fs::write(tmp.path().join(&stale), b"x").unwrap();
        let live = format!("{TEMP_PREFIX}{}.77.file", std::process::id());
        std::fs::write(tmp.path().join(&live), b"x").unwrap();
        let dir = DirFd::open(tmp.path()).unwrap();
        assert_eq!(sweep_stale_temps(&dir), 1);
        assert_eq!(names(tmp.path()), std::slice::from_ref(&live));
        let out = AtomicFile::create_named(&dir, OsStr::new("out")).unwrap();
        let temp = names(tmp.path()).into_iter().find(|n| n != &live).unwrap();
        let mode = std::fs::metadata(tmp.path().join(&temp)).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600, "{temp}");
        drop(out);
        assert_eq!(names(tmp.path()), [live]);
    }

    #[test]
    fn the_tree_refuses_symlinked_directories_and_keeps_new_ones_private() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().join("out");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.join("sub")).unwrap();
        let mut tree = OutputTree::open_root(&root, None).unwrap();
        let err = tree.add_dir(0, OsStr::new("sub"), None).unwrap_err();
        assert!(matches!(err, TreeError::Symlink(_)), "{err}");
        let finish = DirFinish {
            mode: 0o750,
            mtime: Some(Timestamp {
                seconds: 1_234_567_890,
                nanos: 5,
            }),
        };
        let new = tree.add_dir(0, OsStr::new("new"), Some(finish)).unwrap();
        let meta = std::fs::metadata(root.join("new")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        let inner = tree.add_dir(new, OsStr::new("inner"), None).unwrap();
        assert_eq!(tree.relative(inner), Path::new("new/inner"));
        assert!(tree.finish_dirs(|m| m).is_empty());
        let meta = std::fs::metadata(root.join("new")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o750);
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_234_567_890, 5));
        let mode = std::fs::metadata(elsewhere.path()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o755);
        // A path through the symlink is refused too.
        let err = tree.root().open_beneath(Path::new("sub")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::LOOP.raw_os_error()));
    }

    #[test]
    fn a_tree_larger_than_the_open_directory_cap_is_written_and_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let mut tree = OutputTree::open_root(&root, None).unwrap();
        let finish = DirFinish {
            mode: 0o751,
            mtime: None,
        };
        let mut last = 0;
        for i in 0..MAX_OPEN_DIRS + 20 {
            last = tree
                .add_dir(0, OsStr::new(&format!("d{i}")), Some(finish))
                .unwrap();
        }
        let deep = tree
            .add_dir(last, OsStr::new("deep"), Some(finish))
            .unwrap();
        let out = AtomicFile::create(&tree.dir(deep).unwrap(), OsStr::new("f")).unwrap();
        out.commit(Replace::Never, false).unwrap();
        assert!(tree.finish_dirs(|m| m).is_empty());
        let name = format!("d{}/deep", MAX_OPEN_DIRS + 19);
        assert!(root.join(&name).join("f").is_file());
        assert_eq!(
            std::fs::metadata(root.join(&name)).unwrap().mode() & 0o777,
            0o751
        );
    }

    #[test]
    fn symlinks_and_hard_links_are_made_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DirFd::open(tmp.path()).unwrap();
        let mtime = Timestamp {
            seconds: 1_500_000_000,
            nanos: 42,
        };
        create_symlink(
            &dir,
            OsStr::new("l"),
            b"../nowhere",
            Some(mtime),
            Replace::Never,
        )
        .unwrap();
        let meta = std::fs::symlink_metadata(tmp.path().join("l")).unwrap();
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_500_000_000, 42));
        assert_eq!(
            std::fs::read_link(tmp.path().join("l")).unwrap(),
            Path::new("../nowhere")
        );
        let err = create_symlink(&dir, OsStr::new("l"), b"x", None, Replace::Never).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/first"), b"data").unwrap();
        hard_link(
            &dir,
            Path::new("d/first"),
            &dir,
            OsStr::new("second"),
            Replace::Never,
        )
        .unwrap();
        let (a, b) = (
            std::fs::metadata(tmp.path().join("d/first")).unwrap(),
            std::fs::metadata(tmp.path().join("second")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
        let err = hard_link(
            &dir,
            Path::new("../x"),
            &dir,
            OsStr::new("y"),
            Replace::Never,
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // Through a symlinked directory: refused.
        std::os::unix::fs::symlink(tmp.path().join("d"), tmp.path().join("via")).unwrap();
        assert!(hard_link(
            &dir,
            Path::new("via/first"),
            &dir,
            OsStr::new("z"),
            Replace::Never
        )
        .is_err());
    }
}
