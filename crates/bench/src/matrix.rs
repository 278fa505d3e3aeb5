//! Running the matrix of configurations and collecting the results.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::child::{describe, run_child, ChildRun};
use crate::error::{io_error, BenchError};
use crate::machine::Machine;
use crate::stats::{median, Spread};
use crate::tree::TreePrint;

/// The engine the binary uses when `--engine` is not given; the bench
/// leaves the flag out for it.
pub const DEFAULT_ENGINE: &str = "auto";

/// The I/O strategy the binary uses when `--io` is not given; the bench
/// leaves the flag out for it.
pub const DEFAULT_IO: &str = "auto";

/// What to benchmark and how often.
///
/// Engines and I/O strategies are the binary's own flag values, passed
/// through as they are (so a new engine needs no change here); the binary
/// rejects a value it does not know.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// The folder of input files (not modified).
    pub workload: PathBuf,
    /// Values of `--engine` (e.g. `threads`, `processes`).
    pub engines: Vec<String>,
    /// Values of `--io` (e.g. `auto`, `read`, `pread`, `mmap`).
    pub io: Vec<String>,
    /// Values of `--workers`.
    pub workers: Vec<usize>,
    /// Recorded runs per cell and operation.
    pub runs: usize,
    /// Whether one unrecorded run precedes the recorded ones (warms the
    /// page cache and the binary's code).
    pub warmup: bool,
    /// A folder for the key and the outputs; a private folder is made
    /// inside it and removed at the end. Must not be inside the workload.
    pub scratch: PathBuf,
}

/// One way of running the binary: a cell of the matrix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellConfig {
    /// The `--engine` value.
    pub engine: String,
    /// The `--io` value.
    pub io: String,
    /// The `--workers` value.
    pub workers: usize,
}

impl fmt::Display for CellConfig {
    /// `engine/io/workers`, e.g. `threads/auto/2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.engine, self.io, self.workers)
    }
}

/// What the binary is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `cryptstream encrypt` of the workload.
    Encrypt,
    /// `cryptstream decrypt` of the encrypted workload.
    Decrypt,
}

impl Operation {
    /// The subcommand name.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The results of one operation in one cell, over its recorded runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CellRecord {
    /// Encrypt or decrypt.
    pub operation: Operation,
    /// The `--engine` value.
    pub engine: String,
    /// The `--io` value.
    pub io: String,
    /// The `--workers` value.
    pub workers: usize,
    /// Recorded runs.
    pub runs: usize,
    /// Files processed per run.
    pub files: u64,
    /// Plaintext bytes per run (the workload's size, for both operations,
    /// so encrypt and decrypt rates compare).
    pub bytes: u64,
    /// Wall time of the whole process, start-up included, in seconds.
    pub wall_seconds: Spread,
    /// The run time the binary reports (`seconds` of its summary), which
    /// leaves out process start-up and key loading.
    pub reported_seconds: Spread,
    /// Plaintext megabytes (10^6 bytes) per second of wall time.
    pub mb_per_s: Spread,
    /// Files per second of wall time.
    pub files_per_s: Spread,
    /// Median over runs of the binary's per-file latency median, in ms.
    pub latency_p50_ms: f64,
    /// Median over runs of the binary's per-file 99th percentile, in ms.
    pub latency_p99_ms: f64,
    /// Median over runs of CPU time (user + system, worker processes
    /// included) over wall time: 2.0 is two cores busy all along.
    pub cpu_utilisation: f64,
    /// `cpu_utilisation` divided by the machine's cores: 1.0 is every core
    /// busy all along.
    pub cpu_per_core: f64,
    /// The largest peak resident set size of any run, in KiB (the largest
    /// single process, not the sum over worker processes).
    pub peak_rss_kib: u64,
    /// Whether decrypting this cell's output gave back the workload
    /// exactly: paths, bytes and modes (checked after every recorded
    /// decrypt run).
    pub round_trip_ok: bool,
    /// The first difference found when `round_trip_ok` is false.
    pub round_trip_error: Option<String>,
}

impl CellRecord {
    /// The cell this record belongs to.
    pub fn config(&self) -> CellConfig {
        CellConfig {
            engine: self.engine.clone(),
            io: self.io.clone(),
            workers: self.workers,
        }
    }
}

/// The workload that was benchmarked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadSummary {
    /// Its folder.
    pub path: PathBuf,
    /// Regular files in it.
    pub files: u64,
    /// Their bytes together.
    pub bytes: u64,
}

/// Everything a benchmark found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// What it ran on.
    pub machine: Machine,
    /// What it ran over.
    pub workload: WorkloadSummary,
    /// Recorded runs per cell and operation.
    pub runs: usize,
    /// Whether a warm-up run preceded them.
    pub warmup: bool,
    /// One record per operation, engine, I/O strategy and worker count, in
    /// the order they ran (each cell's encrypt, then its decrypt).
    pub cells: Vec<CellRecord>,
}

