//! What only an S3 store has to show, against a real SeaweedFS on
//! 127.0.0.1 (installed and started by the harness): the bucket alone holds
//! the store (a second machine's fresh registry sees everything), two
//! writers with their own registries share a bucket, and a server that dies
//! in the middle of a put. The store tests that run on every backend are in
//! store_roundtrip.rs and store_crash.rs.

mod common;
mod store_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use store_support::seaweed::{self, Seaweed};
use store_support::*;

/// A `store` command on `bucket` with its registry cached in `cache`.
fn store_cmd(server: &Seaweed, ws: &Workspace, bucket: &str, cache: &Path, sub: &str) -> Command {
    let mut cmd = cryptstream();
    for (key, value) in server.env() {
        cmd.env(key, value);
    }
    cmd.env("CRYPTSTREAM_CACHE_DIR", cache)
        .current_dir(ws.root())
        .args(["store", "--store", &format!("s3://{bucket}/st"), "-q", "-k"])
        .arg(ws.key())
        .arg(sub);
    cmd
}

fn tree(root: &Path, files: u64, seed: u64) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        write_random_file(
            &dir.join(format!("f{i}")),
            (i * 337_000) % 3_000_000,
            seed + i,
            0o640,
        );
    }
}

#[test]
fn a_second_machine_with_a_fresh_registry_sees_every_file() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("second-machine");
    let (first, second) = (ws.path("cache-first"), ws.path("cache-second"));
    let src = ws.path("src/tree");
    make_tree(&src, 5 * MIB);
    run(&mut store_cmd(
        server,
        &ws,
        "second-machine",
        &first,
        "init",
    ))
    .success();
    run(store_cmd(server, &ws, "second-machine", &first, "put").arg(&src)).success();
    let listed = run(store_cmd(server, &ws, "second-machine", &first, "list").arg("--json"))
        .success()
        .json();
    // A fresh cache: the registry is filled from the bucket on first use.
    let out = run(store_cmd(server, &ws, "second-machine", &second, "list").arg("--json"));
    out.success().stderr_has("filled from the bucket");
    assert_eq!(listed_ids(&listed), listed_ids(&out.json()));
    // An explicit reindex gives the same, and the files come back exact.
    run(&mut store_cmd(
        server,
        &ws,
        "second-machine",
        &second,
        "reindex",
    ))
    .success();
    let relisted = run(store_cmd(server, &ws, "second-machine", &second, "list").arg("--json"))
        .success()
        .json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    let dest = ws.path("out");
    run(store_cmd(server, &ws, "second-machine", &second, "get")
        .arg("tree")
        .arg(&dest))
    .success();
    assert_restored(&src, &dest.join("tree"));
}

#[test]
fn two_writers_with_their_own_registries_share_a_bucket() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("two-writers");
    let (a_cache, b_cache, reader) = (ws.path("cache-a"), ws.path("cache-b"), ws.path("cache-r"));
    let (a, b) = (ws.path("srca/ta"), ws.path("srcb/tb"));
    tree(&a, 12, 100);
    tree(&b, 12, 200);
    // Shared content, so that both writers store the same chunks.
    fs::copy(a.join("d1/f1"), b.join("d1/shared")).unwrap();
    run(&mut store_cmd(server, &ws, "two-writers", &a_cache, "init")).success();
    let mut put_a = store_cmd(server, &ws, "two-writers", &a_cache, "put");
    put_a.arg(&a);
    let mut put_b = store_cmd(server, &ws, "two-writers", &b_cache, "put");
    put_b.arg(&b);
    for put in [&mut put_a, &mut put_b] {
        put.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let (ra, rb) = (Running::spawn(&mut put_a), Running::spawn(&mut put_b));
    ra.finish(TIMEOUT).success();
    rb.finish(TIMEOUT).success();
    // A third machine sees both trees, and everything verifies.
    run(store_cmd(server, &ws, "two-writers", &reader, "verify").arg("--read-data")).success();
    let dest = ws.path("out");
    run(store_cmd(server, &ws, "two-writers", &reader, "get")
        .args(["ta", "tb"])
        .arg(&dest))
    .success();
    assert_same_tree(&snapshot(&a), &snapshot(&dest.join("ta")));
    assert_same_tree(&snapshot(&b), &snapshot(&dest.join("tb")));
}

