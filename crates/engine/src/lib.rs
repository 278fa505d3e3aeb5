//! Encrypts, decrypts and verifies files and directory trees on all cores.
//!
//! A run has three steps. [`plan_transform`] (or [`plan_verify`]) walks the
//! input and decides everything that can be refused before work starts: an
//! output inside the input, the same file twice, outputs that exist. The
//! resulting [`Plan`] lists [`FileJob`]s and holds the output tree, opened
//! through directory descriptors. An [`Engine`] then runs it:
//! [`ThreadEngine`] feeds a long-lived pool of worker threads
//! ([`cryptstream_pool::Pool`]) through its bounded queue: a file of
//! at most one segment (4 MiB of plaintext) is one task, done start to end by
//! one worker, so small files pay nothing for parallelism; a larger file is
//! opened once ([`OpenFile`]) and split into segments of whole chunks that
//! any worker seals or opens and writes with positional I/O into one temp
//! output. Whoever finishes a file's last segment commits it: the output
//! (`cryptstream_output::AtomicFile`) appears under its final name only when complete and
//! authenticated. Each failure is reported with its file and reason, the
//! other files go on, and the [`Summary`] counts everything.
//!
//! How bytes are read and written is an [`IoChoice`] (read/write, pread/
//! pwrite, mmap), resolved per file by size into an [`IoStrategy`]. Which
//! executor runs the tasks is an [`Engine`]: [`ThreadEngine`] runs them on
//! a long-lived [`Pool`] of threads; the process engine lives in the
//! `cryptstream-procs` crate and drives the same executor-agnostic pieces
//! ([`OpenFile`], [`process_whole`], [`Ledger`], [`finish_run`]) from
//! worker processes. The CLI chooses between them.
//!
//! Outputs are written through `cryptstream-output`: the plan opens the
//! output tree through directory descriptors, every file is an atomic temp
//! file linked into place when complete, and symbolic links, hard links,
//! modes and mtimes are restored as `tar` would (modes filtered through
//! the umask, setuid/setgid/sticky only when asked). Passphrase keys are
//! derived once per run, before any work, by [`keys`].
//!
//! Containers are [`cryptstream_format::Envelope`]s: the run's
//! [`Envelopes`] (cryptstream's own, built from the keys of the
//! [`Settings`], and those the caller adds, age's for example) seal new
//! files, recognise and open existing ones by their first bytes, name
//! them, and say whether a file is processed in chunks or in order. This
//! crate names no container crate.
//!
//! [`stream`] handles `-` (stdin/stdout), where data arrives in order and
//! chunks are processed as they come, with one loop per direction for
//! every envelope, and [`stream::run_stream`] holds a stream's policy
//! (output checks, atomic commit, passphrase key, cancellation).

#![deny(missing_docs)]

mod display;
mod envelopes;
mod file;
pub mod hooks;
mod io;
pub mod keys;
mod plan;
mod reason;
pub mod stream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptstream_format::{
    Cipher, Envelope, Keyring, Layout, MasterKey, NativeEnvelope, NativeSealing, Processing,
    SaltSource, DEFAULT_CHUNK_SIZE,
};
use cryptstream_output::Replace;
use cryptstream_pool::{Cancel, Pool, SecretBuf};

/// The progress trait of every operation, from the pool crate.
pub use cryptstream_pool::{NoProgress, Progress};
pub use display::Shown;
pub use envelopes::Envelopes;
pub use file::{
    finished_output, make_link, process_umask, process_whole, Done, OpenFile, Opened, PendingLink,
    SplitParts, WholeOutcome,
};
pub use io::{IoChoice, IoStrategy, MMAP_MIN_BYTES};
pub use plan::{
    names_directory, output_name, plan_transform, plan_transform_as, plan_verify, Direction,
    FileJob, Looked, OutputFormat, OutputName, Overwrite, Plan, PlanError, Skipped, Source, Target,
    KEPT_EXISTING, SUFFIX,
};
pub use reason::Reason;

