//! The store's [`Backend`] on an S3-compatible bucket.
//!
//! Objects are the store's names under the location's prefix. A writer
//! buffers its object and uploads it at [`ObjectWriter::commit`], which
//! returns only once the server has acknowledged the whole object: the
//! store's "data before manifest before registry" order therefore holds on
//! S3 as on a local disk. Objects larger than [`crate::MULTIPART_THRESHOLD`] start
//! a multipart upload as soon as they pass it, and go up in
//! [`PART_SIZE`] parts, several at once, while the store keeps writing.
//!
//! Create-only writes: with a server that honours `If-None-Match: *`
//! (probed at `store init` and recorded), a single-request upload is
//! create-only on the server. Without it, and for multipart uploads (S3 has
//! no create-only multipart completion that `object_store` exposes), the
//! writer checks that the name is free first; that check is not atomic, and
//! the store does not rely on it: every pack and manifest has a fresh
//! random 128-bit name, so two writers never pick the same one, and the
//! only fixed name, `config`, is written once by `store init`.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cryptstream_store::{
    check_object_name, Backend, BackendError, ObjectMeta, ObjectWriter, SpanRead,
};

use crate::{Bounded, Multipart, S3Client, S3Error, PART_SIZE};

/// Whether the server makes create-only writes atomic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// `If-None-Match: *` is honoured: a second create of a key is refused
    /// by the server itself.
    Conditional,
    /// The server ignores conditional headers: the store relies on unique
    /// object names (a check before the write catches mistakes, not races).
    UniqueNames,
}

impl WriteMode {
    /// How the mode is named in messages and in `store stat`.
    pub fn describe(self) -> &'static str {
        match self {
            WriteMode::Conditional => "conditional writes (the server refuses a second create)",
            WriteMode::UniqueNames => {
                "unique names (the server ignores If-None-Match; every object has a fresh random name)"
            }
        }
    }
}

/// A bucket (and prefix) holding a store.
pub struct S3Backend {
    client: Arc<S3Client>,
    mode: WriteMode,
}

impl S3Backend {
    /// The backend over `client`, writing in `mode`.
    pub fn new(client: S3Client, mode: WriteMode) -> Self {
        S3Backend {
            client: Arc::new(client),
            mode,
        }
    }

    /// A second backend over the same `client` (its connections and
    /// request counts), writing in `mode`: what a store's leases are
    /// written through while the store holds the first.
    pub fn sharing(client: Arc<S3Client>, mode: WriteMode) -> Self {
        S3Backend { client, mode }
    }

    /// Probes the server: a second create-only PUT of a fresh sentinel key
    /// must be refused for [`WriteMode::Conditional`].
    ///
    /// # Errors
    /// The server cannot be reached, or the bucket does not exist.
    pub fn probe(client: &S3Client) -> Result<WriteMode, S3Error> {
        let sentinel = format!("probe/{}", crate::random_hex());
        Ok(if client.probe_conditional_writes(&sentinel)? {
            WriteMode::Conditional
        } else {
            WriteMode::UniqueNames
        })
    }

    /// The write mode in use.
    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// The client (request counts).
    pub fn client(&self) -> &S3Client {
        &self.client
    }

    /// The client, shared (for leases).
    pub fn shared_client(&self) -> Arc<S3Client> {
        Arc::clone(&self.client)
    }
}

