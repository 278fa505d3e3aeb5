//! The task queue shared by the parent and its workers: a bounded ring of
//! fixed-size [`TaskRecord`]s in a `memfd` mapping, with process-shared
//! semaphores to block on.
//!
//! Layout of the region (all offsets from its start, no pointers):
//!
//! ```text
//! 0                RingHeader   magic, sizes, head, tail, closing,
//!                               sem_t free (slots), sem_t ready (tasks)
//! slots_offset     Slot[capacity]        state word + TaskRecord (64 bytes)
//! workers_offset   WorkerEntry[max_workers]  pid + task in flight
//! paths_offset     [u8; PATH_BLOCK][capacity]  paths of the task in slot i
//! ```
//!
//! One producer (the parent) and many consumers (the workers). The truth is
//! in atomics; the semaphores only let a side sleep until the other has
//! done something, so a post lost to a process that died, or a spare post
//! added after one died, costs at most a spurious wake-up:
//!
//! * Each slot has a state word `index << 16 | phase << 14 | owner`:
//!   `FREE(i)` (the producer may write task `i` here), `READY(i)` (task `i`
//!   is published), `CLAIMED(i, w)` (worker `w` took task `i` and is copying
//!   it out). Putting the task index in the word makes every compare-and-swap
//!   immune to ABA when the ring wraps.
//! * The producer waits on `free`, checks that the slot at `tail` is
//!   `FREE(tail)`, writes the record, stores `READY(tail)`, bumps `tail` and
//!   posts `ready`.
//! * A worker waits on `ready`, and claims the task at `head` with one CAS
//!   `READY(h) -> CLAIMED(h, me)`: that CAS both takes the task and records
//!   who has it, so a worker that dies at any instant leaves either an
//!   unclaimed task, a `CLAIMED` slot naming it, or its `WorkerEntry`
//!   naming the task. Anyone who sees slot `h` already claimed helps move
//!   `head` on. The worker copies the record out, records the task in its
//!   `WorkerEntry`, frees the slot (`FREE(h + capacity)`) and posts `free`.
//! * When a worker dies the parent calls [`Ring::reclaim`]: it frees the
//!   slots the worker had claimed and returns their tasks together with the
//!   one in its `WorkerEntry`, to be run again.

use std::cell::UnsafeCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::ProcsError;

/// Marks a region as a cryptstream ring of this layout version.
const MAGIC: u64 = 0x6373_7472_696e_6701;
/// Bytes reserved for the paths of one task: input, output and relative
/// path, at most [`PATH_MAX`] each.
pub const PATH_BLOCK: usize = 3 * PATH_MAX;
/// The longest path (in bytes) a task can carry; Linux's own limit.
pub const PATH_MAX: usize = 4096;
/// Largest number of workers the state word can name.
pub const MAX_WORKERS: usize = 1 << 14;
/// Phase bits of a slot state word.
const PHASE_FREE: u64 = 0;
const PHASE_READY: u64 = 1;
const PHASE_CLAIMED: u64 = 2;
/// `output_len` of a task that has no output (verify).
pub const NO_OUTPUT: u32 = u32::MAX;

fn state(index: u64, phase: u64, owner: u32) -> u64 {
    (index << 16) | (phase << 14) | u64::from(owner)
}

fn state_phase(word: u64) -> u64 {
    (word >> 14) & 3
}

fn state_owner(word: u64) -> u32 {
    (word & 0x3fff) as u32
}

fn state_index(word: u64) -> u64 {
    word >> 16
}

/// What a task asks a worker to do.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    /// A file start to end: open, every segment, commit.
    Whole = 1,
    /// Chunks `first_chunk..first_chunk + chunk_count` of a split file.
    Segment = 2,
}

