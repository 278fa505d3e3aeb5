//! `bench net`: the network transfer under 1, 10, 50... clients.
//!
//! For each client count, [`run_net_bench`] starts `cryptstream serve` on
//! 127.0.0.1 (a free port, a fresh receiving folder), starts that many
//! `cryptstream send` processes at once, each sending one file of the
//! given size under its own name, and measures every process from the
//! outside (`wait4`: wall time, CPU time, peak memory). The server is
//! stopped with SIGTERM after the last client, so its CPU time and peak
//! memory cover the whole run. Every received file is then checked
//! against the source's BLAKE3 and removed. The result is the table the
//! seed project printed: clients, total size, throughput, server CPU% and
//! memory, client CPU% and memory, and the clients' average, minimum and
//! maximum time.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::child::{spawn_child, spawn_child_reporting, ChildRun};
use crate::error::{io_error, BenchError};

/// How long the server may take to print its address.
const SERVER_START: Duration = Duration::from_secs(30);
/// Bytes written at a time when making the source file.
const WRITE_BLOCK: usize = 1 << 20;

/// What to measure.
#[derive(Clone, Debug)]
pub struct NetBenchConfig {
    /// The `cryptstream` binary.
    pub binary: PathBuf,
    /// Client counts, one table row each.
    pub clients: Vec<usize>,
    /// Bytes each client sends.
    pub size: u64,
    /// `send --connections` of each client.
    pub connections: usize,
    /// Folder for the source file, the token and the received files
    /// (it should be a tmpfs to measure the network, not a disk).
    pub scratch: PathBuf,
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct NetRow {
    /// Clients at once.
    pub clients: usize,
    /// Bytes sent by all of them.
    pub total_bytes: u64,
    /// From the first client's start to the last one's end.
    pub wall_seconds: f64,
    /// `total_bytes / wall_seconds` in MB/s (10^6).
    pub mb_per_s: f64,
    /// Server CPU time over `wall_seconds`, in percent of one core.
    pub server_cpu_percent: f64,
    /// Server peak resident memory, KiB.
    pub server_max_rss_kib: u64,
    /// Average client CPU time over its own wall time, percent of one core.
    pub client_cpu_percent: f64,
    /// Largest client peak resident memory, KiB.
    pub client_max_rss_kib: u64,
    /// Client times: average, minimum, maximum (seconds).
    pub client_avg_seconds: f64,
    /// Shortest client time.
    pub client_min_seconds: f64,
    /// Longest client time.
    pub client_max_seconds: f64,
    /// Whether every received file had the source's hash.
    pub verified: bool,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct NetReport {
    /// Bytes per client.
    pub size: u64,
    /// Connections per client.
    pub connections: usize,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// One row per client count.
    pub rows: Vec<NetRow>,
}

/// Runs the benchmark; `on_row` sees each row as it is done.
///
/// # Errors
/// [`BenchError`] when a process cannot run, a client or the server
/// fails, or a received file differs from the source.
pub fn run_net_bench(
    config: &NetBenchConfig,
    mut on_row: impl FnMut(&NetRow),
) -> Result<NetReport, BenchError> {
    let work = tempfile::Builder::new()
        .prefix("cryptstream-bench-net.")
        .tempdir_in(&config.scratch)
        .map_err(io_error("create a folder in", &config.scratch))?;
    let source = work.path().join("source.bin");
    let source_hash = write_source(&source, config.size)?;
    let token = work.path().join("token");
    let mut rows = Vec::new();
    for &clients in &config.clients {
        let row = run_row(config, work.path(), &source, &source_hash, &token, clients)?;
        on_row(&row);
        rows.push(row);
    }
    Ok(NetReport {
        size: config.size,
        connections: config.connections,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows,
    })
}

/// Writes `size` deterministic pseudo-random bytes (BLAKE3 in XOF mode),
/// returning their hash.
fn write_source(path: &Path, size: u64) -> Result<blake3::Hash, BenchError> {
    let mut file = File::create(path).map_err(io_error("create", path))?;
    let mut stream = blake3::Hasher::new()
        .update(b"cryptstream bench net source")
        .finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; WRITE_BLOCK];
    let mut left = size;
    while left > 0 {
        let n = left.min(WRITE_BLOCK as u64) as usize;
        stream.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_error("write", path))?;
        left -= n as u64;
    }
    Ok(hasher.finalize())
}

