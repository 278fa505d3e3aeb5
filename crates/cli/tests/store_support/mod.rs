//! Helpers for the store tests: a store in a workspace, commands against
//! it, trees with mtimes, and comparisons.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::*;

/// Small chunks (16-256 KiB) for `store init`, so that every file has
/// several.
pub const SMALL_CHUNKS: &[&str] = &[
    "--chunk-min",
    "16KiB",
    "--chunk-avg",
    "64KiB",
    "--chunk-max",
    "256KiB",
];

/// Small chunks and 1 MiB packs for `store init`, so that a put commits
/// packs, and so changes durable state, often.
pub const SMALL: &[&str] = &[
    "--chunk-min",
    "16KiB",
    "--chunk-avg",
    "64KiB",
    "--chunk-max",
    "256KiB",
    "--pack-target",
    "1MiB",
];

#[path = "../../../s3/tests/support/seaweed.rs"]
pub mod seaweed;

/// Where a test's store lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory in the workspace.
    Local,
    /// A bucket of its own on the test binary's SeaweedFS.
    S3,
    /// A directory in the workspace served by a `serve --store` of its
    /// own on 127.0.0.1 (`cst://`); the registry is a client cache.
    Remote,
}

/// A `serve --store` for one test's store.
pub struct StoreServer {
    running: Running,
    dir: PathBuf,
    addr: String,
    fingerprint: String,
    token: PathBuf,
}

impl StoreServer {
    /// Starts `serve --store dir` with a new token beside it.
    fn start(ws: &Workspace, dir: &Path) -> StoreServer {
        let token = ws.path("serve-token");
        let (running, addr, fingerprint) = StoreServer::spawn(dir, &token, "127.0.0.1:0");
        StoreServer {
            running,
            dir: dir.to_owned(),
            addr,
            fingerprint,
            token,
        }
    }

    /// `serve --store dir` on `listen`: the process, its address and its
    /// certificate's fingerprint (kept beside the token, so a restart has
    /// the same).
    fn spawn(dir: &Path, token: &Path, listen: &str) -> (Running, String, String) {
        use std::io::BufRead;
        let mut cmd = cryptstream();
        cmd.arg("serve")
            .args(["--listen", listen, "--idle-timeout", "60", "--grace", "1"])
            .arg("--store")
            .arg(dir)
            .arg("--token-file")
            .arg(token)
            .arg("--create-token")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut running = Running::spawn(&mut cmd);
        let stdout = running.child_mut().stdout.take().expect("stdout is piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let (mut addr, mut fingerprint) = (None, None);
        while addr.is_none() || fingerprint.is_none() {
            let line = lines
                .next()
                .expect("serve --store printed its address and fingerprint")
                .unwrap();
            if let Some(rest) = line.strip_prefix("listening on ") {
                addr = Some(rest.to_owned());
            } else if let Some(rest) = line.strip_prefix("fingerprint ") {
                fingerprint = Some(rest.to_owned());
            }
        }
        // Keep reading stdout so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        (running, addr.unwrap(), fingerprint.unwrap())
    }

    /// SIGKILLs the server (the store's directory stays).
    fn kill(&mut self) {
        self.running.signal(libc::SIGKILL);
        self.running.wait(TIMEOUT);
    }

    /// Starts the server again on the same address, with the same
    /// certificate.
    fn restart(&mut self) {
        let (running, addr, fingerprint) = StoreServer::spawn(&self.dir, &self.token, &self.addr);
        assert_eq!(
            (&addr, &fingerprint),
            (&self.addr, &self.fingerprint),
            "the restarted server"
        );
        self.running = running;
    }
}

/// Generates, for each named test body `fn name(kind: Kind)`, one test per
/// backend: `local::name`, `s3::name` and `remote::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $name() { super::$name($crate::store_support::Kind::Local) } )*
        }
        $crate::on_shared_backends!($($name),*);
    };
}

