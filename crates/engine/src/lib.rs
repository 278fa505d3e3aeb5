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
//! How bytes are read and written is an [`IoChoice`] (read/write, pread/
//! pwrite, mmap), resolved per file by size into an [`IoStrategy`]. Which
//! executor runs the tasks is an [`EngineChoice`]: [`run`] is the thread
//! engine; the process engine lives in the `cryptstream-procs` crate and
//! drives the same executor-agnostic pieces ([`OpenFile`], [`process_whole`],
//! [`Ledger`]) from worker processes.
//!
//! [`stream`] handles `-` (stdin/stdout), where data arrives in order and
//! chunks are processed as they come.

mod file;
mod io;
mod output;
mod plan;
pub mod stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptstream_format::{Cipher, FormatError, Keyring, Layout, MasterKey, Passphrase};
use zeroize::Zeroizing;

pub use file::{finished_output, process_whole, OpenFile, Reason, SplitParts};
pub use io::{IoChoice, IoStrategy, MMAP_MIN_BYTES};
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
/// Small files travel to the thread engine's workers in runs of up to this
/// many files and [`BATCH_BYTES`] bytes, so that the hand-off through the
/// queue (a wake-up of a sleeping thread) is paid once per run, not once per
/// 4 KiB file.
const BATCH_FILES: usize = 64;
/// The most bytes of input in one run of small files (a single larger file
/// still makes a run of its own).
const BATCH_BYTES: u64 = 1024 * 1024;

/// Which executor runs the tasks of a run (`--engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// The thread engine, unless measurements say otherwise
    /// ([`EngineChoice::resolve`]).
    #[default]
    Auto,
    /// A fixed pool of threads over a bounded queue ([`run`]).
    Threads,
    /// Worker processes fed through a ring in shared memory
    /// (`cryptstream-procs`).
    Processes,
}

impl EngineChoice {
    /// The engine that runs: `Auto` is the thread engine. On the measured
    /// workloads (docs/ARCHITECTURE.md) the process engine was never faster,
    /// and threads start instantly and share one Argon2id derivation; the
    /// process engine is for isolation (a crash in one worker costs one
    /// retried task, not the run).
    pub fn resolve(self) -> EngineChoice {
        match self {
            EngineChoice::Auto | EngineChoice::Threads => EngineChoice::Threads,
            EngineChoice::Processes => EngineChoice::Processes,
        }
    }

    /// The name used on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Threads => "threads",
            EngineChoice::Processes => "processes",
        }
    }
}

/// The secrets of a run in a form that can be handed to a worker process
/// (through a pipe, never argv or the environment) and turned back into a
/// [`Keyring`] there: key-file texts and the passphrase. Zeroized on drop;
/// deliberately not `Debug`.
pub struct KeyMaterial {
    /// The texts of the key files, in the order given.
    pub key_files: Vec<Zeroizing<String>>,
    /// The passphrase, when one is used.
    pub passphrase: Option<Passphrase>,
}

impl KeyMaterial {
    /// The keyring these secrets make.
    ///
    /// # Errors
    /// [`FormatError::KeyFile`] for a text that is not a key file.
    pub fn keyring(&self) -> Result<Keyring, FormatError> {
        let keys = self
            .key_files
            .iter()
            .map(|text| cryptstream_format::parse_key_file(text))
            .collect::<Result<Vec<_>, _>>()?;
        let passphrase = self
            .passphrase
            .as_ref()
            .map(|p| Passphrase::new(p.as_bytes().to_vec()));
        Ok(Keyring::new(keys, passphrase))
    }
}

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
    /// Threads or worker processes.
    pub engine: EngineChoice,
    /// How bytes are read and written.
    pub io: IoChoice,
    /// The secrets behind `keyring` and `encryption_key`, for worker
    /// processes (needed by the process engine only).
    pub key_material: Option<KeyMaterial>,
}

impl Settings {
    /// The key that seals new files.
    ///
    /// # Panics
    /// In a run that is not an encrypt run: only encrypt seals.
    pub(crate) fn sealing_key(&self) -> &MasterKey {
        self.encryption_key
            .as_deref()
            .expect("an encrypt run always has an encryption key")
    }

    /// Chunks per segment for files with `chunk_size`-byte chunks: the
    /// unit of work of a split file.
    pub fn chunks_per_segment(&self, chunk_size: u32) -> u64 {
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
    /// The engine that ran it (threads or processes).
    pub engine: EngineChoice,
    /// The `--io` choice.
    pub io: IoChoice,
    /// Worker threads or processes allowed.
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
    #[serde(serialize_with = "serialize_skipped")]
    pub skipped: Vec<Skipped>,
    /// Tasks run again because the worker process running them died.
    pub retried: Vec<RetryRecord>,
}

/// A task that was run again on another worker because its worker process
/// died (process engine only).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RetryRecord {
    /// The input file of the task.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Which part of the file: "whole file" or "chunks A..B".
    pub task: String,
    /// The worker process that died.
    pub worker_pid: u32,
    /// How it ended ("killed by signal 9").
    pub cause: String,
}

