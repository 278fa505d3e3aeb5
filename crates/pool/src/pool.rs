//! The long-lived worker pool and the scopes that lend it borrowed tasks.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::{Ordered, Scratch};

/// How many tasks per worker the queue holds, not yet started, before
/// [`Scope::spawn`] blocks: enough that a worker finishing a task finds the
/// next one waiting, few enough that memory stays bounded.
const QUEUED_TASKS_PER_WORKER: usize = 2;

/// A panic caught on a worker, to be raised again on the thread that waits.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// A task as queued: boxed so that tasks of any type share one queue.
type Task<'env> = Box<dyn FnOnce(&mut Scratch) + Send + 'env>;

/// The source of [`Pool`] ids; 0 is never handed out and means "no pool".
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the pool whose worker this thread is, or 0 on any thread
    /// that is not a worker.
    static WORKER_OF: Cell<u64> = const { Cell::new(0) };
}

/// A fixed set of worker threads that live as long as the pool.
///
/// Work reaches the threads through a [`Scope`] (see [`Pool::scope`]), whose
/// tasks may borrow from the caller. Each worker owns one [`Scratch`] for its
/// whole life and lends it to every task it runs. All scopes share one
/// queue of at most `2 * workers` tasks not yet started, so several callers
/// (the engine, the chunk store, the network server) can use one pool at the
/// same time from different threads without any of them holding unbounded
/// work in memory.
///
/// Dropping the pool closes the queue and joins the workers.
pub struct Pool {
    /// The sending side of the queue; `None` only while the pool is dropped.
    queue: Option<Sender<Job>>,
    /// The worker threads, joined on drop.
    threads: Vec<JoinHandle<()>>,
    /// This pool's id, which its workers keep in [`WORKER_OF`].
    id: u64,
}

impl Pool {
    /// Starts `workers` threads (at least one), named `worker-0`,
    /// `worker-1`, ..., each with its own [`Scratch`].
    ///
    /// # Panics
    /// When the operating system refuses to start a thread.
    pub fn new(workers: usize) -> Pool {
        Pool::with_queue(workers, QUEUED_TASKS_PER_WORKER)
    }

    /// [`Pool::new`] with a queue of `per_worker * workers` tasks not yet
    /// started (at least one per worker), for a caller whose tasks cost
    /// little memory until they run and who must keep the workers busy
    /// while it is away doing something else (the put of a tree of small
    /// files, whose walking thread commits to the registry now and then).
    ///
    /// # Panics
    /// As [`Pool::new`].
    pub fn with_queue(workers: usize, per_worker: usize) -> Pool {
        Pool::start(workers, per_worker, 0)
    }

    /// [`Pool::with_queue`] whose workers run `steps` nice steps below the
    /// thread that makes the pool (Linux; elsewhere the same as
    /// [`Pool::with_queue`]), for a caller that feeds the workers and then
    /// consumes their results in order on its own thread: when it has work
    /// it gets a core before they do, so its share of the job never piles
    /// up behind theirs and then runs alone once they are done (DECISIONS
    /// 568). Nice steps only weigh where threads compete for a core: with
    /// a core free, or the caller idle, the workers run at full speed. On
    /// Linux they weigh against the other threads of the same scheduling
    /// group (the process's session or cgroup), not the whole machine.
    ///
    /// # Panics
    /// As [`Pool::new`].
    pub fn with_queue_below_caller(workers: usize, per_worker: usize, steps: u8) -> Pool {
        Pool::start(workers, per_worker, steps)
    }

