//! What only an S3 store has to show, against a real SeaweedFS on
//! 127.0.0.1 (installed and started by the harness): the bucket alone holds
//! the store (a second machine's fresh registry sees everything), two
//! writers with their own registries share a bucket, a server that dies in
//! the middle of a put, the leases that keep a gc and a put of different
//! clients apart (waiting, refusal, expiry), unique-names mode, multipart
//! uploads through a real put, and `--connections`. The store tests that
//! run on every backend are in store_roundtrip.rs, store_crash.rs and
//! store_damage.rs.

mod common;
mod store_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
            seed + 2 * i,
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
    out.success()
        .stderr_has("new local registry filled from the store");
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

/// A tree of `files` files of at most 600 KB in three directories.
fn small_tree(root: &Path, files: u64, seed: u64) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        write_random_file(
            &dir.join(format!("f{i}")),
            (i * 97_000 + 1000) % 600_000,
            seed + 2 * i,
            0o640,
        );
    }
}

/// A file whose existence holds a store command at its next hook point
/// (`CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE`).
struct Hold(PathBuf);

impl Hold {
    fn new(ws: &Workspace) -> Hold {
        let path = ws.path("hold");
        fs::write(&path, b"held").unwrap();
        Hold(path)
    }

    fn set(&self, cmd: &mut Command) {
        cmd.env("CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE", &self.0);
    }

    fn wait_reached(&self) {
        let mut reached = self.0.clone().into_os_string();
        reached.push(".reached");
        let reached = PathBuf::from(reached);
        wait_for("a process reaches a hook point", || reached.exists());
    }

    fn release(&self) {
        fs::remove_file(&self.0).unwrap();
    }
}

/// The sizes of the files below `root`, added up.
fn tree_bytes(root: &Path) -> u64 {
    snapshot(root)
        .values()
        .map(|e| match e {
            Entry::File { len, .. } => *len,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_server_killed_during_a_put_fails_it_past_the_retry_budget_and_a_rerun_reuses_what_was_stored()
{
    let server = seaweed::private_server();
    let ws = Workspace::new();
    server.create_bucket("dying-server");
    let cache = ws.path("cache");
    let src = ws.path("src/big");
    small_tree(&src, 24, 300);
    let total = entry_count(&src);
    let mut init = store_cmd(&server, &ws, "dying-server", &cache, "init");
    run(init.args(SMALL)).success();
    let mut put = store_cmd(&server, &ws, "dying-server", &cache, "put");
    // A delay per chunk keeps the put in flight; a retry budget of 1.5 s
    // (test builds only) lets the outage outlast it without a minute's wait.
    put.arg(&src)
        .env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", "5")
        .env("CRYPTSTREAM_DEBUG_S3_RETRY_TIMEOUT_MS", "1500");
    let mut put = PutRun::spawn(&mut put);
    wait_for("the put stores a few entries", || put.reported_count() >= 3);
    assert!(!put.running.has_exited(), "the put ended before the kill");
    server.kill();
    // The server stays dead until the put has given up: the outage is
    // longer than the retry budget by construction.
    let (status, before, stderr) = put.finish();
    assert_eq!(
        status.code(),
        Some(EXIT_FAILURE),
        "the put across the outage: {status}: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cryptstream: ")
            && ["packs/", "manifests/"]
                .iter()
                .any(|what| last.contains(what)),
        "the put's last line names no object it was writing: {stderr}"
    );
    assert!(!before.is_empty() && before.len() < total, "{before:?}");
    server.restart();
    run(&mut store_cmd(
        &server,
        &ws,
        "dying-server",
        &cache,
        "verify",
    ))
    .success();
    // The rerun stores only what was not complete, and reuses the rest.
    let rerun = run(store_cmd(&server, &ws, "dying-server", &cache, "put")
        .arg("--json")
        .arg(&src))
    .success()
    .json();
    let status_of = |name: &str| {
        rerun["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in the rerun: {rerun}"))["status"]
            .clone()
    };
    for (_, name) in &before {
        assert_eq!(status_of(name), "unchanged", "{name}");
    }
    assert_eq!(rerun["unchanged"].as_u64().unwrap() as usize, before.len());
    assert_eq!(
        rerun["stored"].as_u64().unwrap() as usize,
        total - before.len(),
        "{rerun}"
    );
    let new_bytes = rerun["new_bytes"].as_u64().unwrap();
    let all = tree_bytes(&src);
    eprintln!("the rerun uploaded {new_bytes} bytes of a {all}-byte tree");
    assert!(
        new_bytes < all,
        "the rerun uploaded {new_bytes} of {all} bytes"
    );
    run(store_cmd(&server, &ws, "dying-server", &cache, "verify").arg("--read-data")).success();
    let dest = ws.path("out");
    run(store_cmd(&server, &ws, "dying-server", &cache, "get")
        .arg("big")
        .arg(&dest))
    .success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("big")));
}

