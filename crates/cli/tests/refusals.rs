//! What the binary refuses to do, and what it never does: write inside its
//! own input, over its input, over existing outputs unless asked, to a
//! terminal, or take a secret from the command line. Inputs are never
//! modified, and every refusal is one line that names the path.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

/// Modification and change times, to the nanosecond.
type Stamp = (i64, i64, i64, i64);

/// The modification and change times of `path` (not following a symlink).
fn stamp(path: &Path) -> Stamp {
    let meta = fs::symlink_metadata(path).unwrap();
    (
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// Contents, modes and timestamps of everything under the directory `root`.
fn fingerprint(root: &Path) -> (Snapshot, BTreeMap<PathBuf, Stamp>) {
    let entries = snapshot(root);
    let stamps = entries
        .keys()
        .map(|rel| (rel.clone(), stamp(&root.join(rel))))
        .collect();
    (entries, stamps)
}

/// Contents and timestamps of the file `path`.
fn file_fingerprint(path: &Path) -> (Vec<u8>, Stamp) {
    (fs::read(path).unwrap(), stamp(path))
}

/// Asserts that `outcome` is a single-line refusal that contains `reason`.
#[track_caller]
fn assert_refused(outcome: &Outcome, reason: &str) {
    outcome.failure().stderr_has(reason);
    assert_eq!(
        outcome.stderr.lines().count(),
        1,
        "a refusal is one line: {}",
        outcome.stderr
    );
    assert_eq!(
        outcome.stderr.matches(reason).count(),
        1,
        "the reason is said once: {}",
        outcome.stderr
    );
}

/// A workspace with a small plaintext tree at `plain` and its encryption
/// at `enc`.
fn tree_workspace() -> Workspace {
    let ws = Workspace::new();
    let tree = Tree::new(&ws.path("plain"));
    tree.file("a", 3000, 0o644)
        .file("b", 100, 0o600)
        .file("sub/c", 70_000, 0o640);
    run_ok(ws.keyed("encrypt"), tree.root(), &ws.path("enc"));
    ws
}

#[test]
fn an_output_inside_the_input_directory_is_refused() {
    let ws = tree_workspace();
    std::os::unix::fs::symlink(ws.path("plain"), ws.path("alias")).unwrap();
    let before = fingerprint(ws.root());
    let cases = [
        ("encrypt", "plain", "plain/out"),
        ("encrypt", "plain", "plain"),
        ("encrypt", "plain", "plain/sub/deeper/out"),
        ("encrypt", "plain", "enc/../plain/out"),
        ("encrypt", "plain", "alias/out"),
        ("encrypt", "alias", "plain/out"),
        ("decrypt", "enc", "enc/dec"),
        ("decrypt", "enc", "enc"),
    ];
    for (subcommand, input, output) in cases {
        let outcome = run(ws.keyed(subcommand).arg(input).arg(output));
        assert_refused(&outcome, "output is inside the input directory");
        outcome.names(Path::new(output));
        assert_eq!(
            fingerprint(ws.root()),
            before,
            "{subcommand} {input} {output}"
        );
    }
}

#[test]
fn the_same_file_as_input_and_output_is_refused_even_with_force() {
    let ws = tree_workspace();
    let file = ws.path("plain/a");
    fs::hard_link(&file, ws.path("hardlink")).unwrap();
    std::os::unix::fs::symlink(&file, ws.path("symlink")).unwrap();
    let encrypted = ws.path("enc/a.cst");
    let before = fingerprint(ws.root());
    let cases = [
        ("encrypt", file.clone(), file.clone()),
        ("encrypt", file.clone(), ws.path("hardlink")),
        ("encrypt", file.clone(), ws.path("symlink")),
        ("encrypt", ws.path("symlink"), file.clone()),
        ("decrypt", encrypted.clone(), encrypted.clone()),
    ];
    for (subcommand, input, output) in cases {
        for force in [false, true] {
            let mut cmd = ws.keyed(subcommand);
            if force {
                cmd.arg("--force");
            }
            let outcome = run(cmd.arg(&input).arg(&output));
            assert_refused(&outcome, "input and output are the same file");
            assert_eq!(fingerprint(ws.root()), before, "{input:?} -> {output:?}");
        }
    }
}

#[test]
fn an_existing_output_is_refused_without_force_and_left_untouched() {
    let ws = tree_workspace();
    let existing = ws.path("existing");
    fs::write(&existing, "keep me").unwrap();
    // A tree whose outputs partly exist: nothing at all is written.
    let partial = ws.path("partial");
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("a.cst"), "old a").unwrap();
    fs::create_dir(partial.join("sub")).unwrap();
    fs::write(partial.join("sub/c.cst"), "old c").unwrap();
    let before = fingerprint(ws.root());

    let file = run(ws.keyed("encrypt").arg("plain/a").arg(&existing));
    assert_refused(&file, "output exists");
    file.names(&existing);
    let tree = run(ws.keyed("encrypt").arg("plain").arg(&partial));
    assert_refused(&tree, "output exists (and 1 more)");
    let decrypt = run(ws.keyed("decrypt").arg("enc/a.cst").arg(&existing));
    assert_refused(&decrypt, "output exists");
    let mut stream = ws.keyed("encrypt");
    stream.arg("-").arg(&existing);
    let stream = run_with_stdin(&mut stream, Some(b"new".to_vec()));
    assert_refused(&stream, "output exists");
    assert_eq!(fingerprint(ws.root()), before);
}

#[test]
fn force_replaces_existing_outputs() {
    let ws = tree_workspace();
    let plain = ws.path("plain");
    // File to file.
    let target = ws.path("target.cst");
    fs::write(&target, "old").unwrap();
    let mut force = ws.keyed("encrypt");
    force.arg("--force");
    run_ok(force, &plain.join("a"), &target);
    run_ok(ws.keyed("decrypt"), &target, &ws.path("a.back"));
    assert_eq!(
        fs::read(ws.path("a.back")).unwrap(),
        fs::read(plain.join("a")).unwrap()
    );
    assert_eq!(mode_of(&target), 0o644);
    // A tree over a tree whose outputs partly exist.
    let out = ws.path("out");
    fs::create_dir_all(out.join("sub")).unwrap();
    fs::write(out.join("a.cst"), "old").unwrap();
    fs::write(out.join("sub/c.cst"), "old").unwrap();
    let mut force = ws.keyed("encrypt");
    force.arg("--force");
    run_ok(force, &plain, &out);
    run_ok(ws.keyed("decrypt"), &out, &ws.path("back"));
    assert_same_tree(&snapshot(&plain), &snapshot(&ws.path("back")));
    // Stdin to an existing file.
    let streamed = ws.path("streamed.cst");
    fs::write(&streamed, "old").unwrap();
    let mut stream = ws.keyed("encrypt");
    stream.args(["--force", "-"]).arg(&streamed);
    run_with_stdin(&mut stream, Some(b"fresh".to_vec())).success();
    run_ok(ws.keyed("decrypt"), &streamed, &ws.path("streamed"));
    assert_eq!(fs::read(ws.path("streamed")).unwrap(), b"fresh");
    // No temp file is left beside any replaced output.
    let names = list_dir(ws.root());
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains("tmp")),
        "{names:?}"
    );
    assert_encrypted_layout(&snapshot(&plain), &snapshot(&out));
}

