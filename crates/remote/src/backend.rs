//! [`RemoteBackend`]: the store's `Backend` over a store server's object
//! frames.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use cryptstream_net::object_client::{ObjectClient, ObjectConnection, ObjectError, ObjectRange};
use cryptstream_net::objects::MAX_OBJECT_BYTES;
use cryptstream_net::ErrorCode;
use cryptstream_store::{Backend, BackendError, ObjectMeta, ObjectWriter, SpanRead};

use crate::RemoteLocation;

/// Bytes a writer gathers before it hands them to its sending task: four
/// `Data` frames, sent in one vectored write (one `writev` of whole TLS
/// records).
const SEND_BLOCK: usize = 1024 * 1024;

/// Blobs of at least this many bytes handed over whole
/// ([`ObjectWriter::write_owned`]) are sent as they are, not copied into
/// a block first (smaller ones are gathered into blocks).
const OWNED_BLOB: usize = 256 * 1024;

/// Filled blocks, sent, kept to be filled again by the next writer (of
/// this object or the next): a block that went back to the allocator
/// would be faulted in and zeroed afresh.
#[derive(Default)]
struct BlockPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BlockPool {
    /// An empty block with room for [`SEND_BLOCK`] bytes.
    fn take(&self) -> Vec<u8> {
        let pooled = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        pooled.unwrap_or_else(|| Vec::with_capacity(SEND_BLOCK))
    }

    /// Keeps `block` unless `most` are kept already (or it is a blob
    /// taken whole, of another size).
    fn give(&self, mut block: Vec<u8>, most: usize) {
        if block.capacity() != SEND_BLOCK {
            return;
        }
        block.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < most {
            free.push(block);
        }
    }
}

/// What the backend and its writers share.
struct Inner {
    runtime: tokio::runtime::Runtime,
    client: ObjectClient,
    location: RemoteLocation,
    /// Idle authenticated connections.
    idle: Mutex<Vec<ObjectConnection>>,
    connections: usize,
    /// Blocks of writers, shared with their sending tasks.
    blocks: Arc<BlockPool>,
}

/// A store's objects on a `serve --store` server. Each request in flight
/// takes an idle connection or makes one; at most `connections` are kept.
/// Clones share the connections.
#[derive(Clone)]
pub struct RemoteBackend {
    inner: Arc<Inner>,
}

impl RemoteBackend {
    /// A backend for `location` through `client`, with up to
    /// `connections` requests in flight worth keeping connections for.
    ///
    /// # Errors
    /// The runtime cannot be made.
    pub fn new(
        location: RemoteLocation,
        client: ObjectClient,
        connections: usize,
    ) -> io::Result<RemoteBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .thread_name("cryptstream-remote")
            .build()?;
        Ok(RemoteBackend {
            inner: Arc::new(Inner {
                runtime,
                client,
                location,
                idle: Mutex::new(Vec::new()),
                connections: connections.max(1),
                blocks: Arc::new(BlockPool::default()),
            }),
        })
    }

    /// Whether the server keeps the store append-only (deletes refused).
    ///
    /// # Errors
    /// The server cannot be reached, or hosts no store.
    pub fn append_only(&self) -> Result<bool, BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take("")?;
        let result = inner.runtime.block_on(conn.append_only());
        inner.give(conn, &result);
        result.map_err(|e| BackendError::Io {
            name: "config".into(),
            source: io::Error::other(format!(
                "{}: the server hosts no store (is it `serve --store DIR`?): {e}",
                inner.location
            )),
        })
    }

    /// The fingerprint this backend recorded in the known-hosts file on
    /// first contact, if it did.
    pub fn first_contact(&self) -> Option<cryptstream_net::Fingerprint> {
        self.inner.client.first_contact()
    }
}