    fn start(workers: usize, per_worker: usize, steps: u8) -> Pool {
        let workers = workers.max(1);
        let niceness = (steps > 0)
            .then(|| current_niceness().map(|n| (n + i32::from(steps)).min(MAX_NICENESS)))
            .flatten();
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let (queue, jobs) = bounded::<Job>(per_worker.max(1) * workers);
        let threads = (0..workers)
            .map(|index| {
                let jobs = jobs.clone();
                std::thread::Builder::new()
                    .name(format!("worker-{index}"))
                    .spawn(move || {
                        if let Some(n) = niceness {
                            set_niceness(n);
                        }
                        run_jobs(id, &jobs);
                    })
                    .expect("the OS refused to start a worker thread")
            })
            .collect();
        Pool {
            queue: Some(queue),
            threads,
            id,
        }
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// Calls `f` with a [`Scope`] whose tasks may borrow anything that
    /// outlives this call, and returns what `f` returned once every task
    /// spawned in the scope has finished.
    ///
    /// The wait happens however `f` ends: if `f` panics, the panic continues
    /// only after every task of the scope has finished, so no task can
    /// outlive the data it borrows. A task that panics does not stop its
    /// worker or the other tasks; the first such panic is raised again here,
    /// after all tasks finished (a panic of `f` itself takes precedence).
    ///
    /// Several threads may each hold a scope on the same pool at the same
    /// time; their tasks share the workers and the queue.
    ///
    /// # Panics
    /// Re-raises the panic of `f` or of a task, as above. Panics when called
    /// from a task running on this same pool: the task would wait for tasks
    /// queued behind it while holding one of the workers they need, which
    /// deadlocks once every worker does the same. (A task may use a scope of
    /// a *different* pool, as long as no cycle of pools waits on itself.)
    ///
    /// # Borrowing
    /// Tasks may borrow what lives outside `f`, but not locals of `f`, which
    /// are gone before the scope waits for its tasks:
    ///
    /// ```compile_fail
    /// let pool = cryptstream_pool::Pool::new(1);
    /// pool.scope(|scope| {
    ///     let local = vec![1u8];
    ///     scope.spawn(|_| assert_eq!(local.len(), 1));
    /// });
    /// ```
    ///
    /// A task cannot spawn more tasks into its own scope (the scope is not
    /// `Sync`), since it would block its worker on a full queue:
    ///
    /// ```compile_fail
    /// let pool = cryptstream_pool::Pool::new(1);
    /// pool.scope(|scope| scope.spawn(|_| scope.spawn(|_| ())));
    /// ```
    pub fn scope<'env, R>(&self, f: impl FnOnce(&Scope<'_, 'env>) -> R) -> R {
        assert_ne!(
            WORKER_OF.with(Cell::get),
            self.id,
            "Pool::scope called from a task running on the same pool: \
             it could wait forever for workers that are all waiting for it"
        );
        let scope = Scope {
            pool: self,
            tasks: Arc::new(ScopeTasks::default()),
            env: PhantomData,
            not_shared: PhantomData,
        };
        let result = {
            // Waits when dropped, that is after `f` returns and also while
            // a panic of `f` unwinds past this frame.
            let _wait = WaitForTasks(&scope.tasks);
            f(&scope)
        };
        if let Some(payload) = scope.tasks.take_panic() {
            panic::resume_unwind(payload);
        }
        result
    }

    /// The sending side of the queue.
    fn queue(&self) -> &Sender<Job> {
        self.queue
            .as_ref()
            .expect("the queue stays open until the pool is dropped")
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers())
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // No scope can be open (each borrows the pool), so the queue is
        // empty or draining; closing it lets every worker's loop end.
        drop(self.queue.take());
        let current = std::thread::current().id();
        for thread in self.threads.drain(..) {
            // A task that owned the last handle on the pool (through an
            // `Arc`) drops it on a worker: that worker cannot join itself, it
            // ends on its own once the task returns.
            if thread.thread().id() == current {
                continue;
            }
            // Jobs catch their tasks' panics, so a worker never ends in a
            // panic and there is nothing to report.
            let _ = thread.join();
        }
    }
}

/// The largest nice value (the lowest priority) Linux knows.
const MAX_NICENESS: i32 = 19;

/// The calling thread's nice value, where threads have their own.
fn current_niceness() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // On Linux, `PRIO_PROCESS` with no id reads the calling thread.
        rustix::process::getpriority_process(None).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Sets the calling thread's nice value; best effort (a sandbox may refuse
/// it, and the pool works the same, only less well balanced).
fn set_niceness(niceness: i32) {
    #[cfg(target_os = "linux")]
    {
        // On Linux, `PRIO_PROCESS` with no id sets the calling thread only
        // (elsewhere it would set the whole process, hence the cfg).
        let _ = rustix::process::setpriority_process(None, niceness);
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = niceness;
    }
}

/// The loop of one worker thread of pool `pool_id`: runs jobs until the
/// queue is closed and empty.
fn run_jobs(pool_id: u64, jobs: &Receiver<Job>) {
    WORKER_OF.with(|worker_of| worker_of.set(pool_id));
    let mut scratch = Scratch::default();
    for job in jobs.iter() {
        job.run(&mut scratch);
    }
}

