//! The parent side of the process engine: one event loop on the calling
//! thread that produces tasks into the ring, starts workers lazily, reads
//! their reports, commits split files, and handles deaths and stops.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryptstream_engine::{
    finish_run, finished_output, open_split, process_whole, Ledger, OpenFile, PendingLink, Plan,
    Progress, Reason, RetryRecord, Settings, Source, Summary, SEGMENT_BYTES,
};
use cryptstream_format::Layout;
use cryptstream_pool::{Cancel, SecretBuf};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::protocol::{self, Hello, Message, Outcome, Received};
use crate::ring::{Push, Ring, TaskKind, TaskRecord, NO_OUTPUT, PATH_MAX};
use crate::{ProcsError, DEBUG_PIDS_ENV, ENGINE_NAME, PASSPHRASE_ENV, WORKER_ENV};

/// Ring slots per worker: a worker takes a new task only after reporting
/// the last one, and the parent refills on every report, so with four per
/// worker the ring never runs dry between two reports.
const QUEUE_PER_WORKER: usize = 4;
/// How long the loop sleeps in `poll` before it looks at the stop flag.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
/// How long workers get to exit after being told to stop, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a task covers.
#[derive(Clone, Copy)]
enum Unit {
    /// File `plan.files[i]`, start to end.
    Whole(usize),
    /// Chunks of a split file.
    Segment { split: u64, first: u64, count: u64 },
}

struct TaskState {
    unit: Unit,
    /// 0 on the first run, 1 on the retry.
    attempt: u8,
    started: Instant,
}

struct SplitState {
    job: usize,
    file: OpenFile,
    remaining: u64,
    failure: Option<Reason>,
    started: Instant,
}

struct WorkerProc {
    child: Child,
    socket: OwnedFd,
    pid: u32,
}

/// Why the loop stops early.
#[derive(Clone)]
enum Stop {
    /// SIGINT/SIGTERM: every unfinished file is "interrupted".
    Cancelled,
    /// Workers cannot be kept running: unfinished files fail with this.
    Fatal(String),
}

impl Stop {
    fn reason(&self) -> Reason {
        match self {
            Stop::Cancelled => Reason::Cancelled,
            Stop::Fatal(text) => Reason::Executor(text.clone()),
        }
    }
}

struct Supervisor<'a> {
    plan: &'a Plan,
    settings: &'a Settings,
    cancel: &'a Cancel,
    ledger: Ledger<'a>,
    ring: Ring,
    workers: Vec<Option<WorkerProc>>,
    next_file: usize,
    next_id: u64,
    tasks: HashMap<u64, TaskState>,
    pending: VecDeque<u64>,
    splits: HashMap<u64, SplitState>,
    deaths: usize,
    stop: Option<(Stop, Instant)>,
    debug_pids: bool,
    /// Receive buffer for worker reports.
    scratch: Vec<u8>,
    /// Hard links to make once every file is written: job and link.
    links: Vec<(usize, PendingLink)>,
}

/// Runs `plan` on worker processes; see the crate docs. Must be called on
/// a thread that outlives the run (the main thread in the CLI): workers die
/// with the thread that started them (`PR_SET_PDEATHSIG`).
pub fn run_processes(
    plan: &Plan,
    settings: &Settings,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Summary {
    let ledger = Ledger::new(settings, progress);
    let workers = settings.workers().clamp(1, crate::ring::MAX_WORKERS);
    let capacity = (workers * QUEUE_PER_WORKER).clamp(4, 4096);
    let ring = match Ring::create(capacity, workers) {
        Ok(ring) => ring,
        Err(e) => return fail_all(plan, settings, ledger, &e.to_string(), cancel),
    };
    let mut supervisor = Supervisor {
        plan,
        settings,
        cancel,
        ledger,
        ring,
        workers: (0..workers).map(|_| None).collect(),
        next_file: 0,
        next_id: 1,
        tasks: HashMap::new(),
        pending: VecDeque::new(),
        splits: HashMap::new(),
        deaths: 0,
        stop: None,
        debug_pids: std::env::var_os(DEBUG_PIDS_ENV).is_some(),
        scratch: vec![0u8; protocol::MAX_MESSAGE],
        links: Vec::new(),
    };
    supervisor.run();
    let links = std::mem::take(&mut supervisor.links);
    finish_run(plan, settings, links, &supervisor.ledger);
    supervisor
        .ledger
        .into_summary(plan, settings, ENGINE_NAME, cancel.is_cancelled())
}

fn fail_all(
    plan: &Plan,
    settings: &Settings,
    ledger: Ledger<'_>,
    text: &str,
    cancel: &Cancel,
) -> Summary {
    for job in &plan.files {
        ledger.record(
            job,
            None,
            Err(Reason::Executor(text.to_string())),
            Instant::now(),
        );
    }
    ledger.into_summary(plan, settings, ENGINE_NAME, cancel.is_cancelled())
}

/// "killed by signal 9 (SIGKILL)" or "exited with status 3".
fn describe(status: std::process::ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGABRT => " (SIGABRT)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => "ended".to_string(),
    }
}

