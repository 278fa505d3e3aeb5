//! Every modification of an encrypted file is detected: decrypt and verify
//! exit non-zero, name the file, and no output appears under a final name
//! (nor any stray temp file beside it).
//!
//! Each damaged copy costs three runs of the binary, so the sweeps flip
//! bytes at the positions where the format changes meaning rather than at
//! every byte (the middle of a field or of a chunk adds nothing the edges
//! do not show). The classes of positions kept:
//! - header: the first byte (lowest bit) and the last byte (highest bit)
//!   of every header field (magic, version, cipher, key derivation, kind,
//!   chunk size, length, mode, mtime, reserved, salt, key-derivation block,
//!   key check, MAC), so also the first and last byte of the header, the
//!   header/body seam and the ends of every integer;
//! - body: for every chunk (the last, partial one included) its first
//!   byte, its last ciphertext byte, the first and last byte of its tag,
//!   plus one byte from the middle of a chunk and of a tag;
//! - truncation: at 0 and 1 byte, around the end of the magic and of the
//!   header, at and beside every chunk edge, inside the last tag, and one
//!   byte short of the end.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// The chunk size of the samples, small so that a few KiB span many chunks.
const CHUNK: usize = 1024;
/// Bytes one chunk takes on disk.
const STRIDE: usize = CHUNK + TAG_LEN;
/// Plaintext of the samples: six chunks, the last one partial.
const SAMPLE_LEN: usize = 5 * CHUNK + 500;

/// An encrypted sample file and a place to try decrypting damaged copies.
struct Sample {
    ws: Workspace,
    /// The ciphertext as encrypted.
    encrypted: Vec<u8>,
    /// Where damaged copies are written.
    damaged: PathBuf,
    /// Where decrypts of damaged copies write (must stay empty).
    out_dir: PathBuf,
}

impl Sample {
    /// A sample of `SAMPLE_LEN` bytes encrypted with `--chunk-size 1KiB`.
    fn new() -> Sample {
        let ws = Workspace::new();
        let plain = ws.path("plain");
        write_random_file(&plain, SAMPLE_LEN as u64, 42, 0o640);
        let good = ws.path("good.cst");
        let mut encrypt = ws.keyed("encrypt");
        encrypt.args(["--chunk-size", "1KiB"]);
        run_ok(encrypt, &plain, &good);
        Sample::from_file(ws, &good)
    }

    /// A sample from an already encrypted file in `ws`.
    fn from_file(ws: Workspace, encrypted: &Path) -> Sample {
        let encrypted = fs::read(encrypted).unwrap();
        let out_dir = ws.path("out");
        fs::create_dir(&out_dir).unwrap();
        Sample {
            damaged: ws.path("damaged.cst"),
            ws,
            encrypted,
            out_dir,
        }
    }

    /// Offset of chunk `index` in the file.
    fn chunk_at(index: usize) -> usize {
        HEADER_LEN + index * STRIDE
    }

    /// Number of chunks in the sample.
    fn chunks(&self) -> usize {
        (self.encrypted.len() - HEADER_LEN).div_ceil(STRIDE)
    }

    /// A copy with bit `bit` of byte `offset` flipped.
    fn flipped(&self, offset: usize, bit: u32) -> Vec<u8> {
        let mut bytes = self.encrypted.clone();
        bytes[offset] ^= 1 << bit;
        bytes
    }

