//! Leases between clients that share a bucket but not a registry.
//!
//! On a local store every process shares one SQLite registry, and gc's
//! epochs keep it safe while puts run. Clients of one bucket on different
//! machines each have their own registry, so a gc on one cannot see the
//! chunks a put on another is relying on. Between clients, then, a gc and
//! a put never overlap; puts never wait for each other.
//!
//! Each holds a lease: an object `leases/KIND-MILLIS-RANDOM` whose name
//! carries the time it was taken and nothing else (RANDOM is fresh at every
//! write). Its body says which process holds it (host name and pid) only
//! sealed by the caller under the store's key: whoever holds the bucket
//! learns neither; a client of the store opens it to see whether the holder
//! is a dead process of its own host. A holder renews it every
//! [`RENEW_EVERY`] (a new object, then the old one deleted), and a lease
//! older than [`STALE_AFTER`] belongs to a client that died and is
//! ignored (and removed by the next gc). Both sides take their lease
//! first and look for the other kind second, so with S3's read-after-write
//! consistency at least one of them sees the other: a put that sees a live
//! gc lease waits for it to go; a gc that sees a live put lease gives up
//! (and says so) instead of waiting.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{Bounded, S3Client, S3Error};

/// The four object calls leases make, so that any object storage shared
/// by clients can hold them (a bucket through [`S3Client`]; a store
/// server through the location crate's wrapper of its backend).
pub trait LeaseObjects: Send + Sync {
    /// The names of the objects below `prefix`.
    ///
    /// # Errors
    /// The storage.
    fn lease_names(&self, prefix: &str) -> Result<Vec<String>, S3Error>;
    /// Writes a new object.
    ///
    /// # Errors
    /// The storage.
    fn lease_put(&self, name: &str, body: Bytes) -> Result<(), S3Error>;
    /// The object, if it has at most `limit` bytes.
    ///
    /// # Errors
    /// The storage.
    fn lease_get(&self, name: &str, limit: u64) -> Result<Bounded, S3Error>;
    /// Deletes the object (a missing one is no error).
    ///
    /// # Errors
    /// The storage.
    fn lease_delete(&self, name: &str) -> Result<(), S3Error>;
}

impl LeaseObjects for S3Client {
    fn lease_names(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        Ok(self.list(prefix)?.into_iter().map(|l| l.key).collect())
    }
    fn lease_put(&self, name: &str, body: Bytes) -> Result<(), S3Error> {
        self.put(name, body)
    }
    fn lease_get(&self, name: &str, limit: u64) -> Result<Bounded, S3Error> {
        self.get_bounded(name, limit)
    }
    fn lease_delete(&self, name: &str) -> Result<(), S3Error> {
        self.delete(name)
    }
}

/// Where leases live in the bucket (under the store's prefix).
pub const LEASE_PREFIX: &str = "leases/";
/// How often a holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);
/// A lease not renewed for this long is dead.
pub const STALE_AFTER: Duration = Duration::from_secs(300);

