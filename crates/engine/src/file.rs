//! One file in flight: opening it, processing a segment of its chunks, and
//! finishing it. These functions do not know which thread or process runs
//! them; the engine schedules them.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use cryptstream_format::{
    seal_header, ChunkCipher, FormatError, Header, HeaderParams, Layout, HEADER_LEN, TAG_LEN,
};
use thiserror::Error;

use crate::output::{AtomicOutput, Replace};
use crate::plan::{Direction, FileJob};
use crate::Settings;

/// Why one file failed. The path is added by [`crate::FileFailure`].
#[derive(Debug, Error)]
pub enum Reason {
    /// The file's bytes are not a valid cryptstream file for these keys.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The input could not be opened.
    #[error("cannot open: {0}")]
    Open(io::Error),
    /// The input could not be read.
    #[error("cannot read: {0}")]
    Read(io::Error),
    /// The output could not be created or written.
    #[error("cannot write output: {0}")]
    Write(io::Error),
    /// The output appeared while the run was going on.
    #[error("output exists; use --force to replace it")]
    Exists,
    /// The input got shorter while being read.
    #[error("file shrank while being read (expected {expected} bytes)")]
    Shrank {
        /// The size when the file was opened.
        expected: u64,
    },
    /// The input changed size while being encrypted.
    #[error("file changed while being read ({before} bytes, then {after}); run again")]
    Changed {
        /// Size when opened.
        before: u64,
        /// Size when done.
        after: u64,
    },
    /// The run was interrupted.
    #[error("interrupted")]
    Cancelled,
}

/// An open file being encrypted, decrypted or verified.
pub struct OpenFile {
    /// The input.
    pub input: File,
    /// The output (none for verify), taken when the file is finished.
    output: Mutex<Option<AtomicOutput>>,
    /// Where every chunk lives.
    pub layout: Layout,
    /// Seals or opens the chunks.
    pub cipher: ChunkCipher,
    /// The encrypted header (written with segment 0 when encrypting).
    header: [u8; HEADER_LEN],
    /// Permission bits for the output.
    mode: u32,
    /// What is being done.
    direction: Direction,
}

/// Flags for opening inputs: no atime update where allowed.
fn open_input(path: &Path) -> Result<File, Reason> {
    use rustix::fs::{Mode, OFlags, CWD};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(CWD, path, flags | OFlags::NOATIME, Mode::empty()) {
        // O_NOATIME is refused for files we do not own.
        Err(rustix::io::Errno::PERM) => rustix::fs::openat(CWD, path, flags, Mode::empty()),
        other => other,
    };
    fd.map(File::from).map_err(|e| Reason::Open(e.into()))
}

/// The per-file salt: random, or derived from a fixed test seed and the
/// relative path (test vectors and byte-identical comparisons only).
fn file_salt(settings: &Settings, job: &FileJob) -> Result<[u8; 32], Reason> {
    match &settings.fixed_salt {
        Some(seed) => {
            use std::os::unix::ffi::OsStrExt;
            Ok(*blake3::keyed_hash(seed, job.relative.as_os_str().as_bytes()).as_bytes())
        }
        None => {
            let mut salt = [0u8; 32];
            cryptstream_format::fill_random(&mut salt)?;
            Ok(salt)
        }
    }
}

