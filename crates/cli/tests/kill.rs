//! A run stopped at any moment leaves only complete outputs: after SIGKILL,
//! SIGINT or SIGTERM every file under a final name decrypts to exactly its
//! input, no temp file is left, and `--skip-existing` finishes the job.
//!
//! The output trees here are new, so each run builds its tree staged
//! (`.NAME.cst-partial.PID` beside `NAME`, files mode 0 until complete) and
//! renames it into place at its end: after SIGINT or SIGTERM with what is
//! done; after SIGKILL nothing is under the final name, and the resume
//! takes the stage over.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Small files in the workload.
const SMALL_FILES: usize = 300;
/// Size of each small file.
const SMALL_LEN: u64 = 256 * 1024;
/// Size of the two large files (split into segments across workers).
const LARGE_LEN: u64 = 9 * MIB;
/// Runs tried per kill point before the test gives up on catching one in
/// flight.
const KILL_TRIES: usize = 3;
/// Outputs a run with `--workers 2` writes at once: one for each worker,
/// and a large file that is split over both.
const MAX_IN_FLIGHT: usize = 3;
/// How long to wait for a run to reach a kill point before giving up on it.
const REACH_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the workload: 300 files of 256 KiB and two of 9 MiB, named so
/// that the large ones come up in the middle of the walk.
fn workload(ws: &Workspace) -> PathBuf {
    let tree = Tree::new(&ws.path("plain"));
    for i in 0..SMALL_FILES {
        tree.file(format!("f{i:03}"), SMALL_LEN, [0o644, 0o600, 0o755][i % 3]);
    }
    tree.file("f100-big", LARGE_LEN, 0o640)
        .file("f200-big", LARGE_LEN, 0o600);
    tree.root().to_path_buf()
}

/// Number of entries directly in `dir`, or in its stage while the run
/// builds it there (0 while neither exists).
fn entries_in(dir: &Path) -> usize {
    let count = |dir: &Path| fs::read_dir(dir).map_or(0, |entries| entries.count());
    if dir.exists() {
        return count(dir);
    }
    stages_of(dir).iter().map(|stage| count(stage)).sum()
}

/// Removes what a run into `output` left: the tree, or its stage.
fn remove_run(output: &Path) {
    if output.exists() {
        fs::remove_dir_all(output).unwrap();
    }
    for stage in stages_of(output) {
        fs::remove_dir_all(stage).unwrap();
    }
}

/// What a SIGKILL left: nothing under the final name `output`, one stage
/// beside it; returns the stage's entries marked complete (mode not 0), as
/// a snapshot, and how many are marked incomplete.
#[track_caller]
fn killed_stage(output: &Path) -> (Snapshot, usize) {
    assert!(
        !output.exists(),
        "a killed run left {output:?} under its final name"
    );
    let stages = stages_of(output);
    assert_eq!(stages.len(), 1, "stages beside {output:?}: {stages:?}");
    let mut complete = snapshot(&stages[0]);
    let before = complete.len();
    complete.retain(|_, entry| !matches!(entry, Entry::File { mode: 0, .. }));
    let incomplete = before - complete.len();
    (complete, incomplete)
}

/// Resumes `cmd` with `--skip-existing` into `out` after a SIGKILL: the
/// run takes the stage over, says how many incomplete files it removed
/// (`incomplete`), and leaves no stage.
#[track_caller]
fn resume_after_kill(mut cmd: std::process::Command, input: &Path, out: &Path, incomplete: usize) {
    cmd.args(["--skip-existing", "--workers", "2"]);
    let files = if incomplete == 1 { "file" } else { "files" };
    run_ok(cmd, input, out).stderr_has(&format!(
        "resuming the output that an interrupted run left for {} ({incomplete} incomplete {files} removed)",
        out.display()
    ));
    assert!(stages_of(out).is_empty(), "a stage is left beside {out:?}");
}

/// How a stopped run ended.
struct Stopped {
    /// Exit status, output and stderr.
    outcome: Outcome,
    /// Whether the signal was sent (the run may have ended before).
    signalled: bool,
}

