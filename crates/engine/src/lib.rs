//! Encrypts, decrypts and verifies files and directory trees on all cores.
//!
//! A run has three steps. [`plan_transform`] (or [`plan_verify`]) walks the
//! input and decides everything that can be refused before work starts: an
//! output inside the input, the same file twice, outputs that exist. The
//! resulting [`Plan`] lists [`FileJob`]s. [`run`] then feeds a fixed pool of
//! worker threads ([`cryptstream_pool`]) through a bounded queue: a file of
//! at most one segment (4 MiB of plaintext) is one task, done start to end by
//! one worker, so small files pay nothing for parallelism; a larger file is
//! opened once ([`OpenFile`]) and split into segments of whole chunks that
//! any worker seals or opens and writes with positional I/O into one temp
//! output. Whoever finishes a file's last segment commits it: the output
//! ([`AtomicOutput`]) appears under its final name only when complete and
//! authenticated. Each failure is reported with its file and reason, the
//! other files go on, and the [`Summary`] counts everything.
//!
//! [`stream`] handles `-` (stdin/stdout), where data arrives in order and
//! chunks are processed as they come.

mod file;
mod output;
mod plan;
pub mod stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptstream_format::{Cipher, Keyring, MasterKey};

pub use file::{OpenFile, Reason};
pub use output::{AtomicOutput, Replace};
pub use plan::{
    output_name, plan_transform, plan_verify, Direction, FileJob, Overwrite, Plan, PlanError,
    Skipped, SUFFIX,
};

/// Plaintext bytes per segment: the unit of work of a large file, and the
/// size above which a file is split. 4 MiB keeps each worker's buffer small
/// (peak memory stays far below 64 MiB) while making the per-task overhead
/// negligible next to the work.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Tasks the queue holds per worker: enough to keep workers busy while the
/// producer opens the next file, few enough to bound memory.
const QUEUE_PER_WORKER: usize = 2;

/// How a run is carried out.
pub struct Settings {
    /// What to do to each file.
    pub direction: Direction,
    /// Worker threads.
    pub workers: usize,
    /// AEAD for new files.
    pub cipher: Cipher,
    /// Plaintext bytes per chunk for new files.
    pub chunk_size: u32,
    /// What to do with existing outputs at commit time.
    pub overwrite: Overwrite,
    /// fsync each output and its directory before reporting success.
    pub durable: bool,
    /// Keys that may open files.
    pub keyring: Keyring,
    /// The key that seals new files (encrypt only).
    pub encryption_key: Option<Arc<MasterKey>>,
    /// Derive per-file salts from this seed and the relative path instead
    /// of the random source: for test vectors and byte-identical
    /// comparisons only, never for real data.
    pub fixed_salt: Option<[u8; 32]>,
}

impl Settings {
    fn chunks_per_segment(&self, chunk_size: u32) -> u64 {
        (SEGMENT_BYTES / u64::from(chunk_size)).max(1)
    }
}

/// One file that failed, and why.
#[derive(Debug)]
pub struct FileFailure {
    /// The input file.
    pub path: PathBuf,
    /// The reason.
    pub reason: Reason,
}

impl std::fmt::Display for FileFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Receives progress as the run goes; every method may be called from any
/// worker thread.
pub trait Progress: Sync {
    /// Bytes of input were processed.
    fn advance(&self, _bytes: u64) {}
    /// A file was done.
    fn file_done(&self) {}
    /// A file failed (reported once, as it happens).
    fn file_failed(&self, _failure: &FileFailure) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What a run did.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// encrypt, decrypt or verify.
    pub operation: Direction,
    /// Worker threads used.
    pub workers: usize,
    /// Files that were done.
    pub files_ok: u64,
    /// Files that failed.
    pub files_failed: u64,
    /// Entries skipped (symlinks, existing outputs with --skip-existing...).
    pub files_skipped: u64,
    /// Input bytes of the files that were done.
    pub bytes_in: u64,
    /// Output bytes of the files that were done.
    pub bytes_out: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Input megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// Files per second.
    pub files_per_s: f64,
    /// Median time from starting a file to finishing it, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub latency_p99_ms: f64,
    /// Whether SIGINT/SIGTERM stopped the run.
    pub cancelled: bool,
    /// Each failure: path and reason.
    pub failures: Vec<FailureRecord>,
    /// Each skipped entry: path and reason.
    pub skipped: Vec<Skipped>,
}

