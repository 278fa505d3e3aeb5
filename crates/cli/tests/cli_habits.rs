//! The command line behaves as people who know age and restic expect:
//! key flags before or after a subcommand, stdin to stdout when no path is
//! given and `-o FILE`, the header decides which secret is asked for,
//! flags that do not apply are refused, skipped entries are always
//! reported, and a run that processed nothing it was given fails.
//!
//! Every run here has stderr on a pipe (not a terminal), and each test
//! checks the exact lines printed and the exit status.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

mod common;
use common::{cryptstream, run, run_with_stdin, Outcome, Workspace, EXIT_FAILURE};

/// Asserts that `outcome` exited with `code` and printed exactly `lines`
/// on stderr.
#[track_caller]
fn assert_stderr(outcome: &Outcome, code: i32, lines: &[&str]) {
    let printed: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(
        printed, lines,
        "stderr of {} (status {})",
        outcome.command, outcome.status
    );
    assert_eq!(
        outcome.code(),
        Some(code),
        "{}\nstderr:\n{}",
        outcome.command,
        outcome.stderr
    );
}

/// Detaches `cmd` from any controlling terminal, so that a prompt would
/// fail rather than wait: a run that must not prompt is seen not to.
fn without_terminal(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd
}

/// Writes `files` (name, contents) into `dir`, creating it.
fn make_files(dir: &Path, files: &[(&str, &[u8])]) {
    fs::create_dir_all(dir).expect("create the input folder");
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).expect("write an input file");
    }
}

/// Writes an age identity with `keygen --age -o PATH` and returns its
/// recipient.
fn age_identity(ws: &Workspace, name: &str) -> String {
    let outcome = run(ws.bare("keygen").args(["--age", "-o", name]));
    outcome.success();
    outcome
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("Public key: "))
        .expect("keygen --age prints the public key")
        .to_string()
}

// ---------------------------------------------------------------------------
// Skipped entries and runs that process nothing
// ---------------------------------------------------------------------------

#[test]
fn decrypting_a_plaintext_tree_names_every_skipped_file_creates_nothing_and_fails() {
    let ws = Workspace::new();
    make_files(
        &ws.path("photos"),
        &[("a.jpg", b"not encrypted"), ("b.jpg", b"nor this")],
    );
    fs::create_dir(ws.path("photos/sub")).expect("create a subfolder");
    let outcome = run(ws.keyed("decrypt").args(["photos/", "out/"]));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &[
            "cryptstream: skipped photos/a.jpg: not named *.cst or *.age",
            "cryptstream: skipped photos/b.jpg: not named *.cst or *.age",
            "cryptstream: photos/: nothing to decrypt: 2 entries skipped",
        ],
    );
    assert!(!ws.path("out").exists(), "no output folder is created");
}

#[test]
fn skipped_entries_are_listed_when_other_files_are_processed() {
    let ws = Workspace::new();
    make_files(&ws.path("plain"), &[("notes.txt", b"hello")]);
    run(ws.keyed("encrypt").args(["plain", "enc"])).success();
    fs::write(ws.path("enc/stray.txt"), b"left here by hand").expect("write a stray file");
    let outcome = run(ws.keyed("decrypt").args(["enc", "dec"]));
    assert_stderr(
        &outcome,
        0,
        &["cryptstream: skipped enc/stray.txt: not named *.cst or *.age"],
    );
    assert_eq!(fs::read(ws.path("dec/notes.txt")).unwrap(), b"hello");
}

#[test]
fn verifying_a_tree_of_links_only_fails_and_names_them() {
    let ws = Workspace::new();
    fs::create_dir(ws.path("links")).unwrap();
    std::os::unix::fs::symlink("elsewhere", ws.path("links/l")).unwrap();
    let outcome = run(ws.keyed("verify").arg("links"));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &[
            "cryptstream: skipped links/l: symbolic link (not followed)",
            "cryptstream: links: nothing to verify: 1 entry skipped",
        ],
    );
}