/// Maps an S3 failure onto the store's error for `name`.
fn backend_error(name: &str, error: S3Error) -> BackendError {
    match error {
        S3Error::AlreadyExists { .. } => BackendError::AlreadyExists(name.to_owned()),
        other => BackendError::Io {
            name: name.to_owned(),
            source: io::Error::other(other.to_string()),
        },
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.client.location().to_string()
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>, BackendError> {
        check_object_name(name)?;
        Ok(Box::new(S3Writer {
            client: Arc::clone(&self.client),
            mode: self.mode,
            name: name.to_owned(),
            buffer: BytesMut::new(),
            multipart: None,
            written: 0,
        }))
    }

    fn get(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackendError> {
        check_object_name(name)?;
        match self.client.get_bounded(name, limit) {
            Ok(Bounded::Found(bytes)) => Ok(bytes.to_vec()),
            Ok(Bounded::Missing) => Err(BackendError::NotFound(name.to_owned())),
            Ok(Bounded::TooLarge(size)) => Err(BackendError::TooLarge {
                name: name.to_owned(),
                size,
                limit,
            }),
            Err(e) => Err(backend_error(name, e)),
        }
    }

    fn get_range(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        check_object_name(name)?;
        let end = offset + buf.len() as u64;
        match self.client.get_range(name, offset..end) {
            Ok(bytes) => {
                buf.copy_from_slice(&bytes);
                Ok(())
            }
            Err(e) => {
                // Tell a missing object and a short one apart, as the local
                // backend does; this costs a request only on failure.
                match self.client.head(name) {
                    Ok(None) => Err(BackendError::NotFound(name.to_owned())),
                    Ok(Some(size)) if size < end => Err(BackendError::ShortObject {
                        name: name.to_owned(),
                        offset,
                        len: buf.len() as u64,
                        size,
                    }),
                    _ => Err(backend_error(name, e)),
                }
            }
        }
    }

    fn open_span<'a>(
        &'a self,
        name: &str,
        start: u64,
        len: u64,
    ) -> Result<Box<dyn SpanRead + 'a>, BackendError> {
        check_object_name(name)?;
        let end = start.saturating_add(len);
        let stream = self
            .client
            .open_range(name, start..end)
            .map_err(|e| backend_error(name, e))?;
        Ok(Box::new(SpanStream(stream)))
    }

    fn read_streams(&self) -> usize {
        // As many reads as requests may be in flight (`--connections`).
        self.client.connections()
    }

    fn write_streams(&self) -> usize {
        // A pack upload per connection.
        self.client.connections()
    }

    fn size(&self, name: &str) -> Result<Option<u64>, BackendError> {
        check_object_name(name)?;
        self.client.head(name).map_err(|e| backend_error(name, e))
    }

    fn list(
        &self,
        prefix: &str,
        each: &mut dyn FnMut(ObjectMeta) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let listed = self
            .client
            .list(prefix)
            .map_err(|e| backend_error(prefix, e))?;
        for item in listed {
            // Only the store's own objects: the probe's sentinels and
            // anything hidden are not part of it.
            if item.key.starts_with(prefix) && check_object_name(&item.key).is_ok() {
                each(ObjectMeta {
                    name: item.key,
                    size: item.size,
                })?;
            }
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        check_object_name(name)?;
        self.client.delete(name).map_err(|e| backend_error(name, e))
    }
}

/// [`Backend::open_span`] on S3: one GET's body.
struct SpanStream<'a>(crate::RangeStream<'a>);

impl SpanRead for SpanStream<'_> {
    fn read_into(&mut self, at: u64, len: usize, out: &mut Vec<u8>) -> Result<(), BackendError> {
        let key = self.0.key().to_owned();
        self.0
            .read_into(at, len, out)
            .map_err(|e| backend_error(&key, e))
    }
}

/// An object on its way up.
struct S3Writer {
    client: Arc<S3Client>,
    mode: WriteMode,
    name: String,
    buffer: BytesMut,
    /// Started once the object passes [`crate::multipart_threshold`].
    multipart: Option<Multipart>,
    written: u64,
}

impl S3Writer {
    fn ensure_free(&self) -> Result<(), BackendError> {
        match self.client.head(&self.name) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(BackendError::AlreadyExists(self.name.clone())),
            Err(e) => Err(backend_error(&self.name, e)),
        }
    }

    /// Sends every whole part in the buffer.
    fn send_parts(&mut self) -> io::Result<()> {
        let multipart = self.multipart.as_mut().expect("multipart started");
        while self.buffer.len() >= PART_SIZE {
            let part: Bytes = self.buffer.split_to(PART_SIZE).freeze();
            self.client
                .multipart_put(multipart, part)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        self.written += buf.len() as u64;
        if self.multipart.is_none() && self.buffer.len() > crate::multipart_threshold() {
            self.ensure_free()
                .map_err(|e| io::Error::other(e.to_string()))?;
            let started = self
                .client
                .multipart_start(&self.name)
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.multipart = Some(started);
        }
        if self.multipart.is_some() {
            self.send_parts()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>) -> Result<(), BackendError> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        if let Some(multipart) = self.multipart.take() {
            return self
                .client
                .multipart_finish(multipart, rest)
                .map_err(|e| backend_error(&self.name, e));
        }
        match self.mode {
            WriteMode::Conditional => match self.client.put_if_absent(&self.name, rest) {
                Ok(true) => Ok(()),
                Ok(false) => Err(BackendError::AlreadyExists(self.name.clone())),
                Err(e) => Err(backend_error(&self.name, e)),
            },
            WriteMode::UniqueNames => {
                self.ensure_free()?;
                self.client
                    .put(&self.name, rest)
                    .map_err(|e| backend_error(&self.name, e))
            }
        }
    }
}
