//! The pseudo-random streams behind every generated size and byte.
//!
//! Each stream is a xoshiro256++ generator (Blackman and Vigna, "Scrambled
//! Linear Pseudorandom Number Generators", ACM TOMS 2021): four 64-bit words
//! of state, one 64-bit output per step, fast enough to fill gigabytes per
//! second per core. It is not cryptographic, and need not be: it only has to
//! look like noise to a compressor and be reproducible.
//!
//! A stream is keyed by BLAKE3 in key-derivation mode from a [`Purpose`] and
//! the numbers that locate it (seed, file index, block index), so any stream
//! can be started on any thread without computing the ones before it.

/// What a stream is used for; each purpose is a separate BLAKE3 context, so
/// the streams of different purposes never overlap.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// The size of one file.
    FileSize,
    /// The content of one block of one file.
    Block,
}

impl Purpose {
    /// The BLAKE3 key-derivation context. Changing it changes every
    /// generated workload, so it is fixed forever.
    fn context(self) -> &'static str {
        match self {
            Purpose::FileSize => "cryptstream-workload v1 file size",
            Purpose::Block => "cryptstream-workload v1 block content",
        }
    }
}

/// A xoshiro256++ generator.
pub(crate) struct Xoshiro256PlusPlus {
    state: [u64; 4],
}

impl Xoshiro256PlusPlus {
    /// The stream for `purpose` located by `seed` and `coordinates`.
    pub(crate) fn derive(purpose: Purpose, seed: u64, coordinates: [u64; 2]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(purpose.context());
        hasher.update(&seed.to_le_bytes());
        for c in coordinates {
            hasher.update(&c.to_le_bytes());
        }
        let digest = hasher.finalize();
        let mut state = [0u64; 4];
        for (word, bytes) in state.iter_mut().zip(digest.as_bytes().chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(bytes);
            *word = u64::from_le_bytes(le);
        }
        // The all-zero state is the generator's one fixed point.
        if state == [0; 4] {
            state[0] = 1;
        }
        Self { state }
    }

    /// The next 64 random bits.
    #[inline(always)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform float in `[0, 1)` from the top 53 bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)` (`n > 0`), by the multiply-high
    /// method; its bias, at most n / 2^64, is far below anything a workload
    /// could show.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fills `out` with the next outputs, in order.
    #[inline(never)]
    pub(crate) fn fill_u64s(&mut self, out: &mut [u64]) {
        for word in out {
            *word = self.next_u64();
        }
    }

    /// Fills `buf` with random bytes: the little-endian outputs in order,
    /// the last one cut short when `buf.len()` is not a multiple of 8.
    pub(crate) fn fill_bytes(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let last = self.next_u64().to_le_bytes();
            tail.copy_from_slice(&last[..tail.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_sequence() {
        // From the reference C implementation seeded with s = {1, 2, 3, 4}.
        let mut rng = Xoshiro256PlusPlus {
            state: [1, 2, 3, 4],
        };
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, [41943041, 58720359, 3588806011781223]);
    }

    #[test]
    fn streams_differ_by_purpose_seed_and_place() {
        let first = |p, s, c| Xoshiro256PlusPlus::derive(p, s, c).next_u64();
        let base = first(Purpose::Block, 1, [2, 3]);
        assert_eq!(base, first(Purpose::Block, 1, [2, 3]));
        assert_ne!(base, first(Purpose::FileSize, 1, [2, 3]));
        assert_ne!(base, first(Purpose::Block, 2, [2, 3]));
        assert_ne!(base, first(Purpose::Block, 1, [3, 2]));
    }

    #[test]
    fn below_and_f64_stay_in_range() {
        let mut rng = Xoshiro256PlusPlus::derive(Purpose::FileSize, 0, [0, 0]);
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