/// A handle on a [`Pool`] that accepts tasks borrowing data of lifetime
/// `'env`; see [`Pool::scope`].
///
/// A scope is neither `Send` nor `Sync`: tasks cannot capture it, so a task
/// cannot queue more tasks behind itself (which could block every worker).
pub struct Scope<'pool, 'env> {
    /// The pool whose queue the tasks go to.
    pool: &'pool Pool,
    /// The tasks of this scope still to finish, and their first panic.
    pub(crate) tasks: Arc<ScopeTasks>,
    /// Makes `'env` invariant: were it covariant, `&Scope<'_, 'env>` could
    /// be shortened to a lifetime that ends inside `f`, and tasks could
    /// borrow locals of `f` that are gone before [`Pool::scope`] waits.
    env: PhantomData<&'env mut &'env ()>,
    /// Makes the scope neither `Send` nor `Sync`.
    not_shared: PhantomData<*const ()>,
}

impl<'pool, 'env> Scope<'pool, 'env> {
    /// Queues `task` to run on one of the pool's workers with that worker's
    /// [`Scratch`]. Blocks while the pool's queue holds `2 * workers` tasks
    /// not yet started (the queue is shared by every scope on the pool), so
    /// a producer never gets far ahead of the workers.
    ///
    /// Every queued task runs; none is dropped, not even when `f` or another
    /// task panics. To stop work early, have tasks check a
    /// [`Cancel`](crate::Cancel).
    ///
    /// # Panics
    /// When every worker thread has stopped, which does not happen while
    /// the pool is alive (workers survive the panics of tasks).
    pub fn spawn(&self, task: impl FnOnce(&mut Scratch) + Send + 'env) {
        let task: Task<'env> = Box::new(task);
        // SAFETY: only the lifetime bound of the trait object changes, which
        // leaves its layout as it was. Extending `'env` to `'static` is sound
        // because the task is run or dropped before `Pool::scope` (the call
        // that created `self`) returns or unwinds past its frame, and
        // everything the task borrows outlives that call:
        // - `'env` is a lifetime parameter of `Pool::scope`, and `Scope` is
        //   invariant in it, so `'env` covers the whole `Pool::scope` call
        //   and cannot be shortened to a lifetime inside `f`.
        // - `TaskDone::new` counts the task in `self.tasks` before it is
        //   queued, and the count is decremented only when its `TaskDone` is
        //   dropped, after the task itself was consumed or dropped: `Job::run`
        //   drops `done` last, and a `Job` dropped unrun drops its fields in
        //   declaration order, `task` before `done`. Task panics are caught
        //   inside `Job::run`, so the decrement happens on every path.
        // - `Pool::scope` waits for the count to reach zero in the `Drop` of
        //   a `WaitForTasks` guard, which runs both when `f` returns and when
        //   a panic of `f` unwinds; the wait itself cannot panic (lock
        //   poisoning is ignored).
        // - The pool outlives the scope and its workers never drop a queued
        //   job without running it, so no job is left behind in the queue.
        // - After the decrement the worker touches only `ScopeTasks`, which it
        //   keeps alive through its own `Arc`.
        let task: Task<'static> = unsafe { std::mem::transmute::<Task<'env>, Task<'static>>(task) };
        let job = Job {
            task,
            done: TaskDone::new(&self.tasks),
        };
        if self.pool.queue().send(job).is_err() {
            // The job came back inside the error and was dropped, which
            // dropped the task and uncounted it.
            panic!("every worker thread of the pool has stopped");
        }
    }

    /// Starts an ordered pipeline on this scope: tasks submitted through
    /// the returned [`Ordered`] run in parallel, and their results are
    /// handed to `consume` on the calling thread in submission order, with
    /// at most `max_bytes_in_flight` bytes (as declared by each
    /// [`Ordered::submit`]) submitted and not yet consumed.
    pub fn ordered<T: Send + 'env, C: FnMut(T)>(
        &self,
        max_bytes_in_flight: u64,
        consume: C,
    ) -> Ordered<'_, 'pool, 'env, T, C> {
        Ordered::new(self, max_bytes_in_flight, consume)
    }
}

/// One queued task and the count it is part of.
struct Job {
    /// The task. Its real lifetime bound is the `'env` of its scope; see the
    /// SAFETY comment in [`Scope::spawn`]. Declared before `done` so that a
    /// job dropped unrun drops the task before it is uncounted.
    task: Task<'static>,
    /// Uncounts the task when dropped.
    done: TaskDone,
}

impl Job {
    /// Runs the task, catching its panic for the scope, then uncounts it.
    fn run(self, scratch: &mut Scratch) {
        let Job { task, done } = self;
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| task(scratch))) {
            done.tasks.record_panic(payload);
        }
        drop(done);
    }
}

/// The tasks of one scope that have not finished, and the first panic.
#[derive(Default)]
pub(crate) struct ScopeTasks {
    /// The count and the panic.
    state: Mutex<TaskCount>,
    /// Signalled when the count drops to zero.
    all_done: Condvar,
}

