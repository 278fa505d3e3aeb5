//! One file in flight: opening it, processing a segment of its chunks, and
//! finishing it. These functions do not know which thread or process runs
//! them; the engine schedules them.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use std::sync::Arc;

use cryptstream_format::envelope::DETECT_LEN;
use cryptstream_format::{
    ChunkCipher, CipherParts, EntryKind, EntryMeta, Envelope, FormatError, Layout, Mtime,
    OpeningReader, Processing, SealingWriter, MAX_LINK_TARGET_LEN, TAG_LEN,
};
use cryptstream_output::{AtomicFile, Timestamp};
use cryptstream_pool::{Cancel, SecretBuf};

use crate::io::{InputMap, IoStrategy};
use crate::plan::{Direction, FileJob, Looked, Source, Target};
use crate::{Reason, Settings};

/// What precedes the chunks of a file and what it records: the prefix
/// (written with segment 0 when encrypting), the envelope that made or
/// read it, and the mode and mtime the output gets.
struct Head {
    /// The bytes before chunk 0 (encrypt only; empty otherwise).
    prefix: Vec<u8>,
    /// Decrypt and verify: the file's first bytes as read when it was
    /// opened; the whole file when it is at most [`WHOLE_READ_MAX`] bytes,
    /// so that a small file is read by one call (empty otherwise).
    read_ahead: Vec<u8>,
    /// The file's container.
    envelope: Arc<dyn Envelope>,
    /// When encrypting, the input's mode; when decrypting, what the
    /// prefix records (mode 0 and no mtime for a container that records
    /// neither).
    meta: EntryMeta,
}

