//! Coalesced reads of pack data, shared by `get` and `verify --read-data`.
//!
//! A [`BlockPlan`] takes the chunks a command wants, in the order it wants
//! them, and groups neighbours of one pack into a [`Block`]: the stretch
//! of the pack that covers them all (small gaps between them are read through),
//! at most [`BLOCK_MAX`] bytes, the unit of memory and of work. Blocks
//! that follow each other in one pack make a [`Span`], at most
//! [`SPAN_MAX`] bytes: one read ([`Backend::open_span`]: one GET on S3)
//! whose bytes are cut into its blocks as they arrive. A [`Fetcher`] reads
//! spans on threads of its own, as many as the backend wants reads in
//! flight ([`Backend::read_streams`]: `--connections` on S3), ahead of the
//! CPU workers that open, decompress and check the chunks of each block.
//!
//! Memory: each block of a span is ordered ([`SpanOrder::block`]) only
//! once the command's ordered pipeline (whose budget is `--max-memory`)
//! has room for it ([`cryptstream_pool::Ordered::make_room`]); a reader
//! takes no more of a span's bytes than the blocks ordered (the rest wait
//! in the connection), and the task that opens a block accounts for it
//! until its results are consumed, so the blocks read and not yet
//! consumed stay within the budget. Reads do not wait for a free worker:
//! as many run as the budget and the reader threads allow.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use cryptstream_pool::Cancel;

use crate::backend::{Backend, BackendError};
use crate::blob::{self, COMPRESSION_NONE, COMPRESSION_ZSTD};
use crate::keys::StoreKeys;

/// Most bytes one block spans.
pub const BLOCK_MAX: u64 = 8 * 1024 * 1024;
/// Most bytes one read of a pack spans: the blocks of a span are cut from
/// one request's body (on S3, one GET), taken block by block as the
/// budget has room for each. Twice the default pack size, so a get that
/// wants a whole pack reads it in one request.
pub const SPAN_MAX: u64 = 64 * 1024 * 1024;
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

/// One stretch of a pack held in memory at once, and the chunks (`T`)
/// that lie in it.
#[derive(Debug)]
pub(crate) struct Block<T> {
    /// Offset of the block in the pack.
    pub start: u64,
    /// Length of the block.
    pub len: u64,
    /// The chunks, in the order they were added.
    pub members: Vec<T>,
}

/// Neighbouring blocks of one pack, read with one request: each block
/// starts at or after the end of the one before it.
#[derive(Debug)]
pub(crate) struct Span<T> {
    /// The pack object.
    pub pack: String,
    /// Offset of the span (its first block's start) in the pack.
    pub start: u64,
    /// Length of the span (to its last block's end).
    pub len: u64,
    /// The blocks, in pack order.
    pub blocks: Vec<Block<T>>,
}

/// Groups wanted chunks into blocks, and neighbouring blocks into spans;
/// see the module docs.
pub(crate) struct BlockPlan<T> {
    /// Most bytes a block spans.
    limit: u64,
    /// The span being grown, without its open block.
    span: Option<Span<T>>,
    /// The block being grown (the last of the span).
    open: Option<Block<T>>,
}

impl<T> BlockPlan<T> {
    /// A plan whose blocks fit a `max_memory` budget.
    pub fn new(max_memory: u64) -> Self {
        BlockPlan {
            limit: (max_memory / BLOCKS_PER_BUDGET).clamp(1, BLOCK_MAX),
            span: None,
            open: None,
        }
    }

