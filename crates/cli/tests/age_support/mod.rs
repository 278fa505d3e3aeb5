//! The real `age` and `age-keygen` for the interop tests, and a pseudo-
//! terminal to answer their passphrase prompts.
//!
//! [`age_tool`] uses the programs on `PATH` when they are there; otherwise
//! `cryptstream-testkit` installs Debian's `age` package (`apt-get download`
//! and `dpkg-deb -x` into `target/test-tools/`) once per test run. If
//! neither works the test fails with the reason: interop tests never skip.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The path of `age` or `age-keygen`: from `PATH`, or Debian's package
/// installed by the test kit (once per test run, `apt-get update` first on
/// a machine with no package lists).
///
/// # Panics
/// When neither is possible (the test must not pass without the program).
pub fn age_tool(name: &str) -> PathBuf {
    cryptstream_testkit::age_program(name)
}

/// `age ARGS...`.
pub fn age() -> Command {
    let mut cmd = Command::new(age_tool("age"));
    cmd.stdin(Stdio::null());
    cmd
}

/// Makes an identity with the real `age-keygen` at `path`; returns its
/// recipient.
#[track_caller]
pub fn age_keygen(path: &Path) -> String {
    let out = Command::new(age_tool("age-keygen"))
        .arg("-o")
        .arg(path)
        .output()
        .expect("run age-keygen");
    assert!(out.status.success(), "age-keygen failed: {out:?}");
    let out = Command::new(age_tool("age-keygen"))
        .arg("-y")
        .arg(path)
        .output()
        .expect("run age-keygen -y");
    assert!(out.status.success(), "age-keygen -y failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `cmd` with a new pseudo-terminal as its controlling terminal
/// (stdin, stdout and stderr stay as `cmd` sets them), answers every
/// prompt that contains `prompt` with `answer` and a newline, and returns
/// the exit status and everything the program wrote to the terminal.
/// Killed after `timeout`.
#[track_caller]
pub fn run_with_tty(
    cmd: &mut Command,
    prompt: &str,
    answer: &str,
    timeout: Duration,
) -> (std::process::ExitStatus, String) {
    let (mut master, slave) = super::common::open_pty();
    let slave_fd = slave.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (setsid, ioctl); the slave descriptor stays open in the parent until
    // spawn returns, so it is valid in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(slave_fd, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn under a pty");
    drop(slave);
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut answered = 0;
    loop {
        let mut buf = [0u8; 4096];
        match master.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            // EIO once the child closed the terminal; EAGAIN when idle.
            Err(_) => {}
        }
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.matches(prompt).count() > answered {
            answered += 1;
            master
                .write_all(format!("{answer}\n").as_bytes())
                .expect("answer the prompt");
        }
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return (status, text);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the program under the pty did not finish in {timeout:?}; it wrote: {text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SHA-256 of `data` in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// `age -d -i IDENTITY FILE` must print exactly `plain`.
#[track_caller]
pub fn age_decrypts_to(identity: &Path, file: &Path, plain: &[u8]) {
    let out = age()
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == plain,
        "age -d {} gave other bytes",
        file.display()
    );
}

/// One workspace with an identity of ours and one made by `age-keygen`.
pub struct Keys {
    pub ws: super::common::Workspace,
    pub ours: PathBuf,
    pub our_recipient: String,
    pub theirs: PathBuf,
    pub their_recipient: String,
}

impl Keys {
    pub fn new() -> Keys {
        let ws = super::common::Workspace::new();
        let ours = ws.path("ours.txt");
        super::common::run(ws.bare("keygen").arg("--age").arg("-o").arg(&ours)).success();
        let out = super::common::run(ws.bare("keygen").arg("--age-recipient").arg(&ours));
        let our_recipient = out.success().stdout_text().trim().to_string();
        let theirs = ws.path("theirs.txt");
        let their_recipient = age_keygen(&theirs);
        Keys {
            ws,
            ours,
            our_recipient,
            theirs,
            their_recipient,
        }
    }
}
