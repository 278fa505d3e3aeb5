//! A worker process: takes tasks off the shared ring, runs them with the
//! engine's executor-agnostic pieces, and reports each on its socket.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use cryptstream_engine::{
    process_whole, Done, FileJob, OpenFile, Reason, Settings, Source, SplitParts, Target,
};
use cryptstream_format::Keyring;
use cryptstream_output::DirFd;
use cryptstream_pool::{Cancel, SecretBuf};

use crate::protocol::{self, Hello, Message, Outcome, Received};
use crate::ring::{Popped, Ring, TaskKind, NO_OUTPUT};
use crate::{ProcsError, WORKER_ENV};
use cryptstream_format::Restore;

/// How long a worker sleeps on the ring before it looks at its parent and
/// its stop flag again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Exit status of a worker that could not start (bad descriptors, hello).
const EXIT_SETUP: u8 = 2;
/// Fault-injection hook for tests: the worker that takes the task with
/// this id prints "worker pid P stalls on task N" to stderr and waits
/// [`STALL_FOR`] before running it, so that a test can kill it (or its
/// parent) while it provably holds a task. Not for production use.
pub const STALL_TASK_ENV: &str = "CRYPTSTREAM_DEBUG_STALL_TASK";
/// Fault-injection hook for tests: the worker that runs the task with this
/// id SIGKILLs itself once the task is done (its output linked) and before
/// it reports it, the narrowest window of a worker death. Not for
/// production use.
pub const DIE_AFTER_TASK_ENV: &str = "CRYPTSTREAM_DEBUG_DIE_AFTER_TASK";
/// How long the stall of [`STALL_TASK_ENV`] lasts.
const STALL_FOR: Duration = Duration::from_secs(3);

/// The task id a fault-injection variable names, if it is set.
fn debug_task(variable: &str) -> Option<u64> {
    // Test hooks exist in test builds only.
    if cfg!(feature = "test-knobs") {
        std::env::var(variable).ok()?.parse().ok()
    } else {
        None
    }
}

/// Runs this process as a worker if the parent asked for it (the
/// environment variable carries the two inherited descriptor numbers, and
/// nothing else); returns the exit code then, `None` in a normal start.
///
/// `restorers` build again the envelopes the parent added beside
/// cryptstream's own (age), by [`cryptstream_format::Envelope::name`]: the
/// binary chooses them, as it does in the parent.
///
/// Must be called first thing in `main`, before any thread exists.
pub fn run_worker_if_requested(restorers: &[(&str, Restore)]) -> Option<ExitCode> {
    let value = std::env::var_os(WORKER_ENV)?;
    // Single-threaded here (the caller guarantees it), so changing the
    // environment is sound; the variable must not leak to anything else.
    std::env::remove_var(WORKER_ENV);
    Some(match start(&value, restorers) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cryptstream worker: {e}");
            ExitCode::from(EXIT_SETUP)
        }
    })
}

fn parse_fds(value: &OsStr) -> Result<(RawFd, RawFd), ProcsError> {
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| ProcsError::Protocol("bad worker descriptor list"))?;
    let mut parts = text.split(',').map(str::parse::<RawFd>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(ring)), Some(Ok(socket)), None) if ring > 2 && socket > 2 && ring != socket => {
            Ok((ring, socket))
        }
        _ => Err(ProcsError::Protocol("bad worker descriptor list")),
    }
}

fn start(value: &OsStr, restorers: &[(&str, Restore)]) -> Result<ExitCode, ProcsError> {
    let (ring_fd, socket_fd) = parse_fds(value)?;
    // Both descriptors must really be open before we take ownership.
    for fd in [ring_fd, socket_fd] {
        // SAFETY: fcntl(F_GETFD) only inspects the descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(ProcsError::Protocol("worker descriptors are not open"));
        }
    }
    // SAFETY: the parent passed these two descriptors to this process for
    // exactly this purpose (checked open above); nothing else in this
    // process knows their numbers, so ownership is taken exactly once.
    let (ring_fd, socket) = unsafe {
        (
            OwnedFd::from_raw_fd(ring_fd),
            OwnedFd::from_raw_fd(socket_fd),
        )
    };
    for fd in [&ring_fd, &socket] {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| ProcsError::Socket(e.into()))?;
    }
    // Ctrl-C goes to the whole process group; the parent decides what a
    // stop means and tells us with SIGTERM.
    // SAFETY: ignoring a signal installs no handler code.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())
        .map_err(ProcsError::Socket)?;
    let hello = {
        let mut scratch = zeroize::Zeroizing::new(vec![0u8; protocol::MAX_MESSAGE]);
        match protocol::receive(socket.as_fd(), true, &mut scratch)? {
            Received::Hello(bytes) => Hello::decode(&bytes)?,
            _ => return Err(ProcsError::Protocol("expected a hello first")),
        }
    };
    if rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32) != hello.parent_pid
    {
        return Ok(ExitCode::from(EXIT_SETUP));
    }
    let ring = Ring::attach(ring_fd)?;
    ring.set_worker_pid(hello.worker, std::process::id());
    let settings = settings_from(&hello, restorers)?;
    let output_root = match &hello.output_root {
        Some(root) if hello.output_staged => {
            Some(DirFd::open_staged(root).map_err(ProcsError::Socket)?)
        }
        Some(root) => Some(DirFd::open(root).map_err(ProcsError::Socket)?),
        None => None,
    };
    let mut worker = Worker {
        me: hello.worker,
        parent_pid: hello.parent_pid,
        ring,
        socket,
        settings,
        output_root,
        splits: HashMap::new(),
        stop: Cancel::from_flag(flag),
        buf: SecretBuf::new(),
        scratch: vec![0u8; protocol::MAX_MESSAGE],
        stall_task: debug_task(STALL_TASK_ENV),
        die_after_task: debug_task(DIE_AFTER_TASK_ENV),
    };
    worker.serve()?;
    Ok(ExitCode::SUCCESS)
}

