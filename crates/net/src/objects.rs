//! The object frames of a store server (`serve --store`, protocol version
//! 4): after the usual authentication, a client creates, reads, lists and
//! deletes the opaque objects of one store (`docs/PROTOCOL.md`, "Object
//! sessions").
//!
//! The server never interprets an object: it keeps them where an
//! [`ObjectHost`] says (the remote crate's store directory, which checks
//! names with the store's rules and never follows a link). Everything a
//! client sends is bounded as for files: one frame read at a time with a
//! deadline, `Data` payloads collected into writes of about a MiB only
//! while the server's shared budget has room for them, one object being
//! written per session, a listing sent page by
//! page as the directory walk finds names, reads sent a MiB at a time
//! (one MiB read from disk while the one before is sent) while the
//! shared budget has room for that, a frame's worth at a time otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::client::SEND_BUFFER;
use crate::frame::{
    EntryTime, ErrorCode, FileMeta, Frame, MAX_DATA_PAYLOAD, MAX_NAMES_PAYLOAD, MAX_NAME_LEN,
};
use crate::name::RelName;
use crate::receive::{Destination, Incoming, ReceiveError};
use crate::server::{SessionError, Tls};
use crate::wire::{FrameReader, PayloadPool, WireError};

/// Bytes of an object the server reads from disk at once when it sends a
/// range with room in the shared budget: four `Data` frames, sent in one
/// vectored write (one `writev` of whole TLS records) while the next MiB
/// is read.
const SEND_BATCH: usize = 1024 * 1024;

/// What a range sent a MiB at a time takes of the shared budget while it
/// is sent: its two read buffers, and the records rustls may hold for a
/// client that reads slowly (its send buffer is [`SEND_BUFFER`] then).
const SEND_BATCH_ROOM: usize = 2 * SEND_BATCH + SEND_BUFFER;

/// rustls' own bound on the records it holds for a slow client, which a
/// session keeps while it sends nothing a MiB at a time.
const SMALL_SEND_BUFFER: usize = 64 * 1024;

/// The most bytes one object may have (a store's packs are at most 1 GiB
/// plus their index; anything larger is refused as it arrives).
pub const MAX_OBJECT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Why the host refused or failed a request: the code and text the client
/// gets for that request (the session goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// The code sent.
    pub code: ErrorCode,
    /// For people; names the object, never a path outside the store.
    pub message: String,
}

impl HostError {
    /// An error of `code` saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> HostError {
        HostError {
            code,
            message: message.into(),
        }
    }
}

/// An object being written: visible under its name only after `commit`,
/// and only if the name is free; dropping it leaves nothing.
pub trait HostedWriter: Send {
    /// Appends bytes.
    ///
    /// # Errors
    /// A storage failure.
    fn write(&mut self, bytes: &[u8]) -> Result<(), HostError>;
    /// Appends `parts`, in order (a host may write them in one call).
    ///
    /// # Errors
    /// A storage failure.
    fn write_parts(&mut self, parts: &[&[u8]]) -> Result<(), HostError> {
        parts.iter().try_for_each(|part| self.write(part))
    }
    /// Makes the object durable and visible.
    ///
    /// # Errors
    /// [`ErrorCode::ObjectExists`] when the name is taken, or a storage
    /// failure.
    fn commit(self: Box<Self>) -> Result<(), HostError>;
}

