//! `send`: many files over several TLS connections at once, large files
//! split into ranges, resumable.
//!
//! What is sent is planned first ([`plan_tree`]: a directory is walked in
//! sorted order like `rsync -a`; regular files, symbolic links, hard links
//! and directories, special files skipped and reported). The first
//! connection asks which files the server holds already (`tree`); each
//! other file becomes one or more jobs of at most `range_bytes`
//! (16 MiB by default), put in one queue that `connections` sessions take
//! from, so one large file travels over every connection at once and many
//! small files spread over them. For each job a session sends `Open`
//! (the server answers with the ranges it already holds: resume), the
//! missing bytes in `Data` frames, and then `Sync` and `Close`, or, for the
//! job that finishes the file, `Commit` with the whole-file BLAKE3, whose
//! segments each connection hashed from the bytes it read to send them
//! (`treehash`), so a file is read once.
//!
//! File bytes are read with `pread` on tokio's blocking threads, one block
//! ahead of the one being sent. Symbolic links, hard links and
//! directories follow on one connection once every file is done (`tree`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptstream_pool::Progress;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::{self, Token, Transcript, EXPORTER_LABEL, EXPORTER_LEN};
use crate::frame::{data_prefix, ErrorCode, Frame, MAX_DATA_PAYLOAD, VERSION};
use crate::ranges::RangeSet;
use crate::tls::{client_config, record_known_host, Fingerprint, PinnedVerifier, ServerTrust};
use crate::treehash::SegmentedHash;
use crate::wire::{read_frame, write_frame, WireError};
use crate::NetError;

mod plan;
mod tree;

pub use plan::{plan_tree, Plan, PlannedDir, PlannedFile, PlannedLink, PlannedSymlink, Skipped};

/// Default bytes of one job (a range of a file sent by one connection).
pub const DEFAULT_RANGE_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes read from the file at a time (a few data frames).
const READ_BLOCK: usize = 1024 * 1024;
/// Bytes of TLS records a session may hold before the socket takes them
/// (rustls' default is 64 KiB): a read block and its frame headers fit,
/// so a block leaves in one `writev` of whole records, not in pieces of
/// 64 KiB.
pub(crate) const SEND_BUFFER: usize = READ_BLOCK + 64 * 1024;
/// Times a job is tried again on a new connection after one broke.
const JOB_RETRIES: u32 = 2;
/// Times a connection the server closed before authentication (its pool
/// of unauthenticated connections was full) is tried again.
const CONNECT_RETRIES: u32 = 8;
/// First pause before such a retry; it doubles each time, up to
/// [`CONNECT_BACKOFF_MAX`], plus up to as much again at random.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause before a retry.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Segment of the whole-file hash: each job hashes the bytes it reads
/// (see `treehash`), so the file is read once, by its connections, in
/// parallel.
const HASH_SEGMENT: u64 = 16 * 1024 * 1024;

/// Reports one file or entry of a send: done, or failed with `failure`
/// (printed as `NAME: REASON`).
pub(crate) fn report_done(progress: &dyn Progress, name: &str, failure: Option<&str>) {
    match failure {
        None => progress.file_done(),
        Some(reason) => progress.file_failed(&format_args!("{name}: {reason}")),
    }
}

/// Everything a send needs, built once by the caller.
pub struct SendConfig {
    /// `HOST:PORT` of the server.
    pub to: String,
    /// What to send, from [`plan_tree`].
    pub plan: Plan,
    /// How a file the server already holds is recognised (and not sent).
    pub comparison: Comparison,
    /// Sessions at once.
    pub connections: usize,
    /// The access token.
    pub token: Token,
    /// How the server's certificate is trusted.
    pub trust: ServerTrust,
    /// Bytes per job.
    pub range_bytes: u64,
    /// Deadline of every read from the server and of connecting.
    pub timeout: Duration,
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
}

