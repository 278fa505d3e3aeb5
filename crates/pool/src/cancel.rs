//! A shared, cooperative cancellation flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cancellation flag shared by whoever starts work and the tasks doing it.
///
/// Cancellation is cooperative: [`Cancel::cancel`] only raises the flag, and
/// tasks that captured a clone check [`Cancel::is_cancelled`] and skip or cut
/// short their work. The pool never drops a queued task, so every task still
/// runs and every result of an [`Ordered`](crate::Ordered) pipeline is still
/// delivered; a cancelled task just returns quickly (typically an
/// "interrupted" result).
///
/// Raising the flag happens-before any check that observes it, so whatever
/// the canceller wrote before calling `cancel` is visible to a task that sees
/// the flag raised.
#[derive(Clone, Default, Debug)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not raised.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Raises the flag for every clone. Raising it twice is harmless.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the flag has been raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The underlying flag, for code that takes an `&AtomicBool` (a signal
    /// handler's registration, for example).
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }

    /// Wraps an existing flag, such as one a signal handler raises.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Cancel {
        Cancel(flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let cancel = Cancel::new();
        let seen_by_task = cancel.clone();
        assert!(!seen_by_task.is_cancelled());
        cancel.cancel();
        assert!(seen_by_task.is_cancelled());
        assert!(seen_by_task.flag().load(Ordering::Relaxed));
    }

    #[test]
    fn wraps_an_outside_flag() {
        let flag = Arc::new(AtomicBool::new(false));
        let cancel = Cancel::from_flag(Arc::clone(&flag));
        flag.store(true, Ordering::Release);
        assert!(cancel.is_cancelled());
    }
}
