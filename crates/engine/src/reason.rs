//! Why one file failed: the engine's error type, shared by both engines,
//! the stream path and the envelope seam.

use std::io;

use cryptstream_format::{EnvelopeError, FormatError};
use thiserror::Error;

/// Why one file failed. The path is added by [`crate::FileFailure`].
#[derive(Debug, Error)]
pub enum Reason {
    /// The file's bytes are not a valid cryptstream file for these keys.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// The file is not valid for its container (an age failure class, for
    /// example), as the container words it.
    #[error("{0}")]
    Envelope(Box<dyn std::error::Error + Send + Sync>),
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
    /// The input's name led to another file when it was opened than when
    /// the run was planned (the file was replaced in between).
    #[error("file replaced after the run looked it up; run again")]
    Replaced,
    /// A link entry cannot be restored where it is being decrypted.
    #[error("{0}")]
    Link(String),
    /// The run was interrupted.
    #[error("interrupted")]
    Cancelled,
    /// The executor that ran the file reported this failure (its message,
    /// as printed): a worker process, for example.
    #[error("{0}")]
    Executor(String),
}

impl From<EnvelopeError> for Reason {
    fn from(error: EnvelopeError) -> Reason {
        match error {
            EnvelopeError::Format(format) => Reason::Format(format),
            EnvelopeError::Container(inner) => Reason::Envelope(inner),
            EnvelopeError::Read(e) => Reason::Read(e),
            EnvelopeError::Write(e) => Reason::Write(e),
        }
    }
}
