//! The whole-file BLAKE3 of a file that arrives in pieces, in any order,
//! from several connections at once, computed mostly as it arrives.
//!
//! BLAKE3 is a tree hash (section 2.1 of the BLAKE3 paper): a file longer
//! than one chunk is the left-balanced binary tree of its 1 KiB chunks.
//! Any aligned power-of-two run of chunks is a subtree whose chaining value
//! can be computed alone, starting at its offset
//! (`blake3::hazmat::HasherExt::set_input_offset`), and merged with its
//! neighbours (`merge_subtrees_non_root`, `merge_subtrees_root`). So a
//! [`SegmentedHash`] cuts the file into segments of a power-of-two size
//! (16 MiB in the receiver) and keeps one hasher per segment, fed while
//! that segment's bytes arrive in order, which is what one connection
//! sending one range does. Connections sending different ranges hash on
//! their own threads in parallel. What did not arrive in order (a resumed
//! file, a range split differently) is read back from the disk at the
//! end, only from where the in-order bytes stopped. The result is exactly
//! `blake3::hash` of the whole file (the tests check it).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

/// Bytes read at a time when finishing from the disk.
const READ_BACK: usize = 1024 * 1024;

/// The state of one segment.
enum Segment {
    /// Bytes `[start, fed_to)` were hashed (the hasher exists once fed).
    Feeding {
        hasher: Option<Box<blake3::Hasher>>,
        fed_to: u64,
    },
    /// Every byte was hashed in order.
    Done(Finished),
    /// Bytes already hashed were written again: hash it from the disk.
    Stale,
}

/// A finished segment.
#[derive(Clone, Copy)]
enum Finished {
    /// Chaining value of a segment of a file of several segments.
    Subtree(ChainingValue),
    /// The hash of a file of one segment.
    Root(blake3::Hash),
}

/// The hash of a file of known size being received in pieces.
pub struct SegmentedHash {
    size: u64,
    segment: u64,
    segments: Vec<Mutex<Segment>>,
    /// Bytes [`SegmentedHash::finish`] read back because they were not fed
    /// in order.
    read_back: AtomicU64,
}

impl SegmentedHash {
    /// For a file of `size` bytes, in segments of `segment` bytes.
    ///
    /// # Panics
    /// When `segment` is not a power of two of at least `blake3::CHUNK_LEN`
    /// (a caller bug: the tree would not line up).
    pub fn new(size: u64, segment: u64) -> SegmentedHash {
        assert!(
            segment.is_power_of_two() && segment >= blake3::CHUNK_LEN as u64,
            "a segment is a power-of-two number of chunks"
        );
        let count = size.div_ceil(segment).max(1) as usize;
        let segments = (0..count)
            .map(|i| {
                Mutex::new(Segment::Feeding {
                    hasher: None,
                    fed_to: i as u64 * segment,
                })
            })
            .collect();
        SegmentedHash {
            size,
            segment,
            segments,
            read_back: AtomicU64::new(0),
        }
    }

    fn single(&self) -> bool {
        self.segments.len() == 1
    }

    fn bounds(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * self.segment;
        (start, (start + self.segment).min(self.size))
    }

    fn new_hasher(&self, start: u64) -> Box<blake3::Hasher> {
        let mut hasher = Box::new(blake3::Hasher::new());
        if !self.single() {
            hasher.set_input_offset(start);
        }
        hasher
    }

    fn finish_segment(&self, hasher: &blake3::Hasher) -> Finished {
        if self.single() {
            Finished::Root(hasher.finalize())
        } else {
            Finished::Subtree(hasher.finalize_non_root())
        }
    }

