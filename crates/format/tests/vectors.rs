//! Checks the implementation against the test vectors in `data/vectors.json`,
//! which `data/make_vectors.py` computes with an independent Python
//! implementation of docs/FORMAT.md.

use std::io::Read;

use aws_lc_rs::digest;
use cryptstream_format::{
    seal_header, Cipher, EntryKind, FormatError, Header, HeaderParams, KdfParams, KeySource,
    Keyring, Layout, MasterKey, Mtime, OpeningReader, Passphrase, SealingWriter, TAG_LEN,
};
use serde_json::Value;

/// The pattern the large vector's plaintext follows (it is not stored).
const LARGE_PATTERN: &str = "byte i = (i*31 + 7) % 251";

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

/// The vectors stored with their bytes (all but the large one).
fn small_vectors() -> Vec<Value> {
    vectors()
        .into_iter()
        .filter(|v| v.get("ciphertext").is_some())
        .collect()
}

fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap()
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing"))
}

fn master_key(v: &Value) -> MasterKey {
    if v.get("key").is_some() {
        let key: [u8; 32] = bytes(v, "key").try_into().unwrap();
        MasterKey::from_key_bytes(key)
    } else {
        let salt: [u8; 16] = bytes(v, "argon2_salt").try_into().unwrap();
        let p = &v["argon2"];
        let params = KdfParams {
            m_kib: num(p, "m_kib") as u32,
            t: num(p, "t") as u32,
            p: num(p, "p") as u32,
        };
        MasterKey::from_passphrase(&passphrase(v), salt, params).unwrap()
    }
}

fn passphrase(v: &Value) -> Passphrase {
    Passphrase::new(v["passphrase"].as_str().unwrap().as_bytes().to_vec())
}

fn keyring(v: &Value) -> Keyring {
    match v.get("key") {
        Some(_) => Keyring::new(vec![master_key(v)], None),
        None => Keyring::new(Vec::new(), Some(passphrase(v))),
    }
}

fn cipher(name: &str) -> Cipher {
    match name {
        "aes-256-gcm" => Cipher::Aes256Gcm,
        "chacha20-poly1305" => Cipher::ChaCha20Poly1305,
        other => panic!("unknown cipher {other}"),
    }
}

fn kind(v: &Value) -> EntryKind {
    match v.get("kind").and_then(Value::as_str) {
        None | Some("file") => EntryKind::File,
        Some("symlink") => EntryKind::Symlink,
        Some("hard link") => EntryKind::HardLink,
        Some(other) => panic!("unknown kind {other}"),
    }
}

fn mtime(v: &Value) -> Option<Mtime> {
    let seconds = v.get("mtime_seconds")?.as_i64()?;
    Some(Mtime {
        seconds,
        nanos: num(v, "mtime_nanos") as u32,
    })
}

fn plaintext(v: &Value) -> Vec<u8> {
    if v.get("plaintext").is_some() {
        return bytes(v, "plaintext");
    }
    assert_eq!(v["plaintext_pattern"].as_str(), Some(LARGE_PATTERN));
    (0..num(v, "plaintext_len"))
        .map(|i| ((i * 31 + 7) % 251) as u8)
        .collect()
}

fn salt(v: &Value) -> [u8; 32] {
    bytes(v, "salt").try_into().unwrap()
}

/// The header fields a vector describes.
fn params(v: &Value, plaintext_len: u64) -> HeaderParams {
    HeaderParams {
        cipher: cipher(v["cipher"].as_str().unwrap()),
        chunk_size: num(v, "chunk_size") as u32,
        plaintext_len: v["length_in_header"]
            .as_bool()
            .unwrap()
            .then_some(plaintext_len),
        mode: num(v, "mode") as u32,
        kind: kind(v),
        mtime: mtime(v),
    }
}

/// The chunks of `plaintext` laid out as in a file, each followed by room
/// for its tag.
fn lay_out(layout: &Layout, plaintext: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8; layout.span_len(0, layout.chunk_count())];
    let mut at = 0;
    for i in 0..layout.chunk_count() {
        let len = layout.chunk_plaintext_len(i);
        let from = layout.plaintext_offset(i) as usize;
        body[at..at + len].copy_from_slice(&plaintext[from..from + len]);
        at += len + TAG_LEN;
    }
    body
}

