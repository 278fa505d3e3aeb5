//! The put/gc gate of an opened store.
//!
//! Processes of one machine share a local store's registry, whose gc
//! epochs let a gc run safely beside puts. Clients of one bucket (or of
//! one remote store, whose leases are objects of its backend:
//! [`RemoteLeases`]) each have their own registry, so between them a gc and a put must never overlap:
//! each takes a lease in the bucket first (`cryptstream_s3::lease`) and
//! looks for the other kind second. A put that sees a gc waits for it (at
//! most [`GC_WAIT`]); a gc that sees a put gives up and says so. A gc that
//! runs refreshes its registry from the bucket first, since other clients'
//! files are in the bucket, not in this registry. A lease's body says which
//! process holds it only sealed under the store's key.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptstream_pool::Cancel;
use cryptstream_s3::lease::{
    held_by_dead_local_process, live_leases, Lease, LeaseKind, LeaseObjects, LiveLease,
};
use cryptstream_s3::{Bounded, S3Error};
use cryptstream_store::maintain::ReindexReport;
use cryptstream_store::{blob, Store, StoreKeys};
use cryptstream_store::{Backend, BackendError};

use crate::{LocationError, OpenedStore, Site};

/// Longest a put waits for another client's gc to end.
pub const GC_WAIT: Duration = Duration::from_secs(15 * 60);
/// How often a waiting put looks again.
const GC_POLL: Duration = Duration::from_secs(2);

/// A lease this process holds in its store's location (nothing for a
/// local store); released when dropped.
pub struct HeldLease(Option<Lease>);

impl HeldLease {
    /// Whether a lease object is held (false on a local store).
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

/// A put of another client that holds its lease.
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

/// What a gc may do.
pub enum GcGate {
    /// A local store: gc's own epochs make it safe.
    Local,
    /// A shared location with no put running anywhere: the registry was
    /// refreshed from the bucket (`refresh`, which the gc must not use if
    /// it has problems); the lease keeps puts out until it is dropped.
    Exclusive {
        /// Held until the gc ends.
        lease: HeldLease,
        /// The reindex that refreshed the registry.
        refresh: ReindexReport,
    },
    /// A put holds a lease: reclaiming now could take chunks it relies on.
    Skip(RunningPut),
}

impl OpenedStore<Store> {
    /// Before a put: on S3, takes a put lease, and while another client's
    /// gc holds one, calls `waiting` (once) and waits, up to [`GC_WAIT`].
    /// The put holds the returned lease until it drops it.
    ///
    /// # Errors
    /// The server, or a gc that outlasts [`GC_WAIT`] (the put does not
    /// start).
    pub fn put_lease(
        &self,
        waiting: &mut dyn FnMut(&LiveLease),
    ) -> Result<HeldLease, LocationError> {
        let Some(client) = self.site.leases() else {
            return Ok(HeldLease(None));
        };
        let client = &client;
        let lease = take(client, LeaseKind::Put, self.store.keys())?;
        let started = Instant::now();
        let mut told = false;
        loop {
            let (gcs, _) = live_leases(&**client, LeaseKind::Gc)?;
            let Some(gc) = gcs.first() else {
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

    /// Before a gc: on S3, takes a gc lease and gives up if a put of any
    /// client holds one (a put of this host whose process is gone holds
    /// nothing), removes the leases of dead clients, and refreshes the
    /// registry from the bucket.
    ///
    /// # Errors
    /// The server, the registry, or `cancel` (`StoreError::Cancelled`).
    pub fn gc_gate(&mut self, cancel: &Cancel) -> Result<GcGate, LocationError> {
        self.check_deletes()?;
        let Some(client) = self.site.leases() else {
            return Ok(GcGate::Local);
        };
        let client = &client;
        let keys = self.store.keys();
        let lease = take(client, LeaseKind::Gc, keys)?;
        let (puts, mut stale) = live_leases(&**client, LeaseKind::Put)?;
        let open = |body: &[u8]| {
            let mut body = body.to_vec();
            blob::open_in_place(keys, blob::LEASE_AAD, &mut body)
                .ok()
                .map(|plain| plain.to_vec())
        };
        let mut running = Vec::new();
        for put in puts {
            if held_by_dead_local_process(&**client, &put, &open)? {
                stale.push(put.name);
            } else {
                running.push(put);
            }
        }
        if let Some(put) = running.into_iter().next() {
            return Ok(GcGate::Skip(RunningPut(put)));
        }
        for name in stale {
            client.lease_delete(&name)?;
        }
        let refresh = self.store.reindex(&cryptstream_store::NoProgress, cancel)?;
        Ok(GcGate::Exclusive { lease, refresh })
    }
}

/// Takes a lease of `kind` whose body is this process's holder note
/// sealed under the store's key.
fn take(
    client: &Arc<dyn LeaseObjects>,
    kind: LeaseKind,
    keys: &StoreKeys,
) -> Result<HeldLease, LocationError> {
    let note = blob::seal(keys, blob::LEASE_AAD, &cryptstream_s3::lease::holder_note())?;
    Ok(HeldLease(Some(Lease::take(
        Arc::clone(client),
        kind,
        note,
    )?)))
}

impl Site {
    /// Where leases live: the bucket, or a remote store that deletes
    /// (an append-only one runs no client gc, and could not remove them).
    pub(crate) fn leases(&self) -> Option<Arc<dyn LeaseObjects>> {
        match self {
            Site::S3 { client, .. } => Some(client.clone()),
            Site::Remote {
                backend,
                append_only: false,
                ..
            } => Some(Arc::new(RemoteLeases(backend.clone()))),
            Site::Remote { .. } | Site::Local => None,
        }
    }
}

/// Leases of a remote store, as objects of its backend.
pub(crate) struct RemoteLeases(pub(crate) cryptstream_remote::RemoteBackend);

fn request(op: &'static str, key: &str, e: BackendError) -> S3Error {
    S3Error::Request {
        op,
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

impl LeaseObjects for RemoteLeases {
    fn lease_names(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut names = Vec::new();
        self.0
            .list(prefix, &mut |meta| {
                names.push(meta.name);
                Ok(())
            })
            .map_err(|e| request("list", prefix, e))?;
        Ok(names)
    }
    fn lease_put(&self, name: &str, body: bytes::Bytes) -> Result<(), S3Error> {
        self.0
            .put_if_absent(name, &body)
            .map_err(|e| request("put", name, e))
    }
    fn lease_get(&self, name: &str, limit: u64) -> Result<Bounded, S3Error> {
        match self.0.get(name, limit) {
            Ok(body) => Ok(Bounded::Found(body.into())),
            Err(BackendError::NotFound(_)) => Ok(Bounded::Missing),
            Err(BackendError::TooLarge { size, .. }) => Ok(Bounded::TooLarge(size)),
            Err(e) => Err(request("get", name, e)),
        }
    }
    fn lease_delete(&self, name: &str) -> Result<(), S3Error> {
        self.0.delete(name).map_err(|e| request("delete", name, e))
    }
}
