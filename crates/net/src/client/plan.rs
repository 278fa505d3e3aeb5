//! Planning a send like `rsync -a`: the paths named are walked in sorted
//! order into a [`Plan`] of regular files (one per inode), further names
//! of those files (hard links), symbolic links (never followed) and
//! directories; special files are skipped and listed.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::frame::{EntryTime, FileMeta, MAX_NAME_LEN};
use crate::name::RelName;
use crate::NetError;

/// A file to send.
#[derive(Clone, Debug)]
pub struct PlannedFile {
    /// Where it is here.
    pub path: PathBuf,
    /// Its name on the server.
    pub name: RelName,
    /// Its size, mode and mtime.
    pub meta: FileMeta,
}

/// What was skipped while planning, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    /// The path.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// A symbolic link to send: its target bytes, never followed.
#[derive(Clone, Debug)]
pub struct PlannedSymlink {
    /// Its name on the server.
    pub name: RelName,
    /// What it points to, as `readlink` gives it.
    pub target: Vec<u8>,
    /// Modification time of the link itself.
    pub mtime: EntryTime,
}

/// A second (third...) name of a file sent: a hard link to it.
#[derive(Clone, Debug)]
pub struct PlannedLink {
    /// Its name on the server.
    pub name: RelName,
    /// The index in [`Plan::files`] of the file it is a name of.
    pub file: usize,
}

/// A directory to send: made (even when empty) and given its mode and
/// mtime once everything below it arrived.
#[derive(Clone, Debug)]
pub struct PlannedDir {
    /// Its name on the server.
    pub name: RelName,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: EntryTime,
}

/// Everything a send carries, from [`plan_tree`].
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Regular files (one name per inode).
    pub files: Vec<PlannedFile>,
    /// Symbolic links.
    pub symlinks: Vec<PlannedSymlink>,
    /// Further names of files in `files`.
    pub links: Vec<PlannedLink>,
    /// Directories, in walk order.
    pub dirs: Vec<PlannedDir>,
    /// What is not sent (special files), and why.
    pub skipped: Vec<Skipped>,
}

impl Plan {
    /// Total bytes of the regular files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.meta.size).sum()
    }
}

/// Plans a send of `paths` like `rsync -a`: a file is sent under its own
/// name, a directory as its name followed by everything below it, in
/// sorted order: regular files, symbolic links (never followed), further
/// names of a file (hard links, found by device and inode), and every
/// directory. Special files are skipped and listed. A path named here is
/// followed when it is a symbolic link.
///
/// # Errors
/// [`NetError::Input`] for a path that cannot be read, a name the server
/// would refuse, or two entries that would get the same name.
pub fn plan_tree(paths: &[PathBuf]) -> Result<Plan, NetError> {
    let mut planner = Planner::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| input_error(path, e))?;
        let base = match path.file_name() {
            Some(name) if name != OsStr::new("..") => PathBuf::from(name),
            _ => PathBuf::new(),
        };
        planner.entry(path, &base, &meta)?;
    }
    let plan = planner.plan;
    let mut names: Vec<&[u8]> = plan
        .files
        .iter()
        .map(|f| f.name.as_bytes())
        .chain(plan.symlinks.iter().map(|l| l.name.as_bytes()))
        .chain(plan.links.iter().map(|l| l.name.as_bytes()))
        .chain(plan.dirs.iter().map(|d| d.name.as_bytes()))
        .collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(NetError::Input {
            path: PathBuf::from(OsStr::from_bytes(pair[0])),
            reason: "two entries would arrive under this name".into(),
        });
    }
    Ok(plan)
}

