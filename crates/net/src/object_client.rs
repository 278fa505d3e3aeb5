//! The client side of a store server's object frames: one authenticated
//! connection ([`ObjectConnection`]) that asks one request at a time.
//! Callers (the remote crate's backend) keep several for parallel
//! requests and run them on their own runtime.
//!
//! Trust is settled exactly as `send` settles it: the certificate is
//! pinned (`--server-fingerprint`) or looked up in the known-hosts file;
//! a server seen for the first time is recorded only after it proved the
//! token, and every later connection must present the same certificate.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::auth::Token;
use crate::client::{write_all_vectored, SEND_BUFFER};
use crate::frame::{data_prefix, ErrorCode, Frame, MAX_DATA_PAYLOAD, MAX_NAME_LEN};
use crate::tls::{client_config, record_known_host, Fingerprint, PinnedVerifier, ServerTrust};
use crate::wire::{read_frame, write_frame, WireError};
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

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

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
    async fn answer(&mut self, req: u32) -> Result<crate::wire::RawFrame, ObjectError> {
        let raw = read_frame(&mut self.tls, self.timeout).await?;
        if let Ok(Frame::Error {
            code,
            file_id,
            message,
        }) = raw.parse()
        {
            if file_id == req {
                return Err(ObjectError::Refused { code, message });
            }
            return Err(ObjectError::Broken(format!("{code}: {message}")));
        }
        Ok(raw)
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
        let pieces = bytes.chunks(MAX_DATA_PAYLOAD as usize);
        let prefixes: Vec<_> = pieces
            .clone()
            .scan(offset, |at, piece| {
                let prefix = data_prefix(req, *at, piece.len());
                *at += piece.len() as u64;
                Some(prefix)
            })
            .collect();
        let mut slices: Vec<io::IoSlice<'_>> = prefixes
            .iter()
            .zip(pieces)
            .flat_map(|(prefix, piece)| [io::IoSlice::new(prefix), io::IoSlice::new(piece)])
            .collect();
        write_all_vectored(&mut self.tls, &mut slices).await?;
        self.tls.flush().await.map_err(WireError::Io)?;
        Ok(())
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
        fits(name)?;
        let req = self.req();
        let length = buf.len() as u64;
        let frame = Frame::ObjRead {
            req,
            offset,
            length,
            name,
        };
        write_frame(&mut self.tls, &frame).await?;
        let size = self.answer_size(req).await?;
        if offset.checked_add(length).is_some_and(|end| end <= size) {
            self.receive(req, offset, buf).await?;
        }
        Ok(size)
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
            let raw = self.answer(req).await?;
            let Ok(Frame::Data {
                file_id,
                offset: at,
                bytes,
            }) = raw.parse()
            else {
                return Err(Self::unexpected("a read"));
            };
            if file_id != req
                || at != offset + got as u64
                || bytes.len() > buf.len() - got
                || bytes.is_empty()
            {
                return Err(ObjectError::Broken(
                    "the server sent bytes that were not asked for".into(),
                ));
            }
            buf[got..got + bytes.len()].copy_from_slice(bytes);
            got += bytes.len();
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
