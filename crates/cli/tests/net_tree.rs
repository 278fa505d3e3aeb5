//! `send` of a whole tree like `rsync -a`, against a real `serve` on
//! 127.0.0.1: symbolic links (relative, absolute, dangling, to a
//! directory), empty and private directories, hard links and old
//! nanosecond mtimes arrive exact; a second send sends no file byte; the
//! quick check and `--checksum`; the mode policy (special bits); and raw
//! clients that try to use the new frames to leave the root.

mod common;
mod net_support;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use cryptstream_net::frame::{Compare, EntryTime, ErrorCode, FileMeta, Frame};
use cryptstream_net::Token;
use net_support::*;

/// Differences between the metadata of two trees (empty: the same).
fn differences(expected: &Path, actual: &Path) -> Vec<String> {
    let (want, got) = (metadata_of(expected), metadata_of(actual));
    let mut problems = Vec::new();
    for (rel, meta) in &want {
        match got.get(rel) {
            Some(have) if have == meta => {}
            other => problems.push(format!("{rel:?}: want {meta:?}, got {other:?}")),
        }
    }
    for rel in got.keys().filter(|r| !want.contains_key(*r)) {
        problems.push(format!("unexpected {rel:?}"));
    }
    // The top directory itself.
    let (a, b) = (
        std::fs::metadata(expected).unwrap(),
        std::fs::metadata(actual).unwrap(),
    );
    if (a.mode(), a.mtime(), a.mtime_nsec()) != (b.mode(), b.mtime(), b.mtime_nsec()) {
        problems.push(format!(
            "top directory: want {:o} {}.{}, got {:o} {}.{}",
            a.mode(),
            a.mtime(),
            a.mtime_nsec(),
            b.mode(),
            b.mtime(),
            b.mtime_nsec()
        ));
    }
    problems
}