    /// Feeds `bytes` written at `offset` (within the size).
    pub fn feed(&self, offset: u64, bytes: &[u8]) {
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let index = (at / self.segment) as usize;
            let Some(slot) = self.segments.get(index) else {
                return;
            };
            let (start, end) = self.bounds(index);
            let take = rest.len().min((end - at) as usize);
            let (piece, tail) = rest.split_at(take);
            let mut segment = slot.lock().expect("the lock is never poisoned");
            let next = match &mut *segment {
                Segment::Feeding { hasher, fed_to } if *fed_to == at => {
                    let hasher = hasher.get_or_insert_with(|| self.new_hasher(start));
                    hasher.update(piece);
                    *fed_to += take as u64;
                    (*fed_to == end).then(|| Segment::Done(self.finish_segment(hasher)))
                }
                Segment::Feeding { fed_to, .. } if at < *fed_to => Some(Segment::Stale),
                Segment::Done(_) => Some(Segment::Stale),
                _ => None,
            };
            if let Some(next) = next {
                *segment = next;
            }
            drop(segment);
            at += take as u64;
            rest = tail;
        }
    }

    /// Bytes that [`SegmentedHash::finish`] had to read back (not fed in
    /// order), so far.
    pub fn read_back(&self) -> u64 {
        self.read_back.load(Ordering::Relaxed)
    }

    /// The hash of the whole file, reading from `read_at` (fills a buffer
    /// from an offset) what was not fed in order.
    ///
    /// # Errors
    /// Any error of `read_at`.
    pub fn finish(
        &self,
        read_at: impl Fn(&mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<blake3::Hash> {
        let mut buf = Vec::new();
        let mut done = Vec::with_capacity(self.segments.len());
        for (index, slot) in self.segments.iter().enumerate() {
            let (start, end) = self.bounds(index);
            let mut segment = slot.lock().expect("the lock is never poisoned");
            let finished = match &mut *segment {
                Segment::Done(finished) => *finished,
                Segment::Feeding { hasher, fed_to } => {
                    let from = *fed_to;
                    let hasher = hasher.get_or_insert_with(|| self.new_hasher(start));
                    read_into(hasher, &read_at, &mut buf, from, end)?;
                    self.read_back.fetch_add(end - from, Ordering::Relaxed);
                    self.finish_segment(hasher)
                }
                Segment::Stale => {
                    let mut hasher = self.new_hasher(start);
                    read_into(&mut hasher, &read_at, &mut buf, start, end)?;
                    self.read_back.fetch_add(end - start, Ordering::Relaxed);
                    self.finish_segment(&hasher)
                }
            };
            *segment = Segment::Done(finished);
            done.push(finished);
        }
        Ok(match done.as_slice() {
            [Finished::Root(hash)] => *hash,
            _ => {
                let cvs: Vec<ChainingValue> = done
                    .iter()
                    .map(|f| match f {
                        Finished::Subtree(cv) => *cv,
                        Finished::Root(_) => unreachable!("several segments are subtrees"),
                    })
                    .collect();
                let left = left_subtree_len(self.size);
                let split = (left / self.segment) as usize;
                merge_subtrees_root(
                    &subtree(&cvs[..split], left, self.segment),
                    &subtree(&cvs[split..], self.size - left, self.segment),
                    Mode::Hash,
                )
            }
        })
    }
}

/// The chaining value of the subtree of `len` bytes made of these segments.
fn subtree(cvs: &[ChainingValue], len: u64, segment: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let split = (left / segment) as usize;
    merge_subtrees_non_root(
        &subtree(&cvs[..split], left, segment),
        &subtree(&cvs[split..], len - left, segment),
        Mode::Hash,
    )
}

fn read_into(
    hasher: &mut blake3::Hasher,
    read_at: &impl Fn(&mut [u8], u64) -> io::Result<()>,
    buf: &mut Vec<u8>,
    from: u64,
    end: u64,
) -> io::Result<()> {
    buf.resize(READ_BACK, 0);
    let mut at = from;
    while at < end {
        let n = (end - at).min(READ_BACK as u64) as usize;
        read_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn finish(hash: &SegmentedHash, data: &[u8]) -> blake3::Hash {
        hash.finish(|buf, offset| {
            buf.copy_from_slice(&data[offset as usize..offset as usize + buf.len()]);
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn every_feeding_order_gives_blake3_of_the_whole() {
        const SEGMENT: u64 = 2048;
        let mut state = 99u64;
        let mut next = move |bound: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % bound.max(1)
        };
        let sizes = [
            0usize, 1, 1023, 1024, 1025, 2047, 2048, 2049, 4096, 6144, 6145, 10_000, 65_536,
            100_003,
        ];
        for &size in &sizes {
            let bytes = data(size, size as u64);
            let want = blake3::hash(&bytes);
            for round in 0..12 {
                let hash = SegmentedHash::new(size as u64, SEGMENT);
                // Pieces of random length, fed in a random order, some twice.
                let mut pieces = Vec::new();
                let mut at = 0usize;
                while at < size {
                    let len = (1 + next(3000) as usize).min(size - at);
                    pieces.push((at, len));
                    at += len;
                }
                if round % 3 == 1 {
                    for i in (1..pieces.len()).rev() {
                        let j = next(i as u64 + 1) as usize;
                        pieces.swap(i, j);
                    }
                }
                if round % 4 == 2 && !pieces.is_empty() {
                    let again = pieces[next(pieces.len() as u64) as usize];
                    pieces.push(again);
                }
                for (at, len) in pieces {
                    hash.feed(at as u64, &bytes[at..at + len]);
                }
                assert_eq!(finish(&hash, &bytes), want, "size {size}, round {round}");
            }
            // Nothing fed at all (a resumed file): all from the disk.
            let hash = SegmentedHash::new(size as u64, SEGMENT);
            assert_eq!(finish(&hash, &bytes), want, "size {size}, unfed");
        }
    }

    #[test]
    fn in_order_feeding_reads_nothing_back() {
        let bytes = data(3 * 4096 + 17, 5);
        let hash = SegmentedHash::new(bytes.len() as u64, 4096);
        for piece in bytes.chunks(1000) {
            let offset = piece.as_ptr() as usize - bytes.as_ptr() as usize;
            hash.feed(offset as u64, piece);
        }
        let got = hash
            .finish(|_, _| panic!("everything was fed in order"))
            .unwrap();
        assert_eq!(got, blake3::hash(&bytes));
    }
}