impl OpenFile {
    /// Opens `job` for `settings.direction`: reads and authenticates the
    /// header when decrypting or verifying, derives a new header when
    /// encrypting, and creates the temp output.
    ///
    /// # Errors
    /// Any [`Reason`]; nothing is left on disk then.
    pub fn open(settings: &Settings, job: &FileJob) -> Result<OpenFile, Reason> {
        let input = open_input(&job.input)?;
        let meta = input.metadata().map_err(Reason::Read)?;
        let len = meta.len();
        let (layout, cipher, header, mode) = match settings.direction {
            Direction::Encrypt => {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                let key = settings
                    .encryption_key
                    .as_ref()
                    .expect("an encrypt run always has an encryption key");
                let params = HeaderParams {
                    cipher: settings.cipher,
                    chunk_size: settings.chunk_size,
                    plaintext_len: Some(len),
                    mode,
                };
                let (header, cipher) = seal_header(key, &params, file_salt(settings, job)?)?;
                (
                    Layout::new(settings.chunk_size, len),
                    cipher,
                    *header.as_bytes(),
                    mode,
                )
            }
            Direction::Decrypt | Direction::Verify => {
                let mut bytes = [0u8; HEADER_LEN];
                let got = pread_full(&input, &mut bytes, 0).map_err(Reason::Read)?;
                let header = Header::parse(&bytes[..got])?;
                let layout = Layout::from_ciphertext_len(header.chunk_size, len)?;
                if let Some(expected_len) = header.plaintext_len {
                    let expected = Layout::new(header.chunk_size, expected_len).ciphertext_len();
                    if expected != len {
                        return Err(FormatError::LengthMismatch {
                            expected,
                            actual: len,
                        }
                        .into());
                    }
                }
                let cipher = settings.keyring.unlock(&header)?;
                (layout, cipher, bytes, header.mode)
            }
        };
        let output = match (&job.output, settings.direction) {
            (Some(path), Direction::Encrypt | Direction::Decrypt) => {
                let out = AtomicOutput::create(path, 0o600).map_err(Reason::Write)?;
                if settings.direction == Direction::Decrypt {
                    // Holes read as zeros, so all-zero chunks need no write.
                    out.file()
                        .set_len(layout.plaintext_len())
                        .map_err(Reason::Write)?;
                }
                Some(out)
            }
            _ => None,
        };
        Ok(OpenFile {
            input,
            output: Mutex::new(output),
            layout,
            cipher,
            header,
            mode,
            direction: settings.direction,
        })
    }

    /// Processes chunks `first..first + count` using `buf` as scratch space,
    /// and returns the bytes read.
    ///
    /// # Errors
    /// [`Reason::Read`], [`Reason::Shrank`], [`Reason::Write`] or a chunk
    /// authentication failure.
    pub fn run_segment(&self, first: u64, count: u64, buf: &mut Vec<u8>) -> Result<u64, Reason> {
        let layout = &self.layout;
        let span = layout.span_len(first, count);
        buf.resize(span, 0);
        let buf = &mut buf[..span];
        let last = (first + count).min(layout.chunk_count());
        match self.direction {
            Direction::Encrypt => {
                let plain_offset = layout.plaintext_offset(first);
                let expected: usize = (first..last).map(|i| layout.chunk_plaintext_len(i)).sum();
                let mut slots = chunk_slots_mut(layout, first, buf);
                let got =
                    preadv_full(&self.input, &mut slots, plain_offset).map_err(Reason::Read)?;
                if got < expected {
                    return Err(Reason::Shrank {
                        expected: layout.plaintext_len(),
                    });
                }
                self.cipher.seal_span(layout, first, buf);
                let (header, offset): (&[u8], u64) = if first == 0 {
                    (&self.header, 0)
                } else {
                    (&[], layout.chunk_offset(first))
                };
                let out = self.output_file()?;
                pwritev_all(&out, &mut [IoSlice::new(header), IoSlice::new(buf)], offset)
                    .map_err(Reason::Write)?;
                Ok(expected as u64)
            }
            Direction::Decrypt | Direction::Verify => {
                let got = pread_full(&self.input, buf, layout.chunk_offset(first))
                    .map_err(Reason::Read)?;
                if got < span {
                    return Err(Reason::Shrank {
                        expected: layout.ciphertext_len(),
                    });
                }
                self.cipher.open_span(layout, first, buf)?;
                if self.direction == Direction::Decrypt {
                    let out = self.output_file()?;
                    write_plaintext(&out, layout, first, buf).map_err(Reason::Write)?;
                }
                Ok(span as u64)
            }
        }
    }

    fn output_file(&self) -> Result<File, Reason> {
        let guard = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let out = guard.as_ref().ok_or(Reason::Cancelled)?;
        out.file().try_clone().map_err(Reason::Write)
    }

