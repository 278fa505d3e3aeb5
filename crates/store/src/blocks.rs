//! Coalesced reads of pack data, shared by `get` and `verify --read-data`.
//!
//! A [`BlockPlan`] takes the chunks a command wants, in the order it wants
//! them, and groups neighbours of one pack into a [`Block`]: one ranged
//! read of a span of the pack that covers them all (small gaps between
//! them are read through), at most [`BLOCK_MAX`] bytes. A [`Fetcher`] reads
//! blocks on threads of its own, as many as the backend wants reads in
//! flight ([`Backend::read_streams`]: `--connections` on S3), ahead of the
//! CPU workers that open, decompress and check the chunks of each block.
//!
//! Memory: a block's read is ordered only once the command's ordered
//! pipeline (whose budget is `--max-memory`) has room for it
//! ([`cryptstream_pool::Ordered::make_room`]), and the task that opens it
//! accounts for the whole block until its results are consumed, so the
//! blocks read and not yet consumed stay within the budget. Reads do not
//! wait for a free worker: as many run as the budget and the reader
//! threads allow.

use std::borrow::Cow;
use std::cell::RefCell;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use cryptstream_pool::Cancel;

use crate::backend::{Backend, BackendError};
use crate::blob::{self, COMPRESSION_NONE, COMPRESSION_ZSTD};
use crate::keys::StoreKeys;

/// Most bytes one block read spans.
pub const BLOCK_MAX: u64 = 8 * 1024 * 1024;
/// Most bytes no chunk wants that a block reads through between two
/// chunks it does want (cheaper than a second request).
pub const GAP_MAX: u64 = 256 * 1024;
/// A block takes at most this fraction of `--max-memory` (8 MiB blocks
/// from the default 256 MiB): a small budget still holds many blocks in
/// flight, and the allocator's slack, which grows with the size of the
/// buffers it recycles between threads, stays small next to the budget
/// (store_memory.rs: at 64 MiB, 8 MiB blocks took get's peak RSS from
/// about 60 to 100-130 MiB; 2 MiB blocks keep it under put's).
const BLOCKS_PER_BUDGET: u64 = 32;

/// Bytes a chunk's bookkeeping accounts for beyond its bytes.
const CHUNK_OVERHEAD: u64 = 4096;

/// What a block task accounts for against `--max-memory`: twice its span
/// (the block itself, and as much again for what the allocator keeps of
/// blocks freed on other threads: a block is allocated by a reader and
/// freed by a worker; chunk tasks always counted twice their length),
/// then the largest chunk's copy and plaintext (`largest`, one chunk at a
/// time), and each chunk's bookkeeping.
pub(crate) fn block_cost(len: u64, largest: u64, chunks: usize) -> u64 {
    2 * len + largest + CHUNK_OVERHEAD * chunks as u64
}

/// One span of a pack to read, and the chunks (`T`) that lie in it.
#[derive(Debug)]
pub(crate) struct Block<T> {
    /// The pack object.
    pub pack: String,
    /// Offset of the span in the pack.
    pub start: u64,
    /// Length of the span.
    pub len: u64,
    /// The chunks, in the order they were added.
    pub members: Vec<T>,
}

/// Groups wanted chunks into blocks; see the module docs.
pub(crate) struct BlockPlan<T> {
    /// Most bytes a block spans.
    limit: u64,
    /// The block being grown.
    open: Option<Block<T>>,
}

impl<T> BlockPlan<T> {
    /// A plan whose blocks fit a `max_memory` budget.
    pub fn new(max_memory: u64) -> Self {
        BlockPlan {
            limit: (max_memory / BLOCKS_PER_BUDGET).clamp(1, BLOCK_MAX),
            open: None,
        }
    }

