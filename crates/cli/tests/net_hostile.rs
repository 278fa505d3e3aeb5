//! Hostile peers against a real `serve`: raw TLS clients (rustls, frames
//! written by hand) that skip authentication, lie about lengths, send
//! garbage, try to escape the root, or stop in the middle of a frame. Each
//! gets an error frame or a timeout, nothing appears outside the root or
//! under a final name, and the server goes on serving an honest `send`.

mod common;
mod net_support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use common::*;
use cryptstream_net::frame::{
    ErrorCode, Frame, FrameHeader, FrameType, MAX_CONTROL_PAYLOAD, NONCE_LEN, VERSION,
};
use cryptstream_net::Token;
use net_support::*;

fn token_of(served: &Served) -> Token {
    Token::read(&served.token).unwrap()
}

#[track_caller]
fn assert_error(frame: Frame<'_>, want: ErrorCode) {
    match frame {
        Frame::Error { code, .. } => assert_eq!(code, want, "{frame:?}"),
        other => panic!("expected an error {want:?}, got {other:?}"),
    }
}

/// The server still serves an honest client.
#[track_caller]
fn honest_send_works(served: &Served, ws: &Workspace, tag: &str) {
    let src = ws.path(format!("honest-{tag}"));
    write_random_file(&src, 300_000, 9, 0o644);
    run(&mut served.send(&[&src])).success();
    assert_eq!(
        hash_file(&src),
        hash_file(&served.root.join(format!("honest-{tag}")))
    );
}

fn setup() -> (Workspace, Served, tempfile::TempDir) {
    setup_with(&[])
}

/// [`setup`] with more `serve` flags.
fn setup_with(extra: &[&str]) -> (Workspace, Served, tempfile::TempDir) {
    let ws = Workspace::new();
    // A directory outside the root that a symlink in the root points to.
    let outside = tempfile::tempdir().unwrap();
    let served = Served::start(ws.root(), extra);
    std::os::unix::fs::symlink(outside.path(), served.root.join("escape")).unwrap();
    (ws, served, outside)
}

fn assert_nothing_outside(outside: &Path) {
    assert_empty_dir(outside);
}

#[test]
fn frames_before_authentication_get_only_an_error() {
    let (ws, served, outside) = setup();
    // Open instead of hello.
    let mut raw = RawClient::connect(&served);
    raw.write(&Frame::Open {
        file_id: 1,
        meta: meta(5),
        name: b"x",
    });
    assert_error(raw.expect_error(), ErrorCode::Protocol);
    assert!(raw.read().is_none(), "closed after the error");
    // A wrong proof (the server's proof fails that token too).
    let mut raw = RawClient::connect(&served);
    assert!(!raw.exchange(&Token::generate(), false));
    assert_error(raw.expect_error(), ErrorCode::Unauthenticated);
    // The right token: the server's proof checks out.
    let mut raw = RawClient::connect(&served);
    assert!(raw.exchange(&token_of(&served), true));
    assert_eq!(raw.read(), Some(Frame::AuthOk));
    raw.write(&Frame::Bye);
    // Hello, then Open without a proof.
    let mut raw = RawClient::connect(&served);
    raw.write(&Frame::Hello {
        version: VERSION,
        nonce: [1; NONCE_LEN],
    });
    assert!(matches!(raw.read(), Some(Frame::Challenge { .. })));
    raw.write(&Frame::Open {
        file_id: 1,
        meta: meta(5),
        name: b"x",
    });
    assert_error(raw.expect_error(), ErrorCode::Unauthenticated);
    // Another version, and a version 1 hello (no nonce).
    let mut raw = RawClient::connect(&served);
    raw.write(&Frame::Hello {
        version: 99,
        nonce: [1; NONCE_LEN],
    });
    assert_error(raw.expect_error(), ErrorCode::Version);
    let mut raw = RawClient::connect(&served);
    raw.write_bytes(&[
        FrameType::Hello as u8,
        0,
        0,
        0,
        6,
        b'C',
        b'S',
        b'T',
        b'N',
        0,
        1,
    ]);
    assert_error(raw.expect_error(), ErrorCode::Version);
    assert_eq!(list_dir(&served.root), vec!["escape"]);
    honest_send_works(&served, &ws, "auth");
    assert_nothing_outside(outside.path());
}

