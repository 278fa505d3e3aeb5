//! A store on a `serve --store` server (`cst://127.0.0.1:PORT`): the real
//! binary on both ends, on loopback. A round trip through the server
//! equals the source; a wrong token or a changed certificate moves
//! nothing; `--append-only` refuses deletes from clients (the local gc on
//! the server's directory still works); the server's directory holds no
//! name and no content of the tree.

mod common;
mod net_support;
mod store_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use cryptstream_net::frame::{ErrorCode, Frame};
use cryptstream_net::Token;
use net_support::*;
use store_support::*;

/// A local store at `ws/store`, served with `extra` flags.
struct Remote {
    s: StoreWs,
    served: Served,
}

impl Remote {
    /// A store made locally in `ws/store`, then served.
    fn start(extra: &[&str]) -> Remote {
        Remote::serve(StoreWs::new(SMALL), extra)
    }

    fn serve(s: StoreWs, extra: &[&str]) -> Remote {
        let dir = s.dir();
        let mut args = vec!["--store", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let served = Served::start_env(&s.ws.path("token"), &s.ws.path("unused"), &args, &[]);
        Remote { s, served }
    }

    fn location(&self) -> String {
        format!("cst://{}", self.served.addr)
    }

    /// `store --store cst://... --token-file T --server-fingerprint F SUB ARGS`.
    fn cmd_with(
        &self,
        token: &Path,
        fingerprint: &str,
        sub: &str,
        args: &[&dyn AsRef<std::ffi::OsStr>],
    ) -> Command {
        self.cmd_to(&self.location(), token, fingerprint, sub, args)
    }

    /// As [`Remote::cmd_with`], to `location` (the server, or a proxy in
    /// front of it).
    fn cmd_to(
        &self,
        location: &str,
        token: &Path,
        fingerprint: &str,
        sub: &str,
        args: &[&dyn AsRef<std::ffi::OsStr>],
    ) -> Command {
        let mut cmd = cryptstream();
        cmd.current_dir(self.s.ws.root())
            .env("CRYPTSTREAM_CACHE_DIR", self.s.ws.path("client-cache"))
            .arg("store")
            .arg("--store")
            .arg(location)
            .arg("--token-file")
            .arg(token)
            .arg("--server-fingerprint")
            .arg(fingerprint)
            .arg("-k")
            .arg(self.s.ws.key())
            .arg("-q")
            .arg(sub);
        for arg in args {
            cmd.arg(arg.as_ref());
        }
        cmd
    }

    /// `store --store cst://... --token-file T --known-hosts K SUB` (trust on first use).
    fn cmd_known_hosts(&self, known_hosts: &Path, sub: &str) -> Command {
        let mut cmd = cryptstream();
        cmd.current_dir(self.s.ws.root())
            .env("CRYPTSTREAM_CACHE_DIR", self.s.ws.path("client-cache"))
            .arg("store")
            .arg("--store")
            .arg(self.location())
            .arg("--token-file")
            .arg(&self.served.token)
            .arg("--known-hosts")
            .arg(known_hosts)
            .arg("-k")
            .arg(self.s.ws.key())
            .arg("-q")
            .arg(sub);
        cmd
    }

    fn run(&self, sub: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Outcome {
        run(&mut self.cmd_with(&self.served.token, &self.served.fingerprint, sub, args))
    }
}

/// Byte-for-byte equal trees (`diff -r`).
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A small tree with recognisable names and contents.
fn make_src(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (i, name) in [
        "secret-plans.txt",
        "sub/diary-of-zebra.md",
        "sub/deeper/payroll.csv",
    ]
    .iter()
    .enumerate()
    {
        let path = root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut data = format!("marker-content-{i}-").repeat(2000).into_bytes();
        data.extend(random_bytes(300_000, i as u64));
        fs::write(&path, &data).unwrap();
        files.push((name.rsplit('/').next().unwrap().to_owned(), data));
    }
    files
}

#[test]
fn a_tree_round_trips_through_a_store_server() {
    // The server starts on an empty folder; the client makes the store.
    let s = StoreWs::new(SMALL);
    fs::rename(s.dir(), s.ws.path("made-locally")).unwrap();
    let r = Remote::serve(s, &[]);
    let mut init = r.cmd_with(&r.served.token, &r.served.fingerprint, "init", &[]);
    init.args(SMALL);
    run(&mut init).success();
    assert!(r.s.dir().join("config").is_file());
    let src = r.s.ws.path("src");
    make_src(&src);
    r.run("put", &[&src]).success();
    r.run("verify", &[&"--read-data"]).success();
    let dest = r.s.ws.path("out");
    r.run("get", &[&"src", &dest]).success();
    assert_same_tree(&src, &dest.join("src"));
    // The server's directory is an ordinary local store holding the same
    // (its own registry learns of the clients' puts by a reindex).
    r.s.run("reindex", &[]).success();
    let local = r.s.ws.path("local-out");
    r.s.run("get", &[&"src", &local]).success();
    assert_same_tree(&src, &local.join("src"));
}

#[test]
fn large_chunks_sent_whole_and_small_ones_gathered_round_trip_through_a_store_server() {
    // Default chunks (256 KiB to 4 MiB), so that the client sends large
    // blobs as they are and gathers small ones into blocks, in packs of
    // 2 MiB, so that an object is committed often.
    let r = Remote::serve(StoreWs::new(&["--pack-target", "2MiB"]), &[]);
    let src = r.s.ws.path("mixed");
    fs::create_dir_all(&src).unwrap();
    for (i, len) in [5 << 20, 10, 700_000, 0, 3_000, 1 << 20, 300_000, 77]
        .into_iter()
        .enumerate()
    {
        fs::write(src.join(format!("f{i}")), random_bytes(len, 40 + i as u64)).unwrap();
    }
    r.run("put", &[&src]).success();
    r.run("verify", &[&"--read-data"]).success();
    let dest = r.s.ws.path("out");
    r.run("get", &[&"mixed", &dest]).success();
    assert_same_tree(&src, &dest.join("mixed"));
}

#[test]
fn a_wrong_token_or_another_certificate_moves_nothing() {
    let r = Remote::start(&[]);
    let src = r.s.ws.path("src");
    make_src(&src);
    let packs_before = r.s.pack_objects();
    let wrong = r.s.ws.path("wrong-token");
    Token::generate().write_new(&wrong).unwrap();
    let out = run(&mut r.cmd_with(&wrong, &r.served.fingerprint, "put", &[&src]));
    out.failure();
    out.stderr_has("did not prove that it holds this token");
    let other = "ab".repeat(32);
    let out = run(&mut r.cmd_with(&r.served.token, &other, "put", &[&src]));
    out.failure();
    out.stderr_has("fingerprint");
    assert_eq!(r.s.pack_objects(), packs_before, "nothing was stored");
}

#[test]
fn a_server_met_first_is_recorded_and_a_changed_certificate_is_refused() {
    let r = Remote::start(&[]);
    let known = r.s.ws.path("known_hosts");
    let out = run(&mut r.cmd_known_hosts(&known, "stat"));
    out.success();
    out.stderr_has("first contact with");
    let recorded = fs::read_to_string(&known).unwrap();
    assert_eq!(
        recorded.trim(),
        format!("{} {}", r.served.addr, r.served.fingerprint)
    );
    let again = run(&mut r.cmd_known_hosts(&known, "stat"));
    again.success();
    assert!(!again.stderr.contains("first contact"), "{}", again.stderr);
    // Another certificate recorded for that address: refused, nothing sent.
    fs::write(&known, format!("{} {}\n", r.served.addr, "cd".repeat(32))).unwrap();
    let changed = run(&mut r.cmd_known_hosts(&known, "stat"));
    changed.failure();
    changed.stderr_has("certificate changed");
}

#[test]
fn append_only_refuses_client_deletes_and_a_local_gc_works() {
    let r = Remote::start(&["--append-only"]);
    let src = r.s.ws.path("src");
    make_src(&src);
    r.run("put", &[&src]).success();
    let packs = r.s.pack_objects();
    let manifests = r.s.objects("manifests/");
    let delete = r.run("forget", &[&"--keep-last", &"0"]);
    delete.failure();
    delete.stderr_has("append-only");
    assert_eq!(
        delete.stderr.trim_end().lines().count(),
        1,
        "{}",
        delete.stderr
    );
    let listed = r.run("list", &[]).success().stdout_text();
    assert!(listed.contains("src/secret-plans.txt"), "{listed}");
    let gc = r.run("gc", &[]);
    gc.failure();
    gc.stderr_has("append-only");
    gc.stderr_has("where the store is");
    assert_eq!(gc.stderr.trim_end().lines().count(), 1, "{}", gc.stderr);
    assert_eq!(r.s.pack_objects(), packs, "nothing lost");
    assert_eq!(r.s.objects("manifests/"), manifests, "nothing lost");
    // A raw client sending a delete frame is refused too.
    let token = Token::read(&r.served.token).unwrap();
    let mut raw = RawClient::authenticated(&r.served, &token);
    let (name, _) = &packs[0];
    raw.write(&Frame::ObjDelete { req: 9, name });
    match raw.read() {
        Some(Frame::Error { code, file_id, .. }) => {
            assert_eq!((code, file_id), (ErrorCode::AppendOnly, 9));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(r.s.pack_objects(), packs, "nothing lost");
    // Where the store is, with the key (after a reindex: the local
    // registry, made by the local init, did not see the client's put),
    // forget and gc work.
    r.s.run("reindex", &[]).success();
    r.s.run("forget", &[&"--keep-last", &"0"]).success();
    let gc = r.s.run("gc", &[]);
    gc.success();
    assert!(
        r.s.pack_objects().is_empty(),
        "the local gc reclaims every pack of the forgotten snapshot: {}",
        gc.stderr
    );
    r.s.run("verify", &[&"--read-data"]).success();
}

#[test]
fn the_server_directory_holds_no_name_and_no_content_of_the_tree() {
    let r = Remote::start(&[]);
    let src = r.s.ws.path("src");
    let files = make_src(&src);
    r.run("put", &[&src]).success();
    // Every byte the server wrote (its registry aside: it has none of its own).
    let mut written = Vec::new();
    let mut paths = Vec::new();
    walk_files(&r.s.dir(), &mut paths);
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("registry.sqlite") {
            continue;
        }
        written.extend(fs::read(&path).unwrap());
        written.extend(name.into_bytes());
    }
    assert!(written.len() > 900_000, "the objects are there");
    let contains = |needle: &[u8]| written.windows(needle.len()).any(|w| w == needle);
    for (name, data) in &files {
        assert!(!contains(name.as_bytes()), "{name} appears");
        assert!(!contains(&data[..64]), "content of {name} appears");
        assert!(
            !contains(&data[data.len() - 64..]),
            "content of {name} appears"
        );
    }
    assert!(!contains(b"marker-content"));
}

#[test]
fn a_raw_client_gets_refusals_for_bad_requests_and_nothing_outside_the_store() {
    let r = Remote::start(&[]);
    let token = Token::read(&r.served.token).unwrap();
    let mut raw = RawClient::authenticated(&r.served, &token);
    // A name that leaves the store, or names the local registry: refused, the session goes on.
    for (req, name) in [(1, "../token"), (2, "registry.sqlite"), (3, "/etc/passwd")] {
        raw.write(&Frame::ObjStat { req, name });
        match raw.read() {
            Some(Frame::Error { code, file_id, .. }) => {
                assert_eq!((code, file_id), (ErrorCode::BadName, req), "{name}")
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    // A range past the end: the size, and no byte.
    raw.write(&Frame::ObjRead {
        req: 4,
        offset: 1 << 40,
        length: 1,
        name: "config",
    });
    let Some(Frame::ObjSize { req: 4, size }) = raw.read() else {
        panic!("expected the size first");
    };
    assert!(size > 0 && size < 1 << 20);
    // A whole read over the limit: the size, and no byte.
    raw.write(&Frame::ObjGet {
        req: 5,
        limit: 1,
        name: "config",
    });
    assert!(matches!(raw.read(), Some(Frame::ObjSize { req: 5, .. })));
    // A create of a name that exists is refused at its commit; nothing replaced.
    let before = fs::read(r.s.dir().join("config")).unwrap();
    raw.write(&Frame::ObjCreate {
        req: 6,
        name: "config",
    });
    raw.write(&Frame::Data {
        file_id: 6,
        offset: 0,
        bytes: b"{}",
    });
    raw.write(&Frame::ObjCommit { req: 6, size: 2 });
    match raw.read() {
        Some(Frame::Error { code, file_id, .. }) => {
            assert_eq!((code, file_id), (ErrorCode::ObjectExists, 6))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(fs::read(r.s.dir().join("config")).unwrap(), before);
    raw.write(&Frame::ObjDone { req: 7 });
    assert!(matches!(
        raw.expect_error(),
        Frame::Error {
            code: ErrorCode::Protocol,
            ..
        }
    ));
    // Bytes out of order end the session; the object never appears.
    let mut raw = RawClient::authenticated(&r.served, &token);
    raw.write(&Frame::ObjCreate {
        req: 1,
        name: "packs/00/new",
    });
    raw.write(&Frame::Data {
        file_id: 1,
        offset: 10,
        bytes: b"x",
    });
    assert!(matches!(
        raw.expect_error(),
        Frame::Error {
            code: ErrorCode::OutOfRange,
            ..
        }
    ));
    assert!(!r.s.dir().join("packs/00/new").exists());
    // A file sent to a store server is refused.
    let src = r.s.ws.path("plain.txt");
    fs::write(&src, b"plain").unwrap();
    let out = run(&mut r.served.send(&[&src]));
    out.failure();
    out.stderr_has("store --store cst://");
    assert!(!r.s.dir().join("plain.txt").exists());
}

/// The bytes of test object number `n`: `len` of them, none alike nearby.
fn object_bytes(n: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(n) as u8 ^ (i >> 13) as u8)
        .collect()
}

#[test]
fn an_object_in_many_frames_and_pauses_is_stored_whole_and_only_at_its_commit() {
    // The server collects an object's frames into writes of about a MiB
    // and writes what it holds when the client pauses: whatever the
    // cut, the object on disk is every byte in order, and nothing is
    // visible before the commit; a commit with the wrong size keeps nothing.
    let r = Remote::start(&[]);
    let token = Token::read(&r.served.token).unwrap();
    let mut raw = RawClient::authenticated(&r.served, &token);
    let data = object_bytes(1, 3 * 1024 * 1024 + 12_345);
    raw.write(&Frame::ObjCreate {
        req: 1,
        name: "packs/aa/many-frames",
    });
    let mut at = 0;
    for (i, piece) in data.chunks(100_000).enumerate() {
        raw.write(&Frame::Data {
            file_id: 1,
            offset: at,
            bytes: piece,
        });
        at += piece.len() as u64;
        if i % 9 == 4 {
            // A pause: what the server collected so far is written.
            std::thread::sleep(std::time::Duration::from_millis(30));
            assert!(!r.s.dir().join("packs/aa/many-frames").exists());
        }
    }
    raw.write(&Frame::ObjCommit { req: 1, size: at });
    assert!(
        matches!(raw.read(), Some(Frame::ObjDone { req: 1 })),
        "committed"
    );
    assert!(fs::read(r.s.dir().join("packs/aa/many-frames")).unwrap() == data);
    // Frames that stop short of the size announced at the commit.
    let short = object_bytes(2, 1024 * 1024 + 7);
    raw.write(&Frame::ObjCreate {
        req: 2,
        name: "packs/aa/short",
    });
    for (i, piece) in short.chunks(256 * 1024).enumerate() {
        raw.write(&Frame::Data {
            file_id: 2,
            offset: (i * 256 * 1024) as u64,
            bytes: piece,
        });
    }
    raw.write(&Frame::ObjCommit {
        req: 2,
        size: short.len() as u64 + 1,
    });
    match raw.read() {
        Some(Frame::Error { code, file_id, .. }) => {
            assert_eq!((code, file_id), (ErrorCode::Incomplete, 2))
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!r.s.dir().join("packs/aa/short").exists());
}

#[test]
fn a_store_on_a_server_that_receives_files_is_refused_before_anything_is_written() {
    let ws = Workspace::new();
    let served = Served::start(ws.root(), &[]);
    let mut cmd = cryptstream();
    cmd.current_dir(ws.root())
        .env("CRYPTSTREAM_CACHE_DIR", ws.path("cache"))
        .arg("store")
        .arg("--store")
        .arg(format!("cst://{}", served.addr))
        .arg("--token-file")
        .arg(&served.token)
        .arg("--server-fingerprint")
        .arg(&served.fingerprint)
        .arg("-k")
        .arg(ws.key())
        .arg("init");
    let out = run(&mut cmd);
    out.failure();
    out.stderr_has("hosts no store");
    assert!(crate::common::list_dir(&served.root).is_empty());
}

/// Object bytes the server logged as received in sessions that ended
/// cleanly, in `log` (its stderr).
fn received_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" object(s) created, ")?;
            rest.split_once(" bytes received")?.0.parse::<u64>().ok()
        })
        .sum()
}

fn pack_bytes(s: &StoreWs) -> u64 {
    s.pack_objects().iter().map(|(_, size)| size).sum()
}

#[test]
fn a_put_killed_mid_way_sends_only_what_was_left_when_run_again() {
    let r = Remote::start(&[]);
    let src = r.s.ws.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        write_random_file(&src.join(format!("f{i:02}")), 1 << 20, 100 + i, 0o644);
    }
    let mut put = r.cmd_with(&r.served.token, &r.served.fingerprint, "put", &[&src]);
    put.env("CRYPTSTREAM_DEBUG_STORE_DELAY_MS", "10")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut killed = Running::spawn(&mut put);
    // Killed past half of its about 26 packs of 1 MiB.
    wait_for("packs on the server", || r.s.pack_objects().len() >= 14);
    killed.signal(libc::SIGKILL);
    killed.wait(WAIT);
    // A commit the server had whole before the kill may still be landing.
    let mut at_kill = pack_bytes(&r.s);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = pack_bytes(&r.s);
        if now == at_kill {
            break;
        }
        at_kill = now;
    }
    let mark = r.served.log().len();
    r.run("put", &[&src]).success();
    let total = pack_bytes(&r.s);
    let left = total - at_kill;
    assert!(
        at_kill > 0 && left > 0,
        "killed mid-way: {at_kill} of {total}"
    );
    // The rerun's sessions end as it exits; wait until they logged what
    // the new packs took at least, then a moment for the rest.
    wait_for("the rerun's sessions end", || {
        received_in(&r.served.log()[mark..]) >= left
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let sent = received_in(&r.served.log()[mark..]);
    eprintln!("packs: {at_kill} bytes at the kill, {total} in all; the rerun sent {sent}");
    // What was stored before the kill is not sent again: the rerun sends
    // what was left, plus at most the pack in flight at the kill and the
    // manifests.
    assert!(
        sent <= left + (2 << 20),
        "the rerun sent {sent}, {left} were left"
    );
    // Issue 18, acceptance 4: less than half of the whole goes again.
    assert!(
        sent < total / 2,
        "the rerun sent {sent} of {total} bytes of packs"
    );
    r.run("verify", &[&"--read-data"]).success();
}

#[test]
fn a_client_that_stops_reading_loses_its_session_after_the_idle_timeout() {
    let r = Remote::start(&[]);
    let token = Token::read(&r.served.token).unwrap();
    let mut raw = RawClient::authenticated(&r.served, &token);
    // A 32 MiB object, more than the socket buffers hold.
    let block = vec![7u8; 256 * 1024];
    raw.write(&Frame::ObjCreate {
        req: 1,
        name: "packs/ff/big",
    });
    for i in 0..128u64 {
        raw.write(&Frame::Data {
            file_id: 1,
            offset: i * block.len() as u64,
            bytes: &block,
        });
    }
    raw.write(&Frame::ObjCommit {
        req: 1,
        size: 128 * block.len() as u64,
    });
    assert!(matches!(raw.read(), Some(Frame::ObjDone { req: 1 })));
    // Ask for all of it, then read nothing: the server gives up within
    // its idle timeout (5 s here) instead of holding the session.
    raw.write(&Frame::ObjGet {
        req: 2,
        limit: u64::MAX,
        name: "packs/ff/big",
    });
    wait_for("the server drops the session", || {
        r.served.log().contains("the client read nothing for")
    });
}

/// Requests the server logged as answered in sessions that ended cleanly,
/// in `log` (its stderr).
fn requests_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" bytes received, ")?;
            rest.split_once(" request(s)")?.0.parse::<u64>().ok()
        })
        .sum()
}

