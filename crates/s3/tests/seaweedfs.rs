//! The S3 client and the store backend against a real SeaweedFS on
//! 127.0.0.1, installed and started by the harness (`support/seaweed.rs`).

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use cryptstream_s3::{Options, S3Backend, S3Client, S3Location, WriteMode, PART_SIZE};
use cryptstream_store::{Backend, BackendError};
use support::seaweed;

/// A client on a fresh bucket of its own.
fn client() -> S3Client {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let server = seaweed::server();
    let bucket = format!(
        "s3test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    server.create_bucket(&bucket);
    let location = S3Location::parse(&format!("s3://{bucket}/some/prefix")).unwrap();
    let env = server.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    S3Client::with_config(location, &Options::default(), &pairs).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

#[test]
fn objects_round_trip_with_ranges_listing_and_deletion() {
    let c = client();
    assert_eq!(c.get("a/one").unwrap(), None);
    assert_eq!(c.head("a/one").unwrap(), None);
    c.put("a/one", Bytes::from_static(b"hello world")).unwrap();
    c.put("a/two", Bytes::from(pattern(1000, 1))).unwrap();
    c.put("b/three", Bytes::from_static(b"x")).unwrap();
    assert_eq!(c.get("a/one").unwrap().unwrap().as_ref(), b"hello world");
    assert_eq!(c.get_range("a/one", 6..11).unwrap().as_ref(), b"world");
    assert!(
        c.get_range("a/one", 6..20).is_err(),
        "a range past the end must fail"
    );
    assert_eq!(c.head("a/two").unwrap(), Some(1000));
    let mut listed: Vec<_> = c
        .list("a/")
        .unwrap()
        .into_iter()
        .map(|l| (l.key, l.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("a/one".to_string(), 11), ("a/two".to_string(), 1000)]
    );
    assert_eq!(c.list("").unwrap().len(), 3);
    c.delete("a/one").unwrap();
    c.delete("a/one").unwrap();
    assert_eq!(c.get("a/one").unwrap(), None);
}

#[test]
fn the_server_refuses_a_second_create_and_the_probe_says_so() {
    let c = client();
    assert!(c.put_if_absent("k", Bytes::from_static(b"first")).unwrap());
    assert!(!c.put_if_absent("k", Bytes::from_static(b"second")).unwrap());
    assert_eq!(c.get("k").unwrap().unwrap().as_ref(), b"first");
    assert_eq!(S3Backend::probe(&c).unwrap(), WriteMode::Conditional);
    // The probe leaves nothing behind.
    assert_eq!(c.list("").unwrap().len(), 1);
}

#[test]
fn a_large_object_goes_up_in_parts_and_comes_back_exact() {
    // With the test knobs (the test command turns them on), a threshold of
    // 6 MiB instead of 64 MiB: two parts and the rest, with 32 MiB instead
    // of 80 MiB on the wire. Without them, the real threshold.
    #[cfg(feature = "test-knobs")]
    cryptstream_s3::set_multipart_threshold(6 * 1024 * 1024);
    let size = if cfg!(feature = "test-knobs") {
        PART_SIZE * 2 + 12345
    } else {
        cryptstream_s3::MULTIPART_THRESHOLD + PART_SIZE + 12345
    };
    let c = client();
    let data = pattern(size, 7);
    let backend = S3Backend::new(c, WriteMode::Conditional);
    let mut writer = backend.create("packs/ab/big").unwrap();
    for piece in data.chunks(1 << 20) {
        std::io::Write::write_all(&mut writer, piece).unwrap();
    }
    assert_eq!(writer.written(), data.len() as u64);
    // Not visible before the commit.
    assert_eq!(backend.size("packs/ab/big").unwrap(), None);
    writer.commit().unwrap();
    let multipart = backend
        .client()
        .requests()
        .multipart
        .load(Ordering::Relaxed);
    assert!(
        multipart >= 4,
        "expected a multipart upload, counted {multipart} requests"
    );
    assert_eq!(
        backend.get("packs/ab/big", data.len() as u64).unwrap(),
        data
    );
    let mut buf = vec![0u8; 4096];
    // A range across the boundary of the first two parts.
    backend
        .get_range("packs/ab/big", PART_SIZE as u64 - 100, &mut buf)
        .unwrap();
    let at = PART_SIZE - 100;
    assert_eq!(buf, data[at..at + 4096]);
}

#[test]
fn the_backend_keeps_the_store_contract() {
    let backend = S3Backend::new(client(), WriteMode::Conditional);
    backend
        .put_if_absent("manifests/cd/m1", b"manifest")
        .unwrap();
    assert!(matches!(
        backend.put_if_absent("manifests/cd/m1", b"other"),
        Err(BackendError::AlreadyExists(_))
    ));
    assert!(matches!(
        backend.get("manifests/cd/none", 100),
        Err(BackendError::NotFound(_))
    ));
    // A whole-object read is bounded by size before anything is read.
    assert_eq!(backend.get("manifests/cd/m1", 8).unwrap(), b"manifest");
    assert!(matches!(
        backend.get("manifests/cd/m1", 7),
        Err(BackendError::TooLarge {
            size: 8,
            limit: 7,
            ..
        })
    ));
    let mut buf = [0u8; 4];
    assert!(matches!(
        backend.get_range("manifests/cd/m1", 6, &mut buf),
        Err(BackendError::ShortObject { size: 8, .. })
    ));
    assert!(matches!(
        backend.get_range("manifests/cd/none", 0, &mut buf),
        Err(BackendError::NotFound(_))
    ));
    for bad in ["", "/abs", "a/../b", "a//b", ".hidden", "a/.tmp"] {
        assert!(
            matches!(backend.create(bad), Err(BackendError::InvalidName(_))),
            "{bad:?}"
        );
    }
    // A writer dropped without a commit leaves nothing.
    let mut writer = backend.create("packs/00/dropped").unwrap();
    std::io::Write::write_all(&mut writer, b"partial").unwrap();
    drop(writer);
    assert_eq!(backend.size("packs/00/dropped").unwrap(), None);
    let mut names = Vec::new();
    backend
        .list("manifests/", &mut |meta| {
            names.push(meta.name);
            Ok(())
        })
        .unwrap();
    assert_eq!(names, vec!["manifests/cd/m1".to_string()]);
}

#[test]
fn unique_names_mode_refuses_a_taken_name_by_looking_first() {
    let backend = S3Backend::new(client(), WriteMode::UniqueNames);
    backend.put_if_absent("manifests/ab/u1", b"first").unwrap();
    assert!(matches!(
        backend.put_if_absent("manifests/ab/u1", b"second"),
        Err(BackendError::AlreadyExists(_))
    ));
    // Each create looked first (a HEAD), then wrote with a plain PUT.
    let requests = backend.client().requests();
    assert_eq!(requests.head.load(Ordering::Relaxed), 2);
    assert_eq!(requests.put.load(Ordering::Relaxed), 1);
    assert_eq!(backend.get("manifests/ab/u1", 100).unwrap(), b"first");
}

#[test]
fn a_dead_server_gives_a_one_line_error_naming_the_object() {
    let env = seaweed::server().env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Port 9 (discard) on loopback: nothing listens there.
    pairs.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:9"));
    let options = Options {
        retry_timeout: std::time::Duration::from_secs(2),
        max_retries: 2,
        ..Options::default()
    };
    let location = S3Location::parse("s3://no-server/p").unwrap();
    let dead = S3Client::with_config(location, &options, &pairs).unwrap();
    let err = dead.get("packs/ab/x").unwrap_err().to_string();
    assert!(err.starts_with("get packs/ab/x: "), "{err}");
    assert!(!err.contains('\n'), "{err}");
}
