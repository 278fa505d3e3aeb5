//! The cryptstream container format, with no threads and no files.
//!
//! A cryptstream file is a [`Header`] (160 bytes in version 2, which this
//! crate writes; 144 bytes in version 1, which it still reads) followed by
//! the payload cut into chunks of `chunk_size` plaintext bytes, each sealed with an AEAD
//! (AES-256-GCM or ChaCha20-Poly1305) following the STREAM construction of
//! Hoang, Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption
//! and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015): the nonce of chunk
//! `i` is the counter `i` plus a flag that marks the last chunk, and the whole
//! header is the associated data of every chunk. Every chunk has the same
//! size on disk except the last one, so [`Layout`] computes where chunk `i`
//! lives from the header length and the chunk size alone: the chunks of one file can be sealed and
//! opened in any order, on any number of threads, and written with positional
//! writes.
//!
//! Keys flow like this: a [`MasterKey`] comes from a key file or from a
//! passphrase stretched with Argon2id ([`KdfParams`]). For every file a fresh
//! random 32-byte salt goes through HKDF-SHA256 with the master key to give
//! that file's payload key, its header MAC key and a key-check value
//! ([`seal_header`] on the way in, [`Keyring::unlock`] on the way out). Both
//! return a [`ChunkCipher`] that seals or opens chunks in place.
//!
//! The payload of a version 2 file is a regular file's contents, a symbolic
//! link's target or a hard link's path ([`EntryKind`]); the header also
//! records permission bits and the modification time ([`Mtime`]).
//!
//! Two ways to use a [`ChunkCipher`] sit side by side: [`ChunkCipher::seal_span`]
//! and [`ChunkCipher::open_span`] work on any run of chunks placed by a
//! [`Layout`] (what parallel engines use), and [`SealingWriter`] /
//! [`OpeningReader`] wrap any `Write` / `Read` to seal or open a stream
//! chunk by chunk on one thread.
//!
//! Above all of this sits the [`Envelope`] seam ([`envelope`]): a container
//! detected from its first bytes, sealed (prefix and cipher) and opened
//! (prefix length, cipher, what the prefix records). [`NativeEnvelope`] is
//! this format; age's lives in the `cryptstream-age` crate, and engines see
//! only the trait.
//!
//! The byte layout is specified in `docs/FORMAT.md`; the test vectors in
//! `tests/data/vectors.json` are checked by `tests/vectors.rs`.

#![deny(missing_docs)]

mod adapters;
pub mod envelope;
mod error;
mod header;
mod key;
mod layout;
mod salts;
mod stream;

pub use adapters::{OpeningReader, SealingWriter};
pub use envelope::{
    EncodedWrite, EntryMeta, Envelope, EnvelopeError, Naming, NativeEnvelope, NativeSealing,
    OpenedPrefix, Processing, Restore, SaltSource, SealedPrefix,
};
pub use error::FormatError;
pub use header::{
    seal_header, seal_to_vec, Cipher, EntryKind, Header, HeaderParams, KeySource, Mtime,
    DEFAULT_CHUNK_SIZE, HEADER_LEN_V1, HEADER_LEN_V2, MAGIC, MAX_CHUNK_SIZE, MAX_HEADER_LEN,
    MAX_LINK_TARGET_LEN, MIN_CHUNK_SIZE, MIN_HEADER_PREFIX, SALT_LEN, VERSION,
};
pub use key::{
    generate_key_file, parse_key_file, KdfParams, KeyId, Keyring, MasterKey, Passphrase, KEY_LEN,
};
pub use layout::Layout;
pub use salts::fill_fresh;
pub use stream::{ChunkCipher, CipherParts, NonceScheme, AEAD_KEY_LEN, TAG_LEN};

/// Fills `buf` with bytes from the kernel's random source (`getrandom(2)`).
///
/// The kernel CSPRNG is used directly rather than aws-lc's DRBG: seeding the
/// latter runs a jitter-entropy collector that costs ~30 ms of CPU at the
/// first call of every process, which dominated short runs.
///
/// # Errors
/// Fails only when the system random source is unavailable.
pub fn fill_random(buf: &mut [u8]) -> Result<(), FormatError> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Err(FormatError::Random),
        }
    }
    Ok(())
}
