//! Where each chunk of a file lives: pure arithmetic on the header length,
//! the chunk size and the plaintext length, so any chunk can be found
//! without reading others.

use crate::{FormatError, TAG_LEN};

/// [`TAG_LEN`] as a file length.
const TAG_LEN_U64: u64 = TAG_LEN as u64;

/// The geometry of one file: chunk `i` holds plaintext bytes
/// `i * chunk_size ..` and sits at ciphertext offset
/// `header_len + i * (chunk_size + TAG_LEN)`.
///
/// There is always at least one chunk; only the last may be shorter than
/// `chunk_size`, and it is empty only when the whole file is empty.
///
/// A `Layout` exists only for files whose length fits in a `u64`
/// ([`Layout::new`] checks it), so every method is free of overflow: offsets
/// of chunks past the end saturate instead of wrapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    header_len: usize,
    chunk_size: u32,
    plaintext_len: u64,
}

impl Layout {
    /// The layout of a file with a `header_len`-byte header and
    /// `plaintext_len` bytes of payload.
    ///
    /// # Errors
    /// [`FormatError::LengthTooLarge`] when the whole file would be longer
    /// than `u64::MAX` bytes, and [`FormatError::ChunkSize`] for a chunk size
    /// of 0.
    pub fn new(
        header_len: usize,
        chunk_size: u32,
        plaintext_len: u64,
    ) -> Result<Layout, FormatError> {
        if chunk_size == 0 {
            return Err(FormatError::ChunkSize(chunk_size));
        }
        let layout = Layout {
            header_len,
            chunk_size,
            plaintext_len,
        };
        layout
            .checked_ciphertext_len()
            .ok_or(FormatError::LengthTooLarge)?;
        Ok(layout)
    }

    /// The layout implied by the length of an encrypted file (header
    /// included), for files whose header does not state the plaintext length.
    ///
    /// # Errors
    /// [`FormatError::BadLength`] when no valid file has that length
    /// (including a file shorter than its header), and
    /// [`FormatError::ChunkSize`] for a chunk size of 0.
    pub fn from_ciphertext_len(
        header_len: usize,
        chunk_size: u32,
        file_len: u64,
    ) -> Result<Layout, FormatError> {
        if chunk_size == 0 {
            return Err(FormatError::ChunkSize(chunk_size));
        }
        let body = file_len
            .checked_sub(header_len as u64)
            .ok_or(FormatError::BadLength { len: 0 })?;
        let stride = u64::from(chunk_size) + TAG_LEN_U64;
        let count = body.div_ceil(stride);
        if count == 0 {
            return Err(FormatError::BadLength { len: body });
        }
        // (count - 1) * stride < body, so neither step can overflow.
        let last = body - (count - 1) * stride;
        if last < TAG_LEN_U64 || (last == TAG_LEN_U64 && count > 1) {
            return Err(FormatError::BadLength { len: body });
        }
        // count * TAG_LEN <= body: every chunk holds at least its tag.
        Layout::new(header_len, chunk_size, body - count * TAG_LEN_U64)
    }

