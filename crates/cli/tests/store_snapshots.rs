//! Snapshots through the real binary on a real store (local; the tests
//! named in `on_every_backend!` also on S3 and a store server): every put is
//! one snapshot, `get` of a snapshot returns exactly the tree of its
//! moment (never a merge), and `snapshots`, `ls`, `find`, `diff`, `dump`,
//! `forget` (by id, by `--keep-*`, `--dry-run`, `--prune`), `migrate`,
//! `verify` and `reindex` work on them.

mod common;
mod store_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use store_support::*;

// The snapshot tests that read or damage objects run on every backend:
// a local directory, S3 (SeaweedFS) and a `serve --store` server.
on_every_backend!(
    each_snapshot_restores_exactly_the_tree_of_its_moment,
    forget_prune_reclaims_a_forgotten_snapshots_data_and_keeps_the_rest,
    verify_names_damaged_moved_and_missing_snapshots_and_reindex_keeps_the_registry,
    reindex_rebuilds_snapshots_and_references_from_the_objects,
    two_paths_of_one_name_are_refused_before_anything_is_stored,
    snapshots_lists_id_time_host_tags_paths_and_entries,
    ls_lists_a_snapshot_or_a_path_in_it,
    find_names_each_snapshot_and_path_that_matches,
    diff_marks_added_removed_and_modified_entries,
    dump_writes_one_file_of_a_snapshot_to_stdout,
    forget_keep_last_dry_run_changes_nothing_then_forgets_the_rest,
);