fn settings_from(hello: &Hello, restorers: &[(&str, Restore)]) -> Result<Settings, ProcsError> {
    let mut key_files = Vec::new();
    let mut derived = Vec::new();
    for key in &hello.keys {
        let copy = cryptstream_engine::keys::copy_of(key);
        match key.source() {
            cryptstream_format::KeySource::KeyFile(_) => key_files.push(copy),
            cryptstream_format::KeySource::Passphrase { .. } => derived.push(copy),
        }
    }
    let keyring = Keyring::new(key_files, None);
    for key in derived {
        keyring.insert_derived(key);
    }
    let encryption_key = hello
        .encryption_key
        .as_ref()
        .map(|k| Arc::new(cryptstream_engine::keys::copy_of(k)));
    let builder = Settings::builder(hello.direction, keyring)
        .cipher(hello.cipher)
        .chunk_size(hello.chunk_size)
        .overwrite(hello.overwrite)
        .durable(hello.durable)
        .io(hello.io)
        .umask(hello.umask)
        .keep_special_bits(hello.keep_special_bits)
        .encryption_key(encryption_key);
    let mut builder = builder;
    for export in &hello.envelopes {
        let restore = restorers
            .iter()
            .find(|(name, _)| *name == export.name)
            .map(|(_, restore)| restore)
            .ok_or(ProcsError::Protocol("an envelope this worker cannot build"))?;
        let envelope = restore(&export.bytes).map_err(|e| ProcsError::Envelope(e.to_string()))?;
        builder = builder.envelope(envelope.clone());
        if export.seals {
            builder = builder.seal_with(envelope.clone());
        }
        if export.fallback {
            builder = builder.fallback(envelope);
        }
    }
    #[cfg(feature = "test-knobs")]
    let builder = builder.fixed_salt(hello.fixed_salt);
    Ok(builder.build())
}

/// A split file as this worker knows it: descriptors received, cipher
/// derived on first use.
enum Split {
    Received(SplitParts),
    Open(Box<OpenFile>),
}

struct Worker {
    me: u32,
    parent_pid: u32,
    ring: Ring,
    socket: OwnedFd,
    settings: Settings,
    /// The output tree's root, opened once; outputs are opened below it.
    output_root: Option<DirFd>,
    splits: HashMap<u64, Split>,
    stop: Cancel,
    buf: SecretBuf,
    /// Receive buffer for messages from the parent (no secrets after the
    /// hello).
    scratch: Vec<u8>,
    /// The tasks of the test hooks [`STALL_TASK_ENV`] and
    /// [`DIE_AFTER_TASK_ENV`], read once at start.
    stall_task: Option<u64>,
    die_after_task: Option<u64>,
}