#[test]
fn a_resume_that_finds_everything_done_counts_the_kept_outputs_and_succeeds() {
    let ws = Workspace::new();
    make_files(&ws.path("plain"), &[("a", b"1"), ("b", b"2")]);
    run(ws.keyed("encrypt").args(["plain", "enc"])).success();
    let outcome = run(ws
        .keyed("encrypt")
        .args(["plain", "enc", "--skip-existing"]));
    assert_stderr(
        &outcome,
        0,
        &["cryptstream: kept 2 existing outputs (--skip-existing)"],
    );
}

// ---------------------------------------------------------------------------
// Key flags before or after the subcommand
// ---------------------------------------------------------------------------

#[test]
fn store_key_flags_work_before_and_after_the_subcommand() {
    let ws = Workspace::new();
    make_files(&ws.path("photos"), &[("a.jpg", b"pixels")]);
    let store = ws.path("store");
    let store_cmd = |before: &[&str]| {
        let mut cmd = ws.bare("store");
        cmd.arg("--store").arg(&store).args(["-q"]).args(before);
        cmd
    };
    // -k after `init` and after `put`, then before `list`.
    let mut init = store_cmd(&["init"]);
    init.arg("-k").arg(ws.key());
    let created = format!("cryptstream: created store {}", store.display());
    assert_stderr(&run(&mut init), 0, &[&created]);
    let mut put = store_cmd(&["put", "-k"]);
    put.arg(ws.key()).arg("photos");
    let outcome = run(&mut put);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    let mut list = store_cmd(&["-k"]);
    list.arg(ws.key()).arg("list");
    let outcome = run(&mut list);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(
        outcome.stdout_text().contains("photos"),
        "{}",
        outcome.stdout_text()
    );
}

#[test]
fn put_help_lists_the_key_flags() {
    let outcome = run(cryptstream().args(["store", "put", "--help"]));
    outcome.success();
    let help = outcome.stdout_text();
    for flag in ["-k, --key-file <FILE>", "--passphrase-file <FILE>"] {
        assert!(help.contains(flag), "put --help lacks {flag}:\n{help}");
    }
}

#[test]
fn store_refuses_an_identity_flag() {
    let outcome = run(cryptstream().args(["store", "put", "-i", "id.txt", "x"]));
    assert_eq!(outcome.code(), Some(2), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .starts_with("error: unexpected argument '-i' found"),
        "{}",
        outcome.stderr
    );
}

// ---------------------------------------------------------------------------
// The header decides what to ask for; flags that do not apply are refused
// ---------------------------------------------------------------------------

#[test]
fn a_key_file_file_without_k_names_the_key_and_never_prompts() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), b"secret").unwrap();
    run(ws.keyed("encrypt").args(["f", "f.cst"])).success();
    let outcome = run(without_terminal(ws.bare("decrypt").args(["f.cst", "out"])));
    let line = format!(
        "cryptstream: f.cst: encrypted with key file id {}: give the key file with -k FILE",
        ws.key_id()
    );
    assert_stderr(&outcome, EXIT_FAILURE, &[&line]);
    assert!(!ws.path("out").exists());
}

#[test]
fn an_age_file_without_identities_names_i() {
    let ws = Workspace::new();
    let recipient = age_identity(&ws, "id.txt");
    fs::write(ws.path("f"), b"secret").unwrap();
    run(ws.bare("encrypt").args(["-r", &recipient, "f", "f.age"])).success();
    let outcome = run(without_terminal(ws.bare("decrypt").args(["f.age", "out"])));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: f.age: an age file for X25519 recipients: give the identity file with -i FILE"],
    );
    // With -i it opens.
    run(ws.bare("decrypt").args(["-i", "id.txt", "f.age", "out"])).success();
    assert_eq!(fs::read(ws.path("out")).unwrap(), b"secret");
}

