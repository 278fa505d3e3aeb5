//! Process-wide settings, made once by the binary at the start of `main`
//! and never lazily by a library.

use anyhow::Context;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Sets the limits this process (and every worker process it starts, which
/// inherits them) runs under:
///
/// - **No core dumps** (`RLIMIT_CORE` 0, soft and hard). Keys, passphrases,
///   and plaintext live in this process's memory; a crash must not write
///   them to a core file that outlives the run. The hard limit is lowered
///   too, so nothing started later can raise it again.
/// - **As many open files as allowed** (`RLIMIT_NOFILE` soft limit raised to
///   the hard limit). The engine keeps a descriptor open per output
///   directory besides the files in flight, and a deep tree must not fail on
///   the usual soft limit of 1024. This part is best effort: where it
///   cannot be raised, the run goes on with the limit it has.
///
/// `prctl(PR_SET_DUMPABLE, 0)` would also stop core dumps, but it is not
/// used: it makes `/proc/self/fd` owned by root, so a process of an
/// ordinary user could no longer open its own descriptors there, and the
/// engine links its `O_TMPFILE` outputs into place through
/// `/proc/self/fd/N`.
///
/// Called first in `main`, before the check for a worker process, while
/// the process still has a single thread.
///
/// # Errors
/// When core dumps cannot be disabled: the binary then refuses to handle
/// secrets at all.
pub fn process_setup() -> anyhow::Result<()> {
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )
    .context("cannot disable core dumps (setrlimit RLIMIT_CORE)")?;
    raise_open_file_limit();
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, ignoring failure.
fn raise_open_file_limit() {
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft limit for descriptors
    // (the kernel caps it at `nr_open`): keep the soft limit then.
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                },
            );
        }
    }
}