impl Worker {
    fn parent_alive(&self) -> bool {
        rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32) == self.parent_pid
    }

    fn serve(&mut self) -> Result<(), ProcsError> {
        loop {
            if self.stop.is_cancelled() || !self.parent_alive() {
                return Ok(());
            }
            if !self.read_messages(false, None)? {
                return Ok(());
            }
            if self.ring.closing() {
                return Ok(());
            }
            let Some(task) = self.ring.pop(self.me, POLL_INTERVAL) else {
                continue;
            };
            let task_id = task.record.task_id;
            let done = self.run(task)?;
            if self.die_after_task == Some(task_id) {
                let me = rustix::process::getpid();
                let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
            }
            if protocol::send_message(self.socket.as_fd(), &done).is_err() {
                // The parent is gone: nobody is left to report to.
                return Ok(());
            }
            self.ring.task_done(self.me);
        }
    }

    /// Handles waiting messages; with `until`, blocks until that split file
    /// has arrived. Returns false when the parent closed the socket.
    fn read_messages(&mut self, block: bool, until: Option<u64>) -> Result<bool, ProcsError> {
        loop {
            if let Some(id) = until {
                if self.splits.contains_key(&id) {
                    return Ok(true);
                }
            }
            let wait = block && until.is_some();
            match protocol::receive(self.socket.as_fd(), wait, &mut self.scratch)? {
                Received::Empty => return Ok(true),
                Received::Closed => return Ok(false),
                Received::Hello(_) => return Err(ProcsError::Protocol("a second hello")),
                Received::Message(Message::OpenSplit {
                    split_id,
                    plaintext_len,
                    prefix_len,
                    cipher,
                    envelope,
                    input,
                    output,
                }) => {
                    let parts = SplitParts {
                        input: File::from(input),
                        output: output.map(File::from),
                        prefix_len: prefix_len as usize,
                        plaintext_len,
                        cipher,
                        envelope,
                    };
                    self.splits.insert(split_id, Split::Received(parts));
                }
                Received::Message(Message::CloseSplit { split_id }) => {
                    self.splits.remove(&split_id);
                }
                Received::Message(Message::Done { .. }) => {
                    return Err(ProcsError::Protocol("a worker got a task report"))
                }
            }
        }
    }

    /// The test hook of [`STALL_TASK_ENV`]: announce the task and wait
    /// (up to [`STALL_FOR`], or until told to stop) before running it.
    fn stall_if_asked(&self, task_id: u64) {
        if self.stall_task != Some(task_id) {
            return;
        }
        eprintln!(
            "cryptstream: worker pid {} stalls on task {task_id}",
            std::process::id()
        );
        let until = std::time::Instant::now() + STALL_FOR;
        while std::time::Instant::now() < until && !self.stop.is_cancelled() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where the output `relative` (to the root) goes: its directory,
    /// opened below the root without following any symbolic link.
    fn target(&self, root: &DirFd, relative: &std::path::Path) -> std::io::Result<Target> {
        let name = relative
            .file_name()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let dir = root.open_beneath(relative.parent().unwrap_or(std::path::Path::new("")))?;
        Ok(Target {
            root: root.clone(),
            dir,
            name: name.to_os_string(),
        })
    }

    fn run(&mut self, task: Popped) -> Result<Message, ProcsError> {
        let task_id = task.record.task_id;
        self.stall_if_asked(task_id);
        if task.record.kind == TaskKind::Whole as u32 {
            let [input, output, relative] = task.paths;
            let path = |b: Vec<u8>| PathBuf::from(OsStr::from_bytes(&b));
            let job = FileJob {
                input: path(input),
                output: None,
                relative: path(relative),
                size: 0,
                source: Source::File,
                looked: None,
            };
            let target = match (&self.output_root, task.record.output_len != NO_OUTPUT) {
                (Some(root), true) => match self.target(root, &path(output)) {
                    Ok(target) => Some(target),
                    Err(e) => {
                        return Ok(Message::Done {
                            task_id,
                            bytes: 0,
                            layout: None,
                            outcome: outcome(Err(Reason::Write(e))),
                        })
                    }
                },
                _ => None,
            };
            let mut bytes = 0;
            let done = process_whole(
                &self.settings,
                &job,
                target.as_ref(),
                &mut self.buf,
                &self.stop,
                &mut |n| bytes += n,
            );
            let outcome = match done.result {
                Ok(Done::LinkLater(link)) => {
                    Outcome::LinkLater(link.target.into_os_string().into_vec())
                }
                other => outcome(other.map(|_| ())),
            };
            return Ok(Message::Done {
                task_id,
                bytes,
                layout: done
                    .layout
                    .map(|l| (l.header_len() as u32, l.chunk_size(), l.plaintext_len())),
                outcome,
            });
        }
        let split_id = task.record.split_id;
        if !self.read_messages(true, Some(split_id))? {
            return Err(ProcsError::Protocol("parent went away"));
        }
        let file = match self.splits.remove(&split_id) {
            Some(Split::Open(file)) => Ok(file),
            Some(Split::Received(parts)) => OpenFile::adopt(&self.settings, parts).map(Box::new),
            None => return Err(ProcsError::Protocol("segment of an unknown file")),
        };
        let (result, file) = match file {
            Ok(file) => {
                let result = if self.stop.is_cancelled() {
                    Err(Reason::Cancelled)
                } else {
                    file.run_segment(
                        task.record.first_chunk,
                        task.record.chunk_count,
                        &mut self.buf,
                    )
                };
                (result, Some(file))
            }
            Err(reason) => (Err(reason), None),
        };
        if let Some(file) = file {
            self.splits.insert(split_id, Split::Open(file));
        }
        let bytes = *result.as_ref().unwrap_or(&0);
        Ok(Message::Done {
            task_id,
            bytes,
            layout: None,
            outcome: outcome(result.map(|_| ())),
        })
    }
}

fn outcome(result: Result<(), Reason>) -> Outcome {
    match result {
        Ok(()) => Outcome::Ok,
        Err(Reason::Cancelled) => Outcome::Cancelled,
        Err(reason) => Outcome::Failed(reason.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_lists_are_checked() {
        assert_eq!(parse_fds(OsStr::new("5,6")).unwrap(), (5, 6));
        for bad in ["", "5", "5,5", "1,6", "5,6,7", "a,b", "5,-1"] {
            assert!(parse_fds(OsStr::new(bad)).is_err(), "{bad}");
        }
    }
}
