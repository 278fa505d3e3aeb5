//! Leases between writers that share a store but not a registry, and the
//! put/gc gate built on them.
//!
//! A store's registry is a cache private to one user of one machine
//! ([`crate::cache`]): two users of one store directory, two machines on
//! one network filesystem, two clients of one bucket each have their own.
//! A gc on one cannot see the chunks a put on another is relying on, so
//! between them a gc and a put never overlap; puts never wait for each
//! other. The leases are objects of the store itself, written through its
//! [`Backend`], so a directory and a bucket work the same way.
//!
//! Each writer holds a lease: an object `leases/KIND-MILLIS-RANDOM` whose
//! name carries the time it was taken and nothing else (RANDOM is fresh
//! at every write). Its body says which process holds it (host name and
//! pid) only sealed under the store's key: whoever holds the storage
//! learns neither; a client of the store opens it to see whether the
//! holder is a dead process of its own host. A holder renews it every
//! [`RENEW_EVERY`] (a new object, then the old one deleted), and a lease
//! older than [`STALE_AFTER`] belongs to a writer that died and is ignored
//! (and removed by the next gc). Both sides take their lease first and
//! look for the other kind second, so with a directory's (and S3's)
//! read-after-write consistency at least one of them sees the other: a put
//! that sees a live gc lease waits for it (at most [`GC_WAIT`]); a gc that
//! sees a live put lease of another writer gives up and says so. A gc that
//! goes ahead with no put running refreshes its registry from the store's
//! objects first, since other writers' files are in the store, not in this
//! registry.
//!
//! The puts of the gc's own registry (same cache, same host: a cron put
//! while the user prunes) do not stop it: a put's note also carries the
//! registry's random id, and a put whose note names this registry and
//! that is a live put writer of it runs under the epoch rules that keep a
//! gc of one registry safe beside its puts (docs/STORE.md "gc"). The gc
//! then does not refresh (that would replace the registry file under
//! them); it checks instead that no other writer changed the store's
//! snapshots or packs since the registry last read them, and gives up if
//! one did (DECISIONS 300-303).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cryptstream_pool::Cancel;
use cryptstream_store::maintain::ReindexReport;
use cryptstream_store::{blob, Backend, BackendError, Store, StoreError, StoreKeys};

use crate::{LocationError, OpenedStore};

/// Where leases live in the store.
pub const LEASE_PREFIX: &str = "leases/";
/// How often a holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);
/// A lease not renewed for this long is dead.
pub const STALE_AFTER: Duration = Duration::from_secs(300);
/// Most bytes a lease object may have; a larger one is not read.
pub const MAX_LEASE_BODY: u64 = 4096;
/// Longest a put waits for another writer's gc to end.
pub const GC_WAIT: Duration = Duration::from_secs(15 * 60);
/// How often a waiting put looks again.
const GC_POLL: Duration = Duration::from_secs(2);
/// Random bytes at the end of a lease's name.
const NAME_RANDOM_BYTES: usize = 16;

/// Who holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseKind {
    /// A put: many may hold one at once.
    Put,
    /// A garbage collection: it gives up while a put holds a lease; puts
    /// wait for it.
    Gc,
}

impl LeaseKind {
    fn tag(self) -> &'static str {
        match self {
            LeaseKind::Put => "put",
            LeaseKind::Gc => "gc",
        }
    }
}

/// A live lease found in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLease {
    /// Its object name (`leases/KIND-MILLIS-RANDOM`).
    pub name: String,
    /// Whether a put or a gc holds it.
    pub kind: LeaseKind,
    /// How long ago it was taken or last renewed.
    pub age: Duration,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses `leases/KIND-MILLIS-RANDOM`.
fn parse(name: &str) -> Option<(LeaseKind, u64)> {
    let rest = name.strip_prefix(LEASE_PREFIX)?;
    let mut parts = rest.splitn(3, '-');
    let kind = match parts.next()? {
        "put" => LeaseKind::Put,
        "gc" => LeaseKind::Gc,
        _ => return None,
    };
    let millis = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((kind, millis))
}

/// Leases of `kind` in the store that are not stale, and the stale ones
/// (of any kind).
///
/// # Errors
/// The store cannot be listed.
pub fn live_leases(
    space: &dyn Backend,
    kind: LeaseKind,
) -> Result<(Vec<LiveLease>, Vec<String>), BackendError> {
    let now = now_millis();
    let mut live = Vec::new();
    let mut stale = Vec::new();
    space.list(LEASE_PREFIX, &mut |listed| {
        let Some((found, millis)) = parse(&listed.name) else {
            return Ok(());
        };
        let age = Duration::from_millis(now.saturating_sub(millis));
        if age > STALE_AFTER {
            stale.push(listed.name);
        } else if found == kind {
            live.push(LiveLease {
                name: listed.name,
                kind: found,
                age,
            });
        }
        Ok(())
    })?;
    Ok((live, stale))
}