/// A failed file of a send.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SendFailure {
    /// Its name on the server.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// What a send did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SendSummary {
    /// Regular files now on the server: sent and verified, or found there
    /// already (`files_skipped`).
    pub files: u64,
    /// Total bytes of those files.
    pub bytes: u64,
    /// File bytes sent over the network in this run.
    pub bytes_sent: u64,
    /// File bytes not sent because the server held part of a file that
    /// was cut off before (resume).
    pub bytes_resumed: u64,
    /// Files not sent because the server held them already, under their
    /// final name (same size and mtime, or with `--checksum` same content).
    pub files_skipped: u64,
    /// Their bytes.
    pub bytes_skipped: u64,
    /// Symbolic links made.
    pub symlinks: u64,
    /// Hard links made (names of a file beyond its first).
    pub hard_links: u64,
    /// Directories made or given their mode and mtime.
    pub directories: u64,
    /// Connections used.
    pub connections: usize,
    /// Wall time.
    pub seconds: f64,
    /// `bytes / seconds`, in MB/s (10^6).
    pub mb_per_s: f64,
    /// Files, links and directories that failed.
    pub failures: Vec<SendFailure>,
}

/// How `send` decides that the server already holds a file under its
/// final name, so that it is not sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same size and modification time to the nanosecond (rsync's quick
    /// check): nothing is read on either side. The default.
    SizeAndMtime,
    /// Same size and whole-file BLAKE3 (`send --checksum`): the client
    /// hashes every file, the server every file of the same size it
    /// holds; the mtime may differ (it is then set).
    Checksum,
}

/// One range of one file.
#[derive(Clone, Copy, Debug)]
struct Job {
    file: usize,
    start: u64,
    end: u64,
    tries: u32,
}

/// A file's state during the send.
struct FileState {
    planned: PlannedFile,
    jobs_left: AtomicUsize,
    hash: Arc<SegmentedHash>,
    failure: Mutex<Option<String>>,
    /// The server holds it already: it is not sent.
    held: AtomicBool,
}

/// A TLS connector and the verifier it asks (to tell a changed
/// certificate from other handshake failures).
#[derive(Clone)]
struct Trusting {
    connector: TlsConnector,
    verifier: Arc<PinnedVerifier>,
}

impl Trusting {
    fn new(expected: Option<Fingerprint>) -> Result<Trusting, NetError> {
        let verifier = Arc::new(PinnedVerifier::new(expected));
        Ok(Trusting {
            connector: TlsConnector::from(Arc::new(client_config(verifier.clone())?)),
            verifier,
        })
    }
}

/// What every session shares.
struct Shared {
    trust: ServerTrust,
    to: String,
    token: Token,
    timeout: Duration,
    files: Vec<FileState>,
    queue: Mutex<std::collections::VecDeque<Job>>,
    progress: Arc<dyn Progress>,
    sent: AtomicU64,
    resumed: AtomicU64,
    /// A failure that ends the whole send (authentication, trust).
    fatal: Mutex<Option<NetError>>,
    next_file_id: AtomicU64,
}

/// Sends the files of `config`, building its own runtime.
///
/// # Errors
/// [`NetError`] for what ends the whole send: the server cannot be
/// reached, refuses the token, or presents another certificate. A failed
/// file is not an error: see [`SendSummary::failures`].
pub fn send(config: SendConfig) -> Result<SendSummary, NetError> {
    // A worker per connection at most: with one connection a second
    // worker would only be woken to find nothing to do.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.connections.clamp(1, cores))
        .enable_all()
        .thread_name("cryptstream-send")
        .build()
        .map_err(NetError::Runtime)?;
    runtime.block_on(send_async(config))
}

