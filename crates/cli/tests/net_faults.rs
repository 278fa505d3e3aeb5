//! Faults between `send` and `serve` on 127.0.0.1: the server killed
//! (SIGKILL) mid-transfer, the connection cut while both processes live,
//! a partial file's sidecar or bytes damaged on the server's disk, and the
//! server's cap on open files. In each case the file that finally arrives
//! is exact, and nothing wrong ever appears under its final name.

mod common;
mod net_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use cryptstream_net::frame::{ErrorCode, FileMeta, Frame};
use cryptstream_net::Token;
use net_support::*;

/// Bytes between two saves of the received ranges (debug hook), so that a
/// small file is checkpointed several times.
const CHECKPOINT: u64 = MIB;
/// Size of the files these tests send.
const SIZE: u64 = 8 * MIB;
/// Longest wait for a file to appear on the server.
const APPEAR: Duration = Duration::from_secs(30);

/// No partial file or sidecar directly in `root`.
#[track_caller]
fn assert_no_partials(root: &Path) {
    let left: Vec<_> = list_dir(root)
        .into_iter()
        .filter(|n| n.to_string_lossy().starts_with(".cst-part."))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
}

/// A server that saves ranges every [`CHECKPOINT`] bytes.
fn checkpointing_server(ws: &Workspace, extra: &[&str]) -> Served {
    Served::start_env(
        &ws.path("token"),
        &ws.path("root"),
        extra,
        &[(CHECKPOINT_ENV, &CHECKPOINT.to_string())],
    )
}

/// Leaves a partial file and its sidecar on the server: a send stalls
/// after 3/4 of `src` and is killed, so its session ends and the server
/// saves what it holds.
fn leave_a_partial(served: &Served, src: &Path) -> std::path::PathBuf {
    let mut sender = stalled_send(served, src, SIZE * 3 / 4, 1);
    assert!(
        wait_until(APPEAR, || !sidecars(&served.root).is_empty()),
        "no sidecar appeared"
    );
    sender.signal(libc::SIGKILL);
    sender.wait(Duration::from_secs(10));
    // The session's end saves the ranges once more; wait until the
    // sidecar lists what the stalled sender had sent (its size stops
    // changing once the server let go).
    let sidecar = sidecars(&served.root).pop().expect("one sidecar");
    let mut last = Vec::new();
    assert!(
        wait_until(APPEAR, || {
            let now = std::fs::read(&sidecar).unwrap_or_default();
            let settled = !now.is_empty() && now == last;
            last = now;
            std::thread::sleep(Duration::from_millis(200));
            settled
        }),
        "the sidecar never settled"
    );
    assert!(!served.root.join(src.file_name().unwrap()).exists());
    sidecar
}

#[test]
fn a_server_killed_mid_transfer_is_resumed_by_the_next_one() {
    let ws = Workspace::new();
    let src = ws.path("big.bin");
    write_random_file(&src, SIZE, 21, 0o640);
    let mut served = checkpointing_server(&ws, &[]);
    let mut sender = stalled_send(&served, &src, SIZE * 3 / 4, 1);
    // The server saved the ranges at least once: kill it without warning.
    assert!(
        wait_until(APPEAR, || !sidecars(&served.root).is_empty()),
        "no sidecar appeared"
    );
    served.child.signal(libc::SIGKILL);
    let status = served.child.wait(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    sender.signal(libc::SIGKILL);
    sender.wait(Duration::from_secs(10));
    assert!(
        !served.root.join("big.bin").exists(),
        "nothing under the final name"
    );
    // A new server on the same root and token: the send resumes.
    let served = checkpointing_server(&ws, &[]);
    let out = run(served.send(&[&src]).args(["--connections", "1"]))
        .success()
        .json();
    let sent = out["bytes_sent"].as_u64().unwrap();
    let resumed = out["bytes_resumed"].as_u64().unwrap();
    eprintln!("server killed: {sent} bytes sent again, {resumed} resumed of {SIZE}");
    assert_eq!(sent + resumed, SIZE, "{out}");
    assert!(resumed >= CHECKPOINT && sent < SIZE, "{out}");
    assert_eq!(hash_file(&src), hash_file(&served.root.join("big.bin")));
    assert_no_partials(&served.root);
}

/// A TCP proxy on 127.0.0.1 in front of the server that cuts its first
/// connection (both ways, both sockets shut down) once `cut_after` bytes
/// went from the client to the server; later connections pass whole.
struct CuttingProxy {
    addr: String,
    connections: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl CuttingProxy {
    fn start(server: &str, cut_after: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let server = server.to_owned();
        let acceptor = {
            let (connections, cuts, stop) = (connections.clone(), cuts.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(e) => panic!("proxy accept: {e}"),
                    };
                    client.set_nonblocking(false).unwrap();
                    let upstream = TcpStream::connect(&server).unwrap();
                    let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                    let limit = if first { cut_after } else { u64::MAX };
                    let cuts = cuts.clone();
                    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    std::thread::spawn(move || {
                        if pipe(&client, &upstream, limit) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = upstream.shutdown(Shutdown::Both);
                    });
                    std::thread::spawn(move || {
                        pipe(&u2, &c2, u64::MAX);
                        let _ = c2.shutdown(Shutdown::Write);
                    });
                }
            })
        };
        CuttingProxy {
            addr,
            connections,
            cuts,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Copies `from` to `to` until the end or `limit` bytes; `true` when it
/// stopped at the limit (a cut).
fn pipe(mut from: &TcpStream, mut to: &TcpStream, limit: u64) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let room = (limit - copied).min(buf.len() as u64) as usize;
        if room == 0 {
            return true;
        }
        match from.read(&mut buf[..room]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return false;
                }
                copied += n as u64;
            }
        }
    }
}

