//! Sequential encryption and decryption of byte streams (`-` for stdin or
//! stdout, pipes, sockets).
//!
//! A stream is read one chunk ahead, so that the last chunk is known when it
//! is sealed; each chunk is written as soon as it is sealed or, when
//! decrypting, as soon as it authenticates. A consumer of decrypted stdout
//! therefore sees the plaintext of the chunks before a damaged one and must
//! trust the exit status, exactly as with age: a failure is always reported
//! and exits non-zero. To a file, nothing appears under the final name
//! unless the whole stream authenticates.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use cryptstream_format::envelope::{read_full, DETECT_LEN};
use cryptstream_format::{
    EntryKind, EntryMeta, Header, Layout, Mtime, OpeningReader, MAX_HEADER_LEN,
};
use cryptstream_output::{AtomicFile, DirFd, Timestamp};
use cryptstream_pool::{Cancel, SecretBuf};
use thiserror::Error;

use crate::{Direction, Overwrite, Reason, Settings, Shown};

/// Bytes moved per read while streaming: large enough that a pipe is
/// drained in few system calls.
const STREAM_BUFFER: usize = 1 << 20;

/// A writer that counts the bytes through it and reports them to the test
/// build's hooks.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    total: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.total += n as u64;
        crate::hooks::after_write(self.total);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a stream's input is, when it is a file: its length, mode and mtime
/// go into the prefix (where the container records them).
pub struct StreamSource {
    /// Plaintext length, which the stream must then have exactly.
    pub len: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Mtime,
}

/// What a stream did.
#[derive(Debug)]
pub struct Streamed {
    /// When encrypting, the input's mode; when decrypting, the mode and
    /// mtime the prefix records (mode 0 and no mtime where the container
    /// records neither).
    pub meta: EntryMeta,
    /// Plaintext bytes.
    pub plaintext_len: u64,
    /// Bytes of the encrypted side as they crossed the stream (encoding
    /// included).
    pub encrypted_len: u64,
    /// The payload's chunks, as a [`Layout`] with the prefix length.
    pub layout: Option<Layout>,
}

/// Encrypts `input` to `output` with the run's sealing envelope (its
/// prefix, encoding and chunk cipher), one chunk ahead, writing each chunk
/// as soon as it is sealed.
///
/// # Errors
/// [`Reason::Read`], [`Reason::Write`], [`Reason::Changed`], or the
/// envelope's refusal.
pub fn encrypt_stream(
    settings: &Settings,
    input: &mut dyn Read,
    output: &mut dyn Write,
    source: Option<&StreamSource>,
) -> Result<Streamed, Reason> {
    let envelope = settings.envelopes().sealer();
    let meta = EntryMeta {
        kind: EntryKind::File,
        plaintext_len: source.map(|s| s.len),
        mode: source.map_or(0, |s| s.mode & 0o7777),
        mtime: source.map(|s| s.mtime),
    };
    let mut counted = Counted {
        inner: output,
        total: 0,
    };
    let mut sealing = envelope.seal_stream(&meta, Box::new(&mut counted))?;
    let chunk_size = sealing.chunk_size();
    let mut buf = SecretBuf::new();
    let buf = buf.resize(STREAM_BUFFER);
    loop {
        let n = read_full(input, buf).map_err(Reason::Read)?;
        if n == 0 {
            break;
        }
        sealing.write_all(&buf[..n]).map_err(Reason::Write)?;
    }
    let (encoded, total) = sealing.finish().map_err(Reason::Write)?;
    encoded.finish().map_err(Reason::Write)?;
    if let Some(expected) = meta.plaintext_len {
        if expected != total {
            return Err(Reason::Changed {
                before: expected,
                after: total,
            });
        }
    }
    let encrypted_len = counted.total;
    Ok(Streamed {
        meta,
        plaintext_len: total,
        encrypted_len,
        layout: Layout::new(0, chunk_size, total).ok(),
    })
}