impl Report {
    /// The configurations, in the order they first appear.
    pub fn configs(&self) -> Vec<CellConfig> {
        let mut configs: Vec<CellConfig> = Vec::new();
        for cell in &self.cells {
            let config = cell.config();
            if !configs.contains(&config) {
                configs.push(config);
            }
        }
        configs
    }

    /// The operations, in the order they first appear.
    pub fn operations(&self) -> Vec<Operation> {
        let mut operations = Vec::new();
        for cell in &self.cells {
            if !operations.contains(&cell.operation) {
                operations.push(cell.operation);
            }
        }
        operations
    }
}

/// Which run of a cell is starting, for progress display.
#[derive(Clone, Debug)]
pub struct Step<'a> {
    /// Encrypt or decrypt.
    pub operation: Operation,
    /// The cell.
    pub config: &'a CellConfig,
    /// 0 for the warm-up, then 1 to `runs`.
    pub run: usize,
    /// Recorded runs per cell and operation.
    pub runs: usize,
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.run {
            0 => write!(f, "{} {} warm-up", self.operation, self.config),
            run => write!(
                f,
                "{} {} run {run}/{}",
                self.operation, self.config, self.runs
            ),
        }
    }
}

/// The fields of the binary's `--json` summary that the bench reads.
#[derive(Debug, Deserialize)]
struct ChildSummary {
    files_ok: u64,
    seconds: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

/// One recorded run.
struct Sample {
    child: ChildRun,
    summary: ChildSummary,
}

/// Runs the matrix with `binary` and no progress display; see
/// [`run_matrix_with`].
///
/// # Errors
/// As [`run_matrix_with`].
pub fn run_matrix(binary: &Path, config: &BenchConfig) -> Result<Report, BenchError> {
    run_matrix_with(binary, config, &mut |_| {})
}

/// Runs every cell of the matrix (engine x I/O strategy x workers) with the
/// `cryptstream` executable `binary`, calling `on_step` before each run.
///
/// Per cell: encrypt the workload (a warm-up run if asked, then
/// `config.runs` recorded runs), then decrypt the last encryption the same
/// way and check after every recorded decrypt that the result equals the
/// workload. Outputs are deleted (and the file system synced, so one run's
/// write-back does not slow the next) before every run. A key is made with
/// `binary keygen` in a private folder under `config.scratch`, removed at
/// the end with everything else written there.
///
/// # Errors
/// [`BenchError::EmptyMatrix`] for an empty list or zero runs,
/// [`BenchError::EmptyWorkload`], [`BenchError::ScratchInWorkload`], [`BenchError::ChildFailed`] when a run of
/// the binary fails (with its stderr), [`BenchError::BadSummary`] when its
/// `--json` output cannot be read, [`BenchError::Io`] for the scratch folder
/// or the trees.
pub fn run_matrix_with(
    binary: &Path,
    config: &BenchConfig,
    on_step: &mut dyn FnMut(&Step<'_>),
) -> Result<Report, BenchError> {
    if config.engines.is_empty() {
        return Err(BenchError::EmptyMatrix("no engine given"));
    }
    if config.io.is_empty() {
        return Err(BenchError::EmptyMatrix("no I/O strategy given"));
    }
    if config.workers.is_empty() {
        return Err(BenchError::EmptyMatrix("no worker count given"));
    }
    if config.runs == 0 {
        return Err(BenchError::EmptyMatrix("zero runs asked"));
    }
    let input = TreePrint::of(&config.workload)?;
    if input.files() == 0 {
        return Err(BenchError::EmptyWorkload {
            path: config.workload.clone(),
        });
    }
    let workload_dir =
        fs::canonicalize(&config.workload).map_err(io_error("resolve", &config.workload))?;
    if resolve(&config.scratch).starts_with(&workload_dir) {
        return Err(BenchError::ScratchInWorkload {
            scratch: config.scratch.clone(),
            workload: config.workload.clone(),
        });
    }
    fs::create_dir_all(&config.scratch).map_err(io_error("create folder", &config.scratch))?;
    let private = tempfile::Builder::new()
        .prefix("cryptstream-bench-")
        .tempdir_in(&config.scratch)
        .map_err(io_error("create a folder in", &config.scratch))?;
    let key = private.path().join("bench.key");
    let encrypted = private.path().join("encrypted");
    let decrypted = private.path().join("decrypted");
    make_key(binary, &key)?;

    let machine = Machine::detect(&config.workload, private.path());
    let mut cells = Vec::new();
    for engine in &config.engines {
        for io in &config.io {
            for &workers in &config.workers {
                let cell = CellConfig {
                    engine: engine.clone(),
                    io: io.clone(),
                    workers,
                };
                let job = |operation| Job {
                    binary,
                    key: &key,
                    cell: &cell,
                    operation,
                };
                let encrypt = job(Operation::Encrypt);
                let decrypt = job(Operation::Decrypt);
                let mut enc_runs = Vec::new();
                let mut dec_runs = Vec::new();
                let mut round_trip = Ok(());
                for run in (if config.warmup { 0 } else { 1 })..=config.runs {
                    on_step(&Step {
                        operation: Operation::Encrypt,
                        config: &cell,
                        run,
                        runs: config.runs,
                    });
                    let sample = encrypt.run(&config.workload, &encrypted)?;
                    if run > 0 {
                        enc_runs.push(sample);
                    }
                }
                for run in (if config.warmup { 0 } else { 1 })..=config.runs {
                    on_step(&Step {
                        operation: Operation::Decrypt,
                        config: &cell,
                        run,
                        runs: config.runs,
                    });
                    let sample = decrypt.run(&encrypted, &decrypted)?;
                    if run > 0 {
                        if round_trip.is_ok() {
                            round_trip = input.compare(&TreePrint::of(&decrypted)?);
                        }
                        dec_runs.push(sample);
                    }
                }
                for (operation, samples) in [
                    (Operation::Encrypt, enc_runs),
                    (Operation::Decrypt, dec_runs),
                ] {
                    cells.push(record(
                        operation,
                        &cell,
                        &samples,
                        &input,
                        machine.cores,
                        &round_trip,
                    ));
                }
            }
        }
    }
    let workload = WorkloadSummary {
        path: config.workload.clone(),
        files: input.files(),
        bytes: input.bytes(),
    };
    private.close().map_err(io_error(
        "remove",
        config.scratch.join("cryptstream-bench-*"),
    ))?;
    Ok(Report {
        machine,
        workload,
        runs: config.runs,
        warmup: config.warmup,
        cells,
    })
}

/// `path` with symbolic links and `..` resolved as far as it exists, the
/// rest appended as given, so a folder can be placed before it is made.
fn resolve(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut existing = path;
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            return missing.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_owned(),
        }
    }
}

