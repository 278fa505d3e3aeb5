//! A fixed pool of worker threads over a bounded work queue.
//!
//! [`run`] starts `workers` threads inside a [`std::thread::scope`] (so tasks
//! may borrow from the caller), gives each one its own state from `init`
//! (typically reusable buffers), and then calls `produce` on the calling
//! thread with a [`Submitter`]. Every [`Submitter::submit`] blocks while the
//! queue holds `capacity` tasks, so a producer that walks millions of files
//! never holds more than `capacity` tasks in memory: memory stays bounded
//! whatever the input. When `produce` returns, the queue is closed, the
//! workers drain it and exit, and `run` returns what `produce` returned.
//!
//! The engine, the store and the network server all schedule their work
//! through this one pool.

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
