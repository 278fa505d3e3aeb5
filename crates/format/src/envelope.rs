//! The envelope seam: what wraps a payload of sealed chunks.
//!
//! Every container this project reads or writes is a prefix (a header, and
//! for age a payload nonce) followed by chunks sealed with a
//! [`ChunkCipher`]. An [`Envelope`] is one such container: it recognises
//! its files from their first bytes ([`Envelope::detect`]), writes a new
//! prefix and gives the cipher of the chunks that follow
//! ([`Envelope::seal`]), and reads a prefix back, giving its length, the
//! cipher and what the prefix records ([`Envelope::open`]). Where its
//! files are encoded so that chunks do not sit at computable offsets (the
//! ASCII armor of age) it says so ([`Processing::InOrder`]) and wraps the
//! stream ([`Envelope::seal_stream`], [`Envelope::open_stream`]).
//!
//! cryptstream's own format is [`NativeEnvelope`] here; age's lives in the
//! `cryptstream-age` crate. Engines see only the trait, the way rage's
//! `Identity`/`Recipient` traits let new key types plug in: a third
//! container is a third implementation, and no engine changes.

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::{
    seal_header, ChunkCipher, Cipher, EntryKind, FormatError, Header, HeaderParams, Keyring,
    Layout, MasterKey, Mtime, SealingWriter, MAX_HEADER_LEN, MIN_HEADER_PREFIX, SALT_LEN,
};

/// How many leading bytes [`Envelope::detect`] is given (fewer when the
/// file is shorter).
pub const DETECT_LEN: usize = 1024;

/// How the chunks of a file can be processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processing {
    /// Chunks sit at offsets a [`Layout`] computes: any worker may seal or
    /// open any run of them, with positional I/O.
    Chunked,
    /// The file is encoded as a whole (age's armor): it is read and written
    /// start to end, by one worker.
    InOrder,
}

/// What a prefix records about its payload, or what a new one should.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// What the payload is: a file's contents or a link.
    pub kind: EntryKind,
    /// The payload's length, when recorded.
    pub plaintext_len: Option<u64>,
    /// Permission bits (0 when the container records none).
    pub mode: u32,
    /// Modification time, when recorded.
    pub mtime: Option<Mtime>,
}

impl EntryMeta {
    /// A regular file's contents of unknown length, with no mode or mtime.
    pub fn stream() -> EntryMeta {
        EntryMeta {
            kind: EntryKind::File,
            plaintext_len: None,
            mode: 0,
            mtime: None,
        }
    }
}

/// How the files an envelope writes are named, and what a tree walk can
/// store in them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Naming {
    /// The suffix of encrypted names (`.cst`, `.age`).
    pub suffix: &'static str,
    /// Whether symbolic links and second names of a file are stored as
    /// entries of their own (else links are skipped and a second name is
    /// encrypted again as a file).
    pub holds_links: bool,
}

/// A new file's prefix and the cipher of its chunks.
pub struct SealedPrefix {
    /// Everything before chunk 0.
    pub prefix: Vec<u8>,
    /// Seals the chunks (its chunk size is the file's).
    pub cipher: ChunkCipher,
}

/// A prefix read back and authenticated.
pub struct OpenedPrefix {
    /// Bytes before chunk 0.
    pub prefix_len: usize,
    /// Opens the chunks (its chunk size is the file's).
    pub cipher: ChunkCipher,
    /// What the prefix records.
    pub meta: EntryMeta,
}

impl OpenedPrefix {
    /// The layout of a file of `file_len` bytes with this prefix, checked
    /// against the recorded plaintext length when there is one.
    ///
    /// # Errors
    /// [`FormatError::BadLength`] for a length no file can have, or
    /// [`FormatError::LengthMismatch`] when it differs from the recorded one.
    pub fn layout(&self, file_len: u64) -> Result<Layout, FormatError> {
        let chunk_size = self.cipher.chunk_size();
        let layout = Layout::from_ciphertext_len(self.prefix_len, chunk_size, file_len)?;
        if let Some(len) = self.meta.plaintext_len {
            let expected = Layout::new(self.prefix_len, chunk_size, len)?.ciphertext_len();
            if expected != file_len {
                return Err(FormatError::LengthMismatch {
                    expected,
                    actual: file_len,
                });
            }
        }
        Ok(layout)
    }
}