async fn send_async(config: SendConfig) -> Result<SendSummary, NetError> {
    let start = Instant::now();
    let expected = config.trust.expected()?;
    let trusting = Trusting::new(expected)?;
    let Plan {
        files,
        symlinks,
        links,
        dirs,
        ..
    } = config.plan;
    let files = files
        .into_iter()
        .map(|planned| FileState {
            hash: Arc::new(SegmentedHash::new(planned.meta.size, HASH_SEGMENT)),
            planned,
            jobs_left: AtomicUsize::new(0),
            failure: Mutex::new(None),
            held: AtomicBool::new(false),
        })
        .collect();
    let shared = Arc::new(Shared {
        trust: config.trust.clone(),
        to: config.to.clone(),
        token: config.token,
        timeout: config.timeout,
        files,
        queue: Mutex::new(std::collections::VecDeque::new()),
        progress: config.progress,
        sent: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        fatal: Mutex::new(None),
        next_file_id: AtomicU64::new(0),
    });
    let hashes = match config.comparison {
        Comparison::Checksum => tree::hash_all(&shared).await,
        Comparison::SizeAndMtime => Vec::new(),
    };

    // The first session alone: it settles trust (the server proves it
    // holds the token, and only then is a new host recorded) before the
    // others connect.
    let mut first = Session::connect(&shared, &trusting).await?;
    let trusting = match expected {
        Some(_) => trusting,
        None => {
            let seen = trusting
                .verifier
                .seen()
                .expect("a finished handshake saw a certificate");
            if let ServerTrust::KnownHosts { file, host } = &shared.trust {
                record_known_host(file, host, seen)?;
                shared.progress.note(&format_args!(
                    "first contact with {host}: it proved it holds the token; \
                     its certificate fingerprint {} is recorded in {}",
                    seen.to_hex(),
                    file.display()
                ));
            }
            // Every further session must present the same certificate.
            Trusting::new(Some(seen))?
        }
    };
    first
        .check_held(&shared, config.comparison, &hashes)
        .await?;
    let jobs = queue_jobs(&shared, config.range_bytes.max(MAX_DATA_PAYLOAD as u64));
    let connections = config.connections.clamp(1, jobs.max(1));
    let left = run_sessions(shared.clone(), first, connections, trusting.clone()).await?;
    // Links and directories once every file is done, on one connection.
    let mut entries = tree::EntriesDone::default();
    if !(symlinks.is_empty() && links.is_empty() && dirs.is_empty()) {
        let session = match left {
            Some(session) => Ok(session),
            None => Session::connect(&shared, &trusting).await,
        };
        match session {
            Ok(mut session) => {
                entries = session
                    .send_entries(&shared, &symlinks, &links, &dirs)
                    .await;
                session.bye().await;
            }
            Err(e) if e.ends_the_send() => return Err(e),
            Err(e) => {
                for name in symlinks
                    .iter()
                    .map(|l| &l.name)
                    .chain(links.iter().map(|l| &l.name))
                    .chain(dirs.iter().map(|d| &d.name))
                {
                    entries.failures.push(SendFailure {
                        name: name.display(),
                        reason: format!("not made: {e}"),
                    });
                }
            }
        }
    } else if let Some(session) = left {
        session.bye().await;
    }
    let mut summary = SendSummary {
        connections,
        symlinks: entries.symlinks,
        hard_links: entries.hard_links,
        directories: entries.directories,
        ..SendSummary::default()
    };
    for file in &shared.files {
        let name = file.planned.name.display();
        let failure = file.failure.lock().expect("never poisoned").clone();
        match failure {
            Some(reason) => summary.failures.push(SendFailure { name, reason }),
            None if file.arrived() => {
                summary.files += 1;
                summary.bytes += file.planned.meta.size;
                if file.held.load(Ordering::Relaxed) {
                    summary.files_skipped += 1;
                    summary.bytes_skipped += file.planned.meta.size;
                }
            }
            None => summary.failures.push(SendFailure {
                name,
                reason: "not sent".into(),
            }),
        }
    }
    summary.failures.extend(entries.failures);
    summary.bytes_sent = shared.sent.load(Ordering::Relaxed);
    summary.bytes_resumed = shared.resumed.load(Ordering::Relaxed);
    summary.seconds = start.elapsed().as_secs_f64();
    if summary.seconds > 0.0 {
        summary.mb_per_s = summary.bytes as f64 / 1e6 / summary.seconds;
    }
    Ok(summary)
}

/// Queues the ranges of every file the server does not hold (a file it
/// holds is done at once); returns how many jobs were queued.
fn queue_jobs(shared: &Shared, range: u64) -> usize {
    let mut queue = shared.queue.lock().expect("never poisoned");
    for (index, file) in shared.files.iter().enumerate() {
        let size = file.planned.meta.size;
        if file.held.load(Ordering::Relaxed) {
            shared.progress.advance(size);
            report_done(&*shared.progress, &file.planned.name.display(), None);
            continue;
        }
        let mut jobs = 0;
        let mut at = 0;
        loop {
            let end = (at + range).min(size);
            queue.push_back(Job {
                file: index,
                start: at,
                end,
                tries: 0,
            });
            jobs += 1;
            at = end;
            if at >= size {
                break;
            }
        }
        file.jobs_left.store(jobs, Ordering::Relaxed);
    }
    queue.len()
}