/// Starts `cmd INPUT OUTPUT` with `--workers 2`, waits until `output` holds
/// `reach` entries (or the run ends) and `extra_delay` more, then sends
/// `signal`.
fn stop_at(
    mut cmd: std::process::Command,
    input: &Path,
    output: &Path,
    reach: usize,
    extra_delay: Duration,
    signal: libc::c_int,
) -> Stopped {
    cmd.args(["--workers", "2"]).arg(input).arg(output);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut running = Running::spawn(&mut cmd);
    let reached = wait_until(REACH_TIMEOUT, || {
        running.has_exited() || entries_in(output) >= reach
    });
    assert!(reached, "the run never reached {reach} outputs");
    std::thread::sleep(extra_delay);
    let signalled = !running.has_exited();
    if signalled {
        running.signal(signal);
    }
    Stopped {
        outcome: running.finish(TIMEOUT),
        signalled,
    }
}

/// How one SIGKILL attempt ended.
enum KillResult {
    /// The process died of SIGKILL before its work was done: `outputs`
    /// entries under final names, fewer than the whole run writes.
    LandedInFlight {
        /// Entries in the output directory after the kill.
        outputs: usize,
    },
    /// The run was done first (it exited 0, or was killed after writing
    /// every output): the kill proves nothing.
    Missed,
}

/// SIGKILLs `cmd INPUT OUTPUT` once `output` holds `reach` entries and
/// `delay` has passed, and says whether the kill landed in flight. A run
/// that was signalled must have died of SIGKILL or (when it was already
/// done, the signal reaching a finished process) exited 0; any other end
/// fails the test.
#[track_caller]
fn kill_at(
    cmd: std::process::Command,
    input: &Path,
    output: &Path,
    reach: usize,
    delay: Duration,
    all_outputs: usize,
) -> KillResult {
    let stopped = stop_at(cmd, input, output, reach, delay, libc::SIGKILL);
    let status = stopped.outcome.status;
    let outputs = entries_in(output);
    if status.signal() == Some(libc::SIGKILL) {
        assert!(stopped.signalled, "SIGKILL from elsewhere: {status}");
        if outputs < all_outputs {
            return KillResult::LandedInFlight { outputs };
        }
        return KillResult::Missed;
    }
    assert_eq!(
        status.code(),
        Some(0),
        "the run neither died of SIGKILL nor succeeded: {}",
        stopped.outcome.stderr
    );
    assert_eq!(outputs, all_outputs, "a run that exited 0 wrote everything");
    KillResult::Missed
}

/// Kills `cmd` at `reach` outputs (plus a little), retrying up to
/// [`KILL_TRIES`] times (a fresh output directory each time) until a kill
/// lands in flight; runs `check` on every output left by a landed kill
/// before it is removed. Panics when no try landed.
#[track_caller]
fn kill_in_flight(
    cmd: impl Fn() -> std::process::Command,
    input: &Path,
    output: &Path,
    reach: usize,
    delay: Duration,
    all_outputs: usize,
    mut check: impl FnMut(usize),
) {
    for attempt in 0..KILL_TRIES {
        match kill_at(cmd(), input, output, reach, delay, all_outputs) {
            KillResult::LandedInFlight { outputs } => {
                println!("kill at {reach}: landed with {outputs} of {all_outputs} outputs");
                check(outputs);
                return;
            }
            KillResult::Missed => {
                println!("kill at {reach}, try {attempt}: the run was done first");
                remove_run(output);
            }
        }
    }
    panic!("no SIGKILL at {reach} outputs landed in flight in {KILL_TRIES} tries");
}

/// Stops `cmd INPUT OUTPUT` with `signal` (SIGINT or SIGTERM) as soon as
/// the first output exists (the signal handlers are installed by then).
/// A run can finish just before the signal lands; up to three runs are
/// tried to catch one mid-way (removing `output` between tries).
fn interrupt(
    cmd: impl Fn() -> std::process::Command,
    input: &Path,
    output: &Path,
    signal: libc::c_int,
) -> Outcome {
    for _ in 0..3 {
        let stopped = stop_at(cmd(), input, output, 1, Duration::ZERO, signal);
        let finished_first = stopped.outcome.code() == Some(0);
        if !finished_first {
            assert!(stopped.signalled, "the run failed on its own");
            return stopped.outcome;
        }
        println!(
            "the run finished before the signal (signalled: {})",
            stopped.signalled
        );
        remove_run(output);
    }
    panic!("three runs ended with 0 despite the signal");
}

