//! Where a store lives, and opening it there.
//!
//! A [`StoreLocation`] is what `--store` names: a local directory,
//! `s3://BUCKET/PREFIX` on S3-compatible object storage, or
//! `cst://HOST:PORT` on a `cryptstream serve --store` server. [`StoreLocation::open`]
//! turns it, with explicit [`OpenOptions`] (requests in flight, where
//! registry caches live), into an [`OpenedStore`]: the store behind its
//! [`Backend`] (`LocalDir`, `S3Backend` or `RemoteBackend`), the
//! place of its registry, and the storage its leases are written to. Its
//! key is still wrapped; [`OpenedStore::unlock`] opens it with a keyring.
//! Every kind of location then works the same way:
//!
//! - the registry is a cache in a private directory of this user (see
//!   [`cache`]), never in the store: nothing in a store directory, a
//!   bucket or a store server names a file. A new cache is filled from the
//!   store's objects by a reindex the first time the store is opened
//!   ([`OpenedStore::fill_registry`]), so the store alone is enough; a
//!   local store's registry from before (`STORE/registry.sqlite`) is moved
//!   into the cache on open.
//! - [`OpenedStore::put_lease`] and [`OpenedStore::gc_gate`]: writers of
//!   one store (two users of a directory, two machines, two clients of a
//!   bucket or of a store server) share no registry, so a gc of one must
//!   never overlap a put of another (module `lease`); a gc runs beside
//!   the puts of its own registry.
//!   [`OpenedStore::check_deletes`] stops what deletes on a remote store
//!   its server keeps append-only.
//!
//! Nothing here is process-global: every client, cache and lease belongs
//! to the [`OpenedStore`] that made it, so one process may open several
//! stores (the store shell opens one per job).
//!
//! The store crate knows nothing of S3 or the network, and the S3 and
//! remote crates only implement the store's `Backend`; this crate sits
//! above them. The remote store (`cryptstream_remote`) is one more arm of
//! [`StoreLocation`] and of [`StoreLocation::open`], with the store crate
//! unchanged.

#![deny(missing_docs)]

pub mod cache;
mod lease;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptstream_format::{FormatError, Header, Keyring, MasterKey};
use cryptstream_pool::Cancel;
use cryptstream_s3::{Options, S3Backend, S3Client, S3Error, S3Location};
use cryptstream_store::maintain::ReindexReport;
use cryptstream_store::{Backend, LocalDir, LockedStore, Registry, Settings, Store, StoreError};

pub use cryptstream_s3::WriteMode;
pub use lease::{
    CacheBehind, GcGate, HeldLease, LeaseKind, LiveLease, RunningPut, GC_WAIT, LEASE_PREFIX,
};

use cache::RegistryCache;
use cryptstream_remote::{RemoteBackend, RemoteLocation};

/// Requests in flight at once on an S3 store unless told otherwise.
pub const DEFAULT_CONNECTIONS: usize = 8;

/// What can go wrong in finding, creating or opening a store.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The store failed: no store there, a damaged config, a wrong key,
    /// the registry.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The object storage failed, or the `s3://` address is not usable.
    #[error("{0}")]
    S3(#[from] S3Error),
    /// A store needs a cache directory for its registry and none is known.
    #[error("no cache directory: set CRYPTSTREAM_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// A file or directory of a store's registry cache.
    #[error("{}: {what}: {source}", path.display())]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// What could not be done ("cannot create", "cannot write").
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A `cst://` address that cannot be used.
    #[error("{0}")]
    RemoteAddress(#[from] cryptstream_remote::LocationError),
    /// A remote store's server: the token, the trust, the connection.
    #[error("{0}")]
    Net(#[from] cryptstream_net::NetError),
    /// A remote store was named without a token file.
    #[error("{0}: give --token-file FILE (the token of its server)")]
    NoToken(String),
    /// The remote store's server keeps it append-only.
    #[error(
        "{0}: the server keeps this store append-only and deletes nothing; \
         run forget and gc where the store is (store --store DIR on the server), with the key"
    )]
    AppendOnly(String),
    /// The object storage failed.
    #[error("{0}")]
    Backend(#[from] cryptstream_store::BackendError),
    /// A lease's holder note could not be sealed under the store's key.
    #[error("lease holder note: {0}")]
    Seal(#[from] FormatError),
    /// A put waited [`GC_WAIT`] for another writer's gc and gave up.
    #[error(
        "{location}: a gc has held {lease} for over {minutes} minutes; \
         put not started"
    )]
    GcHeld {
        /// The store.
        location: String,
        /// The gc's lease object.
        lease: String,
        /// How long the put waited.
        minutes: u64,
    },
}

