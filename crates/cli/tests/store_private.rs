//! Nothing in clear where the store lives: every byte and every name of
//! a store directory and of a bucket is searched for the names, paths,
//! size and host of what was put (also while a put holds its lease); the
//! registry is a cache of the user, outside the store, and a registry an
//! older version kept in the store directory moves there; the cache is
//! never reached through a symbolic link, and an edited cache cannot make
//! `get` return another file's bytes.

mod common;
mod store_support;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use store_support::*;

on_every_backend!(
    nothing_in_the_store_names_what_it_holds,
    a_stale_cache_does_not_reuse_chunks_that_another_users_gc_reclaimed,
);

/// A file that holds a put at its next hook point while it exists.
struct Hold(PathBuf);

impl Hold {
    fn new(s: &StoreWs) -> Hold {
        let path = s.ws.path("hold");
        fs::write(&path, b"held").unwrap();
        Hold(path)
    }

    fn wait_reached(&self) {
        let reached = self.0.with_extension("reached");
        wait_for("a put reaches a hook point", || reached.exists());
    }

    fn release(&self) {
        fs::remove_file(&self.0).unwrap();
    }
}

/// A size no object of the test's store has by chance, written as
/// decimal it is six digits that must not appear anywhere either.
const TELLING_SIZE: u64 = 271_828;

/// The names of a tree that a storage owner must not learn.
const TELLING_NAMES: &[&str] = &[
    "Wombat-Source-5r",
    "Zebra-Directory-7q",
    "Inner-Folder-2m",
    "Quokka-File-9x.txt",
    "Okapi-Notes-4w.md",
    "Tapir-Link-6j",
    "Narwhal-Target-3k",
];

/// Makes the tree at `root` (its last part `Wombat-Source-5r`).
fn telling_tree(root: &Path) {
    fs::create_dir_all(root.join("Zebra-Directory-7q/Inner-Folder-2m")).unwrap();
    write_random_file(
        &root.join("Zebra-Directory-7q/Quokka-File-9x.txt"),
        TELLING_SIZE,
        11,
        0o644,
    );
    write_random_file(
        &root.join("Zebra-Directory-7q/Inner-Folder-2m/Okapi-Notes-4w.md"),
        90_000,
        12,
        0o600,
    );
    std::os::unix::fs::symlink(
        "../Narwhal-Target-3k/elsewhere",
        root.join("Zebra-Directory-7q/Tapir-Link-6j"),
    )
    .unwrap();
}

/// Every object of the store: (name, bytes).
fn every_object(s: &StoreWs) -> Vec<(String, Vec<u8>)> {
    match s.kind {
        Kind::Local | Kind::Remote => {
            let root = s.dir();
            let mut files = Vec::new();
            walk(&root, &mut files);
            files
                .into_iter()
                .map(|f| {
                    let name = f.strip_prefix(&root).unwrap().display().to_string();
                    (name, fs::read(&f).unwrap())
                })
                .collect()
        }
        Kind::S3 => {
            let s3 = s.s3();
            s3.list("")
                .unwrap()
                .into_iter()
                .filter_map(|l| Some((l.key.clone(), s3.get(&l.key).unwrap()?.to_vec())))
                .collect()
        }
    }
}

/// Every file below `dir`, links not followed (a link is listed as a file
/// and read as what it points to would be: there must be none).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let kind = e.file_type().unwrap();
        assert!(
            !kind.is_symlink(),
            "a link in the store: {}",
            e.path().display()
        );
        if kind.is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// Fails naming the object and the string if any object's name or bytes
/// hold any of `telling`.
#[track_caller]
fn assert_nothing_tells(s: &StoreWs, telling: &[String], when: &str) -> usize {
    let objects = every_object(s);
    for (name, bytes) in &objects {
        for t in telling {
            assert!(
                !name.contains(t.as_str()),
                "{when}: object name {name} holds {t:?}"
            );
            let found = bytes.windows(t.len()).any(|w| w == t.as_bytes());
            assert!(!found, "{when}: object {name} holds {t:?}");
        }
    }
    objects.len()
}

