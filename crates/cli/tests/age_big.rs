//! A multi-GiB file (2 GiB + 1 byte, sparse with random islands) goes both
//! ways with the real `age`: we encrypt on every worker and `age -d`
//! reads it; `age -e` writes one and we decrypt it on every worker. Kept
//! in its own test binary: it moves about 8 GiB through the disk.

mod age_support;
mod common;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Stdio;

use age_support::*;
use common::*;

/// 2 GiB and one byte: past every 32-bit length and not a whole chunk.
const BIG: u64 = (2 << 30) + 1;

/// BLAKE3 of everything `reader` yields.
fn hash_of(mut reader: impl Read) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finalize();
        }
        hasher.update(&buf[..n]);
    }
}

/// A sparse file of `BIG` bytes with random data at its start, in its
/// middle (across a chunk boundary) and at its end.
fn big_input(path: &Path) {
    let mut file = File::create(path).unwrap();
    file.set_len(BIG).unwrap();
    for (i, at) in [0u64, (1 << 30) - 1000, BIG - 70_000]
        .into_iter()
        .enumerate()
    {
        file.seek(SeekFrom::Start(at)).unwrap();
        let len = (BIG - at).min(3 << 20) as usize;
        file.write_all(&random_bytes(len, 100 + i as u64)).unwrap();
    }
}

#[test]
fn a_two_gib_file_goes_both_ways_with_age() {
    let ws = Workspace::new();
    let id = ws.path("id.txt");
    let recipient = age_keygen(&id);
    let plain = ws.path("big");
    big_input(&plain);
    let expected = hash_of(File::open(&plain).unwrap());

    let ours = ws.path("big.age");
    run(ws
        .bare("encrypt")
        .args(["-q", "-j", "2", "-r", &recipient])
        .arg(&plain)
        .arg(&ours))
    .success();
    let mut child = age()
        .arg("-d")
        .arg("-i")
        .arg(&id)
        .arg(&ours)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let got = hash_of(child.stdout.take().unwrap());
    assert!(child.wait().unwrap().success(), "age -d failed");
    assert_eq!(got, expected, "age -d of our file");
    fs::remove_file(&ours).unwrap();

    let theirs = ws.path("theirs.age");
    let out = age()
        .arg("-e")
        .arg("-r")
        .arg(&recipient)
        .arg("-o")
        .arg(&theirs)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "age -e failed: {out:?}");
    let back = ws.path("back");
    run(ws
        .bare("decrypt")
        .args(["-q", "-j", "2", "-i"])
        .arg(&id)
        .arg(&theirs)
        .arg(&back))
    .success();
    assert_eq!(fs::metadata(&back).unwrap().len(), BIG);
    assert_eq!(
        hash_of(File::open(&back).unwrap()),
        expected,
        "our decrypt of age's file"
    );
}
