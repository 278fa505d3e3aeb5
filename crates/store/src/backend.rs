//! Where the store's objects live: the [`Backend`] trait and the local
//! directory backend [`LocalDir`].
//!
//! A backend is shaped like an object store, so that S3-compatible storage
//! fits the same trait: objects are immutable, named by `/`-separated
//! strings (`config`, `packs/ab/<id>`, `manifests/cd/<id>`), created once
//! (a second create of the same name is refused with
//! [`BackendError::AlreadyExists`]), read whole or by range, listed by
//! prefix and deleted. Nothing is ever modified in place. The API is
//! synchronous; a network backend runs its own runtime inside.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptstream_output::{AtomicFile, DirFd, Replace};

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A create-only write found the name taken.
    #[error("object {0} already exists")]
    AlreadyExists(String),
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// A name that is not a valid object name (empty, `..`, absolute).
    #[error("invalid object name {0:?}")]
    InvalidName(String),
    /// An object larger than what its kind can be; it was not read.
    #[error("object {name}: {size} bytes, more than the {limit} it can have; not read")]
    TooLarge {
        /// The object.
        name: String,
        /// Its size.
        size: u64,
        /// The most it may have.
        limit: u64,
    },
    /// A read past the end of the object.
    #[error("object {name}: range {offset}+{len} is past its end ({size} bytes)")]
    ShortObject {
        /// The object.
        name: String,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the object.
        size: u64,
    },
    /// Any other I/O failure.
    #[error("object {name}: {source}")]
    Io {
        /// The object (or prefix).
        name: String,
        /// The cause.
        source: io::Error,
    },
}

/// One object found by [`Backend::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its full name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// An object being written; it appears under its name only after
/// [`ObjectWriter::commit`], and only if no object of that name exists.
/// Dropping it without committing leaves nothing.
pub trait ObjectWriter: Write + Send {
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Appends `bytes`, which the writer may keep: a backend that sends
    /// them from another thread takes them as they are, without a copy.
    ///
    /// # Errors
    /// As `write_all`.
    fn write_owned(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.write_all(&bytes)
    }
    /// Makes the object durable and visible under its name.
    ///
    /// # Errors
    /// [`BackendError::AlreadyExists`] when the name is taken (nothing is
    /// replaced), or any failure to persist it.
    fn commit(self: Box<Self>) -> Result<(), BackendError>;
}

/// A read of one span of an object, opened by [`Backend::open_span`] and
/// taken in order.
pub trait SpanRead {
    /// Appends to `out` the `len` bytes at offset `at` of the object. `at`
    /// is at or past the end of the bytes taken before, and inside the
    /// span; the bytes in between are skipped.
    ///
    /// # Errors
    /// The object ends early, or an I/O failure; the read cannot go on
    /// after an error.
    fn read_into(&mut self, at: u64, len: usize, out: &mut Vec<u8>) -> Result<(), BackendError>;
}

/// [`Backend::open_span`]'s default: one [`Backend::get_range`] per piece.
struct PieceReads<'a, B: ?Sized> {
    backend: &'a B,
    name: String,
}

impl<B: Backend + ?Sized> SpanRead for PieceReads<'_, B> {
    fn read_into(&mut self, at: u64, len: usize, out: &mut Vec<u8>) -> Result<(), BackendError> {
        let from = out.len();
        out.resize(from + len, 0);
        let result = self.backend.get_range(&self.name, at, &mut out[from..]);
        if result.is_err() {
            out.truncate(from);
        }
        result
    }
}