/// A failure in the JSON summary.
#[derive(Debug, serde::Serialize)]
pub struct FailureRecord {
    /// The input file.
    pub path: PathBuf,
    /// The reason, as printed.
    pub error: String,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    bytes_in: u64,
    bytes_out: u64,
    failures: Vec<FailureRecord>,
    latencies: Vec<Duration>,
}

struct Run<'a> {
    settings: &'a Settings,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    tally: Mutex<Tally>,
}

/// A large file split into segments, shared by the workers that run them.
struct SplitFile<'a> {
    job: &'a FileJob,
    file: OpenFile,
    remaining: AtomicU64,
    failure: Mutex<Option<Reason>>,
    started: Instant,
}

enum Task<'a> {
    /// A file done start to end by one worker.
    Whole(&'a FileJob),
    /// Chunks `first..first + count` of a split file.
    Segment(Arc<SplitFile<'a>>, u64, u64),
}

impl Run<'_> {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(
        &self,
        job: &FileJob,
        file: Option<&OpenFile>,
        result: Result<(), Reason>,
        started: Instant,
    ) {
        match result {
            Ok(()) => {
                let layout = file.map(|f| f.layout);
                let (plain, cipher) = layout
                    .map(|l| (l.plaintext_len(), l.ciphertext_len()))
                    .unwrap_or_default();
                let (bytes_in, bytes_out) = match self.settings.direction {
                    Direction::Encrypt => (plain, cipher),
                    Direction::Decrypt => (cipher, plain),
                    Direction::Verify => (cipher, 0),
                };
                let mut tally = self.tally();
                tally.ok += 1;
                tally.bytes_in += bytes_in;
                tally.bytes_out += bytes_out;
                tally.latencies.push(started.elapsed());
                drop(tally);
                self.progress.file_done();
            }
            Err(reason) => {
                let failure = FileFailure {
                    path: job.input.clone(),
                    reason,
                };
                if !matches!(failure.reason, Reason::Cancelled) {
                    self.progress.file_failed(&failure);
                }
                self.tally().failures.push(FailureRecord {
                    path: failure.path.clone(),
                    error: failure.reason.to_string(),
                });
            }
        }
    }

    fn whole(&self, job: &FileJob, buf: &mut Vec<u8>) {
        let started = Instant::now();
        let file = match OpenFile::open(self.settings, job) {
            Ok(file) => file,
            Err(reason) => return self.record(job, None, Err(reason), started),
        };
        let per_segment = self.settings.chunks_per_segment(file.layout.chunk_size());
        let mut result = Ok(());
        let mut first = 0;
        while first < file.layout.chunk_count() {
            if self.cancel.load(Ordering::Relaxed) {
                result = Err(Reason::Cancelled);
                break;
            }
            match file.run_segment(first, per_segment, buf) {
                Ok(bytes) => self.progress.advance(bytes),
                Err(reason) => {
                    result = Err(reason);
                    break;
                }
            }
            first += per_segment;
        }
        let result = result.and_then(|()| file.finish(self.settings));
        if result.is_err() {
            file.abandon();
        }
        self.record(job, Some(&file), result, started);
    }

    fn segment(&self, split: &SplitFile<'_>, first: u64, count: u64, buf: &mut Vec<u8>) {
        let failed = split
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !failed {
            let result = if self.cancel.load(Ordering::Relaxed) {
                Err(Reason::Cancelled)
            } else {
                split.file.run_segment(first, count, buf)
            };
            match result {
                Ok(bytes) => self.progress.advance(bytes),
                Err(reason) => {
                    split
                        .failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(reason);
                }
            }
        }
        if split.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let failure = split
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let result = match failure {
                Some(reason) => Err(reason),
                None => split.file.finish(self.settings),
            };
            if result.is_err() {
                split.file.abandon();
            }
            self.record(split.job, Some(&split.file), result, split.started);
        }
    }

    fn produce<'p>(&self, plan: &'p Plan, queue: &cryptstream_pool::Submitter<Task<'p>>) {
        for job in &plan.files {
            if self.cancel.load(Ordering::Relaxed) {
                self.record(job, None, Err(Reason::Cancelled), Instant::now());
                continue;
            }
            let task = if job.size <= SEGMENT_BYTES {
                Task::Whole(job)
            } else {
                let started = Instant::now();
                let file = match OpenFile::open(self.settings, job) {
                    Ok(file) => file,
                    Err(reason) => {
                        self.record(job, None, Err(reason), started);
                        continue;
                    }
                };
                let per_segment = self.settings.chunks_per_segment(file.layout.chunk_size());
                let segments = file.layout.chunk_count().div_ceil(per_segment);
                let split = Arc::new(SplitFile {
                    job,
                    file,
                    remaining: AtomicU64::new(segments),
                    failure: Mutex::new(None),
                    started,
                });
                for s in 0..segments {
                    let task = Task::Segment(split.clone(), s * per_segment, per_segment);
                    if queue.submit(task).is_err() {
                        return;
                    }
                }
                continue;
            };
            if queue.submit(task).is_err() {
                return;
            }
        }
    }
}