/// Asserts that every entry of `actual` (other than its root) is in
/// `expected` with the same contents and mode: a subset, nothing partial,
/// nothing extra.
#[track_caller]
fn assert_complete_subset(expected: &Snapshot, actual: &Snapshot) {
    for (path, entry) in actual.iter().filter(|(p, _)| !p.as_os_str().is_empty()) {
        assert_eq!(
            Some(entry),
            expected.get(path),
            "{path:?} is not a complete output"
        );
    }
}

/// Asserts that the encrypted outputs in `out` are all complete: the names
/// are expected ones, and a tree decrypt of `out` (which authenticates every
/// chunk of every file) gives exact copies of their inputs.
#[track_caller]
fn assert_only_complete_encryptions(ws: &Workspace, plain: &Snapshot, out: &Path) {
    for name in list_dir(out) {
        let name = PathBuf::from(name);
        let plain_name = name
            .to_string_lossy()
            .strip_suffix(SUFFIX)
            .map(PathBuf::from);
        assert!(
            plain_name.is_some_and(|n| plain.contains_key(&n)),
            "unexpected entry {name:?} in {out:?}"
        );
    }
    let check = ws.path("check");
    run_ok(ws.keyed("decrypt"), out, &check);
    assert_complete_subset(plain, &snapshot(&check));
    fs::remove_dir_all(&check).unwrap();
}

/// Resumes an encrypt into `out` with `--skip-existing`, then checks that
/// the whole tree decrypts to `plain`.
#[track_caller]
fn resume_encrypt_and_check(ws: &Workspace, plain_root: &Path, plain: &Snapshot, out: &Path) {
    let mut resume = ws.keyed("encrypt");
    resume.args(["--skip-existing", "--workers", "2"]);
    run_ok(resume, plain_root, out);
    assert_encrypted_layout(plain, &snapshot(out));
    let back = ws.path("back");
    run_ok(ws.keyed("decrypt"), out, &back);
    assert_same_tree(plain, &snapshot(&back));
    fs::remove_dir_all(&back).unwrap();
}

#[test]
fn sigkill_during_a_tree_encrypt_leaves_only_complete_outputs() {
    let ws = Workspace::new();
    let plain_root = workload(&ws);
    let plain = snapshot(&plain_root);
    let all_outputs = SMALL_FILES + 2;
    let mut rng = XorShift::new(0x5eed);
    let mut landed = 0;
    // Spread over the run, including the moments the large files are split.
    let kill_points = [1usize, 100, 150, 200, 280];
    for (i, base) in kill_points.into_iter().enumerate() {
        let reach = base + rng.below(5) as usize;
        let delay = Duration::from_micros(rng.below(3000));
        let out = ws.path(format!("out-{i}"));
        let check = |outputs: usize| {
            assert!(
                outputs >= reach,
                "{outputs} outputs, the kill came at {reach}"
            );
            let (complete, incomplete) = killed_stage(&out);
            // Only the files being written were not yet complete: one a
            // worker, and a large one split over both.
            assert!(incomplete <= MAX_IN_FLIGHT, "{incomplete} incomplete files");
            // What is marked complete decrypts: a copy of just those files.
            let marked = ws.path("marked");
            fs::create_dir(&marked).unwrap();
            let stage = &stages_of(&out)[0];
            for path in complete.keys().filter(|p| !p.as_os_str().is_empty()) {
                fs::copy(stage.join(path), marked.join(path)).unwrap();
            }
            assert_only_complete_encryptions(&ws, &plain, &marked);
            fs::remove_dir_all(&marked).unwrap();
            resume_after_kill(ws.keyed("encrypt"), &plain_root, &out, incomplete);
            assert_encrypted_layout(&plain, &snapshot(&out));
            let back = ws.path("back");
            run_ok(ws.keyed("decrypt"), &out, &back);
            assert_same_tree(&plain, &snapshot(&back));
            fs::remove_dir_all(&back).unwrap();
            landed += 1;
        };
        kill_in_flight(
            || ws.keyed("encrypt"),
            &plain_root,
            &out,
            reach,
            delay,
            all_outputs,
            check,
        );
        fs::remove_dir_all(&out).unwrap();
    }
    assert_eq!(landed, kill_points.len(), "kills that landed in flight");
}

