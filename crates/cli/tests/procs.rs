//! The process engine under fire: workers killed in the middle of a run,
//! the parent killed, and SIGINT/SIGTERM. Every test is bounded in time and
//! asserts no timing.
//!
//! Tests find workers and pick their moment with two debug hooks of the
//! binary: `CRYPTSTREAM_DEBUG_WORKER_PIDS` (the parent prints each worker's
//! pid) and `CRYPTSTREAM_DEBUG_STALL_TASK=N` (the worker that takes task N
//! says so and waits 3 s before running it, so it provably holds a task);
//! `CRYPTSTREAM_DEBUG_DIE_AFTER_TASK=N` makes the worker that runs task N
//! kill itself after its output is linked and before it reports it.

mod procs_support;

use std::path::Path;
use std::time::Duration;

use procs_support::*;

fn many_files(root: &Path, count: u64, size: u64) {
    for i in 0..count {
        write_file(
            &root.join(format!("d{}/f{i:03}", i % 7)),
            size,
            i + 1,
            0o640,
        );
    }
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test read from the child's own output.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

fn decrypts_to(ws: &Workspace, encrypted: &Path, plain: &Path, name: &str) {
    let dec = ws.path(name);
    let out = run(ws.keyed("decrypt", &[]).arg(encrypted).arg(&dec));
    assert!(out.status.success(), "decrypt: {}", out.stderr);
    assert_eq!(
        snapshot(&dec),
        snapshot(plain),
        "every output decrypts to its input"
    );
}

#[test]
fn a_worker_killed_mid_run_of_500_files_has_its_task_retried() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    many_files(&plain, 500, 20_000);
    let enc = ws.path("enc");
    let mut cmd = ws.keyed("encrypt", &["--engine", "processes", "-j", "2", "--json"]);
    cmd.env(DEBUG_PIDS_ENV, "1")
        .env(STALL_ENV, "250")
        .arg(&plain)
        .arg(&enc);
    let (mut child, lines) = spawn_with_stderr_lines(&mut cmd);
    let stdout = child.0.stdout.take().expect("piped");
    let json = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut seen = Vec::new();
    let stall = wait_for_line(&lines, "stalls on task 250", &mut seen);
    let victim = last_number(&stall[..stall.find(" stalls").expect("format")]);
    kill(victim, libc::SIGKILL);
    let status = child.wait();
    rest_of_lines(&lines, &mut seen);
    let stderr = seen.join("\n");
    assert!(status.success(), "the run completes: {stderr}");
    assert!(stderr.contains("retried 1 task"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&json.join().expect("reader")).expect("json summary");
    assert_eq!(summary["files_ok"], 500);
    assert_eq!(summary["files_failed"], 0);
    let retried = summary["retried"].as_array().expect("retried list");
    assert_eq!(retried.len(), 1, "{summary}");
    assert_eq!(retried[0]["worker_pid"], victim);
    assert_eq!(retried[0]["task"], "whole file");
    assert!(retried[0]["cause"]
        .as_str()
        .is_some_and(|c| c.contains("signal 9")));
    // A replacement worker was started.
    assert!(worker_pids(&seen).len() >= 3, "{stderr}");
    assert!(temp_files(&enc).is_empty());
    decrypts_to(&ws, &enc, &plain, "dec");
}

#[test]
fn a_worker_that_dies_after_linking_its_output_is_not_run_again() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    many_files(&plain, 40, 5_000);
    let enc = ws.path("enc");
    let dec = ws.path("dec");
    for (direction, input, output) in [("encrypt", &plain, &enc), ("decrypt", &enc, &dec)] {
        let mut cmd = ws.keyed(direction, &["--engine", "processes", "-j", "2", "--json"]);
        let out = run(cmd.env(DIE_AFTER_ENV, "20").arg(input).arg(output));
        assert!(out.status.success(), "{direction}: {}", out.stderr);
        let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        assert_eq!(summary["files_ok"], 40, "{direction}: {summary}");
        assert_eq!(summary["files_failed"], 0, "{direction}: {summary}");
        let retried = summary["retried"].as_array().expect("retried list");
        assert_eq!(retried.len(), 1, "{direction}: {summary}");
        assert_eq!(
            retried[0]["task"], "whole file, found complete: not run again",
            "{direction}"
        );
        assert!(retried[0]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("signal 9")));
        assert!(temp_files(output).is_empty(), "{direction}");
    }
    assert_eq!(snapshot(&dec), snapshot(&plain), "every file round-trips");
}

#[test]
fn a_worker_killed_during_a_segment_of_a_split_file_is_retried() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    write_file(&plain.join("big"), 13 * 1024 * 1024 + 7, 5, 0o600);
    let enc = ws.path("enc");
    // Task ids: 1 names the split file, 2..=5 are its four segments.
    let mut cmd = ws.keyed("encrypt", &["--engine", "processes", "-j", "2", "--json"]);
    cmd.env(STALL_ENV, "3").arg(&plain).arg(&enc);
    let (mut child, lines) = spawn_with_stderr_lines(&mut cmd);
    let stdout = child.0.stdout.take().expect("piped");
    let json = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut seen = Vec::new();
    let stall = wait_for_line(&lines, "stalls on task 3", &mut seen);
    kill(
        last_number(&stall[..stall.find(" stalls").expect("format")]),
        libc::SIGKILL,
    );
    assert!(child.wait().success());
    let summary: serde_json::Value =
        serde_json::from_str(&json.join().expect("reader")).expect("json");
    assert_eq!(summary["retried"][0]["task"], "chunks 64..128", "{summary}");
    decrypts_to(&ws, &enc, &plain, "dec");
}