#[test]
fn a_connection_cut_with_both_ends_alive_is_retried_and_completes() {
    let ws = Workspace::new();
    let src = ws.path("cut.bin");
    write_random_file(&src, SIZE, 22, 0o644);
    let mut served = Served::start(ws.root(), &[]);
    let proxy = CuttingProxy::start(&served.addr, 2 * MIB);
    let mut cmd = cryptstream();
    cmd.arg("send")
        .arg(&src)
        .args([
            "--to",
            &proxy.addr,
            "--server-fingerprint",
            &served.fingerprint,
        ])
        .arg("--token-file")
        .arg(&served.token)
        .args(["--json", "--timeout", "20", "--connections", "1"]);
    let out = run(&mut cmd).success().json();
    eprintln!("cut connection: {out}");
    assert_eq!(
        proxy.cuts.load(Ordering::SeqCst),
        1,
        "the first connection was cut"
    );
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 2,
        "send connected again after the cut"
    );
    assert!(served.alive(), "the server lives");
    assert_eq!(out["files"], 1, "{out}");
    assert_eq!(hash_file(&src), hash_file(&served.root.join("cut.bin")));
    assert_no_partials(&served.root);
}

#[test]
fn a_damaged_sidecar_is_ignored_and_the_file_starts_over() {
    let ws = Workspace::new();
    let src = ws.path("side.bin");
    write_random_file(&src, SIZE, 23, 0o644);
    let served = checkpointing_server(&ws, &[]);
    let sidecar = leave_a_partial(&served, &src);
    // One flipped bit in the middle of the sidecar.
    let mut bytes = std::fs::read(&sidecar).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&sidecar, &bytes).unwrap();
    let out = run(served.send(&[&src]).args(["--connections", "1"]))
        .success()
        .json();
    assert_eq!(out["bytes_resumed"], 0, "nothing trusted from it: {out}");
    assert_eq!(out["bytes_sent"], SIZE, "{out}");
    assert_eq!(hash_file(&src), hash_file(&served.root.join("side.bin")));
    assert_no_partials(&served.root);
}

#[test]
fn a_partial_file_damaged_under_its_sidecar_is_refused_at_commit_and_sent_again() {
    let ws = Workspace::new();
    let src = ws.path("part.bin");
    write_random_file(&src, SIZE, 24, 0o644);
    let served = checkpointing_server(&ws, &[]);
    let sidecar = leave_a_partial(&served, &src);
    // The sidecar is intact, but the first held bytes are not what was sent.
    let partial = sidecar.with_extension("");
    assert!(partial.exists(), "{partial:?}");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&partial)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 4096], 0).unwrap();
    drop(file);
    let refused = run(served.send(&[&src]).args(["--connections", "1"]));
    refused.failure().stderr_has("hash");
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "one line: {}",
        refused.stderr
    );
    assert!(!served.root.join("part.bin").exists(), "never a wrong file");
    assert_no_partials(&served.root);
    // Sent again, whole, it arrives exact.
    let out = run(&mut served.send(&[&src])).success().json();
    assert_eq!(out["bytes_resumed"], 0, "{out}");
    assert_eq!(hash_file(&src), hash_file(&served.root.join("part.bin")));
    assert_no_partials(&served.root);
}

#[test]
fn the_open_file_cap_refuses_with_a_clear_error_and_frees_on_close() {
    const CAP: u32 = 3;
    let ws = Workspace::new();
    let served = Served::start(ws.root(), &["--max-open-files", &CAP.to_string()]);
    let token = Token::read(&served.token).unwrap();
    let meta = FileMeta {
        size: 10,
        mtime_seconds: 1_600_000_000,
        mtime_nanos: 0,
        mode: 0o644,
    };
    let mut holder = RawClient::authenticated(&served, &token);
    for id in 0..CAP {
        let name = format!("held-{id}");
        holder.write(&Frame::Open {
            file_id: id,
            meta: meta.clone(),
            name: name.as_bytes(),
        });
        assert!(matches!(holder.read(), Some(Frame::Held { .. })));
    }
    // One more, on this session or another: refused, the session goes on.
    let mut other = RawClient::authenticated(&served, &token);
    for raw in [&mut holder, &mut other] {
        raw.write(&Frame::Open {
            file_id: 99,
            meta: meta.clone(),
            name: b"one-too-many",
        });
        match raw.read() {
            Some(Frame::Error {
                code: ErrorCode::Busy,
                file_id: 99,
                message,
            }) => assert!(message.contains("--max-open-files"), "{message}"),
            other => panic!("expected Busy, got {other:?}"),
        }
    }
    // An honest send fails its file with that reason, on one line.
    let src = ws.path("honest");
    write_random_file(&src, 5000, 25, 0o644);
    let refused = run(&mut served.send(&[&src]));
    refused.failure().stderr_has("--max-open-files");
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.stderr
    );
    // Closing one file frees its slot.
    holder.write(&Frame::Close { file_id: 0 });
    holder.write(&Frame::Sync { file_id: 1 });
    assert!(matches!(holder.read(), Some(Frame::Synced { .. })));
    run(&mut served.send(&[&src])).success();
    assert_eq!(hash_file(&src), hash_file(&served.root.join("honest")));
    holder.write(&Frame::Bye);
    other.write(&Frame::Bye);
}