#[track_caller]
fn assert_same_tree_exactly(expected: &Path, actual: &Path) {
    let problems = differences(expected, actual);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let diff = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(expected)
        .arg(actual)
        .output()
        .expect("diff runs");
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// [`real_tree`] plus a file from 1999 with nanoseconds; the total bytes
/// of its regular files, one count per inode.
fn source_tree(src: &Path) -> u64 {
    real_tree(src);
    let old = src.join("old-1999");
    write_random_file(&old, 777, 99, 0o640);
    set_mtime(&old, 930_000_000, 987_654_321);
    set_mtime(src, 940_000_000, 111_111_111);
    let mut seen = std::collections::BTreeSet::new();
    metadata_of(src)
        .iter()
        .filter(|(_, m)| m.kind == "file")
        .filter(|(rel, _)| {
            let meta = std::fs::metadata(src.join(rel)).unwrap();
            seen.insert(meta.ino())
        })
        .map(|(rel, _)| std::fs::metadata(src.join(rel)).unwrap().len())
        .sum()
}

#[test]
fn a_whole_tree_arrives_exact_and_a_second_send_sends_no_file_byte() {
    let ws = Workspace::new();
    let src = ws.path("tree");
    let total = source_tree(&src);
    let mut served = Served::start(ws.root(), &[]);
    let arrived = served.root.join("tree");

    let first = run(served.send(&[&src]).args(["--connections", "3"]))
        .success()
        .json();
    assert_eq!(first["bytes_sent"], total, "{first}");
    assert_eq!(first["bytes_skipped"], 0, "{first}");
    assert_eq!(first["symlinks"], 5, "{first}");
    assert_eq!(first["hard_links"], 3, "{first}");
    // tree, bin, empty, private, secret, src, src/lib
    assert_eq!(first["directories"], 7, "{first}");
    assert_eq!(first["failures"].as_array().unwrap().len(), 0, "{first}");
    assert_same_tree_exactly(&src, &arrived);

    // Again: every file is found by size and mtime, no byte travels.
    let second = run(&mut served.send(&[&src])).success().json();
    assert_eq!(second["bytes_sent"], 0, "{second}");
    assert_eq!(second["bytes_skipped"], total, "{second}");
    assert_eq!(second["files_skipped"], second["files"], "{second}");
    assert_same_tree_exactly(&src, &arrived);

    // New content of the same size under the same mtime: the quick check
    // cannot see it, `--checksum` does and sends that file alone.
    let changed = src.join("secret/key.pem");
    let before = std::fs::metadata(&changed).unwrap();
    write_random_file(&changed, before.len(), 1234, 0o600);
    set_mtime(&changed, before.mtime(), before.mtime_nsec());
    let quick = run(&mut served.send(&[&src])).success().json();
    assert_eq!(quick["bytes_sent"], 0, "{quick}");
    assert_ne!(
        hash_file(&changed),
        hash_file(&arrived.join("secret/key.pem")),
        "the quick check skipped it"
    );
    let checked = run(served.send(&[&src]).arg("--checksum")).success().json();
    assert_eq!(checked["bytes_sent"], before.len(), "{checked}");
    assert_eq!(checked["bytes_skipped"], total - before.len(), "{checked}");
    assert_same_tree_exactly(&src, &arrived);
    assert!(served.alive());
}

#[test]
fn special_bits_are_dropped_unless_the_server_keeps_them() {
    let ws = Workspace::new();
    let src = ws.path("bits");
    Tree::new(&src)
        .file("setuid", 100, 0o4755)
        .file("plain", 10, 0o640)
        .dir("shared", 0o1777);
    set_mode(&src.join("setuid"), 0o4755);
    let served = Served::start(ws.root(), &[]);
    run(&mut served.send(&[&src])).success();
    let arrived = served.root.join("bits");
    assert_eq!(mode_of(&arrived.join("setuid")) & 0o7777, 0o755);
    assert_eq!(mode_of(&arrived.join("plain")) & 0o7777, 0o640);
    assert_eq!(mode_of(&arrived.join("shared")) & 0o7777, 0o755);
    let dir = ws.path("keeping");
    std::fs::create_dir(&dir).unwrap();
    let keeping = Served::start(&dir, &["--keep-special-bits"]);
    run(&mut keeping.send(&[&src])).success();
    let arrived = keeping.root.join("bits");
    assert_eq!(mode_of(&arrived.join("setuid")) & 0o7777, 0o4755);
    assert_eq!(mode_of(&arrived.join("shared")) & 0o7777, 0o1755);
}

#[track_caller]
fn assert_refused(raw: &mut RawClient, id: u32) {
    match raw.read() {
        Some(Frame::Error {
            code: ErrorCode::BadName,
            file_id,
            ..
        }) if file_id == id => {}
        other => panic!("expected name refused for {id}, got {other:?}"),
    }
}

const TIME: EntryTime = EntryTime {
    seconds: 946_684_800,
    nanos: 1,
};

#[test]
fn tree_frames_never_reach_outside_the_root() {
    let ws = Workspace::new();
    let mut served = Served::start(ws.root(), &[]);
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("passwd");
    std::fs::write(&victim, b"root:x:0:0").unwrap();
    let victim_meta = std::fs::metadata(&victim).unwrap();
    let victim_mode = mode_of(&victim);
    let token = Token::read(&served.token).unwrap();
    let mut raw = RawClient::authenticated(&served, &token);
    // A link out of the root is stored as it is...
    raw.write(&Frame::Symlink {
        entry_id: 1,
        mtime: TIME,
        name: b"a",
        target: outside.path().as_os_str().as_bytes(),
    });
    assert_eq!(raw.read(), Some(Frame::Made { entry_id: 1 }));
    // ... and nothing goes through it: a file, a directory, a link, a
    // hard link, a check.
    raw.write(&Frame::Open {
        file_id: 2,
        meta: meta(4),
        name: b"a/passwd",
    });
    assert_refused(&mut raw, 2);
    raw.write(&Frame::Mkdir {
        entry_id: 3,
        mode: 0o777,
        mtime: TIME,
        name: b"a/dir",
    });
    assert_refused(&mut raw, 3);
    raw.write(&Frame::Symlink {
        entry_id: 4,
        mtime: TIME,
        name: b"a/link",
        target: b"/",
    });
    assert_refused(&mut raw, 4);
    raw.write(&Frame::Link {
        entry_id: 5,
        name: b"stolen",
        target: b"a/passwd",
    });
    assert_refused(&mut raw, 5);
    raw.write(&Frame::Link {
        entry_id: 6,
        name: b"a/planted",
        target: b"a",
    });
    assert_refused(&mut raw, 6);
    let victim_as_sent = FileMeta {
        size: victim_meta.len(),
        mtime_seconds: victim_meta.mtime(),
        mtime_nanos: victim_meta.mtime_nsec() as u32,
        mode: 0o7777,
    };
    raw.write(&Frame::Check {
        check_id: 7,
        compare: Compare::SizeAndMtime,
        meta: victim_as_sent.clone(),
        name: b"a/passwd",
    });
    assert_eq!(
        raw.read(),
        Some(Frame::Checked {
            check_id: 7,
            held: false
        })
    );
    // A hard link to the link itself, or to a directory: refused.
    raw.write(&Frame::Link {
        entry_id: 8,
        name: b"b",
        target: b"a",
    });
    assert_refused(&mut raw, 8);
    // Names and targets that leave the root.
    let escapes: [(&[u8], &[u8]); 4] = [
        (b"../up", b"x"),
        (b"ok", b"../x"),
        (b"ok", b"/etc/passwd"),
        (b"a/../../up", b"x"),
    ];
    for (i, (name, target)) in escapes.iter().enumerate() {
        let id = 10 + i as u32;
        raw.write(&Frame::Link {
            entry_id: id,
            name,
            target,
        });
        assert_refused(&mut raw, id);
    }
    raw.write(&Frame::Symlink {
        entry_id: 20,
        mtime: TIME,
        name: b"../up",
        target: b"x",
    });
    assert_refused(&mut raw, 20);
    raw.write(&Frame::Mkdir {
        entry_id: 21,
        mode: 0o777,
        mtime: TIME,
        name: b"..",
    });
    assert_refused(&mut raw, 21);
    raw.write(&Frame::Bye);
    // Nothing changed outside: same entries, same bytes, same mode.
    assert_eq!(list_dir(outside.path()), vec!["passwd"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:x:0:0");
    assert_eq!(mode_of(&victim), victim_mode);
    assert_eq!(list_dir(&served.root), vec!["a"]);
    // The server goes on serving an honest tree.
    assert!(served.alive());
    let src = ws.path("honest");
    Tree::new(&src).file("f", 1000, 0o644).symlink("l", "f");
    run(&mut served.send(&[&src])).success();
    assert_same_tree_exactly(&src, &served.root.join("honest"));
}

#[test]
fn a_directory_whose_contents_failed_keeps_its_mode_until_they_arrive() {
    let ws = Workspace::new();
    let src = ws.path("t");
    Tree::new(&src)
        .file("ro/blocked", 100, 0o644)
        .file("ro/fine", 100, 0o644)
        .file("other", 10, 0o644);
    set_mode(&src.join("ro"), 0o555);
    set_mtime(&src.join("ro"), 950_000_000, 5);
    set_mtime(&src, 950_000_000, 6);
    let served = Served::start(ws.root(), &[]);
    // On the server, a directory stands where t/ro/blocked goes.
    std::fs::create_dir_all(served.root.join("t/ro/blocked/inside")).unwrap();
    let out = run(&mut served.send(&[&src]));
    out.failure();
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line, for the file: {}", out.stderr);
    assert!(lines[0].contains("t/ro/blocked"), "{}", lines[0]);
    let summary = out.json();
    assert_eq!(summary["files"], 2, "{summary}");
    assert_eq!(summary["directories"], 0, "{summary}");
    // Neither t/ro nor t got the sender's mode and mtime: they keep what
    // they had.
    let ro = std::fs::metadata(served.root.join("t/ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o755);
    assert_ne!(ro.mtime(), 950_000_000);
    assert_ne!(
        std::fs::metadata(served.root.join("t")).unwrap().mtime(),
        950_000_000
    );
    // Once the obstacle is gone, the next send completes the tree.
    std::fs::remove_dir_all(served.root.join("t/ro/blocked")).unwrap();
    let out = run(&mut served.send(&[&src])).success().json();
    assert_eq!(out["files_skipped"], 2, "{out}");
    // Its bytes were held in a partial file since the failed commit.
    let moved = out["bytes_sent"].as_u64().unwrap() + out["bytes_resumed"].as_u64().unwrap();
    assert_eq!(moved, 100, "{out}");
    assert_same_tree_exactly(&src, &served.root.join("t"));
}

#[test]
fn a_version_2_client_is_told_the_version() {
    let ws = Workspace::new();
    let served = Served::start(ws.root(), &[]);
    let mut raw = RawClient::connect(&served);
    raw.write(&Frame::Hello {
        version: 2,
        nonce: [7; 32],
    });
    match raw.read() {
        Some(Frame::Error {
            code: ErrorCode::Version,
            message,
            ..
        }) => assert!(message.contains("version 2"), "{message}"),
        other => panic!("expected a version error, got {other:?}"),
    }
}
