//! Checks the implementation against the test vectors in `data/vectors.json`,
//! which `data/make_vectors.py` computes with an independent Python
//! implementation of docs/FORMAT.md.

use cryptstream_format::{
    seal_header, Cipher, Header, HeaderParams, KdfParams, Keyring, Layout, MasterKey, Passphrase,
    TAG_LEN,
};
use serde_json::Value;

fn bytes(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing")),
    )
    .unwrap()
}

fn vectors() -> Vec<Value> {
    let text = include_str!("data/vectors.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

fn master_key(v: &Value) -> MasterKey {
    if v.get("key").is_some() {
        let key: [u8; 32] = bytes(v, "key").try_into().unwrap();
        MasterKey::from_key_bytes(key)
    } else {
        let salt: [u8; 16] = bytes(v, "argon2_salt").try_into().unwrap();
        let p = &v["argon2"];
        let params = KdfParams {
            m_kib: p["m_kib"].as_u64().unwrap() as u32,
            t: p["t"].as_u64().unwrap() as u32,
            p: p["p"].as_u64().unwrap() as u32,
        };
        let phrase = Passphrase::new(v["passphrase"].as_str().unwrap().as_bytes().to_vec());
        MasterKey::from_passphrase(&phrase, salt, params).unwrap()
    }
}

fn keyring(v: &Value) -> Keyring {
    match v.get("key") {
        Some(_) => Keyring::new(vec![master_key(v)], None),
        None => Keyring::new(
            Vec::new(),
            Some(Passphrase::new(
                v["passphrase"].as_str().unwrap().as_bytes().to_vec(),
            )),
        ),
    }
}

fn cipher(name: &str) -> Cipher {
    match name {
        "aes-256-gcm" => Cipher::Aes256Gcm,
        "chacha20-poly1305" => Cipher::ChaCha20Poly1305,
        other => panic!("unknown cipher {other}"),
    }
}

/// Seals `plaintext` the way the engine does: header, then chunks laid out
/// with room for each tag, sealed in place.
fn seal_file(key: &MasterKey, params: &HeaderParams, salt: [u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let (header, chunk_cipher) = seal_header(key, params, salt).unwrap();
    let layout = Layout::new(params.chunk_size, plaintext.len() as u64);
    let mut body = vec![0u8; layout.span_len(0, layout.chunk_count())];
    let mut at = 0;
    for i in 0..layout.chunk_count() {
        let len = layout.chunk_plaintext_len(i);
        let from = layout.plaintext_offset(i) as usize;
        body[at..at + len].copy_from_slice(&plaintext[from..from + len]);
        at += len + TAG_LEN;
    }
    chunk_cipher.seal_span(&layout, 0, &mut body);
    let mut file = header.as_bytes().to_vec();
    file.extend_from_slice(&body);
    file
}

#[test]
fn encryption_reproduces_every_vector() {
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let key = master_key(&v);
        if let Some(id) = v.get("key_id") {
            assert_eq!(
                key.key_id().unwrap().to_string(),
                id.as_str().unwrap(),
                "{name}: key id"
            );
        }
        let plaintext = bytes(&v, "plaintext");
        let params = HeaderParams {
            cipher: cipher(v["cipher"].as_str().unwrap()),
            chunk_size: v["chunk_size"].as_u64().unwrap() as u32,
            plaintext_len: v["length_in_header"]
                .as_bool()
                .unwrap()
                .then_some(plaintext.len() as u64),
            mode: v["mode"].as_u64().unwrap() as u32,
        };
        let salt: [u8; 32] = bytes(&v, "salt").try_into().unwrap();
        let file = seal_file(&key, &params, salt, &plaintext);
        assert_eq!(
            hex::encode(&file),
            v["ciphertext"].as_str().unwrap(),
            "{name}: ciphertext"
        );
    }
}

#[test]
fn decryption_recovers_every_vector() {
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let mut file = bytes(&v, "ciphertext");
        let header = Header::parse(&file).unwrap();
        assert_eq!(
            header.mode,
            v["mode"].as_u64().unwrap() as u32,
            "{name}: mode"
        );
        let chunk_cipher = keyring(&v).unlock(&header).unwrap();
        let layout = Layout::from_ciphertext_len(header.chunk_size, file.len() as u64).unwrap();
        let body = &mut file[cryptstream_format::HEADER_LEN..];
        chunk_cipher.open_span(&layout, 0, body).unwrap();
        let mut plaintext = Vec::new();
        let mut at = 0;
        for i in 0..layout.chunk_count() {
            let len = layout.chunk_plaintext_len(i);
            plaintext.extend_from_slice(&body[at..at + len]);
            at += len + TAG_LEN;
        }
        assert_eq!(plaintext, bytes(&v, "plaintext"), "{name}: plaintext");
    }
}

#[test]
fn a_flipped_bit_in_any_vector_byte_is_rejected() {
    let v = &vectors()[2];
    let original = bytes(v, "ciphertext");
    let ring = keyring(v);
    for at in 0..original.len() {
        let mut file = original.clone();
        file[at] ^= 0x01;
        let opened = Header::parse(&file).and_then(|header| {
            let chunk_cipher = ring.unlock(&header)?;
            let layout = Layout::from_ciphertext_len(header.chunk_size, file.len() as u64)?;
            chunk_cipher.open_span(&layout, 0, &mut file[cryptstream_format::HEADER_LEN..])
        });
        assert!(opened.is_err(), "flip at byte {at} was not detected");
    }
}