fn write_lease(space: &dyn Backend, kind: LeaseKind, body: &[u8]) -> Result<String, StoreError> {
    let mut random = [0u8; NAME_RANDOM_BYTES];
    cryptstream_format::fill_random(&mut random)?;
    let name = format!(
        "{LEASE_PREFIX}{}-{:013}-{}",
        kind.tag(),
        now_millis(),
        hex(&random)
    );
    space.put_if_absent(&name, body)?;
    Ok(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a lease says about its holder, before it is sealed: this host's
/// name, this process's id and the random id of the registry it writes
/// into (DECISIONS 300).
fn holder_note(registry: i64) -> Vec<u8> {
    format!(
        "host {}\npid {}\nregistry {registry}\n",
        hostname(),
        std::process::id()
    )
    .into_bytes()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Who holds a lease, as far as its sealed note tells.
enum Holder {
    /// The lease is gone already.
    Gone,
    /// A body that does not open under this store's key (another store's,
    /// a foreign tool's), or says nothing usable: nothing is known.
    Unknown,
    /// A process of this host.
    Local {
        /// Its process id.
        pid: u32,
        /// The id of the registry it writes into, if the note has one.
        registry: Option<i64>,
    },
    /// A process of another host.
    Remote,
}

/// Reads and opens a lease's holder note.
fn holder(
    space: &dyn Backend,
    lease: &LiveLease,
    keys: &StoreKeys,
) -> Result<Holder, BackendError> {
    let mut body = match space.get(&lease.name, MAX_LEASE_BODY) {
        Ok(body) => body,
        Err(BackendError::NotFound(_)) => return Ok(Holder::Gone),
        Err(BackendError::TooLarge { .. }) => return Ok(Holder::Unknown),
        Err(e) => return Err(e),
    };
    let Ok(body) = blob::open_in_place(keys, blob::LEASE_AAD, &mut body) else {
        return Ok(Holder::Unknown);
    };
    let body = String::from_utf8_lossy(body);
    let field = |key: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let (Some(host), Some(Ok(pid))) = (field("host "), field("pid ").map(|p| p.parse::<u32>()))
    else {
        return Ok(Holder::Unknown);
    };
    let here = hostname();
    if here.is_empty() || host != here {
        return Ok(Holder::Remote);
    }
    let registry = field("registry ").and_then(|r| r.parse().ok());
    Ok(Holder::Local { pid, registry })
}

/// Whether a lease was taken by a process of this host that no longer
/// exists (a killed put): such a lease is dead before it goes stale. A
/// body that does not open under `keys` (another store's, a foreign
/// tool's) is not known to be dead.
fn held_by_dead_local_process(
    space: &dyn Backend,
    lease: &LiveLease,
    keys: &StoreKeys,
) -> Result<bool, BackendError> {
    Ok(match holder(space, lease, keys)? {
        Holder::Gone => true,
        Holder::Local { pid, .. } => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Holder::Unknown | Holder::Remote => false,
    })
}

/// A lease this process holds; renewed by a thread until dropped, then
/// deleted.
struct Lease {
    state: Arc<Mutex<String>>,
    renewer: Option<std::thread::JoinHandle<()>>,
    space: Arc<dyn Backend>,
    wake: Arc<(Mutex<bool>, Condvar)>,
}

impl Lease {
    /// Takes a lease of `kind` whose body is the sealed holder note.
    fn take(space: Arc<dyn Backend>, kind: LeaseKind, body: Vec<u8>) -> Result<Lease, StoreError> {
        let name = write_lease(&*space, kind, &body)?;
        let state = Arc::new(Mutex::new(name));
        let wake = Arc::new((Mutex::new(false), Condvar::new()));
        let renewer = {
            let (state, space, wake) = (state.clone(), space.clone(), wake.clone());
            std::thread::Builder::new()
                .name("cryptstream-lease".into())
                .spawn(move || renew(&*space, kind, &body, &state, &wake))
                .map_err(|source| StoreError::Io {
                    path: "lease renewal thread".into(),
                    source,
                })?
        };
        Ok(Lease {
            state,
            renewer: Some(renewer),
            space,
            wake,
        })
    }

    fn name(&self) -> String {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn renew(
    space: &dyn Backend,
    kind: LeaseKind,
    body: &[u8],
    state: &Mutex<String>,
    wake: &(Mutex<bool>, Condvar),
) {
    loop {
        let stop = wake.0.lock().unwrap_or_else(|e| e.into_inner());
        let (stop, _) = wake
            .1
            .wait_timeout_while(stop, RENEW_EVERY, |stop| !*stop)
            .unwrap_or_else(|e| e.into_inner());
        if *stop {
            return;
        }
        drop(stop);
        // A failed renewal is retried at the next tick; the lease only
        // goes stale after several missed ones.
        if let Ok(fresh) = write_lease(space, kind, body) {
            let old =
                std::mem::replace(&mut *state.lock().unwrap_or_else(|e| e.into_inner()), fresh);
            let _ = space.delete(&old);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.wake.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.1.notify_all();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        let name = self.name();
        let _ = self.space.delete(&name);
    }
}

/// A lease this process holds in its store; released when dropped.
pub struct HeldLease(Lease);

impl HeldLease {
    /// The lease object's current name.
    pub fn name(&self) -> String {
        self.0.name()
    }
}

/// A put of another writer that holds its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningPut(pub LiveLease);

impl fmt::Display for RunningPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a put is running ({}, renewed {} s ago); nothing reclaimed, run gc again later",
            self.0.name,
            self.0.age.as_secs()
        )
    }
}

/// Puts of this registry run, but the registry is behind the store (it
/// would need a refresh, which must not replace the file under them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheBehind {
    /// One of the puts.
    pub put: LiveLease,
    /// What the store holds that the registry does not know, or the
    /// reverse, naming the object.
    pub why: String,
}

impl fmt::Display for CacheBehind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a put of this cache is running ({}) and {}; nothing reclaimed, \
             run gc again when no put runs",
            self.put.name, self.why
        )
    }
}

