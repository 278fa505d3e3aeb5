//! Where each chunk of a file lives: pure arithmetic on the chunk size and
//! the plaintext length, so any chunk can be found without reading others.

use crate::{FormatError, HEADER_LEN, TAG_LEN};

/// The geometry of one file: chunk `i` holds plaintext bytes
/// `i * chunk_size ..` and sits at ciphertext offset
/// `HEADER_LEN + i * (chunk_size + TAG_LEN)`.
///
/// There is always at least one chunk; only the last may be shorter than
/// `chunk_size`, and it is empty only when the whole file is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    chunk_size: u32,
    plaintext_len: u64,
}

impl Layout {
    /// The layout of a file of `plaintext_len` bytes.
    pub fn new(chunk_size: u32, plaintext_len: u64) -> Layout {
        assert!(
            chunk_size > 0,
            "chunk size is checked when the header is built or parsed"
        );
        Layout {
            chunk_size,
            plaintext_len,
        }
    }

    /// The layout implied by the length of an encrypted file (header
    /// included), for files whose header does not state the plaintext length.
    ///
    /// # Errors
    /// [`FormatError::BadLength`] when no valid file has that length.
    pub fn from_ciphertext_len(chunk_size: u32, file_len: u64) -> Result<Layout, FormatError> {
        let body = file_len.saturating_sub(HEADER_LEN as u64);
        let stride = u64::from(chunk_size) + TAG_LEN as u64;
        let tag = TAG_LEN as u64;
        let count = body.div_ceil(stride);
        let last = body.wrapping_sub(count.saturating_sub(1) * stride);
        if count == 0 || last < tag || (last == tag && count > 1) {
            return Err(FormatError::BadLength { len: body });
        }
        Ok(Layout::new(chunk_size, body - count * tag))
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
        HEADER_LEN as u64 + self.plaintext_len + self.chunk_count() * TAG_LEN as u64
    }

    /// Ciphertext offset of chunk `index` from the start of the file.
    pub fn chunk_offset(&self, index: u64) -> u64 {
        HEADER_LEN as u64 + index * (u64::from(self.chunk_size) + TAG_LEN as u64)
    }

    /// Plaintext offset of chunk `index`.
    pub fn plaintext_offset(&self, index: u64) -> u64 {
        index * u64::from(self.chunk_size)
    }

    /// Plaintext bytes in chunk `index`.
    pub fn chunk_plaintext_len(&self, index: u64) -> usize {
        let start = self.plaintext_offset(index);
        let end = (start + u64::from(self.chunk_size)).min(self.plaintext_len);
        // At most chunk_size, which is a u32.
        (end.saturating_sub(start)) as usize
    }

    /// Whether chunk `index` is the last one.
    pub fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunk_count()
    }

    /// Ciphertext bytes of the chunks `first..first + count` (clamped to the
    /// file), which is the buffer size a segment needs.
    pub fn span_len(&self, first: u64, count: u64) -> usize {
        let end = (first + count).min(self.chunk_count());
        (first..end)
            .map(|i| self.chunk_plaintext_len(i) + TAG_LEN)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_through_ciphertext_len() {
        for chunk in [1024u32, 4096] {
            for len in [0u64, 1, 1023, 1024, 1025, 4096, 10_000, 3 * 4096] {
                let layout = Layout::new(chunk, len);
                let back = Layout::from_ciphertext_len(chunk, layout.ciphertext_len()).unwrap();
                assert_eq!(back, layout, "chunk {chunk} len {len}");
                assert_eq!(
                    layout.span_len(0, layout.chunk_count()) as u64 + HEADER_LEN as u64,
                    layout.ciphertext_len()
                );
            }
        }
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        let h = HEADER_LEN as u64;
        for body in [0u64, 1, 15, 1040 + 5, 1040 + 16] {
            assert!(
                Layout::from_ciphertext_len(1024, h + body).is_err(),
                "body {body} should be invalid"
            );
        }
    }

    #[test]
    fn chunk_offsets_follow_the_stride() {
        let layout = Layout::new(1024, 5000);
        assert_eq!(layout.chunk_count(), 5);
        assert_eq!(layout.chunk_offset(3), h() + 3 * 1040);
        assert_eq!(layout.chunk_plaintext_len(4), 5000 - 4096);
        assert!(layout.is_last(4) && !layout.is_last(3));
        fn h() -> u64 {
            HEADER_LEN as u64
        }
    }
}