/// Runs `plan` on a pool of `settings.workers` threads; see the crate docs.
///
/// Setting `cancel` stops the run: queued work is dropped, temp outputs are
/// removed, and the summary says `cancelled`.
pub fn run(
    plan: &Plan,
    settings: &Settings,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Summary {
    let started = Instant::now();
    let run = Run {
        settings,
        progress,
        cancel,
        tally: Mutex::new(Tally::default()),
    };
    let workers = settings.workers.max(1);
    cryptstream_pool::run(
        workers,
        workers * QUEUE_PER_WORKER,
        |_| Vec::new(),
        |buf: &mut Vec<u8>, task: Task<'_>| match task {
            Task::Whole(job) => run.whole(job, buf),
            Task::Segment(split, first, count) => run.segment(&split, first, count, buf),
        },
        |queue| run.produce(plan, queue),
    );
    // Directory modes last, deepest first, so a read-only directory does not
    // stop its own files from being written.
    for (dir, mode) in plan.dirs.iter().rev() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode));
    }
    let tally = run.tally.into_inner().unwrap_or_else(|e| e.into_inner());
    summarize(
        plan,
        settings,
        tally,
        started.elapsed(),
        cancel.load(Ordering::Relaxed),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn summarize(
    plan: &Plan,
    settings: &Settings,
    mut tally: Tally,
    elapsed: Duration,
    cancelled: bool,
) -> Summary {
    tally.latencies.sort_unstable();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Summary {
        operation: settings.direction,
        workers: settings.workers.max(1),
        files_ok: tally.ok,
        files_failed: tally.failures.len() as u64,
        files_skipped: plan.skipped.len() as u64,
        bytes_in: tally.bytes_in,
        bytes_out: tally.bytes_out,
        seconds,
        mb_per_s: tally.bytes_in as f64 / 1e6 / seconds,
        files_per_s: tally.ok as f64 / seconds,
        latency_p50_ms: percentile(&tally.latencies, 50.0),
        latency_p99_ms: percentile(&tally.latencies, 99.0),
        cancelled,
        failures: tally.failures,
        skipped: plan.skipped.clone(),
    }
}