/// A get of many small files that lie in one pack reads them in a few
/// ranged requests (blocks of many chunks), not one per chunk; so does
/// `verify --read-data`. The server counts every request it answers.
#[test]
fn a_get_of_many_small_files_in_one_pack_makes_few_requests() {
    const FILES: u64 = 200;
    // Default packs: the files fit in one.
    let r = Remote::serve(StoreWs::new(&[]), &[]);
    let src = r.s.ws.path("many");
    one_chunk_files(&src, FILES);
    r.run("put", &[&src]).success();
    assert_eq!(r.s.pack_objects().len(), 1, "{:?}", r.s.pack_objects());
    // The log once the sessions of the commands before have all ended
    // (each logs as its command exits): unchanged for half a second.
    let settled = || {
        let mut len = r.served.log().len();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let now = r.served.log().len();
            if now == len {
                return len;
            }
            len = now;
        }
    };
    let requests_of = |sub: &str, args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mark = settled();
        r.run(sub, args).success();
        // The command's sessions end as it exits.
        wait_for("the server logs the command's sessions", || {
            requests_in(&r.served.log()[mark..]) > 0
        });
        requests_in(&r.served.log()[..settled()][mark..])
    };
    let dest = r.s.ws.path("out");
    let get = requests_of("get", &[&"many", &dest]);
    assert_same_tree(&src, &dest.join("many"));
    let verify = requests_of("verify", &[&"--read-data"]);
    eprintln!("requests for {FILES} files in one pack: get {get}, verify --read-data {verify}");
    assert!(
        get * 10 <= FILES,
        "get made {get} requests for {FILES} one-chunk files"
    );
    assert!(
        verify * 10 <= FILES,
        "verify --read-data made {verify} requests for {FILES} one-chunk files"
    );
}

