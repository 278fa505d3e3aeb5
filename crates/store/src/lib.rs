//! The chunked, encrypted, deduplicating file store.
//!
//! A [`Store`] is a [`Backend`] (where objects live: [`LocalDir`] here, an
//! S3-compatible bucket next) plus a [`Registry`] (a SQLite index of
//! packs, chunks and files) plus the [`StoreKeys`] unwrapped from the
//! store's `config` object.
//!
//! `put` walks files and trees on the caller's thread, cuts each file into
//! content-defined chunks (FastCDC 2020 with a keyed gear table), and
//! submits every chunk to the worker [`Pool`](cryptstream_pool::Pool)
//! through an ordered pipeline whose byte budget is `--max-memory`:
//! workers compute the chunk id (keyed BLAKE3), compress (zstd, kept only
//! when smaller) and seal the chunk ([`blob`]); the results come back in
//! order to the caller's thread, which appends new chunks to a pack
//! ([`pack::PackWriter`]), records chunk references, and at every pack
//! commit writes one manifest ([`manifest`]) for the files whose data just
//! became durable and marks them complete. Data is durable before the
//! manifest, the manifest before the registry says "complete".
//!
//! `get` reads the chunk list of each selected entry from the registry,
//! groups neighbouring chunks of a pack into blocks read in one ranged
//! read each by reader threads of their own (module `blocks`, also used by
//! `verify --read-data`), and lets workers split each block, open,
//! decompress and check every chunk (its id is recomputed) and write it at
//! its offset into an unnamed temp file
//! ([`cryptstream_output::AtomicFile`]), and links the file under its name
//! only when the whole-file authenticator ([`manifest::FileMac`]) matches.
//!
//! Every put records one snapshot ([`snapshot`]): an encrypted object
//! naming, in walk order, each entry's file record by uid and
//! authenticator, written as the put goes and committed last. `get` of a
//! snapshot streams it and checks every registry row against it.
//!
//! Manifests, snapshots and pack indexes are zstd-compressed inside
//! their seal; [`compressed`] holds the streaming writer and the bounded
//! reader of the manifest and snapshot bodies.
//!
//! `forget`, `migrate`, `gc`, `verify`, `stat` and `reindex` live in
//! [`maintain`]; which snapshots a `--keep-*` policy keeps, in
//! [`retention`].
//! The byte formats and the concurrency argument are in docs/STORE.md.

#![deny(missing_docs)]

pub mod backend;
pub mod blob;
mod blocks;
pub mod compressed;
pub mod config;
mod get;
pub mod hooks;
pub mod keys;
pub mod maintain;
pub mod manifest;
pub mod pack;
mod put;
pub mod registry;
pub mod retention;
pub mod snapshot;

use std::path::{Path, PathBuf};

pub use backend::{
    check_object_name, Backend, BackendError, LocalDir, ObjectMeta, ObjectWriter, SpanRead,
};
pub use config::{ChunkerParams, Settings};
/// The progress trait of every operation, from the pool crate.
pub use cryptstream_pool::{NoProgress, Progress};
pub use get::{GetOptions, GetReport, Selector};
pub use keys::StoreKeys;
pub use manifest::{format_uid, FileRecord, Kind};
pub use put::{
    PutOptions, PutOutcome, PutReport, PUT_QUEUED_TASKS_PER_WORKER, PUT_WORKER_NICE_STEPS,
};
pub use registry::{FileRow, Registry, SnapshotRow, Totals};
pub use snapshot::{SnapshotEntry, SnapshotMeta};

use cryptstream_format::{FormatError, Keyring, MasterKey};

