//! Frames over an async byte stream (the TLS session): bounded reads with
//! a deadline, and writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{
    data_prefix, Frame, FrameError, FrameHeader, FrameType, HEADER_LEN, MAX_DATA_PAYLOAD,
};

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

/// Reads the frames of a session one by one, like [`read_frame`], but
/// keeps a frame it read in part across a cancelled [`FrameReader::next`]
/// (so a session can stop waiting for the next frame to do something
/// else, and read on later), and reads `Data` payloads into buffers from
/// a [`PayloadPool`].
#[derive(Default)]
pub struct FrameReader {
    head: [u8; HEADER_LEN],
    got: usize,
    /// The header of the frame being read, and its payload so far.
    partial: Option<(FrameHeader, Vec<u8>)>,
}

impl FrameReader {
    /// Reads the next frame, then, for a `Data` frame, room for its
    /// payload from `budget` (permits of one KiB) if the budget has it,
    /// without waiting. The caller may write a frame that got a permit in
    /// the background while it reads the next one; a frame without one it
    /// writes before reading on. So each session holds at most one frame
    /// of its own (the one it reads) plus, while the shared budget has
    /// room, the ones being written: a header without its payload
    /// reserves nothing, and no session ever waits for room that others
    /// hold. The header is checked before the payload is read, so at most
    /// the type's limit is ever allocated.
    ///
    /// Cancel safe: dropped before it returns, it keeps what it read for
    /// the next call.
    ///
    /// # Errors
    /// [`WireError`]: `Closed` for a clean end between frames.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        budget: &Arc<Semaphore>,
        pool: &PayloadPool,
    ) -> Result<(RawFrame, Option<OwnedSemaphorePermit>), WireError> {
        while self.got < HEADER_LEN {
            match reader.read(&mut self.head[self.got..]).await? {
                0 if self.got == 0 => return Err(WireError::Closed),
                0 => return Err(WireError::Truncated),
                n => self.got += n,
            }
        }
        if self.partial.is_none() {
            let header = FrameHeader::parse(self.head)?;
            let mut payload = if header.kind == FrameType::Data {
                pool.take()
            } else {
                Vec::new()
            };
            payload.reserve_exact(header.length as usize);
            self.partial = Some((header, payload));
        }
        let (header, payload) = self.partial.as_mut().expect("set above");
        let length = header.length as usize;
        // Read into the spare capacity: a payload is never zeroed first.
        while payload.len() < length {
            let left = length - payload.len();
            let mut rest = (&mut *payload).limit(left);
            if reader.read_buf(&mut rest).await? == 0 {
                return Err(WireError::Truncated);
            }
        }
        let (header, payload) = self.partial.take().expect("set above");
        self.got = 0;
        let permit = if header.kind == FrameType::Data {
            let kib = u32::try_from(payload.len().div_ceil(1024).max(1))
                .expect("a data frame is at most 268 KiB");
            budget.clone().try_acquire_many_owned(kib).ok()
        } else {
            None
        };
        let frame = RawFrame {
            kind: header.kind,
            payload,
        };
        Ok((frame, permit))
    }
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
    read_payload(reader, header).await
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

async fn read_payload<R: AsyncRead + Unpin>(
    reader: &mut R,
    header: FrameHeader,
) -> Result<RawFrame, WireError> {
    // Read into the spare capacity: a payload is never zeroed first.
    let length = header.length as usize;
    let mut payload = Vec::with_capacity(length);
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

/// Writes `bytes` of file (or object) `file_id` at `offset` as `Data`
/// frames of at most [`MAX_DATA_PAYLOAD`] bytes, handed to the writer in
/// one vectored write (headers and bytes as they are, no copy into a
/// frame first), then flushes: through a TLS session whose send buffer
/// holds them, up to a MiB leaves in one `writev` of whole records.
///
/// # Errors
/// Transport errors.
pub async fn write_data<W: AsyncWrite + Unpin>(
    writer: &mut W,
    file_id: u32,
    offset: u64,
    bytes: &[u8],
) -> Result<(), WireError> {
    let pieces = bytes.chunks(MAX_DATA_PAYLOAD as usize);
    let prefixes: Vec<_> = pieces
        .clone()
        .scan(offset, |at, piece| {
            let prefix = data_prefix(file_id, *at, piece.len());
            *at += piece.len() as u64;
            Some(prefix)
        })
        .collect();
    let mut slices: Vec<std::io::IoSlice<'_>> = prefixes
        .iter()
        .zip(pieces)
        .flat_map(|(prefix, piece)| [std::io::IoSlice::new(prefix), std::io::IoSlice::new(piece)])
        .collect();
    crate::client::write_all_vectored(writer, &mut slices).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{data_prefix, DATA_PREFIX_LEN};

    /// A Data frame of `bytes` for file 7 at offset 0, whole.
    fn data_frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = data_prefix(7, 0, bytes.len()).to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_frame_reader_cancelled_in_the_middle_of_a_frame_reads_it_whole_later() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(1 << 20);
            let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let frame = data_frame(&bytes);
            let budget = Arc::new(Semaphore::new(1024));
            let pool = PayloadPool::new(4);
            let mut reader = FrameReader::default();
            // Part of the header, then part of the payload: each read is
            // given up while it waits for the rest.
            for cut in [3, 40_000, frame.len()] {
                let sent = match cut {
                    3 => &frame[..3],
                    40_000 => &frame[3..40_000],
                    _ => &frame[40_000..],
                };
                client.write_all(sent).await.unwrap();
                if cut < frame.len() {
                    let waited = tokio::time::timeout(
                        Duration::from_millis(20),
                        reader.next(&mut server, &budget, &pool),
                    )
                    .await;
                    assert!(waited.is_err(), "a frame came back from {cut} bytes");
                }
            }
            let (raw, permit) = reader.next(&mut server, &budget, &pool).await.unwrap();
            assert_eq!(raw.kind, FrameType::Data);
            assert_eq!(raw.payload, frame[HEADER_LEN..]);
            assert!(permit.is_some(), "the budget had room");
            drop(client);
            assert!(matches!(
                reader.next(&mut server, &budget, &pool).await,
                Err(WireError::Closed)
            ));
        });
    }

    #[test]
    fn a_frame_reader_gives_no_permit_when_the_budget_is_spent() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, mut server) = tokio::io::duplex(1 << 20);
            let budget = Arc::new(Semaphore::new(1));
            let pool = PayloadPool::new(4);
            let mut reader = FrameReader::default();
            client.write_all(&data_frame(&[5u8; 4096])).await.unwrap();
            client.write_all(&data_frame(&[6u8; 512])).await.unwrap();
            let (first, permit) = reader.next(&mut server, &budget, &pool).await.unwrap();
            assert!(permit.is_none(), "4 KiB fit in a budget of 1 KiB");
            pool.give(first.payload);
            let (second, permit) = reader.next(&mut server, &budget, &pool).await.unwrap();
            assert_eq!(second.payload[DATA_PREFIX_LEN..], [6u8; 512]);
            assert!(permit.is_some(), "half a KiB fits in 1 KiB");
        });
    }
}