/// Why an envelope refused a file.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// The bytes are not a valid cryptstream file for these keys.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The container's own failure (an age failure class, for example),
    /// as the container words it.
    #[error("{0}")]
    Container(Box<dyn std::error::Error + Send + Sync>),
    /// The input could not be read.
    #[error("cannot read: {0}")]
    Read(io::Error),
    /// The output could not be written.
    #[error("cannot write output: {0}")]
    Write(io::Error),
}

/// A writer that ends an encoding when told (age's armor writes its last
/// line then); a plain writer has nothing to end.
pub trait EncodedWrite: Write {
    /// Ends the encoding and flushes.
    ///
    /// # Errors
    /// The inner writer's error.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

/// An [`EncodedWrite`] that adds nothing.
pub struct PlainWrite<W: Write>(pub W);

impl<W: Write> Write for PlainWrite<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> EncodedWrite for PlainWrite<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

/// One container format; see the module docs.
pub trait Envelope: Send + Sync {
    /// The container's name, for messages (`cryptstream`, `age`).
    fn name(&self) -> &'static str;

    /// How a file starting with `prefix` (its first [`DETECT_LEN`] bytes or
    /// the whole file when shorter) is processed, or `None` when it is not
    /// this container's.
    fn detect(&self, prefix: &[u8]) -> Option<Processing>;

    /// How the files this envelope writes are named.
    fn naming(&self) -> Naming;

    /// How the files [`Envelope::seal`] writes are processed.
    fn sealing(&self) -> Processing {
        Processing::Chunked
    }

    /// Starts a new file whose payload `meta` describes: its prefix and the
    /// cipher of its chunks.
    ///
    /// # Errors
    /// The container's refusal (no key to seal with, an entry kind it cannot
    /// hold, a random source that failed).
    fn seal(&self, meta: &EntryMeta) -> Result<SealedPrefix, EnvelopeError>;

    /// Reads a prefix (binary, at the start of `input`, which is left just
    /// after it) and opens it with the run's keys.
    ///
    /// # Errors
    /// Not this container, damaged, or no key opens it.
    fn open(&self, input: &mut dyn BufRead) -> Result<OpenedPrefix, EnvelopeError>;

    /// A chunk failure of this container's payload, as it words it.
    fn payload_error(&self, error: FormatError) -> EnvelopeError {
        error.into()
    }

    /// The failure behind an error met while reading a payload in order
    /// (through [`Envelope::open_stream`]'s reader), or `None` for an I/O
    /// error of the input itself.
    fn stream_error(&self, error: &io::Error) -> Option<EnvelopeError> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<FormatError>())
            .map(|format| self.payload_error(format.clone()))
    }

    /// Writes a new prefix for `meta` to `output` (through this container's
    /// encoding, [`Envelope::sealing`]) and gives the writer that seals the
    /// payload; [`SealingWriter::finish`] then [`EncodedWrite::finish`] end it.
    ///
    /// # Errors
    /// As [`Envelope::seal`], or [`EnvelopeError::Write`].
    fn seal_stream<'a>(
        &self,
        meta: &EntryMeta,
        output: Box<dyn Write + 'a>,
    ) -> Result<SealingWriter<Box<dyn EncodedWrite + 'a>>, EnvelopeError> {
        let sealed = self.seal(meta)?;
        let mut output: Box<dyn EncodedWrite + 'a> = Box::new(PlainWrite(output));
        output
            .write_all(&sealed.prefix)
            .map_err(EnvelopeError::Write)?;
        Ok(SealingWriter::new(output, sealed.cipher))
    }

    /// Reads a prefix from a stream that [`Envelope::detect`] said is
    /// processed as `processing` (decoding it first where the container
    /// encodes), and gives the prefix and the reader of the chunks.
    ///
    /// # Errors
    /// As [`Envelope::open`].
    fn open_stream<'a>(
        &self,
        processing: Processing,
        mut input: Box<dyn BufRead + 'a>,
    ) -> Result<(OpenedPrefix, Box<dyn BufRead + 'a>), EnvelopeError> {
        let _ = processing;
        let opened = self.open(&mut input)?;
        Ok((opened, input))
    }

    /// What a worker process needs to build this envelope again
    /// ([`Restore`]), secrets included; `None` when the worker builds it
    /// from what it already has (the native keys).
    fn export(&self) -> Option<Zeroizing<Vec<u8>>>;
}

