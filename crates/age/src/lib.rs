//! The age v1 file format (<https://c2sp.org/age>), with the payload left
//! to cryptstream's chunk machinery.
//!
//! An age file is a textual [`Header`] that wraps a random 128-bit
//! [`FileKey`] once per recipient (a [`Stanza`] each), authenticated by an
//! HMAC under the file key, then a 16-byte nonce and the payload: STREAM
//! chunks of 64 KiB sealed with ChaCha20-Poly1305 under
//! HKDF-SHA-256(file key, nonce, "payload"). The payload nonce of chunk `i`
//! is the same as cryptstream's [`NonceScheme::Stream`], so this crate only
//! makes and reads headers and hands out a [`ChunkCipher`]; the engine
//! seals and opens chunks in parallel and places them with
//! [`cryptstream_format::Layout`] (header length = header + nonce, chunk
//! size [`CHUNK_SIZE`]).
//!
//! Writing: [`seal`] wraps a new file key for each [`Recipient`] (X25519
//! `age1...`, post-quantum hybrid `age1pq1...`, an SSH key `ssh-ed25519` or
//! `ssh-rsa` ([`SshRecipient`]), or a scrypt passphrase)
//! and gives the header bytes and the chunk cipher. Reading: [`open`]
//! finds the file key with the caller's [`Identity`]s, checks the MAC and
//! gives the chunk cipher. [`ArmoredReader`] and [`ArmoredWriter`] add or
//! remove the PEM armor as a stream. Failures are [`AgeError`]s whose
//! [`FailureClass`] is the test kit's (`no match`, `HMAC failure`,
//! `header failure`, `payload failure`, `armor failure`).
//!
//! [`AgeEnvelope`] puts all of this behind the format crate's
//! [`cryptstream_format::Envelope`] trait, which is all the engine sees of
//! age: detection, header and nonce, payload cipher, armor as an in-order
//! encoding, and an export from which a worker process builds it again.
//!
//! Hostile headers cost bounded work: at most [`MAX_HEADER_LEN`] bytes and
//! [`MAX_STANZAS`] stanzas, and scrypt work factors up to
//! [`MAX_SCRYPT_LOG_N`].

#![deny(missing_docs)]

mod armor;
mod crypto;
mod encoding;
mod envelope;
mod error;
mod header;
mod keys;
mod pq;
mod ssh;

use std::io::{BufRead, Read, Write};

use cryptstream_format::{ChunkCipher, Cipher, NonceScheme, OpeningReader, SealingWriter};

pub use armor::{
    armor_error, ArmoredReader, ArmoredWriter, BEGIN as ARMOR_BEGIN, END as ARMOR_END,
};
pub use encoding::{b64_encode, bech32_decode, bech32_encode};
pub use envelope::{AgeEnvelope, ENVELOPE_NAME};
pub use error::{AgeError, FailureClass};
pub use header::{Header, Stanza, MAX_HEADER_LEN, MAX_STANZAS, VERSION_LINE};
pub use keys::{
    parse_identity_file, parse_recipients_file, FileKey, Identity, Recipient, FILE_KEY_LEN,
    MAX_SCRYPT_LOG_N, SCRYPT_LOG_N,
};
pub use ssh::{
    Ed25519Identity, Ed25519Recipient, RsaIdentity, RsaRecipient, SshIdentity, SshRecipient,
};

/// Plaintext bytes per payload chunk.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// Bytes of the payload nonce that follows the header.
pub const NONCE_LEN: usize = 16;

/// How an age file is encoded, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Binary: the header's version line comes first.
    Binary,
    /// PEM-style ASCII armor.
    Armored,
}

impl Encoding {
    /// The encoding of a file that starts with `prefix` (its first
    /// [`DETECT_LEN`] bytes, or the whole file when shorter), or `None` when
    /// it is not an age file. Any `age-encryption.org/` version line is
    /// binary age, so that an unsupported version is reported as such; text
    /// that looks like PEM (`-----` after leading whitespace, or the age
    /// begin line anywhere in the prefix) is armored age, so that a damaged
    /// armor is reported as an armor failure rather than as a foreign file.
    pub fn detect(prefix: &[u8]) -> Option<Encoding> {
        if prefix.starts_with(b"age-encryption.org/") {
            return Some(Encoding::Binary);
        }
        let start = prefix
            .iter()
            .position(|&c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(prefix.len());
        let begin = ARMOR_BEGIN.as_bytes();
        let pem_like = prefix[start..].starts_with(b"-----") || contains(prefix, begin);
        pem_like.then_some(Encoding::Armored)
    }
}

/// Whether `needle` occurs in `haystack`. Every file a decrypt run meets
/// is detected, and comparing the needle at each of 1 KiB of offsets cost
/// more than opening a small file: this looks for the needle's first byte
/// (a vectorised scan) and compares only where it is.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    let mut rest = haystack;
    while let Some(at) = memchr::memchr(first, rest) {
        if rest[at..].starts_with(needle) {
            return true;
        }
        rest = &rest[at + 1..];
    }
    false
}