#[test]
fn names_that_escape_the_root_are_refused() {
    let (ws, served, outside) = setup();
    let mut raw = RawClient::authenticated(&served, &token_of(&served));
    let long = "a".repeat(300);
    let bad: [&[u8]; 7] = [
        b"../up",
        b"a/../../up",
        b"/etc/cryptstream-test",
        b"nul\0byte",
        long.as_bytes(),
        b"escape/inside",
        b".cst-part.0123",
    ];
    for (id, name) in bad.iter().enumerate() {
        raw.write(&Frame::Open {
            file_id: id as u32,
            meta: meta(3),
            name,
        });
        assert_error(raw.read().expect("an answer"), ErrorCode::BadName);
    }
    // The session is still usable: a good file arrives through it.
    let data = b"abc";
    raw.write(&Frame::Open {
        file_id: 100,
        meta: meta(3),
        name: b"ok/./file",
    });
    assert!(matches!(raw.read(), Some(Frame::Held { file_id: 100, .. })));
    raw.write(&Frame::Data {
        file_id: 100,
        offset: 0,
        bytes: data,
    });
    raw.write(&Frame::Commit {
        file_id: 100,
        hash: *blake3::hash(data).as_bytes(),
    });
    assert_eq!(raw.read(), Some(Frame::Committed { file_id: 100 }));
    raw.write(&Frame::Bye);
    assert_eq!(std::fs::read(served.root.join("ok/file")).unwrap(), data);
    assert!(!ws.root().join("up").exists());
    assert!(!Path::new("/etc/cryptstream-test").exists());
    assert_nothing_outside(outside.path());
    honest_send_works(&served, &ws, "names");
}

#[test]
fn oversized_headers_and_unknown_types_close_the_session() {
    let (ws, served, outside) = setup();
    let token = token_of(&served);
    let mut raw = RawClient::authenticated(&served, &token);
    let head = FrameHeader {
        kind: FrameType::Open,
        length: MAX_CONTROL_PAYLOAD + 1,
    }
    .encode();
    raw.write_bytes(&head);
    assert_error(raw.expect_error(), ErrorCode::TooLarge);
    assert!(raw.read().is_none());
    // A data frame that announces 1 GiB.
    let mut raw = RawClient::authenticated(&served, &token);
    raw.write_bytes(&[FrameType::Data as u8, 0x40, 0, 0, 0]);
    assert_error(raw.expect_error(), ErrorCode::TooLarge);
    // Garbage after authentication.
    let mut raw = RawClient::authenticated(&served, &token);
    let mut rng = XorShift::new(77);
    let mut garbage = vec![0u8; 4096];
    rng.fill(&mut garbage);
    garbage[0] = 0xEE;
    raw.write_bytes(&garbage);
    assert_error(raw.expect_error(), ErrorCode::Protocol);
    // Garbage instead of TLS: the handshake fails, nothing else happens.
    let mut tcp = TcpStream::connect(&served.addr).unwrap();
    tcp.set_read_timeout(Some(RAW_TIMEOUT)).unwrap();
    let _ = tcp.write_all(&garbage);
    let mut buf = [0u8; 64];
    let _ = std::io::Read::read(&mut tcp, &mut buf);
    assert_eq!(list_dir(&served.root), vec!["escape"]);
    honest_send_works(&served, &ws, "garbage");
    assert_nothing_outside(outside.path());
}