/// Runs `binary keygen --output key`.
fn make_key(binary: &Path, key: &Path) -> Result<(), BenchError> {
    let mut command = Command::new(binary);
    command.arg("keygen").arg("--output").arg(key);
    let text = describe(&command);
    let run = run_child(command)?;
    match run.failure {
        None => Ok(()),
        Some(status) => Err(BenchError::ChildFailed {
            command: text,
            status,
            stderr: run.stderr,
        }),
    }
}

/// One operation of one cell, ready to run.
struct Job<'a> {
    binary: &'a Path,
    key: &'a Path,
    cell: &'a CellConfig,
    operation: Operation,
}

impl Job<'_> {
    /// Deletes `output`, then runs the binary from `input` to `output`.
    fn run(&self, input: &Path, output: &Path) -> Result<Sample, BenchError> {
        match fs::remove_dir_all(output) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", output)(e)),
        }
        // SAFETY: sync() has no preconditions; it only asks the kernel to
        // write dirty pages back.
        unsafe { libc::sync() };
        let mut command = Command::new(self.binary);
        command
            .arg(self.operation.name())
            .arg("--key-file")
            .arg(self.key)
            .arg("--workers")
            .arg(self.cell.workers.to_string());
        if self.cell.engine != DEFAULT_ENGINE {
            command.arg("--engine").arg(&self.cell.engine);
        }
        if self.cell.io != DEFAULT_IO {
            command.arg("--io").arg(&self.cell.io);
        }
        command.arg("--json").arg("--quiet").arg(input).arg(output);
        let text = describe(&command);
        let child = run_child(command)?;
        if let Some(status) = child.failure {
            return Err(BenchError::ChildFailed {
                command: text,
                status,
                stderr: child.stderr,
            });
        }
        let summary =
            serde_json::from_slice(&child.stdout).map_err(|source| BenchError::BadSummary {
                command: text,
                source,
                stdout: String::from_utf8_lossy(&child.stdout)
                    .chars()
                    .take(500)
                    .collect(),
            })?;
        Ok(Sample { child, summary })
    }
}