/// How many leading bytes [`Encoding::detect`] looks at: what every
/// envelope is given.
pub const DETECT_LEN: usize = cryptstream_format::envelope::DETECT_LEN;

/// The payload cipher of a file: ChaCha20-Poly1305 under
/// HKDF-SHA-256(file key, salt = nonce, info "payload"), STREAM nonces, no
/// associated data, 64 KiB chunks.
pub fn payload_cipher(file_key: &FileKey, nonce: &[u8; NONCE_LEN]) -> ChunkCipher {
    let key = file_key.payload_key(nonce);
    ChunkCipher::new(
        Cipher::ChaCha20Poly1305,
        &key,
        NonceScheme::Stream,
        b"",
        CHUNK_SIZE,
    )
}

/// Checks that `recipients` may encrypt one file together: at least one, a
/// passphrase alone, post-quantum recipients not mixed with X25519 ones.
///
/// # Errors
/// [`AgeError::Key`] saying what is wrong.
pub fn check_recipients(recipients: &[Recipient]) -> Result<(), AgeError> {
    keys::check_recipients(recipients)
}

/// A new file's header and nonce, and the cipher of its payload.
pub struct Sealed {
    /// The header followed by the payload nonce: everything before chunk 0.
    pub prefix: Vec<u8>,
    /// Seals the payload's chunks.
    pub cipher: ChunkCipher,
}

/// Starts a new file for `recipients`: a fresh file key wrapped for each,
/// the header MAC, and a fresh payload nonce.
///
/// # Errors
/// [`AgeError::Key`] for a set of recipients age does not allow together
/// (none, a passphrase with others, post-quantum with X25519), or
/// [`AgeError::Random`].
pub fn seal(recipients: &[Recipient]) -> Result<Sealed, AgeError> {
    check_recipients(recipients)?;
    let file_key = FileKey::generate()?;
    let stanzas = recipients
        .iter()
        .map(|r| r.wrap(&file_key))
        .collect::<Result<Vec<_>, _>>()?;
    let header = Header::seal(stanzas, &file_key);
    let nonce = crypto::random::<NONCE_LEN>()?;
    let mut prefix = header.as_bytes().to_vec();
    prefix.extend_from_slice(&nonce[..]);
    Ok(Sealed {
        prefix,
        cipher: payload_cipher(&file_key, &nonce),
    })
}

/// Opens `header` with `identities` and the payload `nonce`: finds the file
/// key, checks the header MAC, and gives the payload cipher.
///
/// # Errors
/// [`AgeError::NoMatch`], [`AgeError::Header`] (a malformed stanza of a
/// known type, an scrypt stanza with others, a work factor above the cap)
/// or [`AgeError::Hmac`].
pub fn open(
    header: &Header,
    nonce: &[u8; NONCE_LEN],
    identities: &[Identity],
) -> Result<ChunkCipher, AgeError> {
    let file_key = keys::unwrap_file_key(&header.stanzas, identities)?;
    if !header.mac_matches(&file_key) {
        return Err(AgeError::Hmac);
    }
    Ok(payload_cipher(&file_key, nonce))
}

