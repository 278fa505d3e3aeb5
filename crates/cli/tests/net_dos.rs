//! Denial of service against a real `serve` by raw clients that hold the
//! token (frames written by hand): a size of 2^64-1 bytes, Data headers
//! without their payload, one session opening every file it may, bytes
//! for a file already committed. In each case the server stays up, its
//! peak resident memory stays under [`RSS_CEILING_KIB`], and an honest
//! `send` completes while the attack still holds its connections.

mod common;
mod net_support;

use std::time::Duration;

use common::*;
use cryptstream_net::frame::{
    ErrorCode, Frame, FrameHeader, FrameType, DATA_PREFIX_LEN, MAX_DATA_PAYLOAD,
};
use cryptstream_net::server::MAX_OPEN_PER_SESSION;
use cryptstream_net::Token;
use net_support::*;

/// Most resident memory the server may reach in these tests, in KiB.
const RSS_CEILING_KIB: u64 = 256 * 1024;
/// Longest an honest send may take while an attack runs.
const HONEST_LIMIT: Duration = Duration::from_secs(60);

/// An honest send of a fresh 2 MiB file completes, exact, within
/// [`HONEST_LIMIT`], and the server is alive and under the ceiling.
#[track_caller]
fn honest_send_completes(served: &mut Served, ws: &Workspace, tag: &str) {
    let src = ws.path(format!("honest-{tag}"));
    write_random_file(&src, 2 * MIB, 41, 0o644);
    let mut cmd = served.send(&[&src]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    Running::spawn(&mut cmd).finish(HONEST_LIMIT).success();
    assert_eq!(
        hash_file(&src),
        hash_file(&served.root.join(format!("honest-{tag}")))
    );
    assert!(served.alive(), "the server died: {}", served.log());
    let peak = served.peak_rss_kib();
    eprintln!("{tag}: server peak RSS {peak} KiB");
    assert!(peak < RSS_CEILING_KIB, "server peak RSS {peak} KiB");
}

#[test]
fn an_open_of_2_pow_64_bytes_is_refused_before_anything_is_allocated() {
    let ws = Workspace::new();
    let mut served = Served::start(ws.root(), &[]);
    let token = Token::read(&served.token).unwrap();
    let mut raw = RawClient::authenticated(&served, &token);
    for (id, size) in [(1, u64::MAX), (2, 1 << 47), (3, u64::MAX / 2 + 1)] {
        raw.write(&Frame::Open {
            file_id: id,
            meta: meta(size),
            name: format!("huge-{id}").as_bytes(),
        });
        match raw.read() {
            Some(Frame::Error {
                code: ErrorCode::Storage,
                file_id,
                message,
            }) => {
                assert_eq!(file_id, id);
                assert!(message.contains("free"), "{message}");
            }
            other => panic!("expected a storage error, got {other:?}"),
        }
    }
    // The session goes on, and an honest send completes meanwhile.
    honest_send_completes(&mut served, &ws, "huge");
    raw.write(&Frame::Bye);
    // Nothing was made for the refused files.
    for name in list_dir(&served.root) {
        let name = name.to_string_lossy();
        assert!(
            !name.starts_with("huge-") && !name.starts_with(".cst-part."),
            "{name}"
        );
    }
}

#[test]
fn data_headers_without_payload_reserve_no_budget() {
    // 64 sessions each announcing a full Data frame would hold 64 x 257
    // KiB, more than the 16 MiB budget, if a header reserved it.
    const ATTACKERS: u32 = 64;
    let ws = Workspace::new();
    let mut served = Served::start(ws.root(), &["--idle-timeout", "120"]);
    let token = Token::read(&served.token).unwrap();
    let length = DATA_PREFIX_LEN as u32 + MAX_DATA_PAYLOAD;
    let mut attackers = Vec::new();
    for i in 0..ATTACKERS {
        let mut raw = RawClient::authenticated(&served, &token);
        raw.write(&Frame::Open {
            file_id: 1,
            meta: meta(u64::from(MAX_DATA_PAYLOAD)),
            name: format!("stalled-{i}").as_bytes(),
        });
        assert!(matches!(raw.read(), Some(Frame::Held { .. })));
        raw.write_bytes(
            &FrameHeader {
                kind: FrameType::Data,
                length,
            }
            .encode(),
        );
        attackers.push(raw);
    }
    honest_send_completes(&mut served, &ws, "budget");
    drop(attackers);
}

#[test]
fn one_session_cannot_take_every_open_file_slot() {
    let ws = Workspace::new();
    let cap = MAX_OPEN_PER_SESSION + 16;
    let mut served = Served::start(ws.root(), &["--max-open-files", &cap.to_string()]);
    let token = Token::read(&served.token).unwrap();
    let mut raw = RawClient::authenticated(&served, &token);
    for id in 0..MAX_OPEN_PER_SESSION as u32 {
        raw.write(&Frame::Open {
            file_id: id,
            meta: meta(10),
            name: format!("held-{id}").as_bytes(),
        });
        assert!(matches!(raw.read(), Some(Frame::Held { .. })));
    }
    // The honest send runs while those are held.
    honest_send_completes(&mut served, &ws, "open-files");
    // One more on that session ends it.
    raw.write(&Frame::Open {
        file_id: 1000,
        meta: meta(10),
        name: b"one-more",
    });
    match raw.expect_error() {
        Frame::Error { message, .. } => assert!(message.contains("files open"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn data_for_a_file_already_committed_is_refused() {
    let ws = Workspace::new();
    let mut served = Served::start(ws.root(), &[]);
    let token = Token::read(&served.token).unwrap();
    let data = b"the committed content";
    let size = data.len() as u64;
    // Two sessions open the same file (the same partial).
    let mut first = RawClient::authenticated(&served, &token);
    let mut second = RawClient::authenticated(&served, &token);
    for raw in [&mut first, &mut second] {
        raw.write(&Frame::Open {
            file_id: 1,
            meta: meta(size),
            name: b"shared",
        });
        assert!(matches!(raw.read(), Some(Frame::Held { .. })));
    }
    first.write(&Frame::Data {
        file_id: 1,
        offset: 0,
        bytes: data,
    });
    first.write(&Frame::Commit {
        file_id: 1,
        hash: *blake3::hash(data).as_bytes(),
    });
    assert_eq!(first.read(), Some(Frame::Committed { file_id: 1 }));
    // The second session writes into it after the commit: refused.
    second.write(&Frame::Data {
        file_id: 1,
        offset: 0,
        bytes: b"XXXXXXXXXXXXXXXXXXXXX",
    });
    second.write(&Frame::Sync { file_id: 1 });
    match second.expect_error() {
        Frame::Error { code, .. } => assert_eq!(code, ErrorCode::AlreadyCommitted),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(served.root.join("shared")).unwrap(), data);
    first.write(&Frame::Bye);
    honest_send_completes(&mut served, &ws, "committed");
}

/// A TCP connection to `addr` from the loopback address `from` (such as
/// 127.0.0.2: every 127.x.y.z reaches this machine).
fn connect_from(from: std::net::Ipv4Addr, addr: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let target: std::net::SocketAddrV4 = addr.parse().unwrap();
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sockaddr(from, 0);
    let remote = sockaddr(*target.ip(), target.port());
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor made here; the addresses
    // are valid sockaddr_in values of the length given; the descriptor is
    // owned by the TcpStream from then on (or closed on failure).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let bound = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let connected = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Whether the server closed `stream` (a short read finds the end).
fn closed_by_server(mut stream: &std::net::TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn idle_strangers_cannot_starve_authenticated_clients() {
    const PER_ADDRESS: usize = 4;
    const IDLE: usize = 100;
    let ws = Workspace::new();
    // A long deadline, so the idle connections would hold their places
    // through the honest send if nothing else stopped them.
    let mut served = Served::start(
        ws.root(),
        &[
            "--max-unauthenticated",
            "16",
            "--max-unauthenticated-per-address",
            &PER_ADDRESS.to_string(),
            "--auth-timeout",
            "120",
            "--max-connections",
            "4",
        ],
    );
    let attacker = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let idle: Vec<_> = (0..IDLE)
        .map(|_| connect_from(attacker, &served.addr))
        .collect();
    honest_send_completes(&mut served, &ws, "strangers");
    // Only PER_ADDRESS of them were admitted; the rest were closed at once.
    let open = idle.iter().filter(|s| !closed_by_server(s)).count();
    assert_eq!(open, PER_ADDRESS, "connections from {attacker} left open");
    drop(idle);
}

#[test]
fn a_stranger_that_does_not_authenticate_in_time_is_closed() {
    let ws = Workspace::new();
    let served = Served::start(ws.root(), &["--auth-timeout", "1"]);
    // Silent before TLS: closed.
    let mut tcp = std::net::TcpStream::connect(&served.addr).unwrap();
    tcp.set_read_timeout(Some(RAW_TIMEOUT)).unwrap();
    let mut buf = [0u8; 16];
    let end = std::io::Read::read(&mut tcp, &mut buf);
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    // Silent after TLS, before the hello: a timeout error, then closed.
    let mut raw = RawClient::connect(&served);
    match raw.expect_error() {
        Frame::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Timeout, "{message}");
            assert!(message.contains("not authenticated"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