/// Generates, for each named test body `fn name(kind: Kind)`, one test per
/// store that other clients share over the network: `s3::name` and
/// `remote::name`.
#[macro_export]
macro_rules! on_shared_backends {
    ($($name:ident),* $(,)?) => {
        mod s3 {
            $( #[test] fn $name() { super::$name($crate::store_support::Kind::S3) } )*
        }
        mod remote {
            $( #[test] fn $name() { super::$name($crate::store_support::Kind::Remote) } )*
        }
    };
}

/// A workspace with a store at `store/` or in a bucket; the registry
/// cache is `cache/` in the workspace.
pub struct StoreWs {
    pub ws: Workspace,
    pub kind: Kind,
    /// The bucket of an S3 store.
    bucket: String,
    /// The server of a remote store.
    server: Option<StoreServer>,
    /// The S3 server of the test's own (to kill and restart), if not the
    /// shared one.
    own_s3: Option<seaweed::Seaweed>,
}

impl StoreWs {
    /// A new local store with default settings and `extra` init flags.
    pub fn new(extra: &[&str]) -> StoreWs {
        StoreWs::on(Kind::Local, extra)
    }

    /// A new store of `kind`.
    pub fn on(kind: Kind, extra: &[&str]) -> StoreWs {
        StoreWs::make(kind, None, extra)
    }

    /// A new store of `kind` on a server of its own that the test may kill
    /// and restart ([`StoreWs::kill_server`]): a SeaweedFS of its own for
    /// S3 (a remote store has a `serve --store` of its own anyway).
    pub fn on_own_server(kind: Kind, extra: &[&str]) -> StoreWs {
        assert_ne!(kind, Kind::Local, "a local store has no server");
        let own = (kind == Kind::S3).then(seaweed::private_server);
        StoreWs::make(kind, own, extra)
    }

    fn make(kind: Kind, own_s3: Option<seaweed::Seaweed>, extra: &[&str]) -> StoreWs {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ws = Workspace::new();
        let bucket = format!(
            "store-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if kind == Kind::S3 {
            own_s3
                .as_ref()
                .unwrap_or_else(|| seaweed::server())
                .create_bucket(&bucket);
        }
        let server = (kind == Kind::Remote).then(|| StoreServer::start(&ws, &ws.path("store")));
        let s = StoreWs {
            ws,
            kind,
            bucket,
            server,
            own_s3,
        };
        let mut cmd = s.cmd("init");
        cmd.args(extra);
        run(&mut cmd).success();
        s
    }

    /// The store directory of a local store, or the one a remote store's
    /// server keeps.
    pub fn dir(&self) -> PathBuf {
        assert_ne!(self.kind, Kind::S3, "an S3 store has no directory");
        self.ws.path("store")
    }

    /// What `--store` says.
    pub fn location(&self) -> std::ffi::OsString {
        match self.kind {
            Kind::Local => self.ws.path("store").into_os_string(),
            Kind::S3 => format!("s3://{}/store", self.bucket).into(),
            Kind::Remote => format!("cst://{}", self.server.as_ref().unwrap().addr).into(),
        }
    }

    /// The registry cache root (`CRYPTSTREAM_CACHE_DIR`).
    pub fn cache(&self) -> PathBuf {
        self.ws.path("cache")
    }

    /// The SeaweedFS of an S3 store.
    fn seaweed(&self) -> &seaweed::Seaweed {
        self.own_s3.as_ref().unwrap_or_else(|| seaweed::server())
    }

    /// SIGKILLs the store's server: its SeaweedFS or its `serve --store`
    /// (a store made with [`StoreWs::on_own_server`]).
    pub fn kill_server(&mut self) {
        match self.kind {
            Kind::Local => panic!("a local store has no server"),
            Kind::S3 => self
                .own_s3
                .as_ref()
                .expect("a SeaweedFS of the test's own")
                .kill(),
            Kind::Remote => self.server.as_mut().unwrap().kill(),
        }
    }

    /// Starts the killed server again, on the same address.
    pub fn restart_server(&mut self) {
        match self.kind {
            Kind::Local => panic!("a local store has no server"),
            Kind::S3 => self
                .own_s3
                .as_ref()
                .expect("a SeaweedFS of the test's own")
                .restart(),
            Kind::Remote => self.server.as_mut().unwrap().restart(),
        }
    }

    /// `cmd(sub)` with the registry cache in `cache`: another user or
    /// machine, with a registry of its own.
    pub fn cmd_on(&self, cache: &Path, sub: &str) -> Command {
        let mut cmd = self.cmd(sub);
        cmd.env("CRYPTSTREAM_CACHE_DIR", cache);
        cmd
    }

    /// Points `cmd` at this store's cache and, on S3, its server.
    pub fn env(&self, cmd: &mut Command) {
        if self.kind == Kind::S3 {
            for (key, value) in self.seaweed().env() {
                cmd.env(key, value);
            }
        }
        cmd.env("CRYPTSTREAM_CACHE_DIR", self.cache());
        if let Some(server) = &self.server {
            cmd.arg("--token-file")
                .arg(&server.token)
                .arg("--server-fingerprint")
                .arg(&server.fingerprint);
        }
    }

    /// `cryptstream store --store LOCATION -k KEY -q SUB`.
    pub fn cmd(&self, sub: &str) -> Command {
        self.cmd_keyed(self.ws.key(), sub)
    }

    /// `cmd(sub)` with another key file.
    pub fn cmd_keyed(&self, key: &Path, sub: &str) -> Command {
        let mut cmd = cryptstream();
        cmd.arg("store");
        self.env(&mut cmd);
        cmd.current_dir(self.ws.root())
            .arg("--store")
            .arg(self.location())
            .arg("-k")
            .arg(key)
            .arg("-q")
            .arg(sub);
        cmd
    }

    /// The S3 client of an S3 store's bucket, for tests that look at or
    /// damage its objects.
    pub fn s3(&self) -> cryptstream_s3::S3Client {
        let env = self.seaweed().env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let location =
            cryptstream_s3::S3Location::parse(&format!("s3://{}/store", self.bucket)).unwrap();
        cryptstream_s3::S3Client::with_config(location, &Default::default(), &pairs).unwrap()
    }

    /// The packs and their sizes, by name.
    pub fn pack_objects(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = match self.kind {
            Kind::Local | Kind::Remote => {
                let root = self.dir();
                let mut files = Vec::new();
                walk_files(&root.join("packs"), &mut files);
                files
                    .into_iter()
                    .map(|f| {
                        let size = fs::metadata(&f).unwrap().len();
                        let name = f.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
                        (name, size)
                    })
                    .collect()
            }
            Kind::S3 => self
                .s3()
                .list("packs/")
                .unwrap()
                .into_iter()
                .map(|l| (l.key, l.size))
                .collect(),
        };
        out.sort();
        out
    }

    /// Flips one bit of byte `offset` of pack `name`, in place.
    pub fn flip_pack_byte(&self, name: &str, offset: usize) {
        match self.kind {
            Kind::Local | Kind::Remote => {
                let pack = self.dir().join(name);
                let mut perms = fs::metadata(&pack).unwrap().permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
                fs::set_permissions(&pack, perms).unwrap();
                let mut data = fs::read(&pack).unwrap();
                data[offset] ^= 0x01;
                fs::write(&pack, &data).unwrap();
            }
            Kind::S3 => {
                let s3 = self.s3();
                let mut data = s3.get(name).unwrap().unwrap().to_vec();
                data[offset] ^= 0x01;
                s3.put(name, data.into()).unwrap();
            }
        }
    }

    /// Removes the registry cache, as if it had been lost, or as another
    /// user or machine with a fresh cache would see the store.
    pub fn drop_registry(&self) {
        let _ = fs::remove_dir_all(self.cache());
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

pub fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
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

/// The short id of the snapshot a put printed (`snapshot XXXXXXXX`).
pub fn snapshot_of(out: &Outcome) -> String {
    out.stdout_text()
        .lines()
        .find_map(|l| l.strip_prefix("snapshot "))
        .unwrap_or_else(|| panic!("no snapshot line in: {}", out.stdout_text()))
        .trim()
        .to_owned()
}

/// The ids of a `list --json` listing, sorted.
pub fn listed_ids(listing: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Entries a running put reported complete so far: (id, name).
pub type Reported = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A `put` in flight, with the `ID  NAME` lines it has printed so far
/// collected by a thread.
pub struct PutRun {
    pub running: Running,
    reported: Reported,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl PutRun {
    /// Spawns `cmd` (a `put` without `--json`) with its stdout and stderr
    /// piped.
    pub fn spawn(cmd: &mut Command) -> PutRun {
        use std::io::{BufRead, BufReader};
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut running = Running::spawn(cmd);
        let stdout = running.child_mut().stdout.take().unwrap();
        let stderr_pipe = running.child_mut().stderr.take().unwrap();
        let reported: Reported = Default::default();
        let sink = reported.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((id, name)) = line.split_once("  ") {
                    let name = name.trim_end_matches("  (unchanged)");
                    sink.lock().unwrap().push((id.to_owned(), name.to_owned()));
                }
            }
        });
        let stderr: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let text = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        PutRun {
            running,
            reported,
            reader: Some(reader),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The process id.
    pub fn pid(&mut self) -> u32 {
        self.running.child_mut().id()
    }

    /// How many entries it has reported so far.
    pub fn reported_count(&self) -> usize {
        self.reported.lock().unwrap().len()
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit (at most [`TIMEOUT`]) and the end of its output:
    /// the exit status, every entry it reported, and its stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<(String, String)>, String) {
        let status = self.running.wait(TIMEOUT);
        self.reader.take().unwrap().join().unwrap();
        self.stderr_reader.take().unwrap().join().unwrap();
        let stderr = self.stderr_so_far();
        let reported = self.reported.lock().unwrap().clone();
        (status, reported, stderr)
    }
}

impl StoreWs {
    /// The registry file, in the cache (`stores/ID/` or `s3/BUCKET/HASH/`).
    pub fn registry_path(&self) -> PathBuf {
        let mut files = Vec::new();
        walk_files(&self.cache(), &mut files);
        files
            .into_iter()
            .find(|f| f.file_name().is_some_and(|n| n == "registry.sqlite"))
            .expect("the store's cache holds a registry")
    }

    /// The real SQLite registry, opened beside the binary's own use of it.
    pub fn registry(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.registry_path()).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        conn
    }

    /// The writers registered in the registry now: (role, pid).
    pub fn writers(&self) -> Vec<(String, u32)> {
        let conn = self.registry();
        let mut stmt = conn.prepare("SELECT role, pid FROM writers").unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Whether process `pid` is registered as a put.
    pub fn put_registered(&self, pid: u32) -> bool {
        self.writers()
            .iter()
            .any(|(role, p)| role == "put" && *p == pid)
    }

    /// The names of the objects below `prefix` (`packs/`, `manifests/`,
    /// `leases/`), sorted.
    pub fn objects(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = match self.kind {
            Kind::Local | Kind::Remote => {
                let root = self.dir();
                let mut files = Vec::new();
                walk_files(&root.join(prefix.trim_end_matches('/')), &mut files);
                files
                    .into_iter()
                    .map(|f| f.strip_prefix(&root).unwrap().to_str().unwrap().to_owned())
                    .collect()
            }
            Kind::S3 => self
                .s3()
                .list(prefix)
                .unwrap()
                .into_iter()
                .map(|l| l.key)
                .collect(),
        };
        out.sort();
        out
    }

    /// Replaces object `name` with `data` (or removes it with `None`).
    pub fn replace_object(&self, name: &str, data: Option<Vec<u8>>) {
        match self.kind {
            Kind::Local | Kind::Remote => {
                let path = self.dir().join(name);
                fs::remove_file(&path).unwrap();
                if let Some(data) = data {
                    fs::write(&path, data).unwrap();
                }
            }
            Kind::S3 => {
                let s3 = self.s3();
                match data {
                    Some(data) => s3.put(name, data.into()).unwrap(),
                    None => s3.delete(name).unwrap(),
                }
            }
        }
    }

    /// Writes object `name` as another client would (its folder made when
    /// missing).
    pub fn put_object(&self, name: &str, data: Vec<u8>) {
        match self.kind {
            Kind::Local | Kind::Remote => {
                let path = self.dir().join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, data).unwrap();
            }
            Kind::S3 => self.s3().put(name, data.into()).unwrap(),
        }
    }

    /// The bytes of object `name`.
    pub fn object(&self, name: &str) -> Vec<u8> {
        match self.kind {
            Kind::Local | Kind::Remote => fs::read(self.dir().join(name)).unwrap(),
            Kind::S3 => self.s3().get(name).unwrap().unwrap().to_vec(),
        }
    }
}

/// The entries a put of `root` stores: `root` itself and everything below.
pub fn entry_count(root: &Path) -> usize {
    snapshot(root).len()
}

/// How long a test waits for a process to get somewhere.
pub const WAIT: Duration = Duration::from_secs(60);

/// Waits until `condition` holds, failing the test with `what` after
/// [`WAIT`].
#[track_caller]
pub fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    // The hook points a test waits for exist only in a build with the
    // test knobs: say so rather than leave a bare time-out.
    let hint = if cfg!(feature = "test-knobs") {
        ""
    } else {
        " (this build has no test knobs: run the tests with --all-features)"
    };
    assert!(
        wait_until(WAIT, condition),
        "timed out waiting: {what}{hint}"
    );
}

/// A TCP proxy on 127.0.0.1 in front of a server, counting the
/// connections open through it at once (the most seen) and the HTTP
/// requests with a `Range` header that go through it.
pub struct Proxy {
    pub endpoint: String,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ranges: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The header line of a ranged read, as it appears in a request (matched
/// without regard to case).
const RANGE_HEADER: &[u8] = b"\r\nrange: bytes=";

/// Copies `from` to `to`, counting in `ranges` each [`RANGE_HEADER`] that
/// goes by (also one cut across two reads).
fn copy_counting_ranges(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    ranges: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    // The last bytes of the previous read, then the new ones.
    let mut window: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        window.extend_from_slice(&buf[..n]);
        let found = window
            .windows(RANGE_HEADER.len())
            .filter(|w| w.eq_ignore_ascii_case(RANGE_HEADER))
            .count();
        ranges.fetch_add(found, std::sync::atomic::Ordering::SeqCst);
        // Shorter than the header: no match is counted twice.
        let keep = window.len().min(RANGE_HEADER.len() - 1);
        window.drain(..window.len() - keep);
    }
}

impl Proxy {
    /// Forwards every connection to `127.0.0.1:port`; stops with the test
    /// binary.
    pub fn start(port: u16) -> Proxy {
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ranges = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, m, r) = (open.clone(), most.clone(), ranges.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                let o = o.clone();
                let r = r.clone();
                std::thread::spawn(move || {
                    // A connection stops counting as soon as either side
                    // closes it: it can carry no more requests.
                    let (closed, first_close) = std::sync::mpsc::channel();
                    // Requests go up (counted), responses come down.
                    let pipe = |from: TcpStream, to: TcpStream, count: bool| {
                        let closed = closed.clone();
                        let r = r.clone();
                        std::thread::spawn(move || {
                            let end = to.try_clone();
                            if count {
                                copy_counting_ranges(from, to, &r);
                            } else {
                                let (mut from, mut to) = (from, to);
                                let _ = std::io::copy(&mut from, &mut to);
                            }
                            if let Ok(end) = end {
                                let _ = end.shutdown(Shutdown::Write);
                            }
                            let _ = closed.send(());
                        })
                    };
                    let up = pipe(
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        true,
                    );
                    let down = pipe(server, client, false);
                    let _ = first_close.recv();
                    o.fetch_sub(1, Ordering::SeqCst);
                    let _ = up.join();
                    let _ = down.join();
                });
            }
        });
        Proxy {
            endpoint,
            open,
            most,
            ranges,
        }
    }

    /// Starts counting afresh: the most connections open at once from now.
    pub fn reset(&self) {
        use std::sync::atomic::Ordering;
        self.most
            .store(self.open.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Requests with a `Range` header sent through so far.
    pub fn ranged_requests(&self) -> usize {
        self.ranges.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most connections open at once since the last reset.
    pub fn most_at_once(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The `ETag` the server gives object `key` of `bucket` (a multipart
/// upload's ends in `-PARTS`).
pub fn etag(server: &seaweed::Seaweed, bucket: &str, key: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-I", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{}:{}", seaweed::ACCESS_KEY, seaweed::SECRET_KEY))
        .arg(format!("{}/{bucket}/{key}", server.endpoint))
        .output()
        .expect("running curl");
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("etag")
                .then(|| value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no ETag for {bucket}/{key}: {head}"))
}

/// A client of `s3://BUCKET/PREFIX` on `server`, for tests that write or
/// look at objects (leases) as another client would.
pub fn bucket_client(
    server: &seaweed::Seaweed,
    bucket: &str,
    prefix: &str,
) -> cryptstream_s3::S3Client {
    let env = server.env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let location = cryptstream_s3::S3Location::parse(&format!("s3://{bucket}/{prefix}")).unwrap();
    cryptstream_s3::S3Client::with_config(location, &Default::default(), &pairs).unwrap()
}

/// Writes a lease of `kind` (`put` or `gc`) taken `age` ago by a process
/// of another host into the store of `s`, as another client's would be;
/// returns its name.
pub fn foreign_lease(s: &StoreWs, kind: &str, age: Duration) -> String {
    let millis = SystemTime::now()
        .checked_sub(age)
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let name = format!("leases/{kind}-{millis:013}-0123456789abcdef0123456789abcdef");
    let body = "cryptstream lease\nhost another-machine\npid 1\n";
    s.put_object(&name, body.as_bytes().to_vec());
    name
}

/// A tree of `files` files of at most 600 KB in three directories
/// (`d0`-`d2`), their contents from `seed`.
pub fn small_tree(root: &Path, files: u64, seed: u64) {
    for i in 0..files {
        let dir = root.join(format!("d{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        write_random_file(
            &dir.join(format!("f{i}")),
            (i * 97_000 + 1000) % 600_000,
            seed + 2 * i,
            0o640,
        );
    }
}

/// `files` one-chunk files of 2-10 KB in `dir` (`f000`, `f001`, ...):
/// together they fit in one pack.
pub fn one_chunk_files(dir: &Path, files: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        write_random_file(
            &dir.join(format!("f{i:03}")),
            2_000 + i * 37,
            7_000 + i,
            0o644,
        );
    }
}
