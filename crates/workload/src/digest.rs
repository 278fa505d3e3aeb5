//! One digest for a whole tree, so that "seed S" can be checked to mean the
//! same bytes everywhere.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// A BLAKE3 digest (hex) of every regular file under `root`: for each file
/// in sorted order of its relative path, the path (lossy UTF-8) and then the
/// bytes, each preceded by its length as a little-endian u64.
///
/// Two trees have the same digest exactly when they hold the same files
/// with the same bytes; folders and modes are not part of it. The tests pin
/// the digests of a few seeds with it.
///
/// # Errors
/// Any error reading the tree.
pub fn tree_digest(root: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hasher = blake3::Hasher::new();
    for path in files {
        let name = relative(root, &path).to_string_lossy().into_owned();
        let file = File::open(&path)?;
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&file.metadata()?.len().to_le_bytes());
        hasher.update_reader(file)?;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_owned()
}
