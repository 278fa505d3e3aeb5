//! `serve`: a TLS 1.3 server on tokio's multi-threaded runtime.
//!
//! Connections that have not authenticated are kept apart: the accept loop
//! admits one only into a small pool of its own (`max_unauthenticated`,
//! and `max_unauthenticated_per_address` from one IP address; beyond
//! either it is closed at once), and it has `auth_timeout` for the TLS
//! handshake and the whole exchange of proofs. Only a client that proved
//! the token leaves that pool and waits for one of the `max_connections`
//! session slots (its `AuthOk` comes when it has one), so idle or slow
//! strangers never hold a session slot. Each session is a task: TLS handshake,
//! hello, the server's challenge and proof, the client's proof (see
//! `auth`), then frames until `Bye`. Every
//! read has a deadline (`idle_timeout`). File I/O runs on tokio's blocking
//! threads: contiguous `Data` frames of one file are collected into a
//! batch of up to `BATCH_BYTES` (1 MiB) and moved to a blocking task that
//! writes them with one `pwritev`, while the session reads on, so the
//! network and the disk overlap and a thread is woken once per MiB, not
//! per frame; a batch is written sooner when another frame comes or the
//! sender pauses for `BATCH_WAIT` (5 ms). The session waits for the writes
//! before it answers `Sync`/`Commit` or writes the next batch.
//!
//! Stopping: when `stop` is raised (the binary raises it on SIGINT or
//! SIGTERM) the listener is closed at once, sessions in flight go on for
//! up to `grace`, then the rest get a `ShuttingDown` error and are closed;
//! every partial file's received ranges are saved, so the next `send`
//! resumes them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cryptstream_pool::Cancel;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::auth::{self, Token, Transcript, EXPORTER_LABEL, EXPORTER_LEN};
use crate::frame::{hello_version, ErrorCode, Frame, FrameType, MAX_HELD_RANGES, NO_FILE, VERSION};
use crate::name::RelName;
use crate::receive::{Destination, Incoming, ReceiveError};
use crate::tls::Identity;
use crate::wire::{read_frame, write_frame, FrameReader, PayloadPool, RawFrame, WireError};
use crate::NetError;

/// Most files one session may hold open at once.
pub const MAX_OPEN_PER_SESSION: usize = 64;
/// Default of [`ServeConfig::max_open_files`]: with the default 256
/// sessions it stays below the usual limit of 1024 descriptors.
pub const DEFAULT_MAX_OPEN_FILES: usize = 512;
/// How long an error frame may take to leave before the session is dropped.
const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes of `Data` payloads being written in the background, all sessions
/// together, while their sessions read on (see `wire::FrameReader::next`):
/// beyond it, each session writes its frame before reading the next, so
/// memory stays at one frame per session plus this.
pub const MAX_BUFFERED_BYTES: u32 = 16 * 1024 * 1024;
/// Most written `Data` payload buffers kept to be read into again, all
/// sessions together: as many as the budget lets be in flight, so the
/// pool at most doubles what [`MAX_BUFFERED_BYTES`] bounds.
const POOLED_PAYLOADS: usize = (MAX_BUFFERED_BYTES / crate::frame::MAX_DATA_PAYLOAD) as usize;
/// How often the stop flag is looked at.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Where a server's events go (the binary prints them).
pub type EventLog = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything a server needs, built once by the caller.
pub struct ServeConfig {
    /// Address to listen on (`HOST:PORT`; port 0 picks one).
    pub listen: String,
    /// Where received files go.
    pub destination: Arc<dyn Destination>,
    /// The access token.
    pub token: Token,
    /// The TLS identity.
    pub identity: Identity,
    /// Most authenticated sessions at once; more wait for a slot.
    pub max_connections: usize,
    /// Most connections at once that have not authenticated yet.
    pub max_unauthenticated: usize,
    /// Most of those from one IP address.
    pub max_unauthenticated_per_address: usize,
    /// Deadline of the TLS handshake and the exchange of proofs.
    pub auth_timeout: Duration,
    /// Most files open at once, all sessions together; an `Open` beyond
    /// it is refused with [`ErrorCode::Busy`] (the session goes on).
    pub max_open_files: usize,
    /// Deadline of every read.
    pub idle_timeout: Duration,
    /// How long sessions in flight may go on after `stop`.
    pub grace: Duration,
    /// Raised to stop the server.
    pub stop: Cancel,
    /// Events (one line each, no secret).
    pub log: EventLog,
    /// Worker threads of the runtime (`None`: one per core).
    pub threads: Option<usize>,
    /// A store server (`serve --store`): sessions get object frames only
    /// (`objects`), and `destination` is never used.
    pub objects: Option<Arc<dyn crate::objects::ObjectHost>>,
}

