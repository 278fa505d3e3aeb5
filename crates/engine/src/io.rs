//! I/O strategies: how the bytes of a file get from the disk into a worker's
//! buffer and back out.
//!
//! * [`IoStrategy::Read`]: `read(2)`/`write(2)` through the file position.
//!   A file done start to end by one worker reads its own descriptor in
//!   order; a segment of a split file gets a private descriptor (the file
//!   reopened through `/proc/self/fd`), so that workers never share a file
//!   position.
//! * [`IoStrategy::Pread`]: positional `preadv(2)`/`pwritev(2)` on the one
//!   shared descriptor of the file.
//! * [`IoStrategy::Mmap`]: the input is memory-mapped and copied chunk by
//!   chunk from the mapping into the buffer that is sealed or opened in
//!   place; the output is written with `pwritev(2)`. See [`InputMap`] for
//!   what happens when a mapped file shrinks.
//!
//! [`IoChoice::Auto`] picks one per file by size; the thresholds were
//! measured (see `docs/ARCHITECTURE.md`, "I/O strategies").

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Inputs of at least this many bytes are memory-mapped by `--io auto`;
/// `None`: never.
///
/// Measured on the 2-core development machine (docs/ARCHITECTURE.md, "I/O
/// strategies"): mapping costs an `mmap`/`munmap` pair, a page fault per
/// 64 KiB of readahead and, with several threads, a TLB shootdown on unmap,
/// which loses to `pread` on small files and on ext4; on 1 MiB files and on
/// the large file it was never faster than pread either. So `auto` does not
/// pick mmap today; the constant keeps the decision in one place for
/// machines where it pays.
pub const MMAP_MIN_BYTES: Option<u64> = None;

/// The `--io` choice of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IoChoice {
    /// Pick per file from measured thresholds ([`IoChoice::strategy_for`]).
    #[default]
    Auto,
    /// Buffered `read`/`write` through the file position.
    Read,
    /// Positional `pread`/`pwrite`.
    Pread,
    /// Memory-mapped input, positional writes.
    Mmap,
}

/// The I/O strategy of one file, once [`IoChoice::Auto`] is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoStrategy {
    /// `read`/`write` through a private file position.
    Read,
    /// `preadv`/`pwritev` at explicit offsets.
    Pread,
    /// Copy from a read-only shared mapping of the input.
    Mmap,
}

impl IoChoice {
    /// The strategy for an input of `len` bytes: the explicit choice, or for
    /// `Auto`, mmap from [`MMAP_MIN_BYTES`] up (never, today) and pread
    /// below.
    pub fn strategy_for(self, len: u64) -> IoStrategy {
        match self {
            IoChoice::Read => IoStrategy::Read,
            IoChoice::Pread => IoStrategy::Pread,
            IoChoice::Mmap => IoStrategy::Mmap,
            IoChoice::Auto if MMAP_MIN_BYTES.is_some_and(|min| len >= min) => IoStrategy::Mmap,
            IoChoice::Auto => IoStrategy::Pread,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            IoChoice::Auto => "auto",
            IoChoice::Read => "read",
            IoChoice::Pread => "pread",
            IoChoice::Mmap => "mmap",
        }
    }