/// Plaintext bytes per segment: the unit of work of a large file, and the
/// size above which a file is split. 4 MiB keeps each worker's buffer small
/// (peak memory stays far below 64 MiB) while making the per-task overhead
/// negligible next to the work.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Small files travel to the thread engine's workers in runs of up to this
/// many files and [`BATCH_BYTES`] bytes, so that the hand-off through the
/// queue (a wake-up of a sleeping thread) is paid once per run, not once per
/// 4 KiB file.
const BATCH_FILES: usize = 64;
/// The most bytes of input in one run of small files (a single larger file
/// still makes a run of its own).
const BATCH_BYTES: u64 = 1024 * 1024;

/// An executor of plans: the thread engine ([`ThreadEngine`]) here, the
/// process engine in `cryptstream-procs`. The CLI chooses one; both run the
/// same per-file work ([`OpenFile`], [`process_whole`], [`Ledger`]).
pub trait Engine {
    /// The name used on the command line and in the summary.
    fn name(&self) -> &'static str;

    /// Runs `plan` with `settings`. Setting `cancel` stops the run: queued
    /// work is dropped, temp outputs are removed, and the summary says
    /// `cancelled`.
    fn run(
        &self,
        plan: &Plan,
        settings: &Settings,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Summary;
}

/// An envelope of the run as a worker process receives it: its name (to
/// find its [`cryptstream_format::Restore`]), its roles and its
/// [`Envelope::export`].
pub struct EnvelopeExport {
    /// [`Envelope::name`].
    pub name: String,
    /// It seals new files.
    pub seals: bool,
    /// It reports files no envelope recognises.
    pub fallback: bool,
    /// What builds it again (secrets included).
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}

/// How a run is carried out. Built once from the command line's flags with
/// [`Settings::builder`], for every command, and read-only after
/// [`SettingsBuilder::build`]: its fields are private, read through the
/// methods of the same names.
pub struct Settings {
    /// What to do to each file.
    pub(crate) direction: Direction,
    /// Worker threads or processes.
    pub(crate) workers: usize,
    /// AEAD for new files.
    pub(crate) cipher: Cipher,
    /// Plaintext bytes per chunk for new files.
    pub(crate) chunk_size: u32,
    /// What to do with existing outputs at commit time.
    pub(crate) overwrite: Overwrite,
    /// fsync each output and its directory before reporting success.
    pub(crate) durable: bool,
    /// Keys that may open files (passphrase keys derived before the run).
    pub(crate) keyring: Arc<Keyring>,
    /// The key that seals new files (encrypt only).
    pub(crate) encryption_key: Option<Arc<MasterKey>>,
    /// How bytes are read and written.
    pub(crate) io: IoChoice,
    /// The umask that restored modes are filtered through.
    pub(crate) umask: u32,
    /// Keep setuid, setgid and sticky bits on restored files.
    pub(crate) keep_special_bits: bool,
    /// The envelopes the caller added (the native one is built from the
    /// keys above): every one opens files.
    pub(crate) added: Vec<Arc<dyn Envelope>>,
    /// The envelope that seals new files, when not the native one.
    pub(crate) seal_with: Option<Arc<dyn Envelope>>,
    /// The envelope that reports unrecognised files, when not the native one.
    pub(crate) fallback: Option<Arc<dyn Envelope>>,
    /// Every envelope of the run, built by [`SettingsBuilder::build`].
    pub(crate) envelopes: Option<Envelopes>,
    /// Use this salt for every file instead of a random one: test builds
    /// only, for test vectors and byte-identical comparisons.
    #[cfg(any(test, feature = "test-knobs"))]
    pub(crate) fixed_salt: Option<[u8; 32]>,
}

/// Builds [`Settings`]; every value has a default but the direction and
/// the keys.
pub struct SettingsBuilder {
    settings: Settings,
}

impl SettingsBuilder {
    /// Worker threads or processes (at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.settings.workers = workers.max(1);
        self
    }