impl Inner {
    /// An idle connection, or a new one.
    fn take(&self, name: &str) -> Result<ObjectConnection, BackendError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        self.runtime
            .block_on(self.client.connect())
            .map_err(|e| self.error(name, ObjectError::Connect(e)))
    }

    /// Keeps `conn` for the next request unless it broke.
    fn give<T>(&self, conn: ObjectConnection, result: &Result<T, ObjectError>) {
        if matches!(
            result,
            Err(ObjectError::Broken(_) | ObjectError::Connect(_))
        ) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.connections {
            idle.push(conn);
        }
    }

    /// The store's error for a failed request about `name`.
    fn error(&self, name: &str, e: ObjectError) -> BackendError {
        let other = |text: String| BackendError::Io {
            name: name.to_owned(),
            source: io::Error::other(text),
        };
        match e {
            ObjectError::Refused { code, message } => match code {
                ErrorCode::NoSuchObject => BackendError::NotFound(name.to_owned()),
                ErrorCode::ObjectExists => BackendError::AlreadyExists(name.to_owned()),
                ErrorCode::BadName => BackendError::InvalidName(name.to_owned()),
                ErrorCode::AppendOnly => other(format!(
                    "{}: the server keeps this store append-only and deletes nothing; \
                     run forget and gc where the store is (store --store DIR on the server), with the key",
                    self.location
                )),
                _ => other(format!("{}: {code}: {message}", self.location)),
            },
            ObjectError::Broken(reason) => other(format!("{}: {reason}", self.location)),
            ObjectError::Connect(e) => other(e.to_string()),
        }
    }
}

impl Drop for Inner {
    /// Ends every idle session politely (`Bye`, TLS close), a second at most.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        if idle.is_empty() {
            return;
        }
        let byes = async move {
            for conn in idle {
                conn.bye().await;
            }
        };
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), byes).await
        });
    }
}

/// A failed listing: the server, or the caller's own error.
enum ListError {
    Object(ObjectError),
    Each(BackendError),
}

impl From<ObjectError> for ListError {
    fn from(e: ObjectError) -> ListError {
        ListError::Object(e)
    }
}

impl Backend for RemoteBackend {
    fn describe(&self) -> String {
        self.inner.location.to_string()
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, BackendError> {
        cryptstream_store::check_object_name(name)?;
        let inner = &self.inner;
        let mut conn = inner.take(name)?;
        let req = inner
            .runtime
            .block_on(conn.create(name))
            .map_err(|e| inner.error(name, e))?;
        Ok(Box::new(RemoteWriter::new(
            self.inner.clone(),
            name,
            conn,
            req,
        )))
    }

    fn get(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take(name)?;
        let result = inner.runtime.block_on(conn.get(name, limit));
        inner.give(conn, &result);
        match result.map_err(|e| inner.error(name, e))? {
            Ok(data) => Ok(data),
            Err(size) => Err(BackendError::TooLarge {
                name: name.to_owned(),
                size,
                limit,
            }),
        }
    }

    fn get_range(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take(name)?;
        let result = inner.runtime.block_on(conn.read(name, offset, buf));
        inner.give(conn, &result);
        let size = result.map_err(|e| inner.error(name, e))?;
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(BackendError::ShortObject {
                name: name.to_owned(),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    /// One request for the whole span: the server streams it, and each
    /// piece is taken from the connection as it is asked for, straight
    /// into the caller's buffer (no round trip per piece, no frame copy).
    fn open_span<'a>(
        &'a self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Box<dyn SpanRead + 'a>, BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take(name)?;
        let result = inner.runtime.block_on(conn.ask_range(name, start, len));
        if let Ok(&(req, size)) = result.as_ref() {
            if start.checked_add(len).is_some_and(|end| end <= size) {
                return Ok(Box::new(RemoteSpan {
                    inner,
                    name: name.to_owned(),
                    range: Some(ObjectRange::new(conn, req, start, len)),
                }));
            }
        }
        // A refusal, or a range outside the object: nothing follows.
        inner.give(conn, &result);
        let (_, size) = result.map_err(|e| inner.error(name, e))?;
        Err(BackendError::ShortObject {
            name: name.to_owned(),
            offset: start,
            len,
            size,
        })
    }

    fn read_streams(&self) -> usize {
        self.inner.connections
    }

    fn write_streams(&self) -> usize {
        // A pack upload per connection.
        self.inner.connections
    }

    fn size(&self, name: &str) -> Result<Option<u64>, BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take(name)?;
        let result = inner.runtime.block_on(conn.size(name));
        inner.give(conn, &result);
        result.map_err(|e| inner.error(name, e))
    }

    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(ObjectMeta) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take(prefix)?;
        let result = inner.runtime.block_on(conn.list(prefix, &mut |size, name| {
            each(ObjectMeta {
                name: name.to_owned(),
                size,
            })
            .map_err(ListError::Each)
        }));
        match result {
            Ok(()) => {
                inner.give(conn, &Ok::<(), ObjectError>(()));
                Ok(())
            }
            // The rest of the listing is still on its way: drop the connection.
            Err(ListError::Each(e)) => Err(e),
            Err(ListError::Object(e)) => {
                // A refusal leaves the connection usable; a broken one is dropped.
                if let ObjectError::Refused { .. } = e {
                    inner.give(conn, &Ok::<(), ObjectError>(()));
                }
                Err(inner.error(prefix, e))
            }
        }
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        let inner = &self.inner;
        let mut conn = inner.take(name)?;
        let result = inner.runtime.block_on(conn.delete(name));
        inner.give(conn, &result);
        result.map_err(|e| inner.error(name, e))
    }
}

/// A span of an object being read: one request whose bytes the server
/// streams; see [`RemoteBackend::open_span`]. Its connection goes back to
/// the idle ones once every byte was taken, and is closed if the span is
/// dropped before (the rest would still be on its way) or failed.
struct RemoteSpan<'a> {
    inner: &'a Inner,
    name: String,
    /// `None` once a read failed.
    range: Option<ObjectRange>,
}