    /// The choice a command-line name stands for.
    pub fn from_name(name: &str) -> Option<IoChoice> {
        [
            IoChoice::Auto,
            IoChoice::Read,
            IoChoice::Pread,
            IoChoice::Mmap,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }
}

/// How many mappings can be registered with the SIGBUS handler at once.
/// More concurrent mappings than this fall back to pread (never unsafely).
const MAX_MAPPINGS: usize = 1024;

/// One registered mapping: its address range and whether it was found
/// truncated. `start == 0` means the slot is free.
struct MapSlot {
    start: AtomicUsize,
    len: AtomicUsize,
    shrunk: AtomicBool,
}

impl MapSlot {
    const fn new() -> MapSlot {
        MapSlot {
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            shrunk: AtomicBool::new(false),
        }
    }
}

/// The mappings the SIGBUS handler may repair. Lock-free, because it is
/// read from a signal handler.
static MAPPINGS: [MapSlot; MAX_MAPPINGS] = [const { MapSlot::new() }; MAX_MAPPINGS];
/// The page size, read once before the handler can run.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
/// Installs the handler once per process.
static INSTALL: Once = Once::new();
/// Whether the handler is in place (mmap is refused without it).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The action that was in place before ours, for faults that are not ours.
static mut PREVIOUS_ACTION: Option<libc::sigaction> = None;

/// SIGBUS handler: when the faulting address lies in a registered input
/// mapping, the rest of that mapping is replaced by anonymous zero pages and
/// the mapping is flagged as shrunk; the faulting copy then resumes, reads
/// zeros, and its caller reports [`crate::Reason::Shrank`]. Any other SIGBUS
/// restores the previous action and returns, so the fault repeats and is
/// handled (normally: kills the process) as if we were not there.
extern "C" fn on_sigbus(_signal: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers;
    // si_addr is the faulting address for SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &MAPPINGS {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start == 0 || addr < start || addr >= start + len {
            continue;
        }
        let page = PAGE_SIZE.load(Ordering::Relaxed);
        let from = addr & !(page - 1);
        // SAFETY: [from, start + len) lies inside a mapping this process
        // made and still owns (it is unregistered before it is unmapped);
        // replacing it with private anonymous memory only changes what the
        // interrupted copy reads. mmap is a plain system call here (it takes
        // no lock in user space), so it is safe to call from the handler.
        let fixed = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                start + len - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if fixed != libc::MAP_FAILED {
            slot.shrunk.store(true, Ordering::Release);
            return;
        }
        break;
    }
    // Not ours (or the repair failed): put the previous action back and let
    // the fault happen again under it.
    // SAFETY: PREVIOUS_ACTION is written once, before the handler is
    // installed, and only read afterwards.
    unsafe {
        let previous = (*std::ptr::addr_of!(PREVIOUS_ACTION)).unwrap_or_else(|| {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            dfl
        });
        libc::sigaction(libc::SIGBUS, &previous, std::ptr::null_mut());
    }
}