/// `diff -r --no-dereference A B` passes (same names, contents, link
/// targets).
#[track_caller]
fn assert_diff_clean(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("run diff");
    assert!(
        out.status.success(),
        "diff -r {a:?} {b:?}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `a` and `b` hold the same tree: `diff -r --no-dereference`, and kind,
/// mode, ns mtime, link target and hard-link groups of every entry.
#[track_caller]
fn assert_same_moment(a: &Path, b: &Path) {
    assert_diff_clean(a, b);
    assert_eq!(
        metadata_of(a),
        metadata_of(b),
        "metadata of {a:?} and {b:?}"
    );
}

/// A copy of `from` into `to` as `cp -a` makes it (hard links, modes,
/// ns mtimes, symlinks kept): the tree of this moment, to compare with
/// later.
fn copy_moment(from: &[&Path], to: &Path) {
    fs::create_dir_all(to).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .args(from)
        .arg(to)
        .output()
        .expect("run cp");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A photos folder: files, a subfolder, a symlink, a hard-link pair,
/// modes and ns mtimes.
fn photos(root: &Path, seed: u64) {
    let tree = Tree::new(root);
    tree.file("a.jpg", 40_000 + seed, 0o644)
        .file("b.jpg", 70_000, 0o600)
        .file("2024/c.jpg", 100_000, 0o644)
        .dir("empty", 0o750)
        .symlink("latest", "2024/c.jpg");
    fs::hard_link(root.join("a.jpg"), root.join("2024/a-again.jpg")).unwrap();
    let mut seconds = 1_600_000_000 + seed as i64 * 100;
    for (rel, meta) in metadata_of(root).iter().rev() {
        seconds += 13;
        if meta.kind != "dir" {
            set_mtime(&root.join(rel), seconds, 987_654_321);
        }
    }
    for (rel, meta) in metadata_of(root).iter().rev() {
        if meta.kind == "dir" {
            seconds += 17;
            set_mtime(&root.join(rel), seconds, 123_456_789);
        }
    }
}

fn each_snapshot_restores_exactly_the_tree_of_its_moment(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let home = s.ws.path("home");
    photos(&home.join("photos"), 1);
    fs::write(home.join("notes.txt"), "monday's notes\n").unwrap();
    set_mtime(&home.join("notes.txt"), 1_650_000_000, 42);
    let monday = s.ws.path("monday");
    copy_moment(&[&home.join("notes.txt"), &home.join("photos")], &monday);
    let first = s.run("put", &[&home.join("notes.txt"), &home.join("photos")]);
    first.success();
    let s1 = snapshot_of(&first);

    // A photo is deleted; another folder also named photos is put.
    fs::remove_file(home.join("photos/b.jpg")).unwrap();
    let elsewhere = s.ws.path("elsewhere");
    photos(&elsewhere.join("photos"), 2);
    fs::write(elsewhere.join("photos/only-here.jpg"), "other\n").unwrap();
    let other_moment = s.ws.path("other-moment");
    copy_moment(&[&elsewhere.join("photos")], &other_moment);
    let second = s.run("put", &[&elsewhere.join("photos")]);
    second.success();
    let s2 = snapshot_of(&second);
    // The first photos folder again, after the deletion.
    let tuesday = s.ws.path("tuesday");
    copy_moment(&[&home.join("photos")], &tuesday);
    let third = s.run("put", &[&home.join("photos")]);
    third.success();
    let s3 = snapshot_of(&third);
    assert!(s1 != s2 && s2 != s3 && s1 != s3);

    // Each snapshot comes back as it was, byte for byte and with metadata.
    for (snap, want) in [(&s1, &monday), (&s2, &other_moment), (&s3, &tuesday)] {
        let out = s.ws.path(format!("out-{snap}"));
        s.run("get", &[snap, &out]).success();
        assert_same_moment(want, &out);
    }
    // Monday's snapshot still holds the deleted photo; the other folder's
    // files never appear in it, nor its files in the other's.
    let out1 = s.ws.path(format!("out-{s1}"));
    assert!(out1.join("photos/b.jpg").is_file());
    assert!(!out1.join("photos/only-here.jpg").exists());
    // Hard links come back as one inode.
    let meta = metadata_of(&out1);
    let group = |p: &str| meta[Path::new(p)].link_group;
    assert!(group("photos/a.jpg").is_some());
    assert_eq!(group("photos/a.jpg"), group("photos/2024/a-again.jpg"));

    // `get photos` is the newest snapshot holding photos: that one tree.
    let now = s.ws.path("now");
    s.run("get", &[&"photos", &now]).success();
    assert_same_moment(&tuesday, &now);
    // A subtree and one file of a snapshot land under DEST by their last
    // component.
    let sub = s.ws.path("sub");
    s.run("get", &[&format!("{s1}:photos/2024"), &sub])
        .success();
    // (a-again.jpg's other name is outside the subtree: one link here.)
    let unlinked = |root: &Path| {
        let mut meta = metadata_of(root);
        for m in meta.values_mut() {
            m.link_group = None;
        }
        meta
    };
    assert_diff_clean(&monday.join("photos/2024"), &sub.join("2024"));
    assert_eq!(
        unlinked(&monday.join("photos/2024")),
        unlinked(&sub.join("2024"))
    );
    let one = s.ws.path("one");
    s.run("get", &[&format!("{s1}:photos/b.jpg"), &one])
        .success();
    assert_eq!(
        fs::read(one.join("b.jpg")).unwrap(),
        fs::read(monday.join("photos/b.jpg")).unwrap()
    );
    // A hard link whose other name is not restored comes back as a file.
    let linked = s.ws.path("linked");
    s.run("get", &[&format!("{s1}:photos/a.jpg"), &linked])
        .success();
    assert_eq!(
        fs::read(linked.join("a.jpg")).unwrap(),
        fs::read(monday.join("photos/a.jpg")).unwrap()
    );
    assert_eq!(metadata_of(&linked)[Path::new("a.jpg")].link_group, None);
    // `latest` is the newest snapshot.
    let latest = s.ws.path("latest");
    s.run("get", &[&"latest", &latest]).success();
    assert_same_moment(&tuesday, &latest);
    // A snapshot that does not exist is one line.
    s.run("get", &[&"ffffffff", &s.ws.path("x")])
        .failure()
        .stderr_has("ffffffff");
    s.run("verify", &[&"--read-data"]).success();
}

fn two_paths_of_one_name_are_refused_before_anything_is_stored(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    photos(&s.ws.path("a/photos"), 1);
    photos(&s.ws.path("b/photos"), 2);
    let out = s.run("put", &[&s.ws.path("a/photos"), &s.ws.path("b/photos")]);
    out.failure().stderr_has("would both be named photos");
    assert!(s.objects("packs/").is_empty());
    assert!(s.objects("snapshots/").is_empty());
}

fn snapshots_lists_id_time_host_tags_paths_and_entries(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let id = snapshot_of(
        s.run(
            "put",
            &[
                &"--tag", &"daily", &"--tag", &"cam", &"--host", &"box", &src,
            ],
        )
        .success(),
    );
    let list = s.run("snapshots", &[&"--json"]).success().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let snap = &list[0];
    assert_eq!(snap["short_id"], id.as_str());
    assert!(snap["id"].as_str().unwrap().starts_with(&id));
    assert_eq!(snap["host"], "box");
    assert_eq!(snap["tags"], serde_json::json!(["daily", "cam"]));
    assert_eq!(snap["paths"], serde_json::json!([src.to_str().unwrap()]));
    assert_eq!(
        snap["entries"].as_u64().unwrap() as usize,
        entry_count(&src)
    );
    let time = snap["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    let text = s.run("snapshots", &[]).success().stdout_text();
    assert!(text.contains(&id) && text.contains("box"), "{text}");
}

fn ls_lists_a_snapshot_or_a_path_in_it(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let id = snapshot_of(s.run("put", &[&src]).success());
    let all = s.run("ls", &[&id]).success().stdout_text();
    let names: Vec<&str> = all.lines().collect();
    assert_eq!(
        names,
        [
            "photos",
            "photos/2024",
            "photos/2024/a-again.jpg",
            "photos/2024/c.jpg",
            "photos/a.jpg",
            "photos/b.jpg",
            "photos/empty",
            "photos/latest"
        ]
    );
    let sub = s
        .run("ls", &[&format!("{id}:photos/2024")])
        .success()
        .stdout_text();
    assert_eq!(
        sub.lines().collect::<Vec<_>>(),
        [
            "photos/2024",
            "photos/2024/a-again.jpg",
            "photos/2024/c.jpg"
        ]
    );
    let long = s.run("ls", &[&"-l", &id]).success().stdout_text();
    assert!(long.contains("photos/latest -> 2024/c.jpg"), "{long}");
    assert!(long.contains("600") && long.contains("70000"), "{long}");
    let json = s
        .run("ls", &[&"--json", &format!("{id}:photos/b.jpg")])
        .success()
        .json();
    assert_eq!(json[0]["name"], "photos/b.jpg");
    assert_eq!(json[0]["size"], 70_000);
    assert_eq!(json[0]["mode"], "600");
    s.run("ls", &[&format!("{id}:photos/nope")])
        .failure()
        .stderr_has("no such entry");
}

fn find_names_each_snapshot_and_path_that_matches(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let s1 = snapshot_of(s.run("put", &[&src]).success());
    fs::write(src.join("2024/d.png"), "png").unwrap();
    let s2 = snapshot_of(s.run("put", &[&src]).success());
    let found = s.run("find", &[&"c.jpg"]).success().stdout_text();
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        [
            format!("{s1}  photos/2024/c.jpg"),
            format!("{s2}  photos/2024/c.jpg")
        ]
    );
    let png = s.run("find", &[&"*.png"]).success().stdout_text();
    assert_eq!(
        png.lines().collect::<Vec<_>>(),
        [format!("{s2}  photos/2024/d.png")]
    );
    let deep = s.run("find", &[&"photos/*/a-*"]).success().stdout_text();
    assert_eq!(deep.lines().count(), 2, "{deep}");
    s.run("find", &[&"*.gif"]).failure();
}

fn diff_marks_added_removed_and_modified_entries(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let s1 = snapshot_of(s.run("put", &[&src]).success());
    fs::remove_file(src.join("b.jpg")).unwrap();
    fs::write(src.join("new.jpg"), "new").unwrap();
    fs::write(src.join("2024/c.jpg"), "changed").unwrap();
    let s2 = snapshot_of(s.run("put", &[&src]).success());
    let out = s.run("diff", &[&s1, &s2]).success().stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"- photos/b.jpg"), "{out}");
    assert!(lines.contains(&"+ photos/new.jpg"), "{out}");
    assert!(lines.contains(&"M photos/2024/c.jpg"), "{out}");
    // The directories changed too (their mtimes); nothing else did.
    assert!(!out.contains("a.jpg") && !out.contains("latest"), "{out}");
    assert_eq!(s.run("diff", &[&s1, &s1]).success().stdout_text(), "");
}

fn dump_writes_one_file_of_a_snapshot_to_stdout(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let s1 = snapshot_of(s.run("put", &[&src]).success());
    let want = fs::read(src.join("2024/c.jpg")).unwrap();
    fs::write(src.join("2024/c.jpg"), "later").unwrap();
    s.run("put", &[&src]).success();
    let out = s.run("dump", &[&format!("{s1}:photos/2024/c.jpg")]);
    out.success();
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "dumped bytes differ");
    s.run("dump", &[&format!("{s1}:photos/2024")])
        .failure()
        .stderr_has("not a file");
    // A registry row edited to another file's chunks is refused before a
    // byte is written.
    let conn = s.registry();
    conn.execute(
        "UPDATE file_chunks SET chunk = (SELECT chunk FROM file_chunks
           WHERE file = (SELECT id FROM files WHERE name = 'photos/2024/c.jpg'
             ORDER BY id LIMIT 1) AND seq = 0)
         WHERE file = (SELECT id FROM files WHERE name = 'photos/b.jpg') AND seq = 0",
        [],
    )
    .unwrap();
    let bad = s.run("dump", &[&format!("{s1}:photos/b.jpg")]);
    bad.failure().stderr_has("does not match");
    assert!(bad.stdout.is_empty());
}

