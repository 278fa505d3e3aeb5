//! The layouts of the metadata objects: manifests, snapshots and pack
//! indexes are written compressed (the second layout, docs/STORE.md);
//! a store whose objects are of the first layout (written before) still
//! reads, verifies and reindexes; and an object whose compressed body
//! would decompress past its bound is refused, naming it, by `verify`,
//! `get` and `reindex`. The objects are rewritten by the test with the
//! store's own key (taken from the real config with the real key file):
//! only a holder of the key can make an object that authenticates.

mod common;
mod store_support;

use std::fs;
use std::io::Write;
use std::path::Path;

use cryptstream_format::{
    parse_key_file, seal_header, Cipher, EntryKind, HeaderParams, Keyring, MasterKey,
    SealingWriter, SALT_LEN,
};
use cryptstream_store::manifest::{
    self, Layout, ManifestReader, MANIFEST_MAGIC, MANIFEST_MAGIC_V1,
};
use cryptstream_store::pack::{self, INDEX_MAGIC, INDEX_MAGIC_V1};
use cryptstream_store::snapshot::{self, SnapshotReader, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1};
use cryptstream_store::{blob, LocalDir, Store, StoreKeys};
use store_support::*;

/// The store unlocked with the workspace's key file (for its keys; with
/// a registry of its own).
fn unlocked(s: &StoreWs) -> Store {
    let key = parse_key_file(&fs::read_to_string(s.ws.key()).unwrap()).unwrap();
    let keyring = Keyring::new(vec![key], None);
    let scratch = s.ws.path("scratch-registry");
    fs::create_dir_all(&scratch).unwrap();
    Store::open_local(&s.dir())
        .unwrap()
        .unlock(&keyring, &scratch.join("registry.sqlite"))
        .unwrap()
}

/// A sealed container of `plaintext` under `key`, as manifests and
/// snapshots are sealed.
fn seal(key: &MasterKey, plaintext: &[u8]) -> Vec<u8> {
    let params = HeaderParams {
        cipher: Cipher::Aes256Gcm,
        chunk_size: 64 * 1024,
        plaintext_len: None,
        mode: 0,
        kind: EntryKind::File,
        mtime: None,
    };
    let (header, cipher) = seal_header(key, &params, [7; SALT_LEN]).unwrap();
    let mut sealing = SealingWriter::new(Vec::new(), cipher);
    sealing.write_all(plaintext).unwrap();
    let (body, _) = sealing.finish().unwrap();
    [header.as_bytes(), &body].concat()
}

/// Replaces object `name` of the local store in `dir` by `bytes`.
fn replace(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    fs::remove_file(&path).unwrap();
    fs::write(&path, bytes).unwrap();
}

fn size(dir: &Path, name: &str) -> u64 {
    fs::metadata(dir.join(name)).unwrap().len()
}

/// Rewrites every manifest, snapshot and pack index of the store in the
/// first layout (as a store written before compression holds them).
fn rewrite_in_the_first_layout(s: &StoreWs, keys: &StoreKeys) {
    let dir = s.dir();
    let backend = LocalDir::open(&dir).unwrap();
    for name in s.objects("manifests/") {
        let mut records = Vec::new();
        let mut reader = ManifestReader::open(&backend, keys, &name, size(&dir, &name)).unwrap();
        while let Some(record) = reader.next_record().unwrap() {
            let chunks = (0..record.chunks)
                .map(|_| reader.chunk().unwrap())
                .collect();
            records.push((record, chunks));
        }
        reader.finish().unwrap();
        let plaintext = [
            &MANIFEST_MAGIC_V1[..],
            &manifest::body(&records, Layout::Plain),
        ]
        .concat();
        replace(&dir, &name, &seal(keys.manifest_key(), &plaintext));
    }
    for name in s.objects("snapshots/") {
        let reader = SnapshotReader::open(&backend, keys, &name).unwrap();
        let meta = reader.meta().clone();
        let mut entries = Vec::new();
        reader
            .for_each(|e| {
                entries.push(e);
                Ok(())
            })
            .unwrap();
        let plaintext = [&SNAPSHOT_MAGIC_V1[..], &snapshot::body(&meta, &entries)].concat();
        replace(&dir, &name, &seal(keys.snapshot_key(), &plaintext));
    }
    for name in s.objects("packs/") {
        let data = fs::read(dir.join(&name)).unwrap();
        assert_eq!(
            &data[data.len() - 8..],
            INDEX_MAGIC,
            "{name} is of the second layout"
        );
        let entries = pack::read_index(&backend, keys, &name, data.len() as u64).unwrap();
        let index_len =
            u32::from_le_bytes(data[data.len() - 12..data.len() - 8].try_into().unwrap());
        let blobs_end = data.len() - 12 - index_len as usize;
        let aad = [&b"cryptstream pack index "[..], name.as_bytes()].concat();
        let sealed = blob::seal(keys, &aad, &pack::encode_index(&entries)).unwrap();
        let mut old = data[..blobs_end].to_vec();
        old.extend_from_slice(&sealed);
        old.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        old.extend_from_slice(INDEX_MAGIC_V1);
        replace(&dir, &name, &old);
    }
}

