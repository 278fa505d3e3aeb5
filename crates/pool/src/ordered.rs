//! Parallel tasks whose results come back in submission order under a
//! byte budget.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};

use crossbeam_channel::{bounded, Receiver, SendError, TryRecvError};

use crate::pool::Panic;
use crate::{Scope, Scratch};

/// What a pipeline task sends back: its result, or the panic that ended it.
type Outcome<T> = Result<T, Panic>;

/// The message when a task's result channel closed without a result, which
/// only happens if its job is dropped unrun, and the pool never does that.
const TASK_NEVER_RAN: &str = "a pipeline task was dropped without running";

/// An ordered pipeline on a [`Scope`], made by [`Scope::ordered`].
///
/// [`Ordered::submit`] queues tasks that run in parallel on the pool;
/// their results are handed to the `consume` closure on the thread that
/// submits, in submission order, whatever order the tasks finish in. Each
/// task declares how many bytes it accounts for (the buffer it owns, say);
/// the bytes of tasks submitted and not yet consumed stay within the budget
/// given to [`Scope::ordered`], except that a single task larger than the
/// whole budget still runs, alone. This is how a reader can stream a large
/// file through the pool chunk by chunk with bounded memory and write the
/// sealed chunks out in order.
///
/// A task that panics has its panic raised again on the submitting thread,
/// from the `submit` or `finish` call that reaches its result.
///
/// Call [`Ordered::finish`] to consume the last results. Dropping the
/// pipeline without finishing waits for its tasks and drops their results
/// unconsumed (a task panic found then is raised by [`Pool::scope`](crate::Pool::scope)).
#[must_use = "results are consumed only by `submit` and `finish`"]
pub struct Ordered<'scope, 'pool, 'env, T, C> {
    /// Where the tasks are spawned.
    scope: &'scope Scope<'pool, 'env>,
    /// The most bytes submitted and not yet consumed, unless a single task
    /// is bigger.
    budget: u64,
    /// The bytes of the tasks in `pending`.
    in_flight: u64,
    /// Tasks submitted and not yet consumed, oldest first.
    pending: VecDeque<Pending<T>>,
    /// Receives the results in order.
    consume: C,
}

/// A submitted task whose result has not been consumed.
struct Pending<T> {
    /// The bytes it accounts for.
    bytes: u64,
    /// Where its outcome arrives (a channel of capacity one, used once).
    outcome: Receiver<Outcome<T>>,
}

impl<'scope, 'pool, 'env, T: Send + 'env, C: FnMut(T)> Ordered<'scope, 'pool, 'env, T, C> {
    /// An empty pipeline; see [`Scope::ordered`].
    pub(crate) fn new(scope: &'scope Scope<'pool, 'env>, budget: u64, consume: C) -> Self {
        Ordered {
            scope,
            budget,
            in_flight: 0,
            pending: VecDeque::new(),
            consume,
        }
    }

    /// Submits `task`, which accounts for `bytes` until its result is
    /// consumed.
    ///
    /// First consumes the results that are already finished and next in
    /// order. Then, while the bytes in flight plus `bytes` exceed the budget
    /// and some task is in flight, waits for the oldest task and consumes
    /// its result. Then queues `task` (which may block while the pool's queue
    /// is full; see [`Scope::spawn`]).
    ///
    /// # Panics
    /// Re-raises the panic of a task whose result it reaches, and lets a
    /// panic of `consume` through.
    pub fn submit(&mut self, bytes: u64, task: impl FnOnce(&mut Scratch) -> T + Send + 'env) {
        self.make_room(bytes);
        let (sender, outcome) = bounded::<Outcome<T>>(1);
        self.scope.spawn(move |scratch| {
            let result = panic::catch_unwind(AssertUnwindSafe(|| task(scratch)));
            // The receiver is gone only if the pipeline was leaked; keep the
            // panic for the scope rather than lose it.
            if let Err(SendError(Err(payload))) = sender.send(result) {
                panic::resume_unwind(payload);
            }
        });
        self.in_flight = self.in_flight.saturating_add(bytes);
        self.pending.push_back(Pending { bytes, outcome });
    }

    /// Consumes the results that are already finished and next in order,
    /// then, while the bytes in flight plus `bytes` exceed the budget and
    /// some task is in flight, waits for the oldest task and consumes its
    /// result: what [`Ordered::submit`] does before it queues a task. A
    /// caller that must start something the task will wait for (a read
    /// on another thread) calls this first, so that it starts only what
    /// the budget has room for, and before the pool's queue is full.
    ///
    /// # Panics
    /// As [`Ordered::submit`].
    pub fn make_room(&mut self, bytes: u64) {
        self.consume_finished();
        while !self.pending.is_empty() && self.in_flight.saturating_add(bytes) > self.budget {
            self.consume_oldest();
        }
    }

    /// Waits for every task still in flight and consumes their results in
    /// order.
    ///
    /// # Panics
    /// Re-raises the panic of a task, and lets a panic of `consume` through.
    pub fn finish(mut self) {
        while !self.pending.is_empty() {
            self.consume_oldest();
        }
    }

    /// The bytes of the tasks submitted and not yet consumed.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight
    }

    /// Consumes results from the front for as long as they are finished.
    fn consume_finished(&mut self) {
        while let Some(oldest) = self.pending.front() {
            match oldest.outcome.try_recv() {
                Ok(outcome) => {
                    let bytes = oldest.bytes;
                    self.pending.pop_front();
                    self.deliver(bytes, outcome);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => panic!("{TASK_NEVER_RAN}"),
            }
        }
    }

    /// Waits for the oldest task, if any, and consumes its result.
    fn consume_oldest(&mut self) {
        if let Some(oldest) = self.pending.pop_front() {
            let outcome = oldest.outcome.recv().expect(TASK_NEVER_RAN);
            self.deliver(oldest.bytes, outcome);
        }
    }

    /// Releases `bytes` and hands a result to `consume`, or re-raises a
    /// task's panic.
    fn deliver(&mut self, bytes: u64, outcome: Outcome<T>) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
        match outcome {
            Ok(result) => (self.consume)(result),
            Err(payload) => panic::resume_unwind(payload),
        }
    }
}

