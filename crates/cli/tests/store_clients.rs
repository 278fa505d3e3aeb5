//! Several clients on one store that they reach over the network: an S3
//! bucket (a real SeaweedFS on 127.0.0.1) and a `serve --store` server
//! (`cst://127.0.0.1:PORT`), each test once on each (`s3::NAME`,
//! `remote::NAME`). The store alone holds everything (a second machine's
//! fresh registry sees every file), two writers with their own registries
//! share it, the leases keep a gc and a put of different clients apart
//! (waiting, refusal, expiry, a killed holder), and a server that dies in
//! the middle of a put fails it, and a rerun reuses what was stored.

mod common;
mod store_support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use store_support::*;

/// A tree of `files` files of up to 3 MB in three directories.
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

/// A file whose existence holds a store command at its next hook point
/// (`CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE`).
struct Hold(std::path::PathBuf);

impl Hold {
    fn new(ws: &Workspace) -> Hold {
        let path = ws.path("hold");
        fs::write(&path, b"held").unwrap();
        Hold(path)
    }

    fn set(&self, cmd: &mut std::process::Command) {
        cmd.env("CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE", &self.0);
    }

    fn wait_reached(&self) {
        let mut reached = self.0.clone().into_os_string();
        reached.push(".reached");
        let reached = std::path::PathBuf::from(reached);
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

/// Whether a lease of `kind` (`put`, `gc`) is in the store.
fn has_lease(s: &StoreWs, kind: &str) -> bool {
    s.objects("leases/")
        .iter()
        .any(|l| l.starts_with(&format!("leases/{kind}-")))
}

/// No lease object says who holds it to the store's host: neither this
/// host's name nor the holder's pid appears in its name or its bytes.
fn assert_lease_names_no_holder(s: &StoreWs, pid: u32) {
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    assert!(!host.is_empty());
    let leases = s.objects("leases/");
    assert!(!leases.is_empty());
    for lease in leases {
        let body = s.object(&lease);
        for (what, needle) in [("host name", host.to_owned()), ("pid", pid.to_string())] {
            let found = body.windows(needle.len()).any(|w| w == needle.as_bytes())
                || lease.contains(&needle);
            assert!(!found, "lease {lease} shows the {what} {needle:?}");
        }
    }
}

fn a_second_machine_with_a_fresh_registry_sees_every_file(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let (first, second) = (s.ws.path("cache-first"), s.ws.path("cache-second"));
    let src = s.ws.path("src/tree");
    make_tree(&src, 5 * MIB);
    run(s.cmd_on(&first, "put").arg(&src)).success();
    let listed = run(s.cmd_on(&first, "list").arg("--json")).success().json();
    // A fresh cache: the registry is filled from the store on first use.
    let out = run(s.cmd_on(&second, "list").arg("--json"));
    out.success()
        .stderr_has("new local registry filled from the store");
    assert_eq!(listed_ids(&listed), listed_ids(&out.json()));
    // An explicit reindex gives the same, and the files come back exact.
    run(&mut s.cmd_on(&second, "reindex")).success();
    let relisted = run(s.cmd_on(&second, "list").arg("--json"))
        .success()
        .json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    let dest = s.ws.path("out");
    run(s.cmd_on(&second, "get").arg("tree").arg(&dest)).success();
    assert_restored(&src, &dest.join("tree"));
}

fn two_writers_with_their_own_registries_share_a_store(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let (a_cache, b_cache, reader) = (
        s.ws.path("cache-a"),
        s.ws.path("cache-b"),
        s.ws.path("cache-r"),
    );
    let (a, b) = (s.ws.path("srca/ta"), s.ws.path("srcb/tb"));
    tree(&a, 12, 100);
    tree(&b, 12, 200);
    // Shared content, so that both writers store the same chunks.
    fs::copy(a.join("d1/f1"), b.join("d1/shared")).unwrap();
    let mut put_a = s.cmd_on(&a_cache, "put");
    put_a.arg(&a);
    let mut put_b = s.cmd_on(&b_cache, "put");
    put_b.arg(&b);
    for put in [&mut put_a, &mut put_b] {
        put.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    let (ra, rb) = (Running::spawn(&mut put_a), Running::spawn(&mut put_b));
    ra.finish(TIMEOUT).success();
    rb.finish(TIMEOUT).success();
    // A third machine sees both trees, and everything verifies.
    run(s.cmd_on(&reader, "verify").arg("--read-data")).success();
    let dest = s.ws.path("out");
    run(s.cmd_on(&reader, "get").args(["ta", "tb"]).arg(&dest)).success();
    assert_same_tree(&snapshot(&a), &snapshot(&dest.join("ta")));
    assert_same_tree(&snapshot(&b), &snapshot(&dest.join("tb")));
}

/// A server killed in the middle of a put (SeaweedFS, or `serve --store`)
/// fails it: on S3 once the outage outlasts the retry budget (1.5 s, test
/// builds only), on a store server at the first request that finds it
/// gone. The rerun stores only what was not complete, and reuses the rest.
fn a_server_killed_during_a_put_fails_it_and_a_rerun_reuses_what_was_stored(kind: Kind) {
    let mut s = StoreWs::on_own_server(kind, SMALL);
    let src = s.ws.path("src/big");
    small_tree(&src, 24, 300);
    let total = entry_count(&src);
    let mut put = s.cmd("put");
    // A delay per chunk keeps the put in flight.
    put.arg(&src)
        .env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", "5")
        .env("CRYPTSTREAM_DEBUG_S3_RETRY_TIMEOUT_MS", "1500");
    let mut put = PutRun::spawn(&mut put);
    wait_for("the put stores a few entries", || put.reported_count() >= 3);
    assert!(!put.running.has_exited(), "the put ended before the kill");
    s.kill_server();
    // The server stays dead until the put has given up.
    let (status, before, stderr) = put.finish();
    assert_eq!(
        status.code(),
        Some(EXIT_FAILURE),
        "the put across the outage: {status}: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("cryptstream: ")
            && ["packs/", "manifests/", "leases/"]
                .iter()
                .any(|what| last.contains(what)),
        "the put's last line names no object it was writing: {stderr}"
    );
    assert!(!before.is_empty() && before.len() < total, "{before:?}");
    s.restart_server();
    run(&mut s.cmd("verify")).success();
    // The rerun stores only what was not complete, and reuses the rest.
    let rerun = run(s.cmd("put").arg("--json").arg(&src)).success().json();
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
    run(s.cmd("verify").arg("--read-data")).success();
    let dest = s.ws.path("out");
    run(s.cmd("get").arg("big").arg(&dest)).success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("big")));
}

/// gc waiting on a put lease: a gc that finds another client's put
/// running is refused (says so, reclaims nothing) until the put ends.
fn a_gc_never_overlaps_a_put_of_another_client(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let (writer, other) = (s.ws.path("cache-writer"), s.ws.path("cache-other"));
    let (old, new) = (s.ws.path("src/old"), s.ws.path("src/new"));
    small_tree(&old, 6, 400);
    small_tree(&new, 8, 500);
    run(s.cmd_on(&writer, "put").arg(&old)).success();
    let old_packs = s.objects("packs/");
    // The other client forgets what it knows of; its gc will run later.
    run(s.cmd_on(&other, "forget").arg("latest")).success();
    // The writer's put holds after its first chunk, its lease taken.
    let hold = Hold::new(&s.ws);
    let mut put = s.cmd_on(&writer, "put");
    put.arg(&new);
    hold.set(&mut put);
    let mut put = PutRun::spawn(&mut put);
    hold.wait_reached();
    assert!(has_lease(&s, "put"), "{:?}", s.objects("leases/"));
    assert_lease_names_no_holder(&s, put.pid());
    // A gc on the other machine sees the put's lease and gives up.
    let gc = run(&mut s.cmd_on(&other, "gc"));
    gc.success().stderr_has("skipped: a put is running");
    assert!(!put.running.has_exited(), "the put ended before the gc");
    assert_eq!(s.objects("packs/"), old_packs, "the refused gc reclaimed");
    assert!(!has_lease(&s, "gc"), "the refused gc left its lease");
    hold.release();
    let (status, reported, stderr) = put.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(reported.len(), entry_count(&new));
    assert!(!has_lease(&s, "put"), "the put left its lease");
    // With the put done, the gc refreshes its registry from the store,
    // keeps the new tree and reclaims the deleted one.
    let gc = run(&mut s.cmd_on(&other, "gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    let packs = s.objects("packs/");
    for pack in &old_packs {
        assert!(!packs.contains(pack), "{pack} was not reclaimed");
    }
    run(s.cmd_on(&other, "verify").arg("--read-data")).success();
    let dest = s.ws.path("out");
    run(s.cmd_on(&other, "get").arg("new").arg(&dest)).success();
    assert_same_tree(&snapshot(&new), &snapshot(&dest.join("new")));
    run(s.cmd_on(&other, "get").arg("old").arg(s.ws.path("x")))
        .failure()
        .stderr_has("no such file or id");
}

fn a_put_waits_on_a_gc_lease_of_another_client_then_runs(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("src/waiting");
    small_tree(&src, 4, 600);
    let gc_lease = foreign_lease(&s, "gc", Duration::ZERO);
    let mut put = s.cmd("put");
    let mut put = PutRun::spawn(put.arg(&src));
    wait_for("the put says it waits for the gc", || {
        put.stderr_so_far()
            .contains("waiting for a gc by another client to finish")
    });
    assert!(!put.running.has_exited(), "the put did not wait");
    assert!(
        s.objects("packs/").is_empty() && s.objects("manifests/").is_empty(),
        "the put wrote while the gc held its lease"
    );
    assert_eq!(put.reported_count(), 0);
    // The gc ends (its lease goes): the put goes on and completes.
    s.replace_object(&gc_lease, None);
    let (status, reported, stderr) = put.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(reported.len(), entry_count(&src));
    let dest = s.ws.path("out");
    run(s.cmd("get").arg("waiting").arg(&dest)).success();
    assert_same_tree(&snapshot(&src), &snapshot(&dest.join("waiting")));
}

fn a_lease_not_renewed_for_five_minutes_has_expired(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("src/exp");
    small_tree(&src, 3, 700);
    // A gc lease of another machine not renewed for 6 minutes: a put does
    // not wait for it.
    let dead_gc = foreign_lease(&s, "gc", Duration::from_secs(6 * 60));
    let put = run(s.cmd("put").arg(&src));
    put.success();
    assert!(!put.stderr.contains("waiting"), "{}", put.stderr);
    run(s.cmd("forget").arg("latest")).success();
    // A live put lease of another machine refuses a gc ...
    let live_put = foreign_lease(&s, "put", Duration::from_secs(60));
    let gc = run(&mut s.cmd("gc"));
    gc.success().stderr_has("skipped: a put is running");
    assert!(!s.objects("packs/").is_empty());
    // ... and the same lease 6 minutes old does not: gc runs, reclaims, and
    // removes the expired leases.
    s.replace_object(&live_put, None);
    let dead_put = foreign_lease(&s, "put", Duration::from_secs(6 * 60));
    let gc = run(&mut s.cmd("gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    assert!(s.objects("packs/").is_empty(), "gc reclaimed nothing");
    let leases = s.objects("leases/");
    assert!(
        !leases.contains(&dead_put) && !leases.contains(&dead_gc),
        "expired leases left: {leases:?}"
    );
}

/// A put killed while it holds its lease: a gc on the same host opens the
/// sealed lease, sees that its process is gone, and runs at once (instead
/// of waiting five minutes for the lease to go stale); a live put of the
/// same host still makes it wait.
fn a_gc_runs_at_once_when_the_put_holding_a_lease_was_killed_on_this_host(kind: Kind) {
    use std::os::unix::process::ExitStatusExt;
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("src/tree");
    small_tree(&src, 6, 900);
    let hold = Hold::new(&s.ws);
    let mut cmd = s.cmd("put");
    cmd.arg(&src);
    hold.set(&mut cmd);
    let mut put = PutRun::spawn(&mut cmd);
    hold.wait_reached();
    assert_lease_names_no_holder(&s, put.pid());
    // Alive: a gc of another cache gives up; one of the put's own cache
    // runs beside it (DECISIONS 301), and the lease stays.
    let mut other = s.cmd("gc");
    other.env("CRYPTSTREAM_CACHE_DIR", s.ws.path("cache-other"));
    run(&mut other)
        .success()
        .stderr_has("skipped: a put is running");
    let gc = run(&mut s.cmd("gc"));
    gc.success()
        .stderr_has("gc: running beside 1 put of this cache");
    assert!(!put.running.has_exited(), "the put ended before the gc");
    put.running.signal(libc::SIGKILL);
    let (status, _, _) = put.finish();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    hold.release();
    assert!(
        has_lease(&s, "put"),
        "the killed put's lease is still there"
    );
    let gc = run(&mut s.cmd("gc"));
    gc.success();
    assert!(!gc.stderr.contains("skipped"), "{}", gc.stderr);
    assert!(
        s.objects("leases/").is_empty(),
        "the dead lease was not removed"
    );
    run(s.cmd("verify").arg("--read-data")).success();
}

on_shared_backends!(
    a_second_machine_with_a_fresh_registry_sees_every_file,
    two_writers_with_their_own_registries_share_a_store,
    a_server_killed_during_a_put_fails_it_and_a_rerun_reuses_what_was_stored,
    a_gc_never_overlaps_a_put_of_another_client,
    a_put_waits_on_a_gc_lease_of_another_client_then_runs,
    a_lease_not_renewed_for_five_minutes_has_expired,
    a_gc_runs_at_once_when_the_put_holding_a_lease_was_killed_on_this_host,
);