/// What a server did, returned when it stops.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ServeStats {
    /// Sessions accepted.
    pub sessions: u64,
    /// Sessions that ended with an error (authentication included).
    pub failed_sessions: u64,
    /// Files committed.
    pub files: u64,
    /// File bytes received.
    pub bytes: u64,
}

/// Counters shared by the sessions.
#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    failed: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
}

/// What every session shares.
struct Shared {
    acceptor: TlsAcceptor,
    token: Token,
    destination: Arc<dyn Destination>,
    idle: Duration,
    auth_timeout: Duration,
    log: EventLog,
    counters: Counters,
    /// Room for data frames in flight, in KiB.
    buffers: Arc<Semaphore>,
    /// Payload buffers written and free to be read into again.
    payloads: Arc<PayloadPool>,
    /// Files open, all sessions together (one permit each).
    open_files: Arc<Semaphore>,
    /// The size of `open_files`, for messages.
    max_open_files: usize,
    /// The store a store server hosts.
    objects: Option<Arc<dyn crate::objects::ObjectHost>>,
}

/// A bound server, ready to run.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    limits: Limits,
    shared: Arc<Shared>,
}

/// What the accept loop needs of the configuration.
struct Limits {
    max_connections: usize,
    strangers: Arc<Strangers>,
    grace: Duration,
    stop: Cancel,
}

impl Server {
    /// Builds the runtime and binds the listener.
    ///
    /// # Errors
    /// [`NetError`] when the runtime, TLS or the address fail.
    pub fn bind(config: ServeConfig) -> Result<Server, NetError> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("cryptstream-serve");
        if let Some(threads) = config.threads {
            builder.worker_threads(threads.max(1));
        }
        let runtime = builder.build().map_err(NetError::Runtime)?;
        let tls = config.identity.server_config()?;
        let listener = runtime
            .block_on(TcpListener::bind(&config.listen))
            .map_err(|source| NetError::Bind {
                address: config.listen.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            token: config.token,
            destination: config.destination,
            idle: config.idle_timeout,
            auth_timeout: config.auth_timeout,
            log: config.log,
            counters: Counters::default(),
            buffers: Arc::new(Semaphore::new((MAX_BUFFERED_BYTES / 1024) as usize)),
            payloads: Arc::new(PayloadPool::new(POOLED_PAYLOADS)),
            open_files: Arc::new(Semaphore::new(config.max_open_files.max(1))),
            max_open_files: config.max_open_files.max(1),
            objects: config.objects,
        });
        Ok(Server {
            runtime,
            listener,
            limits: Limits {
                max_connections: config.max_connections,
                strangers: Strangers::new(
                    config.max_unauthenticated,
                    config.max_unauthenticated_per_address,
                ),
                grace: config.grace,
                stop: config.stop,
            },
            shared,
        })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// When the socket cannot tell (never on Linux).
    pub fn local_addr(&self) -> Result<SocketAddr, NetError> {
        self.listener.local_addr().map_err(NetError::Runtime)
    }