#[test]
fn a_store_of_the_first_layout_reads_verifies_and_takes_new_puts() {
    let s = StoreWs::new(SMALL_CHUNKS);
    let src = s.ws.path("src");
    make_tree(&src, 700_000);
    let snap = snapshot_of(s.run("put", &[&src]).success());
    let store = unlocked(&s);
    rewrite_in_the_first_layout(&s, store.keys());

    // Read by a registry of its own (filled from the objects) and by the
    // one that knew the store.
    for fresh in [true, false] {
        if fresh {
            s.drop_registry();
        }
        s.run("verify", &[&"--read-data"]).success();
        let out = s.ws.path(if fresh { "out-fresh" } else { "out" });
        s.run("get", &[&snap, &out]).success();
        assert_restored(&src, &out.join("src"));
    }

    // A new put writes the second layout beside the first; both read.
    fs::write(src.join("new.txt"), "written after the store was old\n").unwrap();
    let second = snapshot_of(s.run("put", &[&src]).success());
    s.drop_registry();
    s.run("verify", &[&"--read-data"]).success();
    let out = s.ws.path("out-second");
    s.run("get", &[&second, &out]).success();
    assert_restored(&src, &out.join("src"));
}

/// A record header claiming `chunks` chunks of a `size`-byte file, with
/// a one-byte name and no link target (second layout: no mac).
fn record_head(size: u64, chunks: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&7u64.to_le_bytes());
    out.push(1);
    out.extend_from_slice(&0o644u32.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&chunks.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.push(b'x');
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

fn string(text: &str) -> Vec<u8> {
    [&(text.len() as u32).to_le_bytes()[..], text.as_bytes()].concat()
}

#[test]
fn a_manifest_or_snapshot_that_decompresses_past_its_bound_is_refused_naming_it() {
    let s = StoreWs::new(&[]);
    let src = s.ws.path("src");
    make_tree(&src, 100_000);
    let snap = snapshot_of(s.run("put", &[&src]).success());
    let store = unlocked(&s);
    let keys = store.keys();
    let dir = s.dir();
    let manifests = s.objects("manifests/");
    let snapshots = s.objects("snapshots/");
    assert_eq!(snapshots.len(), 1);

    // A manifest whose one record claims 2^40 chunks, followed by 8 MiB
    // of zeros: a few hundred bytes of zstd, a reader that believed it
    // would read on far past 64 x the object's size.
    let mut body = 1u64.to_le_bytes().to_vec();
    body.extend(record_head(1 << 50, 1 << 40));
    body.extend(vec![0u8; 8 << 20]);
    let compressed = zstd::encode_all(&body[..], 1).unwrap();
    let bomb = seal(
        keys.manifest_key(),
        &[&MANIFEST_MAGIC[..], &compressed].concat(),
    );
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    replace(&dir, &manifests[0], &bomb);

    // A snapshot that names itself and holds 200,000 empty entries.
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend(string(&snapshots[0]));
    body.extend(0i64.to_le_bytes());
    body.extend(string("host"));
    body.extend([0u8; 8]);
    let entry = [&[1u8][..], &0u32.to_le_bytes(), &[0u8; 40]].concat();
    for _ in 0..200_000 {
        body.extend_from_slice(&entry);
    }
    let compressed = zstd::encode_all(&body[..], 1).unwrap();
    replace(
        &dir,
        &snapshots[0],
        &seal(
            keys.snapshot_key(),
            &[&SNAPSHOT_MAGIC[..], &compressed].concat(),
        ),
    );

    let verify = s.run("verify", &[&"--read-data"]);
    verify.failure();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        verify.stderr
    );
    for name in [&manifests[0], &snapshots[0]] {
        assert!(
            said.lines()
                .any(|l| l.contains(name.as_str()) && l.contains("decompresses to more than")),
            "verify names {name} and the bound:\n{said}"
        );
    }

    let get = s.run("get", &[&snap, &s.ws.path("out")]);
    get.failure();
    assert!(
        get.stderr.contains(&snapshots[0]) && get.stderr.contains("decompresses to more than"),
        "{}",
        get.stderr
    );

    let reindex = s.run("reindex", &[]);
    reindex.failure();
    assert!(
        reindex.stderr.contains("decompresses to more than"),
        "{}",
        reindex.stderr
    );
}
