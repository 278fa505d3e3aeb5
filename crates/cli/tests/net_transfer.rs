//! `serve` and `send` end to end, on 127.0.0.1 with a free port: trees
//! arrive byte-exact with modes, wrong tokens and certificates are
//! refused (first contact and changed certificates: `net_trust.rs`), a killed sender resumes, many clients at once, and a server
//! stopped by SIGTERM leaves its partial files resumable. Every test is
//! bounded in time and stops its processes.

mod common;
mod net_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use net_support::*;

/// Only the regular files of a snapshot (whole trees, directories and
/// links included, are compared in `net_tree.rs`).
fn files_only(snapshot: &Snapshot) -> Snapshot {
    snapshot
        .iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

/// No partial file or sidecar anywhere below `root`.
#[track_caller]
fn assert_no_partials(root: &Path) {
    for path in snapshot(root).keys() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(
            !name.is_some_and(|n| n.starts_with(".cst-part.")),
            "partial file left: {path:?}"
        );
    }
}

#[test]
fn a_mixed_tree_arrives_exact_with_modes_and_mtimes() {
    let ws = Workspace::new();
    let src = ws.path("data");
    let tree = Tree::new(&src);
    tree.file("empty", 0, 0o600)
        .file("one", 1, 0o644)
        .file("page", 4096, 0o640)
        .dir("dir", 0o755)
        .dir("dir/sub", 0o755)
        .file("dir/sub/odd", MIB + 3, 0o755)
        .file("dir/exact-range", 8 * MIB, 0o444)
        .file("dir/big", 64 * MIB + 12345, 0o640);
    let mtime = std::fs::metadata(src.join("dir/big")).unwrap().mtime();
    let mut served = Served::start(ws.root(), &[]);
    let out = run(served
        .send(&[&src])
        .args(["--connections", "4", "--range-size", "8MiB"]))
    .success()
    .json();
    assert_eq!(out["files"], 6);
    assert_eq!(out["failures"].as_array().unwrap().len(), 0);
    assert_eq!(out["bytes_resumed"], 0);
    let arrived = served.root.join("data");
    assert_same_tree(
        &files_only(&snapshot(&src)),
        &files_only(&snapshot(&arrived)),
    );
    assert_eq!(
        std::fs::metadata(arrived.join("dir/big")).unwrap().mtime(),
        mtime
    );
    assert_no_partials(&served.root);
    // Sending again replaces the files with the same bytes.
    run(&mut served.send(&[&src])).success();
    assert_same_tree(
        &files_only(&snapshot(&src)),
        &files_only(&snapshot(&arrived)),
    );
    // A single file arrives under its own name.
    run(&mut served.send(&[&src.join("one")])).success();
    assert_eq!(std::fs::read(served.root.join("one")).unwrap().len(), 1);
    assert!(served.alive());
}

#[test]
fn a_wrong_or_missing_token_is_refused_and_nothing_is_written() {
    let ws = Workspace::new();
    let src = ws.path("f");
    write_random_file(&src, 100_000, 1, 0o644);
    let served = Served::start(ws.root(), &[]);
    let wrong = ws.path("wrong-token");
    cryptstream_net::Token::generate()
        .write_new(&wrong)
        .unwrap();
    let out = run(&mut served.send_with_token(&[&src], &wrong));
    out.failure()
        .stderr_has("did not prove that it holds this token");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    run(&mut served.send_with_token(&[&src], &ws.path("missing")))
        .failure()
        .stderr_has("missing");
    assert_empty_dir(&served.root);
}

#[test]
fn a_server_with_another_certificate_is_refused() {
    let ws = Workspace::new();
    let src = ws.path("f");
    write_random_file(&src, 1000, 2, 0o644);
    let served = Served::start(ws.root(), &[]);
    let wrong = "00".repeat(32);
    run(&mut served.send_pinned(&[&src], &served.token, &wrong))
        .failure()
        .stderr_has("fingerprint");
    assert_empty_dir(&served.root);
}

