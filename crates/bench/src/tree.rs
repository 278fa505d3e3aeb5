//! Fingerprints of directory trees, to check that a decrypted tree is the
//! tree that was encrypted.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{io_error, BenchError};

/// Bytes read at a time while hashing.
const READ_SIZE: usize = 1 << 20;

/// What is compared of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FilePrint {
    /// The BLAKE3 hash of its bytes.
    hash: blake3::Hash,
    /// Its length in bytes.
    len: u64,
    /// Its permission bits (`mode & 0o7777`).
    mode: u32,
}

/// Every regular file of a tree, by path relative to the root, with its
/// hash, length and mode. Folders count only through the files in them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreePrint {
    files: BTreeMap<PathBuf, FilePrint>,
}

impl TreePrint {
    /// Walks and hashes the tree under `root`.
    ///
    /// # Errors
    /// [`BenchError::Io`] naming the entry that cannot be read.
    pub fn of(root: &Path) -> Result<TreePrint, BenchError> {
        let mut print = TreePrint::default();
        let mut buf = vec![0u8; READ_SIZE];
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).map_err(io_error("read folder", &dir))? {
                let entry = entry.map_err(io_error("read folder", &dir))?;
                let path = entry.path();
                let meta = fs::symlink_metadata(&path).map_err(io_error("inspect", &path))?;
                if meta.is_dir() {
                    pending.push(path);
                } else if meta.is_file() {
                    let relative = path
                        .strip_prefix(root)
                        .expect("a walked path is under its root")
                        .to_owned();
                    let file = FilePrint {
                        hash: hash_file(&path, &mut buf)?,
                        len: meta.len(),
                        mode: meta.permissions().mode() & 0o7777,
                    };
                    print.files.insert(relative, file);
                }
            }
        }
        Ok(print)
    }

    /// Number of files.
    pub fn files(&self) -> u64 {
        self.files.len() as u64
    }

    /// Bytes of all files together.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.len).sum()
    }

    /// `Ok` when `other` has the same files, bytes and modes; else the first
    /// difference, in words.
    ///
    /// # Errors
    /// A description of the first difference found.
    pub fn compare(&self, other: &TreePrint) -> Result<(), String> {
        for (path, expected) in &self.files {
            let Some(actual) = other.files.get(path) else {
                return Err(format!("{} is missing", path.display()));
            };
            if actual.len != expected.len || actual.hash != expected.hash {
                return Err(format!("{} has different bytes", path.display()));
            }
            if actual.mode != expected.mode {
                return Err(format!(
                    "{} has mode {:o} instead of {:o}",
                    path.display(),
                    actual.mode,
                    expected.mode
                ));
            }
        }
        match other.files.keys().find(|p| !self.files.contains_key(*p)) {
            Some(extra) => Err(format!("{} should not be there", extra.display())),
            None => Ok(()),
        }
    }
}

fn hash_file(path: &Path, buf: &mut [u8]) -> Result<blake3::Hash, BenchError> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mut hasher = blake3::Hasher::new();
    loop {
        let n = file.read(buf).map_err(io_error("read", path))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8], mode: u32) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, bytes).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn equal_trees_compare_equal_and_differences_are_named() {
        let a = tempfile::tempdir().expect("temp dir");
        let b = tempfile::tempdir().expect("temp dir");
        for root in [a.path(), b.path()] {
            write(root, "x.bin", b"hello", 0o644);
            write(root, "d/y.bin", b"world", 0o600);
        }
        let print_a = TreePrint::of(a.path()).expect("readable");
        assert_eq!((print_a.files(), print_a.bytes()), (2, 10));
        assert_eq!(
            print_a.compare(&TreePrint::of(b.path()).expect("readable")),
            Ok(())
        );

        write(b.path(), "d/y.bin", b"World", 0o600);
        let err = print_a.compare(&TreePrint::of(b.path()).expect("readable"));
        assert_eq!(err, Err("d/y.bin has different bytes".to_owned()));

        write(b.path(), "d/y.bin", b"world", 0o640);
        let err = print_a.compare(&TreePrint::of(b.path()).expect("readable"));
        assert_eq!(err, Err("d/y.bin has mode 640 instead of 600".to_owned()));

        write(b.path(), "d/y.bin", b"world", 0o600);
        write(b.path(), "z.bin", b"", 0o600);
        let err = print_a.compare(&TreePrint::of(b.path()).expect("readable"));
        assert_eq!(err, Err("z.bin should not be there".to_owned()));

        fs::remove_file(b.path().join("x.bin")).expect("rm");
        let err = print_a.compare(&TreePrint::of(b.path()).expect("readable"));
        assert_eq!(err, Err("x.bin is missing".to_owned()));
    }
}