#[test]
fn a_task_whose_worker_dies_twice_fails_its_file_only() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    many_files(&plain, 30, 5_000);
    let enc = ws.path("enc");
    let mut cmd = ws.keyed("encrypt", &["--engine", "processes", "-j", "2", "--json"]);
    cmd.env(STALL_ENV, "10").arg(&plain).arg(&enc);
    let (mut child, lines) = spawn_with_stderr_lines(&mut cmd);
    let stdout = child.0.stdout.take().expect("piped");
    let json = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut seen = Vec::new();
    for _ in 0..2 {
        let stall = wait_for_line(&lines, "stalls on task 10", &mut seen);
        kill(
            last_number(&stall[..stall.find(" stalls").expect("format")]),
            libc::SIGKILL,
        );
    }
    let status = child.wait();
    rest_of_lines(&lines, &mut seen);
    let stderr = seen.join("\n");
    assert_eq!(
        status.code(),
        Some(1),
        "the exit code tells the truth: {stderr}"
    );
    assert!(
        stderr.contains("also after a retry on another worker"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&json.join().expect("reader")).expect("json");
    assert_eq!(summary["files_ok"], 29);
    assert_eq!(summary["files_failed"], 1);
    assert!(temp_files(&enc).is_empty());
}

#[test]
fn killing_the_parent_takes_its_workers_and_leaves_nothing_behind() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    many_files(&plain, 200, 30_000);
    let enc = ws.path("enc");
    let mut cmd = ws.keyed("encrypt", &["--engine", "processes", "-j", "3"]);
    cmd.env(DEBUG_PIDS_ENV, "1")
        .env(STALL_ENV, "60")
        .arg(&plain)
        .arg(&enc);
    let (mut child, lines) = spawn_with_stderr_lines(&mut cmd);
    let mut seen = Vec::new();
    wait_for_line(&lines, "stalls on task 60", &mut seen);
    seen.extend(lines.try_iter());
    let workers = worker_pids(&seen);
    assert!(!workers.is_empty());
    // The ring is an anonymous memfd: it is residue only while a process
    // holds it. Find it now (the check can see it), and after the kill
    // nobody may hold it.
    let ring = ring_memfd(child.0.id()).expect("the running parent holds its ring");
    assert!(holders_of(ring).contains(&child.0.id()));
    kill(child.0.id(), libc::SIGKILL);
    child.wait();
    assert!(
        wait_until(Duration::from_secs(10), || workers
            .iter()
            .all(|&p| process_gone(p))),
        "workers still running after their parent died: {workers:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || holders_of(ring).is_empty()),
        "the ring memfd is still held by {:?}",
        holders_of(ring)
    );
    // Outputs are complete or absent; a rerun finishes the job.
    assert!(temp_files(&enc).is_empty());
    let out = run(ws
        .keyed(
            "encrypt",
            &["--engine", "processes", "-j", "3", "--skip-existing"],
        )
        .arg(&plain)
        .arg(&enc));
    assert!(out.status.success(), "rerun: {}", out.stderr);
    decrypts_to(&ws, &enc, &plain, "dec");
}

#[test]
fn sigint_and_sigterm_stop_workers_remove_temp_files_and_exit_130() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let ws = Workspace::new();
        let plain = ws.path("plain");
        many_files(&plain, 100, 30_000);
        let enc = ws.path("enc");
        let mut cmd = ws.keyed("encrypt", &["--engine", "processes", "-j", "2"]);
        cmd.env(DEBUG_PIDS_ENV, "1")
            .env(STALL_ENV, "40")
            .arg(&plain)
            .arg(&enc);
        let (mut child, lines) = spawn_with_stderr_lines(&mut cmd);
        let mut seen = Vec::new();
        wait_for_line(&lines, "stalls on task 40", &mut seen);
        seen.extend(lines.try_iter());
        let workers = worker_pids(&seen);
        kill(child.0.id(), signal);
        let status = child.wait();
        rest_of_lines(&lines, &mut seen);
        assert_eq!(status.code(), Some(130), "signal {signal}: {seen:#?}");
        assert!(
            wait_until(Duration::from_secs(10), || workers
                .iter()
                .all(|&p| process_gone(p))),
            "workers left after signal {signal}"
        );
        assert!(temp_files(&enc).is_empty());
        let done = snapshot(&enc).len();
        assert!(done < 100, "the run stopped early ({done} files)");
        let out = run(ws
            .keyed("encrypt", &["--engine", "processes", "--skip-existing"])
            .arg(&plain)
            .arg(&enc));
        assert!(out.status.success(), "rerun: {}", out.stderr);
        decrypts_to(&ws, &enc, &plain, "dec");
    }
}

#[test]
fn workers_start_lazily() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    write_file(&plain.join("one"), 1000, 1, 0o600);
    let mut cmd = ws.keyed("encrypt", &["--engine", "processes", "-j", "8"]);
    cmd.env(DEBUG_PIDS_ENV, "1").arg(&plain).arg(ws.path("enc"));
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<String> = out.stderr.lines().map(str::to_string).collect();
    assert_eq!(
        worker_pids(&lines).len(),
        1,
        "one file needs one worker: {}",
        out.stderr
    );
}