    /// Writes `damaged` to disk and asserts that decrypt (file to file),
    /// decrypt (stdin to file) and verify all reject it, with stderr naming
    /// the file and, when given, containing `reason`; the output directory
    /// stays empty.
    #[track_caller]
    fn assert_rejected(&self, damaged: &[u8], reason: Option<&str>, case: &str) {
        println!("case: {case}");
        fs::write(&self.damaged, damaged).unwrap();
        let output = self.out_dir.join("damaged");

        let decrypt = run(self.ws.keyed("decrypt").arg(&self.damaged).arg(&output));
        decrypt.failure().names(&self.damaged);
        if let Some(reason) = reason {
            decrypt.stderr_has(reason);
        }
        assert_empty_dir(&self.out_dir);

        let verify = run(self.ws.keyed("verify").arg(&self.damaged));
        verify.failure().names(&self.damaged);
        if let Some(reason) = reason {
            verify.stderr_has(reason);
        }

        let mut stream = self.ws.keyed("decrypt");
        stream.arg("-").arg(&output);
        run_with_stdin(&mut stream, Some(damaged.to_vec())).failure();
        assert_empty_dir(&self.out_dir);
    }
}

#[test]
fn intact_files_verify_and_decrypt() {
    let sample = Sample::new();
    fs::write(&sample.damaged, &sample.encrypted).unwrap();
    let verify = run(sample.ws.keyed("verify").arg("--json").arg(&sample.damaged));
    assert_eq!(verify.success().json()["files_ok"], 1);
    let output = sample.out_dir.join("intact");
    run_ok(sample.ws.keyed("decrypt"), &sample.damaged, &output);
    assert_eq!(
        fs::read(&output).unwrap(),
        fs::read(sample.ws.path("plain")).unwrap()
    );
}

/// Where each field of a version-2 header starts (docs/FORMAT.md), and
/// the header length after the last: magic, version, cipher, key
/// derivation, kind, chunk size, length, mode, mtime nanoseconds, mtime
/// seconds, reserved, salt, key-derivation block, key check, MAC.
const HEADER_FIELDS: [usize; 16] = [
    0, 8, 9, 10, 11, 12, 16, 24, 28, 32, 40, 48, 80, 112, 128, 160,
];

#[test]
fn header_fields_tile_the_header() {
    assert_eq!(HEADER_FIELDS[HEADER_FIELDS.len() - 1], HEADER_LEN);
}

#[test]
fn a_bit_flip_at_either_end_of_every_header_field_is_rejected() {
    let sample = Sample::new();
    // The lowest bit of a field's first byte and the highest bit of its
    // last: for the little-endian integers, the smallest and the largest
    // change to the value.
    let mut flips: Vec<(usize, u32)> = HEADER_FIELDS
        .windows(2)
        .flat_map(|field| [(field[0], 0), (field[1] - 1, 7)])
        .collect();
    flips.dedup_by_key(|(offset, _)| *offset);
    for (offset, bit) in flips {
        let damaged = sample.flipped(offset, bit);
        sample.assert_rejected(&damaged, None, &format!("header byte {offset} bit {bit}"));
    }
}

#[test]
fn bit_flips_at_the_edges_of_every_chunk_and_tag_are_rejected_naming_the_chunk() {
    let sample = Sample::new();
    let len = sample.encrypted.len();
    let mut offsets = Vec::new();
    for chunk in 0..sample.chunks() {
        let start = Sample::chunk_at(chunk);
        let end = (start + STRIDE).min(len);
        let tag = end - TAG_LEN;
        offsets.extend([start, tag - 1, tag, end - 1]);
    }
    // The middle of a chunk and of a tag.
    offsets.push(Sample::chunk_at(2) + CHUNK / 2);
    offsets.push(Sample::chunk_at(2) + CHUNK + TAG_LEN / 2);
    offsets.sort_unstable();
    offsets.dedup();
    for (i, offset) in offsets.into_iter().enumerate() {
        let bit = (i % 8) as u32;
        let chunk = (offset - HEADER_LEN) / STRIDE;
        sample.assert_rejected(
            &sample.flipped(offset, bit),
            Some(&format!("authentication failed at chunk {chunk}")),
            &format!("body byte {offset} bit {bit}"),
        );
    }
}

