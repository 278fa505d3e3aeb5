//! The registry caches: where a store's registry lives on this machine.
//!
//! A store keeps everything that matters in its own objects (config,
//! packs, manifests, leases); its registry, which names every file, is a
//! cache in a private directory of the user who opens it, never in the
//! store. ROOT is the caller's
//! [`OpenOptions::cache_dir`](crate::OpenOptions::cache_dir) (usually
//! [`default_root`]):
//!
//! - a local store's cache is `ROOT/stores/ID/`, ID being the store's id
//!   from its `config` (random, fixed at `init`; see
//!   `cryptstream_store::config::LockedConfig::store_id`), so it does not
//!   depend on the path the store is reached by;
//! - an S3 store's is `ROOT/s3/BUCKET/HASH/`, HASH the first 16 hex digits
//!   of the BLAKE3 of the location (`s3://BUCKET/PREFIX`), since the
//!   server's write mode below is a property of the location.
//!
//! Each holds:
//!
//! - `registry.sqlite` (and SQLite's `-wal`/`-shm`): the registry, 0600,
//!   never opened through a symbolic link (`Registry::open`);
//! - `registry-filled`: present once the registry holds everything in the
//!   store (after `init` or a complete reindex). Without it (another user
//!   or machine, a deleted cache, an interrupted first fill) the registry
//!   is filled from the store's objects when the store is opened;
//! - on S3, `write-mode`: how the server creates objects once
//!   (`conditional` or `unique-names`), probed at `init`, or on first use
//!   when missing.
//!
//! Every directory made for a cache is private (0700), and a cache
//! directory that is a symbolic link is refused.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryptstream_s3::{S3Backend, S3Client, S3Location, WriteMode};
use cryptstream_store::{Registry, StoreError, PRIVATE_DIR_MODE, REGISTRY_FILE};

use crate::LocationError;

/// The file that records the write mode.
pub const WRITE_MODE_FILE: &str = "write-mode";
/// The file whose presence says the registry holds what the bucket holds.
pub const FILLED_FILE: &str = "registry-filled";
/// Where a registry moved out of a store directory is copied before it
/// takes its place.
const MOVING_FILE: &str = "registry.sqlite.moving";
/// Hex digits of the location's hash in the cache directory's name.
const HASH_DIGITS: usize = 16;