#[test]
fn skip_existing_keeps_existing_outputs_and_does_the_rest() {
    let ws = tree_workspace();
    let plain = ws.path("plain");
    let out = ws.path("out");
    fs::create_dir_all(out.join("sub")).unwrap();
    fs::write(out.join("a.cst"), "kept as is").unwrap();
    let kept = file_fingerprint(&out.join("a.cst"));
    let mut skip = ws.keyed("encrypt");
    skip.args(["--skip-existing", "--json"]);
    let summary = run_ok(skip, &plain, &out).json();
    assert_eq!(summary["files_ok"], 2);
    assert_eq!(summary["files_skipped"], 1);
    assert_eq!(
        Path::new(summary["skipped"][0]["path"].as_str().unwrap()),
        plain.join("a")
    );
    assert_eq!(file_fingerprint(&out.join("a.cst")), kept);
    fs::remove_file(out.join("a.cst")).unwrap();
    run_ok(ws.keyed("decrypt"), &out, &ws.path("back"));
    let mut expected = snapshot(&plain);
    expected.remove(Path::new("a"));
    assert_same_tree(&expected, &snapshot(&ws.path("back")));
    // Stdin to an existing file is skipped too.
    let mut stream = ws.keyed("encrypt");
    stream.args(["--skip-existing", "-"]).arg(out.join("b.cst"));
    let before = file_fingerprint(&out.join("b.cst"));
    run_with_stdin(&mut stream, Some(b"other".to_vec())).success();
    assert_eq!(file_fingerprint(&out.join("b.cst")), before);
}