fn input_error(path: &Path, e: io::Error) -> NetError {
    NetError::Input {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn entry_time(meta: &std::fs::Metadata) -> EntryTime {
    EntryTime {
        seconds: meta.mtime(),
        nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
    }
}

fn rel_name(path: &Path, name: &Path) -> Result<RelName, NetError> {
    RelName::from_path(name).map_err(|e| NetError::Input {
        path: path.to_path_buf(),
        reason: format!("cannot be sent under this name: {e}"),
    })
}

/// Builds a [`Plan`] one entry at a time.
#[derive(Default)]
struct Planner {
    plan: Plan,
    /// Files with more than one name, by (device, inode): their index.
    inodes: std::collections::HashMap<(u64, u64), usize>,
}

impl Planner {
    /// Adds `path` (whose metadata is `meta`) under `name`, and for a
    /// directory everything below it.
    fn entry(
        &mut self,
        path: &Path,
        name: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), NetError> {
        let kind = meta.file_type();
        if kind.is_dir() {
            // The top of `send .` has no name: its own metadata stays.
            if !name.as_os_str().is_empty() {
                self.plan.dirs.push(PlannedDir {
                    name: rel_name(path, name)?,
                    mode: meta.mode() & 0o7777,
                    mtime: entry_time(meta),
                });
            }
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| input_error(path, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| input_error(path, e))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let child_path = entry.path();
                let child_meta = std::fs::symlink_metadata(&child_path)
                    .map_err(|e| input_error(&child_path, e))?;
                self.entry(&child_path, &name.join(entry.file_name()), &child_meta)?;
            }
        } else if kind.is_file() {
            let planned = PlannedFile {
                path: path.to_path_buf(),
                name: rel_name(path, name)?,
                meta: FileMeta {
                    size: meta.len(),
                    mtime_seconds: meta.mtime(),
                    mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
                    mode: meta.mode() & 0o7777,
                },
            };
            if meta.nlink() > 1 {
                let next = self.plan.files.len();
                let first = *self.inodes.entry((meta.dev(), meta.ino())).or_insert(next);
                if first != next {
                    self.plan.links.push(PlannedLink {
                        name: planned.name,
                        file: first,
                    });
                    return Ok(());
                }
            }
            self.plan.files.push(planned);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| input_error(path, e))?;
            let target = target.into_os_string().into_vec();
            if target.is_empty() || target.len() >= MAX_NAME_LEN {
                self.plan.skipped.push(Skipped {
                    path: path.to_path_buf(),
                    reason: "symbolic link with a target too long to send".into(),
                });
                return Ok(());
            }
            self.plan.symlinks.push(PlannedSymlink {
                name: rel_name(path, name)?,
                target,
                mtime: entry_time(meta),
            });
        } else {
            self.plan.skipped.push(Skipped {
                path: path.to_path_buf(),
                reason: "not a regular file, directory or symbolic link".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(names: impl Iterator<Item = &'a RelName>) -> Vec<String> {
        names.map(RelName::display).collect()
    }

    #[test]
    fn a_tree_is_planned_like_rsync_a() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("t");
        std::fs::create_dir_all(top.join("d/empty")).unwrap();
        std::fs::write(top.join("a"), b"one").unwrap();
        std::fs::hard_link(top.join("a"), top.join("d/b")).unwrap();
        std::os::unix::fs::symlink("../a", top.join("d/up")).unwrap();
        std::os::unix::fs::symlink("d", top.join("to-dir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let plan = plan_tree(std::slice::from_ref(&top)).unwrap();
        assert_eq!(names(plan.files.iter().map(|f| &f.name)), ["t/a"]);
        assert_eq!(names(plan.links.iter().map(|l| &l.name)), ["t/d/b"]);
        assert_eq!(plan.links[0].file, 0);
        assert_eq!(
            names(plan.symlinks.iter().map(|l| &l.name)),
            ["t/d/up", "t/to-dir"]
        );
        assert_eq!(plan.symlinks[0].target, b"../a");
        assert_eq!(
            names(plan.dirs.iter().map(|d| &d.name)),
            ["t", "t/d", "t/d/empty"]
        );
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.skipped[0].path, top.join("fifo"));
        assert_eq!(plan.bytes(), 3);
        // The same tree named twice: every name twice, refused.
        let err = plan_tree(&[top.clone(), top]).unwrap_err();
        assert!(
            err.to_string().contains("two entries would arrive"),
            "{err}"
        );
    }
}