/// What a gc may do.
pub enum GcGate {
    /// No put running anywhere: the registry was refreshed from the
    /// store's objects (`refresh`, which the gc must not use if it has
    /// problems); the lease keeps puts out until it is dropped.
    Exclusive {
        /// Held until the gc ends.
        lease: HeldLease,
        /// The reindex that refreshed the registry.
        refresh: ReindexReport,
    },
    /// Only puts of this registry run (live writers of it on this host),
    /// and the registry is not behind the store: the gc runs beside them
    /// without a refresh (the epoch rules of docs/STORE.md "gc" keep what
    /// they rely on), keeping objects it does not know (DECISIONS 301).
    Beside {
        /// Held until the gc ends: puts that start meanwhile wait.
        lease: HeldLease,
        /// How many puts of this registry run.
        puts: usize,
    },
    /// A put of another writer holds a lease: reclaiming now could take
    /// chunks it relies on.
    Skip(RunningPut),
    /// Puts of this registry run, and the registry is behind the store.
    Behind(CacheBehind),
}

fn backend_error(e: BackendError) -> LocationError {
    LocationError::Store(StoreError::Backend(e))
}

impl OpenedStore<Store> {
    /// Before a put: takes a put lease (its sealed note names this
    /// registry's id), and while a gc holds one, calls `waiting` (once)
    /// and waits, up to [`GC_WAIT`]; then opens the registry file again.
    /// The put holds the returned lease until it drops it.
    ///
    /// # Errors
    /// The store's storage, or a gc that outlasts [`GC_WAIT`] (the put
    /// does not start).
    pub fn put_lease(
        &mut self,
        waiting: &mut dyn FnMut(&LiveLease),
    ) -> Result<HeldLease, LocationError> {
        let space = Arc::clone(&self.site.leases);
        let registry = self.store.registry().id()?;
        let lease = take(&space, LeaseKind::Put, self.store.keys(), registry)?;
        let started = Instant::now();
        let mut told = false;
        loop {
            let (gcs, _) = live_leases(&*space, LeaseKind::Gc).map_err(backend_error)?;
            let Some(gc) = gcs.first() else {
                // A gc of this registry that ended before this lease was
                // taken, or that this put waited for, may have refreshed
                // it, replacing the file this store opened; from here on
                // none can (DECISIONS 303).
                self.store.reopen_registry()?;
                return Ok(lease);
            };
            if started.elapsed() >= GC_WAIT {
                return Err(LocationError::GcHeld {
                    location: self.location.to_string(),
                    lease: gc.name.clone(),
                    minutes: GC_WAIT.as_secs() / 60,
                });
            }
            if !told {
                waiting(gc);
                told = true;
            }
            std::thread::sleep(GC_POLL);
        }
    }

