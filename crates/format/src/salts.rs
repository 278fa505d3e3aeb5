//! Salts of new files, drawn from a per-thread reserve.
//!
//! Every new file needs 32 fresh random bytes; one `getrandom(2)` call per
//! file was one system call in twelve of a 4 KiB file's encryption. Each
//! thread now keeps [`RESERVE_SALTS`] salts, filled by one call when empty,
//! and hands each one out once.
//!
//! A copy of a reserve must never be used twice: a process forked after
//! a reserve was filled would hand out the same salts as its parent. The
//! reserve therefore lives in an anonymous page marked `MADV_WIPEONFORK`
//! (Linux 4.14): in a child the kernel maps zeros in its place, and the
//! count of salts left, kept in that page, reads 0, so the child fills its
//! own. This holds however the child was made (`fork`, `clone`, a raw
//! system call), unlike an at-fork hook. Where the page cannot be made or
//! marked, every salt comes from its own `getrandom` call, as before.

use std::cell::RefCell;
use std::ptr::NonNull;

use zeroize::Zeroize;

use crate::header::SALT_LEN;
use crate::FormatError;

/// Salts drawn by one `getrandom` call (1 KiB).
const RESERVE_SALTS: usize = 32;

/// The contents of a reserve's page. All zeros is a valid, empty reserve:
/// what a forked child sees.
#[repr(C)]
struct ReservePage {
    /// Random salts; those below `left` have not been handed out.
    salts: [[u8; SALT_LEN]; RESERVE_SALTS],
    /// How many salts are left.
    left: usize,
}

/// One thread's reserve: a private anonymous page, wiped in forked children.
struct SaltReserve {
    page: NonNull<ReservePage>,
}

impl SaltReserve {
    /// Maps and marks the page; `None` where either fails.
    fn new() -> Option<SaltReserve> {
        let len = page_len();
        // SAFETY: a new private anonymous mapping, at an address the kernel
        // chooses; nothing else refers to it.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .ok()?;
        // SAFETY: `ptr` is the start of the `len` bytes just mapped.
        let marked = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxWipeOnFork) };
        if marked.is_err() {
            // SAFETY: the mapping made above, not referred to by anything.
            let _ = unsafe { rustix::mm::munmap(ptr, len) };
            return None;
        }
        // A fresh anonymous page is zeroed: an empty reserve. It is page
        // aligned and at least a page long, more than `ReservePage` needs.
        NonNull::new(ptr.cast::<ReservePage>()).map(|page| SaltReserve { page })
    }

    /// The next salt, refilling the reserve when it is empty.
    fn take(&mut self) -> Result<[u8; SALT_LEN], FormatError> {
        // SAFETY: the page is mapped, aligned, initialised (zeros or what
        // this thread wrote) and owned by this reserve alone.
        let page = unsafe { self.page.as_mut() };
        if page.left == 0 || page.left > RESERVE_SALTS {
            crate::fill_random(page.salts.as_flattened_mut())?;
            page.left = RESERVE_SALTS;
        }
        page.left -= 1;
        let salt = page.salts[page.left];
        // Handed out once: the copy left behind is cleared.
        page.salts[page.left].zeroize();
        Ok(salt)
    }
}

impl Drop for SaltReserve {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the reference ends before the
        // unmap and nothing else refers to the page.
        unsafe {
            self.page.as_mut().salts.as_flattened_mut().zeroize();
            let _ = rustix::mm::munmap(self.page.as_ptr().cast(), page_len());
        }
    }
}

/// The length of the reserve's mapping: one page (or more, should a page
/// be smaller than the reserve).
fn page_len() -> usize {
    rustix::param::page_size().max(std::mem::size_of::<ReservePage>())
}

thread_local! {
    /// This thread's reserve, made at its first salt; `None` inside when
    /// the page could not be made (then each salt is drawn on its own).
    static RESERVE: RefCell<Option<Option<SaltReserve>>> = const { RefCell::new(None) };
}