    /// AEAD for new files.
    pub fn cipher(mut self, cipher: Cipher) -> Self {
        self.settings.cipher = cipher;
        self
    }

    /// Plaintext bytes per chunk for new files.
    pub fn chunk_size(mut self, chunk_size: u32) -> Self {
        self.settings.chunk_size = chunk_size;
        self
    }

    /// What to do with existing outputs.
    pub fn overwrite(mut self, overwrite: Overwrite) -> Self {
        self.settings.overwrite = overwrite;
        self
    }

    /// fsync outputs before counting them done.
    pub fn durable(mut self, durable: bool) -> Self {
        self.settings.durable = durable;
        self
    }

    /// The key that seals new files.
    pub fn encryption_key(mut self, key: Option<Arc<MasterKey>>) -> Self {
        self.settings.encryption_key = key;
        self
    }

    /// How bytes are read and written.
    pub fn io(mut self, io: IoChoice) -> Self {
        self.settings.io = io;
        self
    }

    /// The umask restored modes go through (the binary reads it once).
    pub fn umask(mut self, umask: u32) -> Self {
        self.settings.umask = umask & 0o777;
        self
    }

    /// Keep setuid, setgid and sticky bits when restoring modes.
    pub fn keep_special_bits(mut self, keep: bool) -> Self {
        self.settings.keep_special_bits = keep;
        self
    }

    /// Adds an envelope that opens the files it recognises (age, for
    /// example); cryptstream's own is always there.
    pub fn envelope(mut self, envelope: Arc<dyn Envelope>) -> Self {
        self.settings.added.push(envelope);
        self
    }

    /// New files are sealed with `envelope` (added with
    /// [`SettingsBuilder::envelope`]) instead of cryptstream's own.
    pub fn seal_with(mut self, envelope: Arc<dyn Envelope>) -> Self {
        self.settings.seal_with = Some(envelope);
        self
    }

    /// A file no envelope recognises is opened (and reported) by
    /// `envelope` instead of cryptstream's own: a run with only age
    /// identities reports it as a damaged age file.
    pub fn fallback(mut self, envelope: Arc<dyn Envelope>) -> Self {
        self.settings.fallback = Some(envelope);
        self
    }

    /// A fixed salt for every file (test builds only).
    #[cfg(any(test, feature = "test-knobs"))]
    pub fn fixed_salt(mut self, salt: Option<[u8; 32]>) -> Self {
        self.settings.fixed_salt = salt;
        self
    }

    /// The settings, with the run's envelopes: cryptstream's own (opening
    /// with the keyring, sealing with the encryption key, cipher and chunk
    /// size) and those added.
    pub fn build(mut self) -> Settings {
        let s = &mut self.settings;
        #[cfg(any(test, feature = "test-knobs"))]
        let salt = s.fixed_salt.map_or(SaltSource::Random, SaltSource::Fixed);
        #[cfg(not(any(test, feature = "test-knobs")))]
        let salt = SaltSource::Random;
        let sealing = s.encryption_key.clone().map(|key| NativeSealing {
            key,
            cipher: s.cipher,
            chunk_size: s.chunk_size,
            salt,
        });
        let native: Arc<dyn Envelope> = Arc::new(NativeEnvelope::new(s.keyring.clone(), sealing));
        let mut envelopes = Envelopes::new(native);
        for envelope in s.added.iter().rev() {
            envelopes.add_opener(envelope.clone());
        }
        if let Some(sealer) = &s.seal_with {
            envelopes.set_sealer(sealer.clone());
        }
        if let Some(fallback) = &s.fallback {
            envelopes.set_fallback(fallback.clone());
        }
        s.envelopes = Some(envelopes);
        self.settings
    }
}