impl SpanRead for RemoteSpan<'_> {
    fn read_into(&mut self, at: u64, len: usize, out: &mut Vec<u8>) -> Result<(), BackendError> {
        let inner = self.inner;
        let Some(range) = self.range.as_mut() else {
            return Err(inner.error(
                &self.name,
                ObjectError::Broken("the read failed earlier".into()),
            ));
        };
        let from = out.len();
        match inner.runtime.block_on(range.read_into(at, len, out)) {
            Ok(()) => Ok(()),
            Err(e) => {
                out.truncate(from);
                self.range = None;
                Err(inner.error(&self.name, e))
            }
        }
    }
}

impl Drop for RemoteSpan<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.range.take().and_then(ObjectRange::finish) {
            self.inner.give(conn, &Ok::<(), ObjectError>(()));
        }
    }
}

/// How many full blocks (or blobs taken whole, at most a chunk's 4 MiB
/// and its seal) a writer may have queued for its sending task (besides
/// the one it fills): the store's thread goes on cutting and sealing
/// while the blocks before are encrypted and sent.
const QUEUED_BLOCKS: usize = 2;

/// Blocks kept in the pool: those of one object being written (queued,
/// being sent, being filled); a put writes one pack at a time.
const POOLED_BLOCKS: usize = QUEUED_BLOCKS + 2;

/// What a writer hands its sending task.
enum Send {
    /// The next bytes of the object, in order.
    Bytes(Vec<u8>),
    /// Every byte is sent: commit with this size.
    Commit(u64),
}

/// The end of a sending task: its connection (unless it broke) and the
/// outcome of the object.
type Sent = (Option<ObjectConnection>, Result<(), ObjectError>);

