//! S3-compatible object storage for the store.
//!
//! The store and the engine are synchronous; this crate is where async
//! lives. [`S3Client`] owns a small tokio runtime and the `object_store`
//! client, and offers blocking calls that any number of the store's worker
//! threads may make at once: `--connections N` bounds how many requests are
//! in flight together, whatever the number of callers.
//!
//! Endpoint, region and credentials come from the standard AWS variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`), read by
//! `object_store` itself. Transient failures (connection refused or reset,
//! 5xx, timeouts) are retried with exponential backoff up to
//! [`Options::retry_timeout`]; what still fails comes back as one
//! [`S3Error`] naming the operation and the key.

#![deny(missing_docs)]

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod backend;
pub use backend::{S3Backend, WriteMode};

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
/// The size of each part of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 16 * 1024 * 1024;

/// A lower threshold set by a test (`test-knobs` builds only), so that a real put
/// of a few MiB goes up in parts; 0 when unset.
#[cfg(any(test, feature = "test-knobs"))]
static TEST_MULTIPART_THRESHOLD: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Makes objects larger than `bytes` go up in parts (test builds only; the
/// binary sets it from `CRYPTSTREAM_DEBUG_S3_MULTIPART_THRESHOLD`).
#[cfg(any(test, feature = "test-knobs"))]
pub fn set_multipart_threshold(bytes: usize) {
    TEST_MULTIPART_THRESHOLD.store(bytes, Ordering::Relaxed);
}

/// A retry budget set by a test (`test-knobs` builds only), in ms, that
/// replaces [`Options::retry_timeout`] so that a test can outlast it
/// without waiting a minute; 0 when unset.
#[cfg(any(test, feature = "test-knobs"))]
static TEST_RETRY_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Gives every request of every client made from now on at most `timeout`
/// of retries (test builds only; the binary sets it from
/// `CRYPTSTREAM_DEBUG_S3_RETRY_TIMEOUT_MS`).
#[cfg(any(test, feature = "test-knobs"))]
pub fn set_retry_timeout(timeout: Duration) {
    TEST_RETRY_TIMEOUT_MS.store(timeout.as_millis() as u64, Ordering::Relaxed);
}

/// The retry budget of a client made with `options`: theirs, unless a test
/// shortened it.
fn retry_timeout(options: &Options) -> Duration {
    #[cfg(any(test, feature = "test-knobs"))]
    {
        let ms = TEST_RETRY_TIMEOUT_MS.load(Ordering::Relaxed);
        if ms > 0 {
            return Duration::from_millis(ms);
        }
    }
    options.retry_timeout
}

/// Objects larger than this are uploaded in parts: [`MULTIPART_THRESHOLD`],
/// unless a test lowered it.
pub(crate) fn multipart_threshold() -> usize {
    #[cfg(any(test, feature = "test-knobs"))]
    {
        let test = TEST_MULTIPART_THRESHOLD.load(Ordering::Relaxed);
        if test > 0 {
            return test;
        }
    }
    MULTIPART_THRESHOLD
}

/// Errors of the object store, one line each.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The `s3://` address or the environment is not usable.
    #[error("{0}")]
    Config(String),
    /// A create-only write found the key already there.
    #[error("{key}: already exists in the bucket")]
    AlreadyExists {
        /// The key, relative to the location's prefix.
        key: String,
    },
    /// The request failed after its retries.
    #[error("{op} {key}: {reason}")]
    Request {
        /// The operation (`put`, `get`, `list`, ...).
        op: &'static str,
        /// The key it was for.
        key: String,
        /// The last failure, as the client reported it.
        reason: String,
    },
}

