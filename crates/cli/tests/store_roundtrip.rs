//! The store end to end through the real binary: round trip of a generated
//! tree, dedup, unchanged re-put, damage, forget + gc, reindex, wrong key.

mod common;
mod store_support;

use std::fs;

use common::*;
use store_support::*;

on_every_backend!(
    a_tree_comes_back_exact_with_modes_links_and_mtimes,
    put_json_and_unchanged_files_are_not_read_again,
    dedup_same_tree_twice_and_one_inserted_byte,
    a_flipped_byte_is_named_by_verify_and_fails_only_that_file,
    forget_then_gc_reclaims_space_and_keeps_the_rest,
    a_wrong_key_is_refused_in_one_line,
);

fn a_tree_comes_back_exact_with_modes_links_and_mtimes(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("src/tree");
    make_tree(&src, 40 * MIB + 12345);
    let out = s.run("put", &[&src]);
    out.success();
    let ids = put_ids(&out);
    assert!(ids.iter().any(|(_, n)| n == "tree/big.bin"), "{ids:?}");
    assert!(ids.iter().all(|(id, _)| id.len() == 16));
    s.run("verify", &[&"--read-data"]).success();
    let dest = s.ws.path("out");
    s.run("get", &[&"tree", &dest]).success();
    assert_restored(&src, &dest.join("tree"));
    // One file by id, elsewhere.
    let (id, _) = ids.iter().find(|(_, n)| n == "tree/exec.sh").unwrap();
    let one = s.ws.path("one");
    s.run("get", &[id, &one]).success();
    assert_eq!(
        fs::read(one.join("tree/exec.sh")).unwrap(),
        fs::read(src.join("exec.sh")).unwrap()
    );
    // Getting again over existing files is refused per file, with --force replaced.
    let again = s.run("get", &[&"tree", &dest]);
    again.failure();
    again.stderr_has("exists");
    s.run("get", &[&"--force", &"tree", &dest]).success();
    assert_restored(&src, &dest.join("tree"));
    // list --json shows every entry with its id.
    let list = s.run("list", &[&"--json"]).success().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for (_, name) in &ids {
        assert!(names.contains(&name.as_str()), "{name} not listed");
    }
    let stat = s.stat();
    assert_eq!(stat["files"].as_u64().unwrap() as usize, ids.len());
}

fn put_json_and_unchanged_files_are_not_read_again(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("t");
    make_tree(&src, 3 * MIB);
    let first = s.run("put", &[&"--json", &src]).success().json();
    assert_eq!(first["failed"], 0);
    let stored = first["stored"].as_u64().unwrap();
    assert!(stored >= 10, "{first}");
    let second = s.run("put", &[&"--json", &src]).success().json();
    assert_eq!(second["unchanged"].as_u64().unwrap(), stored, "{second}");
    assert_eq!(second["stored"], 0);
    // A touched file is read again; --force-read reads everything.
    set_mtime(&src.join("one"), 1_700_000_000, 5);
    let third = s.run("put", &[&"--json", &src]).success().json();
    assert_eq!(third["stored"], 1, "{third}");
    let forced = s
        .run("put", &[&"--json", &"--force-read", &src])
        .success()
        .json();
    assert_eq!(forced["stored"].as_u64().unwrap(), stored);
    assert_eq!(forced["new_bytes"], 0, "nothing new to store: {forced}");
}

fn dedup_same_tree_twice_and_one_inserted_byte(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("d");
    make_tree(&src, 64 * MIB);
    s.run("put", &[&src]).success();
    let before = s.stat();
    let copy = s.ws.path("copy/d2");
    fs::create_dir_all(&copy).unwrap();
    for (rel, entry) in snapshot(&src) {
        if let Entry::File { .. } = entry {
            let to = copy.join(&rel);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(src.join(&rel), to).unwrap();
        }
    }
    s.run("put", &[&copy]).success();
    let after = s.stat();
    let grew = after["pack_bytes"].as_u64().unwrap() - before["pack_bytes"].as_u64().unwrap();
    let base = before["pack_bytes"].as_u64().unwrap();
    assert!(
        grew * 100 < base,
        "a second copy grew the store by {grew} of {base} bytes"
    );
    // One byte inserted in the middle of the big file.
    let big = src.join("big.bin");
    let mut bytes = fs::read(&big).unwrap();
    bytes.insert(bytes.len() / 2, 0x42);
    fs::write(&big, &bytes).unwrap();
    s.run("put", &[&big]).success();
    let last = s.stat();
    let new_chunks = last["chunks"].as_u64().unwrap() - after["chunks"].as_u64().unwrap();
    eprintln!("one inserted byte in a 64 MiB file added {new_chunks} chunks");
    assert!((1..=3).contains(&new_chunks), "{new_chunks} new chunks");
}