    /// Finishes the file: checks the input did not change, sets the mode and
    /// makes the output visible under its final name.
    ///
    /// # Errors
    /// [`Reason::Changed`], [`Reason::Exists`] or [`Reason::Write`]; the
    /// temp output is gone then.
    pub fn finish(&self, settings: &Settings) -> Result<(), Reason> {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.direction == Direction::Encrypt {
            let after = self.input.metadata().map_err(Reason::Read)?.len();
            if after != self.layout.plaintext_len() {
                return Err(Reason::Changed {
                    before: self.layout.plaintext_len(),
                    after,
                });
            }
        }
        let Some(output) = output else {
            return Ok(());
        };
        if self.mode != 0 {
            output.set_mode(self.mode).map_err(Reason::Write)?;
        } else {
            output.set_mode(default_mode()).map_err(Reason::Write)?;
        }
        let replace = if settings.overwrite == crate::Overwrite::Force {
            Replace::Always
        } else {
            Replace::Never
        };
        output.commit(replace, settings.durable).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Reason::Exists
            } else {
                Reason::Write(e)
            }
        })
    }

    /// Drops the output without committing it.
    pub fn abandon(&self) {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// 0666 less the process umask, for outputs whose header records no mode.
pub(crate) fn default_mode() -> u32 {
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        // umask can only be read by setting it; this runs once, before any
        // file is created by this process with a mode that depends on it.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        0o666 & !old.bits()
    })
}

/// The plaintext slots of the chunks in `buf` (each chunk's room before its
/// tag), in order.
fn chunk_slots_mut<'a>(layout: &Layout, first: u64, buf: &'a mut [u8]) -> Vec<IoSliceMut<'a>> {
    let mut slots = Vec::new();
    let mut rest = buf;
    let mut index = first;
    while !rest.is_empty() {
        let plain = layout.chunk_plaintext_len(index);
        let (chunk, tail) = rest.split_at_mut(plain + TAG_LEN);
        slots.push(IoSliceMut::new(&mut chunk[..plain]));
        rest = tail;
        index += 1;
    }
    slots
}

/// Writes the plaintext of opened chunks, skipping chunks that are all zero
/// (the output was sized in advance, so they read back as zeros and the
/// output stays sparse).
fn write_plaintext(out: &File, layout: &Layout, first: u64, buf: &[u8]) -> io::Result<()> {
    let mut at = 0;
    let mut index = first;
    let mut run: Vec<IoSlice<'_>> = Vec::new();
    let mut run_offset = layout.plaintext_offset(first);
    while at < buf.len() {
        let plain = layout.chunk_plaintext_len(index);
        let data = &buf[at..at + plain];
        if data.iter().all(|&b| b == 0) {
            if !run.is_empty() {
                pwritev_all(out, &mut run, run_offset)?;
                run.clear();
            }
            run_offset = layout.plaintext_offset(index + 1);
        } else {
            run.push(IoSlice::new(data));
        }
        at += plain + TAG_LEN;
        index += 1;
    }
    if !run.is_empty() {
        pwritev_all(out, &mut run, run_offset)?;
    }
    Ok(())
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns
/// the bytes read.
pub(crate) fn pread_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    preadv_full(file, &mut [IoSliceMut::new(buf)], offset)
}

/// `preadv` until every slice is full or the file ends; returns the bytes read.
pub(crate) fn preadv_full(
    file: &File,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
) -> io::Result<usize> {
    let mut bufs = bufs;
    let mut total = 0;
    while !bufs.is_empty() {
        // IOV_MAX is 1024 on Linux.
        let take = bufs.len().min(1024);
        match rustix::io::preadv(file.as_fd(), &mut bufs[..take], offset + total as u64) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                IoSliceMut::advance_slices(&mut bufs, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// `pwritev` until every byte is written.
pub(crate) fn pwritev_all(file: &File, bufs: &mut [IoSlice<'_>], offset: u64) -> io::Result<()> {
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    let mut written = 0u64;
    while !bufs.is_empty() {
        let take = bufs.len().min(1024);
        match rustix::io::pwritev(file.as_fd(), &bufs[..take], offset + written) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n as u64;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
