//! Why a header or chunk could not be read, in words a person can act on.

use thiserror::Error;

/// Everything that can go wrong while reading or authenticating a file.
///
/// The messages are written for people: they say what is wrong and, where
/// it helps, what to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The file does not start with the cryptstream magic bytes.
    #[error("not a cryptstream file")]
    NotCryptstream,
    /// The file is shorter than its header.
    #[error("not a cryptstream file or truncated header (only {len} bytes)")]
    ShortHeader {
        /// How many bytes there were.
        len: usize,
    },
    /// The version byte names a format this build does not know.
    #[error("unsupported format version {0} (this build reads versions 1 to {v})", v = crate::VERSION)]
    UnsupportedVersion(u8),
    /// The cipher byte is not one of the known ciphers.
    #[error("header damaged: unknown cipher id {0}")]
    UnknownCipher(u8),
    /// The key-derivation byte is not one of the known methods.
    #[error("header damaged: unknown key derivation id {0}")]
    UnknownKdf(u8),
    /// A reserved field is not zero.
    #[error("header damaged: reserved field is not zero")]
    Reserved,
    /// The entry-kind byte is not one of the known kinds.
    #[error("header damaged: unknown entry kind {0}")]
    UnknownEntryKind(u8),
    /// The permission bits have bits set above `0o7777`.
    #[error("header damaged: mode {0:#o} has bits above 07777")]
    Mode(u32),
    /// The modification time is not a valid time or "no time" marker.
    #[error("header damaged: invalid modification time ({seconds} s, {nanos} ns)")]
    Mtime {
        /// The seconds field.
        seconds: i64,
        /// The nanoseconds field.
        nanos: u32,
    },
    /// The stated plaintext length gives a file longer than any length a
    /// 64-bit offset can address.
    #[error("header damaged: plaintext length too large")]
    LengthTooLarge,
    /// A symbolic-link or hard-link entry states a payload length outside
    /// `1..=MAX_LINK_TARGET_LEN` (or none).
    #[error("header damaged: {kind} entry with a link payload of {len:?} bytes (1 to {max} allowed)", max = crate::MAX_LINK_TARGET_LEN)]
    LinkLength {
        /// The entry kind's name.
        kind: &'static str,
        /// The stated plaintext length (`None` = not stated).
        len: Option<u64>,
    },
    /// The chunk size is outside the allowed range.
    #[error("header damaged: chunk size {0} is out of range")]
    ChunkSize(u32),
    /// The Argon2id costs are outside the range this build accepts.
    #[error(
        "Argon2id costs (memory {m_kib} KiB, {t} passes, {p} lanes) are above what this build \
         accepts (damaged or hostile header?): limits are memory {min_m}..={max_m} KiB, \
         1..={max_t} passes, 1..={max_p} lanes, memory at least 8 KiB per lane and \
         memory x passes at most {max_work} KiB",
        min_m = crate::KdfParams::MIN_MEMORY_KIB,
        max_m = crate::KdfParams::MAX_MEMORY_KIB,
        max_t = crate::KdfParams::MAX_PASSES,
        max_p = crate::KdfParams::MAX_LANES,
        max_work = crate::KdfParams::MAX_WORK_KIB_PASSES
    )]
    KdfParams {
        /// Memory cost in KiB.
        m_kib: u32,
        /// Number of passes.
        t: u32,
        /// Degree of parallelism.
        p: u32,
    },
    /// None of the key files given matches the key id in the header.
    #[error("wrong key or not encrypted with this key (file needs key id {needed})")]
    WrongKey {
        /// The key id the file was encrypted for, in hex.
        needed: String,
    },
    /// The passphrase does not produce the key-check value of the header.
    #[error("wrong passphrase or not encrypted with this passphrase")]
    WrongPassphrase,
    /// The file was made with a passphrase but only key files were given.
    #[error("encrypted with a passphrase: give it with --passphrase-file, CRYPTSTREAM_PASSPHRASE or at the prompt")]
    NeedsPassphrase,
    /// The file was made with a key file but only a passphrase was given.
    #[error("encrypted with key file id {needed}: give it with --key-file")]
    NeedsKeyFile {
        /// The key id the file was encrypted for, in hex.
        needed: String,
    },
    /// The header MAC or key check failed although the key is the right one.
    #[error("header authentication failed: file was modified or damaged")]
    HeaderModified,
    /// A chunk did not authenticate.
    #[error("authentication failed at chunk {index}: file was modified or truncated")]
    ChunkAuth {
        /// Index of the first chunk that failed.
        index: u64,
    },
    /// The ciphertext length cannot be the length of any valid file.
    #[error("file was truncated or has extra bytes ({len} bytes after the header is not a valid length)")]
    BadLength {
        /// Bytes after the header.
        len: u64,
    },
    /// The ciphertext length disagrees with the plaintext length in the header.
    #[error("file was truncated or has extra bytes (header promises {expected} bytes of ciphertext, file holds {actual})")]
    LengthMismatch {
        /// Length that the header implies.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// Argon2id failed (for example, could not allocate its memory).
    #[error("passphrase key derivation failed: {0}")]
    Kdf(String),
    /// A key file could not be parsed.
    #[error("not a cryptstream key file: {0}")]
    KeyFile(&'static str),
    /// The system random source failed.
    #[error("the system random number generator failed")]
    Random,
    /// A new file was to be sealed by a run that holds no key to seal with.
    #[error("no key to seal new files with (give -k FILE or a passphrase)")]
    NoSealingKey,
}