/// Object storage for a store. See the module docs.
pub trait Backend: Send + Sync {
    /// A short description for messages (`/path/to/store`, `s3://bucket/p`).
    fn describe(&self) -> String;
    /// Starts a create-only write of `name`.
    ///
    /// # Errors
    /// An invalid name or a failure to start the write.
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, BackendError>;
    /// Writes a small object in one call, create-only.
    ///
    /// # Errors
    /// As [`Backend::create`] and [`ObjectWriter::commit`].
    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<(), BackendError> {
        let mut writer = self.create(name)?;
        writer.write_all(data).map_err(|source| BackendError::Io {
            name: name.to_owned(),
            source,
        })?;
        writer.commit()
    }
    /// The whole object, which may have at most `limit` bytes: its size is
    /// checked before anything is read or allocated.
    ///
    /// # Errors
    /// [`BackendError::NotFound`], [`BackendError::TooLarge`] or an I/O
    /// failure.
    fn get(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError>;
    /// Fills `buf` with the bytes of `name` starting at `offset`.
    ///
    /// # Errors
    /// [`BackendError::NotFound`], [`BackendError::ShortObject`] or an I/O
    /// failure.
    fn get_range(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Opens a read of bytes `start..start + len` of `name`, taken in
    /// order, piece by piece, with [`SpanRead::read_into`]. Object storage
    /// makes it one request (one GET whose body the pieces are cut from, a
    /// connection held until the reader is dropped); the default reads
    /// each piece with [`Backend::get_range`] as it is asked for.
    ///
    /// # Errors
    /// [`BackendError::NotFound`], [`BackendError::ShortObject`] or an I/O
    /// failure; a caller may fall back to [`Backend::get_range`].
    fn open_span<'a>(
        &'a self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Box<dyn SpanRead + 'a>, BackendError> {
        let _ = (start, len);
        Ok(Box::new(PieceReads {
            backend: self,
            name: name.to_owned(),
        }))
    }
    /// How many reads ([`Backend::open_span`], [`Backend::get_range`]) are
    /// worth having in flight at once: `get` and `verify --read-data` read
    /// with this many threads of their own, independent of the CPU workers.
    fn read_streams(&self) -> usize {
        LOCAL_READ_STREAMS
    }
    /// How many objects a put may have on their way to durability at once
    /// ([`ObjectWriter::commit`] on a thread of its own while the next
    /// pack fills): object storage and a store server take several
    /// uploads at once; a local disk gains from one `fsync` overlapping
    /// the next pack's writes.
    fn write_streams(&self) -> usize {
        LOCAL_WRITE_STREAMS
    }
    /// The size of `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// An I/O failure other than absence.
    fn size(&self, name: &str) -> Result<Option<u64>, BackendError>;
    /// Whether `name` exists.
    ///
    /// # Errors
    /// An I/O failure other than absence.
    fn exists(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self.size(name)?.is_some())
    }
    /// Calls `each` for every object whose name starts with `prefix`
    /// (a folder-like prefix ending in `/`), in no particular order,
    /// without collecting them first.
    ///
    /// # Errors
    /// An I/O failure, or the first error `each` returns.
    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(ObjectMeta) -> Result<(), BackendError>,
    ) -> Result<(), BackendError>;
    /// Deletes `name`; deleting a missing object is not an error.
    ///
    /// # Errors
    /// An I/O failure.
    fn delete(&self, name: &str) -> Result<(), BackendError>;
}

/// Reads in flight at once on a local disk (reads of blocks from the page
/// cache or a disk's queue; more threads would only wait on each other).
pub const LOCAL_READ_STREAMS: usize = 4;

/// Packs a put may have committing at once on a local disk.
pub const LOCAL_WRITE_STREAMS: usize = 2;

/// Most pack descriptors a [`LocalDir`] keeps open for reads.
const OPEN_READERS: usize = 64;

/// A backend in a local directory: object `a/b/c` is the file `ROOT/a/b/c`.
///
/// Objects are written as [`AtomicFile`]s (an unnamed temp file in the
/// object's directory, fsynced, linked under its name with `linkat`, which
/// refuses an existing name, then the directory fsynced), so a crash leaves
/// either the whole object or nothing, and two writers of one name never
/// replace each other's object.
pub struct LocalDir {
    root: PathBuf,
    readers: Mutex<HashMap<String, Arc<File>>>,
}

impl LocalDir {
    /// The backend rooted at `root`, which must exist.
    ///
    /// # Errors
    /// When `root` is not a directory that can be opened.
    pub fn open(root: &Path) -> Result<LocalDir, BackendError> {
        DirFd::open(root).map_err(|source| BackendError::Io {
            name: root.display().to_string(),
            source,
        })?;
        Ok(LocalDir {
            root: root.to_path_buf(),
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, BackendError> {
        check_object_name(name)?;
        Ok(self.root.join(name))
    }

    fn reader(&self, name: &str) -> Result<Arc<File>, BackendError> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = readers.get(name) {
            return Ok(file.clone());
        }
        let path = self.path(name)?;
        let file = Arc::new(File::open(&path).map_err(|e| io_error(name, e))?);
        if readers.len() >= OPEN_READERS {
            readers.clear();
        }
        readers.insert(name.to_owned(), file.clone());
        Ok(file)
    }

    fn forget_reader(&self, name: &str) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.remove(name);
    }
}

/// Maps "not found" to [`BackendError::NotFound`].
/// Checks an object name, the same for every backend: relative,
/// `/`-separated parts that are neither empty nor start with `.` (so no
/// `..`, and no hidden temp name), no control character or backslash.
///
/// # Errors
/// [`BackendError::InvalidName`] for any other name.
pub fn check_object_name(name: &str) -> Result<(), BackendError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|part| part.is_empty() || part.starts_with('.'))
        || name.bytes().any(|b| b.is_ascii_control() || b == b'\\');
    if bad {
        Err(BackendError::InvalidName(name.to_owned()))
    } else {
        Ok(())
    }
}

fn io_error(name: &str, source: io::Error) -> BackendError {
    if source.kind() == io::ErrorKind::NotFound {
        BackendError::NotFound(name.to_owned())
    } else {
        BackendError::Io {
            name: name.to_owned(),
            source,
        }
    }
}

