//! Helpers of the network tests: a `serve` child on 127.0.0.1 with a free
//! port, `send` commands for it, and a raw TLS client that speaks frames
//! by hand (to play a hostile peer).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptstream_net::auth::Transcript;
use cryptstream_net::frame::{Frame, FrameHeader, HEADER_LEN, NONCE_LEN, VERSION};
use cryptstream_net::tls::{client_config, Fingerprint, PinnedVerifier};
use cryptstream_net::Token;

use crate::common::{cryptstream, Running};

/// The metadata of a regular file of `size` bytes in a raw Open frame.
pub fn meta(size: u64) -> cryptstream_net::frame::FileMeta {
    cryptstream_net::frame::FileMeta {
        size,
        mtime_seconds: 1_600_000_000,
        mtime_nanos: 0,
        mode: 0o644,
    }
}

/// Debug hook: the sender stalls after this many file bytes.
pub const STALL_ENV: &str = "CRYPTSTREAM_DEBUG_NET_STALL_AFTER_BYTES";
/// Debug hook: the server saves a partial file's ranges every this many bytes.
pub const CHECKPOINT_ENV: &str = "CRYPTSTREAM_DEBUG_NET_CHECKPOINT_BYTES";
/// Deadline of one raw read in the tests.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `serve`.
pub struct Served {
    pub child: Running,
    pub addr: String,
    pub fingerprint: String,
    pub token: PathBuf,
    pub root: PathBuf,
    child_id: u32,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `serve` with a new token in `dir`, receiving into `dir/root`.
    pub fn start(dir: &Path, extra: &[&str]) -> Served {
        Served::start_with(dir, &dir.join("token"), &dir.join("root"), extra)
    }

    /// Starts `serve` with this token file and root.
    pub fn start_with(_dir: &Path, token: &Path, root: &Path, extra: &[&str]) -> Served {
        Served::start_env(token, root, extra, &[])
    }

    /// Starts `serve` with this token file and root, and these
    /// environment variables (debug hooks).
    pub fn start_env(token: &Path, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Served {
        let mut cmd = cryptstream();
        cmd.envs(env.iter().copied());
        cmd.arg("serve");
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !extra.contains(&"--store") {
            cmd.arg("--root").arg(root);
        }
        cmd.arg("--token-file").arg(token).arg("--create-token");
        for (flag, default) in [("--idle-timeout", "5"), ("--grace", "3")] {
            if !extra.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        cmd.args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::common::with_umask(&mut cmd, 0o022);
        let mut child = Running::spawn(&mut cmd);
        let child_id = child.child_mut().id();
        let stdout = child.child_mut().stdout.take().expect("stdout is piped");
        let stderr = child.child_mut().stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let reader = BufReader::new(stdout);
            for line in reader.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addr = None;
        let mut fingerprint = None;
        while addr.is_none() || fingerprint.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("serve did not start: {}", log.lock().unwrap()));
            if let Some(rest) = line.strip_prefix("listening on ") {
                addr = Some(rest.to_owned());
            } else if let Some(rest) = line.strip_prefix("fingerprint ") {
                fingerprint = Some(rest.to_owned());
            }
        }
        Served {
            child,
            addr: addr.unwrap(),
            fingerprint: fingerprint.unwrap(),
            token: token.to_path_buf(),
            root: root.to_path_buf(),
            child_id,
            stderr: log,
        }
    }

    /// A `send` of `paths` to this server, fingerprint pinned, JSON summary.
    pub fn send(&self, paths: &[&Path]) -> Command {
        self.send_with_token(paths, &self.token)
    }

    /// A `send` as [`Served::send`] with another token file.
    pub fn send_with_token(&self, paths: &[&Path], token: &Path) -> Command {
        self.send_pinned(paths, token, &self.fingerprint)
    }

    /// A `send` as [`Served::send`] with this token file and fingerprint.
    pub fn send_pinned(&self, paths: &[&Path], token: &Path, fingerprint: &str) -> Command {
        let mut cmd = cryptstream();
        cmd.arg("send")
            .args(paths)
            .args(["--to", &self.addr, "--server-fingerprint", fingerprint])
            .arg("--token-file")
            .arg(token)
            .args(["--json", "--timeout", "20"]);
        cmd
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        !self.child.has_exited()
    }

    /// Peak resident set size of the server so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    fn pid(&self) -> u32 {
        self.child_id
    }
}

