//! Trust between `send` and a server, played by a hostile TLS server
//! written in this test (rustls, frames by hand) that does not know the
//! token: whether `send` trusts it on first use or has its fingerprint
//! pinned, `send` sends it no name and no file byte, exits non-zero with
//! one line, and records nothing in known_hosts. The hostile server
//! answers every request as if it held every file, so a `send` that
//! trusted it would report success having sent nothing; the test shows
//! it does not. First contact and a changed certificate are said plainly.

mod common;
mod net_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use cryptstream_net::frame::{Frame, FrameHeader, FrameType, HEADER_LEN, NONCE_LEN, VERSION};
use cryptstream_net::Identity;
use net_support::*;

/// What the hostile server received, in plain text after TLS, per session.
type Received = Arc<Mutex<Vec<Vec<u8>>>>;

/// A TLS server on 127.0.0.1 with a certificate of its own and no token.
struct HostileServer {
    addr: String,
    fingerprint: String,
    received: Received,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl HostileServer {
    fn start(dir: &std::path::Path) -> HostileServer {
        let identity = Identity::load_or_create(&dir.join("hostile-token")).unwrap();
        let fingerprint = identity.fingerprint().to_hex();
        let config = Arc::new(identity.server_config().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received: Received = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (received, stop) = (received.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            let (config, received) = (config.clone(), received.clone());
                            std::thread::spawn(move || lie(tcp, config, &received));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("hostile accept: {e}"),
                    }
                }
            })
        };
        HostileServer {
            addr,
            fingerprint,
            received,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Every frame type the sessions received, in order.
    fn kinds(&self) -> Vec<Vec<FrameType>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|bytes| frame_kinds(bytes))
            .collect()
    }

    /// All plain text received, every session together.
    fn all_bytes(&self) -> Vec<u8> {
        self.received.lock().unwrap().concat()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The types of the whole frames at the front of `bytes`.
fn frame_kinds(mut bytes: &[u8]) -> Vec<FrameType> {
    let mut kinds = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let Ok(header) = FrameHeader::parse(bytes[..HEADER_LEN].try_into().unwrap()) else {
            break;
        };
        kinds.push(header.kind);
        let end = (HEADER_LEN + header.length as usize).min(bytes.len());
        bytes = &bytes[end..];
    }
    kinds
}

/// One hostile session: records everything, answers the hello with a
/// challenge and a proof it cannot have, then "AuthOk", and claims to hold
/// every file announced and to have committed it.
fn lie(tcp: TcpStream, config: Arc<rustls::ServerConfig>, received: &Received) {
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let index = {
        let mut all = received.lock().unwrap();
        all.push(Vec::new());
        all.len() - 1
    };
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        received.lock().unwrap()[index].extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        while let Ok(Some((frame, used))) = cryptstream_net::frame::parse_frame(&pending) {
            let answer = match frame {
                Frame::Hello { .. } => Some(Frame::Challenge {
                    version: VERSION,
                    nonce: [0x5A; NONCE_LEN],
                    proof: [0xA5; NONCE_LEN],
                }),
                Frame::Auth { .. } => Some(Frame::AuthOk),
                Frame::Open { file_id, meta, .. } => Some(Frame::Held {
                    file_id,
                    ranges: if meta.size > 0 {
                        vec![(0, meta.size)]
                    } else {
                        Vec::new()
                    },
                }),
                Frame::Sync { file_id } => Some(Frame::Synced { file_id, held: 0 }),
                Frame::Commit { file_id, .. } => Some(Frame::Committed { file_id }),
                Frame::Bye => return,
                _ => None,
            };
            pending.drain(..used);
            if let Some(answer) = answer {
                if tls.write_all(&answer.to_bytes()).is_err() {
                    return;
                }
                let _ = tls.flush();
            }
        }
    }
}

/// A send of `src` to `hostile` with the token of a real server.
fn send_to(
    hostile: &HostileServer,
    src: &std::path::Path,
    token: &std::path::Path,
) -> std::process::Command {
    let mut cmd = cryptstream();
    cmd.arg("send")
        .arg(src)
        .args(["--to", &hostile.addr])
        .arg("--token-file")
        .arg(token)
        .args(["--timeout", "20", "--connections", "2"]);
    cmd
}