/// Decrypts `input` with the run's envelopes (the one its first bytes name)
/// and writes the plaintext of each authenticated chunk to `output`. Only
/// regular-file entries can be streamed: a link entry needs a name to be
/// restored under.
///
/// # Errors
/// The envelope's refusal (not a known file, wrong key, chunk `i` failed,
/// truncated), [`Reason::Link`] for a link entry, or an I/O [`Reason`].
pub fn decrypt_stream(
    settings: &Settings,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Streamed, Reason> {
    let mut first = vec![0u8; DETECT_LEN];
    let got = read_full(input, &mut first).map_err(Reason::Read)?;
    first.truncate(got);
    let (envelope, processing) = settings.envelopes().detect(&first);
    let reader = BufReader::with_capacity(STREAM_BUFFER, io::Cursor::new(first).chain(input));
    let (opened, payload) = envelope.open_stream(processing, Box::new(reader))?;
    if opened.meta.kind != EntryKind::File {
        return Err(Reason::Link(format!(
            "is a {} entry: decrypt it to a file name or into a directory, not to a stream",
            opened.meta.kind.name()
        )));
    }
    let (prefix_len, chunk_size) = (opened.prefix_len, opened.cipher.chunk_size());
    let mut opening = OpeningReader::new(payload, opened.cipher, opened.meta.plaintext_len);
    let mut counted = Counted {
        inner: output,
        total: 0,
    };
    let mut buf = SecretBuf::new();
    let buf = buf.resize(STREAM_BUFFER);
    loop {
        let n = read_full(&mut opening, buf).map_err(|e| match envelope.stream_error(&e) {
            Some(failure) => failure.into(),
            None => Reason::Read(e),
        })?;
        if n == 0 {
            break;
        }
        counted.write_all(&buf[..n]).map_err(Reason::Write)?;
    }
    counted.flush().map_err(Reason::Write)?;
    let plaintext_len = opening.plaintext_len();
    let layout = Layout::new(prefix_len, chunk_size, plaintext_len).ok();
    Ok(Streamed {
        meta: opened.meta,
        plaintext_len,
        encrypted_len: layout.map_or(0, |l| l.ciphertext_len()),
        layout,
    })
}

/// The layout of `encrypted` when it opens with the envelopes of
/// `settings` and decrypts to exactly the bytes of `plain`; `None` when it
/// does not, or when either cannot be read. Stops at the first difference.
pub fn decrypts_to(
    encrypted: &mut dyn Read,
    plain: &mut dyn Read,
    settings: &Settings,
) -> Option<Layout> {
    let mut compare = Compare {
        plain,
        theirs: Vec::new(),
    };
    let streamed = decrypt_stream(settings, encrypted, &mut compare).ok()?;
    let at_end = matches!(read_full(compare.plain, &mut [0u8; 1]), Ok(0));
    if at_end {
        streamed.layout
    } else {
        None
    }
}

/// A writer that only checks that what it is given comes next in `plain`.
struct Compare<'a> {
    plain: &'a mut dyn Read,
    theirs: Vec<u8>,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.theirs.resize(buf.len(), 0);
        let got = read_full(self.plain, &mut self.theirs)?;
        if got != buf.len() || self.theirs != buf {
            return Err(io::Error::other("the contents differ"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a stream comes from.
pub enum StreamInput<'a> {
    /// A reader (stdin): no length, mode or mtime is recorded.
    Reader(Box<dyn Read + 'a>),
    /// A file by name, whose length, mode and mtime go into the prefix.
    File(&'a Path),
}

/// Where a stream goes.
pub enum StreamOutput<'a> {
    /// A writer (stdout): each chunk's plaintext is written as soon as it
    /// authenticates, so its reader must trust the exit status.
    Writer(Box<dyn Write + 'a>),
    /// A file by name: written to a temp file and committed under the name,
    /// with its mode (and, decrypting, its mtime), only once whole.
    File(&'a Path),
}

/// How [`run_stream`] ended well.
#[derive(Debug)]
pub enum StreamOutcome {
    /// The stream was processed.
    Done(Streamed),
    /// The output file exists and the run keeps existing outputs.
    KeptExisting,
    /// A signal stopped it; no temp output is left.
    Cancelled,
}

/// Why a stream failed, with the file it is about, in one line.
#[derive(Debug, Error)]
pub enum StreamError {
    /// An output name ending in `/` needs an input name to name a file in it.
    #[error("{0}: a directory output needs a file or directory INPUT, not stdin: give the output file name")]
    DirectoryOutput(String),
    /// The input is a directory.
    #[error("{0}: is a directory; a directory needs a directory OUTPUT, not -")]
    InputIsDirectory(String),
    /// The input file cannot be examined.
    #[error("{0}: cannot stat: {1}")]
    Stat(String, io::Error),
    /// The output exists and the run refuses existing outputs.
    #[error("{0}: output exists; use --force to replace or --skip-existing to keep")]
    OutputExists(String),
    /// The output path names no file.
    #[error("{0}: not a file name")]
    NotAFileName(String),
    /// The output cannot be created.
    #[error("{0}: cannot create output: {1}")]
    Create(String, io::Error),
    /// The file (input or output) failed for this reason.
    #[error("{0}: {1}")]
    File(String, Reason),
}

/// A reader that fails once `cancel` is set: the signal handlers only
/// raise the flag, and the stream checks it on every read.
struct Cancellable<'a> {
    inner: Box<dyn Read + 'a>,
    cancel: &'a Cancel,
}

impl Read for Cancellable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("interrupted"));
        }
        self.inner.read(buf)
    }
}

/// Reads the cryptstream header at the front of `input` and, when it names
/// a passphrase key, derives that key (cancellably) into the run's keyring.
/// Gives the input with the header put back in front, or `None` when a
/// signal stopped the derivation. A header that cannot be read or parsed
/// is left for the decryption to report.
fn derive_stream_key<'a>(
    settings: &Settings,
    mut input: Box<dyn Read + 'a>,
    cancel: &Cancel,
) -> Result<Option<Box<dyn Read + 'a>>, Reason> {
    let mut prefix = vec![0u8; MAX_HEADER_LEN];
    let got = read_full(&mut input, &mut prefix).map_err(Reason::Read)?;
    prefix.truncate(got);
    if let Ok(header) = Header::parse(&prefix) {
        // Its only error is a cancellation.
        if crate::keys::derive_for_header(&header, settings.keyring(), cancel).is_err() {
            return Ok(None);
        }
    }
    Ok(Some(Box::new(io::Cursor::new(prefix).chain(input))))
}