impl<T, C> Drop for Ordered<'_, '_, '_, T, C> {
    fn drop(&mut self) {
        // Waiting here costs nothing extra (the scope waits for these tasks
        // anyway) and guarantees no task panic is lost with its channel.
        for pending in self.pending.drain(..) {
            if let Ok(Err(payload)) = pending.outcome.recv() {
                self.scope.tasks.record_panic(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cancel, Pool};
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    /// A tiny linear congruential generator (Knuth's MMIX constants), enough
    /// to vary task durations and sizes reproducibly.
    struct Lcg(u64);

    impl Lcg {
        /// The next number below `bound`.
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % bound
        }
    }

    #[test]
    fn results_arrive_in_submission_order_whatever_order_tasks_finish() {
        let pool = Pool::new(4);
        let mut lcg = Lcg(7);
        for budget in [1, 5, 1000] {
            let mut results = Vec::new();
            pool.scope(|scope| {
                let mut ordered = scope.ordered(budget, |n: usize| results.push(n));
                for n in 0..150 {
                    let sleep = Duration::from_micros(lcg.below(4000));
                    ordered.submit(1, move |_| {
                        std::thread::sleep(sleep);
                        n
                    });
                }
                ordered.finish();
            });
            assert_eq!(results, (0..150).collect::<Vec<_>>(), "budget {budget}");
        }
    }

    #[test]
    fn make_room_consumes_the_oldest_results_until_the_bytes_fit() {
        let pool = Pool::new(2);
        let mut results = Vec::new();
        pool.scope(|scope| {
            let mut ordered = scope.ordered(10, |n: u64| results.push(n));
            // The third submit waits for the first (12 > 10); slow tasks
            // leave the other two in flight.
            for n in 0..3 {
                ordered.submit(4, move |_| {
                    std::thread::sleep(Duration::from_millis(20));
                    n
                });
            }
            // 8 + 4 > 10: the oldest is waited for and consumed.
            ordered.make_room(4);
            assert!(ordered.in_flight_bytes() <= 4);
            ordered.finish();
        });
        assert_eq!(results, [0, 1, 2]);
    }

    #[test]
    fn results_may_borrow_from_the_caller() {
        let pool = Pool::new(2);
        let words = ["alpha", "beta", "gamma"];
        let mut seen = Vec::new();
        pool.scope(|scope| {
            let mut ordered = scope.ordered(u64::MAX, |w: &str| seen.push(w));
            for w in &words {
                ordered.submit(0, move |_| &w[1..]);
            }
            ordered.finish();
        });
        assert_eq!(seen, ["lpha", "eta", "amma"]);
    }

    #[test]
    fn bytes_in_flight_never_exceed_the_budget_and_an_oversized_task_runs_alone() {
        const BUDGET: u64 = 100;
        const OVERSIZED: u64 = 250;
        let pool = Pool::new(4);
        let live = AtomicU64::new(0);
        let max_live = AtomicU64::new(0);
        let oversized_alone = AtomicBool::new(false);
        let mut lcg = Lcg(99);
        let mut consumed = 0;
        pool.scope(|scope| {
            let mut ordered = scope.ordered(BUDGET, |_: ()| consumed += 1);
            for n in 0..300 {
                let bytes = if n == 150 {
                    OVERSIZED
                } else {
                    1 + lcg.below(40)
                };
                let sleep = Duration::from_micros(lcg.below(2000));
                let (live, max_live, oversized_alone) = (&live, &max_live, &oversized_alone);
                ordered.submit(bytes, move |_| {
                    let before = live.fetch_add(bytes, Ordering::SeqCst);
                    max_live.fetch_max(before + bytes, Ordering::SeqCst);
                    if bytes == OVERSIZED {
                        oversized_alone.store(before == 0, Ordering::SeqCst);
                    }
                    std::thread::sleep(sleep);
                    live.fetch_sub(bytes, Ordering::SeqCst);
                });
                if bytes <= BUDGET {
                    assert!(ordered.in_flight_bytes() <= BUDGET);
                }
            }
            ordered.finish();
        });
        assert_eq!(consumed, 300);
        assert!(
            oversized_alone.into_inner(),
            "the oversized task overlapped another"
        );
        // The oversized task alone exceeds the budget; nothing else may.
        assert_eq!(max_live.into_inner(), OVERSIZED);
        assert_eq!(live.into_inner(), 0);
    }

    #[test]
    fn cancelled_tasks_skip_their_work_and_every_result_is_still_delivered() {
        #[derive(Debug, PartialEq)]
        enum Outcome {
            Done(usize),
            Skipped(usize),
        }
        let pool = Pool::new(2);
        let cancel = Cancel::new();
        let worked = AtomicUsize::new(0);
        let submitted = AtomicUsize::new(0);
        let submitted_when_cancelled = AtomicUsize::new(usize::MAX);
        let mut results = Vec::new();
        pool.scope(|scope| {
            let mut ordered = scope.ordered(4, |outcome: Outcome| {
                if outcome == Outcome::Done(5) {
                    cancel.cancel();
                    submitted_when_cancelled
                        .store(submitted.load(Ordering::SeqCst), Ordering::SeqCst);
                }
                results.push(outcome);
            });
            for n in 0..50 {
                let (cancel, worked) = (cancel.clone(), &worked);
                ordered.submit(1, move |_| {
                    if cancel.is_cancelled() {
                        return Outcome::Skipped(n);
                    }
                    worked.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(300));
                    Outcome::Done(n)
                });
                submitted.fetch_add(1, Ordering::SeqCst);
            }
            ordered.finish();
        });
        let cut = submitted_when_cancelled.into_inner();
        assert!(cut < 50, "the pipeline was cancelled while submitting");
        assert_eq!(results.len(), 50);
        for (n, outcome) in results.iter().enumerate() {
            match outcome {
                Outcome::Done(m) | Outcome::Skipped(m) => assert_eq!(*m, n),
            }
            // Tasks submitted after the flag was raised all saw it.
            if n >= cut {
                assert_eq!(*outcome, Outcome::Skipped(n));
            }
        }
        assert!(worked.into_inner() <= cut);
    }

    #[test]
    fn a_task_panic_is_raised_where_its_result_is_due_and_the_pool_survives() {
        let pool = Pool::new(2);
        let mut results = Vec::new();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.scope(|scope| {
                let mut ordered = scope.ordered(1000, |n: u32| results.push(n));
                for n in 0..10 {
                    ordered.submit(1, move |_| {
                        assert_ne!(n, 3, "task three failed");
                        n
                    });
                }
                ordered.finish();
            })
        }));
        assert!(caught.is_err());
        assert_eq!(results, [0, 1, 2]);
        let mut again = Vec::new();
        pool.scope(|scope| {
            let mut ordered = scope.ordered(1, |n: u32| again.push(n));
            (0..5).for_each(|n| ordered.submit(1, move |_| n));
            ordered.finish();
        });
        assert_eq!(again, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_pipeline_dropped_unfinished_keeps_a_task_panic_for_the_scope() {
        let pool = Pool::new(2);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.scope(|scope| {
                let mut ordered = scope.ordered(1000, |_: ()| ());
                ordered.submit(1, |_| std::thread::sleep(Duration::from_millis(2)));
                ordered.submit(1, |_| panic!("late failure"));
                drop(ordered);
            })
        }));
        let payload = caught.expect_err("the task's panic must reach the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"late failure"));
    }
}
