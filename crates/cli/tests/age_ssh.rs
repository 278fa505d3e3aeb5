//! SSH keys (`ssh-ed25519`, `ssh-rsa`) as age recipients and identities,
//! both ways with the real `age`: what cryptstream encrypts to an SSH public
//! key opens with `age -d -i KEY`, and what `age -r "ssh-..."` writes opens
//! with `cryptstream decrypt -i KEY`. The key pairs are made here with
//! aws-lc and written in the OpenSSH formats, so the test needs no
//! `ssh-keygen`; `age` parsing the files is the check that they are right.

use std::fs;
use std::path::Path;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

mod age_support;
mod common;
use age_support::{age, age_decrypts_to};
use common::{run, Workspace, EXIT_FAILURE};

/// `age -e -r RECIPIENT -o OUTPUT INPUT`, which must succeed.
fn age_encrypt(recipient: &str, input: &Path, output: &Path) {
    let out = age()
        .args(["-e", "-r", recipient, "-o"])
        .arg(output)
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -e: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Standard base64 with padding, as OpenSSH writes it.
fn base64(data: &[u8]) -> String {
    let mut text = cryptstream_age::b64_encode(data);
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Writes an unencrypted OpenSSH private key file `dir/NAME` with the public
/// blob `blob` and the private fields `fields` (after the key type), and
/// `dir/NAME.pub`; returns the public key line.
fn write_openssh(
    dir: &Path,
    name: &str,
    key_type: &str,
    blob: &[u8],
    fields: &[Vec<u8>],
) -> String {
    let mut private = Vec::new();
    private.extend_from_slice(&0x5eed_5eedu32.to_be_bytes());
    private.extend_from_slice(&0x5eed_5eedu32.to_be_bytes());
    put_string(&mut private, key_type.as_bytes());
    for field in fields {
        put_string(&mut private, field);
    }
    put_string(&mut private, b"test@cryptstream");
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut key = b"openssh-key-v1\0".to_vec();
    put_string(&mut key, b"none");
    put_string(&mut key, b"none");
    put_string(&mut key, b"");
    key.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut key, blob);
    put_string(&mut key, &private);
    let encoded = base64(&key);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    fs::write(dir.join(name), pem).unwrap();
    let line = format!("{key_type} {} test@cryptstream", base64(blob));
    fs::write(dir.join(format!("{name}.pub")), format!("{line}\n")).unwrap();
    line
}

/// Writes an OpenSSH Ed25519 key pair made from `seed` as
/// `dir/id_ed25519` and returns the public key line.
fn write_ssh_key(dir: &Path, seed: [u8; 32]) -> String {
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("an Ed25519 seed");
    let public = pair.public_key().as_ref().to_vec();
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, &public);
    let mut pair_bytes = seed.to_vec();
    pair_bytes.extend_from_slice(&public);
    write_openssh(
        dir,
        "id_ed25519",
        "ssh-ed25519",
        &blob,
        &[public, pair_bytes],
    )
}

/// Reads one DER element at the front of `input`: (tag, content).
fn der_take<'a>(input: &mut &'a [u8]) -> (u8, &'a [u8]) {
    let tag = input[0];
    let (len, head) = match input[1] {
        short if short < 0x80 => (usize::from(short), 2),
        long => {
            let n = usize::from(long & 0x7f);
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            (len, 2 + n)
        }
    };
    let content = &input[head..head + len];
    *input = &input[head + len..];
    (tag, content)
}

/// An SSH mpint body of a DER INTEGER's content (already two's complement).
fn mpint(der_integer: &[u8]) -> Vec<u8> {
    let start = der_integer
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(der_integer.len());
    let mut out = der_integer[start..].to_vec();
    if out.first().is_some_and(|b| b & 0x80 != 0) {
        out.insert(0, 0);
    }
    out
}