impl Settings {
    /// Settings for `direction` with `keyring`: one worker, AES-256-GCM,
    /// 64 KiB chunks, refuse existing outputs, umask 022, until changed.
    pub fn builder(direction: Direction, keyring: Keyring) -> SettingsBuilder {
        SettingsBuilder {
            settings: Settings {
                direction,
                workers: 1,
                cipher: Cipher::Aes256Gcm,
                chunk_size: DEFAULT_CHUNK_SIZE,
                overwrite: Overwrite::Refuse,
                durable: false,
                keyring: Arc::new(keyring),
                encryption_key: None,
                io: IoChoice::Auto,
                umask: 0o022,
                keep_special_bits: false,
                added: Vec::new(),
                seal_with: None,
                fallback: None,
                envelopes: None,
                #[cfg(any(test, feature = "test-knobs"))]
                fixed_salt: None,
            },
        }
    }

    /// What to do to each file.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Worker threads or processes.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// AEAD for new files.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Plaintext bytes per chunk for new files.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// What to do with existing outputs at commit time.
    pub fn overwrite(&self) -> Overwrite {
        self.overwrite
    }

    /// fsync each output and its directory before reporting success.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Keys that may open files (passphrase keys derived before the run).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The key that seals new files (encrypt only).
    pub fn encryption_key(&self) -> Option<&Arc<MasterKey>> {
        self.encryption_key.as_ref()
    }

    /// How bytes are read and written.
    pub fn io(&self) -> IoChoice {
        self.io
    }

    /// The umask that restored modes are filtered through.
    pub fn umask(&self) -> u32 {
        self.umask
    }

    /// Keep setuid, setgid and sticky bits on restored files.
    pub fn keep_special_bits(&self) -> bool {
        self.keep_special_bits
    }

    /// The run's envelopes.
    pub fn envelopes(&self) -> &Envelopes {
        self.envelopes
            .as_ref()
            .expect("settings are only handed out by SettingsBuilder::build")
    }

