//! Helpers for the store tests: a store in a workspace, commands against
//! it, trees with mtimes, and comparisons.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::*;

/// A workspace with a store at `store/`.
pub struct StoreWs {
    pub ws: Workspace,
}

impl StoreWs {
    /// A new store with default settings and `extra` init flags.
    pub fn new(extra: &[&str]) -> StoreWs {
        let ws = Workspace::new();
        let s = StoreWs { ws };
        let mut cmd = s.cmd("init");
        cmd.args(extra);
        run(&mut cmd).success();
        s
    }

    /// The store directory.
    pub fn dir(&self) -> PathBuf {
        self.ws.path("store")
    }

    /// `cryptstream store --store DIR -k KEY -q SUB`.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut cmd = cryptstream();
        cmd.current_dir(self.ws.root())
            .arg("store")
            .arg("--store")
            .arg(self.dir())
            .arg("-k")
            .arg(self.ws.key())
            .arg("-q")
            .arg(sub);
        cmd
    }

    /// Runs `sub args...` and returns the outcome.
    pub fn run(&self, sub: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Outcome {
        let mut cmd = self.cmd(sub);
        for a in args {
            cmd.arg(a.as_ref());
        }
        run(&mut cmd)
    }

    /// `stat --json`.
    pub fn stat(&self) -> serde_json::Value {
        self.run("stat", &[&"--json"]).success().json()
    }

    /// Files under the pack directory.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk_files(&self.dir().join("packs"), &mut out);
        out.sort();
        out
    }
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Sets the mtime of `path` (not following a symlink).
pub fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: nanos,
        },
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: nanos,
        },
    ];
    // SAFETY: a valid C string and two timespecs, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {path:?}");
}

/// Every entry's mtime (seconds, nanos) below `root`, symlinks not followed.
pub fn mtimes(root: &Path) -> Vec<(PathBuf, i64, i64)> {
    let mut out = Vec::new();
    for (rel, _) in snapshot(root) {
        let m = fs::symlink_metadata(root.join(&rel)).unwrap();
        out.push((rel, m.mtime(), m.mtime_nsec()));
    }
    out
}

/// A generated tree: sizes from 0 B up, symlinks, modes, mtimes.
pub fn make_tree(root: &Path, big: u64) {
    let tree = Tree::new(root);
    tree.dir("docs", 0o750)
        .dir("docs/deep/er", 0o755)
        .file("empty", 0, 0o644)
        .file("one", 1, 0o600)
        .file("docs/small.txt", 4096, 0o640)
        .file("docs/deep/er/medium.bin", 300 * 1024, 0o644)
        .file("exec.sh", 70_000, 0o755)
        .file("big.bin", big, 0o644)
        .symlink("link-rel", "docs/small.txt")
        .symlink("docs/dangling", "../nowhere/at/all");
    // A compressible file.
    let text: String = (0..200_000)
        .map(|i| format!("line {i} of a log\n"))
        .collect();
    fs::write(root.join("docs/log.txt"), text).unwrap();
    let mut t = 1_600_000_000i64;
    for (rel, _) in snapshot(root).into_iter().rev() {
        t += 1000;
        set_mtime(&root.join(rel), t, 123_456_789);
    }
}

/// Asserts `got` is `want` exactly: contents, modes, symlinks, mtimes.
#[track_caller]
pub fn assert_restored(want: &Path, got: &Path) {
    assert_same_tree(&snapshot(want), &snapshot(got));
    assert_eq!(mtimes(want), mtimes(got), "mtimes differ");
}

/// Waits a little (for tests that need a put in flight).
pub fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The ids printed by a put (`ID  NAME` lines), by name.
pub fn put_ids(out: &Outcome) -> Vec<(String, String)> {
    out.stdout_text()
        .lines()
        .filter_map(|l| {
            let (id, name) = l.split_once("  ")?;
            Some((
                id.to_owned(),
                name.trim_end_matches("  (unchanged)").to_owned(),
            ))
        })
        .collect()
}