/// A path in the JSON summary: as text, with bytes that are not UTF-8
/// replaced (JSON strings cannot hold them; the stderr lines name the file).
fn serialize_path<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// The skipped entries, with their paths as [`serialize_path`] writes them.
fn serialize_skipped<S: serde::Serializer>(skipped: &[Skipped], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::{SerializeSeq, SerializeStruct};
    struct Entry<'a>(&'a Skipped);
    impl serde::Serialize for Entry<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut entry = s.serialize_struct("Skipped", 2)?;
            entry.serialize_field("path", &self.0.path.to_string_lossy())?;
            entry.serialize_field("reason", self.0.reason)?;
            entry.end()
        }
    }
    let mut seq = s.serialize_seq(Some(skipped.len()))?;
    for entry in skipped {
        seq.serialize_element(&Entry(entry))?;
    }
    seq.end()
}

/// A failure in the JSON summary.
#[derive(Debug, serde::Serialize)]
pub struct FailureRecord {
    /// The input file.
    #[serde(serialize_with = "serialize_path")]
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
    retried: Vec<RetryRecord>,
}

/// A file too big for one task, opened and cut into segment tasks.
pub struct SplitOpen {
    /// The open input and output.
    pub file: OpenFile,
    /// Chunks per segment task (the last one may hold fewer).
    pub per_segment: u64,
    /// How many segment tasks the file makes.
    pub segments: u64,
    /// When the file was opened: its latency counts from here.
    pub started: Instant,
}

/// Opens `job` to be encrypted or decrypted in segments, by either engine;
/// a failure to open is recorded in `ledger` and gives `None`.
pub fn open_split(settings: &Settings, job: &FileJob, ledger: &Ledger<'_>) -> Option<SplitOpen> {
    let started = Instant::now();
    match OpenFile::open_split(settings, job) {
        Ok(file) => {
            let per_segment = settings.chunks_per_segment(file.layout.chunk_size());
            let segments = file.layout.chunk_count().div_ceil(per_segment);
            Some(SplitOpen {
                file,
                per_segment,
                segments,
                started,
            })
        }
        Err(reason) => {
            ledger.record(job, None, Err(reason), started);
            None
        }
    }
}

/// Collects what happens to each file of a run, from any thread, and
/// reports it to the [`Progress`]; both engines record into one and turn it
/// into the [`Summary`] at the end.
pub struct Ledger<'a> {
    direction: Direction,
    progress: &'a dyn Progress,
    tally: Mutex<Tally>,
    started: Instant,
}