/// A fresh random salt for a new file, never handed out before in this
/// process or any process forked from it.
///
/// # Errors
/// [`FormatError::Random`] when the system random source fails.
pub(crate) fn fresh_salt() -> Result<[u8; SALT_LEN], FormatError> {
    RESERVE.with(|cell| {
        let mut cell = cell.borrow_mut();
        match cell.get_or_insert_with(SaltReserve::new) {
            Some(reserve) => reserve.take(),
            None => {
                let mut salt = [0u8; SALT_LEN];
                crate::fill_random(&mut salt)?;
                Ok(salt)
            }
        }
    })
}

/// Fills `out` with fresh random bytes for a salt or nonce, from this
/// thread's reserve: one salt per [`SALT_LEN`] bytes (or part of them), each
/// handed out once, as [`fresh_salt`] does for new files. For the many
/// small salts of a store's blobs, which otherwise cost one `getrandom(2)`
/// call each.
///
/// # Errors
/// [`FormatError::Random`] when the system random source fails.
pub fn fill_fresh(out: &mut [u8]) -> Result<(), FormatError> {
    for piece in out.chunks_mut(SALT_LEN) {
        let mut salt = fresh_salt()?;
        piece.copy_from_slice(&salt[..piece.len()]);
        salt.zeroize();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn short_salts_from_the_reserve_never_repeat_and_long_ones_fill_whole() {
        let salts: HashSet<[u8; 16]> = (0..10 * RESERVE_SALTS)
            .map(|_| {
                let mut salt = [0u8; 16];
                fill_fresh(&mut salt).unwrap();
                salt
            })
            .collect();
        assert_eq!(salts.len(), 10 * RESERVE_SALTS);
        // Longer than one salt: every part is filled, and no two parts
        // are the same salt.
        let mut long = [0u8; 2 * SALT_LEN + 5];
        fill_fresh(&mut long).unwrap();
        assert_ne!(long[..SALT_LEN], long[SALT_LEN..2 * SALT_LEN]);
        assert_ne!(long[2 * SALT_LEN..], [0u8; 5]);
    }

    #[test]
    fn salts_from_the_reserve_never_repeat() {
        let salts: HashSet<[u8; SALT_LEN]> = (0..10 * RESERVE_SALTS)
            .map(|_| fresh_salt().unwrap())
            .collect();
        assert_eq!(salts.len(), 10 * RESERVE_SALTS);
    }

    #[test]
    fn the_reserve_is_one_page_marked_wipe_on_fork() {
        // The fallback (one call per salt) would pass the other tests too;
        // this says the reserve itself is in use on this kernel.
        RESERVE.with(|cell| cell.borrow_mut().take());
        fresh_salt().unwrap();
        RESERVE.with(|cell| assert!(matches!(&*cell.borrow(), Some(Some(_)))));
    }

    /// A child forked with salts left in the parent's reserve draws other
    /// salts than the parent does next: the child's copy of the page is
    /// wiped by the kernel.
    #[test]
    fn a_forked_child_does_not_repeat_the_parents_next_salt() {
        // The reserve is filled and has salts left.
        fresh_salt().unwrap();
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        // SAFETY: the child only draws a salt (a `getrandom` system call
        // and this thread's own page), writes it to the pipe and exits
        // without running destructors or at-exit handlers.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let salt = fresh_salt().unwrap_or([0; SALT_LEN]);
            let _ = rustix::io::write(&write_end, &salt);
            // SAFETY: ends the child at once, as `fork` children should.
            unsafe { libc::_exit(0) };
        }
        drop(write_end);
        let mut child_salt = [0u8; SALT_LEN];
        let mut got = 0;
        while got < SALT_LEN {
            let n = rustix::io::read(&read_end, &mut child_salt[got..]).unwrap();
            assert!(n > 0, "the child wrote no salt");
            got += n;
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let parent_next: HashSet<[u8; SALT_LEN]> =
            (0..RESERVE_SALTS).map(|_| fresh_salt().unwrap()).collect();
        assert_ne!(child_salt, [0u8; SALT_LEN]);
        assert!(!parent_next.contains(&child_salt));
    }
}