fn nothing_in_the_store_names_what_it_holds(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    let src = s.ws.path("Wombat-Source-5r");
    telling_tree(&src);
    let absolute = fs::canonicalize(&src).unwrap().display().to_string();
    let mut telling: Vec<String> = TELLING_NAMES.iter().map(|n| n.to_string()).collect();
    telling.push(absolute);
    telling.push(TELLING_SIZE.to_string());
    // The host name, when it is long enough not to turn up in ciphertext
    // by chance (a two-letter one would: any 64 KiB holds most pairs).
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    if host.trim().len() >= 6 {
        telling.push(host.trim().to_owned());
    }
    // While a put holds its lease, before and after its objects exist.
    let hold = Hold::new(&s);
    let mut cmd = s.cmd("put");
    cmd.arg(&src)
        .env("CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE", &hold.0);
    let put = PutRun::spawn(&mut cmd);
    hold.wait_reached();
    assert!(
        !s.objects("leases/").is_empty(),
        "a held put has a lease object"
    );
    assert_nothing_tells(&s, &telling, "while a put is held");
    hold.release();
    let (status, reported, stderr) = put.finish();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(reported.len(), entry_count(&src));
    let objects = assert_nothing_tells(&s, &telling, "after the put");
    assert!(
        !s.objects("packs/").is_empty() && !s.objects("manifests/").is_empty(),
        "the put wrote packs and manifests ({objects} objects)"
    );
    // A second put without one file, a forget of the first snapshot and a
    // gc (which reclaims that file and takes a lease) tell no more.
    fs::remove_file(src.join("Zebra-Directory-7q/Quokka-File-9x.txt")).unwrap();
    s.run("put", &[&src]).success();
    s.run("forget", &[&"--keep-last", &"1"]).success();
    s.run("gc", &[]).success();
    assert_nothing_tells(&s, &telling, "after a forget and a gc");
    // The names are all in the registry, which is the user's, elsewhere.
    let registry = s.registry_path();
    assert!(!registry.starts_with(s.ws.path("store")));
    let out = s.ws.path("out");
    s.run("get", &[&"Wombat-Source-5r", &out]).success();
    assert!(out
        .join("Wombat-Source-5r/Zebra-Directory-7q/Inner-Folder-2m/Okapi-Notes-4w.md")
        .is_file());
}

/// The registry files a local store kept in its directory before.
fn old_registry_files(s: &StoreWs) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| s.dir().join(format!("registry.sqlite{suffix}")))
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect()
}

/// A local store as an older version left it: the registry in the store
/// directory and no cache.
fn as_before_the_cache(s: &StoreWs) {
    let registry = s.registry_path();
    for suffix in ["", "-wal"] {
        let mut from = registry.clone().into_os_string();
        from.push(suffix);
        if Path::new(&from).exists() {
            fs::copy(&from, s.dir().join(format!("registry.sqlite{suffix}"))).unwrap();
        }
    }
    s.drop_registry();
}

#[test]
fn a_registry_left_in_the_store_directory_moves_to_the_cache_on_the_next_open() {
    let s = StoreWs::new(SMALL);
    let src = s.ws.path("moved");
    make_tree(&src, 200_000);
    s.run("put", &[&src]).success();
    let listed = s.run("list", &[&"--json"]).success().json();
    as_before_the_cache(&s);
    assert!(!old_registry_files(&s).is_empty());
    let relisted = s.run("list", &[&"--json"]).success().json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    assert_eq!(
        old_registry_files(&s),
        Vec::<PathBuf>::new(),
        "left in the store"
    );
    let registry = s.registry_path();
    assert_eq!(mode_of(&registry), 0o600);
    assert_eq!(mode_of(registry.parent().unwrap()), 0o700);
    // Moved, not rebuilt: what put knows of its sources came along, so a
    // second put finds every entry unchanged (a registry rebuilt from the
    // objects knows no source and would read them all again).
    let again = s.run("put", &[&src]);
    let text = again.success().stdout_text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("snapshot "))
        .collect();
    assert_eq!(lines.len(), entry_count(&src), "{text}");
    assert!(
        lines.iter().all(|l| l.ends_with("(unchanged)")),
        "a re-put after the move read its sources again:\n{text}"
    );
    s.run("verify", &[&"--read-data"]).success();
}