#[test]
fn sigkill_during_a_tree_decrypt_leaves_only_complete_outputs() {
    let ws = Workspace::new();
    let plain_root = workload(&ws);
    let plain = snapshot(&plain_root);
    let all_outputs = SMALL_FILES + 2;
    let enc = ws.path("enc");
    run_ok(ws.keyed("encrypt"), &plain_root, &enc);
    let mut rng = XorShift::new(0xdec);
    let mut landed = 0;
    let kill_points = [1usize, 101, 201];
    for (i, base) in kill_points.into_iter().enumerate() {
        let reach = base + rng.below(5) as usize;
        let delay = Duration::from_micros(rng.below(3000));
        let out = ws.path(format!("dec-{i}"));
        let check = |outputs: usize| {
            assert!(
                outputs >= reach,
                "{outputs} outputs, the kill came at {reach}"
            );
            let (complete, incomplete) = killed_stage(&out);
            assert!(incomplete <= MAX_IN_FLIGHT, "{incomplete} incomplete files");
            assert_complete_subset(&plain, &complete);
            resume_after_kill(ws.keyed("decrypt"), &enc, &out, incomplete);
            assert_same_tree(&plain, &snapshot(&out));
            landed += 1;
        };
        kill_in_flight(
            || ws.keyed("decrypt"),
            &enc,
            &out,
            reach,
            delay,
            all_outputs,
            check,
        );
        fs::remove_dir_all(&out).unwrap();
    }
    assert_eq!(landed, kill_points.len(), "kills that landed in flight");
}

/// Interrupts an encrypt with `signal` once it has written its first output,
/// and checks exit code 130, complete outputs only, and the resume.
fn interrupt_encrypt_and_resume(signal: libc::c_int) {
    let ws = Workspace::new();
    let plain_root = workload(&ws);
    let plain = snapshot(&plain_root);
    let out = ws.path("out");
    let outcome = interrupt(|| ws.keyed("encrypt"), &plain_root, &out, signal);
    assert_eq!(
        outcome.code(),
        Some(EXIT_INTERRUPTED),
        "ended with {}",
        outcome.status
    );
    assert!(
        entries_in(&out) < SMALL_FILES + 2,
        "the run was not interrupted"
    );
    // What was done is under the final name, and nothing staged is left.
    assert!(stages_of(&out).is_empty(), "a stage is left beside {out:?}");
    assert_only_complete_encryptions(&ws, &plain, &out);
    resume_encrypt_and_check(&ws, &plain_root, &plain, &out);
}

#[test]
fn sigint_exits_130_with_only_complete_outputs_and_skip_existing_finishes() {
    interrupt_encrypt_and_resume(libc::SIGINT);
}

#[test]
fn sigterm_exits_130_with_only_complete_outputs_and_skip_existing_finishes() {
    interrupt_encrypt_and_resume(libc::SIGTERM);
}

#[test]
fn sigint_reports_the_interruption_on_stderr_and_in_json() {
    let ws = Workspace::new();
    let plain_root = workload(&ws);
    let json = || {
        let mut cmd = ws.keyed("encrypt");
        cmd.arg("--json");
        cmd
    };
    let outcome = interrupt(json, &plain_root, &ws.path("out"), libc::SIGINT);
    assert_eq!(outcome.code(), Some(EXIT_INTERRUPTED), "{}", outcome.stderr);
    outcome
        .stderr_has("interrupted")
        .stderr_has("--skip-existing");
    assert_eq!(outcome.json()["cancelled"], true);
}