    /// Length of the header, where chunk 0 starts.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Plaintext bytes per full chunk.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Total plaintext bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Number of chunks (at least one).
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_len
            .div_ceil(u64::from(self.chunk_size))
            .max(1)
    }

    /// Length of the whole encrypted file, header included.
    pub fn ciphertext_len(&self) -> u64 {
        // `new` refused every layout for which this is `None`.
        self.checked_ciphertext_len().unwrap_or(u64::MAX)
    }

    fn checked_ciphertext_len(&self) -> Option<u64> {
        (self.header_len as u64)
            .checked_add(self.plaintext_len)?
            .checked_add(self.chunk_count().checked_mul(TAG_LEN_U64)?)
    }

    /// Ciphertext offset of chunk `index` from the start of the file (for an
    /// index past the last chunk, saturates at `u64::MAX`).
    pub fn chunk_offset(&self, index: u64) -> u64 {
        let stride = u64::from(self.chunk_size) + TAG_LEN_U64;
        index
            .saturating_mul(stride)
            .saturating_add(self.header_len as u64)
    }

    /// Plaintext offset of chunk `index` (saturates at `u64::MAX`).
    pub fn plaintext_offset(&self, index: u64) -> u64 {
        index.saturating_mul(u64::from(self.chunk_size))
    }

    /// Plaintext bytes in chunk `index` (0 past the last chunk).
    pub fn chunk_plaintext_len(&self, index: u64) -> usize {
        let start = self.plaintext_offset(index).min(self.plaintext_len);
        let end = start
            .saturating_add(u64::from(self.chunk_size))
            .min(self.plaintext_len);
        // At most chunk_size, which is a u32.
        (end - start) as usize
    }

    /// Whether chunk `index` is the last one.
    pub fn is_last(&self, index: u64) -> bool {
        index == self.chunk_count() - 1
    }

    /// Ciphertext bytes of the chunks `first..first + count` (clamped to the
    /// file), which is the buffer size a segment needs.
    ///
    /// # Panics
    /// When the span is larger than the address space (`usize`), which only
    /// a 32-bit target can meet.
    pub fn span_len(&self, first: u64, count: u64) -> usize {
        let end = first.saturating_add(count).min(self.chunk_count());
        if first >= end {
            return 0;
        }
        let plain_start = self.plaintext_offset(first);
        let plain_end = self.plaintext_offset(end).min(self.plaintext_len);
        // Both terms are parts of ciphertext_len, which fits in u64.
        let bytes = (plain_end - plain_start) + (end - first) * TAG_LEN_U64;
        usize::try_from(bytes).expect("a span held in memory fits in usize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: usize = crate::HEADER_LEN_V2;

    #[test]
    fn lengths_round_trip_through_ciphertext_len() {
        for header_len in [crate::HEADER_LEN_V1, crate::HEADER_LEN_V2] {
            for chunk in [1024u32, 4096] {
                for len in [0u64, 1, 1023, 1024, 1025, 4096, 10_000, 3 * 4096] {
                    let layout = Layout::new(header_len, chunk, len).unwrap();
                    let back =
                        Layout::from_ciphertext_len(header_len, chunk, layout.ciphertext_len())
                            .unwrap();
                    assert_eq!(back, layout, "chunk {chunk} len {len}");
                    assert_eq!(back.header_len(), header_len);
                    assert_eq!(
                        layout.span_len(0, layout.chunk_count()) as u64 + header_len as u64,
                        layout.ciphertext_len()
                    );
                    let summed: usize = (0..layout.chunk_count())
                        .map(|i| layout.chunk_plaintext_len(i) + TAG_LEN)
                        .sum();
                    assert_eq!(summed, layout.span_len(0, u64::MAX));
                }
            }
        }
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        let h = H as u64;
        for body in [0u64, 1, 15, 1040 + 5, 1040 + 16] {
            assert!(
                Layout::from_ciphertext_len(H, 1024, h + body).is_err(),
                "body {body} should be invalid"
            );
        }
        for short in [0u64, 1, h - 1] {
            assert_eq!(
                Layout::from_ciphertext_len(H, 1024, short),
                Err(FormatError::BadLength { len: 0 })
            );
        }
        assert!(Layout::new(H, 0, 1).is_err());
        assert!(Layout::from_ciphertext_len(H, 0, 1000).is_err());
    }

    #[test]
    fn chunk_offsets_follow_the_stride() {
        let layout = Layout::new(H, 1024, 5000).unwrap();
        assert_eq!(layout.chunk_count(), 5);
        assert_eq!(layout.chunk_offset(3), H as u64 + 3 * 1040);
        assert_eq!(layout.chunk_plaintext_len(4), 5000 - 4096);
        assert_eq!(layout.chunk_plaintext_len(5), 0);
        assert!(layout.is_last(4) && !layout.is_last(3) && !layout.is_last(5));
        assert_eq!(layout.span_len(3, 10), 1040 + (5000 - 4096) + 16);
        assert_eq!(layout.span_len(7, 10), 0);
    }

    /// The largest plaintext length whose file still fits in `u64`.
    fn largest_len(header_len: usize, chunk: u32) -> u64 {
        let stride = u64::from(chunk) + TAG_LEN_U64;
        let room = u64::MAX - header_len as u64;
        // Full chunks that fit, then whatever room is left in one more.
        let full = room / stride;
        let rest = room % stride;
        full * u64::from(chunk) + rest.saturating_sub(TAG_LEN_U64)
    }

    #[test]
    fn lengths_near_u64_max_are_checked() {
        for chunk in [1024u32, 65536, crate::MAX_CHUNK_SIZE] {
            let max = largest_len(H, chunk);
            let layout = Layout::new(H, chunk, max).unwrap();
            let total = layout.ciphertext_len();
            assert!(total > u64::MAX - u64::from(chunk) - 2 * TAG_LEN_U64);
            assert_eq!(
                Layout::from_ciphertext_len(H, chunk, total).unwrap(),
                layout
            );
            let last = layout.chunk_count() - 1;
            assert!(layout.is_last(last));
            assert!(layout.chunk_offset(last) < total);
            assert!(layout.chunk_plaintext_len(last) > 0);
            assert_eq!(layout.chunk_offset(u64::MAX), u64::MAX);
            assert_eq!(layout.plaintext_offset(u64::MAX), u64::MAX);
            assert_eq!(layout.chunk_plaintext_len(u64::MAX), 0);
            assert_eq!(
                layout.span_len(last, u64::MAX),
                layout.chunk_plaintext_len(last) + TAG_LEN
            );
            for too_big in [max + 1, u64::MAX - 1, u64::MAX] {
                assert_eq!(
                    Layout::new(H, chunk, too_big),
                    Err(FormatError::LengthTooLarge),
                    "chunk {chunk} len {too_big}"
                );
            }
            // Every file length near the top is either a valid layout or BadLength.
            for file_len in (u64::MAX - 3 * u64::from(chunk))..=u64::MAX {
                if file_len % 997 != 0 && file_len < u64::MAX - 64 {
                    continue;
                }
                if let Ok(l) = Layout::from_ciphertext_len(H, chunk, file_len) {
                    assert_eq!(l.ciphertext_len(), file_len);
                }
            }
        }
    }

    /// Where chunk `index` starts and how much plaintext it holds, computed
    /// independently in `u128` (no path through the code under test).
    fn expected(header_len: usize, chunk: u32, len: u64, index: u64) -> (u128, u128) {
        let (chunk, len, index) = (u128::from(chunk), u128::from(len), u128::from(index));
        let offset = header_len as u128 + index * (chunk + TAG_LEN as u128);
        let plain = len.saturating_sub(index * chunk).min(chunk);
        (offset, plain)
    }

    /// The arithmetic a 4 GiB or 64 GiB file exercises (the benchsuite's
    /// `big-files.sh` runs such files for real): chunk offsets, plaintext
    /// offsets and the last partial chunk of lengths just past 2^32 and
    /// 2^36, where a 32-bit intermediate would wrap.
    #[test]
    fn offsets_past_2_pow_32_and_2_pow_36_do_not_wrap() {
        for chunk in [1024u32, 65536, crate::MAX_CHUNK_SIZE] {
            for base in [1u64 << 32, 1 << 36, 1 << 40] {
                for len in [base - 1, base, base + 1, base + 4097] {
                    let layout = Layout::new(H, chunk, len).unwrap();
                    let count = len.div_ceil(u64::from(chunk));
                    assert_eq!(layout.chunk_count(), count, "chunk {chunk} len {len}");
                    let total = H as u128 + u128::from(len) + u128::from(count) * TAG_LEN as u128;
                    assert_eq!(u128::from(layout.ciphertext_len()), total);
                    assert_eq!(
                        Layout::from_ciphertext_len(H, chunk, layout.ciphertext_len()).unwrap(),
                        layout
                    );
                    // The chunk holding byte 2^32 (or 2^36...), its
                    // neighbours, and the last chunk.
                    let at_base = base / u64::from(chunk);
                    for index in [at_base.saturating_sub(1), at_base, at_base + 1, count - 1] {
                        if index >= count {
                            continue;
                        }
                        let (offset, plain) = expected(H, chunk, len, index);
                        assert_eq!(u128::from(layout.chunk_offset(index)), offset);
                        assert_eq!(layout.chunk_plaintext_len(index) as u128, plain);
                        assert_eq!(
                            u128::from(layout.plaintext_offset(index)),
                            u128::from(index) * u128::from(chunk)
                        );
                        assert_eq!(layout.is_last(index), index == count - 1);
                        assert_eq!(
                            layout.span_len(index, 2) as u128,
                            (index..(index + 2).min(count))
                                .map(|i| expected(H, chunk, len, i).1 + TAG_LEN as u128)
                                .sum::<u128>()
                        );
                    }
                    let last = count - 1;
                    let (offset, plain) = expected(H, chunk, len, last);
                    assert_eq!(
                        offset + plain + TAG_LEN as u128,
                        total,
                        "the last chunk ends the file"
                    );
                    assert!(plain > 0, "only an empty file has an empty last chunk");
                }
            }
        }
    }
}
