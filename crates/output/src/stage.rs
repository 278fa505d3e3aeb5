//! Staged trees: a new output tree built under a hidden name beside its
//! final one and renamed into place when the run ends
//! ([`OutputTree::open_staged`](crate::OutputTree::open_staged)).
//!
//! The stage of `PARENT/NAME` is `PARENT/.NAME.cst-partial.PID`, mode 0700
//! while it is filled. Its files are created under their own names with
//! mode 0 and get their mode only when complete, so after a SIGKILL or a
//! power cut the stage holds complete files and at most a few marked
//! incomplete. The next run into `NAME` either takes such a stage over
//! ([`adopt_interrupted`], for `--skip-existing`) or removes it.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

use crate::{DirFd, TreeError, PRIVATE_DIR_MODE, TEMP_NAME_KEEP};

/// What follows the final name in a stage's name, before the process id.
const STAGE_MARK: &str = ".cst-partial.";

/// A staged tree being built.
pub(crate) struct Stage {
    /// The directory both names are in.
    parent: DirFd,
    /// The final name.
    name: OsString,
    /// The stage's name.
    stage_name: OsString,
    /// The stage's path (for other processes and messages).
    path: PathBuf,
    /// The final path (for messages).
    final_path: PathBuf,
    /// The stage, open.
    root: DirFd,
    /// Whether publishing was tried (it is tried once).
    settled: AtomicBool,
}

impl Stage {
    /// Creates the stage of `path`, after removing stale stages of the
    /// same name; `None` where `path` has no file name (`.`, `..`, `/`).
    pub(crate) fn create(path: &Path) -> Result<Option<Stage>, TreeError> {
        let Some(name) = path.file_name() else {
            return Ok(None);
        };
        let io_err = |source: io::Error| TreeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let parent_path = parent_of(path);
        let parent = DirFd::open(parent_path).map_err(io_err)?;
        for stale in stale_stages(parent_path, name) {
            // Nothing in it is worth more than the run about to redo it.
            let _ = open_up(&stale).and_then(|_| fs::remove_dir_all(&stale));
        }
        let stage_name = stage_name(name, std::process::id());
        rustix::fs::mkdirat(
            parent.as_fd(),
            &stage_name,
            Mode::from_raw_mode(PRIVATE_DIR_MODE),
        )
        .map_err(|e| io_err(e.into()))?;
        let fd = rustix::fs::openat(
            parent.as_fd(),
            &stage_name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(e.into()))?;
        let root = DirFd::staged_from_fd(fd);
        Ok(Some(Stage {
            path: parent_path.join(&stage_name),
            final_path: path.to_path_buf(),
            parent,
            name: name.to_os_string(),
            stage_name,
            root,
            settled: AtomicBool::new(false),
        }))
    }

    /// The stage, open.
    pub(crate) fn root(&self) -> &DirFd {
        &self.root
    }

    /// The stage's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether publishing was tried.
    pub(crate) fn is_published(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// Renames the stage to the final name, once.
    pub(crate) fn publish(&self, durable: bool) -> io::Result<()> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match rustix::fs::renameat_with(
            self.parent.as_fd(),
            &self.stage_name,
            self.parent.as_fd(),
            &self.name,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                    "{} was created by something else during the run; this run's output is in {}",
                    self.final_path.display(),
                    self.path.display()
                ),
                ))
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!(
                        "cannot rename {} to {}: {}",
                        self.path.display(),
                        self.final_path.display(),
                        io::Error::from(e)
                    ),
                ))
            }
        }
        if durable {
            rustix::fs::fsync(self.parent.as_fd())?;
        }
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // A run that ends before its engine (an interrupted key
        // derivation) leaves what it made where it would be, as a tree
        // written in place would.
        let _ = self.publish(false);
    }
}