/// gc waiting on a put lease: a gc that finds another client's put
/// running is refused (says so, reclaims nothing) until the put ends.
#[test]
fn a_gc_never_overlaps_a_put_of_another_client() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("gc-and-put");
    let (writer, other) = (ws.path("cache-writer"), ws.path("cache-other"));
    let (old, new) = (ws.path("src/old"), ws.path("src/new"));
    small_tree(&old, 6, 400);
    small_tree(&new, 8, 500);
    let bucket = bucket_client(server, "gc-and-put", "st");
    run(&mut store_cmd(server, &ws, "gc-and-put", &writer, "init")).success();
    run(store_cmd(server, &ws, "gc-and-put", &writer, "put").arg(&old)).success();
    let old_packs = bucket.list("packs/").unwrap();
    // The other client forgets what it knows of; its gc will run later.
    run(store_cmd(server, &ws, "gc-and-put", &other, "forget").arg("latest")).success();
    // The writer's put holds after its first chunk, its lease taken.
    let hold = Hold::new(&ws);
    let mut put = store_cmd(server, &ws, "gc-and-put", &writer, "put");
    put.arg(&new);
    hold.set(&mut put);
    let mut put = PutRun::spawn(&mut put);
    hold.wait_reached();
    let leases = bucket.list("leases/").unwrap();
    assert!(
        leases.iter().any(|l| l.key.starts_with("leases/put-")),
        "{leases:?}"
    );
    assert_lease_names_no_holder(&bucket, put.pid());
    // A gc on the other machine sees the put's lease and gives up.
    let gc = run(&mut store_cmd(server, &ws, "gc-and-put", &other, "gc"));
    gc.success().stderr_has("skipped: a put is running");
    assert!(!put.running.has_exited(), "the put ended before the gc");
    assert_eq!(
        bucket.list("packs/").unwrap(),
        old_packs,
        "the refused gc reclaimed"
    );
    assert!(
        !bucket
            .list("leases/")
            .unwrap()
            .iter()
            .any(|l| l.key.starts_with("leases/gc-")),
        "the refused gc left its lease"
    );
    hold.release();
    let (status, reported, stderr) = put.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(reported.len(), entry_count(&new));
    // With the put done, the gc refreshes its registry from the bucket,
    // keeps the new tree and reclaims the deleted one.
    let gc = run(&mut store_cmd(server, &ws, "gc-and-put", &other, "gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    let packs = bucket.list("packs/").unwrap();
    for pack in &old_packs {
        assert!(!packs.contains(pack), "{} was not reclaimed", pack.key);
    }
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

#[test]
fn a_put_waits_on_a_gc_lease_of_another_client_then_runs() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("put-waits");
    let cache = ws.path("cache");
    let src = ws.path("src/waiting");
    small_tree(&src, 4, 600);
    let bucket = bucket_client(server, "put-waits", "st");
    run(&mut store_cmd(server, &ws, "put-waits", &cache, "init")).success();
    let gc_lease = foreign_lease(&bucket, "gc", Duration::ZERO);
    let mut put = store_cmd(server, &ws, "put-waits", &cache, "put");
    let mut put = PutRun::spawn(put.arg(&src));
    wait_for("the put says it waits for the gc", || {
        put.stderr_so_far()
            .contains("waiting for a gc by another client to finish")
    });
    assert!(!put.running.has_exited(), "the put did not wait");
    assert!(
        bucket.list("packs/").unwrap().is_empty() && bucket.list("manifests/").unwrap().is_empty(),
        "the put wrote while the gc held its lease"
    );
    assert_eq!(put.reported_count(), 0);
    // The gc ends (its lease goes): the put goes on and completes.
    bucket.delete(&gc_lease).unwrap();
    let (status, reported, stderr) = put.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(reported.len(), entry_count(&src));
    let dest = ws.path("out");
    run(store_cmd(server, &ws, "put-waits", &cache, "get")
        .arg("waiting")
        .arg(&dest))
    .success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("waiting")));
}