/// A parsed `--store`: where a store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory on this machine; the registry is a cache of this user.
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX`; the registry is a cache on this machine.
    S3(S3Location),
    /// `cst://HOST:PORT`, a store served by `cryptstream serve --store`;
    /// the registry is a cache on this machine, as for S3.
    Remote(RemoteLocation),
}

impl StoreLocation {
    /// `s3://BUCKET/PREFIX`, or else a directory.
    ///
    /// # Errors
    /// An `s3://` address with a bad bucket name or prefix.
    pub fn parse(text: &str) -> Result<StoreLocation, LocationError> {
        if S3Location::is_s3(text) {
            return Ok(StoreLocation::S3(S3Location::parse(text)?));
        }
        if RemoteLocation::is_remote(text) {
            return Ok(StoreLocation::Remote(RemoteLocation::parse(text)?));
        }
        Ok(StoreLocation::Local(PathBuf::from(text)))
    }

    /// As [`StoreLocation::parse`], for a command-line argument that may
    /// not be UTF-8 (then it is a directory).
    ///
    /// # Errors
    /// As [`StoreLocation::parse`].
    pub fn from_arg(arg: &Path) -> Result<StoreLocation, LocationError> {
        match arg.to_str() {
            Some(text) => StoreLocation::parse(text),
            None => Ok(StoreLocation::Local(arg.to_path_buf())),
        }
    }

    /// Creates a store here with a new master key wrapped under `key`,
    /// and its (empty, so filled) registry cache. On S3 this probes which
    /// writes the server honours afresh (the server may have changed) and
    /// records the answer in the cache.
    ///
    /// # Errors
    /// A store already here, an unusable cache, the server.
    pub fn init(
        &self,
        options: &OpenOptions,
        key: &MasterKey,
        settings: &Settings,
    ) -> Result<Created, LocationError> {
        let root = options.cache_root()?;
        match self {
            StoreLocation::Local(dir) => {
                let id = Store::init_local(dir, key, settings)?;
                let cache = RegistryCache::for_store(root, &id)?;
                cache.remove_registry();
                Registry::open(&cache.registry())?;
                cache.mark_filled()?;
                Ok(Created { write_mode: None })
            }
            StoreLocation::S3(location) => {
                let cache = RegistryCache::for_s3(root, location)?;
                let client = client(location, options)?;
                cache.forget_write_mode();
                let mode = cache.write_mode(&client)?;
                let backend = S3Backend::new(client, mode);
                Store::init(&backend, key, settings)?;
                // A registry left by an earlier store at this location.
                cache.remove_registry();
                Registry::open(&cache.registry())?;
                cache.mark_filled()?;
                Ok(Created {
                    write_mode: Some(mode),
                })
            }
            StoreLocation::Remote(location) => {
                let cache = RegistryCache::for_remote(root, location)?;
                let backend = remote_backend(location, options)?;
                // A server that hosts no store is named before anything is written.
                backend.append_only()?;
                Store::init(&backend, key, settings)?;
                // A registry left by an earlier store at this location.
                cache.remove_registry();
                Registry::open(&cache.registry())?;
                cache.mark_filled()?;
                Ok(Created { write_mode: None })
            }
        }
    }

    /// Opens the store here (its key still wrapped). Lists nothing: a new
    /// cache is filled later, by [`OpenedStore::fill_registry`]. A local
    /// store's registry still in the store directory is moved into the
    /// cache here.
    ///
    /// # Errors
    /// No store here, a damaged config, an unusable cache, the server.
    pub fn open(&self, options: &OpenOptions) -> Result<OpenedStore<LockedStore>, LocationError> {
        let root = options.cache_root()?;
        let mut append_only = false;
        let mut first_contact = None;
        let (store, cache, leases): (_, _, Arc<dyn Backend>) = match self {
            StoreLocation::Local(dir) => {
                let store = Store::open_local(dir)?;
                let cache = RegistryCache::for_store(root, store.id())?;
                cache.adopt_registry_in(dir)?;
                (
                    store,
                    cache,
                    Arc::new(LocalDir::open(dir).map_err(StoreError::from)?),
                )
            }
            StoreLocation::S3(location) => {
                let cache = RegistryCache::for_s3(root, location)?;
                let client = client(location, options)?;
                let mode = cache.write_mode(&client)?;
                let backend = S3Backend::new(client, mode);
                let leases = Arc::new(S3Backend::sharing(backend.shared_client(), mode));
                (Store::open(Box::new(backend))?, cache, leases)
            }
            StoreLocation::Remote(location) => {
                let cache = RegistryCache::for_remote(root, location)?;
                let backend = remote_backend(location, options)?;
                append_only = backend.append_only()?;
                first_contact = first_contact_note(location, options, &backend);
                let store = Store::open(Box::new(backend.clone()))?;
                (store, cache, Arc::new(backend))
            }
        };
        let fill = !cache.is_filled();
        Ok(OpenedStore {
            location: self.clone(),
            store,
            site: Site {
                leases,
                cache,
                fill,
                append_only,
                first_contact,
            },
        })
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Local(dir) => write!(f, "{}", dir.display()),
            StoreLocation::S3(location) => write!(f, "{location}"),
            StoreLocation::Remote(location) => write!(f, "{location}"),
        }
    }
}