/// Reads a file from an offset with `pread`, leaving its position alone.
struct PositionalReader<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = rustix::io::pread(self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// How far behind the segment just written a large output's pages are
/// dropped from the cache: far enough behind that the disk has usually
/// written them by then (pages not yet written stay).
const WRITEBACK_LAG: u64 = 64 * 1024 * 1024;

/// Encrypted files of at most this many bytes are read whole when they
/// are opened (one `pread` gives the prefix and every chunk); larger ones
/// read their first [`DETECT_LEN`] bytes, and their chunks segment by
/// segment.
const WHOLE_READ_MAX: u64 = 64 * 1024;

/// Reads the first bytes of `input` (the whole file when it is small),
/// detects its envelope from them and opens its prefix with the run's
/// keys: the head, the layout (checked against the file's length) and the
/// chunk cipher. `None` for a file its envelope encodes as a whole (age's
/// armor), which is processed in order through the stream path.
fn open_prefix(
    settings: &Settings,
    input: &File,
    len: u64,
) -> Result<Option<(Head, Layout, ChunkCipher)>, Reason> {
    let want = if len <= WHOLE_READ_MAX {
        len as usize
    } else {
        DETECT_LEN
    };
    let mut first = vec![0u8; want];
    let got = pread_full(input, &mut first, 0).map_err(Reason::Read)?;
    first.truncate(got);
    let (envelope, processing) = settings.envelopes().detect(&first[..got.min(DETECT_LEN)]);
    if processing == Processing::InOrder {
        return Ok(None);
    }
    // A prefix longer than what was read (an age header with many
    // stanzas) goes on from the file.
    let rest = io::BufReader::with_capacity(
        DETECT_LEN,
        PositionalReader {
            file: input,
            offset: got as u64,
        },
    );
    let opened = envelope.open(&mut (&first[..]).chain(rest))?;
    let layout = opened.layout(len).map_err(|e| envelope.payload_error(e))?;
    let head = Head {
        prefix: Vec::new(),
        read_ahead: first,
        envelope: envelope.clone(),
        meta: opened.meta,
    };
    Ok(Some((head, layout, opened.cipher)))
}

/// An open file being encrypted, decrypted or verified.
pub struct OpenFile {
    /// The input.
    pub input: File,
    /// The output descriptor to write (none for verify).
    output: Option<File>,
    /// The right to make the output visible: held by whoever opened the
    /// file, not by a process that only writes segments of it.
    commit: Mutex<Option<AtomicFile>>,
    /// Where every chunk lives.
    pub layout: Layout,
    /// Seals or opens the chunks.
    pub cipher: ChunkCipher,
    /// What precedes the chunks: written with segment 0 when encrypting;
    /// a cryptstream header's mode and mtime go to the output when
    /// decrypting.
    head: Head,
    /// What is being done.
    direction: Direction,
    /// How the bytes are read and written.
    io: IoStrategy,
    /// Whether several workers run segments of this file at once (then
    /// `read`/`write` need private descriptors).
    shared: bool,
    /// The input mapping, for [`IoStrategy::Mmap`].
    map: Option<InputMap>,
    /// Taken around each write of a file several workers write: they
    /// queue here, asleep, rather than in the kernel's inode lock, where a
    /// waiter spins on its core while the writer copies (DECISIONS 560).
    writing: Mutex<()>,
    /// Bytes written so far (for the test build's stall hook).
    written: AtomicU64,
    /// Device and inode of the input as the plan (or the opener) looked
    /// it up: an encrypt run's finish checks it read that file. `None` in
    /// a process that only runs segments.
    looked_id: Option<(u64, u64)>,
}

/// What another process needs to run segments of a file opened here: the
/// same input and output (descriptors, so that every worker writes the one
/// temp output), the layout and the chunk cipher itself, so that a worker
/// needs no envelope and no key to take the file up (the prefix of a new
/// file is written by the opener, before any segment).
pub struct SplitParts {
    /// The input.
    pub input: File,
    /// The temp output (none for verify).
    pub output: Option<File>,
    /// Bytes before chunk 0.
    pub prefix_len: usize,
    /// Plaintext length of the file, which with the prefix length and the
    /// cipher's chunk size fixes its layout.
    pub plaintext_len: u64,
    /// The chunk cipher (its key included).
    pub cipher: CipherParts,
    /// The name of the file's envelope, which words its chunk failures.
    pub envelope: String,
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

/// The modification time of `meta` as the header records it.
fn mtime_of(meta: &std::fs::Metadata) -> Mtime {
    mtime(Timestamp::mtime_of(meta))
}

/// A timestamp as a header's mtime.
fn mtime(t: Timestamp) -> Mtime {
    Mtime {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

/// A header's mtime as the output crate sets it.
fn timestamp(mtime: Mtime) -> Timestamp {
    Timestamp {
        seconds: mtime.seconds,
        nanos: mtime.nanos,
    }
}

/// What opening an entry gives.
pub enum Opened {
    /// A regular file, ready for its segments.
    File(Box<OpenFile>),
    /// A symbolic-link or hard-link entry, already done or to be linked
    /// once the files of the run are written.
    Entry(Done, Layout),
    /// A file whose envelope encodes it as a whole (age's armor), to be
    /// processed start to end through the stream path; the open input.
    InOrder(File),
}

/// How a job ended well.
#[derive(Debug)]
pub enum Done {
    /// Its output is written (or, for verify, it authenticated).
    Written,
    /// A hard link to make once every file of the run is written.
    LinkLater(PendingLink),
}

/// A hard link that a decrypt run makes at the end, when its target exists.
#[derive(Clone, Debug)]
pub struct PendingLink {
    /// The target, relative to the output tree's root.
    pub target: PathBuf,
}

impl OpenFile {
    /// Opens `job` for `settings.direction` with its output at `target`
    /// (none for verify): reads and authenticates the header when
    /// decrypting or verifying, derives a new header when encrypting, and
    /// creates the temp output. A link entry is done here at once
    /// ([`Opened::Entry`]). The file is meant to be run by one worker at a
    /// time (see [`OpenFile::open_split`]).
    ///
    /// # Errors
    /// Any [`Reason`]; nothing is left on disk then.
    pub fn open(
        settings: &Settings,
        job: &FileJob,
        target: Option<&Target>,
    ) -> Result<Opened, Reason> {
        OpenFile::open_with(settings, job, target, false)
    }

    /// Like [`OpenFile::open`], for a regular file whose segments several
    /// workers run at the same time.
    ///
    /// # Errors
    /// Any [`Reason`]; nothing is left on disk then.
    pub fn open_split(
        settings: &Settings,
        job: &FileJob,
        target: Option<&Target>,
    ) -> Result<OpenFile, Reason> {
        match OpenFile::open_with(settings, job, target, true)? {
            Opened::File(file) => Ok(*file),
            Opened::Entry(..) => Err(FormatError::HeaderModified.into()),
            // Only reached by a caller that split the file without asking
            // `Settings::can_split`.
            Opened::InOrder(_) => Err(Reason::Executor(
                "this file is processed in order and cannot be split".into(),
            )),
        }
    }

    fn open_with(
        settings: &Settings,
        job: &FileJob,
        target: Option<&Target>,
        shared: bool,
    ) -> Result<Opened, Reason> {
        if settings.direction == Direction::Encrypt && job.source != Source::File {
            let layout = seal_entry(settings, job, target)?;
            return Ok(Opened::Entry(Done::Written, layout));
        }
        let input = open_input(&job.input)?;
        // The plan's lookup stands for the file's own unless there was
        // none; an encrypt run checks at the end that it read that file.
        let looked = match job.looked {
            Some(looked) => (job.size, looked),
            None => {
                let meta = input.metadata().map_err(Reason::Read)?;
                (meta.len(), Looked::of(&meta))
            }
        };
        let (len, looked) = looked;
        let (layout, cipher, head) = match settings.direction {
            Direction::Encrypt => {
                let envelope = settings.envelopes().sealer();
                if envelope.sealing() == Processing::InOrder {
                    return Ok(Opened::InOrder(input));
                }
                let entry = EntryMeta {
                    kind: EntryKind::File,
                    plaintext_len: Some(len),
                    mode: looked.mode,
                    mtime: Some(mtime(looked.mtime)),
                };
                let sealed = envelope.seal(&entry)?;
                let layout = Layout::new(sealed.prefix.len(), sealed.cipher.chunk_size(), len)?;
                let head = Head {
                    prefix: sealed.prefix,
                    read_ahead: Vec::new(),
                    envelope: envelope.clone(),
                    meta: entry,
                };
                (layout, sealed.cipher, head)
            }
            Direction::Decrypt | Direction::Verify => {
                let Some((head, layout, cipher)) = open_prefix(settings, &input, len)? else {
                    return Ok(Opened::InOrder(input));
                };
                if head.meta.kind != EntryKind::File {
                    let done = open_entry(settings, &head.meta, &layout, cipher, input, target)?;
                    return Ok(Opened::Entry(done, layout));
                }
                (layout, cipher, head)
            }
        };
        let (output, commit) = match (target, settings.direction) {
            (Some(target), Direction::Encrypt | Direction::Decrypt) => {
                // Created with its final mode where that is exact (no
                // `fchmod` at the end).
                let mode = settings.output_mode(head.meta.mode);
                let out = AtomicFile::create_with_mode(&target.dir, &target.name, mode)
                    .map_err(Reason::Write)?;
                if !shared {
                    // One worker writes it, through the commit's descriptor
                    // (and sizes it at the end if its last chunk is a hole).
                    (None, Some(out))
                } else {
                    if settings.direction == Direction::Decrypt {
                        // Holes read as zeros, so all-zero chunks need no write.
                        out.file()
                            .set_len(layout.plaintext_len())
                            .map_err(Reason::Write)?;
                    }
                    let file = out.file().try_clone().map_err(Reason::Write)?;
                    (Some(file), Some(out))
                }
            }
            _ => (None, None),
        };
        let (io, map) = map_input(settings.io.strategy_for(len), &input, len);
        let file = OpenFile {
            input,
            output,
            commit: Mutex::new(commit),
            layout,
            cipher,
            head,
            direction: settings.direction,
            io,
            shared,
            map,
            writing: Mutex::new(()),
            written: AtomicU64::new(0),
            looked_id: Some(looked.id),
        };
        if shared && !file.head.prefix.is_empty() {
            // Whoever runs segment 0 of a shared file may be another
            // process that never saw the prefix: it is written now.
            file.write_at(&mut [IoSlice::new(&file.head.prefix)], 0)?;
        }
        Ok(Opened::File(Box::new(file)))
    }

    /// Descriptors, layout and cipher that let another process run
    /// segments of this file ([`OpenFile::adopt`]).
    ///
    /// # Errors
    /// [`Reason::Read`] or [`Reason::Write`] when a descriptor cannot be
    /// duplicated.
    pub fn split_parts(&self) -> Result<SplitParts, Reason> {
        let input = self.input.try_clone().map_err(Reason::Read)?;
        let output = match &self.output {
            Some(out) => Some(out.try_clone().map_err(Reason::Write)?),
            None => match self.commit_lock().as_ref() {
                Some(out) => Some(out.file().try_clone().map_err(Reason::Write)?),
                None => None,
            },
        };
        Ok(SplitParts {
            input,
            output,
            prefix_len: self.layout.header_len(),
            plaintext_len: self.layout.plaintext_len(),
            cipher: self.cipher.to_parts(),
            envelope: self.head.envelope.name().to_string(),
        })
    }

    /// Takes up a file that another process opened, to run its segments
    /// with the cipher it was given; the output is written but never
    /// committed here. Chunk failures are worded by the run's envelope of
    /// the same name (cryptstream's own when there is none).
    ///
    /// # Errors
    /// A [`FormatError`] for a layout no file can have.
    pub fn adopt(settings: &Settings, parts: SplitParts) -> Result<OpenFile, Reason> {
        let cipher = ChunkCipher::from_parts(&parts.cipher);
        let layout = Layout::new(parts.prefix_len, cipher.chunk_size(), parts.plaintext_len)?;
        let envelopes = settings.envelopes();
        let envelope = envelopes
            .openers()
            .iter()
            .chain([envelopes.sealer()])
            .find(|e| e.name() == parts.envelope)
            .unwrap_or(envelopes.fallback())
            .clone();
        let len = match settings.direction {
            Direction::Encrypt => layout.plaintext_len(),
            Direction::Decrypt | Direction::Verify => layout.ciphertext_len(),
        };
        let (io, map) = map_input(settings.io.strategy_for(len), &parts.input, len);
        Ok(OpenFile {
            input: parts.input,
            output: parts.output,
            commit: Mutex::new(None),
            layout,
            cipher,
            head: Head {
                prefix: Vec::new(),
                read_ahead: Vec::new(),
                envelope,
                meta: EntryMeta::stream(),
            },
            direction: settings.direction,
            io,
            shared: true,
            map,
            writing: Mutex::new(()),
            written: AtomicU64::new(0),
            looked_id: None,
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

    /// The output not yet committed, if any.
    fn commit_lock(&self) -> std::sync::MutexGuard<'_, Option<AtomicFile>> {
        self.commit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bufs` to the output at `offset`.
    fn write_at(&self, bufs: &mut [IoSlice<'_>], offset: u64) -> Result<(), Reason> {
        let bytes: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        match &self.output {
            Some(out) => {
                let _writing = self
                    .shared
                    .then(|| self.writing.lock().unwrap_or_else(|e| e.into_inner()));
                self.write_to(out, bufs, offset)?;
            }
            None => {
                // A file one worker writes has no descriptor of its own: it
                // writes through the commit's (the lock is never contended).
                let commit = self.commit_lock();
                let out = commit.as_ref().ok_or(Reason::Cancelled)?.file();
                self.write_to(out, bufs, offset)?;
            }
        }
        let total = self.written.fetch_add(bytes, Ordering::Relaxed) + bytes;
        crate::hooks::after_write(total);
        Ok(())
    }

    /// Writes `bufs` to `out` (the output) at `offset`, as the I/O
    /// strategy says.
    fn write_to(&self, out: &File, bufs: &mut [IoSlice<'_>], offset: u64) -> Result<(), Reason> {
        let result = if self.io == IoStrategy::Read {
            let private;
            let file = if self.shared {
                match reopen(out, true) {
                    Ok(f) => {
                        private = f;
                        &private
                    }
                    Err(_) => return pwritev_all(out, bufs, offset).map_err(Reason::Write),
                }
            } else {
                out
            };
            rustix::fs::seek(file, rustix::fs::SeekFrom::Start(offset))
                .map_err(io::Error::from)
                .and_then(|_| writev_all(file, bufs))
        } else {
            pwritev_all(out, bufs, offset)
        };
        result.map_err(Reason::Write)
    }

    /// Processes chunks `first..first + count` using `buf` as scratch space,
    /// and returns the bytes read.
    ///
    /// # Errors
    /// [`Reason::Read`], [`Reason::Shrank`], [`Reason::Write`] or a chunk
    /// authentication failure.
    pub fn run_segment(&self, first: u64, count: u64, buf: &mut SecretBuf) -> Result<u64, Reason> {
        let layout = &self.layout;
        let span = layout.span_len(first, count);
        let buf = buf.resize(span);
        let last = first.saturating_add(count).min(layout.chunk_count());
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
                // A shared file's prefix was written when it was opened.
                let (header, offset): (&[u8], u64) = if first == 0 && !self.shared {
                    (&self.head.prefix, 0)
                } else {
                    (&[], layout.chunk_offset(first))
                };
                self.write_at(&mut [IoSlice::new(header), IoSlice::new(buf)], offset)?;
                self.write_back(offset..layout.chunk_offset(last).min(layout.ciphertext_len()));
                Ok(expected as u64)
            }
            Direction::Decrypt | Direction::Verify => {
                let offset = layout.chunk_offset(first);
                // A small file was read whole when it was opened.
                let ahead = usize::try_from(offset)
                    .ok()
                    .and_then(|at| self.head.read_ahead.get(at..at.checked_add(span)?));
                let got = match ahead {
                    Some(bytes) => {
                        buf.copy_from_slice(bytes);
                        span
                    }
                    _ => self.read_at(&mut [IoSliceMut::new(buf)], offset)?,
                };
                if got < span {
                    return Err(Reason::Shrank {
                        expected: layout.ciphertext_len(),
                    });
                }
                if let Err(error) = self.cipher.open_span(layout, first, buf) {
                    return Err(self.head.envelope.payload_error(error).into());
                }
                if self.direction == Direction::Decrypt {
                    let mut write = |bufs: &mut [IoSlice<'_>], offset| {
                        self.write_at(bufs, offset).map_err(|reason| match reason {
                            Reason::Write(e) => e,
                            other => io::Error::other(other.to_string()),
                        })
                    };
                    let tail_hole =
                        write_plaintext(layout, first, buf, &mut write).map_err(Reason::Write)?;
                    self.write_back(
                        layout.plaintext_offset(first)
                            ..layout.plaintext_offset(last).min(layout.plaintext_len()),
                    );
                    if tail_hole && !self.shared && last == layout.chunk_count() {
                        // The last chunk was all zeros and not written:
                        // the output gets its length here.
                        let commit = self.commit_lock();
                        let out = commit.as_ref().ok_or(Reason::Cancelled)?;
                        out.file()
                            .set_len(layout.plaintext_len())
                            .map_err(Reason::Write)?;
                    }
                }
                Ok(span as u64)
            }
        }
    }

    /// Starts writing `region` of the output (a segment just written) to
    /// disk, and drops from the page cache what is written of the region
    /// [`WRITEBACK_LAG`] bytes before it: an output of more than one
    /// segment keeps the disk busy while it is computed, where the kernel
    /// would otherwise let gigabytes of dirty pages pile up and then stall
    /// every writer at once, and gives its written pages back instead of
    /// filling memory (see `docs/PERFORMANCE.md`). Neither call waits for
    /// the disk; on tmpfs both return at once.
    fn write_back(&self, region: std::ops::Range<u64>) {
        if self.layout.plaintext_len() <= crate::SEGMENT_BYTES || region.is_empty() {
            return;
        }
        let commit;
        let out = match &self.output {
            Some(out) => out,
            None => {
                commit = self.commit_lock();
                match commit.as_ref() {
                    Some(out) => out.file(),
                    None => return,
                }
            }
        };
        let len = region.end - region.start;
        cryptstream_output::start_writeback(out, region.start, len);
        if let Some(behind) = region.start.checked_sub(WRITEBACK_LAG) {
            cryptstream_output::drop_written(out, behind, len);
        }
    }

    /// Finishes the file: checks the input did not change, gives the output
    /// its mode (and, when decrypting, its mtime) and makes it visible
    /// under its final name. A process that only adopted the file has
    /// nothing to commit.
    ///
    /// # Errors
    /// [`Reason::Changed`], [`Reason::Exists`] or [`Reason::Write`]; the
    /// temp output is gone then.
    pub fn finish(&self, settings: &Settings) -> Result<(), Reason> {
        let output = self.commit_lock().take();
        if self.direction == Direction::Encrypt {
            let meta = self.input.metadata().map_err(Reason::Read)?;
            let after = meta.len();
            if after != self.layout.plaintext_len() {
                return Err(Reason::Changed {
                    before: self.layout.plaintext_len(),
                    after,
                });
            }
            if self
                .looked_id
                .is_some_and(|id| id != (meta.dev(), meta.ino()))
            {
                return Err(Reason::Replaced);
            }
        }
        let Some(output) = output else {
            return Ok(());
        };
        output
            .set_mode(settings.output_mode(self.head.meta.mode))
            .map_err(Reason::Write)?;
        if self.direction == Direction::Decrypt {
            if let Some(mtime) = self.head.meta.mtime {
                output.set_mtime(timestamp(mtime)).map_err(Reason::Write)?;
            }
        }
        output
            .commit(settings.replace(), settings.durable)
            .map_err(commit_error)
    }

    /// Drops the output without committing it.
    pub fn abandon(&self) {
        self.commit_lock().take();
    }
}

/// A commit error as a [`Reason`]: a taken name is [`Reason::Exists`].
fn commit_error(e: io::Error) -> Reason {
    if e.kind() == io::ErrorKind::AlreadyExists {
        Reason::Exists
    } else {
        Reason::Write(e)
    }
}

/// Encrypts a symbolic link or a second name of a file as an entry of its
/// own: the link's target (or the first name's path) is the payload.
fn seal_entry(
    settings: &Settings,
    job: &FileJob,
    target: Option<&Target>,
) -> Result<Layout, Reason> {
    let meta = std::fs::symlink_metadata(&job.input).map_err(Reason::Open)?;
    let (kind, payload) = match &job.source {
        Source::Symlink => {
            let link = std::fs::read_link(&job.input).map_err(Reason::Read)?;
            (EntryKind::Symlink, link.into_os_string().into_vec())
        }
        Source::HardLink(first) => (EntryKind::HardLink, first.as_os_str().as_bytes().to_vec()),
        Source::File => unreachable!("regular files are not entries"),
    };
    if payload.is_empty() || payload.len() > MAX_LINK_TARGET_LEN {
        return Err(Reason::Link(format!(
            "link target of {} bytes (at most {MAX_LINK_TARGET_LEN})",
            payload.len()
        )));
    }
    let entry = EntryMeta {
        kind,
        plaintext_len: Some(payload.len() as u64),
        mode: meta.mode() & 0o7777,
        mtime: Some(mtime_of(&meta)),
    };
    let sealed = settings.envelopes().sealer().seal(&entry)?;
    let layout = Layout::new(
        sealed.prefix.len(),
        sealed.cipher.chunk_size(),
        payload.len() as u64,
    )?;
    let mut bytes = sealed.prefix;
    let mut writer = SealingWriter::new(&mut bytes, sealed.cipher);
    let written = writer.write_all(&payload).and_then(|()| writer.finish());
    written.expect("writing into a Vec cannot fail");
    if let Some(target) = target {
        let mode = settings.output_mode(entry.mode & 0o666);
        let out =
            AtomicFile::create_with_mode(&target.dir, &target.name, mode).map_err(Reason::Write)?;
        out.file().write_all(&bytes).map_err(Reason::Write)?;
        out.set_mode(mode).map_err(Reason::Write)?;
        out.commit(settings.replace(), settings.durable)
            .map_err(commit_error)?;
    }
    Ok(layout)
}

/// Opens a link entry (its whole payload is one small read) and restores
/// it: a symbolic link is made at once; a hard link waits until every file
/// of the run is written.
fn open_entry(
    settings: &Settings,
    header: &EntryMeta,
    layout: &Layout,
    cipher: ChunkCipher,
    input: File,
    target: Option<&Target>,
) -> Result<Done, Reason> {
    let mut ciphertext = input;
    rustix::fs::seek(
        &ciphertext,
        rustix::fs::SeekFrom::Start(layout.header_len() as u64),
    )
    .map_err(|e| Reason::Read(e.into()))?;
    let reader = OpeningReader::new(
        (&mut ciphertext).take(layout.ciphertext_len()),
        cipher,
        header.plaintext_len,
    );
    let mut payload = Vec::with_capacity(MAX_LINK_TARGET_LEN);
    reader
        .take(MAX_LINK_TARGET_LEN as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(|e| {
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<FormatError>())
            {
                Some(format) => Reason::Format(format.clone()),
                None => Reason::Read(e),
            }
        })?;
    let Some(target) = target.filter(|_| settings.direction == Direction::Decrypt) else {
        return Ok(Done::Written);
    };
    match header.kind {
        EntryKind::Symlink => {
            cryptstream_output::create_symlink(
                &target.dir,
                &target.name,
                &payload,
                header.mtime.map(timestamp),
                settings.replace(),
            )
            .map_err(commit_error)?;
            Ok(Done::Written)
        }
        EntryKind::HardLink => Ok(Done::LinkLater(PendingLink {
            target: PathBuf::from(OsStr::from_bytes(&payload)),
        })),
        EntryKind::File => unreachable!("regular files are opened as files"),
    }
}

/// Makes a hard link that [`Done::LinkLater`] asked for, now that the
/// files of the run are written.
///
/// # Errors
/// [`Reason::Link`] when the target is missing or leaves the tree, or the
/// name is taken.
pub fn make_link(settings: &Settings, link: &PendingLink, target: &Target) -> Result<(), Reason> {
    cryptstream_output::hard_link(
        &target.root,
        &link.target,
        &target.dir,
        &target.name,
        settings.replace(),
    )
    .map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Reason::Exists
        } else {
            Reason::Link(format!(
                "cannot restore hard link to {}: {e}",
                crate::display::Shown(&link.target)
            ))
        }
    })
}

/// What [`process_whole`] did with one job.
pub struct WholeOutcome {
    /// The job's layout, when its header could be made or read.
    pub layout: Option<Layout>,
    /// How it ended.
    pub result: Result<Done, Reason>,
}

/// Encrypts, decrypts or verifies `job` start to end on the calling thread
/// (one task, no split), reporting the bytes of each segment to `advance`
/// as it goes and stopping when `cancel` is set. On failure nothing is left.
pub fn process_whole(
    settings: &Settings,
    job: &FileJob,
    target: Option<&Target>,
    buf: &mut SecretBuf,
    cancel: &Cancel,
    advance: &mut dyn FnMut(u64),
) -> WholeOutcome {
    let file = match OpenFile::open(settings, job, target) {
        Ok(Opened::File(file)) => file,
        Ok(Opened::InOrder(input)) => return in_order(settings, input, target, cancel, advance),
        Ok(Opened::Entry(done, layout)) => {
            return WholeOutcome {
                layout: Some(layout),
                result: Ok(done),
            }
        }
        Err(reason) => {
            return WholeOutcome {
                layout: None,
                result: Err(reason),
            }
        }
    };
    let per_segment = settings.chunks_per_segment(file.layout.chunk_size());
    let mut result = Ok(());
    let mut first = 0;
    while first < file.layout.chunk_count() {
        if cancel.is_cancelled() {
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
    WholeOutcome {
        layout: Some(file.layout),
        result: result.map(|()| Done::Written),
    }
}

/// A reader that stops when `cancel` is set and reports what it reads.
struct Watched<'a> {
    inner: File,
    cancel: &'a Cancel,
    advance: &'a mut dyn FnMut(u64),
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`, which readers retry.
            return Err(io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        (self.advance)(n as u64);
        Ok(n)
    }
}

/// Encrypts, decrypts or verifies a file whose envelope encodes it as a
/// whole (age's armor: base64 in lines, so its chunks do not sit at
/// computable offsets) start to end, in order, through the stream path.
fn in_order(
    settings: &Settings,
    input: File,
    target: Option<&Target>,
    cancel: &Cancel,
    advance: &mut dyn FnMut(u64),
) -> WholeOutcome {
    let mut layout = None;
    let result = (|| {
        let meta = input.metadata().map_err(Reason::Read)?;
        let out = match (target, settings.direction) {
            (Some(target), Direction::Encrypt | Direction::Decrypt) => {
                Some(AtomicFile::create(&target.dir, &target.name).map_err(Reason::Write)?)
            }
            _ => None,
        };
        let mut watched = Watched {
            inner: input,
            cancel,
            advance,
        };
        let sink = match &out {
            Some(out) => Some(out.file().try_clone().map_err(Reason::Write)?),
            None => None,
        };
        let mut writer: Box<dyn Write> = match sink {
            Some(file) => Box::new(io::BufWriter::with_capacity(1 << 20, file)),
            None => Box::new(io::sink()),
        };
        let interrupted = |reason: Reason| {
            if cancel.is_cancelled() {
                Reason::Cancelled
            } else {
                reason
            }
        };
        let streamed = match settings.direction {
            Direction::Encrypt => {
                let source = crate::stream::StreamSource {
                    len: meta.len(),
                    mode: meta.permissions().mode(),
                    mtime: mtime_of(&meta),
                };
                crate::stream::encrypt_stream(settings, &mut watched, &mut writer, Some(&source))
            }
            Direction::Decrypt | Direction::Verify => {
                crate::stream::decrypt_stream(settings, &mut watched, &mut writer)
            }
        }
        .map_err(interrupted)?;
        layout = streamed.layout;
        writer.flush().map_err(Reason::Write)?;
        drop(writer);
        if let Some(out) = out {
            out.set_mode(settings.output_mode(streamed.meta.mode))
                .map_err(Reason::Write)?;
            if let (Direction::Decrypt, Some(mtime)) = (settings.direction, streamed.meta.mtime) {
                out.set_mtime(timestamp(mtime)).map_err(Reason::Write)?;
            }
            out.commit(settings.replace(), settings.durable)
                .map_err(commit_error)?;
        }
        Ok(())
    })();
    WholeOutcome {
        layout,
        result: result.map(|()| Done::Written),
    }
}

/// The layout of `job`'s result when a complete, correct one already stands
/// at `output` (its output path): for encrypt, the output decrypts to the
/// input; for decrypt, the input decrypts to the output. `None` otherwise
/// (and for verify, which has no output).
///
/// The process engine asks this before it runs again the task of a worker
/// that died: the worker may have linked the output and died before it
/// reported it, and a rerun would then only find the name taken.
pub fn finished_output(settings: &Settings, job: &FileJob, output: &Path) -> Option<Layout> {
    let (encrypted, plain) = match settings.direction {
        Direction::Encrypt => (output, job.input.as_path()),
        Direction::Decrypt => (job.input.as_path(), output),
        Direction::Verify => return None,
    };
    let mut encrypted = io::BufReader::new(File::open(encrypted).ok()?);
    let mut plain = io::BufReader::new(File::open(plain).ok()?);
    crate::stream::decrypts_to(&mut encrypted, &mut plain, settings)
}

/// The process umask, read from `/proc/self/status` so that no other thread
/// ever sees it changed. Only where that line is missing (Linux before 4.7)
/// is it read the old way, by setting it and setting it back.
pub fn process_umask() -> u32 {
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
/// (holes read back as zeros, so the output stays sparse: a shared output
/// was sized in advance, and one worker's output is sized at its end when
/// its last chunk is a hole). Returns whether the last chunk of `buf` was
/// such a hole (an empty chunk is not).
fn write_plaintext(
    layout: &Layout,
    first: u64,
    buf: &[u8],
    mut write: impl FnMut(&mut [IoSlice<'_>], u64) -> io::Result<()>,
) -> io::Result<bool> {
    let mut at = 0;
    let mut index = first;
    let mut run: Vec<IoSlice<'_>> = Vec::new();
    let mut run_offset = layout.plaintext_offset(first);
    let mut tail_hole = false;
    while at < buf.len() {
        let plain = layout.chunk_plaintext_len(index);
        let data = &buf[at..at + plain];
        let hole = data.iter().all(|&b| b == 0);
        tail_hole = hole && plain > 0;
        if hole {
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
    Ok(tail_hole)
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
    use crate::IoChoice;
    use cryptstream_format::{Keyring, MasterKey};
    use cryptstream_output::DirFd;
    use std::sync::Arc;

    fn settings(direction: Direction, io: IoChoice) -> Settings {
        let key = || MasterKey::from_key_bytes([5; 32]);
        Settings::builder(direction, Keyring::new(vec![key()], None))
            .chunk_size(1024)
            .encryption_key(Some(Arc::new(key())))
            .fixed_salt(Some([1; 32]))
            .io(io)
            .build()
    }

    fn job(input: PathBuf) -> FileJob {
        FileJob {
            relative: PathBuf::from("f"),
            size: 0,
            input,
            output: None,
            source: Source::File,
            looked: None,
        }
    }

    fn target(dir: &Path, name: &str) -> Target {
        let dir = DirFd::open(dir).unwrap();
        Target {
            root: dir.clone(),
            dir,
            name: name.into(),
        }
    }

    fn whole(settings: &Settings, input: PathBuf, target: &Target) {
        let outcome = process_whole(
            settings,
            &job(input),
            Some(target),
            &mut SecretBuf::new(),
            &Cancel::new(),
            &mut |_| {},
        );
        outcome.result.unwrap();
    }

    /// A job planned with a lookup is encrypted from that lookup: the
    /// header records the mode and mtime the plan saw (the worker does not
    /// look the file up again), and they come back on decryption.
    #[test]
    fn the_plans_lookup_gives_the_header_its_mode_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, vec![7u8; 3000]).unwrap();
        let meta = std::fs::metadata(&input).unwrap();
        let planned = Timestamp {
            seconds: 1_000_000,
            nanos: 5,
        };
        let mut encrypt_job = job(input.clone());
        encrypt_job.size = meta.len();
        encrypt_job.looked = Some(Looked {
            id: (meta.dev(), meta.ino()),
            mode: 0o640,
            mtime: planned,
        });
        let enc = settings(Direction::Encrypt, IoChoice::Auto);
        let outcome = process_whole(
            &enc,
            &encrypt_job,
            Some(&target(dir.path(), "enc")),
            &mut SecretBuf::new(),
            &Cancel::new(),
            &mut |_| {},
        );
        outcome.result.unwrap();
        let dec = settings(Direction::Decrypt, IoChoice::Auto);
        whole(&dec, dir.path().join("enc"), &target(dir.path(), "dec"));
        let back = std::fs::metadata(dir.path().join("dec")).unwrap();
        assert_eq!(Timestamp::mtime_of(&back), planned);
        assert_eq!(back.mode() & 0o777, 0o640 & !process_umask());
        assert_eq!(
            std::fs::read(dir.path().join("dec")).unwrap(),
            vec![7u8; 3000]
        );
    }

    /// A file replaced (same name, same size, another inode) between the
    /// plan's lookup and the worker's open is refused, and no output is
    /// left.
    #[test]
    fn a_file_replaced_after_the_plan_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, vec![1u8; 3000]).unwrap();
        let meta = std::fs::metadata(&input).unwrap();
        let mut planned_job = job(input.clone());
        planned_job.size = meta.len();
        planned_job.looked = Some(Looked::of(&meta));
        let other = dir.path().join("other");
        std::fs::write(&other, vec![2u8; 3000]).unwrap();
        std::fs::rename(&other, &input).unwrap();
        let outcome = process_whole(
            &settings(Direction::Encrypt, IoChoice::Auto),
            &planned_job,
            Some(&target(dir.path(), "enc")),
            &mut SecretBuf::new(),
            &Cancel::new(),
            &mut |_| {},
        );
        assert!(
            matches!(outcome.result, Err(Reason::Replaced)),
            "{:?}",
            outcome.result.err().map(|r| r.to_string())
        );
        assert!(!dir.path().join("enc").exists());
    }

    /// A file decrypted by one worker (read whole at open when small, no
    /// output sized in advance) comes back with its length and bytes when
    /// its chunks of zeros (last one included) are left as holes, and a
    /// file that ends in data needs no sizing at all.
    #[test]
    fn a_whole_file_ending_in_zeros_gets_its_length_and_stays_sparse() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut cases = Vec::new();
        // Small (read whole at open): data, a zero chunk, data, then a
        // partial chunk of zeros.
        let mut small = vec![7u8; 1024];
        small.extend(vec![0u8; 1024]);
        small.extend(vec![9u8; 1024]);
        small.extend(vec![0u8; 500]);
        cases.push(("small", small));
        // Larger than what is read whole, ending in whole chunks of zeros.
        let mut large = vec![5u8; 100_000];
        large.extend(vec![0u8; 300 * 1024]);
        cases.push(("large", large));
        cases.push(("data-last", vec![3u8; 5000]));
        for (name, plain) in cases {
            let input = dir.path().join(name);
            std::fs::write(&input, &plain).unwrap();
            let enc = settings(Direction::Encrypt, IoChoice::Pread);
            let sealed = format!("{name}.cst");
            whole(&enc, input, &target(dir.path(), &sealed));
            let dec = settings(Direction::Decrypt, IoChoice::Pread);
            let back = format!("{name}.back");
            whole(&dec, dir.path().join(&sealed), &target(dir.path(), &back));
            let out = dir.path().join(&back);
            assert_eq!(std::fs::read(&out).unwrap(), plain, "{name}");
            if name == "large" {
                let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
                assert!(blocks < 200_000, "{name}: {blocks} bytes allocated");
            }
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
            let name = format!("whole-{}", io.name());
            whole(&enc, dir.path().join("in"), &target(dir.path(), &name));
            outputs.push(std::fs::read(dir.path().join(&name)).unwrap());
            // Split: segments in reverse order, through an adopted copy.
            let name = format!("split-{}", io.name());
            let out = target(dir.path(), &name);
            let file = OpenFile::open_split(&enc, &job(dir.path().join("in")), Some(&out)).unwrap();
            let adopted = OpenFile::adopt(&enc, file.split_parts().unwrap()).unwrap();
            let firsts: Vec<u64> = (0..file.layout.chunk_count()).step_by(7).collect();
            for &first in firsts.iter().rev() {
                adopted
                    .run_segment(first, 7, &mut SecretBuf::new())
                    .unwrap();
            }
            file.finish(&enc).unwrap();
            outputs.push(std::fs::read(dir.path().join(&name)).unwrap());
            // And back.
            let dec = settings(Direction::Decrypt, io);
            let back = format!("back-{}", io.name());
            whole(&dec, dir.path().join(&name), &target(dir.path(), &back));
            assert_eq!(
                std::fs::read(dir.path().join(&back)).unwrap(),
                plain,
                "{}",
                io.name()
            );
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn a_shrunk_input_fails_with_shrank_under_mmap() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, vec![3u8; 200_000]).unwrap();
        let enc = settings(Direction::Encrypt, IoChoice::Mmap);
        let Opened::File(file) =
            OpenFile::open(&enc, &job(input.clone()), Some(&target(dir.path(), "out"))).unwrap()
        else {
            panic!("a regular file opens as a file");
        };
        assert_eq!(file.io_strategy(), IoStrategy::Mmap);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&input)
            .unwrap()
            .set_len(10_000)
            .unwrap();
        let err = file
            .run_segment(0, 1000, &mut SecretBuf::new())
            .unwrap_err();
        assert!(matches!(err, Reason::Shrank { .. }), "{err}");
        assert!(!dir.path().join("out").exists());
    }

    #[test]
    fn restored_modes_drop_special_bits_and_follow_the_umask_unless_asked() {
        let base = settings(Direction::Decrypt, IoChoice::Auto);
        assert_eq!(base.output_mode(0o6777), 0o755);
        assert_eq!(base.output_mode(0), 0o644);
        let keep = Settings::builder(Direction::Decrypt, Keyring::new(Vec::new(), None))
            .keep_special_bits(true)
            .umask(0o027)
            .build();
        assert_eq!(keep.output_mode(0o6777), 0o6750);
    }

    /// Deterministic bytes for the data islands of a sparse test file.
    fn island(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// Runs `segments` (indexes of segments of `per_segment` chunks) of
    /// `input` into `name` in `dir`, and commits the output.
    fn run_segments(settings: &Settings, input: &Path, dir: &Path, name: &str, segments: &[u64]) {
        let file = OpenFile::open_split(
            settings,
            &job(input.to_path_buf()),
            Some(&target(dir, name)),
        )
        .unwrap();
        let per_segment = settings.chunks_per_segment(file.layout.chunk_size());
        let mut buf = SecretBuf::new();
        for &segment in segments {
            file.run_segment(segment * per_segment, per_segment, &mut buf)
                .unwrap();
        }
        file.finish(settings).unwrap();
    }

    /// What the 4 GiB round trip (now the benchsuite's `big-files.sh`)
    /// checked, without moving gigabytes: the segments of sparse files of
    /// 2^32 + 4097 and 2^36 + 4097 bytes that hold data (the first, the two
    /// either side of the 2^32 or 2^36 mark, and the last, partial one) are
    /// encrypted and decrypted for real, at their real offsets. The
    /// ciphertext is checked against offsets computed here independently
    /// (so that an encrypt and a decrypt wrong in the same way cannot
    /// pass), a segment not run stays a hole, and the decrypted islands
    /// equal the input while the output stays sparse.
    #[test]
    fn segments_past_2_pow_32_and_2_pow_36_land_at_their_offsets() {
        use std::os::unix::fs::FileExt;
        const CHUNK: u64 = 1024;
        const STRIDE: u64 = CHUNK + TAG_LEN as u64;
        let h = cryptstream_format::HEADER_LEN_V2 as u64;
        for mark in [1u64 << 32, 1 << 36] {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in");
            let len = mark + 4097;
            let plain = File::create(&input).unwrap();
            plain.set_len(len).unwrap();
            let islands = [(0u64, 3000usize), (mark - 5000, 6000), (len - 3000, 3000)];
            for (i, &(at, n)) in islands.iter().enumerate() {
                plain.write_all_at(&island(n, i as u64 + 1), at).unwrap();
            }
            assert_eq!(plain.metadata().unwrap().len(), len, "the islands fit");
            drop(plain);

            let enc = settings(Direction::Encrypt, IoChoice::Pread);
            let per_segment = enc.chunks_per_segment(CHUNK as u32);
            assert_eq!(per_segment * CHUNK, crate::SEGMENT_BYTES);
            let chunks = len.div_ceil(CHUNK);
            let at_mark = mark / CHUNK / per_segment;
            let last = (chunks - 1) / per_segment;
            let segments = [0, at_mark - 1, at_mark, last];
            run_segments(&enc, &input, dir.path(), "enc", &segments);

            let encrypted = File::open(dir.path().join("enc")).unwrap();
            let size = encrypted.metadata().unwrap().len();
            assert_eq!(size, h + len + chunks * TAG_LEN as u64, "mark {mark}");
            // Every tag of the segments run sits where the arithmetic says.
            let mut tag = [0u8; TAG_LEN];
            for &segment in &segments {
                let first = segment * per_segment;
                for index in first..(first + per_segment).min(chunks) {
                    let plain_len = (len - index * CHUNK).min(CHUNK);
                    let tag_at = h + index * STRIDE + plain_len;
                    encrypted.read_exact_at(&mut tag, tag_at).unwrap();
                    assert_ne!(
                        tag, [0; TAG_LEN],
                        "mark {mark}: tag of chunk {index} at {tag_at}"
                    );
                }
            }
            // A segment that was not run is still a hole: nothing was
            // written to a wrapped offset.
            let mut hole = vec![0u8; (per_segment * STRIDE) as usize];
            encrypted
                .read_exact_at(&mut hole, h + (at_mark / 2) * per_segment * STRIDE)
                .unwrap();
            assert!(
                hole.iter().all(|&b| b == 0),
                "mark {mark}: data in a segment not run"
            );

            let dec = settings(Direction::Decrypt, IoChoice::Pread);
            run_segments(&dec, &dir.path().join("enc"), dir.path(), "back", &segments);
            let back = File::open(dir.path().join("back")).unwrap();
            let meta = back.metadata().unwrap();
            assert_eq!(meta.len(), len);
            for (i, &(at, n)) in islands.iter().enumerate() {
                let mut got = vec![0u8; n];
                back.read_exact_at(&mut got, at).unwrap();
                assert!(
                    got == island(n, i as u64 + 1),
                    "mark {mark}: island at {at}"
                );
            }
            // Only the chunks with data were written: far less than one
            // segment per segment run is allocated.
            assert!(
                meta.blocks() * 512 < segments.len() as u64 * crate::SEGMENT_BYTES,
                "mark {mark}: {} blocks allocated for a sparse output",
                meta.blocks()
            );
        }
    }
}
