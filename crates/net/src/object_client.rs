//! The client side of a store server's object frames: one authenticated
//! connection ([`ObjectConnection`]) that asks one request at a time;
//! the answer to a range read can be taken piece by piece, straight into
//! the caller's buffers, as it streams in ([`ObjectRange`]). Callers (the
//! remote crate's backend) keep several connections for parallel
//! requests and run them on their own runtime.
//!
//! Trust is settled exactly as `send` settles it: the certificate is
//! pinned (`--server-fingerprint`) or looked up in the known-hosts file;
//! a server seen for the first time is recorded only after it proved the
//! token, and every later connection must present the same certificate.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::Token;
use crate::client::SEND_BUFFER;
use crate::frame::{
    ErrorCode, Frame, FrameHeader, FrameType, DATA_PREFIX_LEN, HEADER_LEN, MAX_NAME_LEN,
};
use crate::server::READ_BUFFER;
use crate::tls::{client_config, record_known_host, Fingerprint, PinnedVerifier, ServerTrust};
use crate::wire::{read_frame, write_data, write_frame, RawFrame, WireError};
use crate::NetError;

/// Why an object request failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The server answered the request with an error (the connection is
    /// still usable).
    #[error("{code}: {message}")]
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The connection failed or the server broke the protocol; the
    /// connection must not be used again.
    #[error("{0}")]
    Broken(String),
    /// Connecting or authenticating failed.
    #[error("{0}")]
    Connect(#[from] NetError),
}

impl From<WireError> for ObjectError {
    fn from(e: WireError) -> ObjectError {
        ObjectError::Broken(match e {
            WireError::Io(io) => crate::tls::plain_io_reason(&io),
            other => other.to_string(),
        })
    }
}

/// What every connection to one store server shares.
pub struct ObjectClient {
    address: String,
    token: Token,
    trust: ServerTrust,
    timeout: Duration,
    /// The certificate every connection must present, once known.
    pinned: Mutex<Option<Fingerprint>>,
    /// Set when this client recorded the server on first contact.
    first_contact: Mutex<Option<Fingerprint>>,
}

impl ObjectClient {
    /// A client of the store server at `address` (`HOST:PORT`).
    ///
    /// # Errors
    /// A known-hosts file that cannot be read.
    pub fn new(
        address: String,
        token: Token,
        trust: ServerTrust,
        timeout: Duration,
    ) -> Result<ObjectClient, NetError> {
        let pinned = trust.expected()?;
        Ok(ObjectClient {
            address,
            token,
            trust,
            timeout,
            pinned: Mutex::new(pinned),
            first_contact: Mutex::new(None),
        })
    }