    /// Adds the chunk at `offset..offset + len` of `pack`. When it does not
    /// fit the block being grown (another pack, before it, past a large
    /// gap, or the block would pass its limit), that block is finished and
    /// the chunk starts the next one; when the chunk does not continue the
    /// span either (another pack, before the span's end, past a large gap,
    /// or the span would pass [`SPAN_MAX`]), the span is finished and
    /// returned. A chunk larger than the limit is a block of its own.
    pub fn add(&mut self, pack: &str, offset: u64, len: u64, member: T) -> Option<Span<T>> {
        let end = offset.saturating_add(len);
        if let Some(block) = &mut self.open {
            let block_end = block.start + block.len;
            let span = self.span.as_ref().expect("an open block is in a span");
            let fits = span.pack == pack
                && offset >= block.start
                && offset <= block_end.saturating_add(GAP_MAX)
                && end.max(block_end) - block.start <= self.limit
                && end.max(block_end) - span.start <= SPAN_MAX;
            if fits {
                block.len = end.max(block_end) - block.start;
                block.members.push(member);
                return None;
            }
        }
        let block = Block {
            start: offset,
            len,
            members: vec![member],
        };
        self.close_block();
        let finished = match &self.span {
            Some(span) => {
                let span_end = span.start + span.len;
                let continues = span.pack == pack
                    && offset >= span_end
                    && offset <= span_end.saturating_add(GAP_MAX)
                    && end - span.start <= SPAN_MAX;
                if continues {
                    None
                } else {
                    self.span.take()
                }
            }
            None => None,
        };
        self.span.get_or_insert_with(|| Span {
            pack: pack.to_owned(),
            start: offset,
            len: 0,
            blocks: Vec::new(),
        });
        self.open = Some(block);
        finished
    }

    /// Moves the block being grown into its span.
    fn close_block(&mut self) {
        if let Some(block) = self.open.take() {
            let span = self.span.as_mut().expect("an open block is in a span");
            span.len = block.start + block.len - span.start;
            span.blocks.push(block);
        }
    }

    /// Finishes the span being grown, if any.
    pub fn flush(&mut self) -> Option<Span<T>> {
        self.close_block();
        self.span.take()
    }

    /// Whether a span is being grown.
    pub fn is_open(&self) -> bool {
        self.span.is_some()
    }
}

/// Reads spans on threads of its own; made by [`Fetcher::run`].
pub(crate) struct Fetcher {
    orders: Sender<Order>,
}

/// A span's read, queued by [`SpanOrder::block`].
struct Order {
    pack: String,
    start: u64,
    len: u64,
    /// The span's blocks, each sent once the budget has room for it.
    blocks: Receiver<BlockOrder>,
}

/// One block of a span to read.
struct BlockOrder {
    start: u64,
    len: u64,
    done: Sender<Result<BlockBytes, BackendError>>,
}

/// A block's bytes, as read. Dropped, its buffer goes back to the
/// fetcher's [`Buffers`].
pub(crate) struct BlockBytes {
    /// Offset of the block in the pack.
    start: u64,
    /// The bytes; fewer than the block's length when the pack ends inside
    /// it.
    data: Vec<u8>,
    /// The pack's name and size, when it ends inside the block.
    cut: Option<(String, u64)>,
    /// Where the buffer goes back to.
    home: Arc<Buffers>,
}

impl BlockBytes {
    /// The stored bytes of the chunk at `offset..offset + len` of the
    /// pack, which lies in the block, to be opened in place.
    ///
    /// # Errors
    /// [`BackendError::ShortObject`] when the pack ends before the chunk
    /// does.
    pub fn chunk(&mut self, offset: u64, len: u64) -> Result<&mut [u8], BackendError> {
        let from = (offset - self.start) as usize;
        let to = from + len as usize;
        match &self.cut {
            Some((name, size)) if to > self.data.len() => Err(BackendError::ShortObject {
                name: name.clone(),
                offset,
                len,
                size: *size,
            }),
            _ => Ok(&mut self.data[from..to]),
        }
    }
}

impl Drop for BlockBytes {
    fn drop(&mut self) {
        self.home.give_back(std::mem::take(&mut self.data));
    }
}