/// One task as it sits in shared memory: plain integers, no pointers. The
/// paths of a whole-file task are in the path block at `paths_offset` (an
/// offset from the start of the region).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// The parent's id of this task (unique within the run).
    pub task_id: u64,
    /// The split file a segment belongs to (0 for whole files).
    pub split_id: u64,
    /// First chunk of a segment.
    pub first_chunk: u64,
    /// Number of chunks of a segment.
    pub chunk_count: u64,
    /// Where this task's paths are, from the start of the region.
    pub paths_offset: u64,
    /// Bytes of the input path.
    pub input_len: u32,
    /// Bytes of the output path, or [`NO_OUTPUT`].
    pub output_len: u32,
    /// Bytes of the path relative to the input root.
    pub relative_len: u32,
    /// A [`TaskKind`] as its `u32` value.
    pub kind: u32,
}

/// A task taken off the ring, with its paths copied out.
#[derive(Clone, Debug)]
pub struct Popped {
    /// The record.
    pub record: TaskRecord,
    /// Input, output (empty when none) and relative path bytes.
    pub paths: [Vec<u8>; 3],
}

#[repr(C)]
struct RingHeader {
    magic: u64,
    capacity: u64,
    max_workers: u64,
    slots_offset: u64,
    workers_offset: u64,
    paths_offset: u64,
    total_len: u64,
    head: AtomicU64,
    tail: AtomicU64,
    closing: AtomicU32,
    _pad: u32,
    free: UnsafeCell<libc::sem_t>,
    ready: UnsafeCell<libc::sem_t>,
}

#[repr(C)]
struct Slot {
    state: AtomicU64,
    record: UnsafeCell<TaskRecord>,
}

#[repr(C)]
struct WorkerEntry {
    pid: AtomicU32,
    _pad: u32,
    /// Task id + 1 of the task the worker is running, 0 for none.
    in_flight: AtomicU64,
}

const fn align64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

/// The shared ring, mapped into this process.
pub struct Ring {
    base: *mut u8,
    len: usize,
    capacity: u64,
    max_workers: u64,
    fd: OwnedFd,
}

// SAFETY: every access to the shared region goes through atomics, the
// process-shared semaphores, or raw copies ordered by those atomics.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// What [`Ring::try_push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// The task is published.
    Pushed,
    /// No free slot right now; try again after a worker takes a task.
    Full,
}

