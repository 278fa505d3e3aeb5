//! STREAM as `Write` and `Read` adapters, like rage's `StreamWriter` and
//! `StreamReader`: they wrap any writer or reader (a file, a pipe, a
//! socket) and know nothing of headers, trees or threads. The caller writes
//! or consumes the header; the adapters handle the chunks after it.
//!
//! Both hold exactly one chunk (plus its tag, plus one byte of lookahead
//! when reading) in a buffer that is zeroized on drop.

use std::io::{self, Read, Write};

use zeroize::{Zeroize, Zeroizing};

use crate::{ChunkCipher, FormatError, TAG_LEN};

/// Encrypts everything written to it into chunks sealed with a
/// [`ChunkCipher`], written to the inner writer as each chunk fills.
///
/// A full chunk is sealed only when the next byte arrives, because until
/// then it may be the last one; [`SealingWriter::finish`] seals the last
/// chunk. Dropping the writer without `finish` leaves a truncated stream
/// that readers refuse.
pub struct SealingWriter<W: Write> {
    inner: W,
    cipher: ChunkCipher,
    /// One chunk of plaintext and room for its tag.
    buf: Zeroizing<Vec<u8>>,
    /// Plaintext bytes in `buf`.
    filled: usize,
    /// Index of the chunk in `buf`.
    index: u64,
    /// Plaintext bytes accepted so far.
    written: u64,
    /// An earlier write to the inner writer failed: the stream is broken.
    poisoned: bool,
}

/// The error of every call after a write to the inner writer has failed.
fn poisoned_error() -> io::Error {
    io::Error::other("an earlier write of this encrypted stream failed")
}

/// The error for a stream of 2^64 chunks (not reachable in practice).
fn too_many_chunks() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "stream longer than 2^64 chunks",
    )
}

impl<W: Write> SealingWriter<W> {
    /// Wraps `inner`, to which the caller has already written the header
    /// that `cipher` was made for.
    pub fn new(inner: W, cipher: ChunkCipher) -> SealingWriter<W> {
        let chunk = cipher.chunk_size() as usize;
        SealingWriter {
            inner,
            cipher,
            buf: Zeroizing::new(vec![0u8; chunk + TAG_LEN]),
            filled: 0,
            index: 0,
            written: 0,
            poisoned: false,
        }
    }

    /// Plaintext bytes per full chunk of the stream.
    pub fn chunk_size(&self) -> u32 {
        self.cipher.chunk_size()
    }

    /// Seals the chunk in the buffer and writes it out.
    fn emit(&mut self, last: bool) -> io::Result<()> {
        let len = self.filled + TAG_LEN;
        self.cipher
            .seal_in_place(self.index, last, &mut self.buf[..len]);
        // The buffer now holds ciphertext: if the write fails half way the
        // stream cannot be resumed.
        self.poisoned = true;
        self.inner.write_all(&self.buf[..len])?;
        self.poisoned = false;
        self.filled = 0;
        self.index = self.index.checked_add(1).ok_or_else(too_many_chunks)?;
        Ok(())
    }

    /// Seals the last chunk (an empty one for an empty stream, a full one
    /// when the length is a multiple of the chunk size), flushes, and
    /// returns the inner writer and the number of plaintext bytes written.
    ///
    /// # Errors
    /// The inner writer's errors, and an error when an earlier write failed.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        self.emit(true)?;
        self.inner.flush()?;
        Ok((self.inner, self.written))
    }
}

impl<W: Write> Write for SealingWriter<W> {
    /// Takes up to the rest of the current chunk; writes the previous chunk
    /// out first when it is full.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(poisoned_error());
        }
        if data.is_empty() {
            return Ok(0);
        }
        let chunk = self.cipher.chunk_size() as usize;
        if self.filled == chunk {
            self.emit(false)?;
        }
        let n = data.len().min(chunk - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        self.written += n as u64;
        Ok(n)
    }

    /// Flushes the inner writer. The chunk being filled stays buffered: it
    /// can only be sealed once it is known whether it is the last.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a stream of chunks sealed with a [`ChunkCipher`]: reads return