/// Encrypts or decrypts one stream (`settings.direction()`: encrypt, or
/// decrypt) from `input` to `output`: the policy of every stream, which
/// the CLI only wires to stdin, stdout and names. The checks come before
/// any work (a directory output, a directory input, an existing output);
/// a passphrase key named by a cryptstream header is derived first, where
/// a signal can stop it; an output file appears under its name only when
/// the whole stream authenticated, with its mode (and, decrypting, its
/// mtime) restored.
///
/// # Errors
/// A [`StreamError`] naming the input or the output.
pub fn run_stream(
    settings: &Settings,
    input: StreamInput<'_>,
    output: StreamOutput<'_>,
    cancel: &Cancel,
) -> Result<StreamOutcome, StreamError> {
    if let StreamOutput::File(path) = output {
        if crate::names_directory(path) {
            return Err(StreamError::DirectoryOutput(Shown(path).to_string()));
        }
    }
    let direction = settings.direction();
    let (input, input_name, source): (Box<dyn Read + '_>, String, Option<StreamSource>) =
        match input {
            StreamInput::Reader(reader) => (reader, "-".to_string(), None),
            StreamInput::File(path) => {
                use std::os::unix::fs::PermissionsExt;
                let name = Shown(path).to_string();
                let file = File::open(path)
                    .map_err(|e| StreamError::File(name.clone(), Reason::Open(e)))?;
                let meta = file
                    .metadata()
                    .map_err(|e| StreamError::Stat(name.clone(), e))?;
                if meta.is_dir() {
                    return Err(StreamError::InputIsDirectory(name));
                }
                let mtime = Timestamp::mtime_of(&meta);
                let source = StreamSource {
                    len: meta.len(),
                    mode: meta.permissions().mode(),
                    mtime: Mtime {
                        seconds: mtime.seconds,
                        nanos: mtime.nanos,
                    },
                };
                (Box::new(file), name, Some(source))
            }
        };
    let (mut sink, output_name, atomic): (Box<dyn Write + '_>, String, Option<AtomicFile>) =
        match output {
            StreamOutput::Writer(writer) => (writer, "-".to_string(), None),
            StreamOutput::File(path) => {
                let name = Shown(path).to_string();
                if std::fs::symlink_metadata(path).is_ok() {
                    match settings.overwrite() {
                        Overwrite::SkipExisting => return Ok(StreamOutcome::KeptExisting),
                        Overwrite::Refuse => return Err(StreamError::OutputExists(name)),
                        Overwrite::Force => {}
                    }
                }
                let (dir, file_name) = match (path.parent(), path.file_name()) {
                    (Some(parent), Some(n)) if !parent.as_os_str().is_empty() => (parent, n),
                    (_, Some(n)) => (Path::new("."), n),
                    _ => return Err(StreamError::NotAFileName(name)),
                };
                let dir = DirFd::open(dir).map_err(|e| StreamError::Create(name.clone(), e))?;
                cryptstream_output::remove_stale_temps(&dir);
                let out = AtomicFile::create(&dir, file_name)
                    .map_err(|e| StreamError::Create(name.clone(), e))?;
                let writer = out
                    .file()
                    .try_clone()
                    .map_err(|e| StreamError::Create(name.clone(), e))?;
                (
                    Box::new(io::BufWriter::with_capacity(STREAM_BUFFER, writer)),
                    name,
                    Some(out),
                )
            }
        };
    let input = if direction == Direction::Decrypt && settings.keyring().has_passphrase() {
        match derive_stream_key(settings, input, cancel)
            .map_err(|r| StreamError::File(input_name.clone(), r))?
        {
            Some(input) => input,
            None => return Ok(StreamOutcome::Cancelled),
        }
    } else {
        input
    };
    let mut input = Cancellable {
        inner: input,
        cancel,
    };
    let result = match direction {
        Direction::Encrypt => encrypt_stream(settings, &mut input, &mut sink, source.as_ref()),
        Direction::Decrypt | Direction::Verify => decrypt_stream(settings, &mut input, &mut sink),
    };
    if cancel.is_cancelled() {
        // The temp output (if any) is dropped unlinked.
        return Ok(StreamOutcome::Cancelled);
    }
    let streamed = result.map_err(|r| StreamError::File(input_name, r))?;
    let write_error = |e| StreamError::File(output_name.clone(), Reason::Write(e));
    sink.flush().map_err(write_error)?;
    drop(sink);
    if let Some(out) = atomic {
        out.set_mode(settings.output_mode(streamed.meta.mode))
            .map_err(write_error)?;
        if let (Direction::Decrypt, Some(mtime)) = (direction, streamed.meta.mtime) {
            out.set_mtime(Timestamp {
                seconds: mtime.seconds,
                nanos: mtime.nanos,
            })
            .map_err(write_error)?;
        }
        out.commit(settings.replace(), settings.durable())
            .map_err(write_error)?;
    }
    Ok(StreamOutcome::Done(streamed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use cryptstream_format::{Keyring, MasterKey, MAX_HEADER_LEN as H, MIN_CHUNK_SIZE};

    fn settings() -> Settings {
        let key = || MasterKey::from_key_bytes([9; 32]);
        Settings::builder(Direction::Encrypt, Keyring::new(vec![key()], None))
            .chunk_size(MIN_CHUNK_SIZE)
            .encryption_key(Some(std::sync::Arc::new(key())))
            .build()
    }

    fn encrypted(plain: &[u8]) -> Vec<u8> {
        let source = StreamSource {
            len: plain.len() as u64,
            mode: 0o600,
            mtime: Mtime {
                seconds: 1,
                nanos: 2,
            },
        };
        let mut out = Vec::new();
        encrypt_stream(&settings(), &mut &plain[..], &mut out, Some(&source)).expect("encrypts");
        out
    }

    fn opening(key: u8) -> Settings {
        let keyring = Keyring::new(vec![MasterKey::from_key_bytes([key; 32])], None);
        Settings::builder(Direction::Decrypt, keyring).build()
    }

    #[test]
    fn decrypts_to_accepts_only_the_exact_plaintext() {
        let keyring = opening(9);
        let plain: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let enc = encrypted(&plain);
        let check = |plain: &[u8]| decrypts_to(&mut &enc[..], &mut &plain[..], &keyring);
        let layout = check(&plain).expect("the true plaintext matches");
        assert_eq!(layout.plaintext_len(), 5000);
        let mut changed = plain.clone();
        changed[4321] ^= 1;
        assert!(check(&changed).is_none(), "one byte differs");
        assert!(check(&plain[..4999]).is_none(), "plaintext shorter");
        let mut longer = plain.clone();
        longer.push(0);
        assert!(check(&longer).is_none(), "plaintext longer");
        let other = opening(8);
        assert!(decrypts_to(&mut &enc[..], &mut &plain[..], &other).is_none());
        let mut tampered = enc.clone();
        tampered[H + 10] ^= 1;
        assert!(decrypts_to(&mut &tampered[..], &mut &plain[..], &keyring).is_none());
    }

    #[test]
    fn a_stream_round_trips_and_a_wrong_length_is_refused() {
        let keyring = opening(9);
        let plain = vec![7u8; 3 * MIN_CHUNK_SIZE as usize];
        let enc = encrypted(&plain);
        let mut back = Vec::new();
        let streamed = decrypt_stream(&keyring, &mut &enc[..], &mut back).unwrap();
        assert_eq!(
            (back, streamed.plaintext_len, streamed.meta.mode),
            (plain.clone(), plain.len() as u64, 0o600)
        );
        let source = StreamSource {
            len: 10,
            mode: 0,
            mtime: Mtime {
                seconds: 0,
                nanos: 0,
            },
        };
        let err = encrypt_stream(&settings(), &mut &plain[..], &mut Vec::new(), Some(&source))
            .unwrap_err();
        assert!(matches!(err, Reason::Changed { .. }), "{err}");
    }
}