#[test]
fn a_lease_not_renewed_for_five_minutes_has_expired() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("lease-expiry");
    let cache = ws.path("cache");
    let src = ws.path("src/exp");
    small_tree(&src, 3, 700);
    let bucket = bucket_client(server, "lease-expiry", "st");
    run(&mut store_cmd(server, &ws, "lease-expiry", &cache, "init")).success();
    // A gc lease of another machine not renewed for 6 minutes: a put does
    // not wait for it.
    let dead_gc = foreign_lease(&bucket, "gc", Duration::from_secs(6 * 60));
    let put = run(store_cmd(server, &ws, "lease-expiry", &cache, "put").arg(&src));
    put.success();
    assert!(!put.stderr.contains("waiting"), "{}", put.stderr);
    run(store_cmd(server, &ws, "lease-expiry", &cache, "forget").arg("latest")).success();
    // A live put lease of another machine refuses a gc ...
    let live_put = foreign_lease(&bucket, "put", Duration::from_secs(60));
    let gc = run(&mut store_cmd(server, &ws, "lease-expiry", &cache, "gc"));
    gc.success().stderr_has("skipped: a put is running");
    assert!(!bucket.list("packs/").unwrap().is_empty());
    // ... and the same lease 6 minutes old does not: gc runs, reclaims, and
    // removes the expired leases.
    bucket.delete(&live_put).unwrap();
    let dead_put = foreign_lease(&bucket, "put", Duration::from_secs(6 * 60));
    let gc = run(&mut store_cmd(server, &ws, "lease-expiry", &cache, "gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    assert!(
        bucket.list("packs/").unwrap().is_empty(),
        "gc reclaimed nothing"
    );
    let leases: Vec<String> = bucket
        .list("leases/")
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(
        !leases.contains(&dead_put) && !leases.contains(&dead_gc),
        "expired leases left: {leases:?}"
    );
}

#[test]
fn unique_names_mode_stores_verifies_and_restores() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("unique-names");
    let cache = ws.path("cache");
    let src = ws.path("src/uniq");
    small_tree(&src, 6, 800);
    run(&mut store_cmd(server, &ws, "unique-names", &cache, "init")).success();
    // SeaweedFS honours If-None-Match, so the probe chose conditional
    // writes; the mode recorded in the cache is what later commands use.
    let mut recorded = Vec::new();
    walk(&cache, &mut recorded);
    let mode_file = recorded
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == "write-mode"))
        .expect("the cache records the write mode");
    assert_eq!(
        fs::read_to_string(&mode_file).unwrap().trim(),
        "conditional"
    );
    fs::write(&mode_file, "unique-names\n").unwrap();
    run(store_cmd(server, &ws, "unique-names", &cache, "put").arg(&src)).success();
    assert_eq!(
        fs::read_to_string(&mode_file).unwrap().trim(),
        "unique-names"
    );
    run(store_cmd(server, &ws, "unique-names", &cache, "verify").arg("--read-data")).success();
    // d0 goes from the source; the snapshot that held it is forgotten.
    let first = run(store_cmd(server, &ws, "unique-names", &cache, "snapshots").arg("--json"))
        .success()
        .json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fs::remove_dir_all(src.join("d0")).unwrap();
    run(store_cmd(server, &ws, "unique-names", &cache, "put").arg(&src)).success();
    run(store_cmd(server, &ws, "unique-names", &cache, "forget").arg(&first)).success();
    run(&mut store_cmd(server, &ws, "unique-names", &cache, "gc")).success();
    let dest = ws.path("out");
    run(store_cmd(server, &ws, "unique-names", &cache, "get")
        .arg("uniq")
        .arg(&dest))
    .success();
    let mut want = snapshot(&src);
    want.retain(|rel, _| !rel.starts_with("d0"));
    assert_same_tree(&want, &snapshot(&dest.join("uniq")));
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[test]
fn a_pack_over_the_multipart_threshold_goes_up_in_parts_through_a_real_put() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("multipart-put");
    let cache = ws.path("cache");
    let src = ws.path("big.bin");
    // One 20 MiB pack: over a threshold of 6 MiB (lowered for this test,
    // debug builds only), so it goes up as a 16 MiB part and the rest.
    write_random_file(&src, 20 * MIB, 900, 0o644);
    let mut init = store_cmd(server, &ws, "multipart-put", &cache, "init");
    run(init.args(["--pack-target", "64MiB"])).success();
    let mut put = store_cmd(server, &ws, "multipart-put", &cache, "put");
    put.env(
        "CRYPTSTREAM_DEBUG_S3_MULTIPART_THRESHOLD",
        (6 * MIB).to_string(),
    )
    .arg(&src);
    run(&mut put).success();
    let bucket = bucket_client(server, "multipart-put", "st");
    let packs = bucket.list("packs/").unwrap();
    assert_eq!(packs.len(), 1, "{packs:?}");
    assert!(packs[0].size > 20 * MIB);
    let tag = etag(server, "multipart-put", &format!("st/{}", packs[0].key));
    assert!(
        tag.ends_with("-2"),
        "the pack was not uploaded in two parts (ETag {tag})"
    );
    run(store_cmd(server, &ws, "multipart-put", &cache, "verify").arg("--read-data")).success();
    let dest = ws.path("out");
    run(store_cmd(server, &ws, "multipart-put", &cache, "get")
        .arg("big.bin")
        .arg(&dest))
    .success();
    assert_eq!(hash_file(&dest.join("big.bin")), hash_file(&src));
}