/// only plaintext of chunks that have authenticated.
///
/// Errors are `io::Error`s of kind `InvalidData` whose inner error
/// (`get_ref()` then `downcast_ref::<FormatError>()`) is the
/// [`FormatError`]: [`FormatError::ChunkAuth`] for a chunk that does not
/// authenticate, for a stream cut short and for a stream extended with a
/// lone tag; [`FormatError::LengthMismatch`] when the stream's length
/// differs from the expected one (both lengths then count the ciphertext
/// bytes after the header). Errors of the inner reader pass through
/// unchanged, and a read can be retried after one of them.
pub struct OpeningReader<R: Read> {
    inner: R,
    cipher: ChunkCipher,
    expected_len: Option<u64>,
    /// One chunk with its tag, and one byte of lookahead.
    buf: Zeroizing<Vec<u8>>,
    /// Bytes read into `buf`.
    have: usize,
    /// Plaintext in `buf[pos..end]` waiting to be returned.
    pos: usize,
    end: usize,
    /// `buf` holds an opened (non-last) chunk and its lookahead byte.
    opened: bool,
    /// Index of the next chunk to open.
    index: u64,
    /// Ciphertext bytes consumed from `inner` so far.
    consumed: u64,
    /// Plaintext bytes returned so far.
    returned: u64,
    state: ReaderState,
}

/// Where an [`OpeningReader`] stands.
enum ReaderState {
    /// More chunks to open.
    Reading,
    /// The last chunk has authenticated; its plaintext may still be pending.
    Done,
    /// The stream was refused; every later read returns this error again.
    Failed(FormatError),
}

/// Wraps a format error the way `Read` reports bad input.
fn invalid_data(error: FormatError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl<R: Read> OpeningReader<R> {
    /// Wraps `inner`, positioned just after the header that `cipher` was
    /// made for. With `expected_len`, the stream must hold exactly that many
    /// plaintext bytes.
    pub fn new(inner: R, cipher: ChunkCipher, expected_len: Option<u64>) -> OpeningReader<R> {
        let stride = cipher.chunk_size() as usize + TAG_LEN;
        OpeningReader {
            inner,
            cipher,
            expected_len,
            buf: Zeroizing::new(vec![0u8; stride + 1]),
            have: 0,
            pos: 0,
            end: 0,
            opened: false,
            index: 0,
            consumed: 0,
            returned: 0,
            state: ReaderState::Reading,
        }
    }

    /// Plaintext bytes returned by `read` so far.
    pub fn plaintext_len(&self) -> u64 {
        self.returned
    }

    /// Reads until the buffer holds a chunk and one byte of lookahead, or
    /// the input ends.
    fn fill(&mut self) -> io::Result<()> {
        while self.have < self.buf.len() {
            match self.inner.read(&mut self.buf[self.have..]) {
                Ok(0) => break,
                Ok(n) => self.have += n.min(self.buf.len() - self.have),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens the next chunk, leaving its plaintext in `buf[pos..end]`.
    fn open_next(&mut self) -> Result<(), FormatError> {
        let stride = self.buf.len() - 1;
        let index = self.index;
        let last = self.have <= stride;
        let len = self.have.min(stride);
        if len < TAG_LEN || (last && len == TAG_LEN && index > 0) {
            // Cut short, or a lone tag after full chunks: no writer makes
            // either, so refuse without trying the key.
            return Err(FormatError::ChunkAuth { index });
        }
        self.cipher
            .open_in_place(index, last, &mut self.buf[..len])?;
        self.consumed += len as u64;
        let plain = len - TAG_LEN;
        if last {
            if let Some(expected) = self.expected_len {
                let total = self.returned + plain as u64;
                if total != expected {
                    self.buf[..plain].zeroize();
                    return Err(FormatError::LengthMismatch {
                        expected: self.payload_len(expected),
                        actual: self.consumed,
                    });
                }
            }
            self.state = ReaderState::Done;
        } else {
            self.index = index
                .checked_add(1)
                .ok_or(FormatError::ChunkAuth { index })?;
            self.opened = true;
        }
        self.pos = 0;
        self.end = plain;
        Ok(())
    }

    /// Ciphertext bytes after the header of a stream of `plaintext` bytes
    /// (saturating: a length that large can never match).
    fn payload_len(&self, plaintext: u64) -> u64 {
        let chunk = u64::from(self.cipher.chunk_size());
        let chunks = plaintext.div_ceil(chunk).max(1);
        plaintext.saturating_add(chunks.saturating_mul(TAG_LEN as u64))
    }
}

impl<R: Read> Read for OpeningReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.end {
                let n = out.len().min(self.end - self.pos);
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                self.returned += n as u64;
                return Ok(n);
            }
            match &self.state {
                ReaderState::Done => return Ok(0),
                ReaderState::Failed(e) => return Err(invalid_data(e.clone())),
                ReaderState::Reading => {}
            }
            if self.opened {
                // The previous chunk is used up: keep its lookahead byte.
                let stride = self.buf.len() - 1;
                self.buf[0] = self.buf[stride];
                self.have = 1;
                self.opened = false;
            }
            self.fill()?;
            if let Err(e) = self.open_next() {
                self.state = ReaderState::Failed(e.clone());
                return Err(invalid_data(e));
            }
        }
    }
}