/// Where a store server keeps its objects. Every call is blocking; the
/// server runs them on blocking threads.
pub trait ObjectHost: Send + Sync {
    /// Whether deletes are refused ([`ErrorCode::AppendOnly`]).
    fn append_only(&self) -> bool;
    /// Starts a create-only write of `name`.
    ///
    /// # Errors
    /// A bad name ([`ErrorCode::BadName`]), a taken one
    /// ([`ErrorCode::ObjectExists`]), a storage failure.
    fn create(&self, name: &str) -> Result<Box<dyn HostedWriter>, HostError>;
    /// Opens `name` for reading.
    ///
    /// # Errors
    /// [`ErrorCode::NoSuchObject`], a bad name, a storage failure.
    fn open(&self, name: &str) -> Result<File, HostError>;
    /// Calls `each(size, name)` for every object whose name starts with
    /// `prefix` (empty, or ending in `/`), until it returns `false`.
    ///
    /// # Errors
    /// A bad prefix or a storage failure.
    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(u64, String) -> bool,
    ) -> Result<(), HostError>;
    /// Deletes `name` (a missing one is not an error).
    ///
    /// # Errors
    /// A bad name or a storage failure.
    fn delete(&self, name: &str) -> Result<(), HostError>;
}

/// What one object session did, for the server's log and totals.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ObjectCounts {
    /// Objects committed.
    pub(crate) created: u64,
    /// Object bytes received.
    pub(crate) received: u64,
    /// Object bytes sent.
    pub(crate) sent: u64,
    /// Requests answered: a create with its bytes and commit is one, as
    /// is a stat, a read, a listing, a delete; each is a round trip.
    pub(crate) requests: u64,
}

/// A write of a block on a blocking thread: the writer comes back with
/// its outcome.
type BlockWrite = tokio::task::JoinHandle<(Box<dyn HostedWriter>, Result<(), HostError>)>;

/// Bytes of `Data` payloads a session collects before it hands them to a
/// blocking thread in one write: one hand-off (a thread woken, the task
/// woken back) per MiB, not per frame, as for the files of a send.
const BATCH_BYTES: usize = 1024 * 1024;

/// How long a session that collected payloads waits for the next frame
/// before it writes them: a client that pauses does not keep its bytes
/// (and their room in the shared budget) unwritten.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// The object being written on a session: its request, and its writer or
/// why it could not be made (answered at its commit).
struct Writing {
    req: u32,
    writer: Result<Box<dyn HostedWriter>, HostError>,
    /// The block being written while the session reads (and decrypts) the
    /// next one; its writer is back in `writer` once [`Writing::settle`]d.
    in_flight: Option<BlockWrite>,
    written: u64,
    /// Whole `Data` payloads (prefix included) received and not yet
    /// handed to the writer, and their room in the shared budget.
    batch: Vec<Vec<u8>>,
    batch_bytes: usize,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Writing {
    /// Waits for the block in flight, if any.
    async fn settle(&mut self) -> Result<(), SessionError> {
        if let Some(task) = self.in_flight.take() {
            let (writer, result) = task.await.map_err(storage_thread_failed)?;
            self.writer = result.map(|()| writer);
        }
        Ok(())
    }

    /// Hands the collected payloads to a blocking thread, once the block
    /// before them is written, and returns while they are written. After
    /// a failed write nothing more is written (the commit answers it).
    async fn hand_off(&mut self, pool: &Arc<PayloadPool>) -> Result<(), SessionError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let payloads = std::mem::take(&mut self.batch);
        let permits = std::mem::take(&mut self.permits);
        self.batch_bytes = 0;
        if self.writer.is_err() {
            payloads.into_iter().for_each(|payload| pool.give(payload));
            return Ok(());
        }
        let mut writer = std::mem::replace(
            &mut self.writer,
            Err(HostError::new(ErrorCode::Storage, "writer in use")),
        )
        .expect("checked above");
        let pool = pool.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let parts: Vec<&[u8]> = payloads
                .iter()
                .map(|payload| &payload[crate::frame::DATA_PREFIX_LEN..])
                .collect();
            let result = writer.write_parts(&parts);
            drop(parts);
            payloads.into_iter().for_each(|payload| pool.give(payload));
            // The room in the budget goes with the permits.
            drop(permits);
            (writer, result)
        }));
        Ok(())
    }
}