/// How stores are opened; built once by the caller and passed explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Requests in flight at once on an S3 store (at least 1).
    pub connections: usize,
    /// The directory under which stores keep their registry caches
    /// (`stores/ID/` and `s3/BUCKET/HASH/` below it, see [`cache`]);
    /// `None`: none is known, and no store can be opened.
    /// [`cache::default_root`] gives the usual one.
    pub cache_dir: Option<PathBuf>,
    /// How a remote store's server is reached (`cst://`); `None`: no
    /// token was given, and a remote store cannot be opened.
    pub remote: Option<RemoteOptions>,
}

/// The token and trust of a remote store's server, as `send` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The server's access token file.
    pub token_file: PathBuf,
    /// `--server-fingerprint`, or else the known-hosts file (trust on
    /// first use).
    pub trust: RemoteTrust,
    /// Seconds to wait for the server to connect or answer.
    pub timeout_secs: u64,
}

/// How the server's certificate is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteTrust {
    /// Exactly this fingerprint (64 hex digits).
    Fingerprint(String),
    /// The fingerprint recorded in this known-hosts file, or the first
    /// seen, then recorded.
    KnownHosts(PathBuf),
}

impl OpenOptions {
    fn cache_root(&self) -> Result<&Path, LocationError> {
        self.cache_dir.as_deref().ok_or(LocationError::NoCacheDir)
    }
}

/// What `init` made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    /// On S3: how objects are created once, as the probe found.
    pub write_mode: Option<WriteMode>,
}

/// Where an open store keeps what is not in its objects.
struct Site {
    /// The storage leases are written to: the store's own (a second
    /// handle, since a lease's renewal thread outlives any borrow).
    leases: Arc<dyn Backend>,
    /// The registry cache.
    cache: RegistryCache,
    /// The cache is new and must be filled from the store's objects.
    fill: bool,
    /// A store server that refuses deletes.
    append_only: bool,
    /// What to tell the user when a store server was trusted on first use.
    first_contact: Option<String>,
}

/// A store opened at its location: the store (`LockedStore` until
/// unlocked, then `Store`) and what its location adds.
pub struct OpenedStore<S = Store> {
    location: StoreLocation,
    store: S,
    site: Site,
}

impl<S> OpenedStore<S> {
    /// Where the store lives.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// Before anything that deletes objects (`delete`, `forget`, `gc`):
    /// refused at once on a remote store its server keeps append-only.
    ///
    /// # Errors
    /// [`LocationError::AppendOnly`].
    pub fn check_deletes(&self) -> Result<(), LocationError> {
        if self.site.append_only {
            return Err(LocationError::AppendOnly(self.location.to_string()));
        }
        Ok(())
    }

    /// For a remote store whose server was trusted on first use by this
    /// open: a line saying so, with the fingerprint and where it is
    /// recorded.
    pub fn first_contact(&self) -> Option<&str> {
        self.site.first_contact.as_deref()
    }
}

/// The line for a server recorded on first use by `backend`, if it was.
fn first_contact_note(
    location: &RemoteLocation,
    options: &OpenOptions,
    backend: &RemoteBackend,
) -> Option<String> {
    let seen = backend.first_contact()?;
    let file = match &options.remote.as_ref()?.trust {
        RemoteTrust::KnownHosts(file) => file.display().to_string(),
        RemoteTrust::Fingerprint(_) => return None,
    };
    Some(format!(
        "first contact with {}: it proved it holds the token; its certificate fingerprint {} is recorded in {file}",
        location.address,
        seen.to_hex()
    ))
}