/// Who holds a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseKind {
    /// A put: many may hold one at once.
    Put,
    /// A garbage collection: it gives up while a put holds a lease; puts wait for it.
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

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A live lease found in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLease {
    /// Its object name (`leases/KIND-MILLIS-RANDOM`).
    pub name: String,
    /// Whether a put or a gc holds it.
    pub kind: LeaseKind,
    /// How long ago it was taken or last renewed.
    pub age: Duration,
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

/// Leases of `kind` in the bucket that are not stale, and the stale ones
/// (of any kind).
pub fn live_leases(
    client: &dyn LeaseObjects,
    kind: LeaseKind,
) -> Result<(Vec<LiveLease>, Vec<String>), S3Error> {
    let now = now_millis();
    let mut live = Vec::new();
    let mut stale = Vec::new();
    for key in client.lease_names(LEASE_PREFIX)? {
        let Some((found, millis)) = parse(&key) else {
            continue;
        };
        let age = Duration::from_millis(now.saturating_sub(millis));
        if age > STALE_AFTER {
            stale.push(key);
        } else if found == kind {
            live.push(LiveLease {
                name: key,
                kind: found,
                age,
            });
        }
    }
    Ok((live, stale))
}

/// A lease this process holds; renewed by a thread until dropped, then
/// deleted.
pub struct Lease {
    state: Arc<Mutex<String>>,
    renewer: Option<std::thread::JoinHandle<()>>,
    client: Arc<dyn LeaseObjects>,
    wake: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Lease {
    /// Takes a lease of `kind`.
    ///
    /// # Errors
    /// The lease object cannot be written.
    /// `body` is the sealed [`holder_note`].
    pub fn take(
        client: Arc<dyn LeaseObjects>,
        kind: LeaseKind,
        body: Vec<u8>,
    ) -> Result<Lease, S3Error> {
        let body = Bytes::from(body);
        let name = write_lease(&*client, kind, &body)?;
        let state = Arc::new(Mutex::new(name));
        let wake = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let renewer = {
            let (state, client, wake) = (state.clone(), client.clone(), wake.clone());
            std::thread::Builder::new()
                .name("cryptstream-lease".into())
                .spawn(move || renew(&*client, kind, &body, &state, &wake))
                .expect("spawning the lease thread")
        };
        Ok(Lease {
            state,
            renewer: Some(renewer),
            client,
            wake,
        })
    }

    /// The lease's current object name.
    pub fn name(&self) -> String {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn write_lease(
    client: &dyn LeaseObjects,
    kind: LeaseKind,
    body: &Bytes,
) -> Result<String, S3Error> {
    let name = format!(
        "{LEASE_PREFIX}{}-{:013}-{}",
        kind.tag(),
        now_millis(),
        crate::random_hex()
    );
    client.lease_put(&name, body.clone())?;
    Ok(name)
}

/// Most bytes a lease object may have; a larger one is not read.
pub const MAX_LEASE_BODY: u64 = 4096;

/// What a lease says about its holder, before the caller seals it: this
/// host's name and this process's id.
pub fn holder_note() -> Vec<u8> {
    format!("host {}\npid {}\n", hostname(), std::process::id()).into_bytes()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Whether a lease was taken by a process of this host that no longer
/// exists (a killed put): such a lease is dead before it goes stale.
/// `open` unseals a lease body (`None`: not sealed under this store's key,
/// so not known to be dead).
pub fn held_by_dead_local_process(
    client: &dyn LeaseObjects,
    lease: &LiveLease,
    open: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<bool, S3Error> {
    let body = match client.lease_get(&lease.name, MAX_LEASE_BODY)? {
        Bounded::Found(body) => body,
        Bounded::Missing => return Ok(true),
        Bounded::TooLarge(_) => return Ok(false),
    };
    let Some(body) = open(&body) else {
        return Ok(false);
    };
    let body = String::from_utf8_lossy(&body);
    let field = |key: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
    };
    let (Some(host), Some(pid)) = (field("host "), field("pid ")) else {
        return Ok(false);
    };
    let here = hostname();
    Ok(!here.is_empty()
        && host == here
        && pid.parse::<u32>().is_ok()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn renew(
    client: &dyn LeaseObjects,
    kind: LeaseKind,
    body: &Bytes,
    state: &Mutex<String>,
    wake: &(Mutex<bool>, std::sync::Condvar),
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
        if let Ok(fresh) = write_lease(client, kind, body) {
            let old =
                std::mem::replace(&mut *state.lock().unwrap_or_else(|e| e.into_inner()), fresh);
            let _ = client.lease_delete(&old);
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
        let _ = self.client.lease_delete(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_parse() {
        assert_eq!(
            parse("leases/put-0001700000000000-abcd"),
            Some((LeaseKind::Put, 1_700_000_000_000))
        );
        assert_eq!(
            parse("leases/gc-0000000000042-ff"),
            Some((LeaseKind::Gc, 42))
        );
        for bad in [
            "leases/put-x-1",
            "leases/other-1-2",
            "packs/put-1-2",
            "leases/gc-1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