/// `s3://BUCKET/PREFIX`: where a store lives in object storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// Without leading or trailing slashes; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Whether `text` names an object-storage location rather than a
    /// directory.
    pub fn is_s3(text: &str) -> bool {
        text.starts_with("s3://")
    }

    /// Parses `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    pub fn parse(text: &str) -> Result<Self, S3Error> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| S3Error::Config(format!("{text}: not an s3:// address")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(S3Error::Config(format!(
                "{text}: bucket names are 3 to 63 lowercase letters, digits, '-' or '.'"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|part| part == "." || part == ".." || (part.is_empty() && !prefix.is_empty()))
            || prefix.bytes().any(|b| b.is_ascii_control())
        {
            return Err(S3Error::Config(format!(
                "{text}: the prefix must be plain path segments"
            )));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// How the client talks to the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Requests in flight at once (`--connections`).
    pub connections: usize,
    /// Give up on a request that still fails this long after it started.
    pub retry_timeout: Duration,
    /// Retries of one request at most.
    pub max_retries: usize,
    /// Connect timeout of each attempt.
    pub connect_timeout: Duration,
    /// Whole-request timeout of each attempt.
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 8,
            retry_timeout: Duration::from_secs(60),
            max_retries: 15,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// Requests made so far, by kind (each retry counts again in the server's
/// figures, not here: these are the requests the store asked for).
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Single-request uploads.
    pub put: AtomicU64,
    /// Whole and ranged reads.
    pub get: AtomicU64,
    /// Existence and size checks.
    pub head: AtomicU64,
    /// Listing pages.
    pub list: AtomicU64,
    /// Deletions.
    pub delete: AtomicU64,
    /// Multipart uploads: create + parts + complete.
    pub multipart: AtomicU64,
}