/// Sends the blocks of the object of `req` on `conn` as they come, then
/// commits it. A writer dropped without a commit closes the channel: the
/// connection is dropped (closed) and the server keeps nothing.
async fn send_object(
    mut conn: ObjectConnection,
    req: u32,
    mut blocks: tokio::sync::mpsc::Receiver<Send>,
    pool: Arc<BlockPool>,
    most: usize,
) -> Sent {
    let mut sent = 0u64;
    while let Some(message) = blocks.recv().await {
        match message {
            Send::Bytes(block) => {
                if let Err(e) = conn.put_bytes(req, sent, &block).await {
                    return (None, Err(e));
                }
                sent += block.len() as u64;
                // Back to the pool for the next block to fill (none is
                // made and faulted in afresh per block).
                pool.give(block, most);
            }
            Send::Commit(size) => {
                let result = conn.commit(req, size).await;
                let keep = !matches!(
                    result,
                    Err(ObjectError::Broken(_) | ObjectError::Connect(_))
                );
                return (keep.then_some(conn), result);
            }
        }
    }
    (
        None,
        Err(ObjectError::Broken("the object was abandoned".into())),
    )
}

/// An object being written: its bytes go out in blocks as they come,
/// through a task of the backend's runtime (so the TLS encryption and the
/// socket writes overlap the store's own work); the server makes it
/// visible only at the commit, and only if the name is free. Dropped
/// without a commit, its connection is closed and the server keeps
/// nothing.
struct RemoteWriter {
    inner: Arc<Inner>,
    name: String,
    /// The sending task's queue; `None` once the commit went.
    blocks: Option<tokio::sync::mpsc::Sender<Send>>,
    task: Option<tokio::task::JoinHandle<Sent>>,
    buffer: Vec<u8>,
    /// Bytes handed to the task.
    queued: u64,
}

impl RemoteWriter {
    fn new(inner: Arc<Inner>, name: &str, conn: ObjectConnection, req: u32) -> RemoteWriter {
        let (blocks, queue) = tokio::sync::mpsc::channel(QUEUED_BLOCKS);
        let task = inner.runtime.spawn(send_object(
            conn,
            req,
            queue,
            inner.blocks.clone(),
            POOLED_BLOCKS,
        ));
        let buffer = inner.blocks.take();
        RemoteWriter {
            inner,
            name: name.to_owned(),
            blocks: Some(blocks),
            task: Some(task),
            buffer,
            queued: 0,
        }
    }

    /// Waits for the sending task's end: its connection and outcome.
    fn outcome(&mut self) -> Sent {
        self.blocks = None;
        let Some(task) = self.task.take() else {
            return (
                None,
                Err(ObjectError::Broken("the object failed earlier".into())),
            );
        };
        match self.inner.runtime.block_on(task) {
            Ok(sent) => sent,
            Err(e) => (None, Err(ObjectError::Broken(e.to_string()))),
        }
    }