    /// Adds the chunk at `offset..offset + len` of `pack`. When it does not
    /// fit the block being grown (another pack, before it, past a large
    /// gap, or the block would pass its limit), that block is finished and
    /// returned, and the chunk starts the next one. A chunk larger than the
    /// limit is a block of its own.
    pub fn add(&mut self, pack: &str, offset: u64, len: u64, member: T) -> Option<Block<T>> {
        let end = offset.saturating_add(len);
        if let Some(block) = &mut self.open {
            let block_end = block.start + block.len;
            let fits = block.pack == pack
                && offset >= block.start
                && offset <= block_end.saturating_add(GAP_MAX)
                && end.max(block_end) - block.start <= self.limit;
            if fits {
                block.len = end.max(block_end) - block.start;
                block.members.push(member);
                return None;
            }
        }
        self.open.replace(Block {
            pack: pack.to_owned(),
            start: offset,
            len,
            members: vec![member],
        })
    }

    /// Finishes the block being grown, if any.
    pub fn flush(&mut self) -> Option<Block<T>> {
        self.open.take()
    }

    /// Whether a block is being grown.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }
}

/// Reads blocks on threads of its own; made by [`Fetcher::run`].
pub(crate) struct Fetcher {
    orders: Sender<Order>,
}

/// A block read to be queued with [`Fetcher::send`].
pub(crate) struct Order {
    pack: String,
    start: u64,
    len: u64,
    done: Sender<Result<Vec<u8>, BackendError>>,
}

/// Where an [`Order`]'s bytes arrive.
pub(crate) struct Fetched(Receiver<Result<Vec<u8>, BackendError>>);

/// A read of `len` bytes of `pack` from `start`, and where its bytes will
/// arrive. The read starts only once the order is sent.
pub(crate) fn order(pack: &str, start: u64, len: u64) -> (Order, Fetched) {
    let (done, arrive) = bounded(1);
    (
        Order {
            pack: pack.to_owned(),
            start,
            len,
            done,
        },
        Fetched(arrive),
    )
}

impl Fetched {
    /// Waits for the bytes.
    ///
    /// # Errors
    /// The backend's error, or an interruption when the fetcher stopped
    /// before the read.
    pub fn wait(self) -> Result<Vec<u8>, BackendError> {
        self.0.recv().unwrap_or_else(|_| Err(interrupted()))
    }
}

fn interrupted() -> BackendError {
    BackendError::Io {
        name: "read".into(),
        source: std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"),
    }
}

impl Fetcher {
    /// Starts [`Backend::read_streams`] reader threads, runs `f` with the
    /// fetcher, then stops them (each finishes the orders already sent,
    /// or, after `cancel`, answers them as interrupted).
    pub fn run<R>(backend: &dyn Backend, cancel: &Cancel, f: impl FnOnce(&Fetcher) -> R) -> R {
        let streams = backend.read_streams().max(1);
        std::thread::scope(|threads| {
            let (orders, queue) = unbounded::<Order>();
            for _ in 0..streams {
                let queue = queue.clone();
                threads.spawn(move || {
                    for order in queue {
                        let result = read_block(backend, cancel, &order);
                        // The receiver is gone when its task was dropped
                        // unrun; nothing waits for these bytes then.
                        let _ = order.done.send(result);
                    }
                });
            }
            drop(queue);
            // Dropped at the end of this closure, or while a panic of `f`
            // unwinds: either way the readers see the queue close.
            let fetcher = Fetcher { orders };
            f(&fetcher)
        })
    }

    /// Queues `order` behind those sent before it.
    pub fn send(&self, order: Order) {
        // The readers hold the queue open for as long as `self` lives.
        let _ = self.orders.send(order);
    }
}

/// One block read, on a reader thread.
fn read_block(
    backend: &dyn Backend,
    cancel: &Cancel,
    order: &Order,
) -> Result<Vec<u8>, BackendError> {
    crate::hooks::before_chunk_read();
    if cancel.is_cancelled() {
        return Err(interrupted());
    }
    let len = usize::try_from(order.len).map_err(|_| BackendError::TooLarge {
        name: order.pack.clone(),
        size: order.len,
        limit: BLOCK_MAX,
    })?;
    let mut data = vec![0u8; len];
    backend.get_range(&order.pack, order.start, &mut data)?;
    Ok(data)
}