#[test]
fn force_and_skip_existing_together_are_refused() {
    let ws = tree_workspace();
    let before = fingerprint(ws.root());
    let outcome = run(ws
        .keyed("encrypt")
        .args(["--force", "--skip-existing", "plain", "out"]));
    assert_ne!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("cannot be used with"),
        "{}",
        outcome.stderr
    );
    assert_eq!(fingerprint(ws.root()), before);
}

#[test]
fn a_directory_input_onto_an_existing_file_is_refused() {
    let ws = tree_workspace();
    fs::write(ws.path("file"), "x").unwrap();
    let before = fingerprint(ws.root());
    let outcome = run(ws.keyed("encrypt").args(["plain", "file"]));
    assert_refused(&outcome, "is not a directory");
    outcome.names(Path::new("file"));
    assert_eq!(fingerprint(ws.root()), before);
}

#[test]
fn keygen_refuses_to_overwrite_an_existing_file() {
    let ws = Workspace::new();
    let path = ws.path("taken");
    fs::write(&path, "precious").unwrap();
    let before = fingerprint(ws.root());
    let outcome = run(cryptstream().arg("keygen").arg("-o").arg(&path));
    assert_refused(&outcome, "cannot create key file");
    outcome.names(&path);
    assert_eq!(fingerprint(ws.root()), before);
    // The workspace's own key is never overwritten either.
    let key_before = fs::read(ws.key()).unwrap();
    run(cryptstream().arg("keygen").arg("-o").arg(ws.key())).failure();
    assert_eq!(fs::read(ws.key()).unwrap(), key_before);
}

#[test]
fn keygen_creates_a_mode_0600_key_whatever_the_umask() {
    let ws = Workspace::new();
    for (i, umask) in [0o000, 0o022, 0o077].into_iter().enumerate() {
        let path = ws.path(format!("key-{i}"));
        let mut cmd = cryptstream();
        cmd.arg("keygen").arg("-o").arg(&path);
        run(with_umask(&mut cmd, umask)).success();
        assert_eq!(mode_of(&path), 0o600, "umask {umask:o}");
    }
}

#[test]
fn encrypting_to_a_stdout_that_is_not_a_terminal_works() {
    let ws = tree_workspace();
    let outcome = run(ws.keyed("encrypt").args(["plain/a", "-"]));
    outcome.success();
    fs::write(ws.path("piped.cst"), &outcome.stdout).unwrap();
    run_ok(
        ws.keyed("decrypt"),
        &ws.path("piped.cst"),
        &ws.path("piped"),
    );
    assert_eq!(
        fs::read(ws.path("piped")).unwrap(),
        fs::read(ws.path("plain/a")).unwrap()
    );
}

/// Opens a pseudo-terminal and returns its (controller, terminal) ends.
fn open_pty() -> (fs::File, fs::File) {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r are called on a
    // descriptor we own, with a buffer of the length we pass; every return
    // value is checked before use.
    unsafe {
        let controller = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(controller >= 0, "posix_openpt failed");
        let controller_file = fs::File::from_raw_fd(controller);
        assert_eq!(libc::grantpt(controller), 0, "grantpt failed");
        assert_eq!(libc::unlockpt(controller), 0, "unlockpt failed");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(controller, name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r failed"
        );
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_str()
            .expect("pty names are ASCII")
            .to_owned();
        let terminal = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .expect("open the pty terminal end");
        (controller_file, terminal)
    }
}

#[test]
fn encrypting_to_a_terminal_stdout_is_refused() {
    let ws = tree_workspace();
    let (_controller, terminal) = open_pty();
    let mut cmd = ws.keyed("encrypt");
    cmd.args(["plain/a", "-"]);
    cmd.stderr(Stdio::piped()).stdout(Stdio::from(terminal));
    let outcome = Running::spawn(&mut cmd).finish(TIMEOUT);
    assert_refused(&outcome, "refusing to write encrypted data to a terminal");
}

#[test]
fn inputs_are_never_modified() {
    let ws = tree_workspace();
    let plain = ws.path("plain");
    let enc = ws.path("enc");
    let (plain_before, enc_before) = (fingerprint(&plain), fingerprint(&enc));
    run_ok(ws.keyed("encrypt"), &plain, &ws.path("enc2"));
    run_ok(ws.keyed("encrypt"), &plain.join("sub/c"), &ws.path("c.cst"));
    let mut stream = ws.keyed("encrypt");
    stream.args(["--chunk-size", "1KiB"]);
    run_ok(stream, &plain.join("a"), Path::new("-"));
    run_ok(ws.keyed("decrypt"), &enc, &ws.path("dec"));
    run_ok(ws.keyed("decrypt"), &enc.join("a.cst"), Path::new("-"));
    run(ws.keyed("verify").arg(&enc)).success();
    let mut force = ws.keyed("encrypt");
    force.arg("--force");
    run_ok(force, &plain, &ws.path("enc2"));
    // A failing decrypt leaves its input alone too.
    run(ws
        .keyed("decrypt")
        .arg(plain.join("a"))
        .arg(ws.path("nope")))
    .failure();
    assert_eq!(fingerprint(&plain), plain_before);
    assert_eq!(fingerprint(&enc), enc_before);
}