    /// `HOST:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The fingerprint recorded on first contact by this client, if it
    /// recorded one.
    pub fn first_contact(&self) -> Option<Fingerprint> {
        *self.first_contact.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens and authenticates a connection: nothing but the hello is sent
    /// before the server proved it holds the token.
    ///
    /// # Errors
    /// [`NetError`]: unreachable, another certificate, a wrong token.
    pub async fn connect(&self) -> Result<ObjectConnection, NetError> {
        let fail = |reason: String| NetError::Connect {
            address: self.address.clone(),
            reason,
        };
        let expected = *self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let verifier = Arc::new(PinnedVerifier::new(expected));
        let connector = TlsConnector::from(Arc::new(client_config(verifier.clone())?));
        let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tcp = BufReader::with_capacity(READ_BUFFER, tcp);
        let server_name = rustls::pki_types::ServerName::try_from("cryptstream")
            .expect("a valid DNS name")
            .to_owned();
        let mut tls = tokio::time::timeout(self.timeout, connector.connect(server_name, tcp))
            .await
            .map_err(|_| fail("TLS handshake timed out".into()))?
            .map_err(|e| self.handshake_failure(&verifier, &e))?;
        crate::client::prove_token(&mut tls, &self.token, self.timeout, &self.address).await?;
        self.settle_trust(expected, verifier.seen())?;
        // As for `send`: a block of an object and its frame headers fit
        // rustls' send buffer, so it leaves in one `writev` of whole
        // records rather than in pieces of 64 KiB.
        tls.get_mut().1.set_buffer_limit(Some(SEND_BUFFER));
        Ok(ObjectConnection {
            tls,
            timeout: self.timeout,
            next_req: 0,
        })
    }

    /// After a first authenticated session with no fingerprint known:
    /// records the one seen (trust on first use) and pins it.
    fn settle_trust(
        &self,
        expected: Option<Fingerprint>,
        seen: Option<Fingerprint>,
    ) -> Result<(), NetError> {
        if expected.is_some() {
            return Ok(());
        }
        let Some(seen) = seen else {
            return Ok(());
        };
        let mut pinned = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if pinned.is_some() {
            return Ok(());
        }
        if let ServerTrust::KnownHosts { file, host } = &self.trust {
            record_known_host(file, host, seen)?;
            *self.first_contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
        }
        *pinned = Some(seen);
        Ok(())
    }

    fn handshake_failure(&self, verifier: &PinnedVerifier, e: &io::Error) -> NetError {
        if let Some(seen) = verifier.refused() {
            return self.trust.mismatch(&self.address, seen);
        }
        let reason = crate::tls::handshake_reason(e);
        NetError::Connect {
            address: self.address.clone(),
            reason,
        }
    }
}

/// The TLS stream of a connection. As on the server, the TCP stream is
/// read through a buffer of [`READ_BUFFER`] bytes: rustls asks for a few
/// KiB at a time, and a `recv` per ask (64,000 per GiB read) cost more
/// than the copy out of the buffer.
type Tls = tokio_rustls::client::TlsStream<BufReader<TcpStream>>;

/// One authenticated connection to a store server. A request that fails
/// with [`ObjectError::Broken`] leaves it unusable.
pub struct ObjectConnection {
    tls: Tls,
    timeout: Duration,
    next_req: u32,
}

/// A name that fits a frame (the frame encoder would refuse a longer one).
fn fits(name: &str) -> Result<(), ObjectError> {
    if name.len() > MAX_NAME_LEN {
        return Err(ObjectError::Refused {
            code: ErrorCode::BadName,
            message: format!("an object name has at most {MAX_NAME_LEN} bytes"),
        });
    }
    Ok(())
}

impl ObjectConnection {
    fn req(&mut self) -> u32 {
        self.next_req = self.next_req.wrapping_add(1);
        self.next_req
    }

    /// Reads the answer to `req`: an error for it becomes
    /// [`ObjectError::Refused`].
    async fn answer(&mut self, req: u32) -> Result<RawFrame, ObjectError> {
        let raw = read_frame(&mut self.tls, self.timeout).await?;
        match refusal(req, &raw) {
            Some(e) => Err(e),
            None => Ok(raw),
        }
    }

    /// Reads the header of the next frame of the answer to `req`, which
    /// must be a `Data` frame of `req`, and its prefix: returns its offset
    /// and the number of its bytes, which are left in the stream for the
    /// caller to take (straight into its own buffer, not into a frame
    /// first). Any other frame is read whole and is the error.
    async fn data_head(&mut self, req: u32, what: &str) -> Result<(u64, usize), ObjectError> {
        let timeout = self.timeout;
        let mut head = [0u8; HEADER_LEN];
        within(timeout, self.tls.read_exact(&mut head)).await?;
        let header = FrameHeader::parse(head).map_err(WireError::from)?;
        let length = header.length as usize;
        if header.kind != FrameType::Data {
            let mut payload = vec![0u8; length];
            within(timeout, self.tls.read_exact(&mut payload)).await?;
            let raw = RawFrame {
                kind: header.kind,
                payload,
            };
            return Err(refusal(req, &raw).unwrap_or_else(|| Self::unexpected(what)));
        }
        let mut prefix = [0u8; DATA_PREFIX_LEN];
        if length <= DATA_PREFIX_LEN {
            return Err(not_asked_for());
        }
        within(timeout, self.tls.read_exact(&mut prefix)).await?;
        let (id, at) = prefix.split_at(4);
        let id = u32::from_be_bytes(id.try_into().expect("4 bytes"));
        let at = u64::from_be_bytes(at.try_into().expect("8 bytes"));
        if id != req {
            return Err(not_asked_for());
        }
        Ok((at, length - DATA_PREFIX_LEN))
    }