/// A session error for request `req`.
fn failed(code: ErrorCode, req: u32, message: impl Into<String>) -> SessionError {
    SessionError {
        code,
        file_id: req,
        message: message.into(),
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(storage_thread_failed)
}

/// A blocking storage task that panicked or was cancelled.
fn storage_thread_failed(e: tokio::task::JoinError) -> SessionError {
    SessionError::new(ErrorCode::Storage, format!("storage thread failed: {e}"))
}

/// Serves object requests on an authenticated session until `Bye`, a clean
/// close, or an error that ends the session.
///
/// `Data` payloads are read into buffers of `pool` and collected up to
/// [`BATCH_BYTES`] while the shared `budget` has room for them (then the
/// session reads on while they are written); a payload the budget has no
/// room for is written before the next frame is read.
pub(crate) async fn serve(
    tls: &mut Tls,
    host: Arc<dyn ObjectHost>,
    idle: Duration,
    hard_stop: &mut watch::Receiver<bool>,
    counts: &mut ObjectCounts,
    budget: &Arc<Semaphore>,
    pool: &Arc<PayloadPool>,
) -> Result<(), SessionError> {
    let mut writing: Option<Writing> = None;
    let mut frames = FrameReader::default();
    loop {
        let collected = writing.as_ref().is_some_and(|w| !w.batch.is_empty());
        let wait = if collected { BATCH_WAIT } else { idle };
        // Cancel safe: a frame read in part is read on at the next turn.
        let next = tokio::select! {
            frame = tokio::time::timeout(wait, frames.next(tls, budget, pool)) => frame,
            _ = hard_stop.changed() => {
                return Err(SessionError::new(ErrorCode::ShuttingDown, "the server is stopping; try again"));
            }
        };
        let (raw, permit) = match next {
            Ok(Ok(frame)) => frame,
            Ok(Err(WireError::Closed)) => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) if collected => {
                if let Some(current) = writing.as_mut() {
                    current.hand_off(pool).await?;
                }
                continue;
            }
            Err(_) => return Err(WireError::Timeout(idle).into()),
        };
        let frame = raw.parse().map_err(WireError::from)?;
        if !matches!(
            frame,
            Frame::Data { .. } | Frame::ObjCreate { .. } | Frame::Bye
        ) {
            counts.requests += 1;
        }
        match frame {
            Frame::ObjCreate { req, name } => {
                if writing.is_some() {
                    return Err(failed(
                        ErrorCode::Protocol,
                        req,
                        "an object is already being written on this connection",
                    ));
                }
                let host = host.clone();
                let name = name.to_owned();
                let writer = blocking(move || host.create(&name)).await?;
                writing = Some(Writing {
                    req,
                    writer,
                    in_flight: None,
                    written: 0,
                    batch: Vec::new(),
                    batch_bytes: 0,
                    permits: Vec::new(),
                });
            }
            Frame::Data {
                file_id,
                offset,
                bytes,
            } => {
                let Some(current) = writing.as_mut().filter(|w| w.req == file_id) else {
                    return Err(failed(
                        ErrorCode::UnknownFile,
                        file_id,
                        format!("request {file_id} is not an object being written"),
                    ));
                };
                let len = bytes.len() as u64;
                if offset != current.written {
                    return Err(failed(
                        ErrorCode::OutOfRange,
                        file_id,
                        format!("bytes at {offset}, expected them at {}", current.written),
                    ));
                }
                if current.written + len > MAX_OBJECT_BYTES {
                    return Err(failed(
                        ErrorCode::OutOfRange,
                        file_id,
                        format!("an object may have at most {MAX_OBJECT_BYTES} bytes"),
                    ));
                }
                current.written += len;
                counts.received += len;
                // One batch is written while the next is read: the
                // storage and the decryption overlap.
                current.batch_bytes += raw.payload.len();
                current.batch.push(raw.payload);
                match permit {
                    Some(permit) => {
                        current.permits.push(permit);
                        if current.batch_bytes >= BATCH_BYTES {
                            current.hand_off(pool).await?;
                        }
                    }
                    // No room in the shared budget: written before the
                    // next frame is read.
                    None => {
                        current.hand_off(pool).await?;
                        current.settle().await?;
                    }
                }
            }
            Frame::ObjCommit { req, size } => {
                let Some(mut current) = writing.take().filter(|w| w.req == req) else {
                    return Err(failed(
                        ErrorCode::UnknownFile,
                        req,
                        format!("request {req} is not an object being written"),
                    ));
                };
                current.hand_off(pool).await?;
                current.settle().await?;
                let answer = match current.writer {
                    Err(e) => Err(e),
                    Ok(_) if current.written != size => Err(HostError::new(
                        ErrorCode::Incomplete,
                        format!("{} bytes received, {size} announced", current.written),
                    )),
                    Ok(writer) => blocking(move || writer.commit()).await?,
                };
                if answer.is_ok() {
                    counts.created += 1;
                }
                answer_done(tls, idle, req, answer).await?;
            }
            Frame::ObjStat { req, name } => {
                let host = host.clone();
                let name = name.to_owned();
                match blocking(move || open_sized(&*host, &name)).await? {
                    Ok((_, size)) => write_frame(tls, &Frame::ObjSize { req, size }, idle).await?,
                    Err(e) => refuse(tls, idle, req, e).await?,
                }
            }
            Frame::ObjGet { req, limit, name } => {
                let host = host.clone();
                let name = name.to_owned();
                match blocking(move || open_sized(&*host, &name)).await? {
                    Ok((file, size)) => {
                        write_frame(tls, &Frame::ObjSize { req, size }, idle).await?;
                        if size <= limit {
                            send_range(tls, idle, req, file, 0, size, budget).await?;
                            counts.sent += size;
                        }
                    }
                    Err(e) => refuse(tls, idle, req, e).await?,
                }
            }
            Frame::ObjRead {
                req,
                offset,
                length,
                name,
            } => {
                let host = host.clone();
                let name = name.to_owned();
                match blocking(move || open_sized(&*host, &name)).await? {
                    Ok((file, size)) => {
                        write_frame(tls, &Frame::ObjSize { req, size }, idle).await?;
                        if offset.checked_add(length).is_some_and(|end| end <= size) {
                            send_range(tls, idle, req, file, offset, length, budget).await?;
                            counts.sent += length;
                        }
                    }
                    Err(e) => refuse(tls, idle, req, e).await?,
                }
            }
            Frame::ObjList { req, prefix } => {
                send_listing(tls, idle, req, host.clone(), prefix.to_owned()).await?;
            }
            Frame::ObjDelete { req, name } => {
                let answer = if host.append_only() {
                    Err(HostError::new(
                        ErrorCode::AppendOnly,
                        format!(
                            "{name}: this server keeps its store append-only; it deletes nothing"
                        ),
                    ))
                } else {
                    let host = host.clone();
                    let name = name.to_owned();
                    blocking(move || host.delete(&name)).await?
                };
                answer_done(tls, idle, req, answer).await?;
            }
            Frame::ObjInfo { req } => {
                let append_only = host.append_only();
                write_frame(tls, &Frame::ObjHosting { req, append_only }, idle).await?;
            }
            Frame::Bye => return Ok(()),
            other => {
                return Err(SessionError::new(
                    ErrorCode::Protocol,
                    format!(
                        "this server hosts a store (serve --store), it receives no files: \
                         a {:?} frame is not an object request; use `cryptstream store --store cst://HOST:PORT`",
                        other.kind()
                    ),
                ))
            }
        }
    }
}