/// Removes the named temp outputs (`.NAME.cst-tmp-PID-N`, only made on
/// filesystems without `O_TMPFILE`) that a dead worker left for `output`.
impl Supervisor<'_> {
    fn live_workers(&self) -> usize {
        self.workers.iter().filter(|w| w.is_some()).count()
    }

    fn run(&mut self) {
        loop {
            if self.cancel.is_cancelled() && self.stop.is_none() {
                self.begin_stop(Stop::Cancelled);
            }
            if self.stop.is_none() {
                self.fill();
            }
            if self.stop.is_some() {
                if self.live_workers() == 0 {
                    self.resolve_leftovers();
                    return;
                }
                if let Some((_, since)) = &self.stop {
                    if since.elapsed() > STOP_GRACE {
                        self.kill_all();
                    }
                }
            } else if self.next_file == self.plan.files.len() && self.tasks.is_empty() {
                self.close_and_reap();
                return;
            }
            self.poll_workers();
        }
    }

    /// Pushes tasks until the ring is full or there is no more work.
    fn fill(&mut self) {
        loop {
            let id = match self.pending.front() {
                Some(&id) => id,
                None => match self.next_task() {
                    Some(id) => id,
                    None => return,
                },
            };
            self.ensure_workers();
            if self.stop.is_some() || self.live_workers() == 0 {
                return;
            }
            let Some(task) = self.tasks.get(&id) else {
                self.pending.pop_front();
                continue;
            };
            let (record, paths) = self.record_of(id, task.unit);
            let paths = [&paths[0][..], &paths[1][..], &paths[2][..]];
            match self.ring.try_push(record, paths) {
                Push::Pushed => {
                    self.pending.pop_front();
                }
                Push::Full => return,
            }
        }
    }

    fn record_of(&self, id: u64, unit: Unit) -> (TaskRecord, [Vec<u8>; 3]) {
        let mut record = TaskRecord {
            task_id: id,
            split_id: 0,
            first_chunk: 0,
            chunk_count: 0,
            paths_offset: 0,
            input_len: 0,
            output_len: NO_OUTPUT,
            relative_len: 0,
            kind: TaskKind::Whole as u32,
        };
        match unit {
            Unit::Whole(j) => {
                let job = &self.plan.files[j];
                let input = job.input.as_os_str().as_bytes().to_vec();
                let output = self
                    .plan
                    .output_relative(job)
                    .map(|o| o.into_os_string().into_vec());
                let relative = job.relative.as_os_str().as_bytes().to_vec();
                record.input_len = input.len() as u32;
                record.output_len = output.as_ref().map_or(NO_OUTPUT, |o| o.len() as u32);
                record.relative_len = relative.len() as u32;
                (record, [input, output.unwrap_or_default(), relative])
            }
            Unit::Segment {
                split,
                first,
                count,
            } => {
                record.kind = TaskKind::Segment as u32;
                record.split_id = split;
                record.first_chunk = first;
                record.chunk_count = count;
                (record, [Vec::new(), Vec::new(), Vec::new()])
            }
        }
    }

    fn new_task(&mut self, unit: Unit) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tasks.insert(
            id,
            TaskState {
                unit,
                attempt: 0,
                started: Instant::now(),
            },
        );
        self.pending.push_back(id);
        id
    }

    /// Plans the next file into tasks; `None` when every file is planned.
    fn next_task(&mut self) -> Option<u64> {
        while self.next_file < self.plan.files.len() {
            let j = self.next_file;
            self.next_file += 1;
            let job = &self.plan.files[j];
            if job.source != Source::File {
                // Link entries being encrypted are a few hundred bytes:
                // sealed here, with no task to hand out.
                self.seal_entry_here(j);
                continue;
            }
            // A file processed in order (armored age) is one task too.
            if job.size <= SEGMENT_BYTES || !self.settings.can_split(job) {
                let output = self.plan.output_relative(job);
                let too_long = [
                    Some(job.input.as_path()),
                    output.as_deref(),
                    Some(job.relative.as_path()),
                ]
                .into_iter()
                .flatten()
                .any(|p| p.as_os_str().len() > PATH_MAX);
                if too_long {
                    let text = format!("path longer than {PATH_MAX} bytes");
                    self.ledger
                        .record(job, None, Err(Reason::Executor(text)), Instant::now());
                    continue;
                }
                return Some(self.new_task(Unit::Whole(j)));
            }
            let Some(open) = open_split(self.plan, self.settings, job, &self.ledger) else {
                continue;
            };
            let (segments, per_segment) = (open.segments, open.per_segment);
            let split = self.next_id;
            self.next_id += 1;
            let state = SplitState {
                job: j,
                file: open.file,
                remaining: segments,
                failure: None,
                started: open.started,
            };
            self.splits.insert(split, state);
            for slot in 0..self.workers.len() {
                self.send_split(slot, split);
            }
            let first = self.pending.len();
            for s in 0..segments {
                self.new_task(Unit::Segment {
                    split,
                    first: s * per_segment,
                    count: per_segment,
                });
            }
            return self.pending.get(first).copied();
        }
        None
    }

    /// Encrypts link entry `plan.files[j]` on this thread.
    fn seal_entry_here(&mut self, j: usize) {
        let job = &self.plan.files[j];
        let started = Instant::now();
        let outcome = self.plan.target(job).map_err(Reason::Write).map(|target| {
            process_whole(
                self.settings,
                job,
                target.as_ref(),
                &mut SecretBuf::new(),
                self.cancel,
                &mut |_| {},
            )
        });
        match outcome {
            Ok(outcome) => {
                let result = outcome.result.map(|_| ());
                self.ledger.record(job, outcome.layout, result, started);
            }
            Err(reason) => self.ledger.record(job, None, Err(reason), started),
        }
    }

    /// Sends split file `split`'s descriptors to worker `slot` (if live).
    fn send_split(&mut self, slot: usize, split: u64) {
        let (Some(worker), Some(state)) = (&self.workers[slot], self.splits.get(&split)) else {
            return;
        };
        let parts = match state.file.split_parts() {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!("cannot share a split file with worker {}: {e}", worker.pid);
                return;
            }
        };
        let message = Message::OpenSplit {
            split_id: split,
            plaintext_len: parts.plaintext_len,
            prefix_len: parts.prefix_len as u32,
            cipher: parts.cipher,
            envelope: parts.envelope,
            input: OwnedFd::from(parts.input),
            output: parts.output.map(OwnedFd::from),
        };
        // A worker that is gone is found by poll; nothing to do here.
        let _ = protocol::send_message(worker.socket.as_fd(), &message);
    }

    /// Starts workers until there are as many as there is work for.
    fn ensure_workers(&mut self) {
        let wanted = self.tasks.len().min(self.workers.len());
        while self.live_workers() < wanted {
            let Some(slot) = self.workers.iter().position(|w| w.is_none()) else {
                return;
            };
            if let Err(e) = self.spawn(slot) {
                if self.live_workers() == 0 {
                    self.begin_stop(Stop::Fatal(e.to_string()));
                } else {
                    tracing::warn!("{e}");
                }
                return;
            }
        }
    }

    fn spawn(&mut self, slot: usize) -> Result<(), ProcsError> {
        let (parent_end, child_end) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| ProcsError::Spawn(e.into()))?;
        let exe = if Path::new("/proc/self/exe").exists() {
            std::path::PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().map_err(ProcsError::Spawn)?
        };
        let ring_fd = std::os::fd::AsRawFd::as_raw_fd(&self.ring.fd());
        let child_fd = std::os::fd::AsRawFd::as_raw_fd(&child_end);
        let parent_pid = std::process::id();
        let mut command = Command::new(exe);
        command
            .arg0("cryptstream-worker")
            // Workers get derived keys on their socket; the passphrase
            // itself stays in this process.
            .env_remove(PASSPHRASE_ENV)
            .env(WORKER_ENV, format!("{ring_fd},{child_fd}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (fcntl, prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                for fd in [ring_fd, child_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Die with the parent (with the thread that forks us, to be
                // exact: the run's calling thread). SIGTERM lets the worker
                // stop after its current segment and drop its temp output.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent_pid {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(ProcsError::Spawn)?;
        drop(child_end);
        let pid = child.id();
        if self.debug_pids {
            eprintln!("cryptstream: worker {slot} started, pid {pid}");
        }
        let keyring = self.settings.keyring();
        let keys = keyring
            .key_files()
            .iter()
            .map(cryptstream_engine::keys::copy_of)
            .chain(
                keyring
                    .derived_keys()
                    .iter()
                    .map(|k| cryptstream_engine::keys::copy_of(k)),
            )
            .collect();
        #[cfg(feature = "test-knobs")]
        let fixed_salt = self.settings.fixed_salt();
        #[cfg(not(feature = "test-knobs"))]
        let fixed_salt = None;
        let hello = Hello {
            worker: slot as u32,
            parent_pid,
            direction: self.settings.direction(),
            cipher: self.settings.cipher(),
            chunk_size: self.settings.chunk_size(),
            overwrite: self.settings.overwrite(),
            durable: self.settings.durable(),
            io: self.settings.io(),
            fixed_salt,
            output_root: self.plan.output_root().map(Path::to_path_buf),
            output_staged: self.plan.output_staged(),
            umask: self.settings.umask(),
            keep_special_bits: self.settings.keep_special_bits(),
            encryption_key: self
                .settings
                .encryption_key()
                .map(|key| &**key)
                .map(cryptstream_engine::keys::copy_of),
            keys,
            envelopes: self.settings.envelope_exports(),
        };
        if let Err(e) = protocol::send_hello(parent_end.as_fd(), &hello) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        self.workers[slot] = Some(WorkerProc {
            child,
            socket: parent_end,
            pid,
        });
        let splits: Vec<u64> = self.splits.keys().copied().collect();
        for split in splits {
            self.send_split(slot, split);
        }
        Ok(())
    }

    /// Waits for reports and deaths, and handles them.
    fn poll_workers(&mut self) {
        let slots: Vec<usize> = (0..self.workers.len())
            .filter(|&s| self.workers[s].is_some())
            .collect();
        if slots.is_empty() {
            std::thread::sleep(POLL_TIMEOUT);
            return;
        }
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = slots
                .iter()
                .map(|&s| {
                    let w = self.workers[s].as_ref().expect("filtered on is_some");
                    PollFd::new(&w.socket, PollFlags::IN)
                })
                .collect();
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: POLL_TIMEOUT.as_nanos() as _,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            slots
                .iter()
                .zip(&fds)
                .filter(|(_, fd)| !fd.revents().is_empty())
                .map(|(&s, _)| s)
                .collect()
        };
        for slot in ready {
            self.drain(slot);
        }
    }

    /// Reads every report waiting on worker `slot`'s socket.
    fn drain(&mut self, slot: usize) {
        loop {
            let Some(worker) = &self.workers[slot] else {
                return;
            };
            match protocol::receive(worker.socket.as_fd(), false, &mut self.scratch) {
                Ok(Received::Empty) => return,
                Ok(Received::Message(Message::Done {
                    task_id,
                    bytes,
                    layout,
                    outcome,
                })) => self.task_done(slot, task_id, bytes, layout, outcome),
                Ok(Received::Closed) | Err(_) => return self.worker_gone(slot),
                Ok(_) => {
                    tracing::warn!("worker {} sent an unexpected message", worker.pid);
                    return self.worker_gone(slot);
                }
            }
        }
    }

    fn task_done(
        &mut self,
        slot: usize,
        id: u64,
        bytes: u64,
        layout: Option<(u32, u32, u64)>,
        outcome: Outcome,
    ) {
        let Some(task) = self.tasks.remove(&id) else {
            return;
        };
        if outcome == Outcome::Cancelled && self.stop.is_none() {
            // The worker was stopped by someone else than us: run it again.
            let pid = self.workers[slot].as_ref().map_or(0, |w| w.pid);
            return self.retry_or_fail(id, task, pid, "stopped before finishing".into());
        }
        self.ledger.progress().advance(bytes);
        let result = match outcome {
            Outcome::Ok => Ok(()),
            Outcome::Cancelled => Err(Reason::Cancelled),
            Outcome::Failed(text) => Err(Reason::Executor(text)),
            Outcome::LinkLater(target) => {
                if let Unit::Whole(j) = task.unit {
                    let target = std::ffi::OsString::from_vec(target).into();
                    self.links.push((j, PendingLink { target }));
                }
                return;
            }
        };
        self.resolve(task, result, layout);
    }

    /// Ends a task with `result`.
    fn resolve(
        &mut self,
        task: TaskState,
        result: Result<(), Reason>,
        layout: Option<(u32, u32, u64)>,
    ) {
        match task.unit {
            Unit::Whole(j) => {
                let layout = layout.and_then(|(header_len, chunk, len)| {
                    Layout::new(header_len as usize, chunk, len).ok()
                });
                self.ledger
                    .record(&self.plan.files[j], layout, result, task.started);
            }
            Unit::Segment { split, .. } => self.segment_done(split, result),
        }
    }

    fn segment_done(&mut self, split: u64, result: Result<(), Reason>) {
        let Some(state) = self.splits.get_mut(&split) else {
            return;
        };
        if let Err(reason) = result {
            state.failure.get_or_insert(reason);
        }
        state.remaining -= 1;
        if state.remaining > 0 {
            return;
        }
        let state = self.splits.remove(&split).expect("looked up above");
        let result = match state.failure {
            Some(reason) => Err(reason),
            None => state.file.finish(self.settings),
        };
        if result.is_err() {
            state.file.abandon();
        }
        self.ledger.record(
            &self.plan.files[state.job],
            Some(state.file.layout),
            result,
            state.started,
        );
        for worker in self.workers.iter().flatten() {
            let _ = protocol::send_message(
                worker.socket.as_fd(),
                &Message::CloseSplit { split_id: split },
            );
        }
    }

    /// Runs `task` again (once), or fails its file.
    fn retry_or_fail(&mut self, id: u64, mut task: TaskState, pid: u32, cause: String) {
        if let Some((stop, _)) = &self.stop {
            let reason = stop.reason();
            return self.resolve(task, Err(reason), None);
        }
        let (path, description) = match task.unit {
            Unit::Whole(j) => (self.plan.files[j].input.clone(), "whole file".to_string()),
            Unit::Segment {
                split,
                first,
                count,
            } => {
                let job = self.splits.get(&split).map_or(0, |s| s.job);
                let end = self.splits.get(&split).map_or(first + count, |s| {
                    (first + count).min(s.file.layout.chunk_count())
                });
                (
                    self.plan.files[job].input.clone(),
                    format!("chunks {first}..{end}"),
                )
            }
        };
        if let Unit::Whole(j) = task.unit {
            let job = &self.plan.files[j];
            // Named temp files (filesystems without O_TMPFILE) of the dead
            // worker go; those of live processes stay.
            if let Ok(Some(target)) = self.plan.target(job) {
                cryptstream_output::remove_stale_temps(&target.dir);
                // In a staged tree, the output it was writing is there
                // under its name, marked incomplete.
                cryptstream_output::remove_incomplete(&target.dir, &target.name);
            }
            // The worker may have linked a complete output and died before
            // reporting it: then that output is the result, and a rerun
            // would only find its name taken.
            let found = self
                .plan
                .output_path(job)
                .and_then(|output| finished_output(self.settings, job, &output));
            if let Some(layout) = found {
                self.ledger.record_retry(RetryRecord {
                    path,
                    task: "whole file, found complete: not run again".into(),
                    worker_pid: pid,
                    cause,
                });
                let layout = (
                    layout.header_len() as u32,
                    layout.chunk_size(),
                    layout.plaintext_len(),
                );
                return self.resolve(task, Ok(()), Some(layout));
            }
        }
        if task.attempt == 0 {
            task.attempt = 1;
            self.ledger.record_retry(RetryRecord {
                path,
                task: description,
                worker_pid: pid,
                cause,
            });
            self.tasks.insert(id, task);
            self.pending.push_front(id);
        } else {
            let text = format!(
                "worker process {pid} died while processing this file ({cause}), also after a retry on another worker"
            );
            self.resolve(task, Err(Reason::Executor(text)), None);
        }
    }

    /// Worker `slot` closed its socket: reap it and take back its tasks.
    fn worker_gone(&mut self, slot: usize) {
        let Some(mut worker) = self.workers[slot].take() else {
            return;
        };
        let _ = worker.child.kill();
        let cause = match worker.child.wait() {
            Ok(status) => describe(status),
            Err(e) => format!("could not be waited for: {e}"),
        };
        let lost = self.ring.reclaim(slot as u32);
        let mut retried = false;
        for id in lost {
            if let Some(task) = self.tasks.remove(&id) {
                retried = true;
                self.retry_or_fail(id, task, worker.pid, cause.clone());
            }
        }
        if self.stop.is_none() {
            self.deaths += 1;
            if retried {
                eprintln!(
                    "cryptstream: worker process {} {cause}; its task runs again on another worker",
                    worker.pid
                );
            }
            if self.deaths > 8 + 2 * self.workers.len() {
                self.begin_stop(Stop::Fatal(format!(
                    "worker processes keep dying (the last one {cause})"
                )));
            }
        }
    }

    /// Stops producing, tells workers to stop, and waits for them.
    fn begin_stop(&mut self, stop: Stop) {
        if self.stop.is_some() {
            return;
        }
        self.stop = Some((stop, Instant::now()));
        self.ring.close();
        for worker in self.workers.iter().flatten() {
            if let Some(pid) = rustix::process::Pid::from_raw(worker.pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }

    fn kill_all(&mut self) {
        for worker in self.workers.iter_mut().flatten() {
            let _ = worker.child.kill();
        }
    }

    /// After a stop, once every worker is gone: every file not finished
    /// ends with the stop's reason, and split outputs are dropped.
    fn resolve_leftovers(&mut self) {
        let reason = match &self.stop {
            Some((stop, _)) => stop.clone(),
            None => return,
        };
        let mut left: Vec<(u64, TaskState)> = self.tasks.drain().collect();
        left.sort_by_key(|(id, _)| *id);
        self.pending.clear();
        for (_, task) in left {
            if let Unit::Whole(j) = task.unit {
                self.ledger.record(
                    &self.plan.files[j],
                    None,
                    Err(reason.reason()),
                    task.started,
                );
            }
        }
        let mut splits: Vec<(u64, SplitState)> = self.splits.drain().collect();
        splits.sort_by_key(|(id, _)| *id);
        for (_, state) in splits {
            state.file.abandon();
            self.ledger.record(
                &self.plan.files[state.job],
                Some(state.file.layout),
                Err(reason.reason()),
                state.started,
            );
        }
        while self.next_file < self.plan.files.len() {
            let job = &self.plan.files[self.next_file];
            self.ledger
                .record(job, None, Err(reason.reason()), Instant::now());
            self.next_file += 1;
        }
    }

    /// Normal end: close the ring and wait for every worker to exit.
    fn close_and_reap(&mut self) {
        self.ring.close();
        let deadline = Instant::now() + STOP_GRACE;
        while self.live_workers() > 0 {
            if Instant::now() > deadline {
                self.kill_all();
            }
            self.poll_workers();
        }
    }
}