    /// The envelopes added by the caller, as a worker process builds them
    /// again (those that export).
    pub fn envelope_exports(&self) -> Vec<EnvelopeExport> {
        self.added
            .iter()
            .filter_map(|envelope| {
                Some(EnvelopeExport {
                    name: envelope.name().to_string(),
                    seals: self
                        .seal_with
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, envelope)),
                    fallback: self
                        .fallback
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, envelope)),
                    bytes: envelope.export()?,
                })
            })
            .collect()
    }

    /// The fixed salt of every file, if any (test builds only).
    #[cfg(any(test, feature = "test-knobs"))]
    pub fn fixed_salt(&self) -> Option<[u8; 32]> {
        self.fixed_salt
    }

    /// The key that seals new files.
    ///
    /// # Panics
    /// In a run that is not an encrypt run: only encrypt seals.
    pub fn sealing_key(&self) -> &MasterKey {
        self.encryption_key
            .as_deref()
            .expect("an encrypt run always has an encryption key")
    }

    /// How `job` is processed: in order (one worker, start to end) when
    /// its envelope encodes files as a whole (age's armor), else in chunks
    /// that several workers may share.
    pub fn processing(&self, job: &FileJob) -> Processing {
        if job.source != Source::File {
            return Processing::Chunked;
        }
        match self.direction {
            Direction::Encrypt => self.envelopes().sealer().sealing(),
            Direction::Decrypt | Direction::Verify => self.envelopes().processing_of(&job.input),
        }
    }

    /// Whether `job` may be cut into segments that several workers run:
    /// not when it is processed in order.
    pub fn can_split(&self, job: &FileJob) -> bool {
        self.processing(job) == Processing::Chunked
    }

    /// Chunks per segment for files with `chunk_size`-byte chunks: the
    /// unit of work of a split file.
    pub fn chunks_per_segment(&self, chunk_size: u32) -> u64 {
        (SEGMENT_BYTES / u64::from(chunk_size)).max(1)
    }

    /// The mode an output gets for recorded `mode` bits: the shared
    /// policy of [`cryptstream_output::restored_mode`] with this run's
    /// umask and `keep_special_bits`.
    pub fn output_mode(&self, mode: u32) -> u32 {
        cryptstream_output::restored_mode(mode, self.umask, self.keep_special_bits)
    }

    /// What to do when an output's name is taken at commit time.
    pub fn replace(&self) -> Replace {
        if self.overwrite == Overwrite::Force {
            Replace::Always
        } else {
            Replace::Never
        }
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

/// What a run did.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// encrypt, decrypt or verify.
    pub operation: Direction,
    /// The engine that ran it (threads or processes).
    pub engine: &'static str,
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

/// A task that an engine ran again because whatever ran it first failed
/// (a worker process that died, for the process engine).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RetryRecord {
    /// The input file of the task.
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Which part of the file: "whole file" or "chunks A..B".
    pub task: String,
    /// The process (or thread) that failed.
    pub worker_pid: u32,
    /// How it failed ("killed by signal 9").
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
            entry.serialize_field("reason", &self.0.reason)?;
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

/// Opens `job` (of `plan`) to be encrypted or decrypted in segments, by
/// either engine; a failure to open is recorded in `ledger` and gives
/// `None`.
pub fn open_split(
    plan: &Plan,
    settings: &Settings,
    job: &FileJob,
    ledger: &Ledger<'_>,
) -> Option<SplitOpen> {
    let started = Instant::now();
    let opened = plan
        .target(job)
        .map_err(Reason::Write)
        .and_then(|target| OpenFile::open_split(settings, job, target.as_ref()));
    match opened {
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

    /// Records a failure that belongs to no single job (a directory whose
    /// mode could not be set, say).
    pub fn record_other(&self, path: PathBuf, error: String) {
        self.tally().failures.push(FailureRecord { path, error });
    }

    /// Records a task that is run again because its worker died.
    pub fn record_retry(&self, retry: RetryRecord) {
        self.tally().retried.push(retry);
    }

    /// The summary of the run so far, for `settings` and `plan`.
    pub fn into_summary(
        self,
        plan: &Plan,
        settings: &Settings,
        engine: &'static str,
        cancelled: bool,
    ) -> Summary {
        let elapsed = self.started.elapsed();
        let tally = self.tally.into_inner().unwrap_or_else(|e| e.into_inner());
        summarize(plan, settings, engine, tally, elapsed, cancelled)
    }
}

/// The end of a run, for either engine: makes the hard links that waited
/// for their targets, then gives the output directories their modes and
/// mtimes, deepest first (so a read-only directory does not stop its own
/// contents from being written, and adding entries does not change a
/// directory's restored mtime).
pub fn finish_run(
    plan: &Plan,
    settings: &Settings,
    links: Vec<(usize, PendingLink)>,
    ledger: &Ledger<'_>,
) {
    for (index, link) in links {
        let job = &plan.files[index];
        let started = Instant::now();
        let result = if plan.is_tree() {
            plan.target(job)
                .map_err(Reason::Write)
                .and_then(|target| match target {
                    Some(target) => make_link(settings, &link, &target),
                    None => Ok(()),
                })
        } else {
            // Its target is named relative to the tree it was encrypted
            // in: outside that tree the name could be any file.
            Err(Reason::Link(format!(
                "a hard link to {}: decrypt the directory it belongs to",
                Shown(&link.target)
            )))
        };
        ledger.record(job, None, result, started);
    }
    if let Some(tree) = &plan.tree {
        for (path, error) in tree.finish_dirs(|mode| settings.output_mode(mode)) {
            ledger.record_other(path, format!("cannot set directory mode or time: {error}"));
        }
        if let Err(error) = tree.publish(settings.durable) {
            ledger.record_other(tree.root_path().to_path_buf(), error.to_string());
        }
    }
}

/// The thread engine: a [`Pool`] of worker threads fed through its bounded
/// queue; see the crate docs.
pub struct ThreadEngine<'p> {
    pool: &'p Pool,
}

impl<'p> ThreadEngine<'p> {
    /// An engine that runs on `pool`.
    pub fn new(pool: &'p Pool) -> ThreadEngine<'p> {
        ThreadEngine { pool }
    }
}

impl Engine for ThreadEngine<'_> {
    fn name(&self) -> &'static str {
        "threads"
    }

    fn run(
        &self,
        plan: &Plan,
        settings: &Settings,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Summary {
        let run = Run {
            plan,
            settings,
            cancel,
            ledger: Ledger::new(settings, progress),
            links: Mutex::new(Vec::new()),
        };
        self.pool.scope(|scope| run.produce(scope));
        let links = std::mem::take(&mut *run.links.lock().unwrap_or_else(|e| e.into_inner()));
        finish_run(plan, settings, links, &run.ledger);
        run.ledger
            .into_summary(plan, settings, self.name(), cancel.is_cancelled())
    }
}

struct Run<'a> {
    plan: &'a Plan,
    settings: &'a Settings,
    cancel: &'a Cancel,
    ledger: Ledger<'a>,
    /// Hard links to make at the end: job index and link.
    links: Mutex<Vec<(usize, PendingLink)>>,
}