    fn unexpected(what: &str) -> ObjectError {
        ObjectError::Broken(format!("unexpected answer from the server to {what}"))
    }

    /// Ends the session politely.
    pub async fn bye(mut self) {
        let _ = write_frame(&mut self.tls, &Frame::Bye).await;
        let _ = self.tls.shutdown().await;
    }

    /// Starts a create-only write of `name`; then [`Self::put_bytes`] and
    /// [`Self::commit`]. Returns the request id.
    ///
    /// # Errors
    /// The connection.
    pub async fn create(&mut self, name: &str) -> Result<u32, ObjectError> {
        fits(name)?;
        let req = self.req();
        write_frame(&mut self.tls, &Frame::ObjCreate { req, name }).await?;
        Ok(req)
    }

    /// Sends `bytes` of the object of `req` at `offset` (in order), in
    /// frames of at most 256 KiB, handed to rustls in one vectored write
    /// (headers and bytes as they are, no copy into a frame first): up to
    /// a MiB leaves in one `writev` of whole records.
    ///
    /// # Errors
    /// The connection.
    pub async fn put_bytes(
        &mut self,
        req: u32,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), ObjectError> {
        Ok(write_data(&mut self.tls, req, offset, bytes).await?)
    }

    /// Commits the object of `req`, which has `size` bytes.
    ///
    /// # Errors
    /// [`ObjectError::Refused`] with [`ErrorCode::ObjectExists`] when the
    /// name is taken, or another refusal; the connection.
    pub async fn commit(&mut self, req: u32, size: u64) -> Result<(), ObjectError> {
        write_frame(&mut self.tls, &Frame::ObjCommit { req, size }).await?;
        self.done(req, "a commit").await
    }

    async fn done(&mut self, req: u32, what: &str) -> Result<(), ObjectError> {
        let raw = self.answer(req).await?;
        match raw.parse() {
            Ok(Frame::ObjDone { req: r }) if r == req => Ok(()),
            _ => Err(Self::unexpected(what)),
        }
    }

