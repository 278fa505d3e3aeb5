//! How a long operation reports as it goes: one trait for every kind of
//! run (engine files, store puts, gets and maintenance, network sends), so
//! the binary draws one kind of bar and prints failures one way.

use std::fmt::Display;

/// Receives progress as an operation goes; every method may be called from
/// any worker thread, and each has a default that ignores it.
pub trait Progress: Send + Sync {
    /// The bytes to process in all, once known.
    fn set_total(&self, _bytes: u64) {}
    /// Whether the total is shown: an operation may skip the work of
    /// counting it when not (a get's lookups of every entry's size).
    fn shows_total(&self) -> bool {
        true
    }
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// A file or entry was done.
    fn file_done(&self) {}
    /// A file or entry failed; `failure` names it and says why, in one
    /// line. Reported once, as it happens.
    fn file_failed(&self, _failure: &dyn Display) {}
    /// A line for the user that is neither progress nor a failure (a
    /// server's certificate recorded on first contact).
    fn note(&self, _line: &dyn Display) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn shows_total(&self) -> bool {
        false
    }
}