fn a_flipped_byte_is_named_by_verify_and_fails_only_that_file(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let src = s.ws.path("dmg");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("victim.bin"), 3 * MIB, 7, 0o644);
    write_random_file(&src.join("other.bin"), 2 * MIB, 8, 0o644);
    let out = s.run("put", &[&src.join("victim.bin")]);
    out.success();
    let victim_id = put_ids(&out)[0].0.clone();
    s.run("put", &[&src.join("other.bin")]).success();
    let packs = s.pack_objects();
    assert_eq!(packs.len(), 2, "{packs:?}");
    // The victim's pack is the larger one.
    let (pack, _) = packs.iter().find(|(_, size)| *size > 3 * MIB).unwrap();
    s.flip_pack_byte(pack, 1_000_000);
    s.run("verify", &[]).success();
    let v = s.run("verify", &[&"--read-data"]);
    v.failure();
    v.stderr_has("victim.bin")
        .stderr_has(&victim_id)
        .stderr_has("does not authenticate");
    assert!(!v.stderr.contains("other.bin"), "{}", v.stderr);
    let dest = s.ws.path("back");
    let g = s.run("get", &[&"victim.bin", &dest]);
    g.failure();
    let lines: Vec<&str> = g
        .stderr
        .lines()
        .filter(|l| l.contains("victim.bin"))
        .collect();
    assert_eq!(lines.len(), 1, "one line about the file: {}", g.stderr);
    assert!(!dest.join("victim.bin").exists());
    assert_eq!(list_dir(&dest).len(), 0, "nothing left behind");
    s.run("get", &[&"other.bin", &dest]).success();
    assert_eq!(
        fs::read(dest.join("other.bin")).unwrap(),
        fs::read(src.join("other.bin")).unwrap()
    );
}

fn forget_then_gc_reclaims_space_and_keeps_the_rest(kind: Kind) {
    let s = StoreWs::on(kind, &["--pack-target", "1MiB"]);
    let src = s.ws.path("g");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 6 * MIB, 1, 0o644);
    write_random_file(&src.join("b.bin"), 5 * MIB, 2, 0o644);
    let first = snapshot_of(s.run("put", &[&src]).success());
    // a.bin goes from the source; the snapshot that held it is forgotten.
    fs::remove_file(src.join("a.bin")).unwrap();
    s.run("put", &[&src]).success();
    let before = s.stat();
    let del = s.run("forget", &[&first]);
    del.success();
    assert!(del.stdout_text().contains(&first));
    s.run("gc", &[]).success();
    let after = s.stat();
    let (b, a) = (
        before["pack_bytes"].as_u64().unwrap(),
        after["pack_bytes"].as_u64().unwrap(),
    );
    assert!(a < b - 5 * MIB, "gc reclaimed {} of {b} bytes", b - a);
    s.run("verify", &[&"--read-data"]).success();
    let dest = s.ws.path("back");
    s.run("get", &[&"g", &dest]).success();
    assert!(!dest.join("g/a.bin").exists());
    assert_eq!(
        fs::read(dest.join("g/b.bin")).unwrap(),
        fs::read(src.join("b.bin")).unwrap()
    );
    s.run("get", &[&"g/a.bin", &s.ws.path("x")])
        .failure()
        .stderr_has("no such file or id");
    // Reindex from the data alone gives back the same listing.
    let listed = s.run("list", &[&"--json"]).success().json();
    s.drop_registry();
    s.run("reindex", &[]).success();
    let relisted = s.run("list", &[&"--json"]).success().json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    s.run("verify", &[&"--read-data"]).success();
    let again = s.ws.path("again");
    s.run("get", &[&"g", &again]).success();
    assert_eq!(
        fs::read(again.join("g/b.bin")).unwrap(),
        fs::read(src.join("b.bin")).unwrap()
    );
}

