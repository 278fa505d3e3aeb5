//! The edges a hostile or unlucky environment finds: key files that are
//! devices, FIFOs or huge; file names that try to forge messages; a reader
//! that closes the pipe early; the limits the process runs under. Also the
//! generated shell completions and manual pages.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// One kibibyte.
const KIB: u64 = 1024;

/// The line of `/proc/PID/limits` for core files.
const CORE_LIMIT_LINE: &str = "Max core file size";

/// Asserts that `outcome` failed with exactly one stderr line, and that the
/// line starts with `cryptstream: PATH` and contains `reason`.
#[track_caller]
fn assert_one_line_refusal(outcome: &Outcome, path: &Path, reason: &str) {
    outcome.failure().names(path).stderr_has(reason);
    assert_eq!(
        outcome.stderr.lines().count(),
        1,
        "a refusal is one line: {}",
        outcome.stderr
    );
}

/// Creates a FIFO at `path`.
fn mkfifo(path: &Path) {
    let name = CString::new(path.as_os_str().as_bytes()).expect("no NUL in a temp path");
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// A workspace with a 4 KiB file `plain` to encrypt.
fn plain_workspace() -> Workspace {
    let ws = Workspace::new();
    write_random_file(&ws.path("plain"), 4 * KIB, 1, 0o644);
    ws
}

#[test]
fn a_device_is_not_a_key_file() {
    let ws = plain_workspace();
    let link = ws.path("zero-link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for key in [Path::new("/dev/zero"), &link] {
        let outcome = run(ws.bare("encrypt").arg("-k").arg(key).args(["plain", "out"]));
        assert_one_line_refusal(&outcome, key, "not a regular file");
        assert!(!ws.path("out").exists());
    }
}

#[test]
fn a_key_or_passphrase_file_over_64_kib_is_too_large() {
    let ws = plain_workspace();
    let big = ws.path("big");
    write_random_file(&big, 100 * KIB, 2, 0o600);
    let outcome = run(ws
        .bare("encrypt")
        .arg("-k")
        .arg(&big)
        .args(["plain", "out"]));
    assert_one_line_refusal(&outcome, &big, "too large to be a key file");
    let outcome = run(ws
        .bare("encrypt")
        .arg("--passphrase-file")
        .arg(&big)
        .args(FAST_KDF)
        .args(["plain", "out"]));
    assert_one_line_refusal(&outcome, &big, "too large to be a passphrase file");
    assert!(!ws.path("out").exists());
}

#[test]
fn a_fifo_passphrase_file_is_refused_without_blocking() {
    let ws = plain_workspace();
    let fifo = ws.path("fifo");
    mkfifo(&fifo);
    // No writer ever opens the FIFO: a binary that opened it for a blocking
    // read would hang until the run's bound kills it.
    let outcome = run(ws
        .bare("encrypt")
        .arg("--passphrase-file")
        .arg(&fifo)
        .args(FAST_KDF)
        .args(["plain", "out"]));
    assert_one_line_refusal(&outcome, &fifo, "not a regular file");
    assert!(!ws.path("out").exists());
}

#[test]
fn a_newline_in_a_file_name_cannot_forge_a_message_line() {
    let ws = Workspace::new();
    let name = "bad\nname.cst";
    fs::write(ws.path(name), b"this is not an encrypted file at all").unwrap();
    for args in [vec!["verify", name], vec!["decrypt", name, "out"]] {
        let outcome = run(ws.keyed(args[0]).args(&args[1..]));
        outcome.failure().stderr_has("bad\\nname.cst");
        for line in outcome.stderr.lines() {
            assert!(
                line.starts_with("cryptstream: "),
                "{}: every stderr line is a message of ours, not {line:?}:\n{}",
                args[0],
                outcome.stderr
            );
            assert!(!line.starts_with("name"), "{}: {line:?}", args[0]);
        }
    }
}

#[test]
fn a_closed_pipe_fails_encrypt_but_ends_decrypt_quietly() {
    let ws = Workspace::new();
    let input = random_bytes(MIB as usize, 3);
    let ciphertext = run_with_stdin(ws.keyed("encrypt").args(["-", "-"]), Some(input.clone()));
    ciphertext.success();

    let encrypt = run_into_closed_pipe(ws.keyed("encrypt").args(["-", "-"]), input);
    encrypt
        .failure()
        .stderr_has("closed before the encrypted stream was complete");
    assert_eq!(encrypt.stderr.lines().count(), 1, "{}", encrypt.stderr);

    let decrypt = run_into_closed_pipe(ws.keyed("decrypt").args(["-", "-"]), ciphertext.stdout);
    decrypt.success();
    assert_eq!(decrypt.stderr, "", "a reader that stops early is normal");
}

/// Runs `cmd` with its stdout a pipe whose read end is closed before any
/// input is written, then feeds it `stdin`.
#[track_caller]
fn run_into_closed_pipe(cmd: &mut std::process::Command, stdin: Vec<u8>) -> Outcome {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    drop(running.child_mut().stdout.take());
    let mut pipe = running.child_mut().stdin.take().expect("stdin is piped");
    // The child may stop reading once its output is gone: a write error
    // here is expected then, and the exit status tells the story.
    let feeder = std::thread::spawn(move || drop(pipe.write_all(&stdin)));
    let outcome = running.finish(TIMEOUT);
    feeder.join().expect("the stdin feeder does not panic");
    outcome
}

#[test]
fn completions_are_printed_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let outcome = run(cryptstream().args(["completions", shell]));
        outcome.success();
        assert!(
            outcome.stdout_text().contains("encrypt"),
            "{shell}: the script knows the subcommands:\n{}",
            outcome.stdout_text()
        );
    }
}