/// The usual cache root: `$CRYPTSTREAM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/cryptstream`, else `$HOME/.cache/cryptstream`; `None`
/// when none is set. `var` looks a variable up (the binary passes
/// `std::env::var_os`), so this crate reads no environment itself.
pub fn default_root(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    var("CRYPTSTREAM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("cryptstream")))
        .or_else(|| var("HOME").map(|d| PathBuf::from(d).join(".cache/cryptstream")))
}

/// The cache directory of `location` below `root`.
pub fn dir_for(root: &Path, location: &S3Location) -> PathBuf {
    let hash = blake3::hash(location.to_string().as_bytes()).to_hex();
    root.join("s3")
        .join(&location.bucket)
        .join(&hash.as_str()[..HASH_DIGITS])
}

/// The cache directory of the local store whose id is `id` below `root`
/// (`id` is 32 lowercase hex digits, checked when the config is parsed).
pub fn dir_for_store(root: &Path, id: &str) -> PathBuf {
    root.join("stores").join(id)
}

/// The cache directory of a remote store (`cst://HOST:PORT`) below `root`.
pub fn dir_for_remote(root: &Path, location: &cryptstream_remote::RemoteLocation) -> PathBuf {
    let hash = blake3::hash(location.to_string().as_bytes()).to_hex();
    root.join("cst").join(&hash.as_str()[..HASH_DIGITS])
}

/// One store's cache directory, created.
pub(crate) struct RegistryCache {
    dir: PathBuf,
}

impl RegistryCache {
    /// The cache of the S3 store at `location` below `root`.
    pub(crate) fn for_s3(
        root: &Path,
        location: &S3Location,
    ) -> Result<RegistryCache, LocationError> {
        RegistryCache::create(dir_for(root, location))
    }

    /// The cache of the remote store at `location` below `root`.
    pub(crate) fn for_remote(
        root: &Path,
        location: &cryptstream_remote::RemoteLocation,
    ) -> Result<RegistryCache, LocationError> {
        RegistryCache::create(dir_for_remote(root, location))
    }

    /// The cache of the local store whose id is `id` below `root`.
    pub(crate) fn for_store(root: &Path, id: &str) -> Result<RegistryCache, LocationError> {
        RegistryCache::create(dir_for_store(root, id))
    }

    /// Creates (0700) the cache directory `dir`, or makes an existing one
    /// private again; a symbolic link there is refused.
    fn create(dir: PathBuf) -> Result<RegistryCache, LocationError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(&dir)
            .map_err(|source| LocationError::Cache {
                path: dir.clone(),
                what: "cannot create",
                source,
            })?;
        let meta = std::fs::symlink_metadata(&dir).map_err(|source| LocationError::Cache {
            path: dir.clone(),
            what: "cannot read",
            source,
        })?;
        if !meta.is_dir() {
            return Err(LocationError::Store(StoreError::Refused {
                path: dir,
                why: "is not a directory (a symbolic link?); a registry cache is never \
                      reached through one"
                    .into(),
            }));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE)).map_err(
            |source| LocationError::Cache {
                path: dir.clone(),
                what: "cannot set its mode",
                source,
            },
        )?;
        Ok(RegistryCache { dir })
    }

    /// Moves the registry a local store kept in its own directory before
    /// registries left it (`STORE/registry.sqlite`) into this cache, then
    /// deletes it and its `-wal`/`-shm` from the store. The registry is
    /// copied in one consistent read (SQLite's `VACUUM INTO`) and counts
    /// as filled; one that cannot be read (damaged, another user's) is
    /// not copied, and this cache is then filled from the store's objects
    /// like a new one. An existing filled cache is kept as it is. Nothing
    /// in the store is followed through a symbolic link.
    ///
    /// # Errors
    /// The old registry cannot be removed from the store (it would keep
    /// every name in clear there; a read-only file system is let be), or
    /// this cache cannot be written.
    pub(crate) fn adopt_registry_in(&self, store_dir: &Path) -> Result<(), LocationError> {
        let old = store_dir.join(REGISTRY_FILE);
        let present = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        let side = |suffix: &str| {
            let mut name = old.clone().into_os_string();
            name.push(suffix);
            PathBuf::from(name)
        };
        if !["", "-wal", "-shm"].iter().any(|s| present(&side(s))) {
            return Ok(());
        }
        if !self.is_filled() {
            self.remove_registry();
            let moving = self.dir.join(MOVING_FILE);
            let _ = std::fs::remove_file(&moving);
            if Registry::copy_into(&old, &moving).is_ok()
                && std::fs::rename(&moving, self.registry()).is_ok()
            {
                self.mark_filled()?;
            } else {
                let _ = std::fs::remove_file(&moving);
                self.remove_registry();
            }
        }
        for suffix in ["", "-wal", "-shm"] {
            let file = side(suffix);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // A store on read-only media stays readable: nothing
                // written through this mount can change what it holds.
                Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {}
                Err(source) => {
                    return Err(LocationError::Cache {
                        path: file,
                        what: "cannot remove the registry a store kept in its directory \
                               before registries moved to the cache",
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The registry file.
    pub(crate) fn registry(&self) -> PathBuf {
        self.dir.join(REGISTRY_FILE)
    }

    /// Removes the registry and its WAL files (the cache of an earlier
    /// store at the same location). Missing files are no error.
    pub(crate) fn remove_registry(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.registry().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }

    /// The write mode recorded here, if any (an unknown text counts as
    /// none: it is probed again).
    pub(crate) fn recorded_write_mode(&self) -> Option<WriteMode> {
        match std::fs::read_to_string(self.dir.join(WRITE_MODE_FILE))
            .ok()?
            .trim()
        {
            "conditional" => Some(WriteMode::Conditional),
            "unique-names" => Some(WriteMode::UniqueNames),
            _ => None,
        }
    }

    /// Forgets the recorded write mode, so that the next
    /// [`RegistryCache::write_mode`] probes.
    pub(crate) fn forget_write_mode(&self) {
        let _ = std::fs::remove_file(self.dir.join(WRITE_MODE_FILE));
    }

    /// Records `mode`.
    pub(crate) fn record_write_mode(&self, mode: WriteMode) -> Result<(), LocationError> {
        let text = match mode {
            WriteMode::Conditional => "conditional\n",
            WriteMode::UniqueNames => "unique-names\n",
        };
        self.write(WRITE_MODE_FILE, text.as_bytes())
    }

    /// The recorded write mode, or the server probed now (and the answer
    /// recorded).
    pub(crate) fn write_mode(&self, client: &S3Client) -> Result<WriteMode, LocationError> {
        if let Some(mode) = self.recorded_write_mode() {
            return Ok(mode);
        }
        let mode = S3Backend::probe(client)?;
        self.record_write_mode(mode)?;
        Ok(mode)
    }

    /// Whether the registry holds what the bucket holds.
    pub(crate) fn is_filled(&self) -> bool {
        self.dir.join(FILLED_FILE).exists()
    }

    /// Records that the registry holds what the bucket holds.
    pub(crate) fn mark_filled(&self) -> Result<(), LocationError> {
        self.write(FILLED_FILE, b"")
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), LocationError> {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| LocationError::Cache {
            path,
            what: "cannot write",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn location(text: &str) -> S3Location {
        S3Location::parse(text).unwrap()
    }

    #[test]
    fn the_root_comes_from_the_first_variable_set() {
        fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |name: &str| {
                set.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        }
        let all = [
            ("CRYPTSTREAM_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(default_root(vars(&all)), Some(PathBuf::from("/c")));
        assert_eq!(
            default_root(vars(&all[1..])),
            Some(PathBuf::from("/x/cryptstream"))
        );
        assert_eq!(
            default_root(vars(&all[2..])),
            Some(PathBuf::from("/h/.cache/cryptstream"))
        );
        assert_eq!(default_root(vars(&[])), None);
    }

    #[test]
    fn each_location_has_its_own_private_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let a = dir_for(tmp.path(), &location("s3://bucket/a"));
        let b = dir_for(tmp.path(), &location("s3://bucket/b"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(tmp.path().join("s3/bucket").as_path()));
        assert_eq!(a.file_name().unwrap().len(), HASH_DIGITS);
        // Trailing slashes name the same location, so the same cache.
        assert_eq!(a, dir_for(tmp.path(), &location("s3://bucket/a/")));
        let cache = RegistryCache::for_s3(tmp.path(), &location("s3://bucket/a")).unwrap();
        for dir in [a.as_path(), a.parent().unwrap(), &tmp.path().join("s3")] {
            let mode = std::fs::metadata(dir).unwrap().mode() & 0o777;
            assert_eq!(mode, PRIVATE_DIR_MODE, "{}", dir.display());
        }
        assert_eq!(cache.registry(), a.join(REGISTRY_FILE));
        // An existing cache left readable by others is made private again.
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        RegistryCache::for_s3(tmp.path(), &location("s3://bucket/a")).unwrap();
        assert_eq!(
            std::fs::metadata(&a).unwrap().mode() & 0o777,
            PRIVATE_DIR_MODE
        );
    }

    #[test]
    fn the_write_mode_and_the_fill_are_recorded_and_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = RegistryCache::for_s3(tmp.path(), &location("s3://bucket/p")).unwrap();
        assert_eq!(cache.recorded_write_mode(), None);
        for mode in [WriteMode::UniqueNames, WriteMode::Conditional] {
            cache.record_write_mode(mode).unwrap();
            assert_eq!(cache.recorded_write_mode(), Some(mode));
        }
        // Something else in the file: probed again, not guessed.
        std::fs::write(cache.dir.join(WRITE_MODE_FILE), "maybe\n").unwrap();
        assert_eq!(cache.recorded_write_mode(), None);
        cache.record_write_mode(WriteMode::Conditional).unwrap();
        cache.forget_write_mode();
        assert_eq!(cache.recorded_write_mode(), None);
        assert!(!cache.is_filled());
        cache.mark_filled().unwrap();
        assert!(cache.is_filled());
    }

    #[test]
    fn removing_the_registry_removes_its_wal_files_too() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = RegistryCache::for_s3(tmp.path(), &location("s3://bucket/p")).unwrap();
        let names = ["", "-wal", "-shm"].map(|s| format!("{REGISTRY_FILE}{s}"));
        for name in &names {
            std::fs::write(cache.dir.join(name), b"x").unwrap();
        }
        cache.remove_registry();
        for name in &names {
            assert!(!cache.dir.join(name).exists(), "{name}");
        }
        cache.remove_registry();
    }

    #[test]
    fn a_cache_that_cannot_be_created_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let err = RegistryCache::for_s3(&file, &location("s3://bucket/p"))
            .err()
            .expect("a file as root");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&file.display().to_string()) && shown.contains("cannot create"),
            "{shown}"
        );
    }
}
