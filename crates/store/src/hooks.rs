//! Test hooks (only with the `test-knobs` feature): a delay at the points where a put
//! changes durable state, so a test that kills the process at a random
//! moment lands between any two of them. The binary turns them on from
//! `CRYPTSTREAM_DEBUG_STORE_DELAY_MS`; any other build has no hook.

#[cfg(any(test, feature = "test-knobs"))]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(any(test, feature = "test-knobs"))]
static DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Sleeps `ms` milliseconds at every hook point (test builds only).
#[cfg(any(test, feature = "test-knobs"))]
pub fn set_delay_ms(ms: u64) {
    DELAY_MS.store(ms, Ordering::Relaxed);
}

#[inline]
fn pause() {
    #[cfg(any(test, feature = "test-knobs"))]
    {
        let ms = DELAY_MS.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

/// After a chunk was submitted.
pub(crate) fn after_chunk() {
    pause();
}

/// After the pack commit and registry batch, before the manifest.
pub(crate) fn before_manifest() {
    pause();
}

/// After the manifest, before the registry marks files complete.
pub(crate) fn before_complete() {
    pause();
}