/// Summarises the recorded runs of one operation of one cell.
fn record(
    operation: Operation,
    cell: &CellConfig,
    samples: &[Sample],
    input: &TreePrint,
    cores: usize,
    round_trip: &Result<(), String>,
) -> CellRecord {
    let walls: Vec<f64> = samples.iter().map(|s| s.child.wall.as_secs_f64()).collect();
    let per_second = |amount: u64| -> Vec<f64> {
        walls
            .iter()
            .map(|&w| if w > 0.0 { amount as f64 / w } else { 0.0 })
            .collect()
    };
    let mb_per_s: Vec<f64> = per_second(input.bytes()).iter().map(|b| b / 1e6).collect();
    let field = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    let cpu_utilisation = field(|s| s.child.cpu_utilisation());
    CellRecord {
        operation,
        engine: cell.engine.clone(),
        io: cell.io.clone(),
        workers: cell.workers,
        runs: samples.len(),
        files: samples.last().map_or(0, |s| s.summary.files_ok),
        bytes: input.bytes(),
        wall_seconds: Spread::of(&walls),
        reported_seconds: Spread::of(
            &samples
                .iter()
                .map(|s| s.summary.seconds)
                .collect::<Vec<_>>(),
        ),
        mb_per_s: Spread::of(&mb_per_s),
        files_per_s: Spread::of(&per_second(input.files())),
        latency_p50_ms: field(|s| s.summary.latency_p50_ms),
        latency_p99_ms: field(|s| s.summary.latency_p99_ms),
        cpu_utilisation,
        cpu_per_core: cpu_utilisation / cores.max(1) as f64,
        peak_rss_kib: samples
            .iter()
            .map(|s| s.child.max_rss_kib)
            .max()
            .unwrap_or(0),
        round_trip_ok: round_trip.is_ok(),
        round_trip_error: round_trip.clone().err(),
    }
}

/// A generated workload in a temporary folder, removed on drop.
pub struct TempWorkload {
    dir: tempfile::TempDir,
}

impl TempWorkload {
    /// Generates `spec` with `workers` threads into a new folder under
    /// `parent`, calling `progress` with the bytes written as they are.
    ///
    /// # Errors
    /// [`BenchError::Io`] when the folder cannot be made,
    /// [`BenchError::Generate`] when generation fails.
    pub fn generate(
        parent: &Path,
        spec: &cryptstream_workload::WorkloadSpec,
        workers: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<TempWorkload, BenchError> {
        fs::create_dir_all(parent).map_err(io_error("create folder", parent))?;
        let dir = tempfile::Builder::new()
            .prefix("cryptstream-workload-")
            .tempdir_in(parent)
            .map_err(io_error("create a folder in", parent))?;
        cryptstream_workload::generate(
            dir.path(),
            spec,
            workers,
            cryptstream_workload::Existing::Refuse,
            progress,
        )?;
        Ok(TempWorkload { dir })
    }

    /// The workload's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(workload: &Path, scratch: &Path) -> BenchConfig {
        BenchConfig {
            workload: workload.to_owned(),
            engines: vec!["threads".to_owned()],
            io: vec![DEFAULT_IO.to_owned()],
            workers: vec![1],
            runs: 1,
            warmup: false,
            scratch: scratch.to_owned(),
        }
    }

    #[test]
    fn refuses_empty_matrices_and_workloads_before_running_anything() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let none = Path::new("/nonexistent/cryptstream");
        let mut bad = config(tmp.path(), &tmp.path().join("s"));
        bad.runs = 0;
        assert!(matches!(
            run_matrix(none, &bad),
            Err(BenchError::EmptyMatrix(_))
        ));
        bad = config(tmp.path(), &tmp.path().join("s"));
        bad.workers.clear();
        assert!(matches!(
            run_matrix(none, &bad),
            Err(BenchError::EmptyMatrix(_))
        ));
        let err = run_matrix(none, &config(tmp.path(), Path::new("/tmp"))).unwrap_err();
        assert!(matches!(err, BenchError::EmptyWorkload { .. }), "{err}");
    }

    #[test]
    fn refuses_a_scratch_folder_inside_the_workload() {
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::write(tmp.path().join("x"), b"x").expect("write");
        let inside = tmp.path().join("a/../b/scratch");
        let err = run_matrix(Path::new("/nonexistent"), &config(tmp.path(), &inside)).unwrap_err();
        assert!(matches!(err, BenchError::ScratchInWorkload { .. }), "{err}");
        assert!(!tmp.path().join("b").exists(), "nothing is created");
    }

    #[test]
    fn a_missing_binary_is_named() {
        let work = tempfile::tempdir().expect("temp dir");
        let scratch = tempfile::tempdir().expect("temp dir");
        fs::write(work.path().join("x"), b"x").expect("write");
        let err = run_matrix(
            Path::new("/nonexistent/cryptstream"),
            &config(work.path(), scratch.path()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/cryptstream keygen"),
            "{err}"
        );
        assert!(fs::read_dir(scratch.path())
            .expect("readable")
            .next()
            .is_none());
    }

    #[test]
    fn resolve_handles_missing_tails() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let real = fs::canonicalize(tmp.path()).expect("exists");
        assert_eq!(resolve(&tmp.path().join("x/y")), real.join("x/y"));
        assert_eq!(resolve(tmp.path()), real);
    }
}
