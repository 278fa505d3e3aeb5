//! The core round-trip and tamper cases, run for every engine x I/O
//! strategy: every cell must decrypt to the exact input, produce the same
//! bytes as every other cell for the same key and salt, and reject the same
//! damage without leaving output behind.
//!
//! The complete round-trip and tamper suites (`roundtrip.rs`, `tamper.rs`)
//! can also be run in any one cell through the environment, which the
//! binary reads as the default of `--engine`/`--io`:
//! `CRYPTSTREAM_ENGINE=processes CRYPTSTREAM_IO=mmap cargo test -p cryptstream`.

mod procs_support;

use std::path::Path;

use procs_support::*;

const MIB: u64 = 1024 * 1024;
const SEGMENT: u64 = 4 * MIB;
const CHUNK: u64 = 64 * 1024;

/// Sizes around every boundary: empty, one byte, chunk, segment, and a
/// file split into several segments.
fn make_tree(root: &Path) {
    let sizes = [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        SEGMENT - 1,
        SEGMENT,
        SEGMENT + 1,
        2 * SEGMENT + 12_345,
    ];
    for (i, size) in sizes.iter().enumerate() {
        let mode = if i % 2 == 0 { 0o640 } else { 0o600 };
        write_file(
            &root.join(format!("d{}/f{i}", i % 3)),
            *size,
            i as u64 + 1,
            mode,
        );
    }
}

fn cell_args<'a>(engine: &'a str, io: &'a str) -> Vec<&'a str> {
    vec!["--engine", engine, "--io", io, "-j", "3", "--json"]
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

fn copy_tree(from: &Path, to: &Path) {
    for (rel, _) in snapshot(from) {
        let target = to.join(&rel);
        std::fs::create_dir_all(target.parent().expect("has parent")).expect("mkdir");
        std::fs::copy(from.join(&rel), target).expect("copy");
    }
}

#[test]
fn every_engine_and_io_strategy_round_trips_to_identical_bytes_and_rejects_damage() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    make_tree(&plain);
    let expected_plain = snapshot(&plain);
    let mut reference = None;
    for engine in ENGINES {
        for io in IOS {
            let cell = format!("{engine}-{io}");
            let enc = ws.path(&format!("enc-{cell}"));
            let mut args = cell_args(engine, io);
            args.extend(["--fixed-salt", SEED]);
            let out = run(ws.keyed("encrypt", &args).arg(&plain).arg(&enc));
            assert!(out.status.success(), "{cell} encrypt: {}", out.stderr);
            let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
            assert_eq!(summary["files_ok"], 9, "{cell}");
            assert_eq!(
                summary["engine"],
                engine.replace("auto", "threads"),
                "{cell}"
            );
            assert!(summary["retried"].as_array().is_some_and(|r| r.is_empty()));

            // Same key and salt: byte-identical ciphertext in every cell.
            let encrypted = snapshot(&enc);
            match &reference {
                None => reference = Some(encrypted),
                Some(first) => assert_eq!(first, &encrypted, "{cell} differs from the first cell"),
            }

            let dec = ws.path(&format!("dec-{cell}"));
            let out = run(ws
                .keyed("decrypt", &cell_args(engine, io))
                .arg(&enc)
                .arg(&dec));
            assert!(out.status.success(), "{cell} decrypt: {}", out.stderr);
            assert_eq!(snapshot(&dec), expected_plain, "{cell} round trip");

            let out = run(ws.keyed("verify", &cell_args(engine, io)).arg(&enc));
            assert!(out.status.success(), "{cell} verify: {}", out.stderr);

            // Damage: a flipped byte in a small file and deep inside the
            // split file, and a truncated segment-sized file.
            let bad = ws.path(&format!("bad-{cell}"));
            copy_tree(&enc, &bad);
            let header = cryptstream_format::HEADER_LEN_V2 as u64;
            let stride = CHUNK + 16;
            flip_byte(&bad.join("d1/f4.cst"), header + 10);
            flip_byte(&bad.join("d2/f8.cst"), header + 100 * stride + 7);
            let truncated = bad.join("d1/f7.cst");
            let len = std::fs::metadata(&truncated).expect("stat").len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&truncated)
                .and_then(|f| f.set_len(len - 1))
                .expect("truncate");
            let dec_bad = ws.path(&format!("dec-bad-{cell}"));
            let out = run(ws
                .keyed("decrypt", &cell_args(engine, io))
                .arg(&bad)
                .arg(&dec_bad));
            assert_eq!(out.status.code(), Some(1), "{cell}: {}", out.stderr);
            assert!(
                out.stderr
                    .contains("f4.cst: authentication failed at chunk 0"),
                "{cell}: {}",
                out.stderr
            );
            assert!(
                out.stderr
                    .contains("f8.cst: authentication failed at chunk 100"),
                "{cell}: {}",
                out.stderr
            );
            assert!(
                out.stderr.contains("f7.cst: file was truncated"),
                "{cell}: {}",
                out.stderr
            );
            let got = snapshot(&dec_bad);
            assert_eq!(got.len(), 6, "{cell}: only the undamaged files appear");
            for (rel, value) in &got {
                assert_eq!(expected_plain.get(rel), Some(value), "{cell}: {rel:?}");
            }
            assert!(temp_files(&dec_bad).is_empty(), "{cell}: temp files left");

            let out = run(ws.keyed("verify", &cell_args(engine, io)).arg(&bad));
            assert_eq!(
                out.status.code(),
                Some(1),
                "{cell} verify of damage: {}",
                out.stderr
            );
            let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
            assert_eq!(summary["files_failed"], 3, "{cell}");
        }
    }
}