fn hash_path(path: &Path) -> Result<blake3::Hash, BenchError> {
    let mut file = File::open(path).map_err(io_error("read", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; WRITE_BLOCK];
    loop {
        let n = file.read(&mut buf).map_err(io_error("read", path))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

fn failed(run: &ChildRun, command: &str) -> BenchError {
    BenchError::ChildFailed {
        command: command.to_owned(),
        status: run.failure.clone().unwrap_or_default(),
        stderr: run.stderr.clone(),
    }
}

fn run_row(
    config: &NetBenchConfig,
    work: &Path,
    source: &Path,
    source_hash: &blake3::Hash,
    token: &Path,
    clients: usize,
) -> Result<NetRow, BenchError> {
    let root = work.join(format!("received-{clients}"));
    let links = work.join(format!("sources-{clients}"));
    std::fs::create_dir_all(&links).map_err(io_error("create", &links))?;
    // One name per client, all the same bytes (the page cache holds one copy).
    let mut inputs = Vec::with_capacity(clients);
    for i in 0..clients {
        let link = links.join(format!("client-{i:03}.bin"));
        std::os::unix::fs::symlink(source, &link).map_err(io_error("create", &link))?;
        inputs.push(link);
    }
    let mut serve = Command::new(&config.binary);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--root"])
        .arg(&root)
        .arg("--token-file")
        .arg(token)
        .args(["--create-token", "--max-connections", "4096"]);
    let (tx, rx) = mpsc::channel();
    let server = spawn_child_reporting(serve, Some(tx))?;
    let (mut addr, mut fingerprint) = (None, None);
    let deadline = Instant::now() + SERVER_START;
    while addr.is_none() || fingerprint.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGKILL) };
            let run = server.wait()?;
            return Err(failed(&run, "cryptstream serve (did not start)"));
        };
        if let Some(rest) = line.strip_prefix("listening on ") {
            addr = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("fingerprint ") {
            fingerprint = Some(rest.to_owned());
        }
    }
    let (addr, fingerprint) = (addr.expect("set above"), fingerprint.expect("set above"));
    let start = Instant::now();
    let mut senders = Vec::with_capacity(clients);
    for input in &inputs {
        let mut send = Command::new(&config.binary);
        send.arg("send")
            .arg(input)
            .args(["--to", &addr, "--server-fingerprint", &fingerprint])
            .arg("--token-file")
            .arg(token)
            .args(["--quiet", "--connections", &config.connections.to_string()]);
        senders.push(spawn_child(send)?);
    }
    let mut runs = Vec::with_capacity(clients);
    let mut first_failure = None;
    for sender in senders {
        let run = sender.wait()?;
        if run.failure.is_some() && first_failure.is_none() {
            first_failure = Some(failed(&run, "cryptstream send"));
        }
        runs.push(run);
    }
    let wall = start.elapsed().as_secs_f64();
    // SAFETY: kill(2) on our own unreaped child (it is waited for below).
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    let server_run = server.wait()?;
    if let Some(failure) = first_failure {
        return Err(failure);
    }
    // `serve` stopped by SIGTERM exits 130, as the README says.
    if server_run
        .failure
        .as_deref()
        .is_some_and(|f| f != "exit code 130")
    {
        return Err(failed(&server_run, "cryptstream serve"));
    }
    let mut verified = true;
    for input in &inputs {
        let name = input.file_name().expect("a file name");
        let received = root.join(name);
        if hash_path(&received)? != *source_hash {
            verified = false;
        }
    }
    std::fs::remove_dir_all(&root).map_err(io_error("remove", &root))?;
    std::fs::remove_dir_all(&links).map_err(io_error("remove", &links))?;
    let times: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64()).collect();
    let total_bytes = config.size * clients as u64;
    let server_cpu = (server_run.user + server_run.system).as_secs_f64();
    Ok(NetRow {
        clients,
        total_bytes,
        wall_seconds: wall,
        mb_per_s: if wall > 0.0 {
            total_bytes as f64 / 1e6 / wall
        } else {
            0.0
        },
        server_cpu_percent: if wall > 0.0 {
            server_cpu / wall * 100.0
        } else {
            0.0
        },
        server_max_rss_kib: server_run.max_rss_kib,
        client_cpu_percent: runs.iter().map(|r| r.cpu_utilisation()).sum::<f64>() * 100.0
            / runs.len().max(1) as f64,
        client_max_rss_kib: runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0),
        client_avg_seconds: times.iter().sum::<f64>() / times.len().max(1) as f64,
        client_min_seconds: times.iter().copied().fold(f64::INFINITY, f64::min),
        client_max_seconds: times.iter().copied().fold(0.0, f64::max),
        verified,
    })
}

/// The table, one line per row.
pub fn render_net_table(report: &NetReport) -> String {
    let mut out = format!(
        "{:>7} {:>10} {:>10} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6}\n",
        "clients",
        "total",
        "MB/s",
        "srv CPU",
        "srv RSS",
        "cli CPU",
        "cli RSS",
        "avg s",
        "min s",
        "max s",
        "exact"
    );
    for row in &report.rows {
        out.push_str(&format!(
            "{:>7} {:>10} {:>10.0} {:>7.0}% {:>6.1}MiB {:>7.0}% {:>6.1}MiB {:>8.2} {:>8.2} {:>8.2} {:>6}\n",
            row.clients,
            cryptstream_workload::format_size(row.total_bytes),
            row.mb_per_s,
            row.server_cpu_percent,
            row.server_max_rss_kib as f64 / 1024.0,
            row.client_cpu_percent,
            row.client_max_rss_kib as f64 / 1024.0,
            row.client_avg_seconds,
            row.client_min_seconds,
            row.client_max_seconds,
            if row.verified { "yes" } else { "NO" },
        ));
    }
    out
}
