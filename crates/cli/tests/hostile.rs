//! Hostile files and hostile moments: headers that ask for absurd Argon2id
//! costs or lengths that wrap, a signal while a passphrase is stretched,
//! symbolic links planted inside an output tree, special mode bits, and a
//! run killed in the middle of a write.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The passphrase of every passphrase file made here.
const PASSPHRASE: &str = "correct horse battery staple";
/// Cheapest Argon2id costs, so making the files to tamper with is fast.
const TINY_KDF: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-passes", "1"];
/// Offset of the key-derivation block in a version-2 header.
const KDF_BLOCK_V2: usize = 80;
/// Offset of the key-derivation block in a version-1 header.
const KDF_BLOCK_V1: usize = 64;
/// Offset of the key-derivation id byte.
const KDF_ID: usize = 10;
/// The key-derivation id of a passphrase file.
const KDF_PASSPHRASE: u8 = 2;
/// Offset of the plaintext length (u64 LE), in both versions.
const LENGTH_AT: usize = 16;
/// Length of a version-1 header.
const HEADER_LEN_V1: usize = 144;
/// What the refusal of too costly Argon2id parameters says.
const COSTS_REFUSAL: &str = "above what this build accepts";
/// How long to wait for a run to reach a point (a debug line on stderr).
const REACH: Duration = Duration::from_secs(30);
/// How long a signalled run may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// What a writer stopped by `CRYPTSTREAM_DEBUG_STALL_AFTER_BYTES` prints.
const STALLED: &str = "cryptstream: debug: stalled after";
/// What a key derivation prints with `CRYPTSTREAM_DEBUG_ANNOUNCE_DERIVE`.
const DERIVING: &str = "cryptstream: debug: deriving a passphrase key";
/// The prefix of a named temp file (the fallback without O_TMPFILE).
const TEMP_PREFIX: &str = ".cst-tmp.";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `cryptstream SUBCOMMAND` in the workspace with the passphrase in the
/// environment.
fn with_passphrase(ws: &Workspace, subcommand: &str) -> Command {
    let mut cmd = ws.bare(subcommand);
    cmd.env(PASSPHRASE_ENV, PASSPHRASE);
    cmd
}

/// Encrypts a 4 KiB file with the passphrase and tiny Argon2id costs and
/// returns the encrypted bytes.
fn tiny_passphrase_file(ws: &Workspace, name: &str) -> Vec<u8> {
    let plain = ws.path(format!("{name}.plain"));
    write_random_file(&plain, 4096, 7, 0o644);
    let encrypted = ws.path(format!("{name}.plain.cst"));
    let mut cmd = with_passphrase(ws, "encrypt");
    cmd.args(TINY_KDF);
    run_ok(cmd, &plain, &encrypted);
    let bytes = fs::read(&encrypted).unwrap();
    fs::remove_file(&encrypted).unwrap();
    assert_eq!(bytes[KDF_ID], KDF_PASSPHRASE, "a passphrase file");
    bytes
}

/// Encrypts a 4 KiB file with the workspace key and returns its bytes.
fn keyed_file(ws: &Workspace, name: &str) -> Vec<u8> {
    let plain = ws.path(format!("{name}.plain"));
    write_random_file(&plain, 4096, 9, 0o644);
    let encrypted = ws.path(format!("{name}.plain.cst"));
    run_ok(ws.keyed("encrypt"), &plain, &encrypted);
    let bytes = fs::read(&encrypted).unwrap();
    fs::remove_file(&encrypted).unwrap();
    bytes
}

/// Overwrites the Argon2id costs of the key-derivation block at `block`.
fn set_costs(bytes: &mut [u8], block: usize, m_kib: u32, t: u32, p: u32) {
    bytes[block + 16..block + 20].copy_from_slice(&m_kib.to_le_bytes());
    bytes[block + 20..block + 24].copy_from_slice(&t.to_le_bytes());
    bytes[block + 24..block + 28].copy_from_slice(&p.to_le_bytes());
}