fn forget_keep_last_dry_run_changes_nothing_then_forgets_the_rest(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let mut ids = Vec::new();
    for i in 0..4 {
        fs::write(src.join(format!("n{i}")), format!("{i}")).unwrap();
        ids.push(snapshot_of(s.run("put", &[&src]).success()));
    }
    // Another set of paths is a group of its own.
    let other = s.ws.path("other");
    fs::create_dir_all(&other).unwrap();
    let lone = snapshot_of(s.run("put", &[&other]).success());
    let dry = s.run("forget", &[&"--keep-last", &"2", &"--dry-run"]);
    dry.success();
    let text = dry.stdout_text();
    for id in &ids[..2] {
        assert!(text.contains(&format!("forget  {id}")), "{text}");
    }
    for id in ids[2..].iter().chain([&lone]) {
        assert!(text.contains(&format!("keep    {id}")), "{text}");
    }
    dry.stderr_has("dry run");
    assert_eq!(
        s.run("snapshots", &[&"--json"])
            .success()
            .json()
            .as_array()
            .unwrap()
            .len(),
        5
    );
    s.run("forget", &[&"--keep-last", &"2"]).success();
    let left: Vec<String> = s
        .run("snapshots", &[&"--json"])
        .success()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["short_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [ids[2].clone(), ids[3].clone(), lone.clone()]);
    assert_eq!(s.objects("snapshots/").len(), 3);
    s.run("get", &[&ids[0], &s.ws.path("x")]).failure();
    s.run("verify", &[]).success();
}

fn forget_prune_reclaims_a_forgotten_snapshots_data_and_keeps_the_rest(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let big = s.ws.path("big");
    fs::create_dir_all(&big).unwrap();
    write_random_file(&big.join("only-in-first.bin"), 3 * 1024 * 1024, 7, 0o644);
    let s1 = snapshot_of(s.run("put", &[&src, &big]).success());
    fs::remove_file(big.join("only-in-first.bin")).unwrap();
    let s2 = snapshot_of(s.run("put", &[&src, &big]).success());
    let before = s.stat()["pack_bytes"].as_u64().unwrap();
    let out = s.run("forget", &[&s1, &"--prune"]);
    out.success();
    out.stderr_has("unreferenced entries removed");
    let after = s.stat()["pack_bytes"].as_u64().unwrap();
    assert!(after + 2 * 1024 * 1024 < before, "{before} -> {after}");
    s.run("verify", &[&"--read-data"]).success();
    let dest = s.ws.path("out");
    s.run("get", &[&s2, &dest]).success();
    assert_same_moment(&src, &dest.join("photos"));
}

#[test]
fn a_store_from_before_snapshots_is_refused_until_migrated() {
    let s = StoreWs::new(SMALL_CHUNKS);
    let src = s.ws.path("photos");
    // (A store of the old format has no hard-link entries.)
    Tree::new(&src)
        .file("a.jpg", 40_000, 0o644)
        .file("2024/c.jpg", 100_000, 0o600)
        .symlink("latest", "2024/c.jpg");
    s.run("put", &[&src]).success();
    // Make it a store of the old format: no snapshot object, and a config
    // without the store id that builds keeping snapshots write (so the
    // store opens with a new registry cache, rebuilt from the objects).
    for name in s.objects("snapshots/") {
        s.replace_object(&name, None);
    }
    let mut config: serde_json::Value = serde_json::from_slice(&s.object("config")).unwrap();
    assert!(config.as_object_mut().unwrap().remove("id").is_some());
    s.replace_object("config", Some(serde_json::to_vec_pretty(&config).unwrap()));
    for (sub, args) in [
        ("get", vec!["photos", "x"]),
        ("put", vec!["photos"]),
        ("list", vec![]),
    ] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        s.run(sub, &args)
            .failure()
            .stderr_has("run `cryptstream store migrate` once");
    }
    s.run("migrate", &[]).success().stderr_has("snapshot");
    let list = s.run("snapshots", &[&"--json"]).success().json();
    assert_eq!(list[0]["tags"], serde_json::json!(["migrated"]));
    let dest = s.ws.path("out");
    s.run("get", &[&"photos", &dest]).success();
    assert_diff_clean(&src, &dest.join("photos"));
    s.run("migrate", &[]).success().stderr_has("nothing to do");
    s.run("gc", &[]).success();
    s.run("verify", &[&"--read-data"]).success();
}