#[test]
fn lying_lengths_and_hashes_leave_nothing_under_the_final_name() {
    let (ws, served, outside) = setup();
    let token = token_of(&served);
    // Bytes past the announced size.
    let mut raw = RawClient::authenticated(&served, &token);
    raw.write(&Frame::Open {
        file_id: 1,
        meta: meta(10),
        name: b"liar",
    });
    assert!(matches!(raw.read(), Some(Frame::Held { .. })));
    raw.write(&Frame::Data {
        file_id: 1,
        offset: 5,
        bytes: b"0123456789",
    });
    assert_error(raw.expect_error(), ErrorCode::OutOfRange);
    // Data for a file never opened.
    let mut raw = RawClient::authenticated(&served, &token);
    raw.write(&Frame::Data {
        file_id: 7,
        offset: 0,
        bytes: b"x",
    });
    assert_error(raw.expect_error(), ErrorCode::UnknownFile);
    // A commit before every byte, then a commit with the wrong hash.
    let mut raw = RawClient::authenticated(&served, &token);
    raw.write(&Frame::Open {
        file_id: 1,
        meta: meta(6),
        name: b"short",
    });
    assert!(matches!(raw.read(), Some(Frame::Held { .. })));
    raw.write(&Frame::Data {
        file_id: 1,
        offset: 0,
        bytes: b"abc",
    });
    raw.write(&Frame::Commit {
        file_id: 1,
        hash: *blake3::hash(b"abcdef").as_bytes(),
    });
    assert_error(raw.read().unwrap(), ErrorCode::Incomplete);
    raw.write(&Frame::Open {
        file_id: 2,
        meta: meta(6),
        name: b"short",
    });
    assert!(matches!(raw.read(), Some(Frame::Held { file_id: 2, .. })));
    raw.write(&Frame::Data {
        file_id: 2,
        offset: 3,
        bytes: b"XYZ",
    });
    raw.write(&Frame::Commit {
        file_id: 2,
        hash: *blake3::hash(b"abcdef").as_bytes(),
    });
    assert_error(raw.read().unwrap(), ErrorCode::HashMismatch);
    raw.write(&Frame::Bye);
    assert!(!served.root.join("liar").exists());
    assert!(!served.root.join("short").exists());
    honest_send_works(&served, &ws, "liar");
    assert_nothing_outside(outside.path());
}

#[test]
fn a_client_that_stops_mid_frame_times_out_or_is_dropped() {
    // A short idle timeout: this test waits for it twice.
    let (ws, served, outside) = setup_with(&["--idle-timeout", "2"]);
    let token = token_of(&served);
    // Announces 1000 bytes of an Open frame, sends 10, then waits: the
    // server's idle timeout ends it.
    let mut raw = RawClient::authenticated(&served, &token);
    raw.write_bytes(&[FrameType::Open as u8, 0, 0, 0x03, 0xE8]);
    raw.write_bytes(&[0u8; 10]);
    assert_error(raw.expect_error(), ErrorCode::Timeout);
    // Half a data frame, then the connection is closed.
    let mut raw = RawClient::authenticated(&served, &token);
    raw.write(&Frame::Open {
        file_id: 1,
        meta: meta(100_000),
        name: b"cut",
    });
    assert!(matches!(raw.read(), Some(Frame::Held { .. })));
    let full = Frame::Data {
        file_id: 1,
        offset: 0,
        bytes: &[1u8; 50_000],
    }
    .to_bytes();
    raw.write_bytes(&full[..20_000]);
    drop(raw);
    // The log says so in plain words, without rustls' links.
    assert!(
        wait_until(RAW_TIMEOUT, || served.log().contains("closed")),
        "{}",
        served.log()
    );
    assert!(!served.log().contains("https://"), "{}", served.log());
    // Silent after authentication: dropped after the idle timeout.
    let mut raw = RawClient::authenticated(&served, &token);
    assert_error(raw.expect_error(), ErrorCode::Timeout);
    assert!(!served.root.join("cut").exists());
    honest_send_works(&served, &ws, "cut");
    assert_nothing_outside(outside.path());
}

#[test]
fn max_connections_makes_the_next_client_wait_not_fail() {
    let ws = Workspace::new();
    let served = Served::start(ws.root(), &["--max-connections", "1"]);
    let token = token_of(&served);
    let mut holder = RawClient::authenticated(&served, &token);
    // The only slot is held: a second client connects and tries to
    // authenticate on its own thread, with a read deadline far longer
    // than the test holds the slot.
    let (done_tx, done) = std::sync::mpsc::channel();
    let waiter = {
        let (addr, fingerprint) = (served.addr.clone(), served.fingerprint.clone());
        let token = Token::read(&served.token).unwrap();
        std::thread::spawn(move || {
            let outcome = RawClient::try_authenticated(&addr, &fingerprint, &token);
            let _ = done_tx.send(outcome.is_ok());
            outcome
        })
    };
    // While the slot is held, the second client has not got through.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        matches!(done.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)),
        "the second client finished (or failed) while the only slot was held"
    );
    // The first session ends: the waiting client is let in and authenticates.
    holder.write(&Frame::Bye);
    drop(holder);
    let authenticated = done
        .recv_timeout(RAW_TIMEOUT)
        .expect("the waiting client got nowhere after the slot was freed");
    assert!(authenticated, "the waiting client was refused, not queued");
    let mut waited = waiter.join().unwrap().unwrap();
    waited.write(&Frame::Bye);
    drop(waited);
    honest_send_works(&served, &ws, "after-wait");
}