#[test]
fn encrypt_refuses_an_identity_and_keys_with_recipients() {
    let ws = Workspace::new();
    let recipient = age_identity(&ws, "id.txt");
    fs::write(ws.path("f"), b"secret").unwrap();
    let outcome = run(ws.keyed("encrypt").args(["-i", "id.txt", "f", "out"]));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: -i/--identity opens age files (decrypt, verify); to encrypt to an age identity give its recipient with -r or -R"],
    );
    let outcome = run(ws.keyed("encrypt").args(["-r", &recipient, "f", "out"]));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: -k/--key-file does not apply to age files: -r and -R encrypt to recipients"],
    );
    let outcome = run(ws
        .keyed("decrypt")
        .args(["--cipher", "aes-256-gcm", "f", "out"]));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: --cipher applies to encrypt: decrypt reads the cipher from each header"],
    );
    assert!(!ws.path("out").exists());
}

#[test]
fn k_and_i_given_each_others_files_say_which_flag_the_file_is_for() {
    let ws = Workspace::new();
    let recipient = age_identity(&ws, "id.txt");
    fs::write(ws.path("f"), b"secret").unwrap();
    run(ws.keyed("encrypt").args(["f", "f.cst"])).success();
    run(ws.bare("encrypt").args(["-r", &recipient, "f", "f.age"])).success();
    let outcome = run(ws.bare("decrypt").args(["-k", "id.txt", "f.cst", "out"]));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: id.txt: is an age identity file, not a key file: give it with -i FILE, not -k"],
    );
    let mut cmd = ws.bare("decrypt");
    cmd.arg("-i").arg(ws.key()).args(["f.age", "out"]);
    let outcome = run(&mut cmd);
    let line = format!(
        "cryptstream: {}: is a cryptstream key file, not an age identity file: give it with -k FILE, not -i",
        ws.key().display()
    );
    assert_stderr(&outcome, EXIT_FAILURE, &[&line]);
    assert!(!ws.path("out").exists());
}

// ---------------------------------------------------------------------------
// stdin to stdout, -o FILE, and trailing slashes
// ---------------------------------------------------------------------------

#[test]
fn no_path_means_stdin_to_stdout_both_ways() {
    let ws = Workspace::new();
    let sealed = run_with_stdin(&mut ws.keyed("encrypt"), Some(b"hi\n".to_vec()));
    assert_stderr(&sealed, 0, &[]);
    assert!(
        sealed.stdout.starts_with(b"\x89CST"),
        "stdout holds a cryptstream file"
    );
    let opened = run_with_stdin(&mut ws.keyed("decrypt"), Some(sealed.stdout.clone()));
    assert_stderr(&opened, 0, &[]);
    assert_eq!(opened.stdout, b"hi\n");
}

#[test]
fn stdin_to_an_age_recipient_and_back_with_o() {
    let ws = Workspace::new();
    let recipient = age_identity(&ws, "id.txt");
    let sealed = run_with_stdin(
        ws.bare("encrypt").args(["-r", &recipient]),
        Some(b"hi\n".to_vec()),
    );
    assert_stderr(&sealed, 0, &[]);
    fs::write(ws.path("f.age"), &sealed.stdout).unwrap();
    let opened = run(ws
        .bare("decrypt")
        .args(["-i", "id.txt", "f.age", "-o", "out"]));
    assert_stderr(&opened, 0, &[]);
    assert_eq!(fs::read(ws.path("out")).unwrap(), b"hi\n");
    // --output is the long spelling; stdin with -o too.
    let opened = run_with_stdin(
        ws.bare("decrypt")
            .args(["-i", "id.txt", "--output", "out2"]),
        Some(sealed.stdout.clone()),
    );
    assert_stderr(&opened, 0, &[]);
    assert_eq!(fs::read(ws.path("out2")).unwrap(), b"hi\n");
}

