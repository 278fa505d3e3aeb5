//! Test hooks (only with the `test-knobs` feature), at the points where a put changes
//! durable state (after a chunk, before a manifest, before the registry
//! marks files complete), where a gc has registered, and where a get is
//! about to read a chunk whose location it looked up:
//!
//! - a delay, so a test that kills the process at a random moment lands
//!   between any two of them (`CRYPTSTREAM_DEBUG_STORE_DELAY_MS`);
//! - a hold: while a named file exists, the put waits at the next hook
//!   point, so a test can run a gc, a get or a signal against a put that
//!   is provably registered and still running (or a second gc against a
//!   registered one, or a gc against a get that has planned its reads),
//!   then let it go by removing the file
//!   (`CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE`). A held process first creates
//!   `FILE.reached`, so the test knows it got there. With
//!   `CRYPTSTREAM_DEBUG_STORE_HOLD_AT=NAME` it holds only at the hook point
//!   of that name (`after_chunk`, `before_manifest`, `before_complete`,
//!   `before_snapshot`, `gc_registered`, `before_chunk_read`): a test that
//!   creates FILE while the put runs then holds it at the next such point.
//!
//! The binary turns them on from those variables; any other build has no
//! hook and reads none of them.

#[cfg(any(test, feature = "test-knobs"))]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(any(test, feature = "test-knobs"))]
use std::sync::OnceLock;

#[cfg(any(test, feature = "test-knobs"))]
static DELAY_MS: AtomicU64 = AtomicU64::new(0);

#[cfg(any(test, feature = "test-knobs"))]
static HOLD_WHILE: OnceLock<std::path::PathBuf> = OnceLock::new();

#[cfg(any(test, feature = "test-knobs"))]
static HOLD_AT: OnceLock<String> = OnceLock::new();

/// How often a held put looks whether it may go on.
#[cfg(any(test, feature = "test-knobs"))]
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Sleeps `ms` milliseconds at every hook point (test builds only).
#[cfg(any(test, feature = "test-knobs"))]
pub fn set_delay_ms(ms: u64) {
    DELAY_MS.store(ms, Ordering::Relaxed);
}

#[cfg(any(test, feature = "test-knobs"))]
static TASK_DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Makes every chunk task of a put sleep `ms` milliseconds on its worker
/// before it seals the chunk (test builds only), so that chunks pile up
/// behind slow workers and `--max-memory` is what bounds them.
#[cfg(any(test, feature = "test-knobs"))]
pub fn set_task_delay_ms(ms: u64) {
    TASK_DELAY_MS.store(ms, Ordering::Relaxed);
}

/// On a worker, at the start of a put's chunk task.
#[inline]
pub(crate) fn in_chunk_task() {
    #[cfg(any(test, feature = "test-knobs"))]
    {
        let ms = TASK_DELAY_MS.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

/// Waits at every hook point while `path` exists (test builds only).
#[cfg(any(test, feature = "test-knobs"))]
pub fn hold_while_exists(path: std::path::PathBuf) {
    let _ = HOLD_WHILE.set(path);
}

/// Holds (see [`hold_while_exists`]) only at the hook point named `name`
/// (test builds only).
#[cfg(any(test, feature = "test-knobs"))]
pub fn hold_only_at(name: String) {
    let _ = HOLD_AT.set(name);
}

#[inline]
fn pause(_name: &str) {
    #[cfg(any(test, feature = "test-knobs"))]
    {
        let name = _name;
        let ms = DELAY_MS.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let here = HOLD_AT.get().is_none_or(|at| at == name);
        if let Some(path) = HOLD_WHILE.get().filter(|_| here) {
            if path.exists() {
                // Tells the test that this process reached a hook point.
                let mut reached = path.clone().into_os_string();
                reached.push(".reached");
                let _ = std::fs::write(reached, b"");
            }
            while path.exists() {
                std::thread::sleep(HOLD_POLL);
            }
        }
    }
}

/// After a file to be read whole on a worker was handed over (before the
/// worker reads it), and after each chunk the put takes in (added to the
/// open pack, or found stored), before any commit it leads to.
pub(crate) fn after_chunk() {
    pause("after_chunk");
}

/// Once every pack holding a chunk of the manifest's files is durable and
/// recorded, before the manifest.
pub(crate) fn before_manifest() {
    pause("before_manifest");
}

/// After the manifest, before the registry marks files complete.
pub(crate) fn before_complete() {
    pause("before_complete");
}

/// After a gc registered, before it changes anything.
pub(crate) fn gc_registered() {
    pause("gc_registered");
}

/// In a get, before a chunk is read from the location looked up for it.
pub(crate) fn before_chunk_read() {
    pause("before_chunk_read");
}

/// After a put's last pack and manifest, before its snapshot is committed.
pub(crate) fn before_snapshot() {
    pause("before_snapshot");
}