#[test]
fn a_damaged_registry_left_in_the_store_directory_is_rebuilt_from_the_objects_and_removed() {
    let s = StoreWs::new(SMALL);
    let src = s.ws.path("rebuilt");
    make_tree(&src, 200_000);
    s.run("put", &[&src]).success();
    let listed = s.run("list", &[&"--json"]).success().json();
    s.drop_registry();
    fs::write(s.dir().join("registry.sqlite"), vec![0x5a; 8192]).unwrap();
    let relisted = s.run("list", &[&"--json"]).success().json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    assert_eq!(
        old_registry_files(&s),
        Vec::<PathBuf>::new(),
        "left in the store"
    );
    let out = s.ws.path("out");
    s.run("get", &[&"rebuilt", &out]).success();
    assert_restored(&src, &out.join("rebuilt"));
}

/// The cache directories of local stores (`cache/stores/*`).
fn store_caches(s: &StoreWs) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(s.cache().join("stores"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_config_without_an_id_gets_one_from_its_key_that_does_not_change() {
    let s = StoreWs::new(SMALL);
    let src = s.ws.path("legacy");
    make_tree(&src, 100_000);
    s.run("put", &[&src]).success();
    let listed = s.run("list", &[&"--json"]).success().json();
    let config_path = s.dir().join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    let id = config["id"]
        .as_str()
        .expect("a new config has an id")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(store_caches(&s), vec![id.clone()]);
    // A config as written before store ids.
    config.as_object_mut().unwrap().remove("id");
    fs::remove_file(&config_path).unwrap();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    s.drop_registry();
    let relisted = s.run("list", &[&"--json"]).success().json();
    assert_eq!(listed_ids(&listed), listed_ids(&relisted));
    let derived = store_caches(&s);
    assert_eq!(derived.len(), 1);
    assert_ne!(derived[0], id);
    assert!(derived[0].bytes().all(|b| b.is_ascii_hexdigit()) && derived[0].len() == 32);
    // The same id every time: one cache, not one per command.
    s.run("put", &[&src]).success();
    s.run("list", &[]).success();
    assert_eq!(store_caches(&s), derived);
    // An id that could name another directory is refused.
    config["id"] = serde_json::Value::from("../../elsewhere");
    fs::remove_file(&config_path).unwrap();
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    s.run("list", &[])
        .failure()
        .stderr_has("store id is not 32 lowercase hex digits");
    assert_eq!(store_caches(&s), derived);
}

#[test]
fn a_cache_directory_replaced_by_a_symbolic_link_is_refused() {
    let s = StoreWs::new(SMALL);
    let src = s.ws.path("linked");
    make_tree(&src, 100_000);
    s.run("put", &[&src]).success();
    let cache_dir = s.registry_path().parent().unwrap().to_path_buf();
    let moved = s.ws.path("moved-cache");
    fs::rename(&cache_dir, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &cache_dir).unwrap();
    let before = fs::read(moved.join("registry.sqlite")).unwrap();
    let out = s.ws.path("out");
    for (sub, args) in [("list", vec![]), ("get", vec!["linked", "out"])] {
        let mut cmd = s.cmd(sub);
        cmd.args(&args);
        let outcome = run(&mut cmd);
        outcome
            .failure()
            .stderr_has(&cache_dir.display().to_string())
            .stderr_has("symbolic link");
        assert_eq!(
            outcome.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            outcome.stderr
        );
    }
    assert!(!out.exists(), "get wrote");
    assert_eq!(fs::read(moved.join("registry.sqlite")).unwrap(), before);
    assert_eq!(
        mode_of(&moved),
        0o700,
        "its target was not made anything else"
    );
}

#[test]
fn a_cache_row_pointing_a_name_at_another_files_chunks_fails_that_file_and_writes_nothing() {
    let s = StoreWs::new(SMALL_CHUNKS);
    let src = s.ws.path("reg");
    fs::create_dir_all(&src).unwrap();
    write_random_file(&src.join("a.bin"), 300_000, 81, 0o644);
    write_random_file(&src.join("b.bin"), 500_000, 82, 0o644);
    s.run("put", &[&src]).success();
    {
        let conn = s.registry();
        let row = |name: &str| -> i64 {
            conn.query_row(
                "SELECT id FROM files WHERE name = ?1 AND status = 'complete'",
                [name],
                |r| r.get(0),
            )
            .unwrap()
        };
        let (a, b) = (row("reg/a.bin"), row("reg/b.bin"));
        // reg/a.bin becomes, row for row, reg/b.bin's chunk list and size.
        conn.execute_batch(&format!(
            "DELETE FROM file_chunks WHERE file = {a};
             INSERT INTO file_chunks(file, seq, chunk, len)
               SELECT {a}, seq, chunk, len FROM file_chunks WHERE file = {b};
             UPDATE files SET size = (SELECT size FROM files WHERE id = {b}),
               chunks = (SELECT chunks FROM files WHERE id = {b}) WHERE id = {a};"
        ))
        .unwrap();
    }
    let out = s.ws.path("out");
    let get = s.run("get", &[&"reg", &out]);
    get.failure().stderr_has("reg/a.bin");
    assert!(!out.join("reg/a.bin").exists(), "a.bin was written");
    assert_eq!(
        fs::read(out.join("reg/b.bin")).unwrap(),
        fs::read(src.join("b.bin")).unwrap()
    );
    // Rebuilt from the store's objects, the cache is right again.
    s.run("reindex", &[]).success();
    let again = s.ws.path("again");
    s.run("get", &[&"reg", &again]).success();
    assert_same_tree(&snapshot(&src), &snapshot(&again.join("reg")));
}

/// `sub args...` run by another user of the store: a registry cache of
/// its own (`cache-NAME` in the workspace).
fn as_user(s: &StoreWs, user: &str, sub: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Outcome {
    let mut cmd = s.cmd(sub);
    cmd.env("CRYPTSTREAM_CACHE_DIR", s.ws.path(format!("cache-{user}")));
    for a in args {
        cmd.arg(a.as_ref());
    }
    run(&mut cmd)
}

fn a_stale_cache_does_not_reuse_chunks_that_another_users_gc_reclaimed(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    // This user stores a file; its chunks fill a pack of their own.
    let first = s.ws.path("first");
    fs::create_dir_all(&first).unwrap();
    write_random_file(&first.join("data.bin"), 400_000, 91, 0o644);
    s.run("put", &[&first]).success();
    let packs = s.objects("packs/");
    // Another user, whose cache is filled from the store, forgets it and
    // reclaims its space.
    as_user(&s, "b", "forget", &[&"--keep-last", &"0"]).success();
    as_user(&s, "b", "gc", &[]).success();
    let left = s.objects("packs/");
    assert!(
        packs.iter().all(|p| !left.contains(p)),
        "the other user's gc reclaimed the file's pack: {packs:?} {left:?}"
    );
    // This user's cache still says those chunks are stored. A put of the
    // same bytes must store them again, not point at the pack that went.
    let second = s.ws.path("second");
    fs::create_dir_all(&second).unwrap();
    fs::copy(first.join("data.bin"), second.join("same.bin")).unwrap();
    s.run("put", &[&second]).success();
    // Every object the store holds is whole, as a third user sees it, and
    // the file comes back through either cache.
    as_user(&s, "c", "verify", &[&"--read-data"]).success();
    let out = s.ws.path("out");
    as_user(&s, "c", "get", &[&"second", &out]).success();
    assert_same_tree(&snapshot(&second), &snapshot(&out.join("second")));
    let mine = s.ws.path("mine");
    s.run("get", &[&"second", &mine]).success();
    assert_same_tree(&snapshot(&second), &snapshot(&mine.join("second")));
    // This user's cache still lists the deleted file (a cache is not
    // authoritative): verify names what is gone; a reindex refreshes it.
    s.run("verify", &[]).failure().stderr_has("is missing");
    s.run("reindex", &[]).success();
    s.run("verify", &[&"--read-data"]).success();
}
