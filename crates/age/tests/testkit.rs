//! Runs every vector of the C2SP CCTV age test kit (tests/data/testkit)
//! through the library: successes decrypt to the payload's SHA-256, each
//! failure fails with its class.

use std::io::{BufReader, Read};
use std::path::Path;

use cryptstream_age::{open_stream, payload_error, AgeError, ArmoredReader, Identity};
use zeroize::Zeroizing;

struct Vector {
    expect: String,
    payload: Option<String>,
    identities: Vec<String>,
    passphrases: Vec<String>,
    armored: bool,
    file: Vec<u8>,
}

fn parse(bytes: &[u8]) -> Vector {
    let mut v = Vector {
        expect: String::new(),
        payload: None,
        identities: Vec::new(),
        passphrases: Vec::new(),
        armored: false,
        file: Vec::new(),
    };
    let mut at = 0;
    let mut compressed = false;
    loop {
        let end = at + bytes[at..].iter().position(|&c| c == b'\n').unwrap();
        let line = std::str::from_utf8(&bytes[at..end]).unwrap();
        at = end + 1;
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(": ").unwrap();
        match key {
            "expect" => v.expect = value.into(),
            "payload" => v.payload = Some(value.into()),
            "identity" => v.identities.push(value.into()),
            "passphrase" => v.passphrases.push(value.into()),
            "armored" => v.armored = value == "yes",
            "compressed" => {
                assert_eq!(value, "zlib");
                compressed = true;
            }
            _ => {}
        }
    }
    v.file = bytes[at..].to_vec();
    if compressed {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&bytes[at..])
            .read_to_end(&mut out)
            .unwrap();
        v.file = out;
    }
    v
}

/// Decrypts a vector: the plaintext or the error's class name.
fn run(v: &Vector) -> Result<Vec<u8>, String> {
    let mut identities = Vec::new();
    for text in &v.identities {
        identities.push(Identity::parse(text).map_err(|e| format!("bad identity: {e}"))?);
    }
    for p in &v.passphrases {
        identities.push(Identity::passphrase(Zeroizing::new(p.as_bytes().to_vec())));
    }
    let class = |e: &AgeError| e.class().map_or("other", |c| c.name()).to_string();
    let input: Box<dyn Read> = if v.armored {
        Box::new(ArmoredReader::new(&v.file[..]))
    } else {
        Box::new(&v.file[..])
    };
    let mut reader = open_stream(BufReader::new(input), &identities).map_err(|e| class(&e))?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| payload_error(&e).map_or("io".to_string(), |e| class(&e)))?;
    Ok(out)
}

fn sha256(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

#[test]
fn every_vector_of_the_kit_gives_its_expected_result() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/testkit");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect();
    names.sort();
    assert_eq!(names.len(), 143, "the whole kit is present");
    let mut wrong = Vec::new();
    for name in &names {
        let v = parse(&std::fs::read(dir.join(name)).unwrap());
        let got = run(&v);
        let ok = match (&got, v.expect.as_str()) {
            (Ok(plain), "success") => Some(sha256(plain)) == v.payload,
            (Err(class), expected) => class == expected,
            _ => false,
        };
        if !ok {
            wrong.push(format!(
                "{name}: expected {}, got {:?}",
                v.expect,
                got.map(|p| sha256(&p))
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} vectors wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
