//! A real tree comes back exactly: symbolic links (relative, absolute,
//! dangling, to directories), hard links, empty and private directories,
//! modes and nanosecond mtimes, in both engines; files of format version 1
//! still decrypt; the CLI reproduces the independent Python vectors byte for
//! byte in every engine x I/O cell.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

#[test]
fn a_real_tree_round_trips_exactly_in_both_engines() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    std::fs::create_dir(&plain).expect("mkdir");
    real_tree(&plain);
    let expected = metadata_of(&plain);
    for engine in ["threads", "processes"] {
        let enc = ws.path(format!("enc-{engine}"));
        let dec = ws.path(format!("dec-{engine}"));
        run(ws
            .keyed("encrypt")
            .args(["--engine", engine, "-j", "2"])
            .arg(&plain)
            .arg(&enc))
        .success();
        // Names stay visible, contents and link targets do not.
        assert!(std::fs::symlink_metadata(enc.join("link-relative.cst"))
            .expect("a link entry")
            .is_file());
        let raw = std::fs::read(enc.join("link-absolute.cst")).expect("read");
        assert!(!raw.windows(8).any(|w| w == b"hostname"), "target in clear");
        run(ws
            .keyed("decrypt")
            .args(["--engine", engine, "-j", "2"])
            .arg(&enc)
            .arg(&dec))
        .success();
        let got = metadata_of(&dec);
        let mut problems = Vec::new();
        for (rel, want) in &expected {
            match got.get(rel) {
                Some(have) if have == want => {}
                other => problems.push(format!("{rel:?}: want {want:?}, got {other:?}")),
            }
        }
        for rel in got.keys().filter(|r| !expected.contains_key(*r)) {
            problems.push(format!("unexpected {rel:?}"));
        }
        assert!(problems.is_empty(), "{engine}:\n{}", problems.join("\n"));
        let diff = std::process::Command::new("diff")
            .args(["-r", "--no-dereference"])
            .arg(&plain)
            .arg(&dec)
            .output()
            .expect("diff runs");
        assert!(
            diff.status.success(),
            "{engine}: {}",
            String::from_utf8_lossy(&diff.stdout)
        );
    }
}

/// The vectors written by the independent Python implementation.
fn vectors() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../format/tests/data/vectors.json");
    let text = std::fs::read_to_string(path).expect("vectors.json");
    let all: serde_json::Value = serde_json::from_str(&text).expect("json");
    all["vectors"].as_array().expect("a list").clone()
}

fn field<'a>(vector: &'a serde_json::Value, name: &str) -> &'a str {
    vector[name].as_str().unwrap_or_default()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Writes the key-file text of a vector's key.
fn key_file(ws: &Workspace, vector: &serde_json::Value) -> PathBuf {
    let path = ws.path("vector.key");
    std::fs::write(
        &path,
        format!("cryptstream-key-v1:{}\n", field(vector, "key")),
    )
    .expect("key");
    path
}

#[test]
fn files_of_format_version_1_still_decrypt() {
    let mut checked = 0;
    for vector in vectors() {
        if vector["version"].as_u64() != Some(1) || vector.get("key").is_none() {
            continue;
        }
        let ws = Workspace::new();
        let key = key_file(&ws, &vector);
        let input = ws.path("v1.cst");
        std::fs::write(&input, unhex(field(&vector, "ciphertext"))).expect("write");
        let out = ws.path("v1");
        run(ws.bare("decrypt").arg("-k").arg(&key).arg(&input).arg(&out)).success();
        assert_eq!(
            std::fs::read(&out).expect("read"),
            unhex(field(&vector, "plaintext")),
            "{}",
            field(&vector, "name")
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} version-1 vectors");
}

/// The plaintext of the large vector: byte i = (i * 31 + 7) % 251.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

#[test]
fn the_cli_reproduces_the_independent_vectors_in_every_cell() {
    let mut checked = 0;
    for vector in vectors() {
        let is_file = field(&vector, "kind") == "file";
        let has_mtime = vector["mtime_nanos"].is_number();
        if vector["version"].as_u64() != Some(2)
            || !is_file
            || !has_mtime
            || vector.get("key").is_none()
        {
            continue;
        }
        let ws = Workspace::new();
        let key = key_file(&ws, &vector);
        let plain = match vector.get("plaintext") {
            Some(hex) => unhex(hex.as_str().expect("hex")),
            None => pattern(vector["plaintext_len"].as_u64().expect("length") as usize),
        };
        let input = ws.path("plain");
        std::fs::write(&input, &plain).expect("write");
        let mode: u32 = vector["mode"].as_u64().expect("mode") as u32;
        std::fs::set_permissions(&input, std::fs::Permissions::from_mode(mode)).expect("chmod");
        set_mtime(
            &input,
            vector["mtime_seconds"].as_i64().expect("seconds"),
            vector["mtime_nanos"].as_i64().expect("nanos"),
        );
        for engine in ["threads", "processes"] {
            for io in ["read", "pread", "mmap"] {
                let out = ws.path(format!("out-{engine}-{io}.cst"));
                run(ws
                    .bare("encrypt")
                    .arg("-k")
                    .arg(&key)
                    .args(["--engine", engine, "--io", io, "--cipher"])
                    .arg(field(&vector, "cipher"))
                    .arg("--chunk-size")
                    .arg(vector["chunk_size"].as_u64().expect("chunk").to_string())
                    .arg("--fixed-salt")
                    .arg(field(&vector, "salt"))
                    .arg(&input)
                    .arg(&out))
                .success();
                let bytes = std::fs::read(&out).expect("read");
                let cell = format!("{} in {engine}/{io}", field(&vector, "name"));
                match vector.get("ciphertext") {
                    Some(hex) => assert!(bytes == unhex(hex.as_str().expect("hex")), "{cell}"),
                    None => {
                        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                        let hex: String =
                            digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                        assert_eq!(hex, field(&vector, "ciphertext_sha256"), "{cell}");
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} vectors reproduced");
}

#[test]
fn a_hard_link_entry_decrypted_alone_is_refused_with_its_reason() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    Tree::new(&plain).file("first", 100, 0o644);
    std::fs::hard_link(plain.join("first"), plain.join("second")).expect("link");
    run(ws.keyed("encrypt").arg(&plain).arg(ws.path("enc"))).success();
    let out = ws.path("alone");
    run(ws.keyed("decrypt").arg(ws.path("enc/second.cst")).arg(&out))
        .failure()
        .stderr_has("decrypt the directory it belongs to");
    assert!(std::fs::symlink_metadata(&out).is_err());
}

#[test]
fn sigterm_stops_a_stream_and_leaves_no_output() {
    use std::io::Write;
    let ws = Workspace::new();
    let out = ws.path("stream.cst");
    let mut cmd = ws.keyed("encrypt");
    cmd.arg("-")
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&vec![1u8; 1 << 20]).expect("write");
    // The process has read the first MiB (the pipe took it): signal it,
    // then give it more input so that its next read sees the stop.
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = stdin.write_all(&vec![2u8; 1 << 20]);
    drop(stdin);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert!(std::fs::symlink_metadata(&out).is_err());
    let leftovers: Vec<_> = list_dir(ws.root())
        .into_iter()
        .filter(|n| n.to_string_lossy().contains("cst-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
