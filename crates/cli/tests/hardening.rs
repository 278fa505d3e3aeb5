//! The edges a hostile or unlucky environment finds: key files that are
//! devices, FIFOs or huge; file names that try to forge messages; a reader
//! that closes the pipe early; the limits the process runs under. Also the
//! generated shell completions and manual pages.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;

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

#[test]
fn a_running_cryptstream_cannot_dump_core() {
    let ws = Workspace::new();
    let mut cmd = ws.keyed("encrypt");
    cmd.args(["-", "out.cst"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Stdin stays open, so the child waits for input while it is looked at.
    let mut running = Running::spawn(&mut cmd);
    let limits = Path::new("/proc")
        .join(running.child_mut().id().to_string())
        .join("limits");
    let core_limit = || {
        let text = fs::read_to_string(&limits).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(CORE_LIMIT_LINE))
            .map(|rest| {
                rest.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
    };
    // The limit is set at the start of main, a moment after exec.
    wait_until(TIMEOUT, || {
        running.has_exited() || core_limit().as_deref() == Some("0 0")
    });
    assert_eq!(
        core_limit().as_deref(),
        Some("0 0"),
        "soft and hard core file size limits of the running binary"
    );
    drop(running.child_mut().stdin.take());
    running.finish(TIMEOUT).success();
    assert!(ws.path("out.cst").exists());
}