#[test]
fn truncation_at_any_offset_is_rejected() {
    let sample = Sample::new();
    let len = sample.encrypted.len();
    let mut cuts = vec![
        0,
        1,
        7,
        8,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        len - 1,
    ];
    for chunk in 1..sample.chunks() {
        let boundary = Sample::chunk_at(chunk);
        cuts.extend([boundary - 1, boundary, boundary + 1]);
    }
    // Just before the last tag ends, and a lone last tag.
    cuts.extend([len - TAG_LEN, len - TAG_LEN - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c < len) {
        sample.assert_rejected(
            &sample.encrypted[..cut],
            Some("truncated"),
            &format!("truncated to {cut} of {len} bytes"),
        );
    }
}

#[test]
fn appended_bytes_are_rejected() {
    let sample = Sample::new();
    let last_chunk = sample.encrypted[Sample::chunk_at(sample.chunks() - 1)..].to_vec();
    let cases = [
        ("1 byte", random_bytes(1, 1)),
        ("16 bytes", random_bytes(TAG_LEN, 2)),
        ("a whole chunk", random_bytes(STRIDE, 3)),
        ("a copy of the last chunk", last_chunk),
    ];
    for (what, extra) in cases {
        let mut damaged = sample.encrypted.clone();
        damaged.extend_from_slice(&extra);
        sample.assert_rejected(&damaged, Some("extra bytes"), &format!("appended {what}"));
    }
}

#[test]
fn swapped_chunks_are_rejected() {
    let sample = Sample::new();
    let mut damaged = sample.encrypted.clone();
    let (one, two) = (Sample::chunk_at(1), Sample::chunk_at(2));
    let chunk_one = damaged[one..two].to_vec();
    damaged.copy_within(two..two + STRIDE, one);
    damaged[two..two + STRIDE].copy_from_slice(&chunk_one);
    sample.assert_rejected(
        &damaged,
        Some("authentication failed at chunk 1"),
        "chunks 1 and 2 swapped",
    );
}

#[test]
fn a_duplicated_chunk_is_rejected() {
    let sample = Sample::new();
    let (one, two) = (Sample::chunk_at(1), Sample::chunk_at(2));
    let mut overwritten = sample.encrypted.clone();
    overwritten.copy_within(one..two, two);
    sample.assert_rejected(
        &overwritten,
        Some("authentication failed at chunk 2"),
        "chunk 1 copied over chunk 2",
    );
    let mut inserted = sample.encrypted.clone();
    let copy = inserted[one..two].to_vec();
    inserted.splice(two..two, copy);
    sample.assert_rejected(&inserted, Some("extra bytes"), "chunk 1 inserted again");
}

#[test]
fn a_header_from_another_file_with_the_same_key_is_rejected() {
    let sample = Sample::new();
    let other = sample.ws.path("other");
    write_random_file(&other, SAMPLE_LEN as u64, 43, 0o640);
    let mut encrypt = sample.ws.keyed("encrypt");
    encrypt.args(["--chunk-size", "1KiB"]);
    run_ok(encrypt, &other, &sample.ws.path("other.cst"));
    let mut spliced = fs::read(sample.ws.path("other.cst")).unwrap();
    spliced[HEADER_LEN..].copy_from_slice(&sample.encrypted[HEADER_LEN..]);
    sample.assert_rejected(
        &spliced,
        Some("authentication failed at chunk 0"),
        "header of another file",
    );
}

#[test]
fn a_stream_encrypted_file_without_a_recorded_length_detects_truncation_and_splicing() {
    let ws = Workspace::new();
    let plain = random_bytes(SAMPLE_LEN, 44);
    let encrypted = ws.path("stream.cst");
    let mut encrypt = ws.keyed("encrypt");
    encrypt.args(["--chunk-size", "1KiB", "-"]).arg(&encrypted);
    run_with_stdin(&mut encrypt, Some(plain)).success();
    let sample = Sample::from_file(ws, &encrypted);
    let chunks = sample.chunks();
    let bytes = &sample.encrypted;
    let (one, two) = (Sample::chunk_at(1), Sample::chunk_at(2));
    let mut inserted = bytes.clone();
    inserted.splice(two..two, bytes[one..two].to_vec());
    let mut doubled_last = bytes.clone();
    doubled_last.extend_from_slice(&bytes[Sample::chunk_at(chunks - 1)..]);
    let cases = [
        (
            "last chunk dropped",
            bytes[..Sample::chunk_at(chunks - 1)].to_vec(),
        ),
        (
            "last two chunks dropped",
            bytes[..Sample::chunk_at(chunks - 2)].to_vec(),
        ),
        ("chunk 1 inserted again", inserted),
        ("last chunk appended again", doubled_last),
        ("one byte cut", bytes[..bytes.len() - 1].to_vec()),
    ];
    for (what, damaged) in cases {
        sample.assert_rejected(&damaged, None, what);
    }
}

#[test]
fn a_wrong_key_file_is_rejected() {
    let sample = Sample::new();
    let other_key = sample.ws.path("other-key");
    keygen(&other_key);
    fs::write(&sample.damaged, &sample.encrypted).unwrap();
    for subcommand in ["decrypt", "verify"] {
        let mut cmd = sample.ws.bare(subcommand);
        cmd.arg("-k").arg(&other_key).arg(&sample.damaged);
        if subcommand == "decrypt" {
            cmd.arg(sample.out_dir.join("x"));
        }
        run(&mut cmd)
            .failure()
            .names(&sample.damaged)
            .stderr_has("wrong key or not encrypted with this key");
        assert_empty_dir(&sample.out_dir);
    }
}

#[test]
fn a_wrong_passphrase_is_rejected() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    write_random_file(&plain, 3000, 1, 0o600);
    let encrypted = ws.path("p.cst");
    let mut encrypt = ws.bare("encrypt");
    encrypt.env(PASSPHRASE_ENV, "right").args(FAST_KDF);
    run_ok(encrypt, &plain, &encrypted);
    let out_dir = ws.path("out");
    fs::create_dir(&out_dir).unwrap();
    let wrong_file = ws.path("wrong");
    fs::write(&wrong_file, "wrong\n").unwrap();
    for subcommand in ["decrypt", "verify"] {
        let mut by_env = ws.bare(subcommand);
        by_env.env(PASSPHRASE_ENV, "Right").arg(&encrypted);
        let mut by_file = ws.bare(subcommand);
        by_file
            .arg("--passphrase-file")
            .arg(&wrong_file)
            .arg(&encrypted);
        for mut cmd in [by_env, by_file] {
            if subcommand == "decrypt" {
                cmd.arg(out_dir.join("p"));
            }
            run(&mut cmd)
                .failure()
                .names(&encrypted)
                .stderr_has("wrong passphrase");
            assert_empty_dir(&out_dir);
        }
    }
}