fn verify_names_damaged_moved_and_missing_snapshots_and_reindex_keeps_the_registry(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let s1 = snapshot_of(s.run("put", &[&src]).success());
    fs::write(src.join("x"), "x").unwrap();
    let s2 = snapshot_of(s.run("put", &[&src]).success());
    fs::write(src.join("y"), "y").unwrap();
    let s3 = snapshot_of(s.run("put", &[&src]).success());
    s.run("verify", &[]).success();
    let name_of = |id: &str| {
        s.objects("snapshots/")
            .into_iter()
            .find(|n| n.rsplit('/').next().unwrap().starts_with(id))
            .unwrap()
    };
    let (n1, n2, n3) = (name_of(&s1), name_of(&s2), name_of(&s3));
    // s1: one byte flipped; s2: replaced by s3's bytes (moved); s3: gone.
    let mut bytes = s.object(&n1);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    s.replace_object(&n1, Some(bytes));
    s.replace_object(&n2, Some(s.object(&n3)));
    s.replace_object(&n3, None);
    let out = s.run("verify", &[]);
    out.failure();
    out.stderr_has(&format!("snapshot {s1}"));
    out.stderr_has(&format!("snapshot {s2}"))
        .stderr_has("copied or moved");
    out.stderr_has(&format!("snapshot {s3}"))
        .stderr_has("missing");
    // get of each fails naming it, writing nothing under a final name.
    for id in [&s1, &s2, &s3] {
        s.run("get", &[id, &s.ws.path(format!("g-{id}"))]).failure();
    }
    // reindex cannot read two of them: exit 1, the old registry stays.
    let before = s.run("snapshots", &[&"--json"]).success().json();
    s.run("reindex", &[]).failure().stderr_has("snapshot");
    assert_eq!(s.run("snapshots", &[&"--json"]).success().json(), before);
}

fn reindex_rebuilds_snapshots_and_references_from_the_objects(kind: Kind) {
    let s = StoreWs::on(kind, SMALL_CHUNKS);
    let src = s.ws.path("photos");
    photos(&src, 1);
    let s1 = snapshot_of(s.run("put", &[&src]).success());
    fs::remove_file(src.join("b.jpg")).unwrap();
    let s2 = snapshot_of(s.run("put", &[&src]).success());
    let before = s.run("snapshots", &[&"--json"]).success().json();
    s.drop_registry();
    s.run("reindex", &[]).success();
    assert_eq!(s.run("snapshots", &[&"--json"]).success().json(), before);
    let conn = s.registry();
    let refs: i64 = conn
        .query_row(
            "SELECT refs FROM files WHERE name = 'photos/2024/c.jpg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refs, 2, "two snapshots reference one record of c.jpg");
    drop(conn);
    // Forgetting the first after a reindex reclaims b.jpg, keeps the rest.
    s.run("forget", &[&s1, &"--prune"]).success();
    let dest = s.ws.path("out");
    s.run("get", &[&s2, &dest]).success();
    assert_same_moment(&src, &dest.join("photos"));
    s.run("verify", &[&"--read-data"]).success();
}