    /// Hands `message` to the sending task; if it has ended (failed), its
    /// error.
    fn queue(&mut self, message: Send) -> Result<(), ObjectError> {
        let ended = match &self.blocks {
            Some(blocks) => blocks.blocking_send(message).is_err(),
            None => true,
        };
        if ended {
            let (_, result) = self.outcome();
            return Err(result.err().unwrap_or_else(|| {
                ObjectError::Broken("the object's sending ended early".into())
            }));
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let next = self.inner.blocks.take();
        let block = std::mem::replace(&mut self.buffer, next);
        let len = block.len() as u64;
        self.queue(Send::Bytes(block))
            .map_err(|e| io::Error::other(format!("{}: {e}", self.inner.location)))?;
        self.queued += len;
        Ok(())
    }
}

fn too_large() -> io::Error {
    io::Error::other(format!(
        "an object may have at most {MAX_OBJECT_BYTES} bytes"
    ))
}

impl Write for RemoteWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written() + buf.len() as u64 > MAX_OBJECT_BYTES {
            return Err(too_large());
        }
        let room = SEND_BLOCK - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == SEND_BLOCK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for RemoteWriter {
    fn written(&self) -> u64 {
        self.queued + self.buffer.len() as u64
    }

    fn write_owned(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        if bytes.len() < OWNED_BLOB {
            return self.write_all(&bytes);
        }
        if self.written() + bytes.len() as u64 > MAX_OBJECT_BYTES {
            return Err(too_large());
        }
        // The bytes before go first, as they are.
        self.send()?;
        let len = bytes.len() as u64;
        self.queue(Send::Bytes(bytes))
            .map_err(|e| io::Error::other(format!("{}: {e}", self.inner.location)))?;
        self.queued += len;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        let name = self.name.clone();
        self.send().map_err(|source| BackendError::Io {
            name: name.clone(),
            source,
        })?;
        let size = self.queued;
        self.queue(Send::Commit(size))
            .map_err(|e| self.inner.error(&name, e))?;
        let (conn, result) = self.outcome();
        if let Some(conn) = conn {
            self.inner.give(conn, &result);
        }
        result.map_err(|e| self.inner.error(&name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptstream_net::{
        DirDestination, Fingerprint, Identity, ServeConfig, Server, ServerTrust, Token,
    };
    use std::time::Duration;

    /// A `serve --store` server on a thread, and a backend connected to it.
    struct Served {
        /// Dropped (its sessions ended) before the server stops.
        backend: Option<RemoteBackend>,
        /// The server's log lines.
        log: Arc<Mutex<Vec<String>>>,
        stop: cryptstream_pool::Cancel,
        thread: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Served {
        fn backend(&self) -> &RemoteBackend {
            self.backend
                .as_ref()
                .expect("the backend lives until the drop")
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.backend = None;
            self.stop.cancel();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn served() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let token_path = dir.path().join("token");
        Token::generate().write_new(&token_path).unwrap();
        let identity = Identity::load_or_create(&token_path).unwrap();
        let fingerprint: Fingerprint = identity.fingerprint();
        let stop = cryptstream_pool::Cancel::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let server = Server::bind(ServeConfig {
            listen: "127.0.0.1:0".into(),
            destination: Arc::new(DirDestination::new(dir.path(), 0o022).unwrap()),
            objects: Some(Arc::new(
                crate::host::StoreDir::open(&store, false).unwrap(),
            )),
            token: Token::read(&token_path).unwrap(),
            identity,
            max_connections: 8,
            max_open_files: 64,
            max_unauthenticated: 8,
            max_unauthenticated_per_address: 8,
            auth_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(1),
            stop: stop.clone(),
            log: Arc::new(move |line: &str| lines.lock().unwrap().push(line.to_owned())),
            threads: Some(2),
        })
        .unwrap();
        let address = server.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            server.run();
        });
        let client = ObjectClient::new(
            address.clone(),
            Token::read(&token_path).unwrap(),
            ServerTrust::Pinned(fingerprint),
            Duration::from_secs(10),
        )
        .unwrap();
        let location = RemoteLocation::parse(&format!("cst://{address}")).unwrap();
        Served {
            backend: Some(RemoteBackend::new(location, client, 2).unwrap()),
            log,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Bytes that differ at every offset a misplaced piece could land on.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect()
    }

    fn put(backend: &RemoteBackend, name: &str, bytes: &[u8]) {
        let mut writer = backend.create(name).unwrap();
        writer.write_all(bytes).unwrap();
        writer.commit().unwrap();
    }

    #[test]
    fn a_span_is_read_in_pieces_with_gaps_across_frames_and_batches() {
        let served = served();
        let bytes = pattern(3 * 1024 * 1024 + 4321);
        put(served.backend(), "packs/ab/span", &bytes);
        // Pieces that end inside a 256 KiB frame and inside a 1 MiB batch,
        // gaps skipped within a frame and across several, a piece of one
        // byte, and the span's last byte.
        let start = 1000u64;
        let end = bytes.len() as u64 - 1;
        let pieces: [(u64, usize); 6] = [
            (1000, 300_000),
            (301_000, 1),
            (301_500, 1_200_000),
            (2_000_000, 17),
            (2_900_000, 150_000),
            (end - 5000, 5000),
        ];
        let mut span = served
            .backend()
            .open_span("packs/ab/span", start, end - start)
            .unwrap();
        for (at, len) in pieces {
            let mut out = b"kept".to_vec();
            span.read_into(at, len, &mut out).unwrap();
            assert_eq!(&out[..4], b"kept");
            assert_eq!(
                &out[4..],
                &bytes[at as usize..at as usize + len],
                "{at}+{len}"
            );
        }
        drop(span);
        // The connection went back whole: the next request reads on it.
        let mut again = vec![0u8; 10];
        served
            .backend()
            .get_range("packs/ab/span", 5, &mut again)
            .unwrap();
        assert_eq!(again, bytes[5..15]);
    }

    #[test]
    fn a_span_is_one_request_however_many_pieces_it_is_read_in() {
        let served = served();
        let bytes = pattern(2 * 1024 * 1024);
        put(served.backend(), "packs/ab/once", &bytes);
        let mut span = served
            .backend()
            .open_span("packs/ab/once", 0, bytes.len() as u64)
            .unwrap();
        let mut out = Vec::new();
        for piece in bytes.chunks(100_000) {
            let at = out.len() as u64;
            span.read_into(at, piece.len(), &mut out).unwrap();
        }
        drop(span);
        assert_eq!(out, bytes);
        // The sessions end (and are logged) when the backend is dropped,
        // before the server stops.
        let log = served.log.clone();
        drop(served);
        // "N object(s) created, B bytes received, R request(s), S bytes sent"
        let requests: u64 = log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| {
                line.split(" request(s)")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        // The create (with its bytes and commit), and the span.
        assert_eq!(requests, 2, "{:?}", log.lock().unwrap());
    }

    #[test]
    fn more_spans_at_once_than_the_servers_budget_holds_are_all_read_whole() {
        let served = served();
        // Larger than what the sockets and TLS hold for a client that does
        // not read: each range holds the server until it is taken.
        let bytes = pattern(24 * 1024 * 1024);
        put(served.backend(), "packs/ab/many", &bytes);
        // The server's 16 MiB budget holds five ranges sent a MiB at a
        // time; the others are sent a frame at a time.
        let mut spans: Vec<_> = (0..7u64)
            .map(|i| {
                served
                    .backend()
                    .open_span("packs/ab/many", i, bytes.len() as u64 - i)
                    .unwrap()
            })
            .collect();
        for (i, span) in spans.iter_mut().enumerate().rev() {
            let mut out = Vec::new();
            span.read_into(i as u64, bytes.len() - i, &mut out).unwrap();
            assert!(out == bytes[i..], "span {i}");
        }
    }

    #[test]
    fn a_span_dropped_before_its_end_leaves_the_next_reads_whole() {
        let served = served();
        let bytes = pattern(2 * 1024 * 1024);
        put(served.backend(), "packs/cd/early", &bytes);
        for _ in 0..3 {
            let mut span = served
                .backend()
                .open_span("packs/cd/early", 0, bytes.len() as u64)
                .unwrap();
            let mut out = Vec::new();
            span.read_into(0, 1000, &mut out).unwrap();
            assert_eq!(out, bytes[..1000]);
        }
        let mut out = vec![0u8; 4096];
        served
            .backend()
            .get_range("packs/cd/early", 1_500_000, &mut out)
            .unwrap();
        assert_eq!(out, bytes[1_500_000..1_504_096]);
    }

    #[test]
    fn a_span_past_the_end_or_of_no_object_is_refused_as_a_range_read_is() {
        let served = served();
        put(served.backend(), "packs/ef/short", &pattern(1000));
        let short = served.backend().open_span("packs/ef/short", 500, 501);
        assert!(
            matches!(
                short,
                Err(BackendError::ShortObject {
                    size: 1000,
                    offset: 500,
                    len: 501,
                    ..
                })
            ),
            "{:?}",
            short.err()
        );
        let missing = served.backend().open_span("packs/ef/none", 0, 10);
        assert!(
            matches!(missing, Err(BackendError::NotFound(_))),
            "{:?}",
            missing.err()
        );
        // Neither broke the connection for the next request.
        let mut out = vec![0u8; 10];
        served
            .backend()
            .get_range("packs/ef/short", 990, &mut out)
            .unwrap();
        assert_eq!(out, pattern(1000)[990..]);
    }
}