    /// Before a gc: takes a gc lease, is refused while another gc holds
    /// one, and gives up if a put of another writer holds one (a put of
    /// this host whose process is gone holds nothing). Puts of this
    /// registry (their sealed note names its id, and each is a live put
    /// writer row in it) do not stop it: it then runs beside them if the
    /// registry is not behind the store, and gives up if it is. With no
    /// put at all it removes the leases of dead writers and refreshes the
    /// registry from the store's objects (DECISIONS 301).
    ///
    /// # Errors
    /// The storage, the registry, or `cancel` (`StoreError::Cancelled`).
    pub fn gc_gate(&mut self, cancel: &Cancel) -> Result<GcGate, LocationError> {
        self.check_deletes()?;
        let space = Arc::clone(&self.site.leases);
        let keys = self.store.keys();
        let registry = self.store.registry().id()?;
        let lease = take(&space, LeaseKind::Gc, keys, registry)?;
        // One gc at a time: another one's refresh would replace the
        // registry under this one. Two that start together may both give
        // up; neither goes ahead beside the other.
        let own = lease.name();
        let (gcs, _) = live_leases(&*space, LeaseKind::Gc).map_err(backend_error)?;
        for gc in gcs.into_iter().filter(|gc| gc.name != own) {
            if !held_by_dead_local_process(&*space, &gc, keys).map_err(backend_error)? {
                return Err(LocationError::Store(StoreError::Busy(format!(
                    "another gc is running on this store ({}); run gc again later",
                    gc.name
                ))));
            }
        }
        let (puts, mut stale) = live_leases(&*space, LeaseKind::Put).map_err(backend_error)?;
        let mut ours = Vec::new();
        for put in puts {
            match holder(&*space, &put, keys).map_err(backend_error)? {
                Holder::Gone => {}
                Holder::Local { pid, registry: r } if r == Some(registry) => {
                    if self.store.registry().live_put(pid)? {
                        ours.push(put);
                    } else if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        stale.push(put.name);
                    } else {
                        // Alive, not (or not yet, or no longer) registered
                        // here: not known to be this registry's put.
                        return Ok(GcGate::Skip(RunningPut(put)));
                    }
                }
                Holder::Local { pid, .. }
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() =>
                {
                    stale.push(put.name);
                }
                Holder::Local { .. } | Holder::Unknown | Holder::Remote => {
                    return Ok(GcGate::Skip(RunningPut(put)));
                }
            }
        }
        for name in stale {
            space.delete(&name).map_err(backend_error)?;
        }
        if let Some(put) = ours.first() {
            // No refresh: it would replace the registry file under them.
            if let Some(why) = self.store.behind_the_store()? {
                return Ok(GcGate::Behind(CacheBehind {
                    put: put.clone(),
                    why,
                }));
            }
            return Ok(GcGate::Beside {
                lease,
                puts: ours.len(),
            });
        }
        let refresh = self.store.reindex(&cryptstream_store::NoProgress, cancel)?;
        Ok(GcGate::Exclusive { lease, refresh })
    }
}

/// Takes a lease of `kind` whose body is this process's holder note
/// sealed under the store's key.
fn take(
    space: &Arc<dyn Backend>,
    kind: LeaseKind,
    keys: &StoreKeys,
    registry: i64,
) -> Result<HeldLease, LocationError> {
    let note = blob::seal(keys, blob::LEASE_AAD, &holder_note(registry))?;
    Ok(HeldLease(Lease::take(Arc::clone(space), kind, note)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_name_says_its_kind_and_time_and_nothing_else() {
        assert_eq!(
            parse("leases/put-0001700000000-00ff"),
            Some((LeaseKind::Put, 1_700_000_000))
        );
        assert_eq!(parse("leases/gc-12-ab"), Some((LeaseKind::Gc, 12)));
        for other in [
            "leases/put-12",
            "leases/x-12-ab",
            "packs/put-12-ab",
            "leases/gc-x-ab",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }

    #[test]
    fn leases_in_a_directory_are_found_by_kind_and_age() {
        let tmp = tempfile::tempdir().unwrap();
        let space: Arc<dyn Backend> =
            Arc::new(cryptstream_store::LocalDir::open(tmp.path()).unwrap());
        let put = Lease::take(Arc::clone(&space), LeaseKind::Put, b"note".to_vec()).unwrap();
        let old = format!(
            "{LEASE_PREFIX}gc-{:013}-00",
            now_millis() - 2 * STALE_AFTER.as_millis() as u64
        );
        space.put_if_absent(&old, b"").unwrap();
        let (puts, stale) = live_leases(&*space, LeaseKind::Put).unwrap();
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].name, put.name());
        assert_eq!(stale, vec![old]);
        let (gcs, _) = live_leases(&*space, LeaseKind::Gc).unwrap();
        assert!(gcs.is_empty(), "a stale gc lease is not live");
        let name = put.name();
        drop(put);
        assert!(!space.exists(&name).unwrap(), "a dropped lease is deleted");
    }
}
