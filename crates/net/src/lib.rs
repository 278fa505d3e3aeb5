//! Network transfer: `serve` receives files over TLS 1.3, `send` sends
//! them over several connections at once and resumes what was cut off.
//!
//! The wire protocol (`docs/PROTOCOL.md`) is a sequence of frames
//! ([`frame`]: a type byte, a big-endian length, a payload, each type with
//! a size limit checked before anything is read) inside a TLS 1.3 session
//! ([`tls`]: rustls on aws-lc-rs, a self-signed server certificate that
//! clients pin by fingerprint). Both ends prove they hold the access
//! [`auth::Token`] with HMACs over each other's fresh nonce, bound to the
//! TLS session, the server first: a client sends no name, size or byte to
//! a server that has not proven it, and the server answers nothing but
//! the exchange before the client has.
//!
//! The [`server::Server`] runs on tokio's multi-threaded runtime (epoll):
//! one task per session, at most `max_connections` at once, a deadline on
//! every read, file I/O on blocking threads. What it receives goes to a
//! [`receive::Destination`]; [`receive::DirDestination`] writes each file
//! as a partial file below the root (never following a symbolic link),
//! records the byte ranges it holds, verifies the whole-file BLAKE3 on
//! commit and only then renames it to its final name.
//!
//! The client ([`client::send`]) plans a tree like `rsync -a`
//! ([`client::plan_tree`]: files, symbolic links, hard links,
//! directories), asks the server which files it holds already under their
//! final name (same size and mtime, or with `--checksum` same content),
//! cuts the others into ranges and lets `connections` sessions take
//! ranges from one queue; for each range it asks what the server already
//! holds and sends only the rest. Symbolic links, hard links and
//! directories (their modes and mtimes) follow once every file arrived.
//! The server makes them below its root without following any link
//! (`entries`), and gives files and directories the mode policy of every
//! restoring command ([`receive::ModePolicy`]).
//!
//! Both sides build their own runtime inside a synchronous entry point
//! ([`server::Server::bind`]/[`server::Server::run`], [`client::send`]),
//! so no other crate sees tokio.

#![deny(missing_docs)]

pub mod auth;
pub mod client;
mod entries;
pub mod frame;
#[cfg(any(test, feature = "test-knobs"))]
pub mod hooks;
pub mod name;
pub mod object_client;
pub mod objects;
pub mod ranges;
pub mod receive;
pub mod server;
pub mod tls;
pub mod treehash;
pub mod wire;

use std::path::PathBuf;

pub use auth::Token;
pub use client::{plan_tree, send, Comparison, Plan, PlannedFile, SendConfig, SendSummary};
/// The progress trait of every operation, from the pool crate.
pub use cryptstream_pool::{NoProgress, Progress};
pub use frame::ErrorCode;
pub use receive::{Destination, DirDestination, ModePolicy};
pub use server::{ServeConfig, ServeStats, Server};
pub use tls::{Fingerprint, Identity, ServerTrust};

impl NetError {
    /// Whether this error ends a whole send (trust or authentication),
    /// rather than one connection.
    pub fn ends_the_send(&self) -> bool {
        matches!(
            self,
            NetError::Refused { .. }
                | NetError::Tls(_)
                | NetError::ServerUnproven { .. }
                | NetError::PinMismatch { .. }
                | NetError::HostChanged { .. }
        )
    }
}

/// What can go wrong in `serve` or `send` as a whole.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A token file.
    #[error("{}: {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate or key beside the token.
    #[error("{}: {reason}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A known-hosts file.
    #[error("{}: {reason}", path.display())]
    KnownHosts {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A fingerprint given by the user.
    #[error("bad fingerprint {0}")]
    Fingerprint(String),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server closed the connection during the TLS handshake (its
    /// pool of unauthenticated connections is full): try again.
    #[error("{address}: the server closed the connection during the TLS handshake")]
    Busy {
        /// `HOST:PORT`.
        address: String,
    },
    /// The server did not prove that it holds the token: nothing was sent.
    #[error(
        "{address}: the server did not prove that it holds this token (a wrong token file, or not the server meant); nothing was sent"
    )]
    ServerUnproven {
        /// `HOST:PORT`.
        address: String,
    },
    /// The server presented another certificate than `--server-fingerprint`.
    #[error(
        "{address}: the server presents certificate fingerprint {}, not the {} given with --server-fingerprint; nothing was sent",
        seen.to_hex(), expected.to_hex()
    )]
    PinMismatch {
        /// `HOST:PORT`.
        address: String,
        /// What it presented.
        seen: Fingerprint,
        /// What was given.
        expected: Fingerprint,
    },
    /// The server presented another certificate than the one recorded.
    #[error(
        "{host}: the server's certificate changed: it presents fingerprint {}, but {} line {line} records {}; this is another server, or its certificate was made anew. Nothing was sent. If you trust the change, delete line {line} of {} and send again (the new fingerprint is then recorded), or give --server-fingerprint {}",
        seen.to_hex(), file.display(), recorded.to_hex(), file.display(), seen.to_hex()
    )]
    HostChanged {
        /// `HOST:PORT`.
        host: String,
        /// The known-hosts file.
        file: PathBuf,
        /// The line (from 1) recording the host.
        line: usize,
        /// What it presented.
        seen: Fingerprint,
        /// What is recorded.
        recorded: Fingerprint,
    },
    /// The async runtime or a socket could not be made.
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
    /// The listening address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not be reached or spoke no protocol we know.
    #[error("{address}: {reason}")]
    Connect {
        /// `HOST:PORT`.
        address: String,
        /// Why.
        reason: String,
    },
    /// The server refused the session (wrong token, version, ...).
    #[error("the server refused the session: {code}: {message}")]
    Refused {
        /// The code it sent.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// A file or directory to send.
    #[error("{}: {reason}", path.display())]
    Input {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