/// Reads the payload nonce that follows the header.
///
/// # Errors
/// A header failure when the input ends first (as the test kit classes it).
pub fn read_nonce(input: &mut dyn Read) -> Result<[u8; NONCE_LEN], AgeError> {
    let mut nonce = [0u8; NONCE_LEN];
    let mut got = 0;
    while got < NONCE_LEN {
        match input.read(&mut nonce[got..]) {
            Ok(0) => {
                return Err(AgeError::Header(
                    "the file ends before the payload nonce".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(armor_error(&e)
                    .unwrap_or_else(|| AgeError::Header(format!("cannot read the nonce: {e}"))))
            }
        }
    }
    Ok(nonce)
}

/// Opens an age stream (binary; wrap armored input in an
/// [`ArmoredReader`] first): reads the header and nonce, and returns a
/// reader of the plaintext, which releases only authenticated chunks.
///
/// # Errors
/// As [`Header::read`] and [`open`].
pub fn open_stream<R: BufRead>(
    mut input: R,
    identities: &[Identity],
) -> Result<OpeningReader<R>, AgeError> {
    let header = Header::read(&mut input)?;
    let nonce = read_nonce(&mut input)?;
    let cipher = open(&header, &nonce, identities)?;
    Ok(OpeningReader::new(input, cipher, None))
}

/// Starts an age stream to `output` for `recipients`: writes the header and
/// nonce, and returns the writer that seals the payload
/// ([`SealingWriter::finish`] ends it).
///
/// # Errors
/// As [`seal`], or the writer's error as [`AgeError::Key`].
pub fn seal_stream<W: Write>(
    mut output: W,
    recipients: &[Recipient],
) -> Result<SealingWriter<W>, std::io::Error> {
    let sealed = seal(recipients).map_err(std::io::Error::other)?;
    output.write_all(&sealed.prefix)?;
    Ok(SealingWriter::new(output, sealed.cipher))
}

/// The class of an error met while reading the payload through an
/// [`OpeningReader`] (possibly over an [`ArmoredReader`]): armor failures
/// stay armor failures, everything else about the bytes is a payload
/// failure; `None` for an I/O error.
pub fn payload_error(e: &std::io::Error) -> Option<AgeError> {
    if let Some(age) = armor_error(e) {
        return Some(age);
    }
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<cryptstream_format::FormatError>())
        .map(|f| AgeError::Payload(f.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptstream_format::{Layout, TAG_LEN};

    /// Armor is recognised by its begin line anywhere in the prefix, or
    /// by `-----` after leading blank space; dashes alone are not armor,
    /// and the age version line is binary age.
    #[test]
    fn detection_finds_the_begin_line_anywhere_and_nothing_in_dashes() {
        let mut prefix = b"some text - with - dashes --- ".to_vec();
        assert_eq!(Encoding::detect(&prefix), None);
        prefix.extend_from_slice(ARMOR_BEGIN.as_bytes());
        assert_eq!(Encoding::detect(&prefix), Some(Encoding::Armored));
        let cut = &ARMOR_BEGIN.as_bytes()[..ARMOR_BEGIN.len() - 1];
        assert_eq!(Encoding::detect(&[b"x-", cut].concat()), None);
        assert_eq!(Encoding::detect(b" \n-----"), Some(Encoding::Armored));
        assert_eq!(
            Encoding::detect(b"age-encryption.org/v1\n"),
            Some(Encoding::Binary)
        );
        assert_eq!(Encoding::detect(b""), None);
    }

    /// Bytes before chunk 0 of a typical one-recipient X25519 file (header
    /// and payload nonce); any value works, the arithmetic must not care.
    const PREFIX_LEN: usize = 200 + NONCE_LEN;
    /// A full chunk on disk.
    const STRIDE: u64 = CHUNK_SIZE as u64 + TAG_LEN as u64;

    /// What the 2 GiB interop test (now the benchsuite's `big-files.sh`)
    /// relied on, as arithmetic: for payloads around 2^31, 2^32 and 2^36
    /// bytes, the chunk count, where each chunk starts, and the last chunk,
    /// which is full when the payload is a whole number of chunks (age
    /// never writes an empty last chunk after a full one) and partial
    /// otherwise; the file length gives the same layout back, and lengths
    /// no age file can have are refused.
    #[test]
    fn payload_chunks_past_2_pow_32_bytes_are_counted_and_placed_exactly() {
        let chunk = u64::from(CHUNK_SIZE);
        for base in [1u64 << 31, 1 << 32, 1 << 36] {
            for len in [base - 1, base, base + 1, base + chunk - 1, base + chunk] {
                let layout = Layout::new(PREFIX_LEN, CHUNK_SIZE, len).unwrap();
                let count = len.div_ceil(chunk);
                assert_eq!(layout.chunk_count(), count, "len {len}");
                let last = count - 1;
                let last_len = len - last * chunk;
                assert!(last_len > 0 && last_len <= chunk);
                assert_eq!(layout.chunk_plaintext_len(last) as u64, last_len);
                assert!(layout.is_last(last) && !layout.is_last(last - 1));
                assert_eq!(
                    u128::from(layout.chunk_offset(last)),
                    PREFIX_LEN as u128 + u128::from(last) * u128::from(STRIDE)
                );
                let file_len = PREFIX_LEN as u64 + len + count * TAG_LEN as u64;
                assert_eq!(layout.ciphertext_len(), file_len);
                assert_eq!(
                    Layout::from_ciphertext_len(PREFIX_LEN, CHUNK_SIZE, file_len).unwrap(),
                    layout
                );
                // The chunk that holds payload byte `base`.
                let index = base / chunk;
                assert_eq!(layout.plaintext_offset(index), index * chunk);
                assert_eq!(
                    layout.chunk_plaintext_len(index) as u64,
                    len.saturating_sub(index * chunk).min(chunk)
                );
            }
            // A whole number of chunks followed by an empty (tag-only) chunk
            // is not an age file.
            let count = base / chunk;
            let with_empty_last = PREFIX_LEN as u64 + count * STRIDE + TAG_LEN as u64;
            assert!(Layout::from_ciphertext_len(PREFIX_LEN, CHUNK_SIZE, with_empty_last).is_err());
        }
    }

    /// The payload nonce of chunk `index` built by hand as the age spec
    /// words it: an 11-byte big-endian counter, then 1 for the last chunk.
    fn age_nonce(index: u64, last: bool) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..11].copy_from_slice(&u128::from(index).to_be_bytes()[16 - 11..]);
        nonce[11] = u8::from(last);
        nonce
    }

    /// Chunks sealed by [`payload_cipher`] at indexes that start past 2^32
    /// payload bytes (index 2^16 with 64 KiB chunks) and past 2^32 chunks
    /// open with the age construction computed here from the spec (HKDF of
    /// the file key, a hand-built nonce), and only as the chunk they are.
    #[test]
    fn payload_chunks_past_2_pow_32_bytes_open_with_the_spec_nonce() {
        let file_key = FileKey::from_bytes([0x42; FILE_KEY_LEN]);
        let nonce = [0x17; NONCE_LEN];
        let cipher = payload_cipher(&file_key, &nonce);
        let key = crypto::hkdf(&nonce, file_key.expose(), b"payload");
        let first_past_4gib = (1u64 << 32) / u64::from(CHUNK_SIZE);
        for (index, last) in [
            (first_past_4gib - 1, false),
            (first_past_4gib, false),
            (first_past_4gib, true),
            (1 << 32, true),
            ((1 << 36) + 3, false),
        ] {
            let mut chunk = vec![0x5a; 1000 + TAG_LEN];
            cipher.seal_in_place(index, last, &mut chunk);
            let plain = crypto::open(&key, age_nonce(index, last), &chunk)
                .unwrap_or_else(|| panic!("chunk {index} (last: {last}) opens as the spec says"));
            assert_eq!(&plain[..], &[0x5a; 1000][..]);
            let wrapped = index & u64::from(u32::MAX);
            for (other, other_last) in [(wrapped, last), (index, !last), (index + 1, last)] {
                if (other, other_last) != (index, last) {
                    assert!(crypto::open(&key, age_nonce(other, other_last), &chunk).is_none());
                }
            }
        }
    }

    /// A passphrase (scrypt) recipient cannot be combined with others when
    /// sealing, and a header holding an scrypt stanza beside another is
    /// refused when opening, whichever identity is offered (age spec).
    #[test]
    fn a_passphrase_beside_other_recipients_is_refused_both_ways() {
        let identity = Identity::generate_x25519().unwrap();
        let x25519 = identity.recipient().unwrap();
        let passphrase = || Recipient::Scrypt {
            passphrase: zeroize::Zeroizing::new(b"secret".to_vec()),
            log_n: 10,
        };
        for recipients in [
            vec![passphrase(), x25519.clone()],
            vec![x25519.clone(), passphrase()],
            vec![passphrase(), passphrase()],
        ] {
            assert!(matches!(seal(&recipients), Err(AgeError::Key(_))));
        }
        let file_key = FileKey::from_bytes([9; FILE_KEY_LEN]);
        let stanzas = vec![
            passphrase().wrap(&file_key).unwrap(),
            x25519.wrap(&file_key).unwrap(),
        ];
        let header = Header::seal(stanzas, &file_key);
        let by_passphrase = Identity::passphrase(zeroize::Zeroizing::new(b"secret".to_vec()));
        for identities in [vec![identity], vec![by_passphrase]] {
            let refused = open(&header, &[0; NONCE_LEN], &identities).err();
            assert!(
                matches!(&refused, Some(AgeError::Header(why)) if why.contains("only stanza")),
                "{refused:?}"
            );
        }
    }
}
