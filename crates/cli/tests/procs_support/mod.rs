//! Helpers for the engine-matrix and process-engine tests: run the real
//! binary with a time bound, make deterministic files, compare trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cryptstream");
/// Upper bound for one run of the binary.
pub const TIMEOUT: Duration = Duration::from_secs(180);
/// Every engine.
pub const ENGINES: [&str; 2] = ["threads", "processes"];
/// Every I/O strategy.
pub const IOS: [&str; 4] = ["read", "pread", "mmap", "auto"];
/// A fixed salt seed, so outputs can be compared byte for byte.
pub const SEED: &str = "0707070707070707070707070707070707070707070707070707070707070707";
/// Prints each worker's pid at start (see `cryptstream_procs::DEBUG_PIDS_ENV`).
pub const DEBUG_PIDS_ENV: &str = "CRYPTSTREAM_DEBUG_WORKER_PIDS";
/// Makes the worker that takes task N stall (see `cryptstream_procs::worker`).
pub const STALL_ENV: &str = "CRYPTSTREAM_DEBUG_STALL_TASK";
/// Makes the worker that runs task N SIGKILL itself after the task is done
/// and before it reports it.
pub const DIE_AFTER_ENV: &str = "CRYPTSTREAM_DEBUG_DIE_AFTER_TASK";

/// A bare command: no secrets or engine choice from the environment.
pub fn cryptstream() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "CRYPTSTREAM_PASSPHRASE",
        "CRYPTSTREAM_ENGINE",
        "CRYPTSTREAM_IO",
        DEBUG_PIDS_ENV,
        STALL_ENV,
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A child that is killed if the test fails before it exits.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Guard {
    /// Waits at most [`TIMEOUT`] for the child to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the run did not end in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The end of one run.
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to the end (bounded by [`TIMEOUT`]).
pub fn run(cmd: &mut Command) -> Outcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = Guard(cmd.spawn().expect("spawn cryptstream"));
    let stdout = guard.0.stdout.take().expect("piped");
    let stderr = guard.0.stderr.take().expect("piped");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = guard.wait();
    Outcome {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Spawns `cmd` with stderr delivered line by line to the returned channel.
pub fn spawn_with_stderr_lines(cmd: &mut Command) -> (Guard, Receiver<String>) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn cryptstream");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Guard(child), rx)
}

/// Reads lines until one contains `needle` (collecting all lines seen).
pub fn wait_for_line(rx: &Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                panic!("no line with {needle:?}; stderr so far: {seen:#?}")
            }
        }
    }
}

/// Collects the remaining lines until the child's stderr closes (every
/// process holding it has exited), waiting at most 30 s.
pub fn rest_of_lines(rx: &Receiver<String>, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => return,
        }
    }
}

/// The last run of digits in `line`, as a pid.
pub fn last_number(line: &str) -> u32 {
    line.split(|c: char| !c.is_ascii_digit())
        .rfind(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

/// Worker pids announced with [`DEBUG_PIDS_ENV`] in `lines`.
pub fn worker_pids(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .filter(|l| l.contains("started, pid"))
        .map(|l| last_number(l))
        .collect()
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits up to `timeout` for `condition`.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// The (device, inode) of the ring memfd that process `pid` holds.
pub fn ring_memfd(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).ok()?;
        if target.to_string_lossy().contains("memfd:cryptstream-ring") {
            let meta = std::fs::metadata(fd.path()).ok()?;
            return Some((meta.dev(), meta.ino()));
        }
    }
    None
}

/// Every process that still holds the file (device, inode) open.
pub fn holders_of(file: (u64, u64)) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut holders = Vec::new();
    for process in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == file));
        if holds {
            holders.push(pid);
        }
    }
    holders
}

/// A temp dir with a key file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = run(cryptstream()
            .args(["keygen", "--output"])
            .arg(dir.path().join("k.key")));
        assert!(out.status.success(), "keygen: {}", out.stderr);
        Workspace { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `cryptstream SUB -k KEY` plus `args`.
    pub fn keyed(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = cryptstream();
        cmd.arg(sub).arg("-k").arg(self.path("k.key")).args(args);
        cmd
    }
}

/// Writes `len` deterministic pseudo-random bytes.
pub fn write_file(path: &Path, len: u64, seed: u64, mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len as usize);
    while (data.len() as u64) < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len as usize);
    std::fs::write(path, &data).expect("write input");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Every regular file under `root`: relative path -> (BLAKE3, mode).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (String, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).expect("read");
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(
                    rel,
                    (
                        blake3::hash(&bytes).to_hex().to_string(),
                        meta.permissions().mode() & 0o7777,
                    ),
                );
            }
        }
    }
    out
}

/// Names of hidden temp files (`.NAME.cst-tmp-...`) left anywhere under `root`.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().contains(".cst-tmp") {
                found.push(path);
            }
        }
    }
    found
}
