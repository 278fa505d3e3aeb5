//! What the store does with damage it did not cause: a registry edited
//! behind its back (the real SQLite file, opened by the test), and
//! manifests, packs and pack indexes that are damaged or missing. Each is
//! named by `verify`; `get` either returns the right bytes or fails naming
//! what is wrong; `reindex` that cannot read an object keeps the registry
//! it had.

mod common;
mod store_support;

use std::fs;
use std::path::Path;

use common::*;
use store_support::*;

on_every_backend!(
    damaged_and_missing_objects_are_named_and_reindex_keeps_the_registry,
    a_damaged_chunk_inside_a_block_fails_its_file_alone,
    a_truncated_pack_fails_only_the_files_cut_off,
);

/// Puts `path` alone and returns its id and the objects below `prefix`
/// that the put added.
fn put_alone(s: &StoreWs, path: &Path) -> (String, Vec<String>, Vec<String>) {
    let (packs, manifests) = (s.objects("packs/"), s.objects("manifests/"));
    let out = s.run("put", &[&path]);
    out.success();
    let id = put_ids(&out)[0].0.clone();
    let new = |before: &[String], now: Vec<String>| -> Vec<String> {
        now.into_iter().filter(|o| !before.contains(o)).collect()
    };
    (
        id,
        new(&packs, s.objects("packs/")),
        new(&manifests, s.objects("manifests/")),
    )
}

fn flip(data: &mut [u8], at: usize) {
    data[at] ^= 0x01;
}