#[test]
fn stdin_sealed_with_a_key_file_is_refused_without_k_before_any_prompt() {
    let ws = Workspace::new();
    let sealed = run_with_stdin(&mut ws.keyed("encrypt"), Some(b"hi\n".to_vec()));
    sealed.success();
    let outcome = run_with_stdin(
        without_terminal(&mut ws.bare("decrypt")),
        Some(sealed.stdout.clone()),
    );
    let line = format!(
        "cryptstream: -: encrypted with key file id {}: give the key file with -k FILE",
        ws.key_id()
    );
    assert_stderr(&outcome, EXIT_FAILURE, &[&line]);
    assert!(outcome.stdout.is_empty());
}

#[test]
fn output_given_twice_is_refused() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), b"x").unwrap();
    let outcome = run(ws.keyed("encrypt").args(["f", "a", "-o", "b"]));
    assert_eq!(outcome.code(), Some(2), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .starts_with("error: the argument '[OUTPUT]' cannot be used with '--output <OUTPUT>'"),
        "{}",
        outcome.stderr
    );
    assert!(!ws.path("a").exists() && !ws.path("b").exists());
}

#[test]
fn a_missing_directory_with_a_trailing_slash_is_refused_not_made_a_file() {
    let ws = Workspace::new();
    fs::write(ws.path("notes.txt"), b"x").unwrap();
    let outcome = run(ws.keyed("encrypt").args(["notes.txt", "newdir/"]));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: newdir/: no such directory (a trailing slash names a directory: create it first, or drop the slash to name a file)"],
    );
    assert!(!ws.path("newdir").exists());
    fs::create_dir(ws.path("newdir")).unwrap();
    assert_stderr(
        &run(ws.keyed("encrypt").args(["notes.txt", "newdir/"])),
        0,
        &[],
    );
    assert!(ws.path("newdir/notes.txt.cst").is_file());
}

// ---------------------------------------------------------------------------
// keygen, wording, units, times and manual pages
// ---------------------------------------------------------------------------

#[test]
fn keygen_age_recipient_dash_reads_the_identity_from_stdin() {
    let ws = Workspace::new();
    let recipient = age_identity(&ws, "id.txt");
    let identity = fs::read(ws.path("id.txt")).unwrap();
    let outcome = run_with_stdin(
        ws.bare("keygen").args(["--age-recipient", "-"]),
        Some(identity),
    );
    assert_stderr(&outcome, 0, &[]);
    assert_eq!(outcome.stdout_text(), format!("{recipient}\n"));
    let outcome = run_with_stdin(
        ws.bare("keygen").args(["--age-recipient", "-"]),
        Some(b"not an identity\n".to_vec()),
    );
    assert_eq!(outcome.code(), Some(EXIT_FAILURE), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .starts_with("cryptstream: -: not an age identity file"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_single_failed_file_is_counted_in_the_singular() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), vec![7u8; 5000]).unwrap();
    run(ws.keyed("encrypt").args(["f", "f.cst"])).success();
    let mut bytes = fs::read(ws.path("f.cst")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(ws.path("f.cst"), bytes).unwrap();
    let outcome = run(ws.keyed("verify").arg("f.cst"));
    assert_eq!(outcome.code(), Some(EXIT_FAILURE));
    let last_line = outcome.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last_line, "cryptstream: 1 of 1 file failed",
        "{}",
        outcome.stderr
    );
}

#[test]
fn inspect_prints_the_mtime_as_rfc3339() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), b"x").unwrap();
    common::set_mtime(&ws.path("f"), 1_764_467_400, 250_000_000);
    run(ws.keyed("encrypt").args(["f", "f.cst"])).success();
    let outcome = run(ws.bare("inspect").arg("f.cst"));
    outcome.success();
    let text = outcome.stdout_text();
    assert!(
        text.lines()
            .any(|l| l == "mtime:          2025-11-30T01:50:00.25Z"),
        "{text}"
    );
}

