//! `inspect` shows what a header holds, without a key: cipher, chunk size,
//! key id or Argon2id costs, plaintext size; as text or JSON.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;

/// Plaintext size of the inspected samples.
const PLAIN_LEN: u64 = 10_000;

/// Encrypts a `PLAIN_LEN`-byte file (mode 0640) with the workspace key and
/// `flags`; returns the encrypted path.
fn encrypted_sample(ws: &Workspace, name: &str, flags: &[&str]) -> PathBuf {
    let plain = ws.path(name);
    write_random_file(&plain, PLAIN_LEN, 1, 0o640);
    let encrypted = with_suffix(&plain);
    let mut encrypt = ws.keyed("encrypt");
    encrypt.args(flags);
    run_ok(encrypt, &plain, &encrypted);
    encrypted
}

/// Runs `inspect [--json] FILE`.
fn inspect(file: &Path, json: bool) -> Outcome {
    let mut cmd = cryptstream();
    cmd.arg("inspect");
    if json {
        cmd.arg("--json");
    }
    run(cmd.arg(file))
}

/// The value after `label:` on its line of `text`.
#[track_caller]
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
        .trim()
}

#[test]
fn inspect_prints_cipher_chunk_size_key_id_and_plaintext_size() {
    let ws = Workspace::new();
    for (cipher, chunk, chunk_bytes) in [
        ("aes-256-gcm", "4KiB", 4096),
        ("chacha20-poly1305", "1MiB", 1 << 20),
    ] {
        let file = encrypted_sample(&ws, cipher, &["--cipher", cipher, "--chunk-size", chunk]);
        let text = inspect(&file, false).success().stdout_text();
        assert_eq!(field(&text, "cipher"), cipher);
        assert_eq!(field(&text, "chunk size"), format!("{chunk_bytes} bytes"));
        assert_eq!(field(&text, "key"), format!("key file, id {}", ws.key_id()));
        assert_eq!(field(&text, "plaintext size"), format!("{PLAIN_LEN} bytes"));
        assert_eq!(field(&text, "mode"), "0640");
        let chunks = PLAIN_LEN.div_ceil(chunk_bytes);
        assert_eq!(field(&text, "chunks"), chunks.to_string());
    }
}

#[test]
fn inspect_prints_the_argon2id_costs_of_a_passphrase_file() {
    let ws = Workspace::new();
    let plain = ws.path("plain");
    write_random_file(&plain, PLAIN_LEN, 2, 0o600);
    let encrypted = ws.path("plain.cst");
    let mut encrypt = ws.bare("encrypt");
    encrypt.env(PASSPHRASE_ENV, "secret").args([
        "--argon2-memory-kib",
        "2048",
        "--argon2-passes",
        "2",
    ]);
    run_ok(encrypt, &plain, &encrypted);
    let text = inspect(&encrypted, false).success().stdout_text();
    let key = field(&text, "key");
    assert!(key.contains("Argon2id"), "{key}");
    assert!(key.contains("memory 2048 KiB"), "{key}");
    assert!(key.contains("2 passes"), "{key}");
    let json = inspect(&encrypted, true).success().json();
    assert_eq!(json["key"], "passphrase");
    assert_eq!(json["key_id"], serde_json::Value::Null);
    assert_eq!(json["kdf"]["algorithm"], "argon2id");
    assert_eq!(json["kdf"]["m_kib"], 2048);
    assert_eq!(json["kdf"]["t"], 2);
}

#[test]
fn inspect_json_parses_and_matches_the_header() {
    let ws = Workspace::new();
    let file = encrypted_sample(
        &ws,
        "sample",
        &["--cipher", "chacha20-poly1305", "--chunk-size", "1KiB"],
    );
    let json = inspect(&file, true).success().json();
    assert_eq!(json["cipher"], "chacha20-poly1305");
    assert_eq!(json["chunk_size"], 1024);
    assert_eq!(json["key"], "key-file");
    assert_eq!(json["key_id"], ws.key_id());
    assert_eq!(json["plaintext_len"], PLAIN_LEN);
    assert_eq!(json["mode"], "0640");
    assert_eq!(json["chunks"], PLAIN_LEN.div_ceil(1024));
    assert_eq!(json["file_len"], fs::metadata(&file).unwrap().len());
    assert_eq!(json["version"], 2);
}

#[test]
fn inspect_needs_no_key_and_shows_the_key_id_keygen_printed() {
    let ws = Workspace::new();
    let other_key = ws.path("other-key");
    let other_id = keygen(&other_key);
    assert_ne!(other_id, ws.key_id(), "two keys, two ids");
    let plain = ws.path("plain");
    write_random_file(&plain, 100, 3, 0o644);
    let encrypted = ws.path("plain.cst");
    let mut encrypt = ws.bare("encrypt");
    encrypt.arg("-k").arg(&other_key);
    run_ok(encrypt, &plain, &encrypted);
    let json = inspect(&encrypted, true).success().json();
    assert_eq!(json["key_id"], other_id.as_str());
}

#[test]
fn inspect_of_a_stream_reports_the_size_from_the_file_length() {
    let ws = Workspace::new();
    let encrypted = ws.path("stream.cst");
    let mut encrypt = ws.keyed("encrypt");
    encrypt.args(["--chunk-size", "1KiB", "-"]).arg(&encrypted);
    run_with_stdin(&mut encrypt, Some(random_bytes(5000, 4))).success();
    let text = inspect(&encrypted, false).success().stdout_text();
    let size = field(&text, "plaintext size");
    assert!(size.contains("not recorded"), "{size}");
    assert!(size.contains("5000 bytes"), "{size}");
    let json = inspect(&encrypted, true).success().json();
    assert_eq!(json["plaintext_len"], serde_json::Value::Null);
    assert_eq!(json["chunks"], 5);
}

#[test]
fn inspect_notes_a_length_that_does_not_match_the_header() {
    let ws = Workspace::new();
    let file = encrypted_sample(&ws, "sample", &["--chunk-size", "1KiB"]);
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() - 1040]).unwrap();
    let text = inspect(&file, false).success().stdout_text();
    assert!(
        field(&text, "plaintext size").contains("does not match"),
        "{text}"
    );
}

#[test]
fn inspect_rejects_a_file_that_is_not_cryptstream() {
    let ws = Workspace::new();
    let file = ws.path("random.cst");
    fs::write(&file, random_bytes(500, 5)).unwrap();
    for json in [false, true] {
        inspect(&file, json)
            .failure()
            .names(&file)
            .stderr_has("not a cryptstream file");
    }
    // A key file is not an encrypted file either.
    inspect(ws.key(), false)
        .failure()
        .stderr_has("not a cryptstream file");
}

#[test]
fn inspect_json_works_for_a_file_name_that_is_not_utf8() {
    let ws = Workspace::new();
    let plain = ws.path(std::ffi::OsStr::from_bytes(b"name-\xff"));
    write_random_file(&plain, 100, 6, 0o644);
    let encrypted = with_suffix(&plain);
    run_ok(ws.keyed("encrypt"), &plain, &encrypted);
    let json = inspect(&encrypted, true).success().json();
    assert_eq!(json["plaintext_len"], 100);
}