#[test]
fn connections_bounds_the_requests_in_flight() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("connections");
    let proxy = Proxy::start(server.s3_port);
    let cache = ws.path("cache");
    let src = ws.path("src/conn");
    // Enough packs (1 MiB each) that a get has many block reads to make.
    small_tree(&src, 40, 1000);
    let cmd = |sub: &str, connections: &str| {
        let mut cmd = store_cmd(server, &ws, "connections", &cache, sub);
        cmd.env("AWS_ENDPOINT_URL", &proxy.endpoint).args([
            "--connections",
            connections,
            "--workers",
            "8",
        ]);
        cmd
    };
    let mut init = cmd("init", "8");
    run(init.args(SMALL)).success();
    run(cmd("put", "8").arg(&src)).success();
    // One connection: every request waits for the one before it.
    let dest = ws.path("one");
    proxy.reset();
    run(cmd("get", "1").arg("conn").arg(&dest)).success();
    let with_one = proxy.most_at_once();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("conn")));
    // The control: eight let the workers' reads overlap.
    let dest = ws.path("eight");
    proxy.reset();
    run(cmd("get", "8").arg("conn").arg(&dest)).success();
    let with_eight = proxy.most_at_once();
    eprintln!("connections open at once: {with_one} with --connections 1, {with_eight} with 8");
    // One request in flight can mean two connections open: the client
    // may open a new one before the last one is back in its idle pool.
    assert!(
        with_one <= 2,
        "--connections 1 had {with_one} connections open at once"
    );
    assert!(
        with_eight > 2,
        "--connections 8 never had more requests in flight than 1 ({with_eight} connections)"
    );
}

/// Reads do not wait for the workers: with one worker and eight
/// connections, a get of a tree in many packs has several block reads in
/// flight at once (a read per worker would keep one connection busy);
/// with one connection, one.
#[test]
fn reads_run_ahead_of_the_workers() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("ahead");
    let proxy = Proxy::start(server.s3_port);
    let cache = ws.path("cache");
    let src = ws.path("src/ahead");
    small_tree(&src, 40, 3000);
    let cmd = |sub: &str, connections: &str| {
        let mut cmd = store_cmd(server, &ws, "ahead", &cache, sub);
        cmd.env("AWS_ENDPOINT_URL", &proxy.endpoint).args([
            "--connections",
            connections,
            "--workers",
            "1",
        ]);
        cmd
    };
    run(cmd("init", "8").args(SMALL)).success();
    run(cmd("put", "8").arg(&src)).success();
    let mut at_once = Vec::new();
    for connections in ["1", "8"] {
        let dest = ws.path(format!("out-{connections}"));
        proxy.reset();
        run(cmd("get", connections).arg("ahead").arg(&dest)).success();
        assert_same_tree(&snapshot(&src), &snapshot(&dest.join("ahead")));
        at_once.push(proxy.most_at_once());
    }
    eprintln!(
        "one worker: {} connections open at once with --connections 1, {} with 8",
        at_once[0], at_once[1]
    );
    // One request in flight can mean two connections open (see
    // connections_bounds_the_requests_in_flight).
    assert!(at_once[0] <= 2, "--connections 1: {}", at_once[0]);
    assert!(
        at_once[1] > 2,
        "one worker and --connections 8 never had more than one read in flight ({} connections)",
        at_once[1]
    );
}