/// A [`LocalDir`] object being written.
struct LocalWriter {
    name: String,
    file: AtomicFile,
    written: u64,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.file().write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for LocalWriter {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(self: Box<Self>) -> Result<(), BackendError> {
        let name = self.name;
        // Objects are read-only once written.
        self.file.set_mode(0o400).map_err(|e| io_error(&name, e))?;
        match self.file.commit(Replace::Never, true) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(BackendError::AlreadyExists(name))
            }
            Err(e) => Err(io_error(&name, e)),
        }
    }
}

impl Backend for LocalDir {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, BackendError> {
        let path = self.path(name)?;
        let parent = path.parent().expect("an object path has a parent");
        std::fs::create_dir_all(parent).map_err(|e| io_error(name, e))?;
        let dir = DirFd::open(parent).map_err(|e| io_error(name, e))?;
        let file_name = path.file_name().expect("an object path has a file name");
        let file = AtomicFile::create(&dir, file_name).map_err(|e| io_error(name, e))?;
        Ok(Box::new(LocalWriter {
            name: name.to_owned(),
            file,
            written: 0,
        }))
    }

    fn get(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError> {
        use std::io::Read;
        let file = File::open(self.path(name)?).map_err(|e| io_error(name, e))?;
        let size = file.metadata().map_err(|e| io_error(name, e))?.len();
        if size > limit {
            return Err(BackendError::TooLarge {
                name: name.to_owned(),
                size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        // Bounded also if the file grows meanwhile.
        file.take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| io_error(name, e))?;
        if data.len() as u64 > limit {
            return Err(BackendError::TooLarge {
                name: name.to_owned(),
                size: data.len() as u64,
                limit,
            });
        }
        Ok(data)
    }

    fn get_range(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let file = self.reader(name)?;
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Err(BackendError::ShortObject {
                    name: name.to_owned(),
                    offset,
                    len: buf.len() as u64,
                    size,
                })
            }
            Err(e) => Err(io_error(name, e)),
        }
    }

    fn size(&self, name: &str) -> Result<Option<u64>, BackendError> {
        match std::fs::symlink_metadata(self.path(name)?) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(name, e)),
        }
    }

    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(ObjectMeta) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        walk(&dir, prefix.trim_end_matches('/'), each)
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.forget_reader(name);
        match std::fs::remove_file(self.path(name)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(name, e)),
        }
    }
}

/// Lists the regular files below `dir` (named `prefix/...`), skipping
/// hidden names (temp files of writers in progress).
fn walk(
    dir: &Path,
    prefix: &str,
    each: &mut dyn FnMut(ObjectMeta) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(prefix, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(prefix, e))?;
        let file_name = entry.file_name();
        let Some(part) = file_name.to_str() else {
            continue;
        };
        if part.starts_with('.') {
            continue;
        }
        let name = if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}/{part}")
        };
        let meta = entry.metadata().map_err(|e| io_error(&name, e))?;
        if meta.is_dir() {
            walk(&entry.path(), &name, each)?;
        } else if meta.is_file() {
            each(ObjectMeta {
                name,
                size: meta.len(),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_create_only_and_objects_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(dir.path()).unwrap();
        backend
            .put_if_absent("packs/ab/one", b"hello world")
            .unwrap();
        assert!(matches!(
            backend.put_if_absent("packs/ab/one", b"other"),
            Err(BackendError::AlreadyExists(_))
        ));
        assert_eq!(backend.get("packs/ab/one", 11).unwrap(), b"hello world");
        assert!(matches!(
            backend.get("packs/ab/one", 10),
            Err(BackendError::TooLarge {
                size: 11,
                limit: 10,
                ..
            })
        ));
        let mut buf = [0u8; 5];
        backend.get_range("packs/ab/one", 6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        assert!(matches!(
            backend.get_range("packs/ab/one", 8, &mut buf),
            Err(BackendError::ShortObject { .. })
        ));
        let mut seen = Vec::new();
        backend
            .list("packs/", &mut |meta| {
                seen.push(meta);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![ObjectMeta {
                name: "packs/ab/one".into(),
                size: 11
            }]
        );
        assert!(backend.exists("packs/ab/one").unwrap());
        backend.delete("packs/ab/one").unwrap();
        backend.delete("packs/ab/one").unwrap();
        assert!(!backend.exists("packs/ab/one").unwrap());
        assert!(matches!(
            backend.get("packs/ab/one", 100),
            Err(BackendError::NotFound(_))
        ));
        assert!(matches!(
            backend.create("../x"),
            Err(BackendError::InvalidName(_))
        ));
    }

    #[test]
    fn object_names_are_relative_plain_parts() {
        for good in ["config", "packs/ab/one", "manifests/00/x-y_z"] {
            assert!(check_object_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "../x",
            "a/../b",
            "./a",
            "a/.hidden",
            "a\\b",
            "a\nb",
        ] {
            assert!(
                matches!(check_object_name(bad), Err(BackendError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_uncommitted_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(dir.path()).unwrap();
        let mut writer = backend.create("manifests/aa/x").unwrap();
        writer.write_all(b"partial").unwrap();
        drop(writer);
        assert!(!backend.exists("manifests/aa/x").unwrap());
    }
}