fn damaged_and_missing_objects_are_named_and_reindex_keeps_the_registry(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("src");
    fs::create_dir_all(&src).unwrap();
    let files = ["m-damaged", "m-missing", "p-missing", "i-damaged"];
    let mut stored = Vec::new();
    for (i, name) in files.iter().enumerate() {
        let path = src.join(name);
        write_random_file(&path, 300_000 + i as u64 * 1000, 60 + 2 * i as u64, 0o644);
        let (id, packs, manifests) = put_alone(&s, &path);
        assert_eq!((packs.len(), manifests.len()), (1, 1), "{name}");
        stored.push((id, packs[0].clone(), manifests[0].clone()));
    }
    s.run("verify", &[&"--read-data"]).success();
    let listed = s.run("list", &[&"--json"]).success().json();

    // The damage: a byte of one manifest, a whole manifest, a whole pack,
    // and a byte of one pack's index (just before its trailer).
    let mut manifest = s.object(&stored[0].2);
    let middle = manifest.len() / 2;
    flip(&mut manifest, middle);
    s.replace_object(&stored[0].2, Some(manifest));
    s.replace_object(&stored[1].2, None);
    s.replace_object(&stored[2].1, None);
    let mut pack = s.object(&stored[3].1);
    let in_index = pack.len() - 12 - 5;
    flip(&mut pack, in_index);
    s.replace_object(&stored[3].1, Some(pack));

    // verify names each damaged or missing object, and the files it holds.
    let quick = s.run("verify", &[]);
    quick.failure();
    quick
        .stderr_has(&format!("manifest {} is missing", stored[1].2))
        .stderr_has(&format!("pack {} is missing", stored[2].1))
        .stderr_has("m-missing")
        .stderr_has("p-missing");
    let full = s.run("verify", &[&"--read-data"]);
    full.failure();
    full.stderr_has(&format!("manifest {} cannot be read", stored[0].2))
        .stderr_has(&format!("manifest {} is missing", stored[1].2))
        .stderr_has(&format!("pack {} is missing", stored[2].1))
        .stderr_has(&format!(
            "pack {}: index does not authenticate",
            stored[3].1
        ));

    // get returns the right bytes where the chunks are intact, and fails
    // naming the file and the pack where they are gone.
    let dest = s.ws.path("out");
    for name in ["m-damaged", "m-missing", "i-damaged"] {
        s.run("get", &[&name, &dest]).success();
        assert_eq!(
            fs::read(dest.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
    let lost = s.run("get", &[&"p-missing", &dest]);
    lost.failure()
        .stderr_has("p-missing")
        .stderr_has(&stored[2].1);
    assert!(!dest.join("p-missing").exists());

    // reindex cannot read the damaged manifest and index: it says so,
    // exits 1 and keeps the registry it had.
    let reindex = s.run("reindex", &[]);
    reindex
        .failure()
        .stderr_has(&stored[0].2)
        .stderr_has(&stored[3].1)
        .stderr_has("the registry was kept");
    let relisted = s.run("list", &[&"--json"]).success().json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    s.run("get", &[&"i-damaged", &s.ws.path("again")]).success();
}

/// Sixteen one-chunk files side by side in one pack, read back in one
/// block: a flipped byte in the middle one's chunk fails that file alone,
/// named with the pack; the other fifteen of the block come back exact,
/// and `verify --read-data` names that file and no other.
fn a_damaged_chunk_inside_a_block_fails_its_file_alone(kind: Kind) {
    const FILES: usize = 16;
    const SIZE: u64 = 10_000;
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("blk");
    fs::create_dir_all(&src).unwrap();
    let names: Vec<String> = (0..FILES).map(|i| format!("f{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        write_random_file(&src.join(name), SIZE, 500 + i as u64, 0o644);
    }
    let (_, packs, _) = put_alone(&s, &src);
    assert_eq!(packs.len(), 1, "{packs:?}");
    // Half-way through the pack's data: inside the chunk of f07 or f08
    // (random bytes do not compress; each blob is a little over SIZE).
    s.flip_pack_byte(&packs[0], FILES / 2 * SIZE as usize - SIZE as usize / 2);

    let dest = s.ws.path("out");
    let got = s.run("get", &[&"blk", &dest]);
    got.failure()
        .stderr_has(&packs[0])
        .stderr_has("does not authenticate");
    let lost: Vec<&String> = names
        .iter()
        .filter(|name| !dest.join("blk").join(name).exists())
        .collect();
    assert_eq!(lost.len(), 1, "lost {lost:?}; {}", got.stderr);
    got.stderr_has(&format!("blk/{}", lost[0]));
    for name in names.iter().filter(|name| *name != lost[0]) {
        assert_eq!(
            fs::read(dest.join("blk").join(name)).unwrap(),
            fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }

    let verify = s.run("verify", &[&"--read-data"]);
    verify
        .failure()
        .stderr_has(&format!("blk/{}", lost[0]))
        .stderr_has(&packs[0])
        .stderr_has("does not authenticate");
    for name in names.iter().filter(|name| *name != lost[0]) {
        assert!(
            !verify.stderr.contains(&format!("blk/{name}")),
            "verify named the intact {name}: {}",
            verify.stderr
        );
    }
}

/// Sixteen one-chunk files in one pack, the pack cut short three quarters
/// of the way through its data: the block that covers them reaches past
/// the new end, so it is read again chunk by chunk, and only the files
/// whose chunks were cut off fail (each named, with the pack); those
/// before the cut come back exact.
fn a_truncated_pack_fails_only_the_files_cut_off(kind: Kind) {
    const FILES: usize = 16;
    const SIZE: u64 = 10_000;
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("cut");
    fs::create_dir_all(&src).unwrap();
    let names: Vec<String> = (0..FILES).map(|i| format!("f{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        write_random_file(&src.join(name), SIZE, 700 + i as u64, 0o644);
    }
    let (_, packs, _) = put_alone(&s, &src);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let mut pack = s.object(&packs[0]);
    pack.truncate(FILES * 3 / 4 * SIZE as usize);
    s.replace_object(&packs[0], Some(pack));

    let dest = s.ws.path("out");
    let got = s.run("get", &[&"cut", &dest]);
    got.failure().stderr_has(&packs[0]);
    let (kept, lost): (Vec<&String>, Vec<&String>) = names
        .iter()
        .partition(|name| dest.join("cut").join(name).exists());
    // The cut falls in the 12th or 11th chunk (each blob is a little over
    // SIZE): the files before it are whole.
    assert!(
        (10..=11).contains(&kept.len()),
        "kept {kept:?}, lost {lost:?}: {}",
        got.stderr
    );
    for name in &kept {
        assert_eq!(
            fs::read(dest.join("cut").join(name)).unwrap(),
            fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
    for name in &lost {
        got.stderr_has(&format!("cut/{name}"));
    }
}

#[test]
fn an_edited_registry_cannot_make_get_return_other_bytes() {
    let s = StoreWs::new(SMALL_CHUNKS);
    let src = s.ws.path("reg");
    fs::create_dir_all(&src).unwrap();
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        write_random_file(&src.join(name), 400_000, 70 + 2 * i as u64, 0o644);
    }
    s.run("put", &[&src]).success();
    let row = |conn: &rusqlite::Connection, name: &str| -> i64 {
        conn.query_row(
            "SELECT id FROM files WHERE name = ?1 AND status = 'complete'",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    {
        let conn = s.registry();
        let (a, b, c) = (
            row(&conn, "reg/a.bin"),
            row(&conn, "reg/b.bin"),
            row(&conn, "reg/c.bin"),
        );
        // a.bin's first chunk becomes b.bin's first chunk.
        let b_first: Vec<u8> = conn
            .query_row(
                "SELECT chunk FROM file_chunks WHERE file = ?1 AND seq = 0",
                [b],
                |r| r.get(0),
            )
            .unwrap();
        let n = conn
            .execute(
                "UPDATE file_chunks SET chunk = ?1 WHERE file = ?2 AND seq = 0",
                rusqlite::params![b_first, a],
            )
            .unwrap();
        assert_eq!(n, 1);
        // b.bin's second chunk is said to start one byte later in its pack.
        let n = conn
            .execute(
                "UPDATE chunks SET offset = offset + 1 WHERE id =
                   (SELECT chunk FROM file_chunks WHERE file = ?1 AND seq = 1)",
                [b],
            )
            .unwrap();
        assert_eq!(n, 1);
        // c.bin becomes setuid and world-writable (0o4777).
        let n = conn
            .execute("UPDATE files SET mode = 2559 WHERE id = ?1", [c])
            .unwrap();
        assert_eq!(n, 1);
    }
    let quick = s.run("verify", &[]);
    quick.failure();
    quick
        .stderr_has("reg/a.bin")
        .stderr_has("reg/c.bin")
        .stderr_has("registry damaged");
    s.run("verify", &[&"--read-data"])
        .failure()
        .stderr_has("reg/b.bin");
    let dest = s.ws.path("out");
    let get = s.run("get", &[&"reg", &dest]);
    get.failure();
    for name in ["reg/a.bin", "reg/b.bin", "reg/c.bin"] {
        assert!(
            get.stderr.lines().any(|l| l.contains(name)),
            "get does not name {name}: {}",
            get.stderr
        );
        assert!(!dest.join(name).exists(), "{name} was written");
    }
    // The registry rebuilt from the store's objects is right again.
    s.run("reindex", &[]).success();
    s.run("verify", &[&"--read-data"]).success();
    let again = s.ws.path("again");
    s.run("get", &[&"reg", &again]).success();
    assert_same_tree(&snapshot(&src), &snapshot(&again.join("reg")));
}