/// Installs the SIGBUS handler (once) and says whether it is in place.
fn install_sigbus_handler() -> bool {
    INSTALL.call_once(|| {
        PAGE_SIZE.store(rustix::param::page_size(), Ordering::Relaxed);
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
        // the handler has the SA_SIGINFO signature; PREVIOUS_ACTION is
        // written before the handler can run (sigaction publishes it).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) == 0 {
                *std::ptr::addr_of_mut!(PREVIOUS_ACTION) = Some(previous);
                if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0 {
                    INSTALLED.store(true, Ordering::Release);
                }
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

/// A read-only shared mapping of a whole input file, registered with the
/// process's SIGBUS handler for as long as it lives.
///
/// Reading a mapped file that another process truncates raises SIGBUS on
/// the pages past the new end. Every copy out of the mapping goes through
/// [`InputMap::copy_out`]; the handler replaces the missing pages with
/// zeros and flags the mapping, and `copy_out` reports the file as shrunk.
/// The bytes are only ever copied with raw pointer copies (never viewed as
/// a `&[u8]`), because another process may change them at any time.
pub(crate) struct InputMap {
    ptr: *mut u8,
    len: usize,
    slot: &'static MapSlot,
}

// SAFETY: the mapping is read-only and only read through raw copies; the
// registry slot is atomics.
unsafe impl Send for InputMap {}
// SAFETY: as above; concurrent copies from a shared mapping are fine.
unsafe impl Sync for InputMap {}

/// The mapped file turned out shorter than when it was mapped.
#[derive(Debug)]
pub(crate) struct Shrunk;

impl InputMap {
    /// Maps `len` bytes of `file`. `Ok(None)` when mapping cannot be done
    /// safely here (empty file, no SIGBUS handler, registry full): the
    /// caller then reads with pread.
    ///
    /// # Errors
    /// Any error from `mmap`.
    pub(crate) fn new(file: &File, len: u64) -> io::Result<Option<InputMap>> {
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        if len == 0 || !install_sigbus_handler() {
            return Ok(None);
        }
        let Some(slot) = MAPPINGS.iter().find(|s| {
            s.len
                .compare_exchange(0, len, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return Ok(None);
        };
        // SAFETY: a fresh read-only shared mapping chosen by the kernel; it
        // aliases nothing in this process.
        let mapped = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                file,
                0,
            )
        };
        let ptr = match mapped {
            Ok(ptr) => ptr.cast::<u8>(),
            Err(e) => {
                slot.len.store(0, Ordering::Release);
                return Err(e.into());
            }
        };
        slot.shrunk.store(false, Ordering::Relaxed);
        slot.start.store(ptr as usize, Ordering::Release);
        Ok(Some(InputMap { ptr, len, slot }))
    }

    /// Copies the bytes at `offset..` into each of `dst` in turn and returns
    /// how many were copied (fewer only at the end of the mapping).
    ///
    /// # Errors
    /// [`Shrunk`] when the file was truncated under the mapping (before or
    /// during this copy).
    pub(crate) fn copy_out(
        &self,
        offset: u64,
        dst: &mut [std::io::IoSliceMut<'_>],
    ) -> Result<usize, Shrunk> {
        let mut at = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len);
        let mut total = 0;
        for part in dst.iter_mut() {
            let n = part.len().min(self.len - at);
            if n > 0 {
                // SAFETY: `at + n <= self.len`, so the source lies inside the
                // live mapping; `part` is a distinct writable buffer. A
                // truncated file raises SIGBUS here, which the handler turns
                // into zero pages (checked below).
                unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(at), part.as_mut_ptr(), n) };
            }
            at += n;
            total += n;
        }
        if self.slot.shrunk.load(Ordering::Acquire) {
            return Err(Shrunk);
        }
        Ok(total)
    }

    /// Asks the kernel to start reading `offset..offset + len` ahead.
    pub(crate) fn will_need(&self, offset: u64, len: usize) {
        let page = PAGE_SIZE.load(Ordering::Relaxed);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        let start = (start & !(page - 1)).min(self.len);
        let end = (start + len + page).min(self.len);
        if end > start {
            // SAFETY: the range lies inside the mapping; MADV_WILLNEED only
            // schedules readahead and never changes the contents.
            let _ = unsafe {
                rustix::mm::madvise(
                    self.ptr.add(start).cast(),
                    end - start,
                    rustix::mm::Advice::WillNeed,
                )
            };
        }
    }
}

impl Drop for InputMap {
    fn drop(&mut self) {
        // Unregister first, so the handler never touches an address range
        // that is unmapped (and maybe reused).
        self.slot.start.store(0, Ordering::Release);
        // SAFETY: ptr/len are exactly the mapping made in `new`, which no
        // one uses any more (this is its drop).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
        self.slot.len.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn auto_uses_pread_below_the_threshold() {
        assert_eq!(IoChoice::Auto.strategy_for(1 << 20), IoStrategy::Pread);
        assert_eq!(IoChoice::Mmap.strategy_for(1), IoStrategy::Mmap);
        assert_eq!(IoChoice::from_name("read"), Some(IoChoice::Read));
        assert_eq!(IoChoice::from_name("nope"), None);
    }

    #[test]
    fn copy_out_reads_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let map = InputMap::new(&file, data.len() as u64).unwrap().unwrap();
        let mut a = vec![0u8; 100];
        let mut b = vec![0u8; 50];
        let got = map
            .copy_out(
                9_000,
                &mut [
                    std::io::IoSliceMut::new(&mut a),
                    std::io::IoSliceMut::new(&mut b),
                ],
            )
            .unwrap();
        assert_eq!(got, 150);
        assert_eq!(a, data[9_000..9_100]);
        assert_eq!(b, data[9_100..9_150]);
    }

    #[test]
    fn a_file_that_shrinks_under_the_map_is_reported_not_fatal() {
        let mut file = tempfile::tempfile().unwrap();
        let page = rustix::param::page_size();
        file.write_all(&vec![7u8; page * 8]).unwrap();
        let map = InputMap::new(&file, (page * 8) as u64).unwrap().unwrap();
        file.set_len(page as u64).unwrap();
        let mut buf = vec![1u8; page * 4];
        assert!(map
            .copy_out(0, &mut [std::io::IoSliceMut::new(&mut buf)])
            .is_err());
        assert!(buf[..page].iter().all(|&b| b == 7));
        assert!(buf[page..].iter().all(|&b| b == 0));
    }
}