#[test]
fn the_wrong_kind_of_secret_is_rejected_with_a_hint() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    write_random_file(&plain, 3000, 1, 0o600);
    let by_key = ws.path("k.cst");
    run_ok(ws.keyed("encrypt"), &plain, &by_key);
    let by_passphrase = ws.path("p.cst");
    let mut encrypt = ws.bare("encrypt");
    encrypt.env(PASSPHRASE_ENV, "secret").args(FAST_KDF);
    run_ok(encrypt, &plain, &by_passphrase);
    let out_dir = ws.path("out");
    fs::create_dir(&out_dir).unwrap();

    let mut with_passphrase = ws.bare("decrypt");
    with_passphrase.env(PASSPHRASE_ENV, "secret");
    run(with_passphrase.arg(&by_key).arg(out_dir.join("k")))
        .failure()
        .names(&by_key)
        .stderr_has("--key-file");
    run(ws
        .keyed("decrypt")
        .arg(&by_passphrase)
        .arg(out_dir.join("p")))
    .failure()
    .names(&by_passphrase)
    .stderr_has("encrypted with a passphrase");
    assert_empty_dir(&out_dir);
}

#[test]
fn a_file_that_is_not_cryptstream_is_rejected() {
    let sample = Sample::new();
    let cases = [
        ("random bytes", random_bytes(5000, 9)),
        ("an empty file", Vec::new()),
        ("text", b"hello, world\n".to_vec()),
    ];
    for (what, bytes) in cases {
        sample.assert_rejected(&bytes, Some("not a cryptstream file"), what);
    }
}