    /// The size of `name`, or `None` when it does not exist.
    ///
    /// # Errors
    /// Another refusal; the connection.
    pub async fn size(&mut self, name: &str) -> Result<Option<u64>, ObjectError> {
        fits(name)?;
        let req = self.req();
        write_frame(&mut self.tls, &Frame::ObjStat { req, name }).await?;
        match self.answer_size(req).await {
            Ok(size) => Ok(Some(size)),
            Err(ObjectError::Refused {
                code: ErrorCode::NoSuchObject,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn answer_size(&mut self, req: u32) -> Result<u64, ObjectError> {
        let raw = self.answer(req).await?;
        match raw.parse() {
            Ok(Frame::ObjSize { req: r, size }) if r == req => Ok(size),
            _ => Err(Self::unexpected("a size request")),
        }
    }

    /// Reads `buf.len()` bytes of `name` from `offset`. Returns the
    /// object's size; when the range is not inside it, nothing is read.
    ///
    /// # Errors
    /// [`ErrorCode::NoSuchObject`] or another refusal; the connection.
    pub async fn read(
        &mut self,
        name: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<u64, ObjectError> {
        let length = buf.len() as u64;
        let (req, size) = self.ask_range(name, offset, length).await?;
        if inside(offset, length, size) {
            self.receive(req, offset, buf).await?;
        }
        Ok(size)
    }

    /// Asks for `length` bytes of `name` from `offset`: returns the request
    /// id and the object's size. When the range is inside the object, its
    /// bytes follow in `Data` frames, to be taken in order (an
    /// [`ObjectRange`]); otherwise nothing follows.
    ///
    /// # Errors
    /// [`ErrorCode::NoSuchObject`] or another refusal; the connection.
    pub async fn ask_range(
        &mut self,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<(u32, u64), ObjectError> {
        fits(name)?;
        let req = self.req();
        let frame = Frame::ObjRead {
            req,
            offset,
            length,
            name,
        };
        write_frame(&mut self.tls, &frame).await?;
        let size = self.answer_size(req).await?;
        Ok((req, size))
    }

    /// The whole of `name` when it has at most `limit` bytes: `Ok(Err(size))`
    /// when it has more (nothing read).
    ///
    /// # Errors
    /// [`ErrorCode::NoSuchObject`] or another refusal; the connection.
    pub async fn get(
        &mut self,
        name: &str,
        limit: u64,
    ) -> Result<Result<Vec<u8>, u64>, ObjectError> {
        fits(name)?;
        let req = self.req();
        write_frame(&mut self.tls, &Frame::ObjGet { req, limit, name }).await?;
        let size = self.answer_size(req).await?;
        if size > limit {
            return Ok(Err(size));
        }
        let len = usize::try_from(size)
            .map_err(|_| ObjectError::Broken(format!("{name}: {size} bytes do not fit")))?;
        let mut data = vec![0u8; len];
        self.receive(req, 0, &mut data).await?;
        Ok(Ok(data))
    }

    /// Fills `buf` from the `Data` frames of `req`, which must come in
    /// order from `offset`.
    async fn receive(&mut self, req: u32, offset: u64, buf: &mut [u8]) -> Result<(), ObjectError> {
        let mut got = 0usize;
        while got < buf.len() {
            let (at, len) = self.data_head(req, "a read").await?;
            if at != offset + got as u64 || len > buf.len() - got {
                return Err(not_asked_for());
            }
            within(self.timeout, self.tls.read_exact(&mut buf[got..got + len])).await?;
            got += len;
        }
        Ok(())
    }

    /// Calls `each(size, name)` for every object under `prefix`, page by
    /// page as they arrive.
    ///
    /// # Errors
    /// A refusal (then the connection is still usable); the connection;
    /// the first error `each` returns (then it is not).
    pub async fn list<E: From<ObjectError>>(
        &mut self,
        prefix: &str,
        each: &mut dyn FnMut(u64, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        fits(prefix)?;
        let req = self.req();
        write_frame(&mut self.tls, &Frame::ObjList { req, prefix })
            .await
            .map_err(ObjectError::from)?;
        loop {
            let raw = self.answer(req).await?;
            let Ok(Frame::ObjNames {
                req: r,
                last,
                entries,
            }) = raw.parse()
            else {
                return Err(Self::unexpected("a listing").into());
            };
            if r != req {
                return Err(Self::unexpected("a listing").into());
            }
            for (size, name) in entries {
                each(size, name)?;
            }
            if last {
                return Ok(());
            }
        }
    }

    /// Deletes `name`.
    ///
    /// # Errors
    /// [`ErrorCode::AppendOnly`] from a server that deletes nothing, or
    /// another refusal; the connection.
    pub async fn delete(&mut self, name: &str) -> Result<(), ObjectError> {
        fits(name)?;
        let req = self.req();
        write_frame(&mut self.tls, &Frame::ObjDelete { req, name }).await?;
        self.done(req, "a delete").await
    }

    /// Whether the server keeps its store append-only.
    ///
    /// # Errors
    /// The connection, or a server that hosts no store.
    pub async fn append_only(&mut self) -> Result<bool, ObjectError> {
        let req = self.req();
        write_frame(&mut self.tls, &Frame::ObjInfo { req }).await?;
        let raw = self.answer(req).await?;
        match raw.parse() {
            Ok(Frame::ObjHosting {
                req: r,
                append_only,
            }) if r == req => Ok(append_only),
            _ => Err(Self::unexpected("a hosting request")),
        }
    }
}

/// Whether `length` bytes from `offset` lie inside an object of `size` bytes.
fn inside(offset: u64, length: u64, size: u64) -> bool {
    offset.checked_add(length).is_some_and(|end| end <= size)
}

/// The error an `Error` frame is: a refusal of `req` (the connection is
/// still usable), or, for another request, a broken connection. `None`
/// for any other frame.
fn refusal(req: u32, raw: &RawFrame) -> Option<ObjectError> {
    match raw.parse() {
        Ok(Frame::Error {
            code,
            file_id,
            message,
        }) if file_id == req => Some(ObjectError::Refused { code, message }),
        Ok(Frame::Error { code, message, .. }) => {
            Some(ObjectError::Broken(format!("{code}: {message}")))
        }
        _ => None,
    }
}

fn not_asked_for() -> ObjectError {
    ObjectError::Broken("the server sent bytes that were not asked for".into())
}

/// Runs one read of the connection within `timeout`.
async fn within<T>(
    timeout: Duration,
    read: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, WireError> {
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(WireError::Truncated),
        Ok(Err(e)) => Err(WireError::Io(e)),
        Err(_) => Err(WireError::Timeout(timeout)),
    }
}

/// The bytes of one range of an object, asked for with
/// [`ObjectConnection::ask_range`] and taken in order, piece by piece,
/// straight from the TLS session into the caller's buffers: the server
/// streams the whole range at once (one request, no round trip per
/// piece), and TCP holds back what the caller has not taken yet.
pub struct ObjectRange {
    conn: ObjectConnection,
    req: u32,
    /// Offset of the next byte the server sends.
    next: u64,
    /// Offset of the range's end.
    end: u64,
    /// Bytes of the current `Data` frame not taken yet.
    left: usize,
}

impl ObjectRange {
    /// The bytes of request `req` on `conn`, which asked for `length`
    /// bytes from `offset` and was told they are inside the object.
    pub fn new(conn: ObjectConnection, req: u32, offset: u64, length: u64) -> ObjectRange {
        ObjectRange {
            conn,
            req,
            next: offset,
            end: offset.saturating_add(length),
            left: 0,
        }
    }

    /// Appends the `len` bytes at `at` to `out`; the bytes between the
    /// last ones taken and `at` are skipped.
    ///
    /// # Errors
    /// A range outside what is left of the request (a caller bug), a
    /// refusal (the object could not be read), the connection; the range
    /// cannot be read on after an error.
    pub async fn read_into(
        &mut self,
        at: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), ObjectError> {
        let fits = at >= self.next && at.checked_add(len as u64).is_some_and(|e| e <= self.end);
        if !fits {
            return Err(ObjectError::Broken(format!(
                "bytes {at}+{len} are not what is left of the range asked for"
            )));
        }
        self.skip(at - self.next).await?;
        out.reserve(len);
        let target = out.len() + len;
        while out.len() < target {
            self.frame().await?;
            let take = (target - out.len()).min(self.left);
            let stop = out.len() + take;
            while out.len() < stop {
                let want = stop - out.len();
                let mut rest = (&mut *out).limit(want);
                let got = within(self.conn.timeout, self.conn.tls.read_buf(&mut rest)).await?;
                if got == 0 {
                    return Err(WireError::Truncated.into());
                }
            }
            self.taken(take);
        }
        Ok(())
    }

    /// Skips `n` bytes of the range, taken from the TLS session's own
    /// buffer (nothing copied).
    async fn skip(&mut self, mut n: u64) -> Result<(), ObjectError> {
        while n > 0 {
            self.frame().await?;
            let take = n.min(self.left as u64) as usize;
            let mut left = take;
            while left > 0 {
                let ready = within(self.conn.timeout, self.conn.tls.fill_buf()).await?;
                if ready.is_empty() {
                    return Err(WireError::Truncated.into());
                }
                let used = ready.len().min(left);
                self.conn.tls.consume(used);
                left -= used;
            }
            self.taken(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads the next frame's head when the current one is taken.
    async fn frame(&mut self) -> Result<(), ObjectError> {
        if self.left > 0 {
            return Ok(());
        }
        let (at, len) = self.conn.data_head(self.req, "a read").await?;
        if at != self.next || len as u64 > self.end - self.next {
            return Err(not_asked_for());
        }
        self.left = len;
        Ok(())
    }

    fn taken(&mut self, n: usize) {
        self.left -= n;
        self.next += n as u64;
    }

    /// The connection, for the next request, once every byte of the range
    /// was taken; `None` before (the rest would still be on its way: the
    /// connection is closed with the range).
    pub fn finish(self) -> Option<ObjectConnection> {
        (self.next == self.end).then_some(self.conn)
    }
}