impl RequestCounts {
    /// Every request of every kind.
    pub fn total(&self) -> u64 {
        [
            &self.put,
            &self.get,
            &self.head,
            &self.list,
            &self.delete,
            &self.multipart,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// What [`S3Client::get_bounded`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bounded {
    /// The object's bytes.
    Found(Bytes),
    /// No object of that name.
    Missing,
    /// An object of this many bytes, more than the limit; not read.
    TooLarge(u64),
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The key relative to the location's prefix.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A blocking client for one `s3://BUCKET/PREFIX`.
pub struct S3Client {
    runtime: tokio::runtime::Runtime,
    store: Arc<AmazonS3>,
    location: S3Location,
    permits: Arc<Semaphore>,
    connections: usize,
    counts: RequestCounts,
}

/// The body of one ranged GET, taken in order; made by
/// [`S3Client::open_range`].
pub struct RangeStream<'a> {
    client: &'a S3Client,
    key: String,
    body: BoxStream<'static, object_store::Result<Bytes>>,
    /// Bytes received and not yet taken; they start at `position`.
    pending: Bytes,
    /// Offset in the object of the next byte of the body.
    position: u64,
    /// Offset in the object where the range ends.
    end: u64,
    /// One of the client's connections, until the stream is dropped.
    _permit: OwnedSemaphorePermit,
}

impl RangeStream<'_> {
    /// The object read.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Appends to `out` the `len` bytes at offset `at` of the object,
    /// skipping those between the last bytes taken and `at`.
    ///
    /// # Errors
    /// `at` is behind the bytes already taken or the piece is past the
    /// range; the body fails or ends early.
    pub fn read_into(&mut self, at: u64, len: usize, out: &mut Vec<u8>) -> Result<(), S3Error> {
        let fail = |reason: String| S3Error::Request {
            op: "get",
            key: self.key.clone(),
            reason,
        };
        let want_end = at.saturating_add(len as u64);
        if at < self.position || want_end > self.end {
            return Err(fail(format!(
                "bytes {at}..{want_end} are not ahead in the range {}..{}",
                self.position, self.end
            )));
        }
        out.reserve(len);
        while self.position < want_end {
            if self.pending.is_empty() {
                match self.client.runtime.block_on(self.body.next()) {
                    Some(Ok(bytes)) => self.pending = bytes,
                    Some(Err(e)) => return Err(request_error("get", &self.key, e)),
                    None => {
                        return Err(fail(format!(
                            "the body ended at byte {} of {}",
                            self.position, self.end
                        )))
                    }
                }
                continue;
            }
            let skip = at
                .saturating_sub(self.position)
                .min(self.pending.len() as u64) as usize;
            let take = ((want_end - self.position) as usize - skip).min(self.pending.len() - skip);
            out.extend_from_slice(&self.pending[skip..skip + take]);
            let _ = self.pending.split_to(skip + take);
            self.position += (skip + take) as u64;
        }
        Ok(())
    }
}

/// A multipart upload in progress; dropped unfinished, it is aborted.
pub struct Multipart {
    key: String,
    writer: Option<WriteMultipart>,
    handle: tokio::runtime::Handle,
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _enter = self.handle.enter();
            // Best effort: the server drops the parts; an upload that cannot
            // be aborted now is left to the bucket's lifecycle rules.
            let _ = futures_util::FutureExt::now_or_never(writer.abort());
        }
    }
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// A client for `location`, configured from the AWS environment
    /// variables. Makes no request.
    pub fn new(location: S3Location, options: &Options) -> Result<Self, S3Error> {
        Self::with_config(location, options, &[])
    }

    /// As [`S3Client::new`], with settings that override the environment,
    /// as `(variable, value)` pairs named like the AWS variables
    /// (`AWS_ENDPOINT_URL`, ...).
    pub fn with_config(
        location: S3Location,
        options: &Options,
        overrides: &[(&str, &str)],
    ) -> Result<Self, S3Error> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(250),
                max_backoff: Duration::from_secs(8),
                base: 2.0,
            },
            max_retries: options.max_retries,
            retry_timeout: retry_timeout(options),
        };
        let client = ClientOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_pool_max_idle_per_host(options.connections.max(1));
        // Client options first: the AWS variables (AWS_ALLOW_HTTP among
        // them) are applied on top of them, then the overrides.
        let mut builder = AmazonS3Builder::new()
            .with_client_options(client)
            .with_retry(retry);
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(key, _)| key.starts_with("AWS_"))
            .collect();
        for (key, value) in &env {
            // Variables object_store does not know are not ours to refuse.
            if let Ok(parsed) = key.to_ascii_lowercase().parse() {
                builder = builder.with_config(parsed, value);
            }
        }
        for (key, value) in overrides {
            let parsed = key
                .to_ascii_lowercase()
                .parse()
                .map_err(|e| S3Error::Config(format!("{key}: {}", one_line(&e))))?;
            builder = builder.with_config(parsed, *value);
        }
        let store = builder
            .with_bucket_name(&location.bucket)
            .build()
            .map_err(|e| S3Error::Config(format!("{location}: {}", one_line(&e))))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cryptstream-s3")
            .enable_all()
            .build()
            .map_err(|e| S3Error::Config(format!("starting the S3 client: {e}")))?;
        Ok(S3Client {
            runtime,
            store: Arc::new(store),
            location,
            permits: Arc::new(Semaphore::new(options.connections.max(1))),
            connections: options.connections.max(1),
            counts: RequestCounts::default(),
        })
    }

    /// The location this client reads and writes.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// Requests made so far.
    pub fn requests(&self) -> &RequestCounts {
        &self.counts
    }

    /// Requests in flight at once at most.
    pub fn connections(&self) -> usize {
        self.connections
    }

    fn path(&self, key: &str) -> Result<ObjectPath, S3Error> {
        let full = if self.location.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.location.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| S3Error::Config(format!("{key}: {}", one_line(&e))))
    }

    /// Runs one request under a connection permit.
    fn call<T>(
        &self,
        fut: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, object_store::Error> {
        self.runtime.block_on(async {
            let _permit = self
                .permits
                .acquire()
                .await
                .expect("semaphore never closed");
            fut.await
        })
    }

    /// Stores `data` under `key`, replacing what was there; large objects go
    /// up in parts, several at once. Returns once the server has
    /// acknowledged the whole object.
    pub fn put(&self, key: &str, data: Bytes) -> Result<(), S3Error> {
        let path = self.path(key)?;
        if data.len() <= multipart_threshold() {
            self.counts.put.fetch_add(1, Ordering::Relaxed);
            return self
                .call(self.store.put(&path, PutPayload::from(data)))
                .map(drop)
                .map_err(|e| request_error("put", key, e));
        }
        let mut upload = self.multipart_start(key)?;
        let mut rest = data;
        while rest.len() > PART_SIZE {
            let part = rest.split_to(PART_SIZE);
            self.multipart_put(&mut upload, part)?;
        }
        self.multipart_finish(upload, rest)
    }

    /// Starts a multipart upload of `key`.
    pub fn multipart_start(&self, key: &str) -> Result<Multipart, S3Error> {
        let path = self.path(key)?;
        self.counts.multipart.fetch_add(1, Ordering::Relaxed);
        let upload = self
            .call(self.store.put_multipart(&path))
            .map_err(|e| request_error("put", key, e))?;
        Ok(Multipart {
            key: key.to_string(),
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            handle: self.runtime.handle().clone(),
        })
    }

    /// Queues one part; waits while [`Options::connections`] parts are
    /// already in flight, so memory stays bounded.
    pub fn multipart_put(&self, upload: &mut Multipart, part: Bytes) -> Result<(), S3Error> {
        self.counts.multipart.fetch_add(1, Ordering::Relaxed);
        let writer = upload.writer.as_mut().expect("upload not finished");
        let _enter = self.runtime.enter();
        self.runtime
            .block_on(writer.wait_for_capacity(self.connections))
            .map_err(|e| request_error("put", &upload.key, e))?;
        writer.put(part);
        Ok(())
    }

    /// Sends the last bytes and completes the upload; returns once the
    /// server has acknowledged the whole object. On failure the upload is
    /// aborted, so no parts are left behind.
    pub fn multipart_finish(&self, mut upload: Multipart, rest: Bytes) -> Result<(), S3Error> {
        let mut writer = upload.writer.take().expect("upload not finished");
        self.counts.multipart.fetch_add(2, Ordering::Relaxed);
        let _enter = self.runtime.enter();
        if !rest.is_empty() {
            writer.put(rest);
        }
        let key = upload.key.clone();
        match self.runtime.block_on(writer.finish()) {
            Ok(_) => Ok(()),
            Err(e) => Err(request_error("put", &key, e)),
        }
    }

    /// Stores `data` under `key` only if no object is there: `Ok(false)`
    /// when one already was. Atomic only on servers that honour
    /// `If-None-Match: *` (see [`S3Client::probe_conditional_writes`]).
    pub fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, S3Error> {
        let path = self.path(key)?;
        self.counts.put.fetch_add(1, Ordering::Relaxed);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.call(self.store.put_opts(&path, PutPayload::from(data), opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(request_error("put", key, e)),
        }
    }

    /// The whole object, or `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, S3Error> {
        let path = self.path(key)?;
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        let store = Arc::clone(&self.store);
        match self.call(async move { store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request_error("get", key, e)),
        }
    }

    /// The whole object if it has at most `limit` bytes: its size is asked
    /// first (HEAD), then only that many bytes are read (a ranged GET), so
    /// a larger object, even one replaced in between, is never read whole.
    pub fn get_bounded(&self, key: &str, limit: u64) -> Result<Bounded, S3Error> {
        let Some(size) = self.head(key)? else {
            return Ok(Bounded::Missing);
        };
        if size > limit {
            return Ok(Bounded::TooLarge(size));
        }
        if size == 0 {
            return Ok(Bounded::Found(Bytes::new()));
        }
        self.get_range(key, 0..size).map(Bounded::Found)
    }

    /// Bytes `range` of an object that must exist.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, S3Error> {
        let path = self.path(key)?;
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        let expected = range.end - range.start;
        let bytes = self
            .call(self.store.get_range(&path, range.clone()))
            .map_err(|e| request_error("get", key, e))?;
        if bytes.len() as u64 != expected {
            return Err(S3Error::Request {
                op: "get",
                key: key.to_string(),
                reason: format!(
                    "asked for bytes {}..{} and got {} bytes",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    /// Opens a read of bytes `range` of an object that must exist: one
    /// GET, whose body is taken in order with [`RangeStream::read_into`]
    /// (the server's bytes wait in the connection until they are taken).
    /// The stream holds one of the `--connections` until it is dropped.
    pub fn open_range(&self, key: &str, range: Range<u64>) -> Result<RangeStream<'_>, S3Error> {
        let path = self.path(key)?;
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        let (store, permits) = (Arc::clone(&self.store), Arc::clone(&self.permits));
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..GetOptions::default()
        };
        let (permit, got) = self.runtime.block_on(async move {
            let permit = permits
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            (permit, store.get_opts(&path, options).await)
        });
        let got = got.map_err(|e| request_error("get", key, e))?;
        if got.range != range {
            return Err(S3Error::Request {
                op: "get",
                key: key.to_string(),
                reason: format!(
                    "asked for bytes {}..{} and got bytes {}..{}",
                    range.start, range.end, got.range.start, got.range.end
                ),
            });
        }
        Ok(RangeStream {
            client: self,
            key: key.to_owned(),
            body: got.into_stream(),
            pending: Bytes::new(),
            position: range.start,
            end: range.end,
            _permit: permit,
        })
    }

    /// The size of an object, or `None` when there is none.
    pub fn head(&self, key: &str) -> Result<Option<u64>, S3Error> {
        let path = self.path(key)?;
        self.counts.head.fetch_add(1, Ordering::Relaxed);
        match self.call(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request_error("head", key, e)),
        }
    }

    /// Removes an object; removing one that is not there is not an error.
    pub fn delete(&self, key: &str) -> Result<(), S3Error> {
        let path = self.path(key)?;
        self.counts.delete.fetch_add(1, Ordering::Relaxed);
        match self.call(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(request_error("delete", key, e)),
        }
    }

    /// Every object whose key (relative to the location) starts with
    /// `prefix`, a directory-like prefix such as `packs/` or `""`.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let base = self.path(prefix.trim_end_matches('/'))?;
        let store = Arc::clone(&self.store);
        let strip = if self.location.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.location.prefix)
        };
        let listed = self.call(async move {
            let root = if base.as_ref().is_empty() {
                None
            } else {
                Some(base)
            };
            let mut stream = store.list(root.as_ref());
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                out.push((meta.location.to_string(), meta.size));
            }
            Ok(out)
        });
        let listed = listed.map_err(|e| request_error("list", prefix, e))?;
        // S3 returns at most 1000 keys per listing request.
        let pages = (listed.len() as u64 / 1000) + 1;
        self.counts.list.fetch_add(pages, Ordering::Relaxed);
        Ok(listed
            .into_iter()
            .filter_map(|(key, size)| {
                key.strip_prefix(strip.as_str()).map(|key| Listed {
                    key: key.to_string(),
                    size,
                })
            })
            .collect())
    }

    /// Whether the server refuses a second create-only write of one key:
    /// writes a fresh sentinel twice and removes it. Servers that ignore
    /// `If-None-Match` (Garage, some gateways) answer `false`, and the store
    /// then relies on unique object names alone.
    pub fn probe_conditional_writes(&self, sentinel: &str) -> Result<bool, S3Error> {
        let first = self.put_if_absent(sentinel, Bytes::from_static(b"probe 1"))?;
        if !first {
            self.delete(sentinel)?;
            return Err(S3Error::Request {
                op: "probe",
                key: sentinel.to_string(),
                reason: "a fresh sentinel key already existed".to_string(),
            });
        }
        let second = self.put_if_absent(sentinel, Bytes::from_static(b"probe 2"))?;
        let kept = self.get(sentinel)?;
        self.delete(sentinel)?;
        Ok(!second && kept.as_deref() == Some(b"probe 1".as_slice()))
    }
}

/// 128 random bits in hex, for object names nobody else will pick.
pub(crate) fn random_hex() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn request_error(op: &'static str, key: &str, error: object_store::Error) -> S3Error {
    S3Error::Request {
        op,
        key: key.to_string(),
        reason: one_line(&error),
    }
}

/// `object_store` errors nest their sources over several lines; a message
/// of ours is one line.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print() {
        let loc = S3Location::parse("s3://my-bucket/some/prefix/").unwrap();
        assert_eq!(loc.bucket, "my-bucket");
        assert_eq!(loc.prefix, "some/prefix");
        assert_eq!(loc.to_string(), "s3://my-bucket/some/prefix");
        let root = S3Location::parse("s3://bucket").unwrap();
        assert_eq!(root.prefix, "");
        assert_eq!(root.to_string(), "s3://bucket");
    }

    #[test]
    fn bad_locations_are_refused() {
        for bad in [
            "/tmp/store",
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket/a\n",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