/// Runs `connections` workers over the queue; returns a connection that
/// is still open, if any (the others said `Bye`).
async fn run_sessions(
    shared: Arc<Shared>,
    first: Session,
    connections: usize,
    trusting: Trusting,
) -> Result<Option<Session>, NetError> {
    let mut tasks = Vec::new();
    let mut first = Some(first);
    for _ in 0..connections {
        let shared = shared.clone();
        let session = first.take();
        let trusting = trusting.clone();
        tasks.push(tokio::spawn(async move {
            worker(shared, session, trusting).await
        }));
    }
    let mut kept = None;
    for task in tasks {
        if let Ok(Some(session)) = task.await {
            match kept {
                None => kept = Some(session),
                Some(_) => session.bye().await,
            }
        }
    }
    if let Some(fatal) = shared.fatal.lock().expect("never poisoned").take() {
        return Err(fatal);
    }
    // Jobs nobody could run: their files fail.
    let left: Vec<Job> = shared
        .queue
        .lock()
        .expect("never poisoned")
        .drain(..)
        .collect();
    for job in left {
        shared.files[job.file].fail("no connection to the server was left to send it");
    }
    Ok(kept)
}

impl FileState {
    fn fail(&self, reason: &str) {
        let mut failure = self.failure.lock().expect("never poisoned");
        if failure.is_none() {
            *failure = Some(reason.to_owned());
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().expect("never poisoned").is_some()
    }

    /// On the server now: sent and committed, or held already.
    fn arrived(&self) -> bool {
        !self.failed() && self.jobs_left.load(Ordering::Acquire) == 0
    }
}

/// Runs one connection's share of the jobs, reconnecting after a break;
/// returns its connection, if still open.
async fn worker(
    shared: Arc<Shared>,
    first: Option<Session>,
    trusting: Trusting,
) -> Option<Session> {
    let mut session = first;
    loop {
        if shared.fatal.lock().expect("never poisoned").is_some() {
            return None;
        }
        let Some(job) = shared.queue.lock().expect("never poisoned").pop_front() else {
            break;
        };
        let file = &shared.files[job.file];
        if file.failed() {
            file.jobs_left.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        if session.is_none() {
            match Session::connect(&shared, &trusting).await {
                Ok(s) => session = Some(s),
                Err(e) => {
                    requeue_or_fail(&shared, job, &e.to_string());
                    if e.ends_the_send() {
                        shared
                            .fatal
                            .lock()
                            .expect("never poisoned")
                            .get_or_insert(e);
                    }
                    return None;
                }
            }
        }
        let live = session.as_mut().expect("connected above");
        match live.run_job(&shared, job).await {
            Ok(()) => {}
            Err(JobError::File(reason)) => {
                file.fail(&reason);
                finish_failed(&shared, job.file);
            }
            Err(JobError::Session(reason)) => {
                session = None;
                requeue_or_fail(&shared, job, &reason);
            }
            Err(JobError::Broken) => session = None,
        }
    }
    session
}

/// Reports a failed file once all its jobs are accounted for.
fn finish_failed(shared: &Shared, index: usize) {
    let file = &shared.files[index];
    if file.jobs_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        let reason = file.failure.lock().expect("never poisoned").clone();
        report_done(
            &*shared.progress,
            &file.planned.name.display(),
            reason.as_deref(),
        );
    }
}

fn requeue_or_fail(shared: &Shared, mut job: Job, reason: &str) {
    if job.tries < JOB_RETRIES {
        job.tries += 1;
        shared.queue.lock().expect("never poisoned").push_front(job);
    } else {
        shared.files[job.file].fail(&format!("connection lost: {reason}"));
        finish_failed(shared, job.file);
    }
}

/// How a job failed.
enum JobError {
    /// The file cannot be sent (refused name, read error, hash mismatch).
    File(String),
    /// The connection broke: the job can go to another one.
    Session(String),
    /// The connection broke after the job was accounted for (its file
    /// failed and was reported): only the connection is dropped.
    Broken,
}

impl From<WireError> for JobError {
    fn from(e: WireError) -> JobError {
        JobError::Session(e.to_string())
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// One authenticated connection.
struct Session {
    tls: Tls,
    timeout: Duration,
}

impl Session {
    /// Ends the session politely.
    async fn bye(mut self) {
        let _ = write_frame(&mut self.tls, &Frame::Bye).await;
        let _ = self.tls.shutdown().await;
    }

    /// [`Session::connect_once`], tried again after a pause when the
    /// server closed the connection during the TLS handshake (a busy
    /// server closes what its pool of unauthenticated connections cannot
    /// take).
    async fn connect(shared: &Shared, trusting: &Trusting) -> Result<Session, NetError> {
        let mut pause = CONNECT_BACKOFF;
        let mut tries = 0;
        loop {
            match Session::connect_once(shared, trusting).await {
                Err(NetError::Busy { .. }) if tries < CONNECT_RETRIES => {
                    let mut jitter = [0u8; 2];
                    let _ = aws_lc_rs::rand::fill(&mut jitter);
                    let extra = pause.mul_f64(f64::from(u16::from_be_bytes(jitter)) / 65535.0);
                    tokio::time::sleep(pause + extra).await;
                    pause = (pause * 2).min(CONNECT_BACKOFF_MAX);
                    tries += 1;
                }
                Err(NetError::Busy { address }) => {
                    return Err(NetError::Connect {
                        address,
                        reason: format!(
                            "the server closed the connection during the TLS handshake {} times (busy?)",
                            CONNECT_RETRIES + 1
                        ),
                    })
                }
                other => return other,
            }
        }
    }

    /// Connects, and runs the version-2 exchange (see `auth`): nothing
    /// but the hello and the client's nonce is sent before the server
    /// proved that it holds the token.
    async fn connect_once(shared: &Shared, trusting: &Trusting) -> Result<Session, NetError> {
        let fail = |reason: String| NetError::Connect {
            address: shared.to.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(shared.timeout, TcpStream::connect(&shared.to))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let server_name = rustls::pki_types::ServerName::try_from("cryptstream")
            .expect("a valid DNS name")
            .to_owned();
        let mut tls =
            tokio::time::timeout(shared.timeout, trusting.connector.connect(server_name, tcp))
                .await
                .map_err(|_| fail("TLS handshake timed out".into()))?
                .map_err(|e| handshake_failure(shared, trusting, &e))?;
        prove_token(&mut tls, &shared.token, shared.timeout, &shared.to).await?;
        tls.get_mut().1.set_buffer_limit(Some(SEND_BUFFER));
        Ok(Session {
            tls,
            timeout: shared.timeout,
        })
    }

    /// Reads the server's answer to a request about `file_id`.
    async fn answer(&mut self) -> Result<Frame<'static>, JobError> {
        let raw = read_frame(&mut self.tls, self.timeout).await?;
        let frame = raw
            .parse()
            .map_err(|e| JobError::Session(format!("bad frame from the server: {e}")))?;
        Ok(match frame {
            Frame::Held { file_id, ranges } => Frame::Held { file_id, ranges },
            Frame::Synced { file_id, held } => Frame::Synced { file_id, held },
            Frame::Committed { file_id } => Frame::Committed { file_id },
            Frame::Checked { check_id, held } => Frame::Checked { check_id, held },
            Frame::Made { entry_id } => Frame::Made { entry_id },
            Frame::Error {
                code,
                file_id,
                message,
            } => Frame::Error {
                code,
                file_id,
                message,
            },
            other => {
                return Err(JobError::Session(format!(
                    "unexpected {:?} frame from the server",
                    other.kind()
                )))
            }
        })
    }

    async fn run_job(&mut self, shared: &Shared, job: Job) -> Result<(), JobError> {
        let state = &shared.files[job.file];
        let file = &state.planned;
        let file_id = shared.next_file_id.fetch_add(1, Ordering::Relaxed) as u32;
        write_frame(
            &mut self.tls,
            &Frame::Open {
                file_id,
                meta: file.meta.clone(),
                name: file.name.as_bytes(),
            },
        )
        .await?;
        let held = match self.answer().await? {
            Frame::Held {
                file_id: id,
                ranges,
            } if id == file_id => RangeSet::from_ranges(&ranges),
            Frame::Error { code, message, .. } if code != ErrorCode::Protocol => {
                return Err(JobError::File(format!("refused by the server: {message}")))
            }
            Frame::Error { message, .. } => return Err(JobError::Session(message)),
            _ => return Err(JobError::Session("unexpected answer to Open".into())),
        };
        let missing = held.missing(job.start, job.end);
        let to_send: u64 = missing.iter().map(|(s, e)| e - s).sum();
        let already = (job.end - job.start) - to_send;
        if already > 0 {
            shared.resumed.fetch_add(already, Ordering::Relaxed);
            shared.progress.advance(already);
        }
        let input =
            Arc::new(File::open(&file.path).map_err(|e| {
                JobError::File(format!("cannot read {}: {e}", file.path.display()))
            })?);
        for (start, end) in missing {
            self.send_span(shared, &input, &state.hash, file_id, start, end)
                .await?;
        }
        let last = state.jobs_left.load(Ordering::Acquire) == 1;
        if !last {
            write_frame(&mut self.tls, &Frame::Sync { file_id }).await?;
            match self.answer().await? {
                Frame::Synced { file_id: id, .. } if id == file_id => {}
                Frame::Error { message, .. } => return Err(JobError::Session(message)),
                _ => return Err(JobError::Session("unexpected answer to Sync".into())),
            }
        }
        // Whoever brings the count to zero commits.
        if state.jobs_left.fetch_sub(1, Ordering::AcqRel) != 1 {
            write_frame(&mut self.tls, &Frame::Close { file_id }).await?;
            return Ok(());
        }
        let name = file.name.display();
        let verdict = self.commit(state, file_id).await;
        let (failure, broken) = match verdict {
            Ok(()) => (None, false),
            Err(JobError::File(reason)) => (Some(reason), false),
            Err(JobError::Session(reason)) => (
                Some(format!("connection lost while committing: {reason}")),
                true,
            ),
            Err(JobError::Broken) => (Some("connection lost while committing".into()), true),
        };
        if let Some(reason) = &failure {
            state.fail(reason);
        }
        report_done(&*shared.progress, &name, failure.as_deref());
        if broken {
            Err(JobError::Broken)
        } else {
            Ok(())
        }
    }

    /// Waits for the file's hash, sends `Commit` and reads the verdict.
    async fn commit(&mut self, state: &FileState, file_id: u32) -> Result<(), JobError> {
        let hash = state.hash.clone();
        let path = state.planned.path.clone();
        let hash = tokio::task::spawn_blocking(move || {
            let file = File::open(&path)?;
            hash.finish(|buf, offset| file.read_exact_at(buf, offset))
        })
        .await
        .map_err(|e| JobError::File(format!("hashing failed: {e}")))?
        .map_err(|e| {
            JobError::File(format!("cannot read {}: {e}", state.planned.path.display()))
        })?;
        let hash = *hash.as_bytes();
        write_frame(&mut self.tls, &Frame::Commit { file_id, hash }).await?;
        match self.answer().await? {
            Frame::Committed { file_id: id } if id == file_id => Ok(()),
            Frame::Error { code, message, .. } if code != ErrorCode::Protocol => {
                Err(JobError::File(message))
            }
            _ => Err(JobError::Session("unexpected answer to Commit".into())),
        }
    }

    /// Sends `[start, end)` of `input` in data frames, reading one block
    /// ahead on a blocking thread.
    async fn send_span(
        &mut self,
        shared: &Shared,
        input: &Arc<File>,
        hash: &Arc<SegmentedHash>,
        file_id: u32,
        start: u64,
        end: u64,
    ) -> Result<(), JobError> {
        // Two blocks circulate: one being sent while the next is read;
        // a sent block's buffer is read into again (no fresh, zeroed
        // allocation per block).
        let read = |offset: u64, buf: Option<Vec<u8>>| {
            let input = input.clone();
            let hash = hash.clone();
            let len = (end - offset).min(READ_BLOCK as u64) as usize;
            tokio::task::spawn_blocking(move || {
                let mut buf = buf.unwrap_or_default();
                buf.resize(len, 0);
                input.read_exact_at(&mut buf, offset)?;
                hash.feed(offset, &buf);
                Ok::<_, io::Error>(buf)
            })
        };
        let mut offset = start;
        let mut next = (offset < end).then(|| read(offset, None));
        let mut spare = None;
        while let Some(pending) = next.take() {
            let block = pending
                .await
                .map_err(|e| JobError::File(format!("reader failed: {e}")))?
                .map_err(|e| JobError::File(format!("cannot read: {e}")))?;
            let block_end = offset + block.len() as u64;
            if block_end < end {
                next = Some(read(block_end, spare.take()));
            }
            // The whole block goes to rustls in one vectored write: its
            // frames fill whole TLS records and leave in one `writev`.
            let prefixes: Vec<_> = block
                .chunks(MAX_DATA_PAYLOAD as usize)
                .scan(offset, |at, piece| {
                    let prefix = data_prefix(file_id, *at, piece.len());
                    *at += piece.len() as u64;
                    Some(prefix)
                })
                .collect();
            let mut slices: Vec<io::IoSlice<'_>> = prefixes
                .iter()
                .zip(block.chunks(MAX_DATA_PAYLOAD as usize))
                .flat_map(|(prefix, piece)| [io::IoSlice::new(prefix), io::IoSlice::new(piece)])
                .collect();
            write_all_vectored(&mut self.tls, &mut slices).await?;
            offset = block_end;
            shared.sent.fetch_add(block.len() as u64, Ordering::Relaxed);
            shared.progress.advance(block.len() as u64);
            #[cfg(any(test, feature = "test-knobs"))]
            crate::hooks::after_sent(&mut self.tls, shared.sent.load(Ordering::Relaxed)).await;
            spare = Some(block);
        }
        Ok(())
    }
}

/// Writes all of `slices`, as few vectored writes as the TLS session's
/// send buffer ([`SEND_BUFFER`]) allows.
pub(crate) async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    tls: &mut W,
    mut slices: &mut [io::IoSlice<'_>],
) -> Result<(), WireError> {
    while !slices.is_empty() {
        let n = tls.write_vectored(slices).await?;
        if n == 0 {
            return Err(WireError::Io(io::ErrorKind::WriteZero.into()));
        }
        io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// The error for a failed TLS handshake: a certificate other than the one
/// trusted, said plainly (which file and line, how to accept it), or
/// rustls' reason in plain words.
fn handshake_failure(shared: &Shared, trusting: &Trusting, e: &io::Error) -> NetError {
    if let Some(seen) = trusting.verifier.refused() {
        return shared.trust.mismatch(&shared.to, seen);
    }
    let from_rustls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if !from_rustls
        && matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
        )
    {
        return NetError::Busy {
            address: shared.to.clone(),
        };
    }
    let reason = crate::tls::handshake_reason(e);
    NetError::Connect {
        address: shared.to.clone(),
        reason,
    }
}

/// The token exchange of protocol version 2 and later (see `auth`) on a
/// fresh TLS connection to `address`: the hello and the client's nonce,
/// the server's proof checked (bound to this TLS session), then the
/// client's proof. Nothing else is sent before the server proved that it
/// holds the token.
///
/// # Errors
/// [`NetError::ServerUnproven`] for a server that does not know the token,
/// [`NetError::Refused`] for a refusal, [`NetError::Connect`] otherwise.
pub(crate) async fn prove_token<IO: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut tokio_rustls::client::TlsStream<IO>,
    token: &Token,
    timeout: Duration,
    address: &str,
) -> Result<(), NetError> {
    let fail = |reason: String| NetError::Connect {
        address: address.to_owned(),
        reason,
    };
    let wire = |e: WireError| fail(e.to_string());
    let client_nonce = auth::nonce();
    let hello = Frame::Hello {
        version: VERSION,
        nonce: client_nonce,
    };
    write_frame(tls, &hello).await.map_err(wire)?;
    let challenge = read_frame(tls, timeout).await.map_err(wire)?;
    let (server_nonce, server_proof) = match challenge.parse() {
        Ok(Frame::Challenge {
            version: VERSION,
            nonce,
            proof,
        }) => (nonce, proof),
        Ok(Frame::Error { code, message, .. }) => return Err(NetError::Refused { code, message }),
        _ => {
            return Err(fail(format!(
                "no challenge of protocol version {VERSION} came back (another version, or not cryptstream serve)"
            )))
        }
    };
    let mut transcript = Transcript {
        client_nonce,
        server_nonce,
        exporter: [0u8; EXPORTER_LEN],
    };
    tls.get_ref()
        .1
        .export_keying_material(&mut transcript.exporter, EXPORTER_LABEL, None)
        .map_err(|e| fail(format!("TLS exporter: {e}")))?;
    if !token.verify_server(&transcript, &server_proof) {
        return Err(NetError::ServerUnproven {
            address: address.to_owned(),
        });
    }
    let proof = token.client_proof(&transcript);
    write_frame(tls, &Frame::Auth { proof })
        .await
        .map_err(wire)?;
    let answer = read_frame(tls, timeout).await.map_err(|e| match e {
        WireError::Closed | WireError::Truncated => NetError::Refused {
            code: ErrorCode::Unauthenticated,
            message: "the server closed the connection".into(),
        },
        other => wire(other),
    })?;
    match answer.parse() {
        Ok(Frame::AuthOk) => Ok(()),
        Ok(Frame::Error { code, message, .. }) => Err(NetError::Refused { code, message }),
        _ => Err(fail("unexpected answer to the token proof".into())),
    }
}
