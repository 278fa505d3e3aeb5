//! Where a store lives: a local directory, or `s3://BUCKET/PREFIX` on
//! S3-compatible object storage.
//!
//! A local store keeps its registry beside its data. An S3 store keeps
//! everything that matters in the bucket (config, packs, manifests) and its
//! registry in a local cache directory, one per location:
//! `$CRYPTSTREAM_CACHE_DIR`, else `$XDG_CACHE_HOME/cryptstream`, else
//! `~/.cache/cryptstream`, then `s3/BUCKET/HASH/`. A cache that is new
//! (another machine, a deleted cache) is filled from the bucket by a
//! reindex when the store is opened, so the bucket alone is enough.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use cryptstream_format::MasterKey;
use cryptstream_s3::lease::{held_by_dead_local_process, live_leases, Lease, LeaseKind};
use cryptstream_s3::{Options, S3Backend, S3Client, S3Location, WriteMode};
use cryptstream_store::{blob, Backend, LockedStore, Settings, Store, StoreKeys, REGISTRY_FILE};

use crate::messages;

/// Requests in flight at once on an S3 store (`--connections`).
static CONNECTIONS: AtomicUsize = AtomicUsize::new(8);

/// The client of the S3 store this process opened, for leases.
static OPENED_S3: OnceLock<Arc<S3Client>> = OnceLock::new();

/// Sets `--connections` for every S3 store this process opens.
pub fn set_connections(n: usize) {
    CONNECTIONS.store(n.max(1), Ordering::Relaxed);
}

/// A parsed `--store`.
pub enum StoreLocation {
    Local(PathBuf),
    S3(S3Location),
}

impl StoreLocation {
    /// `s3://...` or a directory.
    pub fn parse(arg: &Path) -> anyhow::Result<Self> {
        match arg.to_str() {
            Some(text) if S3Location::is_s3(text) => {
                Ok(StoreLocation::S3(S3Location::parse(text)?))
            }
            _ => Ok(StoreLocation::Local(arg.to_path_buf())),
        }
    }
}

/// The cache directory of an S3 store (created, mode 0700).
fn cache_dir(location: &S3Location) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("CRYPTSTREAM_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("cryptstream"))
        })
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/cryptstream")))
        .context("no cache directory: set CRYPTSTREAM_CACHE_DIR, XDG_CACHE_HOME or HOME")?;
    let hash = blake3::hash(location.to_string().as_bytes()).to_hex();
    let dir = base
        .join("s3")
        .join(&location.bucket)
        .join(&hash.as_str()[..16]);
    // Every directory made for the cache is private (it holds a registry).
    std::os::unix::fs::DirBuilderExt::mode(
        std::fs::DirBuilder::new().recursive(true),
        cryptstream_store::PRIVATE_DIR_MODE,
    )
    .create(&dir)
    .with_context(|| format!("{}: cannot create", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        &dir,
        std::fs::Permissions::from_mode(cryptstream_store::PRIVATE_DIR_MODE),
    )
    .with_context(|| format!("{}: cannot set its mode", dir.display()))?;
    Ok(dir)
}

const MODE_FILE: &str = "write-mode";
/// Present once the cached registry holds everything in the bucket (after
/// `store init` or a reindex).
const FILLED_FILE: &str = "registry-filled";

fn client(location: &S3Location) -> anyhow::Result<S3Client> {
    let options = Options {
        connections: CONNECTIONS.load(Ordering::Relaxed),
        ..Options::default()
    };
    Ok(S3Client::new(location.clone(), &options)?)
}

/// The write mode recorded for this location, or probed now (and
/// recorded) when the cache has none.
fn write_mode(client: &S3Client, cache: &Path) -> anyhow::Result<WriteMode> {
    let file = cache.join(MODE_FILE);
    match std::fs::read_to_string(&file).as_deref().map(str::trim) {
        Ok("conditional") => return Ok(WriteMode::Conditional),
        Ok("unique-names") => return Ok(WriteMode::UniqueNames),
        _ => {}
    }
    let mode = S3Backend::probe(client)?;
    let text = match mode {
        WriteMode::Conditional => "conditional\n",
        WriteMode::UniqueNames => "unique-names\n",
    };
    std::fs::write(&file, text).with_context(|| format!("{}: cannot write", file.display()))?;
    Ok(mode)
}

/// `store init` at `arg`.
pub fn init(arg: &Path, key: &MasterKey, settings: &Settings) -> anyhow::Result<()> {
    match StoreLocation::parse(arg)? {
        StoreLocation::Local(dir) => {
            Store::init_local(&dir, key, settings)?;
            messages::note(format_args!("created store {}", dir.display()));
        }
        StoreLocation::S3(location) => {
            let cache = cache_dir(&location)?;
            let client = client(&location)?;
            // Probe afresh at init: the server may have changed.
            let _ = std::fs::remove_file(cache.join(MODE_FILE));
            let mode = write_mode(&client, &cache)?;
            let backend = S3Backend::new(client, mode);
            let registry = cache.join(REGISTRY_FILE);
            remove_registry(&registry);
            Store::init(&backend, &registry, key, settings)?;
            mark_filled(&cache)?;
            messages::note(format_args!(
                "created store {location}; {}",
                mode.describe()
            ));
        }
    }
    Ok(())
}

