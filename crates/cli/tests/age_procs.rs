//! age files through the process engine (`--engine processes`), both ways
//! with the real `age` binary: binary files split over worker processes,
//! armored files done in order by one worker, and a damaged chunk read by
//! a worker reported with age's failure class.

mod age_support;
mod common;

use std::fs;
use std::path::Path;

use age_support::*;
use common::*;

impl Keys {
    /// `cryptstream SUBCOMMAND --engine processes -j 2 -q ARGS...`.
    fn processes(&self, subcommand: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = self.ws.bare(subcommand);
        cmd.args(["--engine", "processes", "-j", "2", "-q"])
            .args(args);
        cmd
    }
}

/// `age -e [-a] -r RECIPIENT -o OUT IN`.
#[track_caller]
fn age_encrypts(recipient: &str, input: &Path, output: &Path, armor: bool) {
    let mut cmd = age();
    cmd.arg("-e").arg("-r").arg(recipient).arg("-o").arg(output);
    if armor {
        cmd.arg("-a");
    }
    let out = cmd.arg(input).output().unwrap();
    assert!(out.status.success(), "age -e failed: {out:?}");
}

/// Sizes that cover an empty payload, one partial chunk, the 64 KiB
/// boundary and a file split into segments over both workers.
const SIZES: [u64; 4] = [0, 1, 65537, SEGMENT_BYTES * 2 + 65536 * 3 + 7];

#[test]
fn the_process_engine_writes_age_files_that_age_reads_and_reads_ages_files() {
    let k = Keys::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let plain = k.ws.path(format!("plain{i}"));
        write_random_file(&plain, size, i as u64 + 1, 0o640);
        let bytes = fs::read(&plain).unwrap();

        let ours = k.ws.path(format!("ours{i}.age"));
        let mut encrypt = k.processes(
            "encrypt",
            &["-r", &k.our_recipient, "-r", &k.their_recipient],
        );
        run(encrypt.arg(&plain).arg(&ours)).success();
        assert!(
            fs::read(&ours)
                .unwrap()
                .starts_with(b"age-encryption.org/v1\n"),
            "size {size}"
        );
        age_decrypts_to(&k.theirs, &ours, &bytes);

        let theirs = k.ws.path(format!("theirs{i}.age"));
        age_encrypts(&k.our_recipient, &plain, &theirs, false);
        let back = k.ws.path(format!("back{i}"));
        let mut decrypt = k.processes("decrypt", &["-i"]);
        run(decrypt.arg(&k.ours).arg(&theirs).arg(&back)).success();
        assert!(fs::read(&back).unwrap() == bytes, "size {size}");
        let mut verify = k.processes("verify", &["-i"]);
        run(verify.arg(&k.ours).arg(&theirs)).success();
    }
}

#[test]
fn the_process_engine_does_armored_age_files_in_order_both_ways() {
    let k = Keys::new();
    // Larger than a segment: only processing in order gets it right.
    let plain = k.ws.path("plain");
    write_random_file(&plain, SEGMENT_BYTES + 70_000, 7, 0o600);
    let bytes = fs::read(&plain).unwrap();

    let ours = k.ws.path("ours.age");
    let mut encrypt = k.processes("encrypt", &["-a", "-r", &k.their_recipient]);
    run(encrypt.arg(&plain).arg(&ours)).success();
    assert!(fs::read(&ours)
        .unwrap()
        .starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----\n"));
    age_decrypts_to(&k.theirs, &ours, &bytes);

    let theirs = k.ws.path("theirs.age");
    age_encrypts(&k.our_recipient, &plain, &theirs, true);
    let back = k.ws.path("back");
    let mut decrypt = k.processes("decrypt", &["-i"]);
    run(decrypt.arg(&k.ours).arg(&theirs).arg(&back)).success();
    assert!(fs::read(&back).unwrap() == bytes);
}

#[test]
fn a_damaged_chunk_read_by_a_worker_process_is_an_age_payload_failure() {
    let k = Keys::new();
    let plain = k.ws.path("plain");
    write_random_file(&plain, SEGMENT_BYTES * 3, 11, 0o600);
    let theirs = k.ws.path("theirs.age");
    age_encrypts(&k.our_recipient, &plain, &theirs, false);
    // A byte of the last segment: a worker, not the parent, opens it.
    let mut data = fs::read(&theirs).unwrap();
    let at = data.len() - 1000;
    data[at] ^= 1;
    fs::write(&theirs, &data).unwrap();
    let back = k.ws.path("back");
    let mut decrypt = k.processes("decrypt", &["-i"]);
    run(decrypt.arg(&k.ours).arg(&theirs).arg(&back))
        .failure()
        .stderr_has("age payload failure: chunk");
    assert!(!back.exists(), "nothing under the final name");
}

#[test]
fn passphrase_age_files_and_a_tree_go_through_worker_processes() {
    let k = Keys::new();
    let pass = k.ws.path("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    // A tree: small files are whole tasks in the workers (which rebuild
    // the age envelope, passphrase included), the large one is split.
    let src = k.ws.path("src");
    fs::create_dir(&src).unwrap();
    for (i, size) in [10u64, 70_000, SEGMENT_BYTES + 3].into_iter().enumerate() {
        write_random_file(&src.join(format!("f{i}")), size, 40 + i as u64, 0o640);
    }
    let enc = k.ws.path("enc");
    let mut encrypt = k.processes(
        "encrypt",
        &[
            "--age-passphrase",
            "--age-scrypt-log-n",
            "10",
            "--passphrase-file",
        ],
    );
    run(encrypt.arg(&pass).arg(&src).arg(&enc)).success();
    for i in 0..3 {
        let file = enc.join(format!("f{i}.age"));
        let head = fs::read(&file).unwrap();
        assert!(
            head.starts_with(b"age-encryption.org/v1\n-> scrypt "),
            "f{i}"
        );
    }
    let back = k.ws.path("back");
    let mut decrypt = k.processes("decrypt", &["--passphrase-file"]);
    run(decrypt.arg(&pass).arg(&enc).arg(&back)).success();
    for i in 0..3 {
        let name = format!("f{i}");
        assert!(
            fs::read(back.join(&name)).unwrap() == fs::read(src.join(&name)).unwrap(),
            "{name}"
        );
    }
    // And the recipients' files of the tree are readable by age itself.
    let tree = k.ws.path("tree");
    let mut encrypt = k.processes("encrypt", &["-r", &k.their_recipient]);
    run(encrypt.arg(&src).arg(&tree)).success();
    for i in 0..3 {
        let plain = fs::read(src.join(format!("f{i}"))).unwrap();
        age_decrypts_to(&k.theirs, &tree.join(format!("f{i}.age")), &plain);
    }
}