/// Seals `plaintext` the way the engine does: header, then chunks laid out
/// with room for each tag, sealed in place.
fn seal_file(key: &MasterKey, params: &HeaderParams, salt: [u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let (header, chunk_cipher) = seal_header(key, params, salt).unwrap();
    let layout = header.layout(plaintext.len() as u64).unwrap();
    let mut body = lay_out(&layout, plaintext);
    chunk_cipher.seal_span(&layout, 0, &mut body);
    let mut file = header.as_bytes().to_vec();
    file.extend_from_slice(&body);
    file
}

/// Decrypts a whole file with an already derived key: parse the header,
/// authenticate it, check the file length (against the stated length too)
/// and open every chunk.
fn decrypt(key: &MasterKey, file: &[u8]) -> Result<Vec<u8>, FormatError> {
    let header = Header::parse(file)?;
    if header.key_source != *key.source() {
        // What Keyring::unlock would refuse (or derive a different key for).
        return Err(FormatError::HeaderModified);
    }
    let chunk_cipher = header.authenticate(key)?;
    let layout = Layout::from_ciphertext_len(header.len(), header.chunk_size, file.len() as u64)?;
    if let Some(stated) = header.plaintext_len {
        let expected = header.layout(stated)?.ciphertext_len();
        if expected != layout.ciphertext_len() {
            return Err(FormatError::LengthMismatch {
                expected,
                actual: file.len() as u64,
            });
        }
    }
    let mut body = file[header.len()..].to_vec();
    chunk_cipher.open_span(&layout, 0, &mut body)?;
    let mut plaintext = Vec::with_capacity(layout.plaintext_len() as usize);
    let mut at = 0;
    for i in 0..layout.chunk_count() {
        let len = layout.chunk_plaintext_len(i);
        plaintext.extend_from_slice(&body[at..at + len]);
        at += len + TAG_LEN;
    }
    Ok(plaintext)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

#[test]
fn encryption_reproduces_every_version_2_vector() {
    let mut checked = 0;
    for v in vectors().iter().filter(|v| num(v, "version") == 2) {
        let key = master_key(v);
        if let Some(id) = v.get("key_id") {
            assert_eq!(
                key.key_id().unwrap().to_string(),
                id.as_str().unwrap(),
                "{}: key id",
                name(v)
            );
        }
        let plaintext = plaintext(v);
        let file = seal_file(
            &key,
            &params(v, plaintext.len() as u64),
            salt(v),
            &plaintext,
        );
        if v.get("ciphertext").is_some() {
            assert_eq!(
                hex::encode(&file),
                v["ciphertext"].as_str().unwrap(),
                "{}: ciphertext",
                name(v)
            );
        } else {
            assert_eq!(file.len() as u64, num(v, "ciphertext_len"));
            assert_eq!(
                sha256_hex(&file),
                v["ciphertext_sha256"].as_str().unwrap(),
                "{}: ciphertext digest",
                name(v)
            );
            assert_eq!(decrypt(&key, &file).unwrap(), plaintext);
        }
        checked += 1;
    }
    assert_eq!(checked, 8);
}

#[test]
fn chunks_of_every_version_1_vector_are_reproduced() {
    // seal_header writes version 2 only; the chunks of a version 1 file are
    // reproduced with the cipher its own header authenticates to.
    let mut checked = 0;
    for v in vectors().iter().filter(|v| num(v, "version") == 1) {
        let file = bytes(v, "ciphertext");
        let header = Header::parse(&file).unwrap();
        assert_eq!(header.len(), cryptstream_format::HEADER_LEN_V1);
        let chunk_cipher = header.authenticate(&master_key(v)).unwrap();
        let plaintext = plaintext(v);
        let layout = header.layout(plaintext.len() as u64).unwrap();
        let mut body = lay_out(&layout, &plaintext);
        chunk_cipher.seal_span(&layout, 0, &mut body);
        assert_eq!(body, file[header.len()..], "{}: chunks", name(v));
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn decryption_recovers_every_vector() {
    for v in small_vectors() {
        let name = name(&v);
        let file = bytes(&v, "ciphertext");
        let plaintext = plaintext(&v);
        let header = Header::parse(&file).unwrap();
        assert_eq!(u64::from(header.version), num(&v, "version"), "{name}");
        assert_eq!(header.len(), Header::encoded_len(&file).unwrap(), "{name}");
        assert_eq!(header.as_bytes(), &file[..header.len()], "{name}");
        assert_eq!(
            header.params(),
            params(&v, plaintext.len() as u64),
            "{name}"
        );
        // The real path: the keyring finds (or stretches) the key.
        let chunk_cipher = keyring(&v).unlock(&header).unwrap();
        let layout =
            Layout::from_ciphertext_len(header.len(), header.chunk_size, file.len() as u64)
                .unwrap();
        let mut body = file[header.len()..].to_vec();
        chunk_cipher.open_span(&layout, 0, &mut body).unwrap();
        assert_eq!(
            decrypt(&master_key(&v), &file).unwrap(),
            plaintext,
            "{name}"
        );
    }
}

#[test]
fn opening_reader_recovers_every_vector() {
    for v in vectors() {
        let key = master_key(&v);
        let plaintext = plaintext(&v);
        let file = match v.get("ciphertext") {
            Some(_) => bytes(&v, "ciphertext"),
            None => seal_file(
                &key,
                &params(&v, plaintext.len() as u64),
                salt(&v),
                &plaintext,
            ),
        };
        let header = Header::parse(&file).unwrap();
        let chunk_cipher = header.authenticate(&key).unwrap();
        let mut reader =
            OpeningReader::new(&file[header.len()..], chunk_cipher, header.plaintext_len);
        let mut out = Vec::new();
        let mut piece = [0u8; 777];
        loop {
            let n = reader.read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&piece[..n]);
        }
        assert!(out == plaintext, "{}: plaintext", name(&v));
        assert_eq!(reader.plaintext_len(), plaintext.len() as u64);
    }
}

#[test]
fn sealing_writer_reproduces_every_version_2_vector() {
    for v in vectors().iter().filter(|v| num(v, "version") == 2) {
        let key = master_key(v);
        let plaintext = plaintext(v);
        let (header, chunk_cipher) =
            seal_header(&key, &params(v, plaintext.len() as u64), salt(v)).unwrap();
        let mut writer = SealingWriter::new(header.as_bytes().to_vec(), chunk_cipher);
        for piece in plaintext.chunks(1001) {
            std::io::Write::write_all(&mut writer, piece).unwrap();
        }
        let (file, written) = writer.finish().unwrap();
        assert_eq!(written, plaintext.len() as u64);
        match v.get("ciphertext") {
            Some(c) => assert_eq!(hex::encode(&file), c.as_str().unwrap(), "{}", name(v)),
            None => assert_eq!(sha256_hex(&file), v["ciphertext_sha256"].as_str().unwrap()),
        }
    }
}

/// Cuts a file's body into its chunks (with tags).
fn chunks_of(file: &[u8]) -> (usize, Vec<Vec<u8>>) {
    let header = Header::parse(file).unwrap();
    let layout =
        Layout::from_ciphertext_len(header.len(), header.chunk_size, file.len() as u64).unwrap();
    let mut at = header.len();
    let mut chunks = Vec::new();
    for i in 0..layout.chunk_count() {
        let len = layout.chunk_plaintext_len(i) + TAG_LEN;
        chunks.push(file[at..at + len].to_vec());
        at += len;
    }
    (header.len(), chunks)
}

#[test]
fn every_bit_flip_cut_and_chunk_swap_is_rejected() {
    for v in small_vectors() {
        let name = name(&v);
        let key = master_key(&v);
        let original = bytes(&v, "ciphertext");
        assert!(decrypt(&key, &original).is_ok(), "{name}: untampered");
        for at in 0..original.len() {
            for bit in 0..8 {
                let mut file = original.clone();
                file[at] ^= 1 << bit;
                assert!(
                    decrypt(&key, &file).is_err(),
                    "{name}: flip of bit {bit} at byte {at} was not detected"
                );
            }
        }
        for cut in 0..original.len() {
            assert!(
                decrypt(&key, &original[..cut]).is_err(),
                "{name}: cut at {cut} was not detected"
            );
        }
        let (header_len, chunks) = chunks_of(&original);
        for i in 0..chunks.len() {
            for j in i + 1..chunks.len() {
                let mut swapped = chunks.clone();
                swapped.swap(i, j);
                let mut file = original[..header_len].to_vec();
                file.extend(swapped.concat());
                assert_eq!(file.len(), original.len());
                assert!(
                    decrypt(&key, &file).is_err(),
                    "{name}: swap of chunks {i} and {j} was not detected"
                );
            }
        }
    }
}

#[test]
fn a_version_1_vector_opened_as_version_2_fails_and_vice_versa() {
    // The version byte is authenticated: relabelling a header is detected
    // even where the rest would parse.
    for v in small_vectors() {
        let key = master_key(&v);
        let mut file = bytes(&v, "ciphertext");
        file[8] = if num(&v, "version") == 1 { 2 } else { 1 };
        assert!(decrypt(&key, &file).is_err(), "{}", name(&v));
    }
}

#[test]
fn v2_vectors_cover_every_entry_kind_and_key_source() {
    let v2: Vec<Value> = vectors()
        .into_iter()
        .filter(|v| num(v, "version") == 2)
        .collect();
    for kind_wanted in [EntryKind::File, EntryKind::Symlink, EntryKind::HardLink] {
        assert!(v2.iter().any(|v| kind(v) == kind_wanted), "{kind_wanted:?}");
    }
    assert!(v2.iter().any(|v| mtime(v).is_none()));
    assert!(v2.iter().any(|v| mtime(v).is_some_and(|m| m.nanos > 0)));
    assert!(v2.iter().any(|v| v.get("passphrase").is_some()));
    let passphrase_vector = v2.iter().find(|v| v.get("passphrase").is_some()).unwrap();
    let header = Header::parse(&bytes(passphrase_vector, "ciphertext")).unwrap();
    assert!(matches!(header.key_source, KeySource::Passphrase { .. }));
}
