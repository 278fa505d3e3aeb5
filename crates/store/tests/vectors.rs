//! The test vectors of docs/STORE.md ("Test vectors"), recomputed from the
//! code: the block between the `vectors` markers is parsed as `name: hex`
//! lines, so the document cannot drift from the implementation.

use std::collections::BTreeMap;

use cryptstream_store::blob::{chunk_aad, open_in_place, seal_with_salt, COMPRESSION_NONE};
use cryptstream_store::compressed;
use cryptstream_store::manifest::{self, FileMac, FileRecord, Kind, Layout, MANIFEST_MAGIC};
use cryptstream_store::pack::{compress_index, encode_index, PackEntry};
use cryptstream_store::snapshot::{
    self, SnapshotEntry, SnapshotMeta, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1,
};
use cryptstream_store::StoreKeys;

fn doc_vectors() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/STORE.md"))
        .expect("docs/STORE.md is readable");
    let start = doc
        .find("<!-- vectors -->")
        .expect("the vectors start marker");
    let end = doc
        .find("<!-- /vectors -->")
        .expect("the vectors end marker");
    doc[start..end]
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            (!value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (name.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

fn computed() -> BTreeMap<String, String> {
    let master: [u8; 32] = std::array::from_fn(|i| i as u8);
    let keys = StoreKeys::derive(&master);
    let plaintext = b"cryptstream store test vector\n";
    let id = keys.chunk_id(plaintext);
    let salt: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
    let aad = chunk_aad(&id, COMPRESSION_NONE, plaintext.len() as u32);
    let blob = seal_with_salt(&keys, &aad, plaintext, &salt);
    let mut copy = blob.clone();
    assert_eq!(open_in_place(&keys, &aad, &mut copy).unwrap(), plaintext);
    let record = FileRecord {
        uid: 0x0123_4567_89ab_cdef,
        name: "dir/file.txt".into(),
        kind: Kind::File,
        mode: 0o644,
        mtime: (1_700_000_000, 5),
        size: plaintext.len() as u64,
        link: Vec::new(),
        created: 0,
        chunks: 1,
        mac: [0; 32],
    };
    let mut mac = FileMac::new(&keys, &record);
    mac.add_chunk(&id, plaintext.len() as u32);
    let index = encode_index(&[PackEntry {
        id,
        offset: 8,
        stored_len: blob.len() as u32,
        raw_len: plaintext.len() as u32,
        compression: COMPRESSION_NONE,
    }]);
    let file_mac = mac.finish();
    let snapshot_body = snapshot::body(
        &SnapshotMeta {
            name: "snapshots/00/000102030405060708090a0b0c0d0e0f".into(),
            time_ns: 1_700_000_000_000_000_005,
            host: "host".into(),
            paths: vec!["/home/u/dir".into()],
            tags: vec!["daily".into()],
        },
        &[
            SnapshotEntry {
                name: "dir/file.txt".into(),
                uid: record.uid,
                mac: file_mac,
                hard_link: None,
            },
            SnapshotEntry {
                name: "dir/link.txt".into(),
                uid: record.uid,
                mac: file_mac,
                hard_link: Some("dir/file.txt".into()),
            },
        ],
    );
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: &[u8]| {
        out.insert(k.to_owned(), hex::encode(v));
    };
    put("master key", &master);
    put("chunk id key", keys.chunk_id_key());
    put("blob key", keys.blob_base_key());
    put("file hash key", keys.file_hash_key());
    put("manifest key", keys.manifest_key().expose_bytes());
    put("chunker seed", &keys.chunker_seed().to_le_bytes());
    put("chunk plaintext", plaintext);
    put("chunk id", &id);
    put("blob salt", &salt);
    put("chunk aad", &aad);
    put("chunk blob", &blob);
    put("file mac", &file_mac);
    put("snapshot key", keys.snapshot_key().expose_bytes());
    put(
        "snapshot plaintext",
        &[&SNAPSHOT_MAGIC_V1[..], &snapshot_body].concat(),
    );
    put("snapshot body", &snapshot_body);
    put(
        "snapshot v2 plaintext",
        &compressed::plaintext(SNAPSHOT_MAGIC, &snapshot_body),
    );
    let manifest_record = FileRecord {
        created: 1_700_000_001,
        mac: file_mac,
        ..record
    };
    let manifest_body = manifest::body(
        &[(manifest_record, vec![(id, plaintext.len() as u32)])],
        Layout::Compressed,
    );
    put("manifest body", &manifest_body);
    put(
        "manifest v2 plaintext",
        &compressed::plaintext(MANIFEST_MAGIC, &manifest_body),
    );
    put("pack index plaintext", &index);
    put(
        "pack index v2 plaintext",
        &compress_index(&index).expect("a zstd context"),
    );
    out
}

#[test]
fn store_md_vectors_match_the_code() {
    let doc = doc_vectors();
    let code = computed();
    let mut problems = Vec::new();
    for (name, value) in &code {
        match doc.get(name) {
            Some(v) if v == value => {}
            Some(v) => problems.push(format!("{name}: doc {v}, code {value}")),
            None => problems.push(format!("{name}: missing from the doc (code: {value})")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The independent Python implementation prints every line of the
/// block, each equal to the document's (and checks the compressed ones
/// decompress to the bodies it computes).
#[test]
fn store_vectors_py_reproduces_every_line() {
    let python = cryptstream_testkit::store_vectors_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/store_vectors.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .output()
        .expect("the vectors script runs");
    assert!(
        out.status.success(),
        "store_vectors.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: BTreeMap<String, String> = String::from_utf8(out.stdout)
        .expect("the script prints text")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect();
    assert_eq!(printed, doc_vectors());
}