impl OpenedStore<LockedStore> {
    /// The wrapped key's header (which key opens the store).
    ///
    /// # Errors
    /// A damaged config.
    pub fn key_header(&self) -> Result<Header, LocationError> {
        Ok(self.store.key_header()?)
    }

    /// Unlocks the store with `keyring` (a passphrase key must already be
    /// derived in it).
    ///
    /// # Errors
    /// A wrong key, a damaged config, the registry.
    pub fn unlock(self, keyring: &Keyring) -> Result<OpenedStore<Store>, LocationError> {
        Ok(OpenedStore {
            store: self.store.unlock(keyring, &self.site.cache.registry())?,
            location: self.location,
            site: self.site,
        })
    }
}

impl OpenedStore<Store> {
    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for puts, gets and maintenance.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Fills a new registry cache from the store's objects (a reindex);
    /// `None` when there is nothing to fill. The cache counts
    /// as filled only when every object could be read: with `problems`
    /// in the report it is filled again next time, and the caller must
    /// not use this registry (a gc would reclaim the data of the files
    /// it misses).
    ///
    /// # Errors
    /// The server, the registry, or `cancel` (`StoreError::Cancelled`).
    pub fn fill_registry(
        &mut self,
        cancel: &Cancel,
    ) -> Result<Option<ReindexReport>, LocationError> {
        if !self.site.fill {
            return Ok(None);
        }
        let report = self.store.reindex(&cryptstream_store::NoProgress, cancel)?;
        if report.problems.is_empty() {
            self.site.cache.mark_filled()?;
            self.site.fill = false;
        }
        Ok(Some(report))
    }
}

/// The backend of the remote store at `location` under `options`.
fn remote_backend(
    location: &RemoteLocation,
    options: &OpenOptions,
) -> Result<RemoteBackend, LocationError> {
    let remote = options
        .remote
        .as_ref()
        .ok_or_else(|| LocationError::NoToken(location.to_string()))?;
    let token = cryptstream_net::Token::read(&remote.token_file)?;
    let trust = match &remote.trust {
        RemoteTrust::Fingerprint(hex) => {
            cryptstream_net::ServerTrust::Pinned(cryptstream_net::Fingerprint::parse(hex)?)
        }
        RemoteTrust::KnownHosts(file) => cryptstream_net::ServerTrust::KnownHosts {
            file: file.clone(),
            host: location.address.clone(),
        },
    };
    let client = cryptstream_net::object_client::ObjectClient::new(
        location.address.clone(),
        token,
        trust,
        std::time::Duration::from_secs(remote.timeout_secs.max(1)),
    )?;
    RemoteBackend::new(location.clone(), client, options.connections.max(1)).map_err(|source| {
        LocationError::Backend(cryptstream_store::BackendError::Io {
            name: location.to_string(),
            source,
        })
    })
}