/// What [`ScopeTasks`] guards.
#[derive(Default)]
struct TaskCount {
    /// Tasks counted and not yet finished (or dropped).
    outstanding: usize,
    /// The first panic of a task, raised again by [`Pool::scope`].
    panic: Option<Panic>,
}

impl ScopeTasks {
    /// Locks the state. Nothing panics while holding the lock, and the
    /// state is consistent between statements anyway, so poisoning is
    /// ignored: the wait in [`WaitForTasks`] must never panic.
    fn lock(&self) -> MutexGuard<'_, TaskCount> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `payload` to raise from [`Pool::scope`] if it is the scope's
    /// first panic.
    pub(crate) fn record_panic(&self, payload: Panic) {
        let mut state = self.lock();
        if state.panic.is_none() {
            state.panic = Some(payload);
            return;
        }
        drop(state);
        // A payload's destructor is user code and may itself panic; that
        // must not take the worker down.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
    }

    /// Takes the first panic, if any.
    fn take_panic(&self) -> Option<Panic> {
        self.lock().panic.take()
    }

    /// Blocks until every counted task has finished.
    fn wait_until_idle(&self) {
        let mut state = self.lock();
        while state.outstanding > 0 {
            state = self
                .all_done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Counts one task of a scope for as long as it lives.
struct TaskDone {
    /// The scope's count.
    tasks: Arc<ScopeTasks>,
}

impl TaskDone {
    /// Counts a new task in `tasks`.
    fn new(tasks: &Arc<ScopeTasks>) -> TaskDone {
        tasks.lock().outstanding += 1;
        TaskDone {
            tasks: Arc::clone(tasks),
        }
    }
}

impl Drop for TaskDone {
    fn drop(&mut self) {
        let mut state = self.tasks.lock();
        state.outstanding -= 1;
        if state.outstanding == 0 {
            self.tasks.all_done.notify_all();
        }
    }
}

/// Waits, when dropped, for every task of a scope to finish.
struct WaitForTasks<'a>(&'a ScopeTasks);

impl Drop for WaitForTasks<'_> {
    fn drop(&mut self) {
        self.0.wait_until_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ordered;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// The text of a panic payload raised with a literal or a format string.
    fn panic_message(payload: &Panic) -> &str {
        payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("<not a string>")
    }

    #[test]
    fn tasks_borrow_stack_data() {
        let pool = Pool::new(3);
        let input: Vec<u64> = (0..100).collect();
        let mut squares = vec![0u64; 100];
        pool.scope(|scope| {
            for (slot, n) in squares.iter_mut().zip(&input) {
                scope.spawn(move |_| *slot = n * n);
            }
        });
        assert_eq!(squares, input.iter().map(|n| n * n).collect::<Vec<_>>());
    }

    #[test]
    fn scope_returns_what_the_closure_returns() {
        let pool = Pool::new(1);
        assert_eq!(pool.scope(|_| 42), 42);
    }

    #[test]
    fn at_least_one_worker_and_workers_are_named() {
        let pool = Pool::new(0);
        assert_eq!(pool.workers(), 1);
        let name = Mutex::new(None);
        pool.scope(|scope| {
            scope.spawn(|_| {
                *name.lock().unwrap() = std::thread::current().name().map(str::to_owned);
            });
        });
        assert_eq!(name.into_inner().unwrap().as_deref(), Some("worker-0"));
    }

    #[test]
    fn each_worker_keeps_its_scratch_between_tasks_and_scopes() {
        let pool = Pool::new(1);
        pool.scope(|scope| scope.spawn(|scratch| scratch.primary.resize(4096).fill(7)));
        let capacity = AtomicUsize::new(0);
        pool.scope(|scope| {
            scope.spawn(|scratch| capacity.store(scratch.primary.capacity(), Ordering::SeqCst));
        });
        assert!(capacity.into_inner() >= 4096);
    }

    #[test]
    fn spawn_blocks_while_the_queue_is_full() {
        // Tasks not yet started: at most 2 * workers queued plus one taken
        // off the queue by each worker and not yet counted as started.
        let pool = Pool::new(2);
        let started = AtomicUsize::new(0);
        let max_ahead = AtomicUsize::new(0);
        pool.scope(|scope| {
            for n in 0..60 {
                scope.spawn(|_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                });
                let ahead = n + 1 - started.load(Ordering::SeqCst);
                max_ahead.fetch_max(ahead, Ordering::SeqCst);
            }
        });
        assert_eq!(started.into_inner(), 60);
        assert!(max_ahead.into_inner() <= 3 * pool.workers());
    }

    #[test]
    fn a_task_panic_is_raised_by_scope_after_all_tasks_and_the_pool_survives() {
        let pool = Pool::new(1);
        let ran = AtomicUsize::new(0);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.scope(|scope| {
                scope.spawn(|_| panic!("task failed"));
                for _ in 0..10 {
                    scope.spawn(|_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
        }));
        let payload = caught.expect_err("the task's panic must reach the caller");
        assert_eq!(panic_message(&payload), "task failed");
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        // The single worker survived the panic and still runs tasks.
        pool.scope(|scope| {
            scope.spawn(|_| {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        });
        assert_eq!(ran.into_inner(), 11);
    }

    #[test]
    fn a_panicking_closure_still_waits_for_its_tasks() {
        let pool = Pool::new(2);
        let finished = AtomicUsize::new(0);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.scope(|scope| {
                for _ in 0..20 {
                    scope.spawn(|_| {
                        std::thread::sleep(Duration::from_millis(2));
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
                panic!("closure failed");
            })
        }));
        // Every task had finished before the panic got here.
        assert_eq!(finished.load(Ordering::SeqCst), 20);
        let payload = caught.expect_err("the closure's panic must reach the caller");
        assert_eq!(panic_message(&payload), "closure failed");
    }

    #[test]
    fn two_scopes_from_two_threads_at_once() {
        let pool = Pool::new(2);
        let barrier = std::sync::Barrier::new(2);
        let outputs: Vec<Vec<u64>> = std::thread::scope(|threads| {
            let handles: Vec<_> = (0..2u64)
                .map(|t| {
                    let (pool, barrier) = (&pool, &barrier);
                    threads.spawn(move || {
                        let mut out = Vec::new();
                        pool.scope(|scope| {
                            barrier.wait();
                            let mut ordered: Ordered<'_, '_, '_, u64, _> =
                                scope.ordered(8, |n| out.push(n));
                            for n in 0..200 {
                                ordered.submit(1, move |_| {
                                    std::thread::sleep(Duration::from_micros((n * 37 % 5) * 100));
                                    t * 1000 + n
                                });
                            }
                            ordered.finish();
                        });
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, out) in outputs.iter().enumerate() {
            let expected: Vec<u64> = (0..200).map(|n| t as u64 * 1000 + n).collect();
            assert_eq!(out, &expected);
        }
    }

    #[test]
    fn a_scope_opened_inside_a_task_of_the_same_pool_panics_clearly() {
        let pool = Pool::new(2);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.scope(|scope| scope.spawn(|_| pool.scope(|_| ())));
        }));
        let payload = caught.expect_err("a nested scope on the same pool must panic");
        assert!(panic_message(&payload).contains("same pool"));
        // A scope on another pool is fine, and this pool still works.
        let other = Pool::new(1);
        let ran = AtomicUsize::new(0);
        pool.scope(|scope| {
            scope.spawn(|_| {
                other.scope(|inner| {
                    inner.spawn(|_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                });
            });
        });
        assert_eq!(ran.into_inner(), 1);
    }

    /// The nice value of each worker of `pool`, read on the worker.
    #[cfg(target_os = "linux")]
    fn worker_niceness(pool: &Pool) -> Vec<i32> {
        let seen = Mutex::new(Vec::new());
        pool.scope(|scope| {
            for _ in 0..pool.workers() {
                scope.spawn(|_| {
                    let n = current_niceness().expect("getpriority on a worker");
                    seen.lock().unwrap().push(n);
                    // Holds this worker so the next task goes to another.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                });
            }
        });
        seen.into_inner().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn workers_below_the_caller_run_that_many_nice_steps_lower_and_others_do_not() {
        // Each test runs on a thread of its own, whose niceness the pools
        // start from; the thread's own value is left as it was.
        let caller = current_niceness().expect("getpriority on the test thread");
        let below = Pool::with_queue_below_caller(2, 1, 3);
        assert_eq!(
            worker_niceness(&below),
            vec![(caller + 3).min(MAX_NICENESS); 2]
        );
        assert_eq!(worker_niceness(&Pool::with_queue(2, 1)), vec![caller; 2]);
        assert_eq!(
            worker_niceness(&Pool::with_queue_below_caller(1, 1, 0)),
            vec![caller]
        );
        assert_eq!(current_niceness(), Some(caller));
        // Steps past the lowest priority stop at it.
        let floor = Pool::with_queue_below_caller(1, 1, 200);
        assert_eq!(worker_niceness(&floor), vec![MAX_NICENESS]);
    }
}