/// The same file with a version-1 header (144 bytes: no entry kind, no
/// mtime, the last 112 bytes of the header moved up by 16). The MAC no
/// longer matches, which does not matter to a refusal made before it.
fn as_version_1(v2: &[u8]) -> Vec<u8> {
    let mut v1 = v2[..28].to_vec();
    v1[8] = 1;
    v1[11] = 0;
    v1.extend_from_slice(&[0; 4]);
    v1.extend_from_slice(&v2[48..]);
    assert_eq!(v1.len(), v2.len() - (HEADER_LEN - HEADER_LEN_V1));
    v1
}

/// Asserts that `outcome` failed with exactly one stderr line about
/// `path`, and that this line says `reason` (a closing summary such as
/// "1 of 1 files failed" may follow).
#[track_caller]
fn assert_one_line_refusal(outcome: &Outcome, path: &Path, reason: &str) {
    outcome.failure().names(path).stderr_has(reason);
    let shown = format!("cryptstream: {}", path.display());
    let about: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.starts_with(&shown))
        .collect();
    assert!(
        about.len() == 1 && about[0].contains(reason),
        "expected one line about {path:?} saying {reason:?}:\n{}",
        outcome.stderr
    );
    for line in outcome.stderr.lines() {
        assert!(
            line.starts_with("cryptstream: "),
            "a refusal is whole lines, got {line:?}:\n{}",
            outcome.stderr
        );
    }
}

/// Sends a child's stderr to a file, so a test can wait for a line while
/// the child runs. A file, not a pipe: a process that outlives the child
/// (a stray worker) cannot keep the test waiting for the end of a pipe.
struct StderrWatch {
    path: PathBuf,
}

impl StderrWatch {
    /// Everything written so far.
    fn text(&self) -> String {
        fs::read(&self.path).map_or_else(
            |_| String::new(),
            |b| String::from_utf8_lossy(&b).into_owned(),
        )
    }

    /// Waits (at most [`REACH`]) until stderr contains `needle` or the
    /// child exits; panics if it did not show up.
    #[track_caller]
    fn wait_for(&self, running: &mut Running, needle: &str) {
        let seen = wait_until(REACH, || {
            self.text().contains(needle) || running.has_exited()
        });
        assert!(
            seen && self.text().contains(needle),
            "stderr never showed {needle:?} (exited: {}):\n{}",
            running.has_exited(),
            self.text()
        );
    }

    /// Everything the child wrote (call once it exited).
    fn finish(self) -> String {
        self.text()
    }
}

/// Spawns `cmd` with stdout discarded and stderr watched (through a file
/// in the system temp dir).
fn spawn_watched(cmd: &mut Command) -> (Running, StderrWatch) {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "cryptstream-hostile-stderr-{}-{n}",
        std::process::id()
    ));
    let file = fs::File::create(&path).expect("create a stderr file");
    cmd.stdout(Stdio::null()).stderr(file);
    let running = Running::spawn(cmd);
    (running, StderrWatch { path })
}

impl Drop for StderrWatch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------
// 1. Argon2id costs from a hostile header
// ---------------------------------------------------------------------------

/// Writes `bytes` to `name` and asserts that `decrypt` and `verify` refuse
/// it at once, naming it and the limits, and write nothing.
#[track_caller]
fn assert_costs_refused(ws: &Workspace, name: &str, bytes: &[u8]) {
    let hostile = ws.path(name);
    fs::write(&hostile, bytes).unwrap();
    let out = ws.path(format!("{name}.out"));
    let outcome = run(with_passphrase(ws, "decrypt").arg(&hostile).arg(&out));
    assert_one_line_refusal(&outcome, &hostile, COSTS_REFUSAL);
    assert!(!out.exists(), "decrypt wrote {out:?}");
    let outcome = run(with_passphrase(ws, "verify").arg(&hostile));
    assert_one_line_refusal(&outcome, &hostile, COSTS_REFUSAL);
    // From a stream too: the header is the first thing read.
    let outcome = run_with_stdin(
        with_passphrase(ws, "decrypt").args(["-", "-"]),
        Some(bytes.to_vec()),
    );
    outcome.failure().stderr_has(COSTS_REFUSAL);
    assert!(outcome.stdout.is_empty(), "decrypt - - wrote to stdout");
}

