//! Per-worker scratch buffers that are wiped instead of leaking plaintext.

use zeroize::Zeroize;

/// A reusable byte buffer that may hold plaintext or key material.
///
/// Every byte this buffer ever owned is zeroed before its allocation is
/// given back: growing moves to a fresh zeroed allocation and wipes the old
/// one (the contents are *not* copied, so no second copy of a secret is left
/// behind), and dropping wipes the whole capacity. Shrinking keeps the
/// allocation, so a buffer resized to the same few sizes again and again
/// allocates only when it grows past its largest size so far.
///
/// There is deliberately no `Debug` or `Clone`: printing or silently
/// duplicating the contents is what this type exists to prevent.
#[derive(Default)]
pub struct SecretBuf {
    /// The allocation; `bytes.len()` is the buffer's current length and
    /// everything up to `bytes.capacity()` is wiped on drop.
    bytes: Vec<u8>,
}

impl SecretBuf {
    /// An empty buffer that has not allocated yet.
    pub fn new() -> SecretBuf {
        SecretBuf { bytes: Vec::new() }
    }

    /// Sets the length to `len` and returns the whole buffer.
    ///
    /// The contents afterwards are unspecified but initialised; callers
    /// overwrite them. When `len` fits the current capacity the allocation is
    /// kept. When it does not, a new zeroed allocation of exactly `len` bytes
    /// replaces the old one, which is zeroed before it is freed; nothing is
    /// copied across.
    pub fn resize(&mut self, len: usize) -> &mut [u8] {
        if len > self.bytes.capacity() {
            let fresh = vec![0u8; len];
            // Zeroes every byte of the old allocation, spare capacity included.
            self.bytes.zeroize();
            self.bytes = fresh;
        } else {
            // Within capacity `Vec::resize` never reallocates, so no copy is made.
            self.bytes.resize(len, 0);
        }
        &mut self.bytes
    }

    /// The buffer's current contents, `len()` bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The buffer's current contents, `len()` bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The current length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the current length is zero.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The size of the allocation in bytes: how far [`SecretBuf::resize`]
    /// can go without allocating.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Zeroes the whole allocation (beyond the current length too), keeping
    /// the length and the capacity.
    pub fn wipe(&mut self) {
        self.bytes.as_mut_slice().zeroize();
        self.bytes.spare_capacity_mut().zeroize();
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// What each worker thread owns for the life of a [`Pool`](crate::Pool):
/// two reusable buffers, for example one for the bytes read and one for the
/// bytes sealed. Tasks receive it as `&mut Scratch`; whatever a task leaves in
/// it is seen by the next task on the same worker, so tasks overwrite what
/// they use rather than assume it is zero.
#[derive(Default)]
pub struct Scratch {
    /// The first buffer.
    pub primary: SecretBuf,
    /// The second buffer.
    pub secondary: SecretBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_zeroes_contents_and_spare_capacity_but_keeps_them() {
        let mut buf = SecretBuf::new();
        buf.resize(64).fill(0xAA);
        buf.resize(16);
        let capacity = buf.capacity();
        buf.wipe();
        assert_eq!(buf.len(), 16);
        assert_eq!(buf.capacity(), capacity);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        let spare = buf.bytes.spare_capacity_mut();
        assert_eq!(spare.len(), capacity - 16);
        // SAFETY: `wipe` has just written a zero to every byte of the spare
        // capacity, so each of them is initialised.
        assert!(spare.iter().all(|b| unsafe { b.assume_init() } == 0));
    }

    #[test]
    fn growing_starts_from_zeroes_and_copies_nothing() {
        let mut buf = SecretBuf::new();
        buf.resize(16).fill(0xAA);
        let grown = buf.resize(4096);
        assert_eq!(grown.len(), 4096);
        assert!(
            grown.iter().all(|&b| b == 0),
            "old secret bytes were copied into the new buffer"
        );
        assert!(buf.capacity() >= 4096);
    }

    #[test]
    fn shrinking_keeps_the_allocation() {
        let mut buf = SecretBuf::new();
        buf.resize(1000).fill(1);
        let capacity = buf.capacity();
        assert_eq!(buf.resize(10).len(), 10);
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(buf.resize(1000).len(), 1000);
        assert_eq!(buf.capacity(), capacity);
        assert!(!buf.is_empty());
        assert_eq!(buf.resize(0).len(), 0);
        assert!(buf.is_empty());
    }

    #[test]
    fn slices_cover_the_current_length() {
        let mut buf = SecretBuf::default();
        buf.resize(5).copy_from_slice(b"hello");
        buf.as_mut_slice()[0] = b'j';
        assert_eq!(buf.as_slice(), b"jello");
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn dropping_a_used_buffer_is_fine() {
        let mut scratch = Scratch::default();
        scratch.primary.resize(1 << 16).fill(0x55);
        scratch.secondary.resize(3).fill(0x55);
        drop(scratch);
    }
}