/// Bytes of the resumed file: `CRYPTSTREAM_TEST_RESUME_MIB` (default 256;
/// the benchmark script runs it with 1024).
fn resume_size() -> u64 {
    std::env::var("CRYPTSTREAM_TEST_RESUME_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
        * MIB
}

#[test]
fn a_killed_sender_resumes_and_sends_less_than_half_again() {
    let ws = Workspace::new();
    let size = resume_size();
    let src = ws.path("big.bin");
    write_random_file(&src, size, 4, 0o640);
    let served = Served::start(ws.root(), &[]);
    let mut sender = stalled_send(&served, &src, size * 3 / 5, 2);
    assert!(!served.root.join("big.bin").exists());
    sender.signal(libc::SIGKILL);
    sender.wait(Duration::from_secs(10));
    assert!(
        !served.root.join("big.bin").exists(),
        "no partial under the final name"
    );
    let out = run(&mut served.send(&[&src])).success().json();
    let sent = out["bytes_sent"].as_u64().unwrap();
    let resumed = out["bytes_resumed"].as_u64().unwrap();
    eprintln!(
        "resume: {size} bytes, {sent} sent again ({:.1}%), {resumed} resumed",
        sent as f64 * 100.0 / size as f64
    );
    assert_eq!(sent + resumed, size);
    assert!(sent < size / 2, "sent {sent} of {size} again");
    assert_eq!(hash_file(&src), hash_file(&served.root.join("big.bin")));
    assert_no_partials(&served.root);
}

#[test]
fn sigterm_stops_the_server_and_leaves_transfers_resumable() {
    let ws = Workspace::new();
    let size = 48 * MIB;
    let src = ws.path("file.bin");
    write_random_file(&src, size, 5, 0o600);
    let root = ws.path("root");
    let token = ws.path("token");
    let mut served = Served::start_with(ws.root(), &token, &root, &[]);
    let mut sender = stalled_send(&served, &src, size / 2, 2);
    served.child.signal(libc::SIGTERM);
    let status = served.child.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{status:?}: {}", served.log());
    assert!(served.log().contains("stopping"), "{}", served.log());
    sender.signal(libc::SIGKILL);
    sender.wait(Duration::from_secs(10));
    assert!(!root.join("file.bin").exists());
    let sidecars = list_dir(&root)
        .into_iter()
        .filter(|n| n.to_string_lossy().ends_with(".ranges"))
        .count();
    assert_eq!(sidecars, 1, "{:?}", list_dir(&root));
    // The next server on the same root resumes it.
    let served = Served::start_with(ws.root(), &token, &root, &[]);
    let out = run(&mut served.send(&[&src])).success().json();
    assert!(out["bytes_resumed"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(hash_file(&src), hash_file(&root.join("file.bin")));
    assert_no_partials(&root);
}

#[test]
fn fifty_clients_at_once_all_arrive() {
    const CLIENTS: usize = 50;
    let ws = Workspace::new();
    let mut served = Served::start(ws.root(), &[]);
    let mut senders = Vec::new();
    for i in 0..CLIENTS {
        let dir = ws.path(format!("c{i:02}"));
        let tree = Tree::new(&dir);
        tree.file("a", 2 * MIB + i as u64, 0o644)
            .file("b", 1000 + i as u64, 0o600);
        let mut cmd = served.send(&[&dir]);
        cmd.args(["--connections", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        senders.push((dir, Running::spawn(&mut cmd)));
    }
    for (dir, sender) in senders {
        let out = sender.finish(Duration::from_secs(180));
        out.success();
        let name = dir.file_name().unwrap();
        assert_same_tree(
            &files_only(&snapshot(&dir)),
            &files_only(&snapshot(&served.root.join(name))),
        );
    }
    eprintln!(
        "{CLIENTS} clients: server peak RSS {} KiB",
        served.peak_rss_kib()
    );
    assert!(served.alive());
    assert_no_partials(&served.root);
}

#[test]
fn bench_net_measures_every_client_count_and_checks_the_files() {
    let ws = Workspace::new();
    let out = run(cryptstream()
        .args([
            "bench",
            "net",
            "--clients",
            "1,3",
            "--size",
            "1MiB",
            "--json",
        ])
        .arg("--scratch")
        .arg(ws.root()))
    .success()
    .json();
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, clients) in rows.iter().zip([1, 3]) {
        assert_eq!(row["clients"], clients);
        assert_eq!(row["total_bytes"], clients * MIB);
        assert_eq!(row["verified"], true);
        assert!(row["server_max_rss_kib"].as_u64().unwrap() > 0);
        assert!(row["client_max_rss_kib"].as_u64().unwrap() > 0);
    }
    // Only the bench's own temp folder was used, and it is gone.
    assert!(list_dir(ws.root())
        .iter()
        .all(|n| !n.to_string_lossy().starts_with("cryptstream-bench-net")));
}

#[test]
fn a_file_the_server_refuses_fails_alone_with_one_line() {
    let ws = Workspace::new();
    let src = ws.path("t");
    Tree::new(&src)
        .file("good", 10_000, 0o644)
        .dir("link", 0o755)
        .file("link/x", 10, 0o644);
    let served = Served::start(ws.root(), &[]);
    // On the server, t/link is a symbolic link out of the root.
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(served.root.join("t")).unwrap();
    std::os::unix::fs::symlink(outside.path(), served.root.join("t/link")).unwrap();
    let out = run(&mut served.send(&[&src]));
    out.failure();
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("t/link/x") && lines[0].contains("refused"),
        "{}",
        lines[0]
    );
    let summary = out.json();
    assert_eq!(summary["files"], 1);
    assert_eq!(summary["failures"].as_array().unwrap().len(), 1);
    assert_eq!(
        hash_file(&src.join("good")),
        hash_file(&served.root.join("t/good"))
    );
    assert_empty_dir(outside.path());
    // A name no server accepts is refused before anything is sent.
    std::fs::write(src.join(".cst-part.sneaky"), b"x").unwrap();
    let out = run(&mut served.send(&[&src]));
    out.failure().stderr_has("reserved");
    assert!(out.stdout.is_empty());
}

#[test]
fn sigint_stops_an_idle_server_with_exit_130() {
    let ws = Workspace::new();
    let mut served = Served::start(ws.root(), &[]);
    served.child.signal(libc::SIGINT);
    let status = served.child.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{status:?}: {}", served.log());
    // The log is read by a thread of its own: wait for its last line.
    assert!(
        wait_until(Duration::from_secs(10), || served
            .log()
            .contains("stopped by a signal")),
        "{}",
        served.log()
    );
}
