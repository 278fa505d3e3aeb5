//! The server side: [`StoreDir`], the objects of one store directory as
//! `serve --store DIR` hosts them, exactly where a local store keeps them
//! (so `store --store DIR` on the server machine opens the same store).
//!
//! Names are checked with the store's own rule
//! ([`cryptstream_store::check_object_name`]); the registry files a local
//! store keeps in DIR (`registry.sqlite*`) are not objects and are neither
//! served nor listed. Every path is walked from DIR without following a
//! symbolic link (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! `O_NOFOLLOW`), objects are written as the local backend writes them (an
//! unnamed temp file, fsynced, linked under its name only if the name is
//! free, mode 0400).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::Path;

use cryptstream_net::objects::{HostError, HostedWriter, ObjectHost};
use cryptstream_net::ErrorCode;
use cryptstream_output::{AtomicFile, DirFd, Replace};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Mode of the directories made below the store (as `store init` makes
/// the store directory: private).
const DIR_MODE: u32 = 0o700;

/// The objects of one store directory, served.
pub struct StoreDir {
    root: DirFd,
    append_only: bool,
}

impl StoreDir {
    /// Serves the store in `dir`, which must exist (`--append-only`:
    /// deletes refused).
    ///
    /// # Errors
    /// When `dir` cannot be opened as a directory.
    pub fn open(dir: &Path, append_only: bool) -> io::Result<StoreDir> {
        Ok(StoreDir {
            root: DirFd::open(dir)?,
            append_only,
        })
    }
}

/// Splits a checked name into its directory and file name.
fn split(name: &str) -> Result<(&Path, &OsStr), HostError> {
    cryptstream_store::check_object_name(name)
        .map_err(|e| HostError::new(ErrorCode::BadName, e.to_string()))?;
    if is_registry(name) {
        return Err(HostError::new(
            ErrorCode::BadName,
            format!("{name}: the store's registry is not an object"),
        ));
    }
    let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
    Ok((Path::new(dir), OsStr::new(file)))
}

/// The registry files of a local store, which are not objects.
fn is_registry(name: &str) -> bool {
    !name.contains('/') && name.starts_with("registry.sqlite")
}

fn storage(name: &str, e: impl std::fmt::Display) -> HostError {
    HostError::new(ErrorCode::Storage, format!("{name}: {e}"))
}

fn open_error(name: &str, e: io::Error) -> HostError {
    let errno = e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
    if e.kind() == io::ErrorKind::NotFound {
        HostError::new(ErrorCode::NoSuchObject, format!("{name}: no such object"))
    } else if matches!(
        errno,
        Some(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::XDEV)
    ) {
        HostError::new(
            ErrorCode::BadName,
            format!("{name}: a symbolic link or a file on the way; never followed"),
        )
    } else {
        storage(name, e)
    }
}

/// An object being written into the store directory.
struct Writing {
    name: String,
    file: AtomicFile,
}

impl HostedWriter for Writing {
    fn write(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        self.file
            .file()
            .write_all(bytes)
            .map_err(|e| storage(&self.name, e))
    }

    /// One `writev` for a batch of parts (again after a short write).
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<(), HostError> {
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
        let mut rest = &mut slices[..];
        let mut file = self.file.file();
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => {
                    return Err(storage(
                        &self.name,
                        io::Error::from(io::ErrorKind::WriteZero),
                    ))
                }
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(storage(&self.name, e)),
            }
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), HostError> {
        let Writing { name, file } = *self;
        file.set_mode(0o400).map_err(|e| storage(&name, e))?;
        match file.commit(Replace::Never, true) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(HostError::new(
                ErrorCode::ObjectExists,
                format!("{name}: the object exists; objects are never replaced"),
            )),
            Err(e) => Err(storage(&name, e)),
        }
    }
}

impl ObjectHost for StoreDir {
    fn append_only(&self) -> bool {
        self.append_only
    }

    fn create(&self, name: &str) -> Result<Box<dyn HostedWriter>, HostError> {
        let (dir, file) = split(name)?;
        let dir = self
            .root
            .create_dirs_beneath(dir, DIR_MODE)
            .map_err(|e| open_error(name, e))?;
        match rustix::fs::statat(dir.as_fd(), file, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {
                return Err(HostError::new(
                    ErrorCode::ObjectExists,
                    format!("{name}: the object exists; objects are never replaced"),
                ))
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(storage(name, e)),
        }
        let file = AtomicFile::create(&dir, file).map_err(|e| storage(name, e))?;
        Ok(Box::new(Writing {
            name: name.to_owned(),
            file,
        }))
    }

    fn open(&self, name: &str) -> Result<File, HostError> {
        let (dir, file) = split(name)?;
        let dir = self
            .root
            .open_beneath(dir)
            .map_err(|e| open_error(name, e))?;
        let fd = rustix::fs::openat(
            dir.as_fd(),
            file,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| open_error(name, e.into()))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| storage(name, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(HostError::new(
                ErrorCode::NoSuchObject,
                format!("{name}: not a regular file"),
            ));
        }
        Ok(File::from(fd))
    }

    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(u64, String) -> bool,
    ) -> Result<(), HostError> {
        let base = prefix.trim_end_matches('/');
        if !base.is_empty() {
            if !prefix.ends_with('/') {
                return Err(HostError::new(
                    ErrorCode::BadName,
                    format!("{prefix}: a listing prefix ends in /"),
                ));
            }
            cryptstream_store::check_object_name(base)
                .map_err(|e| HostError::new(ErrorCode::BadName, e.to_string()))?;
        }
        let dir = match self.root.open_beneath(Path::new(base)) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(open_error(prefix, e)),
        };
        walk(&dir, base, each).map(|_| ())
    }

    fn delete(&self, name: &str) -> Result<(), HostError> {
        let (dir, file) = split(name)?;
        let dir = match self.root.open_beneath(dir) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(open_error(name, e)),
        };
        match rustix::fs::unlinkat(dir.as_fd(), file, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(storage(name, e)),
        }
    }
}