#[test]
fn help_shows_sizes_for_people() {
    let outcome = run(cryptstream().args(["store", "put", "--help"]));
    outcome.success();
    let help = outcome.stdout_text();
    assert!(help.contains("[default: 256MiB]"), "{help}");
    let outcome = run(cryptstream().args(["store", "init", "--help"]));
    let help = outcome.stdout_text();
    for default in [
        "[default: 256KiB]",
        "[default: 1MiB]",
        "[default: 4MiB]",
        "[default: 32MiB]",
    ] {
        assert!(
            help.contains(default),
            "init --help lacks {default}:\n{help}"
        );
    }
    let outcome = run(cryptstream().args(["encrypt", "--help"]));
    assert!(outcome.stdout_text().contains("[default: 64KiB]"));
}

#[test]
fn manual_pages_have_examples_exit_status_environment_and_files() {
    let sections = [
        ".SH EXAMPLES",
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH FILES",
    ];
    let outcome = run(cryptstream().arg("man"));
    outcome.success();
    let page = outcome.stdout_text();
    for section in sections {
        assert!(
            page.lines().any(|l| l == section),
            "man lacks {section}:\n{page}"
        );
    }
    assert!(page.contains("CRYPTSTREAM_PASSPHRASE"), "{page}");
    let ws = Workspace::new();
    run(cryptstream()
        .arg("man")
        .arg("--out-dir")
        .arg(ws.path("man")))
    .success();
    let page = fs::read_to_string(ws.path("man/cryptstream-decrypt.1")).unwrap();
    for section in sections {
        assert!(
            page.lines().any(|l| l == section),
            "decrypt page lacks {section}:\n{page}"
        );
    }
    assert!(page.contains("docs.tar.age \\-o docs.tar"), "{page}");
    assert!(ws.path("man/cryptstream-store-put.1").is_file());
}

#[test]
fn a_passphrase_file_without_secrets_asks_for_the_passphrase_and_nothing_else() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), b"secret").unwrap();
    let mut encrypt = ws.bare("encrypt");
    encrypt
        .env(common::PASSPHRASE_ENV, "correct horse")
        .args(common::FAST_KDF)
        .args(["f", "f.cst"]);
    run(&mut encrypt).success();
    let outcome = run(without_terminal(ws.bare("decrypt").args(["f.cst", "out"])));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &["cryptstream: no key given: use -k FILE, --passphrase-file FILE or CRYPTSTREAM_PASSPHRASE (no terminal to prompt on)"],
    );
    let mut decrypt = ws.bare("decrypt");
    decrypt
        .env(common::PASSPHRASE_ENV, "correct horse")
        .args(["f.cst", "out"]);
    assert_stderr(&run(&mut decrypt), 0, &[]);
    assert_eq!(fs::read(ws.path("out")).unwrap(), b"secret");
}

#[test]
fn a_store_put_that_skips_everything_fails() {
    let ws = Workspace::new();
    let store = ws.path("store");
    let mut init = ws.keyed("store");
    init.arg("--store").arg(&store).arg("init");
    run(&mut init).success();
    let c = std::ffi::CString::new(ws.path("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut put = ws.bare("store");
    put.arg("--store")
        .arg(&store)
        .args(["put", "-k"])
        .arg(ws.key())
        .arg("fifo");
    let outcome = run(&mut put);
    let printed: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(printed.len(), 3, "{}", outcome.stderr);
    assert!(
        printed[0].starts_with("cryptstream: fifo: skipped: "),
        "{}",
        outcome.stderr
    );
    assert_eq!(
        printed[1],
        "cryptstream: put: 0 stored (0 B new), 0 unchanged, 0 failed"
    );
    assert_eq!(
        printed[2],
        "cryptstream: put: nothing to store: 1 entry skipped"
    );
    assert_eq!(outcome.code(), Some(EXIT_FAILURE));
    assert!(outcome.stdout.is_empty());
}

/// A new pseudo-terminal: (master, slave).
fn open_pty() -> (fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the integers; the
    // other pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    unsafe { (fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Everything written to the terminal whose master is `master`, read on
/// a thread until the last writer closes it (EIO).
fn read_terminal(mut master: fs::File) -> std::thread::JoinHandle<String> {
    use std::io::Read;
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    })
}

/// Runs `cmd` with stderr on a new pseudo-terminal (so that the bar and
/// the closing line are drawn) and returns its exit code and everything
/// it wrote there. Bounded by [`common::TIMEOUT`].
fn run_on_terminal(cmd: &mut Command) -> (Option<i32>, String) {
    let (master, slave) = open_pty();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(slave));
    let mut running = common::Running::spawn(cmd);
    // The parent's copy of the slave went into `cmd`: drop it, so that
    // reading the master ends (EIO) once the child has exited.
    cmd.stderr(std::process::Stdio::null());
    let reader = read_terminal(master);
    let status = running.wait(common::TIMEOUT);
    (
        status.code(),
        reader.join().expect("the pty reader does not panic"),
    )
}