#[test]
fn a_server_killed_during_a_put_fails_it_cleanly_and_a_rerun_completes() {
    let server = seaweed::private_server();
    let ws = Workspace::new();
    server.create_bucket("dying-server");
    let cache = ws.path("cache");
    let src = ws.path("src/big");
    tree(&src, 40, 300);
    run(&mut store_cmd(&server, &ws, "dying-server", &cache, "init")).success();
    let mut put = store_cmd(&server, &ws, "dying-server", &cache, "put");
    // Small packs and a delay per chunk keep the put in flight for a while.
    put.arg(&src)
        .env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", "20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut running = Running::spawn(&mut put);
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        !running.has_exited(),
        "the put ended before the server was killed"
    );
    server.kill();
    std::thread::sleep(std::time::Duration::from_secs(3));
    server.restart();
    let outcome = running.finish(TIMEOUT);
    eprintln!("the put across the outage exited with {:?}", outcome.code());
    // It either retried through the outage or failed with a clear error
    // naming what it was writing; a hang or a crash is not acceptable.
    if outcome.code() != Some(0) {
        let last = outcome.stderr.lines().last().unwrap_or_default().to_owned();
        let names_what = ["s3://dying-server/st", "packs/", "manifests/"]
            .iter()
            .any(|what| last.contains(what));
        assert!(
            last.starts_with("cryptstream: ") && names_what,
            "unclear error: {}",
            outcome.stderr
        );
    }
    run(&mut store_cmd(
        &server,
        &ws,
        "dying-server",
        &cache,
        "verify",
    ))
    .success();
    run(store_cmd(&server, &ws, "dying-server", &cache, "put").arg(&src)).success();
    run(store_cmd(&server, &ws, "dying-server", &cache, "verify").arg("--read-data")).success();
    let dest = ws.path("out");
    run(store_cmd(&server, &ws, "dying-server", &cache, "get")
        .arg("big")
        .arg(&dest))
    .success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("big")));
}

#[test]
fn a_gc_never_overlaps_a_put_of_another_client() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("gc-and-put");
    let (writer, other) = (ws.path("cache-writer"), ws.path("cache-other"));
    let (old, new) = (ws.path("src/old"), ws.path("src/new"));
    tree(&old, 6, 400);
    tree(&new, 20, 500);
    run(&mut store_cmd(server, &ws, "gc-and-put", &writer, "init")).success();
    run(store_cmd(server, &ws, "gc-and-put", &writer, "put").arg(&old)).success();
    // The other client deletes what it knows of; its gc will run later.
    run(store_cmd(server, &ws, "gc-and-put", &other, "delete").arg("old")).success();
    let mut put = store_cmd(server, &ws, "gc-and-put", &writer, "put");
    put.arg(&new)
        .env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", "20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut running = Running::spawn(&mut put);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !running.has_exited(),
        "the put ended too soon for this test"
    );
    // A gc on the other machine sees the put's lease and gives up.
    let gc = run(&mut store_cmd(server, &ws, "gc-and-put", &other, "gc"));
    gc.success().stderr_has("skipped: a put is running");
    running.finish(TIMEOUT).success();
    // With the put done, the gc refreshes its registry from the bucket,
    // keeps the new tree and reclaims the deleted one.
    let gc = run(&mut store_cmd(server, &ws, "gc-and-put", &other, "gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    run(store_cmd(server, &ws, "gc-and-put", &other, "verify").arg("--read-data")).success();
    let dest = ws.path("out");
    run(store_cmd(server, &ws, "gc-and-put", &other, "get")
        .arg("new")
        .arg(&dest))
    .success();
    assert_same_tree(&snapshot(&new), &snapshot(&dest.join("new")));
    run(store_cmd(server, &ws, "gc-and-put", &other, "get")
        .arg("old")
        .arg(ws.path("x")))
    .failure()
    .stderr_has("no such file or id");
}