/// Writes a new 2048-bit RSA key pair (made by aws-lc) as `dir/id_rsa`
/// and returns the public key line.
fn write_rsa_key(dir: &Path) -> String {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("an RSA key");
    let pkcs8 = key.as_der().expect("PKCS#8");
    // PrivateKeyInfo { version, algorithm, OCTET STRING { RSAPrivateKey } }
    let mut outer = pkcs8.as_ref();
    let (_, mut info) = der_take(&mut outer);
    der_take(&mut info);
    der_take(&mut info);
    let (_, mut rsa) = der_take(&mut info);
    let (_, mut fields) = der_take(&mut rsa);
    let mut values = Vec::new();
    while !fields.is_empty() {
        values.push(mpint(der_take(&mut fields).1));
    }
    // version, n, e, d, p, q, dP, dQ, qInv
    let (n, e, d, p, q, q_inv) = (
        &values[1], &values[2], &values[3], &values[4], &values[5], &values[8],
    );
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-rsa");
    put_string(&mut blob, e);
    put_string(&mut blob, n);
    let fields = [n, e, d, q_inv, p, q].map(|v| v.clone());
    write_openssh(dir, "id_rsa", "ssh-rsa", &blob, &fields)
}

#[test]
fn cryptstream_encrypts_to_an_ssh_key_and_age_decrypts_it() {
    let ws = Workspace::new();
    let recipient = write_ssh_key(ws.root(), [3; 32]);
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(ws.path("f"), &plain).unwrap();
    let outcome = run(ws.bare("encrypt").args(["-r", &recipient, "f", "f.age"]));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    // And through a recipients file (-R), as age -R reads .pub files.
    let outcome = run(ws
        .bare("encrypt")
        .args(["-R", "id_ed25519.pub", "f", "g.age"]));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    for file in ["f.age", "g.age"] {
        age_decrypts_to(&ws.path("id_ed25519"), &ws.path(file), &plain);
    }
}

#[test]
fn age_encrypts_to_an_ssh_key_and_cryptstream_decrypts_it() {
    let ws = Workspace::new();
    let recipient = write_ssh_key(ws.root(), [9; 32]);
    let plain = b"to an ssh key\n".repeat(5000);
    fs::write(ws.path("f"), &plain).unwrap();
    age_encrypt(&recipient, &ws.path("f"), &ws.path("f.age"));
    let outcome = run(ws
        .bare("decrypt")
        .args(["-i", "id_ed25519", "f.age", "-o", "out"]));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(fs::read(ws.path("out")).unwrap() == plain);
    // The key's recipient, as keygen prints it, is the .pub line.
    let outcome = run(ws.bare("keygen").args(["--age-recipient", "id_ed25519"]));
    assert_eq!(
        outcome.stdout_text(),
        format!("{}\n", recipient.trim_end_matches(" test@cryptstream"))
    );
    // Another SSH key finds no stanza of its own.
    fs::create_dir(ws.path("other")).unwrap();
    write_ssh_key(&ws.path("other"), [10; 32]);
    let outcome = run(ws
        .bare("decrypt")
        .args(["-i", "other/id_ed25519", "f.age", "-o", "out2"]));
    assert_eq!(outcome.code(), Some(EXIT_FAILURE), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("no identity matches any recipient of the file"),
        "{}",
        outcome.stderr
    );
    assert!(!ws.path("out2").exists());
}

#[test]
fn ssh_rsa_keys_go_both_ways_with_age() {
    let ws = Workspace::new();
    let recipient = write_rsa_key(ws.root());
    let plain = b"to an RSA key\n".repeat(3000);
    fs::write(ws.path("f"), &plain).unwrap();
    // cryptstream to age.
    let outcome = run(ws.bare("encrypt").args(["-R", "id_rsa.pub", "f", "f.age"]));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    age_decrypts_to(&ws.path("id_rsa"), &ws.path("f.age"), &plain);
    // age to cryptstream.
    age_encrypt(&recipient, &ws.path("f"), &ws.path("g.age"));
    let outcome = run(ws
        .bare("decrypt")
        .args(["-i", "id_rsa", "g.age", "-o", "out"]));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(fs::read(ws.path("out")).unwrap() == plain);
}

#[test]
fn a_malformed_ssh_key_is_refused_with_one_line() {
    let ws = Workspace::new();
    fs::write(ws.path("f"), b"x").unwrap();
    let outcome = run(ws.bare("encrypt").args([
        "-r",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== someone",
        "f",
        "f.age",
    ]));
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(
        lines,
        ["cryptstream: not a usable ssh-rsa public key (2048 to 8192 bits are accepted)"]
    );
    assert_eq!(outcome.code(), Some(EXIT_FAILURE));
    assert!(!ws.path("f.age").exists());
}
