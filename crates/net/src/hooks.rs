//! Test hooks, only with the `test-knobs` feature (the binary turns them on from the
//! environment): a sender that stalls after a number of bytes, so that a
//! test can kill it while it provably has sent part of a file; a receiver
//! that saves its partial files' ranges more often, so that a test can
//! kill the server with a small file and still find them saved.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes after which the sender stalls (`u64::MAX`: never).
static STALL_AFTER: AtomicU64 = AtomicU64::new(u64::MAX);
/// Whether a stall happened already.
static STALLED: AtomicBool = AtomicBool::new(false);

/// Bytes between two saves of a partial file's ranges (0: the default).
static CHECKPOINT_EVERY: AtomicU64 = AtomicU64::new(0);

/// Makes the receiver save a partial file's ranges every `bytes`.
pub fn checkpoint_every(bytes: u64) {
    CHECKPOINT_EVERY.store(bytes, Ordering::Relaxed);
}

/// The bytes between two saves: the hook's, or `default`.
pub(crate) fn checkpoint_bytes(default: u64) -> u64 {
    match CHECKPOINT_EVERY.load(Ordering::Relaxed) {
        0 => default,
        bytes => bytes,
    }
}

/// Makes the sender stall, forever, once `bytes` file bytes are sent.
pub fn stall_after_bytes(bytes: u64) {
    STALL_AFTER.store(bytes, Ordering::Relaxed);
}

/// Called after each data frame with the bytes sent so far.
pub(crate) async fn after_sent<W: AsyncWrite + Unpin>(writer: &mut W, sent: u64) {
    if sent >= STALL_AFTER.load(Ordering::Relaxed) && !STALLED.swap(true, Ordering::Relaxed) {
        let _ = writer.flush().await;
        eprintln!("cryptstream: debug: stalled after {sent} bytes");
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}
