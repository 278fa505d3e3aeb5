//! Fault hooks for tests. They exist only with the `test-knobs` feature: in
//! any other build every function here is an empty inline stub and no
//! setting can turn a hook on.
//!
//! The binary turns them on from `CRYPTSTREAM_DEBUG_*` variables at start
//! (see the CLI's `main`); libraries never read the environment.

#[cfg(any(test, feature = "test-knobs"))]
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes of one output after which a writer stalls (u64::MAX: never).
#[cfg(any(test, feature = "test-knobs"))]
static STALL_AFTER: AtomicU64 = AtomicU64::new(u64::MAX);
/// Whether a key derivation announces itself on stderr.
#[cfg(any(test, feature = "test-knobs"))]
static ANNOUNCE_DERIVE: AtomicBool = AtomicBool::new(false);

/// Makes every writer stall (announce it on stderr, then sleep until the
/// process is killed) once `bytes` of one output are written, so that a
/// test can kill the process provably in the middle of a write.
#[cfg(any(test, feature = "test-knobs"))]
pub fn stall_after_bytes(bytes: u64) {
    STALL_AFTER.store(bytes, Ordering::Relaxed);
}

/// Makes every key derivation say on stderr that it started.
#[cfg(any(test, feature = "test-knobs"))]
pub fn announce_derivations() {
    ANNOUNCE_DERIVE.store(true, Ordering::Relaxed);
}

/// Called after each write with the bytes written to that output so far.
#[inline]
pub fn after_write(total: u64) {
    #[cfg(any(test, feature = "test-knobs"))]
    if total >= STALL_AFTER.load(Ordering::Relaxed) {
        eprintln!("cryptstream: debug: stalled after {total} bytes of an output");
        // A worker process whose parent dies is told to stop (SIGTERM)
        // but would never see it here: end it the way a worker ends when
        // its parent is gone.
        let parent = std::os::unix::process::parent_id();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(1);
            }
        }
    }
    #[cfg(not(any(test, feature = "test-knobs")))]
    let _ = total;
}

/// Called when a key derivation starts.
#[inline]
pub fn deriving() {
    #[cfg(any(test, feature = "test-knobs"))]
    if ANNOUNCE_DERIVE.load(Ordering::Relaxed) {
        eprintln!("cryptstream: debug: deriving a passphrase key");
    }
}