/// Builds an envelope again in a worker process from its
/// [`Envelope::export`].
pub type Restore = fn(&[u8]) -> Result<Arc<dyn Envelope>, EnvelopeError>;

/// Where new native files get their salt.
#[derive(Clone, Copy)]
pub enum SaltSource {
    /// Fresh random bytes per file (always, outside tests).
    Random,
    /// The same salt for every file: test vectors and byte-identical
    /// comparisons only.
    Fixed([u8; SALT_LEN]),
}

/// What seals new native files: the key, the AEAD and the chunk size.
pub struct NativeSealing {
    /// The master key new files are sealed with.
    pub key: Arc<MasterKey>,
    /// The AEAD of new files.
    pub cipher: Cipher,
    /// Plaintext bytes per chunk of new files.
    pub chunk_size: u32,
    /// Where each file's salt comes from.
    pub salt: SaltSource,
}

/// cryptstream's own container (`docs/FORMAT.md`): a [`Header`] then the
/// chunks, opened with a [`Keyring`].
pub struct NativeEnvelope {
    keyring: Arc<Keyring>,
    sealing: Option<NativeSealing>,
}

impl NativeEnvelope {
    /// Opens files with `keyring`, and seals new ones with `sealing` when
    /// given.
    pub fn new(keyring: Arc<Keyring>, sealing: Option<NativeSealing>) -> NativeEnvelope {
        NativeEnvelope { keyring, sealing }
    }

    /// The salt of a new file.
    fn salt(&self, sealing: &NativeSealing) -> Result<[u8; SALT_LEN], FormatError> {
        match sealing.salt {
            SaltSource::Fixed(salt) => Ok(salt),
            SaltSource::Random => crate::salts::fresh_salt(),
        }
    }

    /// Seals `meta` and gives the parsed header with the cipher (the engine
    /// seals link entries whole with it).
    ///
    /// # Errors
    /// As [`seal_header`]; [`FormatError::NoSealingKey`] without a key.
    pub fn seal_header(&self, meta: &EntryMeta) -> Result<(Header, ChunkCipher), FormatError> {
        let sealing = self.sealing.as_ref().ok_or(FormatError::NoSealingKey)?;
        let params = HeaderParams {
            cipher: sealing.cipher,
            chunk_size: sealing.chunk_size,
            plaintext_len: meta.plaintext_len,
            mode: meta.mode & 0o7777,
            kind: meta.kind,
            mtime: meta.mtime,
        };
        seal_header(&sealing.key, &params, self.salt(sealing)?)
    }
}