/// Writes one frame within `idle`.
async fn write_frame(tls: &mut Tls, frame: &Frame<'_>, idle: Duration) -> Result<(), SessionError> {
    within_idle(idle, crate::wire::write_frame(tls, frame)).await
}

/// Runs one write to the client within `idle`: a client that stops
/// reading (a large read asked for, then never taken) loses its session
/// instead of holding it.
async fn within_idle(
    idle: Duration,
    write: impl std::future::Future<Output = Result<(), WireError>>,
) -> Result<(), SessionError> {
    match tokio::time::timeout(idle, write).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(SessionError::new(
            ErrorCode::Timeout,
            format!("the client read nothing for {idle:?}"),
        )),
    }
}

/// `ObjDone`, or the error, for request `req`.
async fn answer_done(
    tls: &mut Tls,
    idle: Duration,
    req: u32,
    answer: Result<(), HostError>,
) -> Result<(), SessionError> {
    match answer {
        Ok(()) => write_frame(tls, &Frame::ObjDone { req }, idle).await,
        Err(e) => refuse(tls, idle, req, e).await,
    }
}

/// An `Error` frame for request `req`; the session goes on.
async fn refuse(tls: &mut Tls, idle: Duration, req: u32, e: HostError) -> Result<(), SessionError> {
    let frame = Frame::Error {
        code: e.code,
        file_id: req,
        message: e.message,
    };
    write_frame(tls, &frame, idle).await
}