#[test]
fn a_missing_input_gives_one_line_naming_it() {
    let ws = tree_workspace();
    let before = fingerprint(ws.root());
    let missing = ws.path("no-such-input");
    let cases: [&[&str]; 4] = [
        &["encrypt", "OUT"],
        &["decrypt", "OUT"],
        &["encrypt", "-"],
        &["verify"],
    ];
    for case in cases {
        let mut cmd = ws.keyed(case[0]);
        cmd.arg(&missing);
        if let Some(out) = case.get(1) {
            cmd.arg(out);
        }
        let outcome = run(&mut cmd);
        assert_refused(&outcome, "No such file or directory");
        outcome.names(&missing);
        assert_eq!(fingerprint(ws.root()), before, "{case:?}");
    }
}

#[test]
fn a_missing_key_file_is_named() {
    let ws = tree_workspace();
    let before = fingerprint(ws.root());
    let missing = ws.path("no-such-key");
    for (subcommand, out) in [
        ("encrypt", Some("out")),
        ("decrypt", Some("dec")),
        ("verify", None),
    ] {
        let input = if subcommand == "encrypt" {
            "plain"
        } else {
            "enc"
        };
        let mut cmd = ws.bare(subcommand);
        cmd.arg("-k").arg(&missing).arg(input);
        if let Some(out) = out {
            cmd.arg(out);
        }
        let outcome = run(&mut cmd);
        assert_refused(&outcome, "cannot read key file");
        outcome.names(&missing);
        assert_eq!(fingerprint(ws.root()), before, "{subcommand}");
    }
}

#[test]
fn a_passphrase_is_never_taken_from_the_command_line() {
    let ws = tree_workspace();
    let before = fingerprint(ws.root());
    for flag in ["--passphrase", "-p"] {
        let outcome = run(ws.bare("encrypt").args([flag, "hunter2", "plain", "out"]));
        assert_ne!(outcome.code(), Some(0), "{flag} was accepted");
        assert!(
            outcome.stderr.contains("unexpected argument"),
            "{}",
            outcome.stderr
        );
    }
    assert_eq!(fingerprint(ws.root()), before);
}

#[test]
fn without_any_secret_and_no_terminal_the_run_fails_with_advice() {
    use std::os::unix::process::CommandExt;
    let ws = tree_workspace();
    let before = fingerprint(ws.root());
    for (subcommand, input, output) in [("encrypt", "plain", "out"), ("decrypt", "enc", "dec")] {
        let mut cmd = ws.bare(subcommand);
        cmd.args([input, output]);
        // SAFETY: setsid(2) is async-signal-safe; it detaches the child from
        // any controlling terminal so that no prompt can be shown.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let outcome = run(&mut cmd);
        if subcommand == "encrypt" {
            assert_refused(&outcome, "no key given");
            outcome
                .stderr_has("--passphrase-file")
                .stderr_has(PASSPHRASE_ENV);
        } else {
            // The tree was sealed with a key file: its headers say so, and
            // the advice names -k rather than a passphrase.
            assert_refused(&outcome, "encrypted with key file id");
            outcome.stderr_has(ws.key_id()).stderr_has("-k FILE");
        }
        assert_eq!(fingerprint(ws.root()), before, "{subcommand}");
    }
}

#[test]
fn chunk_sizes_outside_1kib_to_16mib_are_refused() {
    let ws = tree_workspace();
    let before = fingerprint(ws.root());
    for size in ["0", "1023", "512b", "17MiB", "16385KiB", "lots"] {
        let outcome = run(ws
            .keyed("encrypt")
            .args(["--chunk-size", size, "plain/a", "a.cst"]));
        assert_ne!(outcome.code(), Some(0), "--chunk-size {size} was accepted");
        assert!(
            outcome.stderr.contains("--chunk-size"),
            "{}",
            outcome.stderr
        );
        assert_eq!(fingerprint(ws.root()), before, "--chunk-size {size}");
    }
}