/// Block buffers given back by the tasks done with them, for the readers
/// to fill again: without them, the allocator hands large buffers freed
/// on one thread back to the kernel, and each new block faults its pages
/// in and zeroes them again (a tenth of get's time on S3 went to that).
/// A buffer comes back when the task that opened its block is done with
/// it, while that block still counts against the budget, so the buffers
/// kept and in use are never more than the blocks in flight at once,
/// which `--max-memory` bounds.
#[derive(Default)]
pub(crate) struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Most buffers [`Buffers`] keeps.
const BUFFERS_KEPT: usize = BLOCKS_PER_BUDGET as usize;

impl Buffers {
    /// An empty buffer with room for `len` bytes. A new buffer is made
    /// with room for the largest block at once: growing a kept one later
    /// would copy its old bytes into new pages and, by doubling, could make
    /// it too large to keep, so that every such block faulted in fresh
    /// memory (a fifth of a get's page faults, DECISIONS 570). Room not
    /// written to costs no memory.
    fn take(&self, len: usize) -> Vec<u8> {
        let kept = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            match free.last() {
                Some(buffer) if buffer.capacity() >= len => free.pop(),
                _ => None,
            }
        };
        match kept {
            Some(mut buffer) => {
                buffer.clear();
                buffer
            }
            None => Vec::with_capacity(len.max(BLOCK_MAX as usize)),
        }
    }

    /// Keeps `buffer` for a later block, up to [`BUFFERS_KEPT`] of them.
    fn give_back(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > BLOCK_MAX as usize {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < BUFFERS_KEPT {
            free.push(buffer);
        }
    }
}

/// Which chunks of a block, given as `(offset, len)` in the pack, overlap
/// no other chunk of it (the same chunk may be wanted twice in a block):
/// those can be opened in place, which destroys their stored bytes; the
/// others are opened from a copy.
pub(crate) fn alone(ranges: &[(u64, u64)]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].0);
    let mut alone = vec![true; ranges.len()];
    // The chunk reaching furthest among those sorted so far.
    let mut furthest: Option<(usize, u64)> = None;
    for i in order {
        let (start, len) = ranges[i];
        let end = start.saturating_add(len);
        if let Some((j, reach)) = furthest {
            if start < reach {
                alone[i] = false;
                alone[j] = false;
            }
        }
        if furthest.is_none_or(|(_, reach)| end > reach) {
            furthest = Some((i, end));
        }
    }
    alone
}

/// Where a block's bytes arrive.
pub(crate) struct Fetched(Receiver<Result<BlockBytes, BackendError>>);

impl Fetched {
    /// Waits for the bytes.
    ///
    /// # Errors
    /// The backend's error, or an interruption when the fetcher stopped
    /// before the read.
    pub fn wait(self) -> Result<BlockBytes, BackendError> {
        self.0.recv().unwrap_or_else(|_| Err(interrupted()))
    }
}

/// The read of one span, ordered block by block: made with
/// [`SpanOrder::new`], each block ordered with [`SpanOrder::block`] once
/// the budget has room for it. Dropped, it tells the reader that no block
/// follows.
pub(crate) struct SpanOrder {
    /// The span's read, until its first block is ordered.
    order: Option<Order>,
    blocks: Sender<BlockOrder>,
}

impl SpanOrder {
    /// The read of `len` bytes of `pack` from `start`; nothing is read yet.
    pub fn new(pack: &str, start: u64, len: u64) -> Self {
        let (blocks, queue) = unbounded();
        SpanOrder {
            order: Some(Order {
                pack: pack.to_owned(),
                start,
                len,
                blocks: queue,
            }),
            blocks,
        }
    }