/// A large file split into segments, shared by the workers that run them.
struct SplitFile<'a> {
    job: &'a FileJob,
    file: OpenFile,
    remaining: AtomicU64,
    failure: Mutex<Option<Reason>>,
    started: Instant,
}

impl Run<'_> {
    fn whole(&self, index: usize, buf: &mut SecretBuf) {
        let job = &self.plan.files[index];
        let started = Instant::now();
        if self.cancel.is_cancelled() {
            self.ledger
                .record(job, None, Err(Reason::Cancelled), started);
            return;
        }
        let target = match self.plan.target(job) {
            Ok(target) => target,
            Err(e) => {
                self.ledger
                    .record(job, None, Err(Reason::Write(e)), started);
                return;
            }
        };
        let progress = self.ledger.progress();
        let outcome = process_whole(
            self.settings,
            job,
            target.as_ref(),
            buf,
            self.cancel,
            &mut |bytes| progress.advance(bytes),
        );
        match outcome.result {
            Ok(Done::LinkLater(link)) => self
                .links
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((index, link)),
            Ok(Done::Written) => self.ledger.record(job, outcome.layout, Ok(()), started),
            Err(reason) => self
                .ledger
                .record(job, outcome.layout, Err(reason), started),
        }
    }

    fn segment(&self, split: &SplitFile<'_>, first: u64, count: u64, buf: &mut SecretBuf) {
        let failed = split
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !failed {
            let result = if self.cancel.is_cancelled() {
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

    fn produce<'s>(&'s self, scope: &cryptstream_pool::Scope<'_, 's>) {
        let files = &self.plan.files;
        let mut next = 0;
        while let Some(job) = files.get(next) {
            if self.cancel.is_cancelled() {
                self.ledger
                    .record(job, None, Err(Reason::Cancelled), Instant::now());
                next += 1;
                continue;
            }
            if job.size <= SEGMENT_BYTES
                || job.source != Source::File
                || !self.settings.can_split(job)
            {
                let end = small_run_end(files, next);
                let run = next..end;
                next = end;
                scope.spawn(move |scratch| {
                    for index in run {
                        self.whole(index, &mut scratch.primary);
                    }
                });
                continue;
            }
            next += 1;
            let Some(open) = open_split(self.plan, self.settings, job, &self.ledger) else {
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
                let split = split.clone();
                scope.spawn(move |scratch| {
                    self.segment(&split, s * per_segment, per_segment, &mut scratch.primary)
                });
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
    engine: &'static str,
    mut tally: Tally,
    elapsed: Duration,
    cancelled: bool,
) -> Summary {
    tally.latencies.sort_unstable();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Summary {
        operation: settings.direction,
        engine,
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
                output: None,
                relative: format!("{i}").into(),
                size,
                source: Source::File,
                looked: None,
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
