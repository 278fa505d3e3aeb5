//! Outputs that appear under their final name only when complete.
//!
//! An [`AtomicOutput`] is written as an unnamed `O_TMPFILE` in the target
//! directory and linked into place by [`AtomicOutput::commit`]: if the
//! process dies at any moment, even by SIGKILL, the kernel frees the unnamed
//! file and nothing is left behind. Filesystems without `O_TMPFILE` get a
//! hidden named temp file (`.NAME.cst-tmp-PID-N`) that is renamed into place
//! and removed on drop.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, CWD};

/// Counter that makes named temp files unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Whether `linkat(fd, "", AT_EMPTY_PATH)` is allowed (cleared on the first refusal).
static EMPTY_PATH_WORKS: AtomicBool = AtomicBool::new(true);

/// What to do when the final name already exists at commit time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    /// Fail with `AlreadyExists`: never clobber.
    Never,
    /// Atomically replace the existing file.
    Always,
}

enum Temp {
    /// An `O_TMPFILE`: no name until linked.
    Unnamed,
    /// A hidden temp file beside the final name.
    Named(PathBuf),
}

/// A file being written that becomes visible only on [`commit`](Self::commit).
pub struct AtomicOutput {
    file: File,
    final_path: PathBuf,
    temp: Temp,
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl AtomicOutput {
    /// Creates the temp file for `final_path` with permission bits `mode`.
    ///
    /// # Errors
    /// Any error creating the file in the target directory.
    pub fn create(final_path: &Path, mode: u32) -> io::Result<AtomicOutput> {
        let dir = parent_dir(final_path);
        let unnamed = rustix::fs::openat(
            CWD,
            dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        );
        match unnamed {
            Ok(fd) => {
                return Ok(AtomicOutput {
                    file: File::from(fd),
                    final_path: final_path.to_path_buf(),
                    temp: Temp::Unnamed,
                })
            }
            // Filesystems without O_TMPFILE answer one of these.
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::ISDIR
                    || e == rustix::io::Errno::INVAL => {}
            Err(e) => return Err(e.into()),
        }
        let name = final_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(
            ".{name}.cst-tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let fd = rustix::fs::openat(
            CWD,
            &temp,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(AtomicOutput {
            file: File::from(fd),
            final_path: final_path.to_path_buf(),
            temp: Temp::Named(temp),
        })
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Sets the permission bits (the umask does not apply).
    ///
    /// # Errors
    /// Any error from `fchmod`.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(
            self.file.as_fd(),
            Mode::from_raw_mode(mode),
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
            Temp::Named(temp) => {
                let flags = match replace {
                    Replace::Never => RenameFlags::NOREPLACE,
                    Replace::Always => RenameFlags::empty(),
                };
                if let Err(e) = rustix::fs::renameat_with(CWD, &temp, CWD, &self.final_path, flags)
                {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e.into());
                }
            }
        }
        if durable {
            File::open(parent_dir(&self.final_path))?.sync_all()?;
        }
        Ok(())
    }

    fn link_unnamed(&self, replace: Replace) -> io::Result<()> {
        let link = |to: &Path| -> io::Result<()> {
            // AT_EMPTY_PATH links the descriptor itself without a path
            // lookup; it needs CAP_DAC_READ_SEARCH. Without it, the
            // /proc/self/fd path does the same for any user.
            if EMPTY_PATH_WORKS.load(Ordering::Relaxed) {
                match rustix::fs::linkat(self.file.as_fd(), "", CWD, to, AtFlags::EMPTY_PATH) {
                    Ok(()) => return Ok(()),
                    Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::PERM => {
                        EMPTY_PATH_WORKS.store(false, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let proc_path = format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&self.file)
            );
            Ok(rustix::fs::linkat(
                CWD,
                proc_path.as_str(),
                CWD,
                to,
                AtFlags::SYMLINK_FOLLOW,
            )?)
        };
        match replace {
            Replace::Never => link(&self.final_path),
            Replace::Always => {
                // Link under a hidden name, then rename over the old file:
                // the final name always holds either the old or the new file.
                let name = self
                    .final_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let temp = parent_dir(&self.final_path).join(format!(
                    ".{name}.cst-tmp-{}-{}",
                    std::process::id(),
                    TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                link(&temp)?;
                std::fs::rename(&temp, &self.final_path).inspect_err(|_| {
                    let _ = std::fs::remove_file(&temp);
                })
            }
        }
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if let Temp::Named(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_visible_before_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.cst");
        let out = AtomicOutput::create(&target, 0o600).unwrap();
        std::io::Write::write_all(&mut out.file(), b"hello").unwrap();
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        out.commit(Replace::Never, true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
    }

    #[test]
    fn dropped_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.cst");
        let out = AtomicOutput::create(&target, 0o600).unwrap();
        std::io::Write::write_all(&mut out.file(), b"partial").unwrap();
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn never_replace_refuses_existing_and_always_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::write(&target, b"old").unwrap();
        let out = AtomicOutput::create(&target, 0o600).unwrap();
        std::io::Write::write_all(&mut out.file(), b"new").unwrap();
        let err = out.commit(Replace::Never, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        let out = AtomicOutput::create(&target, 0o600).unwrap();
        std::io::Write::write_all(&mut out.file(), b"new").unwrap();
        out.commit(Replace::Always, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
