//! One file in flight: opening it, processing a segment of its chunks, and
//! finishing it. These functions do not know which thread or process runs
//! them; the engine schedules them.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use cryptstream_format::{
    seal_header, ChunkCipher, FormatError, Header, HeaderParams, Layout, HEADER_LEN, TAG_LEN,
};
use thiserror::Error;

use crate::io::{InputMap, IoStrategy};
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
    /// A worker process reported this failure (its message, as printed).
    #[error("{0}")]
    Reported(String),
    /// The worker processes running this file died, also on the retry.
    #[error("worker process {pid} died while processing this file ({cause}), also after a retry on another worker")]
    WorkerDied {
        /// The last worker's process id.
        pid: u32,
        /// How it ended ("killed by signal 9", "exited with status 101").
        cause: String,
    },
}

/// Where a file's output goes.
enum Output {
    /// The temp output this process created and will commit.
    Owned(AtomicOutput),
    /// A descriptor of a temp output that another process owns (a worker
    /// process writing segments of a file its parent opened).
    Borrowed(File),
}

impl Output {
    fn file(&self) -> &File {
        match self {
            Output::Owned(out) => out.file(),
            Output::Borrowed(file) => file,
        }
    }
}

/// An open file being encrypted, decrypted or verified.
pub struct OpenFile {
    /// The input.
    pub input: File,
    /// The output (none for verify), taken when the file is finished.
    output: Mutex<Option<Output>>,
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
    /// How the bytes are read and written.
    io: IoStrategy,
    /// Whether several workers run segments of this file at once (then
    /// `read`/`write` need private descriptors).
    shared: bool,
    /// The input mapping, for [`IoStrategy::Mmap`].
    map: Option<InputMap>,
}