/// Calls `each` for the regular files below `dir` (named `prefix/...`),
/// skipping hidden names (writers' temp files), links and the registry;
/// `false` once `each` asked to stop.
fn walk(
    dir: &DirFd,
    prefix: &str,
    each: &mut dyn FnMut(u64, String) -> bool,
) -> Result<bool, HostError> {
    let entries = rustix::fs::Dir::read_from(dir.as_fd()).map_err(|e| storage(prefix, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| storage(prefix, e))?;
        let Ok(part) = entry.file_name().to_str() else {
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
        if is_registry(&name) {
            continue;
        }
        let stat = match rustix::fs::statat(dir.as_fd(), part, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(storage(&name, e)),
        };
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                let sub = dir
                    .open_beneath(Path::new(part))
                    .map_err(|e| storage(&name, e))?;
                if !walk(&sub, &name, each)? {
                    return Ok(false);
                }
            }
            FileType::RegularFile if !each(stat.st_size as u64, name) => return Ok(false),
            _ => {}
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn put(host: &StoreDir, name: &str, data: &[u8]) -> Result<(), HostError> {
        let mut writer = host.create(name)?;
        writer.write(data)?;
        writer.commit()
    }

    fn listed(host: &StoreDir, prefix: &str) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        host.list(prefix, &mut |size, name| {
            out.push((size, name));
            true
        })
        .unwrap();
        out.sort();
        out
    }

    #[test]
    fn objects_are_created_once_read_listed_and_deleted_where_a_local_store_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let host = StoreDir::open(dir.path(), false).unwrap();
        put(&host, "packs/ab/one", b"hello").unwrap();
        put(&host, "config", b"{}").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("packs/ab/one")).unwrap(),
            b"hello"
        );
        let again = put(&host, "packs/ab/one", b"other").unwrap_err();
        assert_eq!(again.code, ErrorCode::ObjectExists);
        // A second writer that started before the first committed loses too.
        let mut late = host.create("packs/ab/two").unwrap();
        put(&host, "packs/ab/two", b"first").unwrap();
        late.write(b"second").unwrap();
        assert_eq!(late.commit().unwrap_err().code, ErrorCode::ObjectExists);
        let mut text = String::new();
        host.open("packs/ab/two")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "first");
        assert_eq!(
            listed(&host, "packs/"),
            vec![(5, "packs/ab/one".into()), (5, "packs/ab/two".into())]
        );
        assert_eq!(listed(&host, "").len(), 3);
        assert!(listed(&host, "manifests/").is_empty());
        host.delete("packs/ab/one").unwrap();
        host.delete("packs/ab/one").unwrap();
        assert_eq!(
            host.open("packs/ab/one").unwrap_err().code,
            ErrorCode::NoSuchObject
        );
    }

    #[test]
    fn parts_are_written_in_order_as_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let host = StoreDir::open(dir.path(), false).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let parts: [&[u8]; 4] = [b"head-", b"", &big, b"-tail"];
        let mut writer = host.create("packs/cd/parts").unwrap();
        writer.write_parts(&parts).unwrap();
        writer.write(b"!").unwrap();
        writer.commit().unwrap();
        let want = [&parts[..], &[b"!"]].concat().concat();
        assert!(std::fs::read(dir.path().join("packs/cd/parts")).unwrap() == want);
    }

    #[test]
    fn bad_names_the_registry_and_links_are_refused_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        std::fs::write(dir.path().join("registry.sqlite"), b"local registry").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("packs")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("manifests"))
            .unwrap();
        let host = StoreDir::open(dir.path(), false).unwrap();
        for name in [
            "../x",
            "/etc/passwd",
            "a//b",
            ".hidden",
            "a/./b",
            "registry.sqlite",
        ] {
            assert_eq!(
                host.open(name).unwrap_err().code,
                ErrorCode::BadName,
                "{name}"
            );
            assert_eq!(
                put(&host, name, b"x").unwrap_err().code,
                ErrorCode::BadName,
                "{name}"
            );
        }
        assert_eq!(
            host.open("packs/secret").unwrap_err().code,
            ErrorCode::BadName
        );
        assert_eq!(
            put(&host, "packs/new", b"x").unwrap_err().code,
            ErrorCode::BadName
        );
        assert_ne!(host.open("manifests").map(|_| ()), Ok(()));
        host.delete("packs/secret").unwrap_err();
        assert!(outside.path().join("secret").exists());
        assert!(!outside.path().join("new").exists());
        assert!(listed(&host, "").is_empty(), "{:?}", listed(&host, ""));
        assert!(host.list("packs", &mut |_, _| true).is_err());
    }
}
