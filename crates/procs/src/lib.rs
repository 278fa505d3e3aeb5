//! The process engine: the same per-file work as the thread engine, run by
//! worker processes that are fed through a ring-buffer task queue in shared
//! memory.
//!
//! [`execute`] runs a plan with the engine the settings choose. With
//! processes, the parent ([`parent`]) runs one event loop on the calling
//! thread: it turns each file into tasks (one task per small file, one per
//! 4 MiB segment of a large file), publishes them as fixed-size
//! [`ring::TaskRecord`]s in a [`ring::Ring`] (a `memfd` mapping guarded by
//! process-shared semaphores and atomics), starts worker processes lazily
//! (as many as there is work for, up to `--workers`), and reads each
//! worker's reports on its own socket ([`protocol`]). A worker ([`worker`])
//! is this same executable, started again in worker mode: `main` calls
//! [`run_worker_if_requested`] before anything else, naming the envelopes a
//! worker can build again (age's). It receives its settings, secrets and
//! envelopes on the socket, takes tasks off the ring, runs them
//! with the engine's [`cryptstream_engine::OpenFile`] and
//! [`cryptstream_engine::process_whole`], and reports. Every container
//! goes through the engine's envelope seam, so workers read and write age
//! files as well as ours; for a split file they get its chunk cipher and
//! never open its header again.
//!
//! A worker that dies is seen at once (its socket closes); the parent takes
//! back the task it held ([`ring::Ring::reclaim`]), runs it again on
//! another worker (once; a second death fails that file), starts a
//! replacement, and lists the retry in the [`cryptstream_engine::Summary`].
//! Workers die with the parent (`PR_SET_PDEATHSIG`), and the ring is an
//! anonymous `memfd`, so nothing outlives a run, however it ends.
//! `docs/ARCHITECTURE.md` ("Process engine") explains why this is sound in
//! a Rust program.

#![deny(missing_docs)]

pub mod parent;
pub mod protocol;
pub mod ring;
pub mod worker;

use cryptstream_pool::Cancel;

use cryptstream_engine::{Engine, Plan, Progress, Settings, Summary};
use thiserror::Error;

pub use parent::run_processes;
pub use worker::run_worker_if_requested;

/// The environment variable that starts a process in worker mode. It holds
/// only two descriptor numbers ("RING,SOCKET"), never a secret.
pub const WORKER_ENV: &str = "CRYPTSTREAM_WORKER_FDS";
/// When set, the parent prints each worker's pid to stderr as it starts
/// it (for tests and debugging).
pub const DEBUG_PIDS_ENV: &str = "CRYPTSTREAM_DEBUG_WORKER_PIDS";
/// The environment variable that may hold the passphrase: removed from
/// every worker's environment (workers get derived keys, never the
/// passphrase).
pub const PASSPHRASE_ENV: &str = "CRYPTSTREAM_PASSPHRASE";
/// The engine's name on the command line and in the summary.
pub const ENGINE_NAME: &str = "processes";

/// What can go wrong in the machinery of the process engine (failures of
/// single files are [`cryptstream_engine::Reason`]s instead).
#[derive(Debug, Error)]
pub enum ProcsError {
    /// The shared ring could not be created or mapped.
    #[error("cannot set up the shared task queue: {0}")]
    Ring(std::io::Error),
    /// A worker process could not be started.
    #[error("cannot start a worker process: {0}")]
    Spawn(std::io::Error),
    /// The socket to a worker or to the parent failed.
    #[error("worker socket: {0}")]
    Socket(std::io::Error),
    /// The other side sent something this build does not understand.
    #[error("worker protocol: {0}")]
    Protocol(&'static str),
    /// The secrets handed to a worker are not usable.
    #[error("worker keys: {0}")]
    Keys(#[from] cryptstream_format::FormatError),
    /// An envelope handed to a worker could not be built again.
    #[error("worker envelope: {0}")]
    Envelope(String),
}

/// The process engine, as an [`Engine`] the CLI can choose.
pub struct ProcessEngine;

impl Engine for ProcessEngine {
    fn name(&self) -> &'static str {
        ENGINE_NAME
    }

    /// Runs `plan` on worker processes. Call it from a thread that lives
    /// for the whole run (workers die with the thread that started them).
    fn run(
        &self,
        plan: &Plan,
        settings: &Settings,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Summary {
        run_processes(plan, settings, progress, cancel)
    }
}