/// Opens `name` and finds its size.
fn open_sized(host: &dyn ObjectHost, name: &str) -> Result<(Arc<File>, u64), HostError> {
    let file = host.open(name)?;
    let size = file
        .metadata()
        .map_err(|e| HostError::new(ErrorCode::Storage, format!("{name}: {e}")))?
        .len();
    Ok((Arc::new(file), size))
}

/// Sends `length` bytes of `file` from `offset` as `Data` frames. While
/// the shared `budget` has room for [`SEND_BATCH_ROOM`], a MiB at a time,
/// each read on a blocking thread while the MiB before it is sent, in
/// writes of a MiB; otherwise a frame's worth at a time, read then sent,
/// so that a session holds one frame as when it writes.
async fn send_range(
    tls: &mut Tls,
    idle: Duration,
    req: u32,
    file: Arc<File>,
    offset: u64,
    length: u64,
    budget: &Arc<Semaphore>,
) -> Result<(), SessionError> {
    let kib = u32::try_from(SEND_BATCH_ROOM.div_ceil(1024)).expect("a few MiB");
    let room = budget.clone().try_acquire_many_owned(kib).ok();
    let (batch, ahead) = match room {
        Some(_) => (SEND_BATCH, true),
        None => (MAX_DATA_PAYLOAD as usize, false),
    };
    if ahead {
        tls.get_mut().1.set_buffer_limit(Some(SEND_BUFFER));
    }
    let sent = stream_range(tls, idle, req, file, offset..offset + length, batch, ahead).await;
    if ahead {
        // Everything was flushed: nothing is held past the new bound.
        tls.get_mut().1.set_buffer_limit(Some(SMALL_SEND_BUFFER));
    }
    drop(room);
    sent
}

/// [`send_range`]'s reads and writes, `batch` bytes at a time, the next
/// read started before a batch is sent when `ahead`.
async fn stream_range(
    tls: &mut Tls,
    idle: Duration,
    req: u32,
    file: Arc<File>,
    range: std::ops::Range<u64>,
    batch: usize,
    ahead: bool,
) -> Result<(), SessionError> {
    let end = range.end;
    let read_at = |at: u64, mut buf: Vec<u8>| {
        let file = file.clone();
        let len = (end - at).min(buf.len() as u64) as usize;
        tokio::task::spawn_blocking(move || {
            let read = file.read_exact_at(&mut buf[..len], at);
            (buf, len, read)
        })
    };
    // No larger than the range: a small object takes a small buffer, and a
    // range of one batch no second one to read ahead into (a tree's get
    // asks for thousands of such ranges; zeroing the unused spare was 3.6 %
    // of the server's samples).
    let size = (range.end - range.start).min(batch as u64) as usize;
    let more_than_one = range.end - range.start > batch as u64;
    let mut spare = (ahead && more_than_one).then(|| vec![0u8; size]);
    let mut at = range.start;
    let mut reading = (at < end).then(|| read_at(at, vec![0u8; size]));
    while let Some(read) = reading.take() {
        let (buf, len, read) = read.await.map_err(storage_thread_failed)?;
        if let Err(e) = read {
            // The client takes the error in place of the rest.
            return refuse(
                tls,
                idle,
                req,
                HostError::new(ErrorCode::Storage, format!("read failed: {e}")),
            )
            .await;
        }
        let next = at + len as u64;
        if next < end {
            if let Some(other) = spare.take() {
                reading = Some(read_at(next, other));
            }
        }
        within_idle(idle, crate::wire::write_data(tls, req, at, &buf[..len])).await?;
        if next < end && reading.is_none() {
            reading = Some(read_at(next, buf));
        } else {
            spare = Some(buf);
        }
        at = next;
    }
    Ok(())
}