/// A get that wants whole packs reads each one with one request, however
/// many blocks (the unit of memory, 512 KiB at `--max-memory 16MiB`) it
/// is cut into; so does `verify --read-data`. The proxy counts the
/// requests with a `Range` header that reach the server; a get of one
/// small file counts the ranged reads a get makes besides pack data.
#[test]
fn a_get_reads_each_whole_pack_in_one_request() {
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("spans");
    let proxy = Proxy::start(server.s3_port);
    let cache = ws.path("cache");
    let src = ws.path("src/whole");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        write_random_file(&src.join(format!("f{i}")), 6 * MIB, 500 + i, 0o644);
    }
    write_random_file(&src.join("small"), 1000, 600, 0o644);
    let cmd = |sub: &str| {
        let mut cmd = store_cmd(server, &ws, "spans", &cache, sub);
        cmd.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        cmd
    };
    run(cmd("init")
        .args(SMALL_CHUNKS)
        .args(["--pack-target", "8MiB"]))
    .success();
    run(cmd("put").arg(&src)).success();
    let packs = bucket_client(server, "spans", "st").list("packs/").unwrap();
    let stored: u64 = packs.iter().map(|p| p.size).sum();
    let ranged = |sub: &str, args: &[&str]| {
        let before = proxy.ranged_requests();
        run(cmd(sub).args(["--max-memory", "16MiB"]).args(args)).success();
        proxy.ranged_requests() - before
    };
    let small = ws.path("small");
    let besides = ranged("get", &["whole/small", small.to_str().unwrap()]);
    let dest = ws.path("out");
    let get = ranged("get", &["whole", dest.to_str().unwrap()]);
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("whole")));
    let verify = ranged("verify", &["--read-data"]);
    // Blocks of 512 KiB at most: one request per block would be at least
    // this many.
    let blocks = (stored / (MIB / 2)) as usize;
    eprintln!(
        "{} packs ({stored} bytes, {blocks}+ blocks): get {get} ranged requests \
         ({besides} for one small file), verify --read-data {verify}",
        packs.len()
    );
    assert!(packs.len() >= 3, "{packs:?}");
    assert!(besides >= 1, "no ranged request counted");
    assert!(
        get <= besides + packs.len(),
        "get made {get} ranged requests for {} packs ({besides} besides pack data)",
        packs.len()
    );
    assert!(get < blocks, "get read {get} times for {blocks} blocks");
    // verify --read-data also reads every manifest and each pack's index;
    // its data reads alone would be one per block.
    assert!(
        verify * 2 <= blocks,
        "verify --read-data made {verify} ranged requests for {blocks} blocks"
    );
}

