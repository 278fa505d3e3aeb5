//! What can go wrong while benchmarking.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a benchmark could not run to the end.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A file-system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "remove"...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The binary could not be started or waited for.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The system's reason.
        source: io::Error,
    },
    /// The binary exited with an error.
    #[error("{command} failed ({status}): {stderr}")]
    ChildFailed {
        /// The command line.
        command: String,
        /// How it ended ("exit code 1", "killed by signal 9").
        status: String,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// The binary's `--json` output could not be read.
    #[error("{command} printed no valid JSON summary ({source}); it printed: {stdout}")]
    BadSummary {
        /// The command line.
        command: String,
        /// The parser's reason.
        source: serde_json::Error,
        /// The start of what it printed on stdout.
        stdout: String,
    },
    /// The workload has no regular files.
    #[error("the workload {} holds no files to benchmark", path.display())]
    EmptyWorkload {
        /// The workload folder.
        path: PathBuf,
    },
    /// The scratch folder is inside the workload, so outputs would become
    /// inputs.
    #[error("the scratch folder {} is inside the workload {}: choose one outside it", scratch.display(), workload.display())]
    ScratchInWorkload {
        /// The scratch folder.
        scratch: PathBuf,
        /// The workload folder.
        workload: PathBuf,
    },
    /// The configuration has nothing to run (no engine, no worker count, or
    /// zero runs).
    #[error("nothing to benchmark: {0}")]
    EmptyMatrix(&'static str),
    /// Generating a workload failed.
    #[error(transparent)]
    Generate(#[from] cryptstream_workload::GenError),
}

/// Wraps an `io::Error` with what was being done to which path.
pub(crate) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> BenchError {
    let path = path.into();
    move |source| BenchError::Io {
        action,
        path,
        source,
    }
}