fn a_wrong_key_is_refused_in_one_line(kind: Kind) {
    let s = StoreWs::on(kind, &[]);
    let other = s.ws.path("other.key");
    keygen(&other);
    let out = run(&mut s.cmd_keyed(&other, "list"));
    out.failure();
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // init twice is refused.
    run(&mut s.cmd("init"))
        .failure()
        .stderr_has("already exists");
}

#[test]
fn one_put_gives_its_new_records_consecutive_uids_and_the_next_put_others() {
    let s = StoreWs::on(Kind::Local, &[]);
    let src = s.ws.path("src/tree");
    small_tree(&src, 12, 7);
    let uids = |out: &Outcome| -> Vec<u64> {
        let mut uids: Vec<u64> = put_ids(out)
            .iter()
            .map(|(id, _)| u64::from_str_radix(id, 16).unwrap())
            .collect();
        uids.sort_unstable();
        uids
    };
    let first = uids(s.run("put", &[&src]).success());
    // The tree, its 3 directories and 12 files: one record each.
    assert_eq!(first.len(), 16, "{first:x?}");
    assert!(
        first.windows(2).all(|w| w[1] == w[0] + 1),
        "not consecutive: {first:x?}"
    );
    // Another put of the same names (read again) starts elsewhere.
    let second = uids(s.run("put", &[&"--force-read", &src]).success());
    assert_eq!(second.len(), 16);
    assert!(second.iter().all(|u| !first.contains(u)), "{second:x?}");
    s.run("verify", &[&"--read-data"]).success();
}

#[test]
fn a_directory_without_a_store_is_refused() {
    let ws = Workspace::new();
    let mut cmd = cryptstream();
    cmd.args(["store", "--store"])
        .arg(ws.path("nothing"))
        .arg("-k")
        .arg(ws.key())
        .arg("list");
    run(&mut cmd).failure().stderr_has("no store here");
}

#[test]
fn a_passphrase_store_opens_with_the_passphrase_only() {
    let ws = Workspace::new();
    let store = ws.path("pstore");
    let pass = ws.path("pass");
    fs::write(&pass, "correct horse\n").unwrap();
    let mut init = cryptstream();
    init.args(["store", "--store"])
        .arg(&store)
        .arg("--passphrase-file")
        .arg(&pass)
        .args(FAST_KDF)
        .arg("init");
    run(&mut init).success();
    let src = ws.path("p.bin");
    write_random_file(&src, 300_000, 5, 0o600);
    let mut put = cryptstream();
    put.args(["store", "--store"])
        .arg(&store)
        .env(PASSPHRASE_ENV, "correct horse")
        .arg("put")
        .arg(&src);
    run(&mut put).success();
    let mut get = cryptstream();
    get.args(["store", "--store"])
        .arg(&store)
        .env(PASSPHRASE_ENV, "correct horse")
        .args(["get", "p.bin"])
        .arg(ws.path("o"));
    run(&mut get).success();
    assert_eq!(
        fs::read(ws.path("o/p.bin")).unwrap(),
        fs::read(&src).unwrap()
    );
    let mut wrong = cryptstream();
    wrong
        .args(["store", "--store"])
        .arg(&store)
        .env(PASSPHRASE_ENV, "wrong")
        .arg("list");
    let out = run(&mut wrong);
    out.failure();
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_name_that_is_not_utf8_is_refused_and_the_rest_is_stored() {
    use std::os::unix::ffi::OsStrExt;
    let s = StoreWs::new(&[]);
    let src = s.ws.path("nu");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
    fs::write(src.join("good"), b"y").unwrap();
    let out = s.run("put", &[&src]);
    out.failure().stderr_has("not UTF-8");
    s.run("get", &[&"nu/good", &s.ws.path("o")]).success();
}