#[test]
fn a_hostile_argon2_header_is_refused_quickly() {
    let ws = Workspace::new();
    let good = tiny_passphrase_file(&ws, "good");
    // 4 GiB, 64 passes, 64 lanes: far above every limit.
    let mut hostile = good.clone();
    set_costs(&mut hostile, KDF_BLOCK_V2, 4 * 1024 * 1024, 64, 64);
    assert_costs_refused(&ws, "hostile-v2.cst", &hostile);
    // Each cost alone just above its limit.
    for (m_kib, t, p) in [
        (1024 * 1024 + 1, 1, 1),
        (64, 11, 1),
        (1024, 1, 17),
        (1024 * 1024, 5, 1),
    ] {
        let mut bytes = good.clone();
        set_costs(&mut bytes, KDF_BLOCK_V2, m_kib, t, p);
        assert_costs_refused(&ws, &format!("hostile-{m_kib}-{t}-{p}.cst"), &bytes);
    }
    // The same in a version-1 header (key block at 64).
    let mut v1 = as_version_1(&good);
    set_costs(&mut v1, KDF_BLOCK_V1, 4 * 1024 * 1024, 64, 64);
    assert_costs_refused(&ws, "hostile-v1.cst", &v1);
}

// ---------------------------------------------------------------------------
// 2. A signal during a slow derivation
// ---------------------------------------------------------------------------