/// Reads until `buf` is full or the input ends (retrying on EINTR);
/// returns the bytes read. The engine's stream loops use it too.
pub fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match input.read(&mut buf[total..]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

impl Envelope for NativeEnvelope {
    fn name(&self) -> &'static str {
        "cryptstream"
    }

    fn naming(&self) -> Naming {
        Naming {
            suffix: ".cst",
            holds_links: true,
        }
    }

    fn detect(&self, prefix: &[u8]) -> Option<Processing> {
        let n = prefix.len().min(crate::MAGIC.len());
        (n > 0 && prefix[..n] == crate::MAGIC[..n]).then_some(Processing::Chunked)
    }

    fn seal(&self, meta: &EntryMeta) -> Result<SealedPrefix, EnvelopeError> {
        let (header, cipher) = self.seal_header(meta)?;
        Ok(SealedPrefix {
            prefix: header.as_bytes().to_vec(),
            cipher,
        })
    }

    fn open(&self, input: &mut dyn BufRead) -> Result<OpenedPrefix, EnvelopeError> {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let got = read_full(input, &mut bytes[..MIN_HEADER_PREFIX]).map_err(EnvelopeError::Read)?;
        let len = Header::encoded_len(&bytes[..got])?;
        let rest =
            read_full(input, &mut bytes[MIN_HEADER_PREFIX..len]).map_err(EnvelopeError::Read)?;
        let header = Header::parse(&bytes[..MIN_HEADER_PREFIX + rest])?;
        let cipher = self.keyring.unlock(&header)?;
        Ok(OpenedPrefix {
            prefix_len: header.len(),
            cipher,
            meta: EntryMeta {
                kind: header.kind,
                plaintext_len: header.plaintext_len,
                mode: header.mode,
                mtime: header.mtime,
            },
        })
    }

    fn export(&self) -> Option<Zeroizing<Vec<u8>>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntryKind, MasterKey, TAG_LEN};

    fn envelope(sealing: bool) -> NativeEnvelope {
        let key = || MasterKey::from_key_bytes([3; 32]);
        let keyring = Arc::new(Keyring::new(vec![key()], None));
        let sealing = sealing.then(|| NativeSealing {
            key: Arc::new(key()),
            cipher: Cipher::ChaCha20Poly1305,
            chunk_size: crate::MIN_CHUNK_SIZE,
            salt: SaltSource::Fixed([1; SALT_LEN]),
        });
        NativeEnvelope::new(keyring, sealing)
    }

    /// What `seal` writes, `open` reads back: the prefix length, what it
    /// records, and a cipher that opens the chunks the sealing one sealed;
    /// `detect` recognises the magic bytes (and any prefix of them) only.
    #[test]
    fn the_native_envelope_opens_what_it_seals_and_detects_its_magic() {
        let sealer = envelope(true);
        let meta = EntryMeta {
            kind: EntryKind::File,
            plaintext_len: Some(5000),
            mode: 0o640,
            mtime: Some(Mtime {
                seconds: 7,
                nanos: 8,
            }),
        };
        let sealed = sealer.seal(&meta).unwrap();
        let mut chunk = vec![9u8; 100 + TAG_LEN];
        sealed.cipher.seal_in_place(4, true, &mut chunk);
        let opened = envelope(false).open(&mut &sealed.prefix[..]).unwrap();
        assert_eq!(opened.prefix_len, sealed.prefix.len());
        assert_eq!(opened.meta, meta);
        opened.cipher.open_in_place(4, true, &mut chunk).unwrap();
        assert_eq!(&chunk[..100], &[9u8; 100][..]);
        let file_len = Layout::new(opened.prefix_len, crate::MIN_CHUNK_SIZE, 5000)
            .unwrap()
            .ciphertext_len();
        assert_eq!(opened.layout(file_len).unwrap().plaintext_len(), 5000);
        assert!(matches!(
            opened.layout(file_len - 1),
            Err(FormatError::BadLength { .. } | FormatError::LengthMismatch { .. })
        ));
        for prefix in [&sealed.prefix[..], &sealed.prefix[..3]] {
            assert_eq!(sealer.detect(prefix), Some(Processing::Chunked));
        }
        for other in [&b""[..], b"age-encryption.org/v1\n", b"\x89CSX"] {
            assert_eq!(sealer.detect(other), None, "{other:?}");
        }
        assert!(matches!(
            envelope(false).seal(&meta),
            Err(EnvelopeError::Format(FormatError::NoSealingKey))
        ));
    }
}