    /// Orders the span's next block, `len` bytes from `start` (after the
    /// blocks ordered before), and returns where its bytes will arrive.
    /// The first block queues the span's read on `fetcher`, behind the
    /// spans queued before it.
    pub fn block(&mut self, fetcher: &Fetcher, start: u64, len: u64) -> Fetched {
        let (done, arrive) = bounded(1);
        // The reader holds the queue until this order is dropped.
        let _ = self.blocks.send(BlockOrder { start, len, done });
        if let Some(order) = self.order.take() {
            let _ = fetcher.orders.send(order);
        }
        Fetched(arrive)
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
    ///
    /// A reader takes one span at a time and answers its blocks in order
    /// as they are ordered. At most one span waits for blocks not yet
    /// ordered (the one being ordered); every other span's blocks are all
    /// ordered, so its reader runs to its end: reads never wait on each
    /// other, and the workers make no reads of their own.
    pub fn run<R>(backend: &dyn Backend, cancel: &Cancel, f: impl FnOnce(&Fetcher) -> R) -> R {
        let streams = backend.read_streams().max(1);
        let buffers = Arc::new(Buffers::default());
        std::thread::scope(|threads| {
            let (orders, queue) = unbounded::<Order>();
            for _ in 0..streams {
                let queue = queue.clone();
                let buffers = Arc::clone(&buffers);
                threads.spawn(move || {
                    for order in queue {
                        read_span(backend, cancel, &buffers, order);
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
}

/// One span's read, on a reader thread: one [`Backend::open_span`] whose
/// bytes are cut into the blocks as they are ordered. When the span's
/// read fails, this block and the rest are read alone
/// ([`Backend::get_range`]), so that each block fails or succeeds as a
/// read of its own would.
fn read_span(backend: &dyn Backend, cancel: &Cancel, buffers: &Arc<Buffers>, order: Order) {
    let mut span: Option<Box<dyn crate::SpanRead + '_>> = None;
    let mut opened = false;
    for block in order.blocks {
        crate::hooks::before_chunk_read();
        let result = if cancel.is_cancelled() {
            Err(interrupted())
        } else if let Ok(len) = usize::try_from(block.len) {
            if !opened {
                opened = true;
                span = backend.open_span(&order.pack, order.start, order.len).ok();
            }
            let mut bytes = BlockBytes {
                start: block.start,
                data: buffers.take(len),
                cut: None,
                home: Arc::clone(buffers),
            };
            match span
                .as_mut()
                .map(|s| s.read_into(block.start, len, &mut bytes.data))
            {
                Some(Ok(())) => Ok(bytes),
                // The connection is given back before reading alone.
                _ => {
                    span = None;
                    read_alone(backend, &order.pack, len, &mut bytes).map(|()| bytes)
                }
            }
        } else {
            Err(BackendError::TooLarge {
                name: order.pack.clone(),
                size: block.len,
                limit: BLOCK_MAX,
            })
        };
        // The receiver is gone when its task was dropped unrun; nothing
        // waits for these bytes then.
        let _ = block.done.send(result);
    }
}

/// One block of `len` bytes read alone, into `bytes`. When the pack ends inside the block, the bytes before its end
/// are read, and the chunks past it fail alone ([`BlockBytes::chunk`]).
fn read_alone(
    backend: &dyn Backend,
    pack: &str,
    len: usize,
    bytes: &mut BlockBytes,
) -> Result<(), BackendError> {
    let data = &mut bytes.data;
    data.clear();
    data.resize(len, 0);
    match backend.get_range(pack, bytes.start, data) {
        Ok(()) => Ok(()),
        Err(BackendError::ShortObject { size, .. }) => {
            data.truncate(size.saturating_sub(bytes.start) as usize);
            if !data.is_empty() {
                backend.get_range(pack, bytes.start, data)?;
            }
            bytes.cut = Some((pack.to_owned(), size));
            Ok(())
        }
        Err(e) => Err(e),
    }
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

    #[test]
    fn a_kept_buffer_serves_any_block_up_to_the_largest_without_growing() {
        let buffers = Buffers::default();
        let mut small = buffers.take(100);
        assert!(small.capacity() >= BLOCK_MAX as usize);
        small.extend_from_slice(&[7; 100]);
        let (ptr, capacity) = (small.as_ptr(), small.capacity());
        buffers.give_back(small);
        // The same allocation comes back, empty, for the largest block.
        let large = buffers.take(BLOCK_MAX as usize);
        assert_eq!((large.as_ptr(), large.capacity()), (ptr, capacity));
        assert!(large.is_empty());
        buffers.give_back(large);
        // A block past the largest (one chunk over a small budget's limit)
        // gets a buffer of its own, which is not kept; the kept one stays.
        let huge = buffers.take(BLOCK_MAX as usize + 1);
        assert!(huge.capacity() > BLOCK_MAX as usize);
        buffers.give_back(huge);
        assert_eq!(buffers.free.lock().unwrap().len(), 1);
        let again = buffers.take(1);
        assert_eq!(again.as_ptr(), ptr);
    }

    /// Spans as (pack, start, len, [(block start, len, members)]).
    type Planned = Vec<(String, u64, u64, Vec<(u64, u64, Vec<u32>)>)>;

    fn plan_all(plan: &mut BlockPlan<u32>, chunks: &[(&str, u64, u64)]) -> Planned {
        let mut spans = Vec::new();
        for (i, &(pack, offset, len)) in chunks.iter().enumerate() {
            spans.extend(plan.add(pack, offset, len, i as u32));
        }
        spans.extend(plan.flush());
        spans
            .into_iter()
            .map(|s| {
                let blocks = s
                    .blocks
                    .into_iter()
                    .map(|b| (b.start, b.len, b.members))
                    .collect();
                (s.pack, s.start, s.len, blocks)
            })
            .collect()
    }

    #[test]
    fn neighbours_in_one_pack_share_a_block_and_the_rest_do_not() {
        let mut plan = BlockPlan::new(1 << 30);
        let got = plan_all(
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
                ("a".into(), 0, 1010, vec![(0, 1010, vec![0, 1, 2])]),
                (
                    "a".into(),
                    1010 + GAP_MAX + 1,
                    10,
                    vec![(1010 + GAP_MAX + 1, 10, vec![3])]
                ),
                ("b".into(), 0, 10, vec![(0, 10, vec![4])]),
                ("a".into(), 0, 100, vec![(0, 100, vec![5, 6])]),
            ]
        );
    }

    #[test]
    fn a_block_stops_at_its_limit_and_the_span_goes_on() {
        // 32 MiB of budget: blocks of at most 1 MiB, in one span.
        let mib = 1024 * 1024;
        let mut plan = BlockPlan::new(32 * mib);
        let got = plan_all(
            &mut plan,
            &[
                ("p", 0, mib / 2),
                ("p", mib / 2, mib / 2),
                ("p", mib, 1),
                ("p", mib + 1, 3 * mib),
                // Back inside the span: a span of its own.
                ("p", mib, 1),
            ],
        );
        assert_eq!(
            got,
            vec![
                (
                    "p".into(),
                    0,
                    4 * mib + 1,
                    vec![
                        (0, mib, vec![0, 1]),
                        (mib, 1, vec![2]),
                        (mib + 1, 3 * mib, vec![3]),
                    ]
                ),
                ("p".into(), mib, 1, vec![(mib, 1, vec![4])]),
            ]
        );
        assert!(!plan.is_open());
    }

    #[test]
    fn a_span_stops_at_its_limit() {
        let mib = 1024 * 1024;
        let mut plan = BlockPlan::new(1 << 30);
        let chunks: Vec<(&str, u64, u64)> = (0..SPAN_MAX / mib + 1)
            .map(|i| ("p", i * mib, mib))
            .collect();
        let got = plan_all(&mut plan, &chunks);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].1, got[0].2), (0, SPAN_MAX));
        assert_eq!(got[0].3.len(), (SPAN_MAX / BLOCK_MAX) as usize);
        assert_eq!((got[1].1, got[1].2), (SPAN_MAX, mib));
    }

    #[test]
    fn only_chunks_that_overlap_no_other_are_alone() {
        assert_eq!(
            alone(&[(0, 10), (10, 5), (100, 10), (0, 10), (105, 1), (200, 1)]),
            vec![false, true, false, false, false, true]
        );
        assert_eq!(alone(&[]), Vec::<bool>::new());
    }
}
