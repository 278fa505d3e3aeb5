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

use std::io::{self, Read, Write};

use cryptstream_format::{
    seal_header, EntryKind, FormatError, Header, HeaderParams, Keyring, Layout, Mtime,
    OpeningReader, SealingWriter, MAX_HEADER_LEN, MIN_HEADER_PREFIX,
};
use cryptstream_pool::SecretBuf;

use crate::file::Reason;
use crate::Settings;

/// Bytes moved per read while streaming: large enough that a pipe is
/// drained in few system calls.
const STREAM_BUFFER: usize = 1 << 20;

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// A writer that reports the bytes through it to the test build's hooks.
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

/// An error from the opening adapter as a [`Reason`]: the format's error
/// when it carries one, a read error otherwise.
fn opening_error(e: io::Error) -> Reason {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<FormatError>())
    {
        Some(format) => Reason::Format(format.clone()),
        None => Reason::Read(e),
    }
}

/// What a stream's input is, when it is a file: its length, mode and mtime
/// go into the header.
pub struct StreamSource {
    /// Plaintext length, which the stream must then have exactly.
    pub len: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Mtime,
}

/// Encrypts `input` to `output` with `settings` (its cipher, chunk size
/// and sealing key) and returns the header and the plaintext bytes read.
///
/// # Errors
/// [`Reason::Read`], [`Reason::Write`] or [`Reason::Changed`].
pub fn encrypt_stream(
    settings: &Settings,
    input: &mut dyn Read,
    output: &mut dyn Write,
    source: Option<&StreamSource>,
) -> Result<(Header, u64), Reason> {
    let params = HeaderParams {
        cipher: settings.cipher,
        chunk_size: settings.chunk_size,
        plaintext_len: source.map(|s| s.len),
        mode: source.map_or(0, |s| s.mode & 0o7777),
        kind: EntryKind::File,
        mtime: source.map(|s| s.mtime),
    };
    let salt = crate::file::file_salt(settings)?;
    let (header, cipher) = seal_header(settings.sealing_key(), &params, salt)?;
    let mut counted = Counted {
        inner: output,
        total: 0,
    };
    counted
        .write_all(header.as_bytes())
        .map_err(Reason::Write)?;
    let mut sealing = SealingWriter::new(&mut counted, cipher);
    let mut buf = SecretBuf::new();
    let buf = buf.resize(STREAM_BUFFER);
    loop {
        let n = read_full(input, buf).map_err(Reason::Read)?;
        if n == 0 {
            break;
        }
        sealing.write_all(&buf[..n]).map_err(Reason::Write)?;
    }
    let (_, total) = sealing.finish().map_err(Reason::Write)?;
    if let Some(expected) = params.plaintext_len {
        if expected != total {
            return Err(Reason::Changed {
                before: expected,
                after: total,
            });
        }
    }
    Ok((header, total))
}