/// Name of the registry file in a registry cache directory (and, before
/// registries left the store, in a local store directory).
pub const REGISTRY_FILE: &str = "registry.sqlite";
/// Mode of the directories a store creates (a new local store directory,
/// the registry caches).
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Default `--max-memory`: 256 MiB.
pub const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A backend operation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The registry failed.
    #[error("registry {}: {source}", path.display())]
    Registry {
        /// The database.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// Keys, headers or containers.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The config is missing, damaged or of another version.
    #[error("store config: {0}")]
    Config(String),
    /// Something stored does not authenticate or parse.
    #[error("{0}")]
    Damaged(String),
    /// A named file or id is not in the store.
    #[error("{0}: no such file or id in the store")]
    NotFound(String),
    /// Another process holds what this one needs.
    #[error("{0}")]
    Busy(String),
    /// Local file I/O.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file the store will not use as it is (a symbolic link where a
    /// private file belongs, an object larger than its kind can be).
    #[error("{}: {why}", path.display())]
    Refused {
        /// The file or object.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A request the store refuses before doing anything (one line saying
    /// why).
    #[error("{0}")]
    Usage(String),
    /// Stopped by the user.
    #[error("interrupted")]
    Cancelled,
}

/// A store whose key is still wrapped.
pub struct LockedStore {
    backend: Box<dyn Backend>,
    config: config::LockedConfig,
}

impl LockedStore {
    /// The wrapped key's header (which key opens it).
    ///
    /// # Errors
    /// A damaged config.
    pub fn key_header(&self) -> Result<cryptstream_format::Header, StoreError> {
        self.config.key_header()
    }

    /// The store's id, which names its registry cache
    /// ([`config::LockedConfig::store_id`]).
    pub fn id(&self) -> &str {
        self.config.store_id()
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Opens the store with `keyring`, with its registry (a cache the
    /// caller places, see `cryptstream-location`) at `registry`.
    ///
    /// # Errors
    /// Wrong key, damaged config, registry failures.
    pub fn unlock(self, keyring: &Keyring, registry: &Path) -> Result<Store, StoreError> {
        let (keys, settings) = self.config.unlock(keyring)?;
        let registry = Registry::open(registry)?;
        Ok(Store {
            keeps_snapshots: self.config.keeps_snapshots(),
            backend: self.backend,
            registry,
            keys,
            settings,
        })
    }
}

/// An open store.
pub struct Store {
    backend: Box<dyn Backend>,
    registry: Registry,
    keys: StoreKeys,
    settings: Settings,
    /// [`config::LockedConfig::keeps_snapshots`]: never a store from
    /// before snapshots.
    keeps_snapshots: bool,
}

impl Store {
    /// Creates a store in directory `dir` (created if missing; it must not
    /// hold a store already), with a new random master key wrapped under
    /// `user_key`. Returns the new store's id.
    ///
    /// # Errors
    /// An existing store, bad settings, I/O failures.
    pub fn init_local(
        dir: &Path,
        user_key: &MasterKey,
        settings: &Settings,
    ) -> Result<String, StoreError> {
        // A new store directory is private: the objects are sealed, but
        // their number, sizes and times are nobody else's business.
        std::os::unix::fs::DirBuilderExt::mode(
            std::fs::DirBuilder::new().recursive(true),
            PRIVATE_DIR_MODE,
        )
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let backend = LocalDir::open(dir)?;
        Store::init(&backend, user_key, settings)
    }

    /// Creates a store on any backend (its config object only: the
    /// registry is a cache the caller places, created empty when the store
    /// is first unlocked). Returns the new store's id.
    ///
    /// # Errors
    /// An existing store, bad settings, backend failures.
    pub fn init(
        backend: &dyn Backend,
        user_key: &MasterKey,
        settings: &Settings,
    ) -> Result<String, StoreError> {
        let config = config::new_config(user_key, settings)?;
        let id = config::LockedConfig::parse(&config)?.store_id().to_owned();
        match backend.put_if_absent(config::CONFIG_OBJECT, &config) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists(_)) => {
                return Err(StoreError::Config(format!(
                    "{}: a store already exists here",
                    backend.describe()
                )))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(id)
    }

    /// Opens the local store in `dir` (not yet unlocked).
    ///
    /// # Errors
    /// No store there, a damaged config.
    pub fn open_local(dir: &Path) -> Result<LockedStore, StoreError> {
        let backend = LocalDir::open(dir).map_err(|_| {
            StoreError::Config(format!(
                "{}: no store here (run `store init`)",
                dir.display()
            ))
        })?;
        Store::open(Box::new(backend))
    }

    /// Opens a store on any backend: reads its config (at most
    /// [`config::MAX_CONFIG_LEN`] bytes, the size checked first).
    ///
    /// # Errors
    /// No config, a damaged config.
    pub fn open(backend: Box<dyn Backend>) -> Result<LockedStore, StoreError> {
        let bytes = match backend.get(config::CONFIG_OBJECT, config::MAX_CONFIG_LEN as u64) {
            Ok(bytes) => bytes,
            Err(BackendError::NotFound(_)) => {
                return Err(StoreError::Config(format!(
                    "{}: no store here (run `store init`)",
                    backend.describe()
                )))
            }
            Err(BackendError::TooLarge { size, limit, .. }) => {
                return Err(StoreError::Refused {
                    path: PathBuf::from(format!(
                        "{}/{}",
                        backend.describe().trim_end_matches('/'),
                        config::CONFIG_OBJECT
                    )),
                    why: format!(
                        "{size} bytes, more than the {limit} a store config can have; \
                         not read (not a store config)"
                    ),
                })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(LockedStore {
            config: config::LockedConfig::parse(&bytes)?,
            backend,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Opens the registry file again: a gc of this registry may have
    /// replaced it (a refresh) since this store was opened, and a
    /// connection to the file it replaced would write where no other
    /// command reads (a put that waited for a gc calls this).
    ///
    /// # Errors
    /// Registry failures.
    pub fn reopen_registry(&mut self) -> Result<(), StoreError> {
        let path = self.registry.path().to_path_buf();
        self.registry = Registry::open(&path)?;
        Ok(())
    }

    /// The settings fixed at init.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The keys.
    pub fn keys(&self) -> &StoreKeys {
        &self.keys
    }
}

/// Parses a uid (16 hex digits).
pub fn parse_uid(text: &str) -> Option<u64> {
    (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}