#[test]
fn man_prints_the_top_level_page_or_writes_one_per_subcommand() {
    let outcome = run(cryptstream().arg("man"));
    outcome.success();
    let page = outcome.stdout_text();
    assert!(
        page.lines().any(|l| l.starts_with(".TH cryptstream 1")),
        "roff with a title line:\n{page}"
    );
    assert!(page.contains("encrypt"), "lists the subcommands:\n{page}");

    let ws = Workspace::new();
    let dir = ws.path("man");
    run(cryptstream().arg("man").arg("--out-dir").arg(&dir)).success();
    for name in ["cryptstream", "cryptstream-encrypt", "cryptstream-decrypt"] {
        let page = fs::read_to_string(dir.join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert!(
            page.lines()
                .any(|l| l.starts_with(&format!(".TH {name} 1"))),
            "{name}.1:\n{page}"
        );
    }
}

/// The core file size limit (soft and hard, bytes) that the children here
/// start with, at most: not zero, so that a zero seen later was set by the
/// child itself.
const STARTING_CORE_LIMIT: libc::rlim_t = 1 << 20;

/// The non-zero core limit the children start with: [`STARTING_CORE_LIMIT`]
/// or the inherited hard limit when that is lower (lowering needs no
/// privilege).
///
/// # Panics
/// When this process's hard limit is 0: no child could start with core
/// dumps allowed, so the test could not tell who lowered the limit.
fn starting_core_limit() -> libc::rlim_t {
    let mut inherited = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the struct given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut inherited) };
    assert_eq!(rc, 0, "getrlimit(RLIMIT_CORE)");
    assert_ne!(
        inherited.rlim_max, 0,
        "the tests run with a hard core file size limit of 0, so no child can \
         start with core dumps allowed and this test cannot show that cryptstream \
         lowers the limit itself: run it with a non-zero hard limit (ulimit -Hc)"
    );
    inherited.rlim_max.min(STARTING_CORE_LIMIT)
}

/// Makes `cmd` start with `RLIMIT_CORE` at `limit` (soft and hard).
fn with_core_limit(cmd: &mut Command, limit: libc::rlim_t) -> &mut Command {
    // SAFETY: setrlimit(2) is async-signal-safe and only reads the struct
    // on this (forked) stack; it is the only thing done between fork and
    // exec.
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The soft and hard core file size limits of process `pid`, as
/// `/proc/PID/limits` shows them (`"0 0"`, `"1048576 1048576"`), or `None`
/// once the process is gone.
fn core_limit_of(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(CORE_LIMIT_LINE))
        .map(|rest| {
            rest.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// Whether process `pid` has a descriptor open on a file under `dir`.
fn has_open_file_under(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target.starts_with(dir))
}

/// Spawns `cmd` waiting on its open stdin, with a core limit of `limit`.
fn spawn_waiting_on_stdin(cmd: &mut Command, limit: libc::rlim_t) -> Running {
    with_core_limit(cmd, limit)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Running::spawn(cmd)
}

#[test]
fn a_running_cryptstream_cannot_dump_core() {
    let limit = starting_core_limit();
    let started_with = format!("{limit} {limit}");
    // Control: a plain program started the same way keeps the non-zero
    // limit, so a zero seen below was set by cryptstream itself.
    let mut control = spawn_waiting_on_stdin(&mut Command::new("cat"), limit);
    let control_pid = control.child_mut().id();
    assert_eq!(
        core_limit_of(control_pid).as_deref(),
        Some(started_with.as_str()),
        "a child started with a non-zero core limit (control: cat)"
    );
    drop(control.child_mut().stdin.take());
    control.finish(TIMEOUT).success();

    let ws = Workspace::new();
    let mut cmd = ws.keyed("encrypt");
    cmd.args(["-", "out.cst"]);
    // Stdin stays open, so the child waits for input while it is looked at.
    let mut running = spawn_waiting_on_stdin(&mut cmd, limit);
    let pid = running.child_mut().id();
    // The limit is lowered at the start of main; once the output is open,
    // main is well past that point.
    let opened_output = wait_until(TIMEOUT, || {
        running.has_exited() || has_open_file_under(pid, ws.root())
    });
    assert!(
        opened_output && !running.has_exited(),
        "cryptstream ended before it opened its output"
    );
    assert_eq!(
        core_limit_of(pid).as_deref(),
        Some("0 0"),
        "soft and hard core file size limits of the running binary, \
         started with {started_with}"
    );
    drop(running.child_mut().stdin.take());
    running.finish(TIMEOUT).success();
    assert!(ws.path("out.cst").exists());
}