/// Takes over the stage that a run into `path` left when it was killed
/// (its process is gone; the stage is a directory of this user's, private):
/// removes the files in it not marked complete, makes its directories
/// private again (the run that resumes gives them their modes), and
/// renames it to `path`. Returns how many incomplete files were removed,
/// or `None` when there is no such stage (or `path` exists).
///
/// # Errors
/// Any error reading or changing the stage.
pub fn adopt_interrupted(path: &Path) -> io::Result<Option<usize>> {
    let Some(name) = path.file_name() else {
        return Ok(None);
    };
    let Some(stage) = stale_stages(parent_of(path), name).into_iter().next() else {
        return Ok(None);
    };
    let removed = open_up(&stage)?;
    match rustix::fs::renameat_with(CWD, &stage, CWD, path, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(Some(removed)),
        Err(Errno::EXIST) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The directory `path` is in.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The stage name of `name` for process `pid`.
fn stage_name(name: &OsStr, pid: u32) -> OsString {
    let bytes = name.as_bytes();
    let mut stage = OsString::from(".");
    stage.push(OsStr::from_bytes(&bytes[..bytes.len().min(TEMP_NAME_KEEP)]));
    stage.push(format!("{STAGE_MARK}{pid}"));
    stage
}

/// The process id in `entry` when it is a stage name of `name`.
fn stage_owner(entry: &OsStr, name: &OsStr) -> Option<i32> {
    let bytes = name.as_bytes();
    let rest = entry
        .as_bytes()
        .strip_prefix(b".")?
        .strip_prefix(&bytes[..bytes.len().min(TEMP_NAME_KEEP)])?
        .strip_prefix(STAGE_MARK.as_bytes())?;
    if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// The stages of `name` in `parent` whose process is gone, that are this
/// user's private directories (a name alone is not enough to touch one).
fn stale_stages(parent: &Path, name: &OsStr) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let me = rustix::process::geteuid().as_raw();
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            stage_owner(&entry.file_name(), name).is_some_and(|pid| !crate::process_alive(pid))
        })
        .filter(|entry| {
            // `DirEntry::metadata` does not follow a symbolic link.
            entry
                .metadata()
                .is_ok_and(|meta| meta.is_dir() && meta.uid() == me && meta.mode() & 0o077 == 0)
        })
        .map(|entry| entry.path())
        .collect()
}