    /// Serves until `stop` is raised; returns what it did.
    pub fn run(self) -> ServeStats {
        let Server {
            runtime,
            listener,
            limits,
            shared,
        } = self;
        runtime.block_on(accept_loop(listener, &limits, shared.clone()));
        let destination = shared.destination.clone();
        // Abandoned sessions are gone; save what every partial holds.
        runtime.block_on(async move {
            let _ = tokio::task::spawn_blocking(move || destination.checkpoint_all()).await;
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        let c = &shared.counters;
        ServeStats {
            sessions: c.sessions.load(Ordering::Relaxed),
            failed_sessions: c.failed.load(Ordering::Relaxed),
            files: c.files.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The pool of connections that have not authenticated yet.
struct Strangers {
    pool: Arc<Semaphore>,
    per_address: std::sync::Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
}

/// A stranger's place in the pool, given back on drop.
struct StrangerSlot {
    strangers: Arc<Strangers>,
    address: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Strangers {
    fn new(max: usize, max_per_address: usize) -> Arc<Strangers> {
        Arc::new(Strangers {
            pool: Arc::new(Semaphore::new(max.max(1))),
            per_address: std::sync::Mutex::new(HashMap::new()),
            max_per_address: max_per_address.max(1),
        })
    }

    /// A place for a connection from `address`, if the pool and that
    /// address have room.
    fn admit(self: &Arc<Strangers>, address: IpAddr) -> Result<StrangerSlot, &'static str> {
        let mut counts = self.per_address.lock().expect("the lock is never poisoned");
        let count = counts.entry(address).or_insert(0);
        if *count >= self.max_per_address {
            return Err("too many unauthenticated connections from this address");
        }
        let permit = self
            .pool
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many unauthenticated connections")?;
        *count += 1;
        Ok(StrangerSlot {
            strangers: self.clone(),
            address,
            _permit: permit,
        })
    }
}

impl Drop for StrangerSlot {
    fn drop(&mut self) {
        let mut counts = self
            .strangers
            .per_address
            .lock()
            .expect("the lock is never poisoned");
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, config: &Limits, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let (hard_stop_tx, hard_stop) = watch::channel(false);
    let mut sessions: Vec<JoinHandle<()>> = Vec::new();
    let stop = config.stop.clone();
    let stopped = async move {
        while !stop.is_cancelled() {
            tokio::time::sleep(STOP_POLL).await;
        }
    };
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    (shared.log)(&format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let stranger = match config.strangers.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                (shared.log)(&format!("{peer}: closed at once: {why}"));
                drop(stream);
                continue;
            }
        };
        sessions.retain(|task| !task.is_finished());
        let shared = shared.clone();
        let hard_stop = hard_stop.clone();
        let permits = permits.clone();
        sessions.push(tokio::spawn(async move {
            run_session(stream, peer, shared, hard_stop, stranger, permits).await;
        }));
    }
    drop(listener);
    sessions.retain(|task| !task.is_finished());
    if !sessions.is_empty() {
        (shared.log)(&format!(
            "stopping: waiting up to {:?} for {} session(s)",
            config.grace,
            sessions.len()
        ));
    }
    let all = futures_join(&mut sessions);
    if tokio::time::timeout(config.grace, all).await.is_err() {
        let _ = hard_stop_tx.send(true);
        let rest = futures_join(&mut sessions);
        if tokio::time::timeout(ERROR_SEND_TIMEOUT, rest)
            .await
            .is_err()
        {
            for task in &sessions {
                task.abort();
            }
        }
    }
}

/// Waits for every task in `tasks`.
async fn futures_join(tasks: &mut [JoinHandle<()>]) {
    for task in tasks.iter_mut() {
        if !task.is_finished() {
            let _ = task.await;
        }
    }
}

/// Why a session ended badly: the code and text sent to the client.
pub(crate) struct SessionError {
    pub(crate) code: ErrorCode,
    pub(crate) file_id: u32,
    pub(crate) message: String,
}

impl SessionError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> SessionError {
        SessionError {
            code,
            file_id: NO_FILE,
            message: message.into(),
        }
    }
}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> SessionError {
        let code = match &e {
            WireError::Timeout(_) => ErrorCode::Timeout,
            WireError::Frame(crate::frame::FrameError::TooLarge { .. }) => ErrorCode::TooLarge,
            _ => ErrorCode::Protocol,
        };
        let message = match &e {
            WireError::Io(io) => crate::tls::plain_io_reason(io),
            other => other.to_string(),
        };
        SessionError::new(code, message)
    }
}

impl From<ReceiveError> for SessionError {
    fn from(e: ReceiveError) -> SessionError {
        SessionError::new(e.code, e.to_string())
    }
}

/// The TLS stream of a session. The TCP stream is read through a buffer
/// of [`READ_BUFFER`] bytes: rustls asks for a few KiB at a time, and one
/// `recv` per ask cost more CPU than the decryption.
pub(crate) type Tls = tokio_rustls::server::TlsStream<BufReader<TcpStream>>;

/// Bytes read from a session's TCP stream at a time.
pub(crate) const READ_BUFFER: usize = 256 * 1024;

async fn run_session(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    hard_stop: watch::Receiver<bool>,
    stranger: StrangerSlot,
    permits: Arc<Semaphore>,
) {
    shared.counters.sessions.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + shared.auth_timeout;
    let mut tls = match tokio::time::timeout_at(
        deadline,
        shared
            .acceptor
            .accept(BufReader::with_capacity(READ_BUFFER, stream)),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            (shared.log)(&format!(
                "{peer}: TLS handshake failed: {}",
                crate::tls::plain_io_reason(&e)
            ));
            return;
        }
        Err(_) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            (shared.log)(&format!("{peer}: TLS handshake timed out"));
            return;
        }
    };
    let mut session = Session {
        shared: shared.clone(),
        files: HashMap::new(),
        batch: None,
        pending: None,
        received: 0,
        committed: 0,
        entries: 0,
        requests: 0,
        sent: 0,
    };
    let outcome = session
        .serve(&mut tls, hard_stop, deadline, stranger, permits)
        .await;
    session.release_all().await;
    match outcome {
        Ok(()) if shared.objects.is_some() => {
            (shared.log)(&format!(
                "{peer}: {} object(s) created, {} bytes received, {} request(s), {} bytes sent",
                session.committed, session.received, session.requests, session.sent
            ));
        }
        Ok(()) => {
            (shared.log)(&format!(
                "{peer}: {} file(s), {} bytes received, {} directories and links made",
                session.committed, session.received, session.entries
            ));
        }
        Err(e) => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            (shared.log)(&format!("{peer}: {}: {}", e.code, e.message));
            let frame = Frame::Error {
                code: e.code,
                file_id: e.file_id,
                message: e.message,
            };
            let _ = tokio::time::timeout(ERROR_SEND_TIMEOUT, async {
                let _ = write_frame(&mut tls, &frame).await;
                let _ = tls.shutdown().await;
            })
            .await;
        }
    }
}