/// The S3 client for `location` under `options`.
fn client(location: &S3Location, options: &OpenOptions) -> Result<S3Client, LocationError> {
    let options = Options {
        connections: options.connections.max(1),
        ..Options::default()
    };
    Ok(S3Client::new(location.clone(), &options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_address_is_s3_and_anything_else_a_directory() {
        let s3 = StoreLocation::parse("s3://backups/laptop/").unwrap();
        assert_eq!(
            s3,
            StoreLocation::S3(S3Location {
                bucket: "backups".into(),
                prefix: "laptop".into()
            })
        );
        assert_eq!(s3.to_string(), "s3://backups/laptop");
        for dir in ["store", "./s3://x", "/tmp/s3:/x", "S3://backups"] {
            assert_eq!(
                StoreLocation::parse(dir).unwrap(),
                StoreLocation::Local(PathBuf::from(dir)),
                "{dir}"
            );
        }
    }

    #[test]
    fn a_bad_s3_address_is_refused_with_its_reason() {
        for (text, why) in [
            ("s3://B", "bucket names are 3 to 63"),
            ("s3://bucket/a/../b", "plain path segments"),
        ] {
            let err = StoreLocation::parse(text).unwrap_err();
            let shown = err.to_string();
            assert!(shown.starts_with(text) && shown.contains(why), "{shown}");
        }
    }

    #[test]
    fn a_directory_that_is_not_utf8_is_a_local_store() {
        use std::os::unix::ffi::OsStrExt;
        let arg = Path::new(std::ffi::OsStr::from_bytes(b"st\xffore"));
        assert_eq!(
            StoreLocation::from_arg(arg).unwrap(),
            StoreLocation::Local(arg.to_path_buf())
        );
    }

    #[test]
    fn an_s3_store_without_a_cache_directory_is_refused_before_any_request() {
        let options = OpenOptions {
            connections: 1,
            cache_dir: None,
            remote: None,
        };
        let location = StoreLocation::parse("s3://backups/laptop").unwrap();
        let err = location.open(&options).err().expect("no cache: refused");
        assert!(matches!(err, LocationError::NoCacheDir), "{err}");
        assert!(err.to_string().contains("CRYPTSTREAM_CACHE_DIR"));
    }

    fn key() -> MasterKey {
        MasterKey::from_key_bytes([7; 32])
    }

    #[test]
    fn a_local_store_keeps_its_registry_in_the_cache_and_takes_leases_in_the_store() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            connections: 8,
            cache_dir: Some(tmp.path().join("cache")),
            remote: None,
        };
        let dir = tmp.path().join("store");
        let location = StoreLocation::Local(dir.clone());
        let created = location.init(&options, &key(), &Settings::DEFAULT).unwrap();
        assert_eq!(created.write_mode, None);
        let again = location.init(&options, &key(), &Settings::DEFAULT);
        assert!(
            again.unwrap_err().to_string().contains("already exists"),
            "a second init is refused"
        );
        let opened = location.open(&options).unwrap();
        opened.key_header().unwrap();
        let keyring = Keyring::new(vec![key()], None);
        let mut opened = opened.unlock(&keyring).unwrap();
        // init made an empty registry, which holds all a new store holds.
        assert!(opened.fill_registry(&Cancel::new()).unwrap().is_none());
        let registry = opened.store().registry().path().to_path_buf();
        let id = Store::open_local(&dir).unwrap().id().to_owned();
        let cache =
            std::fs::canonicalize(cache::dir_for_store(&tmp.path().join("cache"), &id)).unwrap();
        assert_eq!(registry, cache.join(cryptstream_store::REGISTRY_FILE));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&registry), 0o600);
        assert!(!dir.join(cryptstream_store::REGISTRY_FILE).exists());
        // A put's lease is an object of the store; a gc sees it and skips.
        let mut waited = false;
        let lease = opened.put_lease(&mut |_| waited = true).unwrap();
        assert!(!waited && lease.name().starts_with(LEASE_PREFIX));
        assert!(dir.join(lease.name()).is_file());
        let GcGate::Skip(running) = opened.gc_gate(&Cancel::new()).unwrap() else {
            panic!("a gc went ahead while a put held its lease");
        };
        assert_eq!(running.0.name, lease.name());
        // Registered as a put writer of this registry, the same lease is
        // this registry's own put: a gc runs beside it, without a refresh.
        let mut writers = cryptstream_store::Registry::open(&registry).unwrap();
        let writer = writers
            .register_writer(cryptstream_store::registry::Role::Put)
            .unwrap();
        let GcGate::Beside { lease: gc, puts } = opened.gc_gate(&Cancel::new()).unwrap() else {
            panic!("a gc skipped beside a put of its own registry");
        };
        assert_eq!(puts, 1);
        drop(gc);
        writers.end_writer(writer).unwrap();
        drop(lease);
        let GcGate::Exclusive { lease, refresh } = opened.gc_gate(&Cancel::new()).unwrap() else {
            panic!("no put holds a lease, yet the gc did not get its own");
        };
        assert!(refresh.problems.is_empty());
        assert!(dir.join(lease.name()).is_file());
        drop(lease);
        assert_eq!(opened.store().totals().unwrap().files, 0);
    }

    #[test]
    fn a_local_store_needs_a_cache_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let with = OpenOptions {
            connections: 1,
            cache_dir: Some(tmp.path().join("cache")),
            remote: None,
        };
        let location = StoreLocation::Local(tmp.path().join("store"));
        location.init(&with, &key(), &Settings::DEFAULT).unwrap();
        let without = OpenOptions {
            cache_dir: None,
            ..with
        };
        let err = location.open(&without).err().expect("no cache: refused");
        assert!(matches!(err, LocationError::NoCacheDir), "{err}");
    }

    #[test]
    fn opening_a_directory_without_a_store_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let options = OpenOptions {
            connections: 8,
            cache_dir: Some(tmp.path().join("cache")),
            remote: None,
        };
        let dir = tmp.path().join("nothing");
        let err = StoreLocation::Local(dir.clone())
            .open(&options)
            .err()
            .expect("no store there");
        let shown = err.to_string();
        assert!(
            shown.contains(&dir.display().to_string()) && shown.contains("no store here"),
            "{shown}"
        );
    }
}
