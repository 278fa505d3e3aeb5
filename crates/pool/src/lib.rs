//! The worker threads that the engine, the chunk store and the network
//! server schedule their work on.
//!
//! A [`Pool`] is a fixed set of long-lived worker threads behind one bounded
//! queue; each worker owns a [`Scratch`] (two [`SecretBuf`]s, reusable
//! buffers that are zeroed when they grow or are dropped, since they hold
//! plaintext) and lends it to every task it runs.
//!
//! Work reaches the workers through a [`Scope`], opened with
//! [`Pool::scope`]. A scope lends the threads tasks that *borrow* from the
//! caller (the file being read, the key, the output), which is sound because
//! `scope` returns only after every task it was given has finished, even
//! when something panics. [`Scope::spawn`] queues one task and blocks while
//! the queue is full, so a producer walking millions of files holds only a
//! few tasks in memory. Several threads can hold scopes on one pool at once.
//!
//! For streams, [`Scope::ordered`] starts an [`Ordered`] pipeline: tasks run
//! in parallel, their results reach a `consume` closure on the caller's
//! thread in submission order, and the bytes submitted but not yet consumed
//! stay within a budget. Data flows caller -> `Ordered::submit` -> queue ->
//! worker (with its `Scratch`) -> result slot -> `consume`, in order.
//!
//! Cancellation is cooperative: tasks capture a [`Cancel`] and check it. The
//! pool never drops a queued task, so every result is still delivered.
//!
//! ```
//! use cryptstream_pool::Pool;
//!
//! let pool = Pool::new(4);
//! let input = vec![0x5Au8; 10_000];
//! let mut output = Vec::new();
//! pool.scope(|scope| {
//!     // At most 4 KiB of chunks submitted and not yet written out.
//!     let mut ordered = scope.ordered(4096, |chunk: Vec<u8>| output.extend(chunk));
//!     for chunk in input.chunks(1024) {
//!         // The task borrows `input`; the worker's scratch buffer is reused.
//!         ordered.submit(chunk.len() as u64, move |scratch| {
//!             let buf = scratch.primary.resize(chunk.len());
//!             buf.copy_from_slice(chunk);
//!             buf.iter().map(|b| b ^ 0xFF).collect()
//!         });
//!     }
//!     ordered.finish();
//! });
//! assert_eq!(output, vec![0xA5u8; 10_000]);
//! ```
//!
//! [`run`] with [`Submitter`] is the older one-shot form (threads started and
//! joined per call); it remains until its callers move to [`Pool`]. It
//! starts `workers` threads inside a [`std::thread::scope`] (so tasks
//! may borrow from the caller), gives each one its own state from `init`
//! (typically reusable buffers), and then calls `produce` on the calling
//! thread with a [`Submitter`]. Every [`Submitter::submit`] blocks while the
//! queue holds `capacity` tasks, so a producer that walks millions of files
//! never holds more than `capacity` tasks in memory: memory stays bounded
//! whatever the input. When `produce` returns, the queue is closed, the
//! workers drain it and exit, and `run` returns what `produce` returned.

#![deny(missing_docs)]

mod cancel;
mod ordered;
mod pool;
mod progress;
mod scratch;

pub use cancel::Cancel;
pub use ordered::Ordered;
pub use pool::{Pool, Scope};
pub use progress::{NoProgress, Progress};
pub use scratch::{Scratch, SecretBuf};

use crossbeam_channel::{bounded, Receiver, Sender};

/// The producer's handle on the queue.
pub struct Submitter<T> {
    sender: Sender<T>,
}

/// The queue was closed because every worker stopped (a worker panicked).
#[derive(Debug, PartialEq, Eq)]
pub struct PoolClosed;

impl std::fmt::Display for PoolClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every worker thread stopped")
    }
}

impl std::error::Error for PoolClosed {}

impl<T> Submitter<T> {
    /// Queues `task`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`PoolClosed`] when no worker is left to run it.
    pub fn submit(&self, task: T) -> Result<(), PoolClosed> {
        self.sender.send(task).map_err(|_| PoolClosed)
    }
}

/// Runs a pool of `workers` threads over a queue of at most `capacity`
/// tasks; see the crate docs.
///
/// `init(i)` builds the state of worker `i`; `work(&mut state, task)` runs
/// one task. Panics in a worker are propagated when the pool is joined.
pub fn run<T, S, I, W, P, R>(workers: usize, capacity: usize, init: I, work: W, produce: P) -> R
where
    T: Send,
    I: Fn(usize) -> S + Sync,
    W: Fn(&mut S, T) + Sync,
    P: FnOnce(&Submitter<T>) -> R,
{
    let workers = workers.max(1);
    let (sender, receiver) = bounded::<T>(capacity.max(1));
    std::thread::scope(|scope| {
        for index in 0..workers {
            let receiver: Receiver<T> = receiver.clone();
            let (init, work) = (&init, &work);
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn_scoped(scope, move || {
                    let mut state = init(index);
                    for task in receiver.iter() {
                        work(&mut state, task);
                    }
                })
                .expect("the OS refused to start a worker thread");
        }
        drop(receiver);
        let submitter = Submitter { sender };
        let result = produce(&submitter);
        drop(submitter);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn every_task_runs_exactly_once() {
        let seen = Mutex::new(Vec::new());
        run(
            4,
            2,
            |_| (),
            |_, n: usize| seen.lock().unwrap().push(n),
            |s| {
                for n in 0..1000 {
                    s.submit(n).unwrap();
                }
            },
        );
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn queue_bounds_tasks_in_flight() {
        // Tasks wait until released; with capacity 3 and 2 workers the
        // producer can be at most 2 + 3 tasks ahead of the completed ones.
        let done = AtomicUsize::new(0);
        let max_ahead = AtomicUsize::new(0);
        run(
            2,
            3,
            |_| (),
            |_, _: usize| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                done.fetch_add(1, Ordering::SeqCst);
            },
            |s| {
                for n in 0..50 {
                    s.submit(n).unwrap();
                    let ahead = n + 1 - done.load(Ordering::SeqCst);
                    max_ahead.fetch_max(ahead, Ordering::SeqCst);
                }
            },
        );
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert!(max_ahead.load(Ordering::SeqCst) <= 2 + 3 + 1);
    }

    #[test]
    fn workers_keep_their_own_state() {
        let totals = Mutex::new(Vec::new());
        struct State<'a>(usize, &'a Mutex<Vec<usize>>);
        impl Drop for State<'_> {
            fn drop(&mut self) {
                self.1.lock().unwrap().push(self.0);
            }
        }
        run(
            3,
            4,
            |_| State(0, &totals),
            |state, n: usize| state.0 += n,
            |s| (1..=100).for_each(|n| s.submit(n).unwrap()),
        );
        let totals = totals.into_inner().unwrap();
        assert_eq!(totals.len(), 3);
        assert_eq!(totals.iter().sum::<usize>(), 5050);
    }
}