/// What another process needs to run segments of a file opened here: the
/// same input and output (descriptors, so that every worker writes the one
/// temp output) and the header, from which the chunk cipher is derived again.
pub struct SplitParts {
    /// The input.
    pub input: File,
    /// The temp output (none for verify).
    pub output: Option<File>,
    /// The file's header as on disk.
    pub header: [u8; HEADER_LEN],
    /// Plaintext length of the file, which fixes its layout.
    pub plaintext_len: u64,
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

/// Opens `file` again through `/proc/self/fd`, which gives a new open file
/// description (its own file position) for the same inode. Works for
/// `O_TMPFILE` outputs too.
fn reopen(file: &File, write: bool) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags, CWD};
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let access = if write {
        OFlags::WRONLY
    } else {
        OFlags::RDONLY
    };
    let fd = rustix::fs::openat(CWD, path.as_str(), access | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
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

/// Maps the input for [`IoStrategy::Mmap`]; any other strategy, or a file
/// that cannot be mapped safely, reads with pread instead.
fn map_input(io: IoStrategy, input: &File, len: u64) -> (IoStrategy, Option<InputMap>) {
    if io != IoStrategy::Mmap {
        return (io, None);
    }
    match InputMap::new(input, len) {
        Ok(Some(map)) => (IoStrategy::Mmap, Some(map)),
        Ok(None) => (IoStrategy::Pread, None),
        Err(e) => {
            tracing::debug!("mmap refused ({e}); reading with pread");
            (IoStrategy::Pread, None)
        }
    }
}

impl OpenFile {
    /// Opens `job` for `settings.direction`: reads and authenticates the
    /// header when decrypting or verifying, derives a new header when
    /// encrypting, and creates the temp output. The file is meant to be
    /// run by one worker at a time (see [`OpenFile::open_split`]).
    ///
    /// # Errors
    /// Any [`Reason`]; nothing is left on disk then.
    pub fn open(settings: &Settings, job: &FileJob) -> Result<OpenFile, Reason> {
        OpenFile::open_with(settings, job, false)
    }

    /// Like [`OpenFile::open`], for a file whose segments several workers
    /// run at the same time.
    ///
    /// # Errors
    /// Any [`Reason`]; nothing is left on disk then.
    pub fn open_split(settings: &Settings, job: &FileJob) -> Result<OpenFile, Reason> {
        OpenFile::open_with(settings, job, true)
    }

    fn open_with(settings: &Settings, job: &FileJob, shared: bool) -> Result<OpenFile, Reason> {
        let input = open_input(&job.input)?;
        let meta = input.metadata().map_err(Reason::Read)?;
        let len = meta.len();
        let (layout, cipher, header, mode) = match settings.direction {
            Direction::Encrypt => {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o7777;
                let key = settings.sealing_key();
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
                Some(Output::Owned(out))
            }
            _ => None,
        };
        let (io, map) = map_input(settings.io.strategy_for(len), &input, len);
        Ok(OpenFile {
            input,
            output: Mutex::new(output),
            layout,
            cipher,
            header,
            mode,
            direction: settings.direction,
            io,
            shared,
            map,
        })
    }

    /// Descriptors and header that let another process run segments of
    /// this file ([`OpenFile::adopt`]).
    ///
    /// # Errors
    /// [`Reason::Read`] or [`Reason::Write`] when a descriptor cannot be
    /// duplicated; [`Reason::Cancelled`] when the output is already gone.
    pub fn split_parts(&self) -> Result<SplitParts, Reason> {
        let input = self.input.try_clone().map_err(Reason::Read)?;
        let output = match self.direction {
            Direction::Verify => None,
            Direction::Encrypt | Direction::Decrypt => Some(self.output_file()?),
        };
        Ok(SplitParts {
            input,
            output,
            header: self.header,
            plaintext_len: self.layout.plaintext_len(),
        })
    }

    /// Takes up a file that another process opened, to run its segments:
    /// the chunk cipher is derived again from the header (and the keys of
    /// `settings`), and the output is written but never committed here.
    ///
    /// # Errors
    /// A [`FormatError`] when the header does not authenticate under these
    /// keys, or [`Reason::Read`].
    pub fn adopt(settings: &Settings, parts: SplitParts) -> Result<OpenFile, Reason> {
        let header = Header::parse(&parts.header)?;
        let cipher = match settings.direction {
            Direction::Encrypt => {
                let key = settings.sealing_key();
                let params = HeaderParams {
                    cipher: header.cipher,
                    chunk_size: header.chunk_size,
                    plaintext_len: header.plaintext_len,
                    mode: header.mode,
                };
                let (again, cipher) = seal_header(key, &params, header.salt)?;
                if again.as_bytes() != &parts.header {
                    return Err(FormatError::HeaderModified.into());
                }
                cipher
            }
            Direction::Decrypt | Direction::Verify => settings.keyring.unlock(&header)?,
        };
        let layout = Layout::new(header.chunk_size, parts.plaintext_len);
        let len = match settings.direction {
            Direction::Encrypt => layout.plaintext_len(),
            Direction::Decrypt | Direction::Verify => layout.ciphertext_len(),
        };
        let (io, map) = map_input(settings.io.strategy_for(len), &parts.input, len);
        Ok(OpenFile {
            input: parts.input,
            output: Mutex::new(parts.output.map(Output::Borrowed)),
            layout,
            cipher,
            header: parts.header,
            mode: header.mode,
            direction: settings.direction,
            io,
            shared: true,
            map,
        })
    }

    /// The I/O strategy this file is read and written with.
    pub fn io_strategy(&self) -> IoStrategy {
        self.io
    }

    /// Reads input bytes at `offset` into `slots` until they are full or
    /// the file ends; returns the bytes read.
    fn read_at(&self, slots: &mut [IoSliceMut<'_>], offset: u64) -> Result<usize, Reason> {
        match (self.io, &self.map) {
            (IoStrategy::Mmap, Some(map)) => {
                let wanted = slots.iter().map(|s| s.len()).sum();
                map.will_need(offset, wanted);
                map.copy_out(offset, slots).map_err(|_| Reason::Shrank {
                    expected: match self.direction {
                        Direction::Encrypt => self.layout.plaintext_len(),
                        _ => self.layout.ciphertext_len(),
                    },
                })
            }
            (IoStrategy::Read, _) => {
                let private;
                let file = if self.shared {
                    match reopen(&self.input, false) {
                        Ok(f) => {
                            private = f;
                            &private
                        }
                        // Without /proc there is no private position: fall
                        // back to positional reads.
                        Err(_) => {
                            return preadv_full(&self.input, slots, offset).map_err(Reason::Read)
                        }
                    }
                } else {
                    &self.input
                };
                rustix::fs::seek(file, rustix::fs::SeekFrom::Start(offset))
                    .map_err(|e| Reason::Read(e.into()))?;
                readv_full(file, slots).map_err(Reason::Read)
            }
            _ => preadv_full(&self.input, slots, offset).map_err(Reason::Read),
        }
    }

    /// Writes `bufs` to the output at `offset`.
    fn write_at(&self, out: &File, bufs: &mut [IoSlice<'_>], offset: u64) -> io::Result<()> {
        if self.io == IoStrategy::Read {
            rustix::fs::seek(out, rustix::fs::SeekFrom::Start(offset))?;
            writev_all(out, bufs)
        } else {
            pwritev_all(out, bufs, offset)
        }
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
                let got = self.read_at(&mut slots, plain_offset)?;
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
                self.write_at(&out, &mut [IoSlice::new(header), IoSlice::new(buf)], offset)
                    .map_err(Reason::Write)?;
                Ok(expected as u64)
            }
            Direction::Decrypt | Direction::Verify => {
                let got = self.read_at(&mut [IoSliceMut::new(buf)], layout.chunk_offset(first))?;
                if got < span {
                    return Err(Reason::Shrank {
                        expected: layout.ciphertext_len(),
                    });
                }
                self.cipher.open_span(layout, first, buf)?;
                if self.direction == Direction::Decrypt {
                    let out = self.output_file()?;
                    write_plaintext(layout, first, buf, |bufs, offset| {
                        self.write_at(&out, bufs, offset)
                    })
                    .map_err(Reason::Write)?;
                }
                Ok(span as u64)
            }
        }
    }

    /// A descriptor of the output for this call: a duplicate, or with
    /// `read`/`write` on a shared file, a reopened one with its own position.
    fn output_file(&self) -> Result<File, Reason> {
        let guard = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let out = guard.as_ref().ok_or(Reason::Cancelled)?.file();
        if self.io == IoStrategy::Read && self.shared {
            if let Ok(private) = reopen(out, true) {
                return Ok(private);
            }
        }
        out.try_clone().map_err(Reason::Write)
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
        let output = match output {
            None => return Ok(()),
            Some(Output::Borrowed(_)) => return Ok(()),
            Some(Output::Owned(output)) => output,
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

/// Encrypts, decrypts or verifies `job` start to end on the calling thread
/// (one task, no split), reporting the bytes of each segment to `advance`
/// as it goes and stopping when `cancel` is set. Returns the file's layout
/// (when it could be opened) and the result; on failure nothing is left.
pub fn process_whole(
    settings: &Settings,
    job: &FileJob,
    buf: &mut Vec<u8>,
    cancel: &AtomicBool,
    advance: &mut dyn FnMut(u64),
) -> (Option<Layout>, Result<(), Reason>) {
    let file = match OpenFile::open(settings, job) {
        Ok(file) => file,
        Err(reason) => return (None, Err(reason)),
    };
    let per_segment = settings.chunks_per_segment(file.layout.chunk_size());
    let mut result = Ok(());
    let mut first = 0;
    while first < file.layout.chunk_count() {
        if cancel.load(Ordering::Relaxed) {
            result = Err(Reason::Cancelled);
            break;
        }
        match file.run_segment(first, per_segment, buf) {
            Ok(bytes) => advance(bytes),
            Err(reason) => {
                result = Err(reason);
                break;
            }
        }
        first += per_segment;
    }
    let result = result.and_then(|()| file.finish(settings));
    if result.is_err() {
        file.abandon();
    }
    (Some(file.layout), result)
}

/// The layout of `job`'s result when a complete, correct one already stands
/// at its output name: for encrypt, the output decrypts to the input; for
/// decrypt, the input decrypts to the output. `None` otherwise (and for
/// verify, which has no output).
///
/// The process engine asks this before it runs again the task of a worker
/// that died: the worker may have linked the output and died before it
/// reported it, and a rerun would then only find the name taken.
pub fn finished_output(settings: &Settings, job: &FileJob) -> Option<Layout> {
    let output = job.output.as_deref()?;
    let (encrypted, plain) = match settings.direction {
        Direction::Encrypt => (output, job.input.as_path()),
        Direction::Decrypt => (job.input.as_path(), output),
        Direction::Verify => return None,
    };
    let mut encrypted = io::BufReader::new(File::open(encrypted).ok()?);
    let mut plain = io::BufReader::new(File::open(plain).ok()?);
    crate::stream::decrypts_to(&mut encrypted, &mut plain, &settings.keyring)
}

/// 0666 less the process umask, for outputs whose header records no mode.
pub(crate) fn default_mode() -> u32 {
    static MODE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| 0o666 & !process_umask())
}

/// The process umask, read from `/proc/self/status` so that no other thread
/// ever sees it changed. Only where that line is missing (Linux before 4.7)
/// is it read the old way, by setting it and setting it back.
fn process_umask() -> u32 {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        });
    from_proc.unwrap_or_else(|| {
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        old.bits()
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
fn write_plaintext(
    layout: &Layout,
    first: u64,
    buf: &[u8],
    mut write: impl FnMut(&mut [IoSlice<'_>], u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut at = 0;
    let mut index = first;
    let mut run: Vec<IoSlice<'_>> = Vec::new();
    let mut run_offset = layout.plaintext_offset(first);
    while at < buf.len() {
        let plain = layout.chunk_plaintext_len(index);
        let data = &buf[at..at + plain];
        if data.iter().all(|&b| b == 0) {
            if !run.is_empty() {
                write(&mut run, run_offset)?;
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
        write(&mut run, run_offset)?;
    }
    Ok(())
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns
/// the bytes read.
pub(crate) fn pread_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    preadv_full(file, &mut [IoSliceMut::new(buf)], offset)
}

/// `preadv` from `offset` until every slice is full or the file ends;
/// returns the bytes read.
pub(crate) fn preadv_full(
    file: &File,
    bufs: &mut [IoSliceMut<'_>],
    offset: u64,
) -> io::Result<usize> {
    read_full(bufs, |bufs, done| {
        rustix::io::preadv(file.as_fd(), bufs, offset + done as u64)
    })
}

/// `readv` through the file position until every slice is full or the file
/// ends; returns the bytes read.
fn readv_full(file: &File, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    read_full(bufs, |bufs, _| rustix::io::readv(file.as_fd(), bufs))
}

/// `pwritev` at `offset` until every byte is written.
pub(crate) fn pwritev_all(file: &File, bufs: &mut [IoSlice<'_>], offset: u64) -> io::Result<()> {
    write_all(bufs, |bufs, done| {
        rustix::io::pwritev(file.as_fd(), bufs, offset + done as u64)
    })
}

/// `writev` through the file position until every byte is written.
fn writev_all(file: &File, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    write_all(bufs, |bufs, _| rustix::io::writev(file.as_fd(), bufs))
}

/// Linux takes at most this many slices per vectored call.
const IOV_MAX: usize = 1024;

/// Calls `read(slices, bytes_done_so_far)` until every slice is full or it
/// returns 0 (end of file), retrying on EINTR; returns the bytes read.
fn read_full(
    mut bufs: &mut [IoSliceMut<'_>],
    mut read: impl FnMut(&mut [IoSliceMut<'_>], usize) -> rustix::io::Result<usize>,
) -> io::Result<usize> {
    let mut total = 0;
    while !bufs.is_empty() {
        let take = bufs.len().min(IOV_MAX);
        match read(&mut bufs[..take], total) {
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

/// Calls `write(slices, bytes_done_so_far)` until every byte is written,
/// retrying on EINTR; a write of 0 bytes is an error.
fn write_all(
    mut bufs: &mut [IoSlice<'_>],
    mut write: impl FnMut(&[IoSlice<'_>], usize) -> rustix::io::Result<usize>,
) -> io::Result<()> {
    // Drops leading empty slices, so that an all-empty list writes nothing.
    IoSlice::advance_slices(&mut bufs, 0);
    let mut total = 0;
    while !bufs.is_empty() {
        let take = bufs.len().min(IOV_MAX);
        match write(&bufs[..take], total) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n;
                IoSlice::advance_slices(&mut bufs, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineChoice, IoChoice, Overwrite};
    use cryptstream_format::{Cipher, Keyring, MasterKey};
    use std::path::PathBuf;
    use std::sync::Arc;

    fn settings(direction: Direction, io: IoChoice) -> Settings {
        let key = || MasterKey::from_key_bytes([5; 32]);
        Settings {
            direction,
            workers: 1,
            cipher: Cipher::Aes256Gcm,
            chunk_size: 1024,
            overwrite: Overwrite::Refuse,
            durable: false,
            keyring: Keyring::new(vec![key()], None),
            encryption_key: Some(Arc::new(key())),
            fixed_salt: Some([1; 32]),
            engine: EngineChoice::Threads,
            io,
            key_material: None,
        }
    }

    fn job(input: PathBuf, output: PathBuf) -> FileJob {
        FileJob {
            relative: PathBuf::from("f"),
            size: 0,
            input,
            output: Some(output),
        }
    }

    #[test]
    fn every_strategy_writes_the_same_bytes_whole_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(dir.path().join("in"), &plain).unwrap();
        let mut outputs = Vec::new();
        for io in [IoChoice::Read, IoChoice::Pread, IoChoice::Mmap] {
            let enc = settings(Direction::Encrypt, io);
            // Whole: one worker, in order.
            let out = dir.path().join(format!("whole-{}", io.name()));
            let (_, result) = process_whole(
                &enc,
                &job(dir.path().join("in"), out.clone()),
                &mut Vec::new(),
                &AtomicBool::new(false),
                &mut |_| {},
            );
            result.unwrap();
            outputs.push(std::fs::read(&out).unwrap());
            // Split: segments in reverse order, through an adopted copy.
            let out = dir.path().join(format!("split-{}", io.name()));
            let file =
                OpenFile::open_split(&enc, &job(dir.path().join("in"), out.clone())).unwrap();
            let adopted = OpenFile::adopt(&enc, file.split_parts().unwrap()).unwrap();
            let firsts: Vec<u64> = (0..file.layout.chunk_count()).step_by(7).collect();
            for &first in firsts.iter().rev() {
                adopted.run_segment(first, 7, &mut Vec::new()).unwrap();
            }
            file.finish(&enc).unwrap();
            outputs.push(std::fs::read(&out).unwrap());
            // And back.
            let dec = settings(Direction::Decrypt, io);
            let back = dir.path().join(format!("back-{}", io.name()));
            let (_, result) = process_whole(
                &dec,
                &job(out, back.clone()),
                &mut Vec::new(),
                &AtomicBool::new(false),
                &mut |_| {},
            );
            result.unwrap();
            assert_eq!(std::fs::read(&back).unwrap(), plain, "{}", io.name());
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_shrunk_input_fails_with_shrank_under_mmap() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, vec![3u8; 200_000]).unwrap();
        let enc = settings(Direction::Encrypt, IoChoice::Mmap);
        let file = OpenFile::open(&enc, &job(input.clone(), dir.path().join("out"))).unwrap();
        assert_eq!(file.io_strategy(), IoStrategy::Mmap);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&input)
            .unwrap()
            .set_len(10_000)
            .unwrap();
        let err = file.run_segment(0, 1000, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Reason::Shrank { .. }), "{err}");
        assert!(!dir.path().join("out").exists());
    }
}