/// A TLS session to the server speaking raw frames.
pub struct RawClient {
    pub tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl RawClient {
    /// Connects and finishes the TLS handshake (pinned), nothing more.
    pub fn connect(served: &Served) -> RawClient {
        RawClient::try_connect(&served.addr, &served.fingerprint).unwrap()
    }

    /// Connects to `addr` and finishes the TLS handshake, pinned to
    /// `fingerprint`; each read waits at most [`RAW_TIMEOUT`].
    pub fn try_connect(addr: &str, fingerprint: &str) -> Result<RawClient, String> {
        let fp = Fingerprint::parse(fingerprint).unwrap();
        let verifier = Arc::new(PinnedVerifier::new(Some(fp)));
        let config = Arc::new(client_config(verifier).unwrap());
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        tcp.set_read_timeout(Some(RAW_TIMEOUT)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("cryptstream").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(RawClient { tls })
    }

    /// [`RawClient::try_connect`], then hello and proof; `Ok` once the
    /// server answered `AuthOk`.
    pub fn try_authenticated(
        addr: &str,
        fingerprint: &str,
        token: &Token,
    ) -> Result<RawClient, String> {
        let mut raw = RawClient::try_connect(addr, fingerprint)?;
        raw.exchange(token, true);
        match raw.read() {
            Some(Frame::AuthOk) => Ok(raw),
            other => Err(format!("expected AuthOk, got {other:?}")),
        }
    }

    /// Connects and authenticates with `token` (a wrong one fails later).
    pub fn authenticated(served: &Served, token: &Token) -> RawClient {
        let mut raw = RawClient::connect(served);
        raw.hello_and_proof(token);
        match raw.read() {
            Some(Frame::AuthOk) => {}
            other => panic!("expected AuthOk, got {other:?}"),
        }
        raw
    }

    /// Sends hello, reads the challenge, sends the proof of `token`
    /// without checking the server's (so that a test with a wrong token
    /// can go on and show that the server refuses the client's proof).
    pub fn hello_and_proof(&mut self, token: &Token) {
        self.exchange(token, false);
    }

    /// [`RawClient::hello_and_proof`], returning whether the server's
    /// proof was right.
    pub fn exchange(&mut self, token: &Token, check_server: bool) -> bool {
        let client_nonce = [0x42; NONCE_LEN];
        self.write(&Frame::Hello {
            version: VERSION,
            nonce: client_nonce,
        });
        let Some(Frame::Challenge { nonce, proof, .. }) = self.read() else {
            panic!("expected a challenge");
        };
        let mut transcript = Transcript {
            client_nonce,
            server_nonce: nonce,
            exporter: [0u8; 32],
        };
        self.tls
            .conn
            .export_keying_material(
                &mut transcript.exporter,
                cryptstream_net::auth::EXPORTER_LABEL,
                None,
            )
            .unwrap();
        let server_proven = token.verify_server(&transcript, &proof);
        if check_server {
            assert!(server_proven, "the server's proof is wrong");
        }
        self.write(&Frame::Auth {
            proof: token.client_proof(&transcript),
        });
        server_proven
    }

    /// Writes a frame.
    pub fn write(&mut self, frame: &Frame<'_>) {
        self.write_bytes(&frame.to_bytes());
    }

    /// Writes raw bytes (ignoring a peer that already closed).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes);
        let _ = self.tls.flush();
    }

    /// Reads the next frame; `None` when the server closed the session
    /// (or the read failed).
    pub fn read(&mut self) -> Option<Frame<'static>> {
        let mut head = [0u8; HEADER_LEN];
        self.tls.read_exact(&mut head).ok()?;
        let header = FrameHeader::parse(head).ok()?;
        let mut payload = vec![0u8; header.length as usize];
        self.tls.read_exact(&mut payload).ok()?;
        let payload: &'static [u8] = Box::leak(payload.into_boxed_slice());
        Frame::parse(header.kind, payload).ok()
    }

    /// Reads until an error frame or the end; returns the error frame.
    pub fn expect_error(&mut self) -> Frame<'static> {
        loop {
            match self.read() {
                Some(frame @ Frame::Error { .. }) => return frame,
                Some(_) => continue,
                None => panic!("the server closed without an error frame"),
            }
        }
    }
}

/// Starts a send of `src` over `connections` that stalls after `after`
/// bytes, waits until it says so, and returns it (still running).
pub fn stalled_send(served: &Served, src: &Path, after: u64, connections: usize) -> Running {
    let mut cmd = served.send(&[src]);
    cmd.args(["--connections", &connections.to_string()])
        .env(STALL_ENV, after.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut sender = Running::spawn(&mut cmd);
    let stderr = sender.child_mut().stderr.take().unwrap();
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("stalled after"), "{line}");
    sender
}

/// The sidecars (`.cst-part.*.ranges`) directly in `dir`.
pub fn sidecars(dir: &Path) -> Vec<PathBuf> {
    crate::common::list_dir(dir)
        .into_iter()
        .filter(|n| {
            let n = n.to_string_lossy();
            n.starts_with(".cst-part.") && n.ends_with(".ranges")
        })
        .map(|n| dir.join(n))
        .collect()
}