fn sigterm_during_a_derivation(engine: &str, stream: bool) {
    let ws = Workspace::new();
    let mut slow = tiny_passphrase_file(&ws, "slow");
    // At the limits (1 GiB x 4 passes): accepted, and slow to stretch. The
    // MAC then fails, after the derivation, which this test never reaches.
    set_costs(&mut slow, KDF_BLOCK_V2, 1024 * 1024, 4, 1);
    let input = ws.path("slow.cst");
    fs::write(&input, &slow).unwrap();
    let out = ws.path("slow.out");
    let mut cmd = with_passphrase(&ws, "decrypt");
    cmd.env("CRYPTSTREAM_DEBUG_ANNOUNCE_DERIVE", "1")
        .args(["--engine", engine]);
    if stream {
        // From stdin: the header is read, then the key derived.
        cmd.arg("-")
            .arg(&out)
            .stdin(fs::File::open(&input).unwrap());
    } else {
        cmd.arg(&input).arg(&out);
    }
    let (mut running, watch) = spawn_watched(&mut cmd);
    watch.wait_for(&mut running, DERIVING);
    assert!(
        !running.has_exited(),
        "decrypt ended before the signal:\n{}",
        watch.text()
    );
    running.signal(libc::SIGTERM);
    let status = running.wait(EXIT_WAIT);
    let stderr = watch.finish();
    assert_eq!(
        status.code(),
        Some(EXIT_INTERRUPTED),
        "{engine}: SIGTERM during Argon2id: {status}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists(), "{out:?} was written");
}

#[test]
fn sigterm_during_a_derivation_exits_130() {
    sigterm_during_a_derivation("threads", false);
    sigterm_during_a_derivation("processes", false);
    sigterm_during_a_derivation("threads", true);
}

// ---------------------------------------------------------------------------
// 3. A symbolic link planted inside an output tree
// ---------------------------------------------------------------------------

/// Makes `elsewhere` (mode 0755, holding one file) and `out` holding
/// `sub -> elsewhere`; returns a snapshot of `elsewhere`.
fn plant_link(out: &Path, elsewhere: &Path) -> Snapshot {
    Tree::new(elsewhere).file("keep", 100, 0o644);
    Tree::new(out).symlink("sub", elsewhere);
    snapshot(elsewhere)
}

/// Asserts that a run into `out` refused `out/sub` as a symbolic link and
/// left `elsewhere` exactly as it was.
#[track_caller]
fn assert_link_not_followed(outcome: &Outcome, out: &Path, elsewhere: &Path, before: &Snapshot) {
    outcome
        .failure()
        .names(&out.join("sub"))
        .stderr_has("symbolic link");
    assert_same_tree(before, &snapshot(elsewhere));
    assert_eq!(mode_of(elsewhere), 0o755, "the link target was chmod'ed");
    assert_eq!(
        fs::read_link(out.join("sub")).unwrap(),
        elsewhere,
        "the link itself was replaced"
    );
}

#[test]
fn a_symlinked_directory_inside_the_output_is_not_followed() {
    let ws = Workspace::new();
    let input = ws.path("in");
    Tree::new(&input)
        .dir("sub", 0o700)
        .file("sub/a.txt", 1000, 0o600);

    // encrypt, with and without --force.
    let out = ws.path("enc-out");
    let elsewhere = ws.path("elsewhere-enc");
    let before = plant_link(&out, &elsewhere);
    for force in [false, true] {
        let mut cmd = ws.keyed("encrypt");
        if force {
            cmd.arg("--force");
        }
        let outcome = run(cmd.arg(&input).arg(&out));
        assert_link_not_followed(&outcome, &out, &elsewhere, &before);
    }

    // decrypt --force into a tree holding such a link.
    let encrypted = ws.path("enc");
    run_ok(ws.keyed("encrypt"), &input, &encrypted);
    let out = ws.path("dec-out");
    let elsewhere = ws.path("elsewhere-dec");
    let before = plant_link(&out, &elsewhere);
    for force in [false, true] {
        let mut cmd = ws.keyed("decrypt");
        if force {
            cmd.arg("--force");
        }
        let outcome = run(cmd.arg(&encrypted).arg(&out));
        assert_link_not_followed(&outcome, &out, &elsewhere, &before);
    }
}

// ---------------------------------------------------------------------------
// 4. Special bits and the umask on restore
// ---------------------------------------------------------------------------

#[test]
fn special_bits_and_umask_are_applied_on_restore() {
    let ws = Workspace::new();
    let plain = ws.path("suid");
    write_random_file(&plain, 5000, 3, 0o644);
    set_mode(&plain, 0o6777);
    assert_eq!(mode_of(&plain), 0o6777, "chmod 6777 took");
    let encrypted = ws.path("suid.cst");
    run_ok(ws.keyed("encrypt"), &plain, &encrypted);

    for (extra, expected) in [(None, 0o755), (Some("--keep-special-bits"), 0o6755)] {
        for engine in ["threads", "processes"] {
            let out = ws.path(format!("suid.{expected:o}.{engine}"));
            let mut cmd = ws.keyed("decrypt");
            cmd.args(["--engine", engine]).args(extra);
            with_umask(&mut cmd, 0o022);
            run_ok(cmd, &encrypted, &out);
            assert_eq!(hash_file(&out), hash_file(&plain));
            assert_eq!(
                mode_of(&out),
                expected,
                "mode of {out:?} ({engine}, {extra:?}, umask 022)"
            );
        }
    }

    // A tree: the file and its directory get the same treatment.
    let tree = ws.path("tree");
    Tree::new(&tree).file("d/f", 100, 0o644);
    set_mode(&tree.join("d/f"), 0o6777);
    set_mode(&tree.join("d"), 0o1777);
    let encrypted = ws.path("tree.enc");
    run_ok(ws.keyed("encrypt"), &tree, &encrypted);
    let out = ws.path("tree.dec");
    let mut cmd = ws.keyed("decrypt");
    with_umask(&mut cmd, 0o027);
    run_ok(cmd, &encrypted, &out);
    assert_eq!(mode_of(&out.join("d/f")), 0o750, "file under umask 027");
    assert_eq!(mode_of(&out.join("d")), 0o750, "directory under umask 027");
}

// ---------------------------------------------------------------------------
// 5. Directories stay private until their files are done
// ---------------------------------------------------------------------------

#[test]
fn output_directories_stay_private_while_the_run_is_in_progress() {
    let ws = Workspace::new();
    let input = ws.path("in");
    Tree::new(&input)
        .dir("d", 0o755)
        .file("d/a", 300 * 1024, 0o644);
    let out = ws.path("out");

    let mut cmd = ws.keyed("encrypt");
    cmd.env("CRYPTSTREAM_DEBUG_STALL_AFTER_BYTES", "100000")
        .arg("-j1")
        .arg(&input)
        .arg(&out);
    let (mut running, watch) = spawn_watched(&mut cmd);
    watch.wait_for(&mut running, STALLED);
    // A new tree is built staged beside its name.
    let stages = stages_of(&out);
    assert_eq!(stages.len(), 1, "{stages:?}");
    let stage = &stages[0];
    let dir_mode = mode_of(&stage.join("d"));
    let root_mode = mode_of(stage);
    let file_mode = mode_of(&stage.join("d/a.cst"));
    let visible = out.exists();
    running.signal(libc::SIGKILL);
    let status = running.wait(EXIT_WAIT);
    let stderr = watch.finish();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{stderr}");
    assert_eq!(dir_mode, 0o700, "d while its file is written (input 0755)");
    assert_eq!(root_mode, 0o700, "the tree while the run is in progress");
    assert_eq!(file_mode, 0, "a.cst is marked incomplete mid-write");
    assert!(!visible, "out was visible under its final name mid-run");
    assert!(!out.exists(), "out after the kill");

    // A complete run into the same tree finishes the job and the modes.
    let outcome = run(ws
        .keyed("encrypt")
        .arg("--skip-existing")
        .arg(&input)
        .arg(&out));
    outcome.success();
    assert_encrypted_layout(&snapshot(&input), &snapshot(&out));
    assert_eq!(mode_of(&out.join("d")), 0o755, "out/d after a complete run");

    // And a fresh complete run.
    let fresh = ws.path("fresh");
    run_ok(ws.keyed("encrypt"), &input, &fresh);
    assert_eq!(mode_of(&fresh.join("d")), 0o755);
    assert_eq!(mode_of(&fresh), 0o755);
}

// ---------------------------------------------------------------------------
// 6. SIGKILL in the middle of a write
// ---------------------------------------------------------------------------

/// The names in `dir` that are named temp files.
fn temps_in(dir: &Path) -> Vec<PathBuf> {
    list_dir(dir)
        .into_iter()
        .filter(|n| n.to_string_lossy().contains("cst-tmp"))
        .map(|n| dir.join(n))
        .collect()
}

/// Bytes of one output after which the stall hook stops a writer.
const STALL_BYTES: u64 = 1_000_000;

/// A named temp file seen while the writer was stalled.
struct TempSeen {
    /// Its path.
    path: PathBuf,
    /// Its permission bits.
    mode: u32,
    /// Its length.
    len: u64,
}

/// What a stalled run left in its output directory.
struct Stall {
    /// The names in the output directory while the writer was stalled.
    names_during: Vec<std::ffi::OsString>,
    /// The named temp files seen then.
    temps: Vec<TempSeen>,
}

impl Stall {
    /// Asserts that exactly one named temp file existed mid-write and that
    /// it held what the writer had written before it stalled (at least
    /// [`STALL_BYTES`]): the kill really came in the middle of a write.
    #[track_caller]
    fn assert_one_temp_with_content(&self, what: &str) {
        assert_eq!(
            self.temps.len(),
            1,
            "{what}: one named temp file mid-write, saw {:?}",
            self.names_during
        );
        let temp = &self.temps[0];
        assert!(
            temp.len >= STALL_BYTES,
            "{what}: the temp file {:?} held {} bytes when the writer stalled, \
             not the {STALL_BYTES} written",
            temp.path,
            temp.len
        );
    }
}

/// Runs `cmd` (stdin as given), waits until a writer stalls, looks at
/// `dir`, SIGKILLs it and asserts that it died of that signal.
fn stall_and_kill(cmd: &mut Command, dir: &Path) -> Stall {
    cmd.env(
        "CRYPTSTREAM_DEBUG_STALL_AFTER_BYTES",
        STALL_BYTES.to_string(),
    );
    let (mut running, watch) = spawn_watched(cmd);
    watch.wait_for(&mut running, STALLED);
    let names_during = list_dir(dir);
    let temps = temps_in(dir)
        .into_iter()
        .map(|path| TempSeen {
            mode: mode_of(&path),
            len: fs::symlink_metadata(&path).map_or(0, |m| m.len()),
            path,
        })
        .collect();
    running.signal(libc::SIGKILL);
    let status = running.wait(EXIT_WAIT);
    let stderr = watch.finish();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the run did not die of SIGKILL: {status}\n{stderr}"
    );
    Stall {
        names_during,
        temps,
    }
}