/// The most connections open at once to a store server (counted by a TCP
/// proxy in front of it) during a get of 40 files in many 1 MiB packs, with
/// `--workers workers` and `--connections` 1, then 8.
fn connections_at_once(workers: &str) -> [usize; 2] {
    let r = Remote::start(&[]);
    let port: u16 = r.served.addr.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = Proxy::start(port);
    let via = format!("cst://{}", proxy.endpoint.trim_start_matches("http://"));
    let src = r.s.ws.path("conn");
    // Enough packs (1 MiB each) that a get has many block reads to make.
    small_tree(&src, 40, 1000);
    let cmd = |sub: &str, connections: &str, workers: &str| {
        let mut cmd = r.cmd_to(&via, &r.served.token, &r.served.fingerprint, sub, &[]);
        cmd.args(["--connections", connections, "--workers", workers]);
        cmd
    };
    run(cmd("put", "8", "8").arg(&src)).success();
    let mut at_once = [0; 2];
    for (i, connections) in ["1", "8"].into_iter().enumerate() {
        let dest = r.s.ws.path(format!("out-{connections}"));
        proxy.reset();
        run(cmd("get", connections, workers).arg("conn").arg(&dest)).success();
        assert_same_tree(&src, &dest.join("conn"));
        at_once[i] = proxy.most_at_once();
    }
    eprintln!(
        "{workers} worker(s): {} connections open at once with --connections 1, {} with 8",
        at_once[0], at_once[1]
    );
    at_once
}

/// `--connections` bounds the connections a client opens to a store
/// server: a get with one reads through one connection; with eight, its
/// block reads overlap on several.
#[test]
fn connections_bounds_the_connections_to_a_store_server() {
    let [one, eight] = connections_at_once("8");
    // One request in flight can mean two connections open: a new one may
    // be made before the last one is back in the idle pool.
    assert!(one <= 2, "--connections 1: {one}");
    assert!(
        eight > 2,
        "--connections 8 never had more than two connections open ({eight})"
    );
}

/// Reads do not wait for the workers: with one worker and eight
/// connections, a get has several block reads in flight at once.
#[test]
fn reads_from_a_store_server_run_ahead_of_the_workers() {
    let [one, eight] = connections_at_once("1");
    assert!(one <= 2, "--connections 1: {one}");
    assert!(
        eight > 2,
        "one worker and --connections 8 never had more than one read in flight ({eight} connections)"
    );
}
