//! What only an S3 store has to show, against a real SeaweedFS on
//! 127.0.0.1 (installed and started by the harness): unique-names mode,
//! multipart uploads through a real put, `--connections`, reads that run
//! ahead of the workers and coalesce into few ranged requests. The store
//! tests that run on every backend are in store_roundtrip.rs,
//! store_crash.rs, store_damage.rs and the others that use
//! `on_every_backend!`; those of several clients sharing a bucket (or a
//! store server) are in store_clients.rs.

mod common;
mod store_support;

use std::fs;
use std::path::{Path, PathBuf};
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
    one_chunk_files(&src, FILES);
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