#[track_caller]
fn assert_private_temps(stall: &Stall) {
    for temp in &stall.temps {
        assert_eq!(
            temp.mode, 0o600,
            "mode of the temp file {:?} mid-write",
            temp.path
        );
    }
    for name in &stall.names_during {
        assert!(
            name.to_string_lossy().starts_with(TEMP_PREFIX),
            "{name:?} was visible mid-write"
        );
    }
}

#[test]
fn sigkill_mid_write_leaves_nothing_and_the_named_temp_fallback_is_cleaned() {
    let ws = Workspace::new();
    let plain = ws.path("big");
    write_random_file(&plain, 3 * MIB, 11, 0o644);

    // O_TMPFILE: nothing at all, during or after.
    let out = ws.path("out-tmpfile");
    fs::create_dir(&out).unwrap();
    let target = out.join("big.cst");
    let stall = stall_and_kill(ws.keyed("encrypt").arg(&plain).arg(&target), &out);
    assert!(
        stall.names_during.is_empty(),
        "visible mid-write: {:?}",
        stall.names_during
    );
    assert_empty_dir(&out);

    // Named temp files: private while they exist, removed by the next run.
    let out = ws.path("out-named");
    fs::create_dir(&out).unwrap();
    let target = out.join("big.cst");
    let mut cmd = ws.keyed("encrypt");
    cmd.env("CRYPTSTREAM_DEBUG_NO_TMPFILE", "1")
        .arg(&plain)
        .arg(&target);
    let stall = stall_and_kill(&mut cmd, &out);
    stall.assert_one_temp_with_content("file encrypt with named temp files");
    assert_private_temps(&stall);
    assert!(!target.exists(), "big.cst appeared under its final name");
    for temp in temps_in(&out) {
        assert_eq!(mode_of(&temp), 0o600, "mode of the left temp file {temp:?}");
    }
    let mut cmd = ws.keyed("encrypt");
    cmd.env("CRYPTSTREAM_DEBUG_NO_TMPFILE", "1")
        .arg("--skip-existing")
        .arg(&plain)
        .arg(&target);
    run(&mut cmd).success();
    assert_eq!(
        temps_in(&out),
        Vec::<PathBuf>::new(),
        "a temp file was left"
    );
    assert_eq!(list_dir(&out), vec![std::ffi::OsString::from("big.cst")]);
    let check = ws.path("big.check");
    run_ok(ws.keyed("decrypt"), &target, &check);
    assert_eq!(hash_file(&check), hash_file(&plain));

    // A stream decrypt (stdin to a named output) with named temp files.
    let out = ws.path("out-stream");
    fs::create_dir(&out).unwrap();
    let target = out.join("big");
    let stall = stall_and_kill(
        &mut stream_decrypt(&ws, &target, &ws.path("out-named/big.cst")),
        &out,
    );
    stall.assert_one_temp_with_content("stream decrypt with named temp files");
    assert_private_temps(&stall);
    assert!(
        !target.exists(),
        "the stream output appeared under its final name"
    );
    let outcome = run(&mut stream_decrypt(
        &ws,
        &target,
        &ws.path("out-named/big.cst"),
    ));
    outcome.success();
    assert_eq!(hash_file(&target), hash_file(&plain));
}

