//! Running one child process and measuring what it cost.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// Most bytes of a child's stderr kept for an error message.
const STDERR_TAIL: usize = 2000;

/// What one child process did and cost.
#[derive(Debug)]
pub struct ChildRun {
    /// From spawn to exit.
    pub wall: Duration,
    /// CPU time in user mode, its waited-for descendants included.
    pub user: Duration,
    /// CPU time in the kernel, its waited-for descendants included.
    pub system: Duration,
    /// Peak resident set size in KiB: the largest of the child and its
    /// waited-for descendants (Linux reports the maximum, not the sum).
    pub max_rss_kib: u64,
    /// How it ended: `None` for a clean exit 0, else a description.
    pub failure: Option<String>,
    /// Everything it printed on stdout.
    pub stdout: Vec<u8>,
    /// The end of what it printed on stderr.
    pub stderr: String,
}

impl ChildRun {
    /// CPU time over wall time: 1.0 is one core busy all along.
    pub fn cpu_utilisation(&self) -> f64 {
        let wall = self.wall.as_secs_f64();
        if wall > 0.0 {
            (self.user + self.system).as_secs_f64() / wall
        } else {
            0.0
        }
    }
}

/// Describes `command` as a shell would show it.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with no stdin, collects its output, and measures its
/// wall time, CPU time and peak memory with `wait4`.
///
/// # Errors
/// [`BenchError::Spawn`] when it cannot be started or waited for. A child
/// that fails is not an error here: see [`ChildRun::failure`].
pub fn run_child(command: Command) -> Result<ChildRun, BenchError> {
    spawn_child(command)?.wait()
}

/// A child process started by [`spawn_child`], not yet waited for.
pub struct Spawned {
    child: std::process::Child,
    command: String,
    start: Instant,
    out_reader: std::thread::JoinHandle<Vec<u8>>,
    err_reader: std::thread::JoinHandle<Vec<u8>>,
}

/// Starts `command` with no stdin, draining its stdout and stderr on two
/// threads, so that several children can run at once and be measured
/// each by [`Spawned::wait`].
///
/// # Errors
/// [`BenchError::Spawn`] when it cannot be started.
pub fn spawn_child(command: Command) -> Result<Spawned, BenchError> {
    spawn_child_reporting(command, None)
}

/// [`spawn_child`], also sending each line the child prints on stdout to
/// `lines` as it comes (to learn the address a server listens on).
///
/// # Errors
/// [`BenchError::Spawn`] when it cannot be started.
pub fn spawn_child_reporting(
    mut command: Command,
    lines: Option<std::sync::mpsc::Sender<String>>,
) -> Result<Spawned, BenchError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let text = describe(&command);
    let start = Instant::now();
    let mut child = command.spawn().map_err(|source| BenchError::Spawn {
        command: text.clone(),
        source,
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Drain both pipes while it runs, so a chatty child never blocks on a
    // full pipe.
    let out_reader = std::thread::spawn(move || match lines {
        None => read_all(stdout),
        Some(lines) => read_lines(stdout, &lines),
    });
    let err_reader = std::thread::spawn(move || read_all(stderr));
    Ok(Spawned {
        child,
        command: text,
        start,
        out_reader,
        err_reader,
    })
}

impl Spawned {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit and measures it: the wall time ends when the
    /// child exits (not when a grandchild that inherited the pipes closes
    /// them), CPU time and peak memory come from `wait4`.
    ///
    /// # Errors
    /// [`BenchError::Spawn`] when it cannot be waited for.
    pub fn wait(self) -> Result<ChildRun, BenchError> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("Linux process ids fit in pid_t");
        let waited = wait_for(pid);
        let wall = self.start.elapsed();
        let stdout = self.out_reader.join().unwrap_or_default();
        let stderr = self.err_reader.join().unwrap_or_default();
        let (status, usage) = waited.map_err(|source| BenchError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        Ok(ChildRun {
            wall,
            user: timeval(usage.ru_utime),
            system: timeval(usage.ru_stime),
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            failure: describe_status(status),
            stdout,
            stderr: tail(&stderr, STDERR_TAIL),
        })
    }
}

/// Reads a pipe to its end line by line, sending each line to `lines`.
fn read_lines(pipe: Option<impl Read>, lines: &std::sync::mpsc::Sender<String>) -> Vec<u8> {
    use std::io::BufRead;
    let mut bytes = Vec::new();
    if let Some(pipe) = pipe {
        let mut reader = std::io::BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            bytes.extend_from_slice(line.as_bytes());
            let _ = lines.send(line.trim_end().to_owned());
            line.clear();
        }
    }
    bytes
}

/// Reads a pipe to its end (empty when there is none or it fails).
fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    bytes
}

/// Waits for `pid` to exit and returns its status and resource usage.
fn wait_for(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all zero
    // bytes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, spawned above and not waited for
        // by anyone else (std's `Child::wait` is never called on it); the
        // two pointers are to live, writable locals of the right types.
        let result = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if result == pid {
            return Ok((status, usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// `None` for exit code 0, else how the process ended.
fn describe_status(status: libc::c_int) -> Option<String> {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => None,
            code => Some(format!("exit code {code}")),
        }
    } else if libc::WIFSIGNALED(status) {
        Some(format!("killed by signal {}", libc::WTERMSIG(status)))
    } else {
        Some(format!("wait status {status:#x}"))
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let seconds = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(seconds) + Duration::from_micros(u64::from(micros))
}

/// The last `max` bytes of `bytes` as text, trimmed.
fn tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let count = text.chars().count();
    if count <= max {
        text.to_owned()
    } else {
        format!("...{}", text.chars().skip(count - max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_busy_child() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done; echo oops >&2",
        ]);
        let run = run_child(command).expect("sh runs");
        assert_eq!(run.failure, None);
        assert_eq!(run.stdout, b"done\n");
        assert_eq!(run.stderr, "oops");
        assert!(run.max_rss_kib > 0);
        assert!(run.user + run.system > Duration::ZERO);
        assert!(run.cpu_utilisation() > 0.0);
    }

    #[test]
    fn reports_exit_codes_and_signals() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let run = run_child(command).expect("sh runs");
        assert_eq!(run.failure.as_deref(), Some("exit code 3"));
        let mut command = Command::new("sh");
        command.args(["-c", "kill -9 $$"]);
        let run = run_child(command).expect("sh runs");
        assert_eq!(run.failure.as_deref(), Some("killed by signal 9"));
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error() {
        let err = run_child(Command::new("/nonexistent/cryptstream")).unwrap_err();
        assert!(matches!(err, BenchError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/cryptstream"));
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail(b"  short \n", 10), "short");
        assert_eq!(tail(b"0123456789abcdef", 4), "...cdef");
    }
}
