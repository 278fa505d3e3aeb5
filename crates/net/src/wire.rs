//! Frames over an async byte stream (the TLS session): bounded reads with
//! a deadline, and writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{Frame, FrameError, FrameHeader, FrameType, HEADER_LEN};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection between two frames.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Nothing (or not enough) arrived in time.
    #[error("nothing received for {0:?}")]
    Timeout(Duration),
    /// Not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A frame as read: its type and the raw payload (parse it with
/// [`Frame::parse`]; `Data` payloads are moved to a writer thread as is).
pub struct RawFrame {
    /// The type, already checked.
    pub kind: FrameType,
    /// The payload, at most the type's limit.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Decodes the payload.
    ///
    /// # Errors
    /// [`FrameError`] when it does not have its type's layout.
    pub fn parse(&self) -> Result<Frame<'_>, FrameError> {
        Frame::parse(self.kind, &self.payload)
    }
}

/// Reads one frame; the whole frame must arrive within `deadline`. The
/// header is checked before the payload is read, so at most the type's
/// limit is ever allocated.
///
/// # Errors
/// [`WireError`]: `Closed` for a clean end between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    deadline: Duration,
) -> Result<RawFrame, WireError> {
    tokio::time::timeout(deadline, read_frame_now(reader))
        .await
        .map_err(|_| WireError::Timeout(deadline))?
}

/// [`read_frame`], then, for a whole `Data` frame, room for its payload
/// from `budget` (permits of one KiB) if the budget has it, without
/// waiting. The caller may write a frame that got a permit in the
/// background while it reads the next one; a frame without one it writes
/// before reading on. So each session holds at most one frame of its own
/// (the one it reads) plus, while the shared budget has room, the ones
/// being written: a header without its payload reserves nothing, and no
/// session ever waits for room that others hold. A `Data` payload is read
/// into a buffer from `pool` (give it back once written).
///
/// # Errors
/// As [`read_frame`].
pub async fn read_frame_budgeted<R: AsyncRead + Unpin>(
    reader: &mut R,
    deadline: Duration,
    budget: &Arc<Semaphore>,
    pool: &PayloadPool,
) -> Result<(RawFrame, Option<OwnedSemaphorePermit>), WireError> {
    let frame = tokio::time::timeout(deadline, async {
        let header = read_header(reader).await?;
        let buffer = if header.kind == FrameType::Data {
            pool.take()
        } else {
            Vec::new()
        };
        read_payload(reader, header, buffer).await
    })
    .await
    .map_err(|_| WireError::Timeout(deadline))??;
    let permit = if frame.kind == FrameType::Data {
        let kib = u32::try_from(frame.payload.len().div_ceil(1024).max(1))
            .expect("a data frame is at most 268 KiB");
        budget.clone().try_acquire_many_owned(kib).ok()
    } else {
        None
    };
    Ok((frame, permit))
}

/// `Data` payload buffers that were written and can be read into again,
/// at most [`PayloadPool::new`]'s count of them. A buffer that goes back
/// to the allocator is returned to the kernel and faulted in afresh (a
/// quarter of a MiB of page faults and zeroing per frame); one that stays
/// here does not.
pub struct PayloadPool {
    free: Mutex<Vec<Vec<u8>>>,
    most: usize,
}

impl PayloadPool {
    /// A pool that keeps at most `most` buffers.
    pub fn new(most: usize) -> PayloadPool {
        PayloadPool {
            free: Mutex::new(Vec::new()),
            most,
        }
    }

    /// A buffer to read into: an empty one from the pool, or a new one.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .expect("the lock is never poisoned")
            .pop()
            .unwrap_or_default()
    }

    /// Gives `buffer` back (dropped when the pool is full).
    pub fn give(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        let mut free = self.free.lock().expect("the lock is never poisoned");
        if free.len() < self.most {
            free.push(buffer);
        }
    }
}

async fn read_frame_now<R: AsyncRead + Unpin>(reader: &mut R) -> Result<RawFrame, WireError> {
    let header = read_header(reader).await?;
    read_payload(reader, header, Vec::new()).await
}

async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<FrameHeader, WireError> {
    let mut head = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match reader.read(&mut head[got..]).await? {
            0 if got == 0 => return Err(WireError::Closed),
            0 => return Err(WireError::Truncated),
            n => got += n,
        }
    }
    Ok(FrameHeader::parse(head)?)
}

/// Reads the payload into `payload` (empty; its capacity is reused).
async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    header: FrameHeader,
    mut payload: Vec<u8>,
) -> Result<RawFrame, WireError> {
    // Read into the spare capacity: a payload is never zeroed first.
    let length = header.length as usize;
    payload.clear();
    payload.reserve_exact(length);
    while payload.len() < length {
        let left = length - payload.len();
        let mut rest = (&mut payload).limit(left);
        if reader.read_buf(&mut rest).await? == 0 {
            return Err(WireError::Truncated);
        }
    }
    Ok(RawFrame {
        kind: header.kind,
        payload,
    })
}

/// Writes one frame and flushes it.
///
/// # Errors
/// Transport errors.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame<'_>,
) -> Result<(), WireError> {
    let bytes = frame.to_bytes();
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}
