//! Crash safety and concurrency of the store: SIGKILL of the real `put`
//! at random moments, two puts at once, and gc while a put runs.

mod common;
mod store_support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::*;
use store_support::*;

on_every_backend!(
    sigkill_during_put_at_random_points_leaves_a_store_that_verifies,
    two_puts_at_once_and_a_gc_during_a_put_lose_nothing,
);

/// Small chunks and packs, so that a put changes durable state often.
const SMALL: &[&str] = &[
    "--chunk-min",
    "16KiB",
    "--chunk-avg",
    "64KiB",
    "--chunk-max",
    "256KiB",
    "--pack-target",
    "1MiB",
];

fn random_tree(root: &Path, files: u64, seed: u64) {
    let mut rng = XorShift::new(seed);
    for i in 0..files {
        let len = rng.below(1_500_000);
        let dir = root.join(format!("d{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        write_random_file(&dir.join(format!("f{i:03}")), len, seed * 1000 + i, 0o644);
    }
}

/// Entries a put reported complete: (id, name).
type Reported = Arc<Mutex<Vec<(String, String)>>>;

/// Spawns a put with the delay hook and collects the ids it prints.
fn spawn_put(
    s: &StoreWs,
    path: &Path,
    delay_ms: u64,
    force: bool,
) -> (Running, Reported, std::thread::JoinHandle<()>) {
    let mut cmd = s.cmd("put");
    if force {
        cmd.arg("--force-read");
    }
    cmd.arg(path)
        .env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut running = Running::spawn(&mut cmd);
    let stdout = running.child_mut().stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some((id, name)) = line.split_once("  ") {
                let name = name.trim_end_matches("  (unchanged)");
                sink.lock().unwrap().push((id.to_owned(), name.to_owned()));
            }
        }
    });
    (running, seen, reader)
}

fn check_reported(s: &StoreWs, src_parent: &Path, reported: &[(String, String)], round: usize) {
    for (id, name) in reported {
        let dest = s.ws.path(format!("check-{round}-{id}"));
        s.run("get", &[id, &dest]).success();
        if src_parent.join(name).is_dir() {
            assert!(
                dest.join(name).is_dir(),
                "round {round}: {name} is not a directory"
            );
            fs::remove_dir_all(&dest).unwrap();
            continue;
        }
        let want = fs::read(src_parent.join(name)).unwrap();
        let got = fs::read(dest.join(name)).unwrap();
        assert!(
            want == got,
            "round {round}: {name} ({id}) came back different"
        );
        fs::remove_dir_all(&dest).unwrap();
    }
}

fn sigkill_during_put_at_random_points_leaves_a_store_that_verifies(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    let parent = s.ws.path("src");
    let src = parent.join("tree");
    random_tree(&src, 24, 3);
    let mut rng = XorShift::new(0x5eed);
    let mut kills = 0;
    let mut total_reported = 0;
    for round in 0..24 {
        // Each round changes a few files, so every put has work to do.
        for i in 0..3 {
            let f = rng.below(24);
            let path = src.join(format!("d{}/f{f:03}", f % 4));
            write_random_file(&path, rng.below(1_500_000), round * 100 + i + 7, 0o644);
        }
        let (mut running, seen, reader) = spawn_put(&s, &src, 3, true);
        let wait = 50 + rng.below(900);
        pause(wait);
        if !running.has_exited() {
            running.signal(libc::SIGKILL);
            kills += 1;
        }
        running.wait(TIMEOUT);
        reader.join().unwrap();
        let reported = seen.lock().unwrap().clone();
        total_reported += reported.len();
        s.run("verify", &[]).success();
        check_reported(&s, &parent, &reported, round as usize);
        if round % 5 == 4 {
            s.run("gc", &[]).success();
            s.run("verify", &[&"--read-data"]).success();
        }
    }
    eprintln!("{kills} puts killed, {total_reported} entries reported complete before the kills");
    assert!(kills >= 20, "only {kills} puts were killed in flight");
    // A last full put, gc, and everything comes back.
    s.run("put", &[&src]).success();
    s.run("gc", &[]).success();
    s.run("verify", &[&"--read-data"]).success();
    let dest = s.ws.path("final");
    s.run("get", &[&"tree", &dest]).success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("tree")));
}

fn two_puts_at_once_and_a_gc_during_a_put_lose_nothing(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    let a = s.ws.path("srca/ta");
    let b = s.ws.path("srcb/tb");
    random_tree(&a, 16, 11);
    random_tree(&b, 16, 12);
    // Some shared content between the trees, so that dedup races too.
    fs::copy(a.join("d0/f000"), b.join("d0/shared")).unwrap();
    // A deleted tree whose chunks gc will collect while the puts run.
    let c = s.ws.path("srcc/tc");
    random_tree(&c, 6, 13);
    fs::copy(a.join("d1/f001"), c.join("d1/also")).unwrap();
    s.run("put", &[&c]).success();
    s.run("delete", &[&"tc"]).success();
    let (mut pa, _, ra) = spawn_put(&s, &a, 2, false);
    let (mut pb, _, rb) = spawn_put(&s, &b, 2, false);
    let mut gcs = 0;
    while !(pa.has_exited() && pb.has_exited()) {
        s.run("gc", &[]).success();
        gcs += 1;
        pause(100);
    }
    assert!(pa.wait(TIMEOUT).success() && pb.wait(TIMEOUT).success());
    ra.join().unwrap();
    rb.join().unwrap();
    eprintln!("{gcs} gc runs during the puts");
    assert!(gcs >= 1);
    s.run("gc", &[]).success();
    s.run("verify", &[&"--read-data"]).success();
    let dest = s.ws.path("out");
    s.run("get", &[&"ta", &"tb", &dest]).success();
    assert_same_tree(&snapshot(&a), &snapshot(&dest.join("ta")));
    assert_same_tree(&snapshot(&b), &snapshot(&dest.join("tb")));
}