#[test]
fn one_kib_chunks_round_trip_in_every_cell() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    for (i, size) in [1023u64, 1024, 1025, 5 * MIB + 3].iter().enumerate() {
        write_file(&plain.join(format!("f{i}")), *size, 40 + i as u64, 0o644);
    }
    let expected = snapshot(&plain);
    for engine in ENGINES {
        for io in IOS {
            let cell = format!("{engine}-{io}");
            let enc = ws.path(&format!("enc-{cell}"));
            let mut args = cell_args(engine, io);
            args.extend(["--chunk-size", "1KiB"]);
            let out = run(ws.keyed("encrypt", &args).arg(&plain).arg(&enc));
            assert!(out.status.success(), "{cell}: {}", out.stderr);
            let dec = ws.path(&format!("dec-{cell}"));
            let out = run(ws
                .keyed("decrypt", &cell_args(engine, io))
                .arg(&enc)
                .arg(&dec));
            assert!(out.status.success(), "{cell}: {}", out.stderr);
            assert_eq!(snapshot(&dec), expected, "{cell}");
        }
    }
}

#[test]
fn passphrase_runs_work_in_both_engines() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    for (i, size) in [10u64, 300_000, 9 * MIB].iter().enumerate() {
        write_file(&plain.join(format!("f{i}")), *size, 70 + i as u64, 0o600);
    }
    let kdf = ["--argon2-memory-kib", "1024", "--argon2-passes", "1"];
    for engine in ENGINES {
        let enc = ws.path(&format!("enc-{engine}"));
        let mut cmd = cryptstream();
        cmd.env("CRYPTSTREAM_PASSPHRASE", "correct horse")
            .args(["encrypt", "--engine", engine, "-j", "2"])
            .args(kdf)
            .arg(&plain)
            .arg(&enc);
        let out = run(&mut cmd);
        assert!(out.status.success(), "{engine}: {}", out.stderr);
        // Decrypt with the other engine: the format does not depend on it.
        let other = if engine == "threads" {
            "processes"
        } else {
            "threads"
        };
        let dec = ws.path(&format!("dec-{engine}"));
        let mut cmd = cryptstream();
        cmd.env("CRYPTSTREAM_PASSPHRASE", "correct horse")
            .args(["decrypt", "--engine", other, "-j", "2"])
            .arg(&enc)
            .arg(&dec);
        let out = run(&mut cmd);
        assert!(out.status.success(), "{engine}->{other}: {}", out.stderr);
        assert_eq!(snapshot(&dec), snapshot(&plain), "{engine}");
    }
}