/// Decrypts `input` with the keys of `settings` and writes the plaintext
/// of each authenticated chunk to `output`; returns the header and the
/// plaintext length. Only regular-file entries can be streamed: a link
/// entry needs a name to be restored under.
///
/// # Errors
/// A [`FormatError`] (not a cryptstream file, wrong key, chunk `i` failed,
/// truncated), [`Reason::Link`] for a link entry, or an I/O [`Reason`].
pub fn decrypt_stream(
    keyring: &Keyring,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(Header, u64), Reason> {
    let mut header_bytes = [0u8; MAX_HEADER_LEN];
    let got = read_full(input, &mut header_bytes[..MIN_HEADER_PREFIX]).map_err(Reason::Read)?;
    let len = Header::encoded_len(&header_bytes[..got])?;
    let rest = read_full(input, &mut header_bytes[MIN_HEADER_PREFIX..len]).map_err(Reason::Read)?;
    let header = Header::parse(&header_bytes[..MIN_HEADER_PREFIX + rest])?;
    let cipher = keyring.unlock(&header)?;
    if header.kind != EntryKind::File {
        return Err(Reason::Link(format!(
            "is a {} entry: decrypt it to a file name or into a directory, not to a stream",
            header.kind.name()
        )));
    }
    let mut opening = OpeningReader::new(input, cipher, header.plaintext_len);
    let mut counted = Counted {
        inner: output,
        total: 0,
    };
    let mut buf = SecretBuf::new();
    let buf = buf.resize(STREAM_BUFFER);
    loop {
        let n = read_full(&mut opening, buf).map_err(opening_error)?;
        if n == 0 {
            break;
        }
        counted.write_all(&buf[..n]).map_err(Reason::Write)?;
    }
    counted.flush().map_err(Reason::Write)?;
    Ok((header, opening.plaintext_len()))
}

/// The layout of `encrypted` when it authenticates under `keyring` and
/// decrypts to exactly the bytes of `plain`; `None` when it does not, or
/// when either cannot be read. Stops at the first difference.
pub fn decrypts_to(
    encrypted: &mut dyn Read,
    plain: &mut dyn Read,
    keyring: &Keyring,
) -> Option<Layout> {
    let mut compare = Compare {
        plain,
        theirs: Vec::new(),
    };
    let (header, len) = decrypt_stream(keyring, encrypted, &mut compare).ok()?;
    let at_end = matches!(read_full(compare.plain, &mut [0u8; 1]), Ok(0));
    if at_end {
        header.layout(len).ok()
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

/// Reads the first bytes of `input` and tells whether it is an age file
/// (and in which encoding); the input comes back whole, the bytes read put
/// back in front.
///
/// # Errors
/// The input's read error.
pub fn detect_age<'a>(
    mut input: Box<dyn Read + 'a>,
) -> io::Result<(Option<cryptstream_age::Encoding>, Box<dyn Read + 'a>)> {
    let mut prefix = vec![0u8; cryptstream_age::DETECT_LEN];
    let got = read_full(&mut input, &mut prefix)?;
    prefix.truncate(got);
    let encoding = cryptstream_age::Encoding::detect(&prefix);
    Ok((encoding, Box::new(io::Cursor::new(prefix).chain(input))))
}

/// An error from reading an age payload as a [`Reason`]: the age failure
/// class when the bytes are at fault, a read error otherwise.
fn age_read_error(e: io::Error) -> Reason {
    match cryptstream_age::payload_error(&e) {
        Some(age) => Reason::Age(age),
        None => Reason::Read(e),
    }
}

/// Encrypts `input` to `output` as an age file for the recipients of
/// `settings` (armored when asked); returns the plaintext bytes read,
/// which must be `expected_len` when given.
///
/// # Errors
/// [`Reason::Read`], [`Reason::Write`], [`Reason::Changed`], or
/// [`Reason::Age`] for recipients age does not allow together.
pub fn encrypt_age_stream(
    settings: &Settings,
    input: &mut dyn Read,
    output: &mut dyn Write,
    expected_len: Option<u64>,
) -> Result<u64, Reason> {
    let crate::Container::Age { recipients, armor } = &settings.container else {
        return Err(Reason::Executor("not an age run".into()));
    };
    let mut counted = Counted {
        inner: output,
        total: 0,
    };
    let total = if *armor {
        let armored = cryptstream_age::ArmoredWriter::new(&mut counted).map_err(Reason::Write)?;
        let sealing = age_sealing(armored, recipients)?;
        let (armored, total) = copy_sealed(input, sealing)?;
        armored.finish().map_err(Reason::Write)?;
        total
    } else {
        let sealing = age_sealing(&mut counted, recipients)?;
        copy_sealed(input, sealing)?.1
    };
    if let Some(expected) = expected_len {
        if expected != total {
            return Err(Reason::Changed {
                before: expected,
                after: total,
            });
        }
    }
    Ok(total)
}

/// Writes a new age header to `output` and returns the payload's writer.
fn age_sealing<W: Write>(
    output: W,
    recipients: &[cryptstream_age::Recipient],
) -> Result<SealingWriter<W>, Reason> {
    cryptstream_age::seal_stream(output, recipients).map_err(|e| {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<cryptstream_age::AgeError>())
        {
            Some(age) => Reason::Age(age.clone()),
            None => Reason::Write(e),
        }
    })
}

/// Copies `input` through `sealing` and ends the stream.
fn copy_sealed<W: Write>(
    input: &mut dyn Read,
    mut sealing: SealingWriter<W>,
) -> Result<(W, u64), Reason> {
    let mut buf = SecretBuf::new();
    let buf = buf.resize(STREAM_BUFFER);
    loop {
        let n = read_full(input, buf).map_err(Reason::Read)?;
        if n == 0 {
            break;
        }
        sealing.write_all(&buf[..n]).map_err(Reason::Write)?;
    }
    sealing.finish().map_err(Reason::Write)
}

/// Decrypts an age stream (binary, or armored when `encoding` says so)
/// with `identities` and writes the plaintext of each authenticated chunk
/// to `output`; returns the plaintext length. As for our own format, a
/// reader of `output` may see the chunks before a damaged one and must
/// trust the exit status.
///
/// # Errors
/// [`Reason::Age`] with the failure class, or an I/O [`Reason`].
pub fn decrypt_age_stream(
    identities: &[cryptstream_age::Identity],
    encoding: cryptstream_age::Encoding,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<u64, Reason> {
    let buffered = io::BufReader::with_capacity(STREAM_BUFFER, input);
    let source: Box<dyn io::BufRead + '_> = match encoding {
        cryptstream_age::Encoding::Binary => Box::new(buffered),
        cryptstream_age::Encoding::Armored => Box::new(io::BufReader::with_capacity(
            STREAM_BUFFER,
            cryptstream_age::ArmoredReader::new(buffered),
        )),
    };
    let mut opening = cryptstream_age::open_stream(source, identities)?;
    let mut counted = Counted {
        inner: output,
        total: 0,
    };
    let mut buf = SecretBuf::new();
    let buf = buf.resize(STREAM_BUFFER);
    loop {
        let n = read_full(&mut opening, buf).map_err(age_read_error)?;
        if n == 0 {
            break;
        }
        counted.write_all(&buf[..n]).map_err(Reason::Write)?;
    }
    counted.flush().map_err(Reason::Write)?;
    Ok(opening.plaintext_len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use cryptstream_format::{MasterKey, MAX_HEADER_LEN as H, MIN_CHUNK_SIZE};

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

    #[test]
    fn decrypts_to_accepts_only_the_exact_plaintext() {
        let keyring = Keyring::new(vec![MasterKey::from_key_bytes([9; 32])], None);
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
        let other = Keyring::new(vec![MasterKey::from_key_bytes([8; 32])], None);
        assert!(decrypts_to(&mut &enc[..], &mut &plain[..], &other).is_none());
        let mut tampered = enc.clone();
        tampered[H + 10] ^= 1;
        assert!(decrypts_to(&mut &tampered[..], &mut &plain[..], &keyring).is_none());
    }

    #[test]
    fn a_stream_round_trips_and_a_wrong_length_is_refused() {
        let keyring = Keyring::new(vec![MasterKey::from_key_bytes([9; 32])], None);
        let plain = vec![7u8; 3 * MIN_CHUNK_SIZE as usize];
        let enc = encrypted(&plain);
        let mut back = Vec::new();
        let (header, len) = decrypt_stream(&keyring, &mut &enc[..], &mut back).unwrap();
        assert_eq!(
            (back, len, header.mode),
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
