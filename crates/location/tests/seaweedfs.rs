//! Opening S3 stores through the library, against a real SeaweedFS on
//! 127.0.0.1 (installed and started by the S3 crate's harness): two stores
//! of one bucket opened in one process, each with its own cache, client
//! and leases (nothing process-global joins them), the first fill of a new
//! cache, and the put/gc gate between them in both directions.

#[path = "../../s3/tests/support/seaweed.rs"]
mod seaweed;

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cryptstream_format::{Keyring, MasterKey};
use cryptstream_location::{cache, GcGate, OpenOptions, OpenedStore, StoreLocation, WriteMode};
use cryptstream_pool::Cancel;
use cryptstream_store::Settings;

/// Longest the test waits for the other thread (a hang guard, not a timing).
const HANG_GUARD: Duration = Duration::from_secs(120);

fn key() -> MasterKey {
    MasterKey::from_key_bytes([42; 32])
}

fn options(cache: &Path, connections: usize) -> OpenOptions {
    OpenOptions {
        connections,
        cache_dir: Some(cache.to_path_buf()),
        remote: None,
    }
}

fn open(location: &StoreLocation, options: &OpenOptions) -> OpenedStore {
    location
        .open(options)
        .unwrap()
        .unlock(&Keyring::new(vec![key()], None))
        .unwrap()
}

#[test]
fn two_stores_of_one_bucket_in_one_process_keep_their_own_caches_and_leases() {
    let server = seaweed::server();
    // The only test of this binary, so nothing reads the environment while
    // it is set; the S3 client reads the AWS variables from it.
    for (name, value) in server.env() {
        std::env::set_var(name, value);
    }
    server.create_bucket("location-two");
    let tmp = tempfile::tempdir().unwrap();
    let (cache_a, cache_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let location = StoreLocation::parse("s3://location-two/st").unwrap();

    let created = location
        .init(&options(&cache_a, 1), &key(), &Settings::DEFAULT)
        .unwrap();
    // SeaweedFS honours If-None-Match, and the answer is recorded.
    assert_eq!(created.write_mode, Some(WriteMode::Conditional));
    let StoreLocation::S3(s3) = &location else {
        unreachable!("parsed as S3")
    };
    let dir_a = cache::dir_for(&cache_a, s3);
    assert_eq!(
        std::fs::read_to_string(dir_a.join(cache::WRITE_MODE_FILE))
            .unwrap()
            .trim(),
        "conditional"
    );
    let again = location.init(&options(&cache_a, 1), &key(), &Settings::DEFAULT);
    let shown = again.expect_err("a second init is refused").to_string();
    assert!(shown.contains("already exists"), "{shown}");

    // A's cache was filled by init; B's is new and is filled once.
    let mut a = open(&location, &options(&cache_a, 1));
    assert!(a.fill_registry(&Cancel::new()).unwrap().is_none());
    let mut b = open(&location, &options(&cache_b, 8));
    let report = b
        .fill_registry(&Cancel::new())
        .unwrap()
        .expect("a new cache");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(b.fill_registry(&Cancel::new()).unwrap().is_none());
    assert!(cache::dir_for(&cache_b, s3)
        .join(cache::FILLED_FILE)
        .exists());

    // A put of A holds a lease: B's gc gives up and says why.
    let mut waited = false;
    let put = a.put_lease(&mut |_| waited = true).unwrap();
    assert!(put.name().starts_with("leases/put-") && !waited);
    match b.gc_gate(&Cancel::new()).unwrap() {
        GcGate::Skip(running) => {
            let why = running.to_string();
            assert!(why.starts_with("a put is running (leases/put-"), "{why}");
        }
        _ => panic!("a gc ran beside a put of another store"),
    }
    drop(put);

    // With no put, B's gc runs, its registry refreshed from the bucket.
    let GcGate::Exclusive { lease, refresh } = b.gc_gate(&Cancel::new()).unwrap() else {
        panic!("no put holds a lease, yet the gc did not get its own");
    };
    assert!(lease.name().starts_with("leases/gc-") && refresh.problems.is_empty());
    // A put of A now waits for that gc, says so once, and runs once it ends.
    let (told_tx, told_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let putter = std::thread::spawn(move || {
        let lease = a
            .put_lease(&mut |gc| {
                let _ = told_tx.send(gc.name.clone());
            })
            .unwrap();
        let _ = done_tx.send(lease.name().starts_with("leases/put-"));
    });
    let gc_lease = told_rx
        .recv_timeout(HANG_GUARD)
        .expect("the put said that it waits for the gc");
    assert!(gc_lease.starts_with("leases/gc-"), "{gc_lease}");
    assert!(
        done_rx.try_recv().is_err(),
        "the put went on while the gc held its lease"
    );
    drop(lease);
    assert!(done_rx
        .recv_timeout(HANG_GUARD)
        .expect("the put ran once the gc ended"));
    putter.join().unwrap();
}