#[test]
fn one_damaged_file_in_a_tree_fails_alone() {
    let ws = Workspace::new();
    let tree = Tree::new(&ws.path("plain"));
    tree.file("a", 3000, 0o644)
        .file("b", 70_000, 0o644)
        .file("sub/c", 0, 0o600)
        .file("sub/d", 9 * MIB, 0o640)
        .file("sub/e", 100, 0o644);
    run_ok(ws.keyed("encrypt"), tree.root(), &ws.path("enc"));
    let damaged = ws.path("enc/b.cst");
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[HEADER_LEN + 5000] ^= 0x20;
    fs::write(&damaged, bytes).unwrap();

    let outcome = run(ws
        .keyed("decrypt")
        .arg("--json")
        .arg(ws.path("enc"))
        .arg(ws.path("dec")));
    outcome
        .failure()
        .names(&damaged)
        .stderr_has("authentication failed at chunk 0");
    let summary = outcome.json();
    assert_eq!(summary["files_failed"], 1);
    assert_eq!(summary["files_ok"], 4);
    assert_eq!(
        Path::new(summary["failures"][0]["path"].as_str().unwrap()),
        damaged
    );
    let mut expected = files_and_dirs(&snapshot(tree.root()));
    expected.remove(Path::new("b"));
    assert_same_tree(&expected, &snapshot(&ws.path("dec")));

    let verify = run(ws.keyed("verify").arg("--json").arg(ws.path("enc")));
    verify.failure().names(&damaged);
    assert_eq!(verify.json()["files_failed"], 1);
    assert_eq!(verify.json()["files_ok"], 4);
    assert_eq!(
        verify
            .stderr
            .lines()
            .filter(|l| l.contains(".cst:"))
            .count(),
        1,
        "only the damaged file is named: {}",
        verify.stderr
    );
}

#[test]
fn a_flipped_byte_in_a_large_split_file_leaves_no_output() {
    let ws = Workspace::new();
    let plain = ws.path("large");
    write_random_file(&plain, 9 * MIB, 5, 0o640);
    let encrypted = ws.path("large.cst");
    run_ok(ws.keyed("encrypt"), &plain, &encrypted);
    let sample = Sample::from_file(ws, &encrypted);
    let len = sample.encrypted.len();
    for offset in [len / 2, SEGMENT_BYTES as usize + HEADER_LEN + 10, len - 3] {
        sample.assert_rejected(
            &sample.flipped(offset, 3),
            Some("authentication failed"),
            &format!("9 MiB file, byte {offset} flipped"),
        );
        let mut four = sample.ws.keyed("decrypt");
        four.args(["--workers", "4"])
            .arg(&sample.damaged)
            .arg(sample.out_dir.join("large"));
        run(&mut four).failure().names(&sample.damaged);
        assert_empty_dir(&sample.out_dir);
    }
}

#[test]
fn damaged_data_on_stdin_exits_non_zero() {
    let sample = Sample::new();
    let last = sample.encrypted.len() - 1;
    let cases = [
        ("flipped last byte", sample.flipped(last, 0)),
        ("flipped first body byte", sample.flipped(HEADER_LEN, 0)),
        (
            "cut at a chunk boundary",
            sample.encrypted[..Sample::chunk_at(3)].to_vec(),
        ),
    ];
    for (what, damaged) in cases {
        println!("case: {what}");
        let mut cmd = sample.ws.keyed("decrypt");
        cmd.args(["-", "-"]);
        run_with_stdin(&mut cmd, Some(damaged))
            .failure()
            .stderr_has("cryptstream: -:");
    }
}