/// Removes a registry and its WAL files (a stale cache of an earlier store
/// at the same location).
fn remove_registry(registry: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = registry.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

fn mark_filled(cache: &Path) -> anyhow::Result<()> {
    let file = cache.join(FILLED_FILE);
    std::fs::write(&file, b"").with_context(|| format!("{}: cannot write", file.display()))
}

/// An opened (still locked) store, and, for an S3 store whose cached
/// registry is new, the cache to mark once it has been filled from the
/// bucket.
pub struct Opened {
    pub store: LockedStore,
    pub fill_registry: Option<PathBuf>,
}

impl Opened {
    /// Records that the registry now holds what the bucket holds.
    pub fn filled(cache: &Path) -> anyhow::Result<()> {
        mark_filled(cache)
    }
}

/// Opens the store at `arg`.
pub fn open(arg: &Path) -> anyhow::Result<Opened> {
    match StoreLocation::parse(arg)? {
        StoreLocation::Local(dir) => Ok(Opened {
            store: Store::open_local(&dir)?,
            fill_registry: None,
        }),
        StoreLocation::S3(location) => {
            let cache = cache_dir(&location)?;
            let registry = cache.join(REGISTRY_FILE);
            let fill_registry = (!cache.join(FILLED_FILE).exists()).then(|| cache.clone());
            let client = client(&location)?;
            let mode = write_mode(&client, &cache)?;
            let backend = S3Backend::new(client, mode);
            let _ = OPENED_S3.set(backend.shared_client());
            let backend: Box<dyn Backend> = Box::new(backend);
            Ok(Opened {
                store: Store::open(backend, &registry)?,
                fill_registry,
            })
        }
    }
}

/// This process's lease holder note, sealed under the store's key.
fn sealed_holder(keys: &StoreKeys) -> anyhow::Result<Vec<u8>> {
    Ok(blob::seal(
        keys,
        blob::LEASE_AAD,
        &cryptstream_s3::lease::holder_note(),
    )?)
}

/// Longest a put waits for another client's gc to end.
const GC_WAIT: Duration = Duration::from_secs(15 * 60);

/// Before a put on an S3 store: takes a put lease and waits while another
/// client's gc holds one (see `cryptstream_s3::lease`). `None` for a local
/// store. The put holds the lease until it drops it.
pub fn put_lease(keys: &StoreKeys) -> anyhow::Result<Option<Lease>> {
    let Some(client) = OPENED_S3.get() else {
        return Ok(None);
    };
    let lease = Lease::take(Arc::clone(client), LeaseKind::Put, sealed_holder(keys)?)?;
    let started = Instant::now();
    let mut told = false;
    loop {
        let (gcs, _) = live_leases(client, LeaseKind::Gc)?;
        let Some(gc) = gcs.first() else {
            return Ok(Some(lease));
        };
        anyhow::ensure!(
            started.elapsed() < GC_WAIT,
            "{}: a gc by another client has held {} for over {} minutes; put not started",
            client.location(),
            gc.name,
            GC_WAIT.as_secs() / 60
        );
        if !told {
            messages::note(format_args!(
                "{}: waiting for a gc by another client to finish ({})",
                client.location(),
                gc.name
            ));
            told = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// What a gc may do.
pub enum GcGate {
    /// A local store: gc's own epochs make it safe.
    Local,
    /// An S3 store with no put running anywhere: the registry must be
    /// refreshed from the bucket first; the lease is held until gc ends.
    Exclusive(Lease),
    /// A put holds a lease: reclaiming now could take chunks it relies on.
    Skip(String),
}

/// Before a gc: on an S3 store, takes a gc lease and gives up if a put
/// holds one; removes the leases of dead clients.
pub fn gc_gate(keys: &StoreKeys) -> anyhow::Result<GcGate> {
    let Some(client) = OPENED_S3.get() else {
        return Ok(GcGate::Local);
    };
    let lease = Lease::take(Arc::clone(client), LeaseKind::Gc, sealed_holder(keys)?)?;
    let (puts, mut stale) = live_leases(client, LeaseKind::Put)?;
    let open = |body: &[u8]| {
        let mut body = body.to_vec();
        blob::open_in_place(keys, blob::LEASE_AAD, &mut body)
            .ok()
            .map(|plain| plain.to_vec())
    };
    let mut running = Vec::new();
    for put in puts {
        if held_by_dead_local_process(client, &put, &open)? {
            stale.push(put.name);
        } else {
            running.push(put);
        }
    }
    if let Some(put) = running.first() {
        return Ok(GcGate::Skip(format!(
            "a put is running ({}, renewed {} s ago); nothing reclaimed, run gc again later",
            put.name,
            put.age.as_secs()
        )));
    }
    for name in stale {
        client.delete(&name)?;
    }
    Ok(GcGate::Exclusive(lease))
}