#[track_caller]
fn assert_nothing_sent(hostile: &HostileServer, name: &str, content: &[u8]) {
    let kinds = hostile.kinds();
    assert!(!kinds.is_empty(), "send never reached the hostile server");
    for session in &kinds {
        assert_eq!(session, &[FrameType::Hello], "frames sent: {kinds:?}");
    }
    let all = hostile.all_bytes();
    let found = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    assert!(
        !found(name.as_bytes()),
        "the name reached the hostile server"
    );
    assert!(
        !found(&content[..64]),
        "file bytes reached the hostile server"
    );
}

#[test]
fn a_server_that_does_not_know_the_token_gets_nothing_on_first_use() {
    let ws = Workspace::new();
    let token = ws.path("token");
    cryptstream_net::Token::generate()
        .write_new(&token)
        .unwrap();
    let src = ws.path("secret-name.bin");
    write_random_file(&src, 100_000, 31, 0o600);
    let content = std::fs::read(&src).unwrap();
    let hostile = HostileServer::start(ws.root());
    // A known_hosts file that records another server already.
    let known = ws.path("known_hosts");
    let before = format!("127.0.0.1:1 {}\n", "ab".repeat(32));
    std::fs::write(&known, &before).unwrap();
    let out = run(send_to(&hostile, &src, &token)
        .arg("--known-hosts")
        .arg(&known));
    out.failure()
        .stderr_has("did not prove that it holds this token");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert_nothing_sent(&hostile, "secret-name", &content);
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        before,
        "known_hosts unchanged"
    );
    // No known_hosts file at all: none is made.
    let fresh = ws.path("fresh/known_hosts");
    run(send_to(&hostile, &src, &token)
        .arg("--known-hosts")
        .arg(&fresh))
    .failure();
    assert!(!fresh.exists(), "nothing recorded for an unproven server");
}

#[test]
fn a_server_that_does_not_know_the_token_gets_nothing_when_pinned() {
    let ws = Workspace::new();
    let token = ws.path("token");
    cryptstream_net::Token::generate()
        .write_new(&token)
        .unwrap();
    let src = ws.path("pinned-name.bin");
    write_random_file(&src, 100_000, 32, 0o600);
    let content = std::fs::read(&src).unwrap();
    let hostile = HostileServer::start(ws.root());
    // The user was given the hostile server's own fingerprint.
    let out = run(send_to(&hostile, &src, &token)
        .args(["--server-fingerprint", &hostile.fingerprint])
        .arg("--json"));
    out.failure()
        .stderr_has("did not prove that it holds this token");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "no summary of a send that did not happen"
    );
    assert_nothing_sent(&hostile, "pinned-name", &content);
}

#[test]
fn first_contact_is_announced_and_a_changed_certificate_is_explained() {
    let ws = Workspace::new();
    let src = ws.path("f");
    write_random_file(&src, 1000, 33, 0o644);
    let known = ws.path("config/known_hosts");
    let served = Served::start(ws.root(), &[]);
    let tofu = |served: &Served| {
        let mut cmd = cryptstream();
        cmd.arg("send")
            .arg(&src)
            .args(["--to", &served.addr, "--known-hosts"])
            .arg(&known)
            .arg("--token-file")
            .arg(&served.token);
        cmd
    };
    let first = run(&mut tofu(&served));
    first.success().stderr_has(&served.fingerprint);
    first.stderr_has(&known.display().to_string());
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert_eq!(
        recorded.trim(),
        format!("{} {}", served.addr, served.fingerprint)
    );
    let again = run(&mut tofu(&served));
    again.success();
    assert!(!again.stderr.contains("recorded"), "{}", again.stderr);
    // Another server (a new certificate) at the same address.
    let addr = served.addr.clone();
    drop(served);
    let other_dir = ws.path("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = Served::start_with(
        &other_dir,
        &other_dir.join("token"),
        &other_dir.join("root"),
        &["--listen", &addr],
    );
    let changed = run(&mut tofu(&other));
    changed
        .failure()
        .stderr_has("certificate changed")
        .stderr_has(&format!("{} line 1", known.display()))
        .stderr_has(&other.fingerprint)
        .stderr_has("delete line 1");
    assert_eq!(
        changed.stderr.trim().lines().count(),
        1,
        "{}",
        changed.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        recorded,
        "unchanged"
    );
    assert_empty_dir(&other.root);
}