impl<'a> Ledger<'a> {
    /// An empty ledger for a run of `settings`; the run's clock starts now.
    pub fn new(settings: &Settings, progress: &'a dyn Progress) -> Ledger<'a> {
        Ledger {
            direction: settings.direction,
            progress,
            tally: Mutex::new(Tally::default()),
            started: Instant::now(),
        }
    }

    /// Where progress goes.
    pub fn progress(&self) -> &'a dyn Progress {
        self.progress
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the end of `job`: done (with the `layout` it had, for the
    /// byte counts) or failed, timed from `started`.
    pub fn record(
        &self,
        job: &FileJob,
        layout: Option<Layout>,
        result: Result<(), Reason>,
        started: Instant,
    ) {
        match result {
            Ok(()) => {
                let (plain, cipher) = layout
                    .map(|l| (l.plaintext_len(), l.ciphertext_len()))
                    .unwrap_or_default();
                let (bytes_in, bytes_out) = match self.direction {
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

    /// Records a task that is run again because its worker died.
    pub fn record_retry(&self, retry: RetryRecord) {
        self.tally().retried.push(retry);
    }

    /// The summary of the run so far, for `settings` and `plan`.
    pub fn into_summary(self, plan: &Plan, settings: &Settings, cancelled: bool) -> Summary {
        let elapsed = self.started.elapsed();
        let tally = self.tally.into_inner().unwrap_or_else(|e| e.into_inner());
        summarize(plan, settings, tally, elapsed, cancelled)
    }
}

/// Gives the output directories their modes, deepest first, once every
/// file is written (so a read-only directory does not stop its own files
/// from being written).
pub fn apply_dir_modes(plan: &Plan) {
    use std::os::unix::fs::PermissionsExt;
    for (dir, mode) in plan.dirs.iter().rev() {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode));
    }
}

struct Run<'a> {
    settings: &'a Settings,
    cancel: &'a AtomicBool,
    ledger: Ledger<'a>,
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
    /// Files done start to end, one after the other, by one worker.
    Whole(&'a [FileJob]),
    /// Chunks `first..first + count` of a split file.
    Segment(Arc<SplitFile<'a>>, u64, u64),
}

impl Run<'_> {
    fn whole(&self, job: &FileJob, buf: &mut Vec<u8>) {
        let started = Instant::now();
        if self.cancel.load(Ordering::Relaxed) {
            self.ledger
                .record(job, None, Err(Reason::Cancelled), started);
            return;
        }
        let progress = self.ledger.progress();
        let (layout, result) = process_whole(self.settings, job, buf, self.cancel, &mut |bytes| {
            progress.advance(bytes)
        });
        self.ledger.record(job, layout, result, started);
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
                Ok(bytes) => self.ledger.progress().advance(bytes),
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
            self.ledger
                .record(split.job, Some(split.file.layout), result, split.started);
        }
    }

    fn produce<'p>(&self, plan: &'p Plan, queue: &cryptstream_pool::Submitter<Task<'p>>) {
        let mut next = 0;
        while let Some(job) = plan.files.get(next) {
            if self.cancel.load(Ordering::Relaxed) {
                self.ledger
                    .record(job, None, Err(Reason::Cancelled), Instant::now());
                next += 1;
                continue;
            }
            let task = if job.size <= SEGMENT_BYTES {
                let end = small_run_end(&plan.files, next);
                let run = &plan.files[next..end];
                next = end;
                Task::Whole(run)
            } else {
                next += 1;
                let Some(open) = open_split(self.settings, job, &self.ledger) else {
                    continue;
                };
                let (segments, per_segment) = (open.segments, open.per_segment);
                let split = Arc::new(SplitFile {
                    job,
                    file: open.file,
                    remaining: AtomicU64::new(segments),
                    failure: Mutex::new(None),
                    started: open.started,
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

/// The end of the run of small files that starts at `files[start]` (itself
/// small): at most [`BATCH_FILES`] files and [`BATCH_BYTES`] bytes.
fn small_run_end(files: &[FileJob], start: usize) -> usize {
    let mut bytes = files[start].size;
    let mut end = start + 1;
    while let Some(job) = files.get(end) {
        if end - start == BATCH_FILES || job.size > SEGMENT_BYTES || bytes + job.size > BATCH_BYTES
        {
            break;
        }
        bytes += job.size;
        end += 1;
    }
    end
}

/// Runs `plan` on a pool of `settings.workers` threads (the thread engine,
/// whatever `settings.engine` says); see the crate docs.
///
/// Setting `cancel` stops the run: queued work is dropped, temp outputs are
/// removed, and the summary says `cancelled`.
pub fn run(
    plan: &Plan,
    settings: &Settings,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Summary {
    let run = Run {
        settings,
        cancel,
        ledger: Ledger::new(settings, progress),
    };
    let workers = settings.workers.max(1);
    cryptstream_pool::run(
        workers,
        workers * QUEUE_PER_WORKER,
        |_| Vec::new(),
        |buf: &mut Vec<u8>, task: Task<'_>| match task {
            Task::Whole(jobs) => jobs.iter().for_each(|job| run.whole(job, buf)),
            Task::Segment(split, first, count) => run.segment(&split, first, count, buf),
        },
        |queue| run.produce(plan, queue),
    );
    apply_dir_modes(plan);
    let mut summary = run
        .ledger
        .into_summary(plan, settings, cancel.load(Ordering::Relaxed));
    summary.engine = EngineChoice::Threads;
    summary
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
        engine: settings.engine.resolve(),
        io: settings.io,
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
        retried: tally.retried,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(sizes: &[u64]) -> Vec<FileJob> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| FileJob {
                input: format!("in/{i}").into(),
                output: Some(format!("out/{i}").into()),
                relative: format!("{i}").into(),
                size,
            })
            .collect()
    }

    /// Cuts `sizes` into runs the way the producer does (large files alone).
    fn runs(sizes: &[u64]) -> Vec<usize> {
        let files = jobs(sizes);
        let mut lengths = Vec::new();
        let mut next = 0;
        while next < files.len() {
            let end = if files[next].size <= SEGMENT_BYTES {
                small_run_end(&files, next)
            } else {
                next + 1
            };
            lengths.push(end - next);
            next = end;
        }
        lengths
    }

    #[test]
    fn small_files_travel_in_runs_bounded_by_count_and_bytes() {
        // 4 KiB files: runs of BATCH_FILES, then the rest.
        let mut expected = vec![BATCH_FILES; 3];
        expected.push(8);
        assert_eq!(runs(&[4096; 3 * BATCH_FILES + 8]), expected);
        // 300 KiB files: three fit in 1 MiB, the fourth starts a new run.
        assert_eq!(runs(&[300 << 10; 7]), [3, 3, 1]);
        // A file of BATCH_BYTES (but not split) fills a run on its own.
        assert_eq!(runs(&[1 << 20, 1 << 20, 10, 20]), [1, 1, 2]);
        // A file that is split ends a run and is its own task.
        assert_eq!(runs(&[10, 20, SEGMENT_BYTES + 1, 30]), [2, 1, 1]);
        // Empty files are files too.
        assert_eq!(runs(&[0; BATCH_FILES + 1]), [BATCH_FILES, 1]);
    }
}