/// The bytes an entry takes in an `ObjNames` payload.
fn entry_len(name: &str) -> usize {
    8 + 2 + name.len()
}

/// Sends the listing of `prefix` as `ObjNames` pages while a blocking
/// thread walks the store (at most two pages wait between them).
async fn send_listing(
    tls: &mut Tls,
    idle: Duration,
    req: u32,
    host: Arc<dyn ObjectHost>,
    prefix: String,
) -> Result<(), SessionError> {
    let (pages, mut received) = tokio::sync::mpsc::channel::<Vec<(u64, String)>>(2);
    let walk = tokio::task::spawn_blocking(move || {
        let mut page = Vec::new();
        let mut bytes = 7;
        let result = host.list(&prefix, &mut |size, name| {
            if name.len() > MAX_NAME_LEN {
                return true;
            }
            if bytes + entry_len(&name) > MAX_NAMES_PAYLOAD as usize
                || page.len() == usize::from(u16::MAX)
            {
                if pages.blocking_send(std::mem::take(&mut page)).is_err() {
                    return false;
                }
                bytes = 7;
            }
            bytes += entry_len(&name);
            page.push((size, name));
            true
        });
        if result.is_ok() && !page.is_empty() {
            let _ = pages.blocking_send(page);
        }
        result
    });
    while let Some(page) = received.recv().await {
        let entries = page
            .iter()
            .map(|(size, name)| (*size, name.as_str()))
            .collect();
        let frame = Frame::ObjNames {
            req,
            last: false,
            entries,
        };
        write_frame(tls, &frame, idle).await?;
    }
    match walk.await {
        Ok(Ok(())) => {
            let last = Frame::ObjNames {
                req,
                last: true,
                entries: Vec::new(),
            };
            write_frame(tls, &last, idle).await
        }
        Ok(Err(e)) => refuse(tls, idle, req, e).await,
        Err(e) => Err(SessionError::new(
            ErrorCode::Storage,
            format!("listing thread failed: {e}"),
        )),
    }
}

/// The tree destination of a store server: it receives no files (a
/// session of a store server only ever gets object frames).
pub struct NoTree;

fn no_tree() -> ReceiveError {
    ReceiveError::new(
        ErrorCode::Protocol,
        "",
        "this server hosts a store, not a folder: send files to a server started without --store",
    )
}

impl Destination for NoTree {
    fn open(&self, _: &RelName, _: &FileMeta) -> Result<Arc<dyn Incoming>, ReceiveError> {
        Err(no_tree())
    }
    fn check(
        &self,
        _: &RelName,
        _: &FileMeta,
        _: crate::frame::Compare,
    ) -> Result<bool, ReceiveError> {
        Err(no_tree())
    }
    fn make_dir(&self, _: &RelName, _: u32, _: EntryTime) -> Result<(), ReceiveError> {
        Err(no_tree())
    }
    fn make_symlink(&self, _: &RelName, _: &[u8], _: EntryTime) -> Result<(), ReceiveError> {
        Err(no_tree())
    }
    fn make_hard_link(&self, _: &RelName, _: &RelName) -> Result<(), ReceiveError> {
        Err(no_tree())
    }
    fn checkpoint_all(&self) {}
}