/// Why a chunk's bytes are not the chunk.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChunkFault {
    /// The blob does not authenticate under its id, lengths and
    /// compression.
    #[error("does not authenticate (damaged)")]
    Damaged,
    /// The authenticated body does not decompress to its length.
    #[error("does not decompress")]
    NoDecompress,
    /// A compression byte this version does not know.
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    /// The plaintext does not hash to the chunk's id.
    #[error("content does not match its id")]
    Mismatch,
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// What one chunk's blob must be: its id, compression and lengths.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkShape<'a> {
    /// Its id (keyed hash of the plaintext).
    pub id: &'a [u8; 32],
    /// Its compression byte.
    pub compression: u8,
    /// Its plaintext length.
    pub raw_len: u32,
}

/// Opens `blob` (one chunk's stored bytes, opened in place), decompresses
/// it and checks that it hashes to its id: the plaintext.
///
/// # Errors
/// The [`ChunkFault`] that makes it not the chunk.
pub(crate) fn open_chunk<'b>(
    keys: &StoreKeys,
    shape: ChunkShape<'_>,
    blob: &'b mut [u8],
) -> Result<Cow<'b, [u8]>, ChunkFault> {
    let aad = blob::chunk_aad(shape.id, shape.compression, shape.raw_len);
    let body = blob::open_in_place(keys, &aad, blob).map_err(|_| ChunkFault::Damaged)?;
    let plain: Cow<'b, [u8]> = match shape.compression {
        COMPRESSION_NONE => Cow::Borrowed(&*body),
        COMPRESSION_ZSTD => {
            let mut out = vec![0u8; shape.raw_len as usize];
            let n = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = zstd::bulk::Decompressor::new().ok();
                    }
                    slot.as_mut()?
                        .decompress_to_buffer(&*body, &mut out[..])
                        .ok()
                })
                .ok_or(ChunkFault::NoDecompress)?;
            out.truncate(n);
            Cow::Owned(out)
        }
        other => return Err(ChunkFault::UnknownCompression(other)),
    };
    if plain.len() != shape.raw_len as usize || keys.chunk_id(&plain) != *shape.id {
        return Err(ChunkFault::Mismatch);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(
        plan: &mut BlockPlan<u32>,
        chunks: &[(&str, u64, u64)],
    ) -> Vec<(String, u64, u64, Vec<u32>)> {
        let mut out = Vec::new();
        for (i, &(pack, offset, len)) in chunks.iter().enumerate() {
            if let Some(b) = plan.add(pack, offset, len, i as u32) {
                out.push((b.pack, b.start, b.len, b.members));
            }
        }
        if let Some(b) = plan.flush() {
            out.push((b.pack, b.start, b.len, b.members));
        }
        out
    }

    #[test]
    fn neighbours_in_one_pack_share_a_block_and_the_rest_do_not() {
        let mut plan = BlockPlan::new(1 << 30);
        let got = blocks(
            &mut plan,
            &[
                ("a", 0, 100),
                ("a", 100, 50),
                // A small gap is read through.
                ("a", 1000, 10),
                // A large gap is not.
                ("a", 1010 + GAP_MAX + 1, 10),
                // Another pack.
                ("b", 0, 10),
                // Behind the block: a new one.
                ("a", 0, 100),
                // The same chunk again, inside the block: shares it.
                ("a", 0, 100),
            ],
        );
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, 1010, vec![0, 1, 2]),
                ("a".into(), 1010 + GAP_MAX + 1, 10, vec![3]),
                ("b".into(), 0, 10, vec![4]),
                ("a".into(), 0, 100, vec![5, 6]),
            ]
        );
    }

    #[test]
    fn a_block_stops_at_its_limit_and_a_large_chunk_is_alone() {
        // 32 MiB of budget: blocks of at most 1 MiB.
        let mib = 1024 * 1024;
        let mut plan = BlockPlan::new(32 * mib);
        let got = blocks(
            &mut plan,
            &[
                ("p", 0, mib / 2),
                ("p", mib / 2, mib / 2),
                ("p", mib, 1),
                ("p", mib + 1, 3 * mib),
            ],
        );
        assert_eq!(
            got,
            vec![
                ("p".into(), 0, mib, vec![0, 1]),
                ("p".into(), mib, 1, vec![2]),
                ("p".into(), mib + 1, 3 * mib, vec![3]),
            ]
        );
        assert!(!plan.is_open());
    }
}