/// A get of many small files that lie in one pack reads them in a few
/// ranged requests (blocks of many chunks), not one per chunk; so does
/// `verify --read-data`. The proxy counts the requests with a `Range`
/// header that reach the server.
#[test]
fn a_get_of_many_small_files_in_one_pack_reads_few_ranges() {
    const FILES: u64 = 200;
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("blocks");
    let proxy = Proxy::start(server.s3_port);
    let cache = ws.path("cache");
    let src = ws.path("src/many");
    fs::create_dir_all(&src).unwrap();
    for i in 0..FILES {
        write_random_file(
            &src.join(format!("f{i:03}")),
            2_000 + i * 37,
            7_000 + i,
            0o644,
        );
    }
    let cmd = |sub: &str| {
        let mut cmd = store_cmd(server, &ws, "blocks", &cache, sub);
        cmd.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        cmd
    };
    run(&mut cmd("init")).success();
    run(cmd("put").arg(&src)).success();
    let packs = bucket_client(server, "blocks", "st")
        .list("packs/")
        .unwrap();
    assert_eq!(packs.len(), 1, "{packs:?}");

    let dest = ws.path("out");
    let before = proxy.ranged_requests();
    run(cmd("get").arg("many").arg(&dest)).success();
    let get_ranges = proxy.ranged_requests() - before;
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("many")));
    let before = proxy.ranged_requests();
    run(cmd("verify").arg("--read-data")).success();
    let verify_ranges = proxy.ranged_requests() - before;
    eprintln!(
        "ranged requests for {FILES} files in one pack: get {get_ranges}, verify --read-data {verify_ranges}"
    );
    // The counter sees the reads at all: the files came through it.
    assert!(get_ranges >= 1, "no ranged request counted");
    assert!(
        get_ranges * 10 <= FILES as usize,
        "get made {get_ranges} ranged requests for {FILES} one-chunk files"
    );
    assert!(
        verify_ranges * 10 <= FILES as usize,
        "verify --read-data made {verify_ranges} ranged requests for {FILES} one-chunk files"
    );
}

/// No lease object says who holds it to the bucket's owner: neither this
/// host's name nor the holder's pid appears in its name or its bytes.
fn assert_lease_names_no_holder(bucket: &cryptstream_s3::S3Client, pid: u32) {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    assert!(!host.is_empty());
    let leases = bucket.list("leases/").unwrap();
    assert!(!leases.is_empty());
    for lease in leases {
        let body = bucket.get(&lease.key).unwrap().unwrap();
        for (what, needle) in [("host name", host.to_owned()), ("pid", pid.to_string())] {
            let found = body.windows(needle.len()).any(|w| w == needle.as_bytes())
                || lease.key.contains(&needle);
            assert!(!found, "lease {} shows the {what} {needle:?}", lease.key);
        }
    }
}

/// A put killed while it holds its lease: a gc on the same host opens the
/// sealed lease, sees that its process is gone, and runs at once (instead
/// of waiting five minutes for the lease to go stale); a live put of the
/// same host still makes it wait.
#[test]
fn a_gc_runs_at_once_when_the_put_holding_a_lease_was_killed_on_this_host() {
    use std::os::unix::process::ExitStatusExt;
    let server = seaweed::server();
    let ws = Workspace::new();
    server.create_bucket("killed-put");
    let cache = ws.path("cache");
    let src = ws.path("src/tree");
    small_tree(&src, 6, 900);
    let bucket = bucket_client(server, "killed-put", "st");
    run(&mut store_cmd(server, &ws, "killed-put", &cache, "init")).success();
    let hold = Hold::new(&ws);
    let mut cmd = store_cmd(server, &ws, "killed-put", &cache, "put");
    cmd.arg(&src);
    hold.set(&mut cmd);
    let mut put = PutRun::spawn(&mut cmd);
    hold.wait_reached();
    assert_lease_names_no_holder(&bucket, put.pid());
    // Alive: a gc of another cache gives up; one of the put's own cache
    // runs beside it (DECISIONS 301), and the lease stays.
    let gc = run(&mut store_cmd(
        server,
        &ws,
        "killed-put",
        &ws.path("cache-other"),
        "gc",
    ));
    gc.success().stderr_has("skipped: a put is running");
    let gc = run(&mut store_cmd(server, &ws, "killed-put", &cache, "gc"));
    gc.success()
        .stderr_has("gc: running beside 1 put of this cache");
    assert!(!put.running.has_exited(), "the put ended before the gc");
    put.running.signal(libc::SIGKILL);
    let (status, _, _) = put.finish();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    hold.release();
    assert!(
        bucket
            .list("leases/")
            .unwrap()
            .iter()
            .any(|l| l.key.starts_with("leases/put-")),
        "the killed put's lease is still there"
    );
    let gc = run(&mut store_cmd(server, &ws, "killed-put", &cache, "gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    assert!(
        bucket.list("leases/").unwrap().is_empty(),
        "the dead lease was not removed"
    );
    run(store_cmd(server, &ws, "killed-put", &cache, "verify").arg("--read-data")).success();
}