/// Makes `dir` and every directory below it private and writable (0700)
/// and removes the regular files below it that are marked incomplete
/// (mode 0); returns how many it removed. Symbolic links are not followed.
fn open_up(dir: &Path) -> io::Result<usize> {
    fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
    let mut removed = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
                pending.push(entry.path());
            } else if meta.is_file() && meta.mode() & 0o7777 == 0 {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AtomicFile, DirFinish, OutputTree, Replace};
    use std::io::Write;

    /// The id of a process that has exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_staged_tree_appears_under_its_name_only_when_published() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let finish = DirFinish {
            mode: 0o750,
            mtime: None,
        };
        let mut tree = OutputTree::open_staged(&out, Some(finish)).unwrap();
        let stage = tmp
            .path()
            .join(stage_name(OsStr::new("out"), std::process::id()));
        assert!(tree.is_staged());
        assert_eq!(tree.work_path(), stage);
        assert_eq!(tree.root_path(), out);
        let sub = tree.add_dir(0, OsStr::new("sub"), None).unwrap();
        let file = AtomicFile::create(&tree.dir(sub).unwrap(), OsStr::new("f")).unwrap();
        file.file().write_all(b"data").unwrap();
        file.set_mode(0o640).unwrap();
        // Written under its own name, marked incomplete by mode 0.
        assert_eq!(mode_of(&stage.join("sub/f")), 0);
        assert!(!out.exists());
        file.commit(Replace::Never, false).unwrap();
        assert_eq!(mode_of(&stage.join("sub/f")), 0o640);
        // A file dropped before its commit leaves nothing.
        let dropped = AtomicFile::create(&tree.dir(sub).unwrap(), OsStr::new("g")).unwrap();
        drop(dropped);
        assert_eq!(names(&stage.join("sub")), ["f"]);
        assert!(tree.finish_dirs(|m| m).is_empty());
        tree.publish(false).unwrap();
        assert!(!tree.is_staged());
        assert!(!stage.exists());
        assert_eq!(fs::read(out.join("sub/f")).unwrap(), b"data");
        assert_eq!(mode_of(&out), 0o750);
        assert_eq!(names(tmp.path()), ["out"]);
    }

    #[test]
    fn only_a_staged_file_marked_incomplete_is_removed_as_incomplete() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = OutputTree::open_staged(&tmp.path().join("out"), None).unwrap();
        let root = tree.root();
        // As a process that died mid-write leaves it.
        let cut = AtomicFile::create(&root, OsStr::new("cut")).unwrap();
        std::mem::forget(cut);
        let done = AtomicFile::create(&root, OsStr::new("done")).unwrap();
        done.commit(Replace::Never, false).unwrap();
        assert!(crate::remove_incomplete(&root, OsStr::new("cut")));
        assert!(!crate::remove_incomplete(&root, OsStr::new("done")));
        assert!(!crate::remove_incomplete(&root, OsStr::new("missing")));
        assert_eq!(names(tree.work_path()), ["done"]);
        // Outside a staged tree, a mode-0 file is someone's file.
        let plain = tmp.path().join("plain");
        fs::create_dir(&plain).unwrap();
        fs::write(plain.join("zero"), b"").unwrap();
        fs::set_permissions(plain.join("zero"), fs::Permissions::from_mode(0o0)).unwrap();
        assert!(!crate::remove_incomplete(
            &DirFd::open(&plain).unwrap(),
            OsStr::new("zero")
        ));
        assert!(plain.join("zero").exists());
    }

    #[test]
    fn a_taken_name_in_a_staged_tree_is_decided_at_commit_as_anywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let tree = OutputTree::open_staged(&out, None).unwrap();
        let root = tree.root();
        let first = AtomicFile::create(&root, OsStr::new("x")).unwrap();
        first.file().write_all(b"one").unwrap();
        // Same name while the first is being written: an unnamed temp file.
        let second = AtomicFile::create(&root, OsStr::new("x")).unwrap();
        second.file().write_all(b"two").unwrap();
        first.commit(Replace::Never, false).unwrap();
        let err = second.commit(Replace::Never, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        tree.publish(false).unwrap();
        assert_eq!(fs::read(out.join("x")).unwrap(), b"one");
    }

    #[test]
    fn publishing_over_a_name_taken_during_the_run_fails_and_names_the_stage() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let tree = OutputTree::open_staged(&out, None).unwrap();
        fs::create_dir(&out).unwrap();
        let err = tree.publish(false).unwrap_err();
        let stage = tree.work_path().to_path_buf();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains(&*stage.to_string_lossy()), "{err}");
        assert!(stage.is_dir(), "the stage is kept");
        assert!(names(&out).is_empty(), "the other tree is untouched");
        drop(tree);
        assert!(stage.is_dir(), "a failed publish is not retried on drop");
    }

    #[test]
    fn a_staged_tree_dropped_unpublished_is_published() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        drop(OutputTree::open_staged(&out, None).unwrap());
        assert_eq!(names(tmp.path()), ["out"]);
    }

    /// A stage as a killed run leaves it: `done` complete, `part` marked
    /// incomplete, a read-only directory.
    fn killed_stage(parent: &Path, name: &str) -> PathBuf {
        let stage = parent.join(stage_name(OsStr::new(name), dead_pid()));
        fs::create_dir(&stage).unwrap();
        fs::create_dir(stage.join("ro")).unwrap();
        fs::write(stage.join("ro/done"), b"done").unwrap();
        fs::write(stage.join("ro/part"), b"pa").unwrap();
        fs::set_permissions(stage.join("ro/part"), fs::Permissions::from_mode(0o0)).unwrap();
        fs::set_permissions(stage.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(&stage, fs::Permissions::from_mode(0o700)).unwrap();
        stage
    }

    #[test]
    fn a_killed_runs_stage_is_adopted_without_its_incomplete_files() {
        let tmp = tempfile::tempdir().unwrap();
        killed_stage(tmp.path(), "out");
        let out = tmp.path().join("out");
        assert_eq!(adopt_interrupted(&out).unwrap(), Some(1));
        assert_eq!(names(tmp.path()), ["out"]);
        assert_eq!(names(&out.join("ro")), ["done"]);
        assert_eq!(mode_of(&out.join("ro")), PRIVATE_DIR_MODE);
        // Nothing more to adopt.
        assert_eq!(adopt_interrupted(&out).unwrap(), None);
    }

    #[test]
    fn a_killed_runs_stage_is_removed_by_a_new_staged_run() {
        let tmp = tempfile::tempdir().unwrap();
        killed_stage(tmp.path(), "out");
        // Another name's stage, a live process's stage and a file with a
        // stage's name are not touched.
        let other = killed_stage(tmp.path(), "other");
        let live = tmp.path().join(stage_name(OsStr::new("out"), 1));
        fs::create_dir(&live).unwrap();
        fs::set_permissions(&live, fs::Permissions::from_mode(0o700)).unwrap();
        let file = tmp.path().join(stage_name(OsStr::new("out"), dead_pid()));
        fs::write(&file, b"not a stage").unwrap();
        let tree = OutputTree::open_staged(&tmp.path().join("out"), None).unwrap();
        tree.publish(false).unwrap();
        let mut expected = vec![
            "out".to_string(),
            other.file_name().unwrap().to_str().unwrap().to_string(),
            live.file_name().unwrap().to_str().unwrap().to_string(),
            file.file_name().unwrap().to_str().unwrap().to_string(),
        ];
        expected.sort();
        assert_eq!(names(tmp.path()), expected);
    }

    #[test]
    fn stage_names_belong_to_one_name_and_a_process_id() {
        let name = OsStr::new("out");
        assert_eq!(
            stage_owner(OsStr::new(".out.cst-partial.42"), name),
            Some(42)
        );
        for not in [
            ".out.cst-partial.",
            ".out.cst-partial.4x",
            ".outx.cst-partial.42",
            "out.cst-partial.42",
            ".out.cst-partial.42.1",
        ] {
            assert_eq!(stage_owner(OsStr::new(not), name), None, "{not}");
        }
        let long = OsString::from("n".repeat(255));
        let stage = stage_name(&long, 7);
        assert!(stage.len() <= 255, "{}", stage.len());
        assert_eq!(stage_owner(&stage, &long), Some(7));
    }
}