impl Ring {
    /// Creates a ring of `capacity` slots for up to `max_workers` workers
    /// in a new `memfd` (close-on-exec; the parent passes it to workers
    /// explicitly). The memory is freed by the kernel when the last process
    /// holding the descriptor or a mapping ends, however it ends; it never
    /// has a name in `/dev/shm`.
    ///
    /// # Errors
    /// [`ProcsError::Ring`] when the memory cannot be created or mapped.
    pub fn create(capacity: usize, max_workers: usize) -> Result<Ring, ProcsError> {
        let capacity = capacity.max(1);
        let max_workers = max_workers.clamp(1, MAX_WORKERS);
        let slots_offset = align64(std::mem::size_of::<RingHeader>());
        let workers_offset = align64(slots_offset + capacity * std::mem::size_of::<Slot>());
        let paths_offset =
            align64(workers_offset + max_workers * std::mem::size_of::<WorkerEntry>());
        let total = paths_offset + capacity * PATH_BLOCK;
        let fd = rustix::fs::memfd_create("cryptstream-ring", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| ProcsError::Ring(e.into()))?;
        rustix::fs::ftruncate(&fd, total as u64).map_err(|e| ProcsError::Ring(e.into()))?;
        let ring = Ring::map(fd, total)?;
        // SAFETY: the region is fresh, zero-filled, large enough for the
        // header, and not yet shared with any other process.
        unsafe {
            let header = ring.base.cast::<RingHeader>();
            (*header).magic = MAGIC;
            (*header).capacity = capacity as u64;
            (*header).max_workers = max_workers as u64;
            (*header).slots_offset = slots_offset as u64;
            (*header).workers_offset = workers_offset as u64;
            (*header).paths_offset = paths_offset as u64;
            (*header).total_len = total as u64;
            if libc::sem_init((*header).free.get(), 1, capacity as libc::c_uint) != 0
                || libc::sem_init((*header).ready.get(), 1, 0) != 0
            {
                return Err(ProcsError::Ring(std::io::Error::last_os_error()));
            }
        }
        let mut ring = ring;
        ring.capacity = capacity as u64;
        ring.max_workers = max_workers as u64;
        for i in 0..capacity as u64 {
            ring.slot(i)
                .state
                .store(state(i, PHASE_FREE, 0), Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        Ok(ring)
    }

    /// Maps the ring that `fd` holds (in a worker).
    ///
    /// # Errors
    /// [`ProcsError::Ring`] when it cannot be mapped, and
    /// [`ProcsError::Protocol`] when it is not a ring of this layout.
    pub fn attach(fd: OwnedFd) -> Result<Ring, ProcsError> {
        let len = rustix::fs::fstat(&fd)
            .map_err(|e| ProcsError::Ring(e.into()))?
            .st_size as usize;
        if len < std::mem::size_of::<RingHeader>() {
            return Err(ProcsError::Protocol("shared ring is too small"));
        }
        let mut ring = Ring::map(fd, len)?;
        let header = ring.header();
        let (capacity, max_workers) = (header.capacity, header.max_workers);
        let fits = header.magic == MAGIC
            && header.total_len == len as u64
            && header.paths_offset as usize + capacity as usize * PATH_BLOCK <= len
            && header.workers_offset as usize
                + max_workers as usize * std::mem::size_of::<WorkerEntry>()
                <= header.paths_offset as usize
            && header.slots_offset as usize + capacity as usize * std::mem::size_of::<Slot>()
                <= header.workers_offset as usize;
        if !fits {
            return Err(ProcsError::Protocol("shared ring has another layout"));
        }
        ring.capacity = capacity;
        ring.max_workers = max_workers;
        Ok(ring)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Ring, ProcsError> {
        // SAFETY: a fresh shared mapping of the whole memfd, placed by the
        // kernel; it aliases nothing else in this process.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| ProcsError::Ring(e.into()))?;
        Ok(Ring {
            base: base.cast(),
            len,
            capacity: 0,
            max_workers: 0,
            fd,
        })
    }

    /// The memfd holding the ring (to pass to a worker).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Number of task slots.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: the region starts with a RingHeader (checked on attach,
        // written on create) and lives as long as `self`.
        unsafe { &*self.base.cast::<RingHeader>() }
    }

    fn slot(&self, index: u64) -> &Slot {
        let at = self.header().slots_offset as usize
            + (index % self.capacity) as usize * std::mem::size_of::<Slot>();
        // SAFETY: `at` is inside the slot array (checked on attach) and
        // 64-byte aligned.
        unsafe { &*self.base.add(at).cast::<Slot>() }
    }

    fn worker(&self, worker: u32) -> &WorkerEntry {
        assert!(
            u64::from(worker) < self.max_workers,
            "worker index {worker} is below max_workers, as the parent assigns it"
        );
        let at = self.header().workers_offset as usize
            + worker as usize * std::mem::size_of::<WorkerEntry>();
        // SAFETY: inside the worker table (checked on attach), aligned.
        unsafe { &*self.base.add(at).cast::<WorkerEntry>() }
    }

    fn paths_offset_of(&self, index: u64) -> usize {
        self.header().paths_offset as usize + (index % self.capacity) as usize * PATH_BLOCK
    }

    /// Publishes a task without blocking: `record.paths_offset` and the
    /// path lengths are filled in here (an `output_len` of [`NO_OUTPUT`]
    /// stays), and `paths` (input, output, relative; each at most
    /// [`PATH_MAX`] bytes) are copied to the slot's path block.
    pub fn try_push(&self, mut record: TaskRecord, paths: [&[u8]; 3]) -> Push {
        assert!(
            paths.iter().all(|p| p.len() <= PATH_MAX),
            "paths are checked against PATH_MAX before they are queued"
        );
        // SAFETY: `free` was initialised by sem_init in `create`.
        if unsafe { libc::sem_trywait(self.header().free.get()) } != 0 {
            return Push::Full;
        }
        let header = self.header();
        let index = header.tail.load(Ordering::Relaxed);
        let slot = self.slot(index);
        if slot.state.load(Ordering::Acquire) != state(index, PHASE_FREE, 0) {
            // A worker is still copying the task out of this slot (or died
            // doing so and has not been reclaimed yet): give the count back.
            // SAFETY: as above.
            unsafe { libc::sem_post(header.free.get()) };
            return Push::Full;
        }
        let offset = self.paths_offset_of(index);
        record.paths_offset = offset as u64;
        record.input_len = paths[0].len() as u32;
        if record.output_len != NO_OUTPUT {
            record.output_len = paths[1].len() as u32;
        }
        record.relative_len = paths[2].len() as u32;
        let mut at = offset;
        for path in paths {
            // SAFETY: the path block of this slot is PATH_BLOCK bytes inside
            // the region, and no worker reads it until READY is published.
            unsafe { std::ptr::copy_nonoverlapping(path.as_ptr(), self.base.add(at), path.len()) };
            at += path.len();
        }
        // SAFETY: the slot is FREE, so no worker reads the record now.
        unsafe { slot.record.get().write(record) };
        slot.state
            .store(state(index, PHASE_READY, 0), Ordering::Release);
        header.tail.store(index + 1, Ordering::Release);
        // SAFETY: `ready` was initialised by sem_init.
        unsafe { libc::sem_post(header.ready.get()) };
        Push::Pushed
    }

    /// Tasks published and not yet taken (approximate while workers run).
    pub fn queued(&self) -> u64 {
        let header = self.header();
        header
            .tail
            .load(Ordering::Acquire)
            .saturating_sub(header.head.load(Ordering::Acquire))
    }

    /// Waits up to `wait` for a task and takes it for worker `me`, who then
    /// has it in flight until [`Ring::task_done`]. `None` on time-out, on a
    /// signal, on a spurious wake-up, or when the ring is closing.
    pub fn pop(&self, me: u32, wait: Duration) -> Option<Popped> {
        let header = self.header();
        if header.closing.load(Ordering::Acquire) != 0 {
            return None;
        }
        if !self.wait_ready(wait) {
            return None;
        }
        loop {
            let h = header.head.load(Ordering::Acquire);
            if h >= header.tail.load(Ordering::Acquire) {
                return None;
            }
            let slot = self.slot(h);
            let word = slot.state.load(Ordering::Acquire);
            if word == state(h, PHASE_READY, 0) {
                if slot
                    .state
                    .compare_exchange(
                        word,
                        state(h, PHASE_CLAIMED, me),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
                {
                    continue;
                }
                let _ = header
                    .head
                    .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Relaxed);
                // SAFETY: the slot is CLAIMED by us: the producer does not
                // write it until we store FREE below.
                let record = unsafe { slot.record.get().read() };
                let paths = self.copy_paths(&record);
                self.worker(me)
                    .in_flight
                    .store(record.task_id + 1, Ordering::Release);
                slot.state
                    .store(state(h + self.capacity, PHASE_FREE, 0), Ordering::Release);
                // SAFETY: `free` was initialised by sem_init.
                unsafe { libc::sem_post(header.free.get()) };
                return Some(Popped { record, paths });
            }
            // Task `h` was taken by someone else: help move head past it.
            let _ = header
                .head
                .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn copy_paths(&self, record: &TaskRecord) -> [Vec<u8>; 3] {
        let output_len = if record.output_len == NO_OUTPUT {
            0
        } else {
            record.output_len
        };
        let lens =
            [record.input_len, output_len, record.relative_len].map(|n| (n as usize).min(PATH_MAX));
        let block = self.header().paths_offset as usize;
        let offset = (record.paths_offset as usize)
            .clamp(block, self.len.saturating_sub(PATH_BLOCK).max(block));
        let mut at = offset;
        lens.map(|n| {
            let mut out = vec![0u8; n];
            // SAFETY: the block starts inside the path area and holds
            // PATH_BLOCK >= the sum of the clamped lengths; the slot is ours.
            unsafe { std::ptr::copy_nonoverlapping(self.base.add(at), out.as_mut_ptr(), n) };
            at += n;
            out
        })
    }

    fn wait_ready(&self, wait: Duration) -> bool {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        let nanos = now.tv_nsec as u64 + u64::from(wait.subsec_nanos());
        let deadline = libc::timespec {
            tv_sec: now.tv_sec
                + wait.as_secs() as libc::time_t
                + (nanos / 1_000_000_000) as libc::time_t,
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `ready` was initialised by sem_init; the deadline is valid.
        unsafe { libc::sem_timedwait(self.header().ready.get(), &deadline) == 0 }
    }

    /// Worker `me` has reported its task done (call after the report is
    /// sent, so that a death in between shows the task as in flight).
    pub fn task_done(&self, me: u32) {
        self.worker(me).in_flight.store(0, Ordering::Release);
    }

    /// Records the pid of worker `slot` (for diagnostics).
    pub fn set_worker_pid(&self, worker: u32, pid: u32) {
        self.worker(worker).pid.store(pid, Ordering::Release);
    }

    /// Takes back everything dead worker `worker` held: frees the slots it
    /// had claimed and returns the ids of its tasks (claimed or in flight,
    /// without duplicates). Adds a spare `ready` post in case it died
    /// between taking a `ready` count and claiming a task.
    pub fn reclaim(&self, worker: u32) -> Vec<u64> {
        let header = self.header();
        let mut tasks = Vec::new();
        for i in 0..self.capacity {
            let slot = self.slot(i);
            let word = slot.state.load(Ordering::Acquire);
            if state_phase(word) == PHASE_CLAIMED && state_owner(word) == worker {
                let index = state_index(word);
                // SAFETY: the claimer is dead and the slot is not FREE, so
                // nobody else touches the record.
                let record = unsafe { slot.record.get().read() };
                tasks.push(record.task_id);
                slot.state.store(
                    state(index + self.capacity, PHASE_FREE, 0),
                    Ordering::Release,
                );
                let _ = header.head.compare_exchange(
                    index,
                    index + 1,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                // SAFETY: `free` was initialised by sem_init.
                unsafe { libc::sem_post(header.free.get()) };
            }
        }
        let entry = self.worker(worker);
        let in_flight = entry.in_flight.swap(0, Ordering::AcqRel);
        if in_flight != 0 && !tasks.contains(&(in_flight - 1)) {
            tasks.push(in_flight - 1);
        }
        entry.pid.store(0, Ordering::Release);
        // SAFETY: `ready` was initialised by sem_init.
        unsafe { libc::sem_post(header.ready.get()) };
        tasks
    }

    /// Tells every worker to stop taking tasks and wakes those waiting.
    pub fn close(&self) {
        let header = self.header();
        header.closing.store(1, Ordering::Release);
        for _ in 0..self.max_workers {
            // SAFETY: `ready` was initialised by sem_init.
            unsafe { libc::sem_post(header.ready.get()) };
        }
    }

    /// Whether [`Ring::close`] was called.
    pub fn closing(&self) -> bool {
        self.header().closing.load(Ordering::Acquire) != 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The semaphores are not destroyed: other processes may still have
        // the region mapped, and process-shared semaphores on Linux hold no
        // resources outside the memory itself.
        // SAFETY: base/len are the mapping made in `map`, used by no one
        // in this process any more.
        let _ = unsafe { rustix::mm::munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn record(id: u64) -> TaskRecord {
        TaskRecord {
            task_id: id,
            split_id: 0,
            first_chunk: 0,
            chunk_count: 0,
            paths_offset: 0,
            input_len: 3,
            output_len: NO_OUTPUT,
            relative_len: 1,
            kind: TaskKind::Whole as u32,
        }
    }

    #[test]
    fn tasks_come_out_in_order_with_their_paths() {
        let ring = Ring::create(4, 2).unwrap();
        for id in 0..4 {
            assert_eq!(ring.try_push(record(id), [b"abc", b"", b"x"]), Push::Pushed);
        }
        assert_eq!(ring.try_push(record(9), [b"abc", b"", b"x"]), Push::Full);
        for id in 0..4 {
            let popped = ring.pop(0, Duration::from_millis(100)).unwrap();
            assert_eq!(popped.record.task_id, id);
            assert_eq!(popped.paths[0], b"abc");
            assert!(popped.paths[1].is_empty());
            ring.task_done(0);
        }
        assert!(ring.pop(0, Duration::from_millis(10)).is_none());
    }

    #[test]
    fn a_second_mapping_sees_the_same_queue() {
        let ring = Ring::create(8, 1).unwrap();
        let other = Ring::attach(ring.fd().try_clone_to_owned().unwrap()).unwrap();
        let mut with_output = record(7);
        with_output.output_len = 0;
        ring.try_push(with_output, [b"in", b"out", b"r"]);
        let popped = other.pop(0, Duration::from_millis(100)).unwrap();
        assert_eq!(popped.record.task_id, 7);
        assert_eq!(popped.paths[1], b"out");
    }

    #[test]
    fn every_task_is_taken_once_by_concurrent_consumers() {
        let ring = Ring::create(8, 4).unwrap();
        let done = AtomicBool::new(false);
        let taken = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for me in 0..4u32 {
                let (ring, done, taken) = (&ring, &done, &taken);
                scope.spawn(move || loop {
                    match ring.pop(me, Duration::from_millis(5)) {
                        Some(p) => {
                            taken.lock().unwrap().push(p.record.task_id);
                            ring.task_done(me);
                        }
                        None if done.load(Ordering::Acquire) && ring.queued() == 0 => break,
                        None => {}
                    }
                });
            }
            let mut id = 0;
            while id < 2000 {
                if ring.try_push(record(id), [b"a", b"", b"b"]) == Push::Pushed {
                    id += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            done.store(true, Ordering::Release);
        });
        let mut taken = taken.into_inner().unwrap();
        taken.sort_unstable();
        assert_eq!(taken, (0..2000).collect::<Vec<_>>());
    }

    #[test]
    fn a_dead_consumers_tasks_are_reclaimed() {
        let ring = Ring::create(2, 2).unwrap();
        ring.try_push(record(1), [b"a", b"", b"b"]);
        ring.try_push(record(2), [b"a", b"", b"b"]);
        // Worker 1 took task 1 and "died" without finishing.
        let popped = ring.pop(1, Duration::from_millis(100)).unwrap();
        assert_eq!(popped.record.task_id, 1);
        // Simulate a death in the middle of a claim: slot of task 2 claimed
        // by worker 1, never released.
        let slot = ring.slot(1);
        slot.state
            .store(state(1, PHASE_CLAIMED, 1), Ordering::Release);
        let mut back = ring.reclaim(1);
        back.sort_unstable();
        assert_eq!(back, vec![1, 2]);
        // Both slots are usable again.
        assert_eq!(ring.try_push(record(3), [b"a", b"", b"b"]), Push::Pushed);
        assert_eq!(ring.try_push(record(4), [b"a", b"", b"b"]), Push::Pushed);
        let ids: Vec<u64> = (0..2)
            .filter_map(|_| ring.pop(0, Duration::from_millis(100)))
            .map(|p| p.record.task_id)
            .collect();
        assert_eq!(ids, vec![3, 4]);
    }
}
