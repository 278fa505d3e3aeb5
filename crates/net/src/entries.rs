//! The parts of a tree that are not file bytes, received into a
//! [`DirDestination`]: whether a file is already held (`Check`),
//! directories with their mode and mtime (`Mkdir`), symbolic links
//! (`Symlink`) and hard links (`Link`).
//!
//! Everything is reached from the open root through directory
//! descriptors, never following a symbolic link on the way
//! (`cryptstream_output::DirFd`): a link the client sent earlier is a
//! link, never a way out. Link targets are bytes stored with
//! `symlinkat`, never resolved; a hard link's target must be a regular
//! file below the root, and `linkat` itself never follows a link.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cryptstream_output::{DirFd, Replace, Timestamp};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::frame::{Compare, EntryTime, ErrorCode, FileMeta};
use crate::name::RelName;
use crate::receive::{
    make_writable, path_error, DirDestination, ReceiveError, CHECK_HASH_SEGMENT, DIR_MODE,
};
use crate::treehash::SegmentedHash;

fn timestamp(time: EntryTime) -> Timestamp {
    Timestamp {
        seconds: time.seconds,
        nanos: time.nanos,
    }
}

/// See [`crate::Destination::check`].
pub(crate) fn check(
    dest: &DirDestination,
    name: &RelName,
    meta: &FileMeta,
    compare: Compare,
) -> Result<bool, ReceiveError> {
    let (parent, last) = name.split_parent();
    let Ok(dir) = dest.root().open_beneath(&parent) else {
        return Ok(false);
    };
    // Not a regular file (a link, a directory, a FIFO...): not held. The
    // descriptor is checked again below: the name may change in between.
    match rustix::fs::statat(dir.as_fd(), last, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        _ => return Ok(false),
    }
    let Ok(fd) = rustix::fs::openat(
        dir.as_fd(),
        last,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return Ok(false);
    };
    let file = File::from(fd);
    let Ok(st) = rustix::fs::fstat(&file) else {
        return Ok(false);
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || u64::try_from(st.st_size).ok() != Some(meta.size)
    {
        return Ok(false);
    }
    let same_mtime = st.st_mtime == meta.mtime_seconds
        && i64::try_from(st.st_mtime_nsec).ok() == Some(i64::from(meta.mtime_nanos));
    let held = match compare {
        Compare::SizeAndMtime => same_mtime,
        Compare::Content(hash) => SegmentedHash::new(meta.size, CHECK_HASH_SEGMENT)
            .finish(|buf, offset| file.read_exact_at(buf, offset))
            .is_ok_and(|actual| actual.as_bytes() == &hash),
    };
    if !held {
        return Ok(false);
    }
    let storage = |what: &str, e: rustix::io::Errno| {
        ReceiveError::new(ErrorCode::Storage, &name.display(), format!("{what}: {e}"))
    };
    let mode = dest.modes().apply(meta.mode);
    if st.st_mode & 0o7777 != mode {
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(|e| storage("cannot set its mode", e))?;
    }
    if !same_mtime {
        let mtime = Timestamp {
            seconds: meta.mtime_seconds,
            nanos: meta.mtime_nanos,
        };
        rustix::fs::futimens(&file, &mtime.as_mtime_only())
            .map_err(|e| storage("cannot set its mtime", e))?;
    }
    Ok(true)
}

/// See [`crate::Destination::make_dir`].
pub(crate) fn make_dir(
    dest: &DirDestination,
    name: &RelName,
    mode: u32,
    mtime: EntryTime,
) -> Result<(), ReceiveError> {
    let shown = name.display();
    let path = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
    let dir = dest
        .root()
        .create_dirs_beneath(path, DIR_MODE)
        .map_err(|e| path_error(&shown, "cannot create the directory", &e))?;
    let storage = |what: &str, e: rustix::io::Errno| {
        ReceiveError::new(ErrorCode::Storage, &shown, format!("{what}: {e}"))
    };
    rustix::fs::fchmod(dir.as_fd(), Mode::from_raw_mode(dest.modes().apply(mode)))
        .map_err(|e| storage("cannot set its mode", e))?;
    rustix::fs::futimens(dir.as_fd(), &timestamp(mtime).as_mtime_only())
        .map_err(|e| storage("cannot set its mtime", e))?;
    Ok(())
}

/// The open parent directory of `name` (created when missing, never
/// through a symbolic link) and its last component.
fn parent_of<'a>(
    dest: &DirDestination,
    name: &'a RelName,
) -> Result<(DirFd, &'a std::ffi::OsStr), ReceiveError> {
    let (parent, last) = name.split_parent();
    let dir = dest
        .root()
        .create_dirs_beneath(&parent, DIR_MODE)
        .map_err(|e| path_error(&name.display(), "cannot create its directory", &e))?;
    make_writable(&dir);
    Ok((dir, last))
}

/// See [`crate::Destination::make_symlink`].
pub(crate) fn make_symlink(
    dest: &DirDestination,
    name: &RelName,
    target: &[u8],
    mtime: EntryTime,
) -> Result<(), ReceiveError> {
    let (dir, last) = parent_of(dest, name)?;
    cryptstream_output::create_symlink(&dir, last, target, Some(timestamp(mtime)), Replace::Always)
        .map_err(|e| {
            ReceiveError::new(
                ErrorCode::Storage,
                &name.display(),
                format!("cannot make the symbolic link: {e}"),
            )
        })
}