/// Runs `cmd` with `stdin` as its input and stdout on a new
/// pseudo-terminal; returns the exit code, what reached the terminal, and
/// stderr.
fn run_with_stdout_on_terminal(cmd: &mut Command, stdin: &[u8]) -> (Option<i32>, String, String) {
    use std::io::{Read, Write};
    let (master, slave) = open_pty();
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::from(slave))
        .stderr(std::process::Stdio::piped());
    let mut running = common::Running::spawn(cmd);
    cmd.stdout(std::process::Stdio::null());
    let reader = read_terminal(master);
    let child = running.child_mut();
    let mut input = child.stdin.take().expect("stdin is piped");
    // A refusal may come before the input is read: a failed write is fine.
    let _ = input.write_all(stdin);
    drop(input);
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let status = running.wait(common::TIMEOUT);
    (
        status.code(),
        reader.join().expect("the pty reader does not panic"),
        stderr.join().expect("the stderr reader does not panic"),
    )
}

#[test]
fn binary_is_not_written_to_a_terminal_but_armor_is() {
    let ws = Workspace::new();
    let (code, shown, stderr) = run_with_stdout_on_terminal(&mut ws.keyed("encrypt"), b"hi\n");
    assert_eq!(
        stderr,
        "cryptstream: refusing to write encrypted data to a terminal: redirect stdout, \
         give -o FILE, or use --armor for age text\n"
    );
    assert_eq!(code, Some(EXIT_FAILURE));
    assert!(shown.is_empty(), "nothing reached the terminal: {shown:?}");
    let recipient = age_identity(&ws, "id.txt");
    let (code, shown, stderr) = run_with_stdout_on_terminal(
        ws.bare("encrypt").args(["-r", &recipient, "--armor"]),
        b"hi\n",
    );
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    assert!(
        shown.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{shown:?}"
    );
}

#[test]
fn the_closing_line_on_a_terminal_counts_in_words_and_iec_units() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), vec![1u8; 1536]).unwrap();
    let (code, text) = run_on_terminal(ws.keyed("encrypt").args(["f", "f.cst"]));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("encrypted 1 file, 1.5 KiB in "), "{text}");
    let (code, text) = run_on_terminal(ws.keyed("verify").arg("f.cst"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("verified 1 file, "), "{text}");
    assert!(!text.contains("MB"), "{text}");
}

#[test]
fn a_fifo_named_like_an_encrypted_file_is_skipped_without_blocking() {
    let ws = Workspace::new();
    fs::create_dir(ws.path("tree")).unwrap();
    let c = std::ffi::CString::new(ws.path("tree/a.cst").into_os_string().into_encoded_bytes())
        .unwrap();
    // SAFETY: mkfifo(3) reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // No -k: the headers are looked at first, and a FIFO is not opened.
    let outcome = run(without_terminal(ws.bare("decrypt").args(["tree", "out"])));
    assert_stderr(
        &outcome,
        EXIT_FAILURE,
        &[
            "cryptstream: skipped tree/a.cst: not a regular file",
            "cryptstream: tree: nothing to decrypt: 1 entry skipped",
        ],
    );
    assert!(!ws.path("out").exists());
}