/// A write in flight on a blocking thread.
type PendingWrite = JoinHandle<Result<(), ReceiveError>>;

/// Bytes of contiguous `Data` frames a session collects before it hands
/// them to a blocking thread as one `pwritev`: one hand-off (a thread
/// woken, a task woken back) per MiB rather than per frame.
const BATCH_BYTES: u64 = 1024 * 1024;

/// How long a session waits for the next frame before it writes the
/// frames it collected: a sender that pauses or stalls does not keep its
/// bytes (and their room in the budget) unwritten.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// Contiguous `Data` frames of one file, in order, not yet written. Each
/// payload holds its room in the shared budget until it is written.
struct Batch {
    file: Arc<dyn Incoming>,
    file_id: u32,
    /// Where the first payload goes.
    offset: u64,
    /// Where the next contiguous payload would go.
    end: u64,
    /// Whole `Data` payloads (prefix included).
    payloads: Vec<Vec<u8>>,
    permits: Vec<OwnedSemaphorePermit>,
}

/// A file a session has open, and its share of the server's open-file cap.
struct OpenFile {
    incoming: Arc<dyn Incoming>,
    _slot: OwnedSemaphorePermit,
}

/// One authenticated session.
struct Session {
    shared: Arc<Shared>,
    files: HashMap<u32, OpenFile>,
    /// Data frames collected for the next write.
    batch: Option<Batch>,
    pending: Option<PendingWrite>,
    received: u64,
    committed: u64,
    /// Directories and links made.
    entries: u64,
    /// Object requests answered (each a round trip for the client).
    requests: u64,
    /// Object bytes sent.
    sent: u64,
}