/// `decrypt - TARGET` with named temp files, stdin read from `encrypted`.
fn stream_decrypt(ws: &Workspace, target: &Path, encrypted: &Path) -> Command {
    let mut cmd = ws.keyed("decrypt");
    cmd.env("CRYPTSTREAM_DEBUG_NO_TMPFILE", "1")
        .arg("-")
        .arg(target)
        .stdin(fs::File::open(encrypted).unwrap());
    cmd
}

/// A stream output goes through the same named-temp fallback as a file
/// output, so the next stream run into that directory must sweep the temp
/// file a killed one left (as a file run does, and as the output crate
/// documents: "removed by the next run that writes into that directory").
#[test]
fn a_stream_output_removes_the_stale_temp_of_a_killed_stream_run() {
    let ws = Workspace::new();
    let plain = ws.path("big");
    write_random_file(&plain, 3 * MIB, 12, 0o644);
    let encrypted = ws.path("big.cst");
    run_ok(ws.keyed("encrypt"), &plain, &encrypted);
    let out = ws.path("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("big");
    let stall = stall_and_kill(&mut stream_decrypt(&ws, &target, &encrypted), &out);
    stall.assert_one_temp_with_content("stream decrypt");
    assert_eq!(temps_in(&out).len(), 1, "the killed run left its temp file");
    run(&mut stream_decrypt(&ws, &target, &encrypted)).success();
    assert_eq!(hash_file(&target), hash_file(&plain));
    assert_eq!(
        temps_in(&out),
        Vec::<PathBuf>::new(),
        "the stale temp file of the killed run is still there"
    );
}

// ---------------------------------------------------------------------------
// 7. A plaintext length that wraps the file-length arithmetic
// ---------------------------------------------------------------------------

#[test]
fn a_wrapped_plaintext_length_is_refused_everywhere() {
    let ws = Workspace::new();
    let good = keyed_file(&ws, "good");
    let lengths = [
        u64::MAX - 1,
        u64::MAX - 10,
        u64::MAX - 159, // 2^64 - 160: header + length wraps to 0
        u64::MAX - 175,
        u64::MAX - (HEADER_LEN as u64 + TAG_LEN as u64) + 1,
        u64::MAX / 2,
        1 << 63,
        u64::MAX - 65536,
    ];
    for (i, length) in lengths.into_iter().enumerate() {
        let mut bytes = good.clone();
        bytes[LENGTH_AT..LENGTH_AT + 8].copy_from_slice(&length.to_le_bytes());
        let file = ws.path(format!("wrapped-{i}.cst"));
        fs::write(&file, &bytes).unwrap();
        let what = format!("plaintext length {length} ({length:#x})");
        // Whether H + N + 16 * ceil(N / C) overflows u64: such a header is
        // refused as it is parsed, by every reader, with the same words.
        let chunk = u128::from(u32::from_le_bytes(bytes[12..16].try_into().unwrap()));
        let n = u128::from(length);
        let wraps =
            HEADER_LEN as u128 + n + TAG_LEN as u128 * n.div_ceil(chunk) > u128::from(u64::MAX);
        let reason = if wraps {
            "plaintext length too large"
        } else {
            ""
        };

        let outcome = run(ws.keyed("verify").arg(&file));
        outcome.failure().names(&file).stderr_has(reason);

        let out = ws.path(format!("wrapped-{i}.out"));
        let outcome = run(ws.keyed("decrypt").arg(&file).arg(&out));
        outcome.failure().names(&file).stderr_has(reason);
        assert!(!out.exists(), "{what}: decrypt wrote {out:?}");

        for engine in ["threads", "processes"] {
            let out = ws.path(format!("wrapped-{i}.{engine}"));
            let outcome = run(ws
                .keyed("decrypt")
                .args(["--engine", engine])
                .arg(&file)
                .arg(&out));
            outcome.failure().names(&file).stderr_has(reason);
            assert!(
                !out.exists(),
                "{what}: decrypt --engine {engine} wrote {out:?}"
            );
        }

        let outcome = run_with_stdin(ws.keyed("decrypt").args(["-", "-"]), Some(bytes.clone()));
        outcome.failure().stderr_has(reason);
        assert!(
            !outcome.stderr.is_empty(),
            "{what}: decrypt - - said nothing"
        );
        assert!(
            outcome.stdout.is_empty(),
            "{what}: decrypt - - wrote {} bytes",
            outcome.stdout.len()
        );
    }
    // The untouched file is fine (the refusals above are about the length).
    let file = ws.path("good.cst");
    fs::write(&file, &good).unwrap();
    run(ws.keyed("verify").arg(&file)).success();
}

// ---------------------------------------------------------------------------
// 8. Worker processes and the passphrase
// ---------------------------------------------------------------------------

/// The pids in `cryptstream: worker N started, pid P` lines.
fn worker_pids(stderr: &str) -> Vec<i32> {
    stderr
        .lines()
        .filter(|l| l.starts_with("cryptstream: worker "))
        .filter_map(|l| l.rsplit_once("pid ")?.1.trim().parse().ok())
        .collect()
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits (at most [`EXIT_WAIT`]) for the workers `pids` to end after their
/// parent was killed; SIGKILLs any still running (so that no test leaves a
/// process behind) and returns those.
fn kill_stray_workers(pids: &[i32]) -> Vec<i32> {
    wait_until(EXIT_WAIT, || pids.iter().all(|&p| is_gone(p)));
    let mut strays = Vec::new();
    for &pid in pids {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !is_gone(pid) && cmdline.starts_with(b"cryptstream-worker") {
            // SAFETY: kill(2) has no memory-safety requirements; the pid is
            // a worker of our run (checked by its command line just now).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            strays.push(pid);
        }
    }
    strays
}

/// Starts a passphrase `encrypt --engine processes` of a 1 MiB file that
/// stalls mid-write, reads the environment of every worker, SIGKILLs the
/// parent, and returns the workers' environments and the workers that
/// were still running [`EXIT_WAIT`] later (killed by the test).
fn stalled_process_run(ws: &Workspace) -> (Vec<(i32, Vec<String>)>, Vec<i32>) {
    let plain = ws.path("plain");
    write_random_file(&plain, MIB, 13, 0o644);
    let out = ws.path("plain.cst");
    let mut cmd = with_passphrase(ws, "encrypt");
    cmd.args(TINY_KDF)
        .args(["--engine", "processes", "-j2"])
        .env("CRYPTSTREAM_DEBUG_WORKER_PIDS", "1")
        .env("CRYPTSTREAM_DEBUG_STALL_AFTER_BYTES", "100000")
        .arg(&plain)
        .arg(&out);
    let (mut running, watch) = spawn_watched(&mut cmd);
    watch.wait_for(&mut running, STALLED);
    let pids = worker_pids(&watch.text());
    let mut environs = Vec::new();
    for &pid in &pids {
        // Read while the run is stalled: every worker is still alive.
        let environ = fs::read(format!("/proc/{pid}/environ"));
        let vars = environ
            .unwrap_or_default()
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        environs.push((pid, vars));
    }
    running.signal(libc::SIGKILL);
    let status = running.wait(EXIT_WAIT);
    let strays = kill_stray_workers(&pids);
    let stderr = watch.finish();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{stderr}");
    assert!(!pids.is_empty(), "no worker pid printed:\n{stderr}");
    assert!(!out.exists(), "{out:?} appeared");
    (environs, strays)
}

#[test]
fn workers_do_not_inherit_the_passphrase() {
    let ws = Workspace::new();
    let (environs, _strays) = stalled_process_run(&ws);
    for (pid, vars) in &environs {
        // The read worked and is the worker's: it was started with the
        // debug variables of its parent.
        assert!(
            vars.iter()
                .any(|v| v.starts_with("CRYPTSTREAM_DEBUG_STALL_AFTER_BYTES=")),
            "worker {pid}: environment not read: {vars:?}"
        );
        assert!(
            !vars
                .iter()
                .any(|v| v.starts_with(&format!("{PASSPHRASE_ENV}="))),
            "worker {pid} inherited {PASSPHRASE_ENV}"
        );
        assert!(
            !vars.iter().any(|v| v.contains(PASSPHRASE)),
            "worker {pid} has the passphrase in its environment"
        );
    }
}

/// Workers are documented to die with the parent (`PR_SET_PDEATHSIG`).
/// The death signal is SIGTERM, which only asks a worker to stop after its
/// current segment: a worker stuck in a write (here: the stall hook) keeps
/// running, orphaned, holding its inherited stderr and the output open.
#[test]
fn a_stalled_worker_dies_with_its_killed_parent() {
    let ws = Workspace::new();
    let (_environs, strays) = stalled_process_run(&ws);
    assert!(
        strays.is_empty(),
        "workers {strays:?} were still running {EXIT_WAIT:?} after their parent was SIGKILLed \
         (the test killed them)"
    );
}