/// See [`crate::Destination::make_hard_link`].
pub(crate) fn make_hard_link(
    dest: &DirDestination,
    name: &RelName,
    target: &RelName,
) -> Result<(), ReceiveError> {
    let shown = name.display();
    let refused = |why: String| ReceiveError::new(ErrorCode::BadName, &shown, why);
    let (target_parent, target_last) = target.split_parent();
    let target_dir = dest.root().open_beneath(&target_parent).map_err(|e| {
        path_error(
            &shown,
            &format!("hard link target {}", target.display()),
            &e,
        )
    })?;
    let target_stat =
        rustix::fs::statat(target_dir.as_fd(), target_last, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| refused(format!("hard link target {}: {e}", target.display())))?;
    if FileType::from_raw_mode(target_stat.st_mode) != FileType::RegularFile {
        return Err(refused(format!(
            "hard link target {} is not a regular file; refused",
            target.display()
        )));
    }
    let (dir, last) = parent_of(dest, name)?;
    // Already that file (a tree sent again): nothing to do.
    if let Ok(st) = rustix::fs::statat(dir.as_fd(), last, AtFlags::SYMLINK_NOFOLLOW) {
        if st.st_dev == target_stat.st_dev && st.st_ino == target_stat.st_ino {
            return Ok(());
        }
    }
    let target_path = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
    cryptstream_output::hard_link(dest.root(), target_path, &dir, last, Replace::Always)
        .map_err(|e| path_error(&shown, "cannot make the hard link", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Destination;
    use std::os::unix::fs::MetadataExt;

    fn meta(size: u64, seconds: i64, nanos: u32) -> FileMeta {
        FileMeta {
            size,
            mtime_seconds: seconds,
            mtime_nanos: nanos,
            mode: 0o4755,
        }
    }

    fn time(seconds: i64, nanos: u32) -> EntryTime {
        EntryTime { seconds, nanos }
    }

    #[test]
    fn a_held_file_is_found_by_size_and_mtime_or_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let path = tmp.path().join("d/f");
        std::fs::write(&path, b"hello").unwrap();
        let name = RelName::parse(b"d/f").unwrap();
        let when = std::fs::metadata(&path).unwrap();
        let (s, n) = (when.mtime(), when.mtime_nsec() as u32);
        assert!(dest
            .check(&name, &meta(5, s, n), Compare::SizeAndMtime)
            .unwrap());
        // The mode follows the policy: setuid dropped, through the umask.
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o755);
        assert!(!dest
            .check(&name, &meta(5, s, n + 1), Compare::SizeAndMtime)
            .unwrap());
        assert!(!dest
            .check(&name, &meta(6, s, n), Compare::SizeAndMtime)
            .unwrap());
        let right = Compare::Content(*blake3::hash(b"hello").as_bytes());
        let wrong = Compare::Content(*blake3::hash(b"hellp").as_bytes());
        assert!(!dest.check(&name, &meta(5, 1, 2), wrong).unwrap());
        assert!(dest.check(&name, &meta(5, 1, 2), right).unwrap());
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (after.mtime(), after.mtime_nsec()),
            (1, 2),
            "mtime brought over"
        );
        // Missing, or behind a symbolic link: not held.
        assert!(!dest
            .check(&RelName::parse(b"d/none").unwrap(), &meta(5, 1, 2), right)
            .unwrap());
        std::os::unix::fs::symlink(tmp.path().join("d"), tmp.path().join("via")).unwrap();
        assert!(!dest
            .check(&RelName::parse(b"via/f").unwrap(), &meta(5, 1, 2), right)
            .unwrap());
        std::os::unix::fs::symlink("d/f", tmp.path().join("lf")).unwrap();
        assert!(!dest
            .check(&RelName::parse(b"lf").unwrap(), &meta(5, 1, 2), right)
            .unwrap());
    }

    #[test]
    fn entries_are_made_below_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), b"keep").unwrap();
        let dest = DirDestination::new(tmp.path(), 0o022).unwrap();
        let name = |n: &[u8]| RelName::parse(n).unwrap();
        dest.make_dir(&name(b"a/empty"), 0o700, time(946_684_800, 7))
            .unwrap();
        let m = std::fs::metadata(tmp.path().join("a/empty")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
        assert_eq!((m.mtime(), m.mtime_nsec()), (946_684_800, 7));
        // A symbolic link pointing out of the root is stored, never used.
        let out = outside.path().as_os_str().as_bytes();
        dest.make_symlink(&name(b"a/out"), out, time(5, 6)).unwrap();
        assert_eq!(
            std::fs::read_link(tmp.path().join("a/out")).unwrap(),
            outside.path()
        );
        let err = dest
            .make_dir(&name(b"a/out/x"), 0o755, time(1, 0))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadName);
        let err = dest
            .make_symlink(&name(b"a/out/y"), b"z", time(1, 0))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadName);
        let err = dest
            .make_hard_link(&name(b"h"), &name(b"a/out/victim"))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadName);
        let err = dest
            .make_hard_link(&name(b"a/out/h"), &name(b"a/empty"))
            .unwrap_err();
        assert_eq!(
            err.code,
            ErrorCode::BadName,
            "a directory is no link target"
        );
        // A hard link to the symbolic link itself is refused too.
        let err = dest
            .make_hard_link(&name(b"h"), &name(b"a/out"))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadName);
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        assert_eq!(
            std::fs::read(outside.path().join("victim")).unwrap(),
            b"keep"
        );
        // A hard link to a file inside, made twice (the second is a no-op).
        std::fs::write(tmp.path().join("a/file"), b"x").unwrap();
        dest.make_hard_link(&name(b"b/second"), &name(b"a/file"))
            .unwrap();
        dest.make_hard_link(&name(b"b/second"), &name(b"a/file"))
            .unwrap();
        let (one, two) = (
            std::fs::metadata(tmp.path().join("a/file")).unwrap(),
            std::fs::metadata(tmp.path().join("b/second")).unwrap(),
        );
        assert_eq!(one.ino(), two.ino());
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("b")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp name left");
    }
}