impl Session {
    /// Authenticates the client (by `deadline`, in the strangers' pool),
    /// waits for a session slot, answers `AuthOk`, then serves frames.
    async fn serve(
        &mut self,
        tls: &mut Tls,
        mut hard_stop: watch::Receiver<bool>,
        deadline: tokio::time::Instant,
        stranger: StrangerSlot,
        permits: Arc<Semaphore>,
    ) -> Result<(), SessionError> {
        tokio::time::timeout_at(deadline, self.authenticate(tls))
            .await
            .map_err(|_| {
                SessionError::new(
                    ErrorCode::Timeout,
                    format!("not authenticated within {:?}", self.shared.auth_timeout),
                )
            })??;
        drop(stranger);
        let _slot = tokio::select! {
            permit = permits.acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = hard_stop.changed() => {
                return Err(SessionError::new(ErrorCode::ShuttingDown, "the server is stopping; send again"));
            }
        };
        write_frame(tls, &Frame::AuthOk).await?;
        if let Some(host) = self.shared.objects.clone() {
            let mut counts = crate::objects::ObjectCounts::default();
            let outcome = crate::objects::serve(
                tls,
                host,
                self.shared.idle,
                &mut hard_stop,
                &mut counts,
                &self.shared.buffers,
                &self.shared.payloads,
            )
            .await;
            self.committed = counts.created;
            self.received = counts.received;
            self.requests = counts.requests;
            self.sent = counts.sent;
            let c = &self.shared.counters;
            c.files.fetch_add(counts.created, Ordering::Relaxed);
            c.bytes.fetch_add(counts.received, Ordering::Relaxed);
            return outcome;
        }
        let mut frames = FrameReader::default();
        let (budget, pool) = (self.shared.buffers.clone(), self.shared.payloads.clone());
        let idle = self.shared.idle;
        let mut frame_deadline = None;
        loop {
            let deadline =
                *frame_deadline.get_or_insert_with(|| tokio::time::Instant::now() + idle);
            let frame = tokio::select! {
                frame = tokio::time::timeout_at(deadline, frames.next(tls, &budget, &pool)) => {
                    frame.unwrap_or(Err(WireError::Timeout(idle)))
                }
                // The sender paused: what it sent is written now, not
                // held (with its room in the budget) until it goes on.
                () = tokio::time::sleep(BATCH_WAIT), if self.batch.is_some() => {
                    self.hand_off().await?;
                    continue;
                }
                _ = hard_stop.changed() => {
                    return Err(SessionError::new(ErrorCode::ShuttingDown, "the server is stopping; send again to resume"));
                }
            };
            frame_deadline = None;
            let (frame, permit) = match frame {
                Ok(pair) => pair,
                Err(WireError::Closed) if self.files.is_empty() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if self.handle(tls, frame, permit).await? {
                return Ok(());
            }
        }
    }

    /// The version-2 exchange (see `auth`): the client's hello and nonce,
    /// the server's nonce and proof, the client's proof.
    async fn authenticate(&mut self, tls: &mut Tls) -> Result<(), SessionError> {
        let idle = self.shared.idle;
        let hello = read_frame(tls, idle).await?;
        let client_nonce = match hello.parse() {
            Ok(Frame::Hello {
                version: VERSION,
                nonce,
            }) => nonce,
            _ => {
                return Err(match hello_version(&hello.payload) {
                    Some(version) if hello.kind == FrameType::Hello && version != VERSION => {
                        SessionError::new(
                            ErrorCode::Version,
                            format!("client speaks version {version}, this server {VERSION}"),
                        )
                    }
                    _ => SessionError::new(ErrorCode::Protocol, "expected a hello"),
                })
            }
        };
        let mut transcript = Transcript {
            client_nonce,
            server_nonce: auth::nonce(),
            exporter: [0u8; EXPORTER_LEN],
        };
        tls.get_ref()
            .1
            .export_keying_material(&mut transcript.exporter, EXPORTER_LABEL, None)
            .map_err(|e| SessionError::new(ErrorCode::Protocol, format!("TLS exporter: {e}")))?;
        write_frame(
            tls,
            &Frame::Challenge {
                version: VERSION,
                nonce: transcript.server_nonce,
                proof: self.shared.token.server_proof(&transcript),
            },
        )
        .await?;
        let proof = read_frame(tls, idle).await?;
        let Ok(Frame::Auth { proof }) = proof.parse() else {
            return Err(SessionError::new(
                ErrorCode::Unauthenticated,
                "expected the token proof",
            ));
        };
        if !self.shared.token.verify_client(&transcript, &proof) {
            return Err(SessionError::new(ErrorCode::Unauthenticated, "wrong token"));
        }
        Ok(())
    }

    /// Hands the collected batch, if any, to the writer and waits for
    /// every write.
    async fn settle(&mut self) -> Result<(), SessionError> {
        self.hand_off().await?;
        self.wait_for_writer().await
    }

    /// Waits for the write in flight, if any.
    async fn wait_for_writer(&mut self) -> Result<(), SessionError> {
        if let Some(write) = self.pending.take() {
            write.await.map_err(|e| {
                SessionError::new(ErrorCode::Storage, format!("writer failed: {e}"))
            })??;
        }
        Ok(())
    }

    /// Starts writing the collected batch, if any, on a blocking thread
    /// (once the write before it is done), and returns while it runs.
    async fn hand_off(&mut self) -> Result<(), SessionError> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        self.wait_for_writer().await?;
        let pool = self.shared.payloads.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let parts: Vec<&[u8]> = batch
                .payloads
                .iter()
                .map(|payload| &payload[crate::frame::DATA_PREFIX_LEN..])
                .collect();
            let written = batch.file.write_parts_at(batch.offset, &parts);
            for payload in batch.payloads {
                pool.give(payload);
            }
            // The room in the budget goes with `batch.permits`.
            written
        }));
        Ok(())
    }

    fn file(&self, file_id: u32) -> Result<Arc<dyn Incoming>, SessionError> {
        self.files
            .get(&file_id)
            .map(|f| f.incoming.clone())
            .ok_or(SessionError {
                code: ErrorCode::UnknownFile,
                file_id,
                message: format!("file id {file_id} is not open"),
            })
    }

    /// Handles one frame; `true` when the session is over.
    async fn handle(
        &mut self,
        tls: &mut Tls,
        raw: RawFrame,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<bool, SessionError> {
        if raw.kind == FrameType::Data {
            let Frame::Data {
                file_id,
                offset,
                bytes,
            } = raw.parse().map_err(WireError::from)?
            else {
                unreachable!("a Data payload parses as Data");
            };
            let len = bytes.len();
            let file = self.file(file_id)?;
            if offset.saturating_add(len as u64) > file.size() {
                return Err(SessionError {
                    code: ErrorCode::OutOfRange,
                    file_id,
                    message: format!(
                        "bytes {offset}..+{len} past the announced size of {}",
                        file.size()
                    ),
                });
            }
            self.received += len as u64;
            self.shared
                .counters
                .bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            if self
                .batch
                .as_ref()
                .is_some_and(|batch| batch.file_id != file_id || batch.end != offset)
            {
                self.hand_off().await?;
            }
            let batch = self.batch.get_or_insert_with(|| Batch {
                file,
                file_id,
                offset,
                end: offset,
                payloads: Vec::new(),
                permits: Vec::new(),
            });
            batch.end += len as u64;
            batch.payloads.push(raw.payload);
            match permit {
                Some(permit) => {
                    batch.permits.push(permit);
                    if batch.end - batch.offset >= BATCH_BYTES {
                        self.hand_off().await?;
                    }
                }
                // No room in the shared budget: this frame is written
                // before the next one is read.
                None => self.settle().await?,
            }
            return Ok(false);
        }
        // Every other frame is handled after the frames before it were
        // handed to the writer.
        self.hand_off().await?;
        let frame = raw.parse().map_err(WireError::from)?;
        match frame {
            Frame::Open {
                file_id,
                meta,
                name,
            } => {
                self.settle().await?;
                if self.files.contains_key(&file_id) {
                    return Err(SessionError::new(
                        ErrorCode::Protocol,
                        format!("file id {file_id} opened twice"),
                    ));
                }
                if self.files.len() >= MAX_OPEN_PER_SESSION {
                    return Err(SessionError::new(
                        ErrorCode::Protocol,
                        format!("more than {MAX_OPEN_PER_SESSION} files open"),
                    ));
                }
                let Some(name) = self.entry_name(tls, file_id, name).await? else {
                    return Ok(false);
                };
                let Ok(slot) = self.shared.open_files.clone().try_acquire_owned() else {
                    let message = format!(
                        "the server has {} files open, its limit (serve --max-open-files); send again later",
                        self.shared.max_open_files
                    );
                    (self.shared.log)(&format!("{}: {message}", name.display()));
                    write_frame(
                        tls,
                        &Frame::Error {
                            code: ErrorCode::Busy,
                            file_id,
                            message,
                        },
                    )
                    .await?;
                    return Ok(false);
                };
                let destination = self.shared.destination.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    let file = destination.open(&name, &meta)?;
                    let held = file.held();
                    Ok::<_, ReceiveError>((file, held))
                })
                .await
                .map_err(|e| {
                    SessionError::new(ErrorCode::Storage, format!("opener failed: {e}"))
                })?;
                match opened {
                    Ok((file, held)) => {
                        self.files.insert(
                            file_id,
                            OpenFile {
                                incoming: file,
                                _slot: slot,
                            },
                        );
                        let mut ranges = held.to_ranges();
                        ranges.truncate(MAX_HELD_RANGES);
                        write_frame(tls, &Frame::Held { file_id, ranges }).await?;
                    }
                    Err(e) => {
                        (self.shared.log)(&e.to_string());
                        write_frame(
                            tls,
                            &Frame::Error {
                                code: e.code,
                                file_id,
                                message: e.to_string(),
                            },
                        )
                        .await?;
                    }
                }
            }
            Frame::Sync { file_id } => {
                let file = self.file(file_id)?;
                self.settle().await?;
                let held = file.held_bytes();
                write_frame(tls, &Frame::Synced { file_id, held }).await?;
            }
            Frame::Commit { file_id, hash } => {
                self.file(file_id)?;
                self.settle().await?;
                let open = self.files.remove(&file_id).expect("looked up above");
                let result = tokio::task::spawn_blocking(move || {
                    let result = open.incoming.commit(&hash);
                    open.incoming.release();
                    result
                })
                .await
                .map_err(|e| {
                    SessionError::new(ErrorCode::Storage, format!("commit failed: {e}"))
                })?;
                match result {
                    Ok(()) => {
                        self.committed += 1;
                        self.shared.counters.files.fetch_add(1, Ordering::Relaxed);
                        write_frame(tls, &Frame::Committed { file_id }).await?;
                    }
                    Err(e) => {
                        (self.shared.log)(&e.to_string());
                        write_frame(
                            tls,
                            &Frame::Error {
                                code: e.code,
                                file_id,
                                message: e.to_string(),
                            },
                        )
                        .await?;
                    }
                }
            }
            Frame::Close { file_id } => {
                self.file(file_id)?;
                self.settle().await?;
                let open = self.files.remove(&file_id);
                // The slot goes back once the file is released.
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(open) = open {
                        open.incoming.release();
                    }
                })
                .await;
            }
            Frame::Check {
                check_id,
                compare,
                meta,
                name,
            } => {
                let Some(name) = self.entry_name(tls, check_id, name).await? else {
                    return Ok(false);
                };
                let held = self
                    .entry(tls, check_id, move |d| d.check(&name, &meta, compare))
                    .await?;
                if let Some(held) = held {
                    write_frame(tls, &Frame::Checked { check_id, held }).await?;
                }
            }
            Frame::Mkdir {
                entry_id,
                mode,
                mtime,
                name,
            } => {
                let Some(name) = self.entry_name(tls, entry_id, name).await? else {
                    return Ok(false);
                };
                self.made(tls, entry_id, move |d| d.make_dir(&name, mode, mtime))
                    .await?;
            }
            Frame::Symlink {
                entry_id,
                mtime,
                name,
                target,
            } => {
                let Some(name) = self.entry_name(tls, entry_id, name).await? else {
                    return Ok(false);
                };
                let target = target.to_vec();
                self.made(tls, entry_id, move |d| {
                    d.make_symlink(&name, &target, mtime)
                })
                .await?;
            }
            Frame::Link {
                entry_id,
                name,
                target,
            } => {
                let Some(name) = self.entry_name(tls, entry_id, name).await? else {
                    return Ok(false);
                };
                let Some(target) = self.entry_name(tls, entry_id, target).await? else {
                    return Ok(false);
                };
                self.made(tls, entry_id, move |d| d.make_hard_link(&name, &target))
                    .await?;
            }
            Frame::Bye => {
                self.settle().await?;
                return Ok(true);
            }
            other => {
                return Err(SessionError::new(
                    ErrorCode::Protocol,
                    format!("unexpected {:?} frame", other.kind()),
                ))
            }
        }
        Ok(false)
    }

    /// The name of a tree frame (`Check`, `Mkdir`, `Symlink`, `Link`),
    /// checked; a refused one is answered with an error for `id` and
    /// `None` (the session goes on).
    async fn entry_name(
        &mut self,
        tls: &mut Tls,
        id: u32,
        name: &[u8],
    ) -> Result<Option<RelName>, SessionError> {
        match RelName::parse(name) {
            Ok(name) => Ok(Some(name)),
            Err(e) => {
                let shown = String::from_utf8_lossy(name).into_owned();
                (self.shared.log)(&format!("refused name {shown:?}: {e}"));
                write_frame(
                    tls,
                    &Frame::Error {
                        code: ErrorCode::BadName,
                        file_id: id,
                        message: format!("{shown}: {e}"),
                    },
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// Runs `work` on the destination on a blocking thread; its error is
    /// answered for `id` (and logged), and `None` returned.
    async fn entry<T: Send + 'static>(
        &mut self,
        tls: &mut Tls,
        id: u32,
        work: impl FnOnce(&dyn Destination) -> Result<T, ReceiveError> + Send + 'static,
    ) -> Result<Option<T>, SessionError> {
        self.settle().await?;
        let destination = self.shared.destination.clone();
        let done = tokio::task::spawn_blocking(move || work(destination.as_ref()))
            .await
            .map_err(|e| SessionError::new(ErrorCode::Storage, format!("entry failed: {e}")))?;
        match done {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                (self.shared.log)(&e.to_string());
                write_frame(
                    tls,
                    &Frame::Error {
                        code: e.code,
                        file_id: id,
                        message: e.to_string(),
                    },
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// [`Session::entry`] for a directory or link: `Made` when done.
    async fn made(
        &mut self,
        tls: &mut Tls,
        entry_id: u32,
        work: impl FnOnce(&dyn Destination) -> Result<(), ReceiveError> + Send + 'static,
    ) -> Result<(), SessionError> {
        if self.entry(tls, entry_id, work).await?.is_some() {
            self.entries += 1;
            write_frame(tls, &Frame::Made { entry_id }).await?;
        }
        Ok(())
    }

    /// Lets go of every file still open (their ranges are saved).
    async fn release_all(&mut self) {
        let _ = self.settle().await;
        let files: Vec<_> = self.files.drain().map(|(_, f)| f).collect();
        if !files.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for file in files {
                    file.incoming.release();
                }
            })
            .await;
        }
    }
}
