//! The frames of the wire protocol (`docs/PROTOCOL.md`): encoding and
//! parsing, pure computation on byte slices.
//!
//! Every frame is `type: u8`, `length: u32` (big-endian, payload bytes),
//! then `length` bytes of payload. [`FrameHeader::parse`] checks the type
//! and the length against that type's limit *before* any payload is read,
//! so a peer can never make us allocate more than [`MAX_DATA_PAYLOAD`] +
//! [`DATA_PREFIX_LEN`] bytes for one frame. [`Frame::parse`] then decodes a
//! payload, refusing anything that does not match the layout exactly.

use std::fmt;

/// Protocol magic sent in the client's hello.
pub const MAGIC: [u8; 4] = *b"CSTN";
/// The protocol version this code speaks (2: both ends prove the token;
/// 3: whole trees, with `Check`, `Mkdir`, `Symlink` and `Link`).
pub const VERSION: u16 = 4;
/// Bytes of the frame header: type and length.
pub const HEADER_LEN: usize = 5;
/// Most payload bytes of any frame other than `Data`.
pub const MAX_CONTROL_PAYLOAD: u32 = 8 * 1024;
/// Most payload bytes of a `Symlink` or `Link` frame: two names of up to
/// [`MAX_NAME_LEN`] bytes each, their lengths and the fixed fields.
pub const MAX_LINK_PAYLOAD: u32 = 9 * 1024;
/// Most file bytes carried by one `Data` frame.
pub const MAX_DATA_PAYLOAD: u32 = 256 * 1024;
/// Bytes before the file bytes in a `Data` payload: file id and offset.
pub const DATA_PREFIX_LEN: usize = 12;
/// Longest relative name, in bytes (Linux `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;
/// Longest error message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Most ranges listed in one `Held` frame (the rest are sent again).
pub const MAX_HELD_RANGES: usize = 256;
/// Bytes of each side's nonce and of each side's proof.
pub const NONCE_LEN: usize = 32;
/// Bytes of a whole-file BLAKE3 hash.
pub const HASH_LEN: usize = 32;
/// The file id of an error that concerns no file.
pub const NO_FILE: u32 = u32::MAX;
/// Largest payload of an `ObjNames` frame (one page of a listing).
pub const MAX_NAMES_PAYLOAD: u32 = 64 * 1024;

/// The type byte of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Client: magic, version and a fresh random nonce.
    Hello = 0x01,
    /// Server: version, a fresh random nonce and its proof of the token.
    Challenge = 0x02,
    /// Client: its proof of the token.
    Auth = 0x03,
    /// Server: the proof was right.
    AuthOk = 0x04,
    /// Client: a file it is about to send bytes of.
    Open = 0x10,
    /// Server: the byte ranges of that file it already holds.
    Held = 0x11,
    /// Client: bytes of an open file at an offset.
    Data = 0x12,
    /// Client: asks the server to confirm every byte sent so far is written.
    Sync = 0x13,
    /// Server: they are.
    Synced = 0x14,
    /// Client: the whole file was sent; its hash.
    Commit = 0x15,
    /// Server: the file is complete, verified and under its final name.
    Committed = 0x16,
    /// Client: it sends no more bytes of this file on this connection.
    Close = 0x17,
    /// Client: asks whether the server already holds a file under its
    /// final name (same size and mtime, or same content).
    Check = 0x18,
    /// Server: whether it does.
    Checked = 0x19,
    /// Client: a directory, created if missing, with its mode and mtime
    /// (sent once everything inside it arrived).
    Mkdir = 0x20,
    /// Client: a symbolic link and the bytes of its target.
    Symlink = 0x21,
    /// Client: a hard link to a file that is already on the server.
    Link = 0x22,
    /// Server: the directory or link of an entry id is made.
    Made = 0x23,
    /// Client of a store server: starts a create-only write of an object.
    ObjCreate = 0x30,
    /// Client: every byte of the object was sent; its size. Commits it.
    ObjCommit = 0x31,
    /// Client: asks for a range of an object.
    ObjRead = 0x32,
    /// Client: asks for a whole object of at most a stated size.
    ObjGet = 0x33,
    /// Client: asks for the size of an object.
    ObjStat = 0x34,
    /// Server: the size of the object asked for (then its bytes, if asked).
    ObjSize = 0x35,
    /// Client: asks for the objects whose names start with a prefix.
    ObjList = 0x36,
    /// Server: one page of a listing.
    ObjNames = 0x37,
    /// Client: asks to delete an object.
    ObjDelete = 0x38,
    /// Server: the commit or delete is done.
    ObjDone = 0x39,
    /// Client: asks how the server hosts its store.
    ObjInfo = 0x3A,
    /// Server: how it hosts its store.
    ObjHosting = 0x3B,
    /// Client: the session is over.
    Bye = 0x7E,
    /// Either side: something went wrong (typed).
    Error = 0x7F,
}

impl FrameType {
    /// The type of byte `byte`, if it is one.
    pub fn from_byte(byte: u8) -> Option<FrameType> {
        Some(match byte {
            0x01 => FrameType::Hello,
            0x02 => FrameType::Challenge,
            0x03 => FrameType::Auth,
            0x04 => FrameType::AuthOk,
            0x10 => FrameType::Open,
            0x11 => FrameType::Held,
            0x12 => FrameType::Data,
            0x13 => FrameType::Sync,
            0x14 => FrameType::Synced,
            0x15 => FrameType::Commit,
            0x16 => FrameType::Committed,
            0x17 => FrameType::Close,
            0x18 => FrameType::Check,
            0x19 => FrameType::Checked,
            0x20 => FrameType::Mkdir,
            0x21 => FrameType::Symlink,
            0x22 => FrameType::Link,
            0x23 => FrameType::Made,
            0x30 => FrameType::ObjCreate,
            0x31 => FrameType::ObjCommit,
            0x32 => FrameType::ObjRead,
            0x33 => FrameType::ObjGet,
            0x34 => FrameType::ObjStat,
            0x35 => FrameType::ObjSize,
            0x36 => FrameType::ObjList,
            0x37 => FrameType::ObjNames,
            0x38 => FrameType::ObjDelete,
            0x39 => FrameType::ObjDone,
            0x3A => FrameType::ObjInfo,
            0x3B => FrameType::ObjHosting,
            0x7E => FrameType::Bye,
            0x7F => FrameType::Error,
            _ => return None,
        })
    }

    /// The largest payload a frame of this type may announce.
    pub fn max_payload(self) -> u32 {
        match self {
            FrameType::Data => MAX_DATA_PAYLOAD + DATA_PREFIX_LEN as u32,
            FrameType::Symlink | FrameType::Link => MAX_LINK_PAYLOAD,
            FrameType::ObjNames => MAX_NAMES_PAYLOAD,
            _ => MAX_CONTROL_PAYLOAD,
        }
    }
}

/// What kind of error an `Error` frame reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A frame that does not parse, or comes at the wrong time.
    Protocol,
    /// The token proof was wrong or missing.
    Unauthenticated,
    /// The peer speaks another protocol version.
    Version,
    /// A name that is absolute, leaves the root, holds NUL or is too long.
    BadName,
    /// A frame longer than its type allows.
    TooLarge,
    /// A file id that was never opened on this connection.
    UnknownFile,
    /// Bytes past the announced size of the file.
    OutOfRange,
    /// The received file does not have the announced hash.
    HashMismatch,
    /// A commit before every byte was received.
    Incomplete,
    /// The server could not write (disk full, permission...).
    Storage,
    /// Nothing arrived for too long.
    Timeout,
    /// The server is stopping.
    ShuttingDown,
    /// The server has as many files open as it allows; try again later.
    Busy,
    /// Bytes for a file that was already committed (verified and renamed).
    AlreadyCommitted,
    /// A create-only write of an object whose name is taken.
    ObjectExists,
    /// No object of that name.
    NoSuchObject,
    /// The server hosts its store append-only: no delete, no overwrite.
    AppendOnly,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The code on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Protocol => 1,
            ErrorCode::Unauthenticated => 2,
            ErrorCode::Version => 3,
            ErrorCode::BadName => 4,
            ErrorCode::TooLarge => 5,
            ErrorCode::UnknownFile => 6,
            ErrorCode::OutOfRange => 7,
            ErrorCode::HashMismatch => 8,
            ErrorCode::Incomplete => 9,
            ErrorCode::Storage => 10,
            ErrorCode::Timeout => 11,
            ErrorCode::ShuttingDown => 12,
            ErrorCode::Busy => 13,
            ErrorCode::AlreadyCommitted => 14,
            ErrorCode::ObjectExists => 15,
            ErrorCode::NoSuchObject => 16,
            ErrorCode::AppendOnly => 17,
            ErrorCode::Other(code) => code,
        }
    }

    /// The code of wire value `code`.
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::Protocol,
            2 => ErrorCode::Unauthenticated,
            3 => ErrorCode::Version,
            4 => ErrorCode::BadName,
            5 => ErrorCode::TooLarge,
            6 => ErrorCode::UnknownFile,
            7 => ErrorCode::OutOfRange,
            8 => ErrorCode::HashMismatch,
            9 => ErrorCode::Incomplete,
            10 => ErrorCode::Storage,
            11 => ErrorCode::Timeout,
            12 => ErrorCode::ShuttingDown,
            13 => ErrorCode::Busy,
            14 => ErrorCode::AlreadyCommitted,
            15 => ErrorCode::ObjectExists,
            16 => ErrorCode::NoSuchObject,
            17 => ErrorCode::AppendOnly,
            other => ErrorCode::Other(other),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorCode::Protocol => "protocol error",
            ErrorCode::Unauthenticated => "authentication failed",
            ErrorCode::Version => "unsupported protocol version",
            ErrorCode::BadName => "name refused",
            ErrorCode::TooLarge => "frame too large",
            ErrorCode::UnknownFile => "unknown file id",
            ErrorCode::OutOfRange => "bytes beyond the end of the file",
            ErrorCode::HashMismatch => "hash mismatch",
            ErrorCode::Incomplete => "file incomplete",
            ErrorCode::Storage => "server storage error",
            ErrorCode::Timeout => "timed out",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::Busy => "server busy",
            ErrorCode::AlreadyCommitted => "file already committed",
            ErrorCode::ObjectExists => "object exists",
            ErrorCode::NoSuchObject => "no such object",
            ErrorCode::AppendOnly => "refused: the store is served append-only",
            ErrorCode::Other(code) => return write!(f, "error code {code}"),
        };
        f.write_str(text)
    }
}

/// A file as announced by `Open`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_seconds: i64,
    /// Modification time, nanoseconds (below 10^9).
    pub mtime_nanos: u32,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
}

/// What a `Check` compares with the file the server holds under the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// Size and modification time, to the nanosecond (rsync's quick
    /// check). On the wire: 0, then 32 zero bytes.
    SizeAndMtime,
    /// Size and the whole-file BLAKE3 hash (the server reads its file);
    /// the mtime may differ. On the wire: 1, then the sender's hash.
    Content([u8; HASH_LEN]),
}

/// A modification time as entry frames carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryTime {
    /// Seconds since the epoch.
    pub seconds: i64,
    /// Nanoseconds (below 10^9).
    pub nanos: u32,
}

/// One decoded frame. `Data` borrows its bytes from the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// See [`FrameType::Hello`].
    Hello {
        /// Protocol version the client speaks.
        version: u16,
        /// The client's fresh random bytes.
        nonce: [u8; NONCE_LEN],
    },
    /// See [`FrameType::Challenge`].
    Challenge {
        /// Protocol version the server speaks.
        version: u16,
        /// The server's fresh random bytes.
        nonce: [u8; NONCE_LEN],
        /// The server's HMAC-SHA256 proof of the token (see `auth`).
        proof: [u8; NONCE_LEN],
    },
    /// See [`FrameType::Auth`].
    Auth {
        /// The client's HMAC-SHA256 proof of the token (see `auth`).
        proof: [u8; NONCE_LEN],
    },
    /// See [`FrameType::AuthOk`].
    AuthOk,
    /// See [`FrameType::Open`].
    Open {
        /// Chosen by the client, unique on its connection.
        file_id: u32,
        /// Size, time and mode.
        meta: FileMeta,
        /// Relative name, `/`-separated (checked by `name::RelName`).
        name: &'a [u8],
    },
    /// See [`FrameType::Held`].
    Held {
        /// The file.
        file_id: u32,
        /// `(offset, length)` ranges already received, sorted, disjoint.
        ranges: Vec<(u64, u64)>,
    },
    /// See [`FrameType::Data`].
    Data {
        /// The file.
        file_id: u32,
        /// Where `bytes` go in it.
        offset: u64,
        /// File bytes.
        bytes: &'a [u8],
    },
    /// See [`FrameType::Sync`].
    Sync {
        /// The file.
        file_id: u32,
    },
    /// See [`FrameType::Synced`].
    Synced {
        /// The file.
        file_id: u32,
        /// Bytes of it the server now holds.
        held: u64,
    },
    /// See [`FrameType::Commit`].
    Commit {
        /// The file.
        file_id: u32,
        /// BLAKE3 of the whole file.
        hash: [u8; HASH_LEN],
    },
    /// See [`FrameType::Committed`].
    Committed {
        /// The file.
        file_id: u32,
    },
    /// See [`FrameType::Close`].
    Close {
        /// The file.
        file_id: u32,
    },
    /// See [`FrameType::Check`].
    Check {
        /// An id the answer names (its own sequence, like file ids).
        check_id: u32,
        /// What is compared besides the size.
        compare: Compare,
        /// The file as the client has it (the mode is applied when the
        /// server holds it already).
        meta: FileMeta,
        /// Relative name, as in `Open`.
        name: &'a [u8],
    },
    /// See [`FrameType::Checked`].
    Checked {
        /// The id of the `Check`.
        check_id: u32,
        /// The server holds the file: it is not sent.
        held: bool,
    },
    /// See [`FrameType::Mkdir`].
    Mkdir {
        /// An id the answer names.
        entry_id: u32,
        /// Permission bits (`& 0o7777`).
        mode: u32,
        /// Modification time.
        mtime: EntryTime,
        /// Relative name, as in `Open`.
        name: &'a [u8],
    },
    /// See [`FrameType::Symlink`].
    Symlink {
        /// An id the answer names.
        entry_id: u32,
        /// Modification time of the link itself.
        mtime: EntryTime,
        /// Relative name of the link, as in `Open`.
        name: &'a [u8],
        /// What the link points to: any bytes but NUL, 1 to
        /// [`MAX_NAME_LEN`] - 1 of them; stored, never resolved.
        target: &'a [u8],
    },
    /// See [`FrameType::Link`].
    Link {
        /// An id the answer names.
        entry_id: u32,
        /// Relative name of the new link, as in `Open`.
        name: &'a [u8],
        /// Relative name of the file it links to, as in `Open`.
        target: &'a [u8],
    },
    /// See [`FrameType::Made`].
    Made {
        /// The id of the entry.
        entry_id: u32,
    },
    /// See [`FrameType::ObjCreate`]; its bytes follow as `Data` frames
    /// (request id as file id, in order from offset 0).
    ObjCreate {
        /// Chosen by the client; the answers name it.
        req: u32,
        /// The object name (UTF-8, checked by the server's store).
        name: &'a str,
    },
    /// See [`FrameType::ObjCommit`].
    ObjCommit {
        /// The request of the `ObjCreate`.
        req: u32,
        /// Bytes of the whole object.
        size: u64,
    },
    /// See [`FrameType::ObjRead`]; answered by `ObjSize`, then, when the
    /// range is inside the object, `length` bytes in `Data` frames.
    ObjRead {
        /// Chosen by the client.
        req: u32,
        /// Start of the range.
        offset: u64,
        /// Its length.
        length: u64,
        /// The object.
        name: &'a str,
    },
    /// See [`FrameType::ObjGet`]; answered by `ObjSize`, then, when the
    /// size is at most `limit`, the whole object in `Data` frames.
    ObjGet {
        /// Chosen by the client.
        req: u32,
        /// The most bytes the client takes.
        limit: u64,
        /// The object.
        name: &'a str,
    },
    /// See [`FrameType::ObjStat`].
    ObjStat {
        /// Chosen by the client.
        req: u32,
        /// The object.
        name: &'a str,
    },
    /// See [`FrameType::ObjSize`].
    ObjSize {
        /// The request.
        req: u32,
        /// The object's size.
        size: u64,
    },
    /// See [`FrameType::ObjList`]; answered by `ObjNames` pages.
    ObjList {
        /// Chosen by the client.
        req: u32,
        /// Names start with it (empty: every object).
        prefix: &'a str,
    },
    /// See [`FrameType::ObjNames`].
    ObjNames {
        /// The request.
        req: u32,
        /// The last page of the listing.
        last: bool,
        /// `(size, name)` of each object on this page.
        entries: Vec<(u64, &'a str)>,
    },
    /// See [`FrameType::ObjDelete`].
    ObjDelete {
        /// Chosen by the client.
        req: u32,
        /// The object.
        name: &'a str,
    },
    /// See [`FrameType::ObjDone`].
    ObjDone {
        /// The request.
        req: u32,
    },
    /// See [`FrameType::ObjInfo`].
    ObjInfo {
        /// Chosen by the client.
        req: u32,
    },
    /// See [`FrameType::ObjHosting`].
    ObjHosting {
        /// The request.
        req: u32,
        /// The server refuses deletes and overwrites.
        append_only: bool,
    },
    /// See [`FrameType::Bye`].
    Bye,
    /// See [`FrameType::Error`].
    Error {
        /// What kind.
        code: ErrorCode,
        /// The file it concerns, or [`NO_FILE`].
        file_id: u32,
        /// For people (UTF-8, at most [`MAX_MESSAGE_LEN`] bytes).
        message: String,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The type byte is not one we know.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The length is above the type's limit.
    #[error("frame of type {kind:?} announces {length} bytes, more than its limit of {limit}")]
    TooLarge {
        /// The type.
        kind: FrameType,
        /// What was announced.
        length: u32,
        /// The limit.
        limit: u32,
    },
    /// The payload does not have the layout of its type.
    #[error("malformed {0:?} frame")]
    Malformed(FrameType),
}

/// The 5-byte header of a frame, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The type.
    pub kind: FrameType,
    /// Payload bytes that follow.
    pub length: u32,
}

impl FrameHeader {
    /// Parses and checks a header.
    ///
    /// # Errors
    /// [`FrameError::UnknownType`] or [`FrameError::TooLarge`].
    pub fn parse(bytes: [u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let kind = FrameType::from_byte(bytes[0]).ok_or(FrameError::UnknownType(bytes[0]))?;
        let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let limit = kind.max_payload();
        if length > limit {
            return Err(FrameError::TooLarge {
                kind,
                length,
                limit,
            });
        }
        Ok(FrameHeader { kind, length })
    }

    /// The header bytes.
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let length = self.length.to_be_bytes();
        [self.kind as u8, length[0], length[1], length[2], length[3]]
    }
}

/// The header and prefix of a `Data` frame carrying `len` file bytes at
/// `offset`: write it, then the bytes.
///
/// # Panics
/// When `len` is above [`MAX_DATA_PAYLOAD`] (a caller bug).
pub fn data_prefix(file_id: u32, offset: u64, len: usize) -> [u8; HEADER_LEN + DATA_PREFIX_LEN] {
    assert!(
        len <= MAX_DATA_PAYLOAD as usize,
        "a data frame carries at most MAX_DATA_PAYLOAD bytes"
    );
    let mut out = [0u8; HEADER_LEN + DATA_PREFIX_LEN];
    let header = FrameHeader {
        kind: FrameType::Data,
        length: (DATA_PREFIX_LEN + len) as u32,
    };
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&file_id.to_be_bytes());
    out[HEADER_LEN + 4..].copy_from_slice(&offset.to_be_bytes());
    out
}

/// Reads fixed-size fields off the front of a payload.
struct Fields<'a> {
    rest: &'a [u8],
    kind: FrameType,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Malformed(self.kind));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    /// Seconds i64 and nanoseconds u32 (below 10^9).
    fn time(&mut self) -> Result<EntryTime, FrameError> {
        let seconds = self.i64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(FrameError::Malformed(self.kind));
        }
        Ok(EntryTime { seconds, nanos })
    }
    /// Size u64, mtime (seconds i64, nanoseconds u32), mode u32 (at most
    /// `0o7777`).
    fn meta(&mut self) -> Result<FileMeta, FrameError> {
        let size = self.u64()?;
        let time = self.time()?;
        let mode = self.u32()?;
        if mode > 0o7777 {
            return Err(FrameError::Malformed(self.kind));
        }
        Ok(FileMeta {
            size,
            mtime_seconds: time.seconds,
            mtime_nanos: time.nanos,
            mode,
        })
    }
    /// Length u16 (at most [`MAX_NAME_LEN`]) and that many bytes.
    fn name(&mut self) -> Result<&'a [u8], FrameError> {
        let len = usize::from(self.u16()?);
        if len > MAX_NAME_LEN {
            return Err(FrameError::Malformed(self.kind));
        }
        self.take(len)
    }
    /// A name as [`Fields::name`] that must be UTF-8 (object names).
    fn text(&mut self) -> Result<&'a str, FrameError> {
        let kind = self.kind;
        std::str::from_utf8(self.name()?).map_err(|_| FrameError::Malformed(kind))
    }
    /// Fails unless everything was read.
    fn end(self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Malformed(self.kind))
        }
    }
}

impl<'a> Frame<'a> {
    /// The type of this frame.
    pub fn kind(&self) -> FrameType {
        match self {
            Frame::Hello { .. } => FrameType::Hello,
            Frame::Challenge { .. } => FrameType::Challenge,
            Frame::Auth { .. } => FrameType::Auth,
            Frame::AuthOk => FrameType::AuthOk,
            Frame::Open { .. } => FrameType::Open,
            Frame::Held { .. } => FrameType::Held,
            Frame::Data { .. } => FrameType::Data,
            Frame::Sync { .. } => FrameType::Sync,
            Frame::Synced { .. } => FrameType::Synced,
            Frame::Commit { .. } => FrameType::Commit,
            Frame::Committed { .. } => FrameType::Committed,
            Frame::Close { .. } => FrameType::Close,
            Frame::Check { .. } => FrameType::Check,
            Frame::Checked { .. } => FrameType::Checked,
            Frame::Mkdir { .. } => FrameType::Mkdir,
            Frame::Symlink { .. } => FrameType::Symlink,
            Frame::Link { .. } => FrameType::Link,
            Frame::Made { .. } => FrameType::Made,
            Frame::ObjCreate { .. } => FrameType::ObjCreate,
            Frame::ObjCommit { .. } => FrameType::ObjCommit,
            Frame::ObjRead { .. } => FrameType::ObjRead,
            Frame::ObjGet { .. } => FrameType::ObjGet,
            Frame::ObjStat { .. } => FrameType::ObjStat,
            Frame::ObjSize { .. } => FrameType::ObjSize,
            Frame::ObjList { .. } => FrameType::ObjList,
            Frame::ObjNames { .. } => FrameType::ObjNames,
            Frame::ObjDelete { .. } => FrameType::ObjDelete,
            Frame::ObjDone { .. } => FrameType::ObjDone,
            Frame::ObjInfo { .. } => FrameType::ObjInfo,
            Frame::ObjHosting { .. } => FrameType::ObjHosting,
            Frame::Bye => FrameType::Bye,
            Frame::Error { .. } => FrameType::Error,
        }
    }

    /// Decodes the payload of a frame of type `kind` (whose length was
    /// already checked by [`FrameHeader::parse`]).
    ///
    /// # Errors
    /// [`FrameError::Malformed`] when the payload does not have the exact
    /// layout of its type (short, trailing bytes, a bad value).
    pub fn parse(kind: FrameType, payload: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if payload.len() > kind.max_payload() as usize {
            return Err(FrameError::TooLarge {
                kind,
                length: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                limit: kind.max_payload(),
            });
        }
        let malformed = FrameError::Malformed(kind);
        let mut f = Fields {
            rest: payload,
            kind,
        };
        let frame = match kind {
            FrameType::Hello => {
                if f.array::<4>()? != MAGIC {
                    return Err(malformed);
                }
                Frame::Hello {
                    version: f.u16()?,
                    nonce: f.array()?,
                }
            }
            FrameType::Challenge => Frame::Challenge {
                version: f.u16()?,
                nonce: f.array()?,
                proof: f.array()?,
            },
            FrameType::Auth => Frame::Auth { proof: f.array()? },
            FrameType::AuthOk => Frame::AuthOk,
            FrameType::Open => Frame::Open {
                file_id: f.u32()?,
                meta: f.meta()?,
                name: f.name()?,
            },
            FrameType::Held => {
                let file_id = f.u32()?;
                let count = f.u32()? as usize;
                if count > MAX_HELD_RANGES {
                    return Err(malformed);
                }
                let mut ranges = Vec::with_capacity(count);
                let mut end = 0u64;
                for _ in 0..count {
                    let offset = f.u64()?;
                    let len = f.u64()?;
                    let range_end = offset.checked_add(len).ok_or(malformed.clone())?;
                    if len == 0 || offset < end {
                        return Err(malformed);
                    }
                    end = range_end;
                    ranges.push((offset, len));
                }
                Frame::Held { file_id, ranges }
            }
            FrameType::Data => {
                let file_id = f.u32()?;
                let offset = f.u64()?;
                let bytes = f.rest;
                f.rest = &[];
                if offset.checked_add(bytes.len() as u64).is_none() {
                    return Err(malformed);
                }
                Frame::Data {
                    file_id,
                    offset,
                    bytes,
                }
            }
            FrameType::Sync => Frame::Sync { file_id: f.u32()? },
            FrameType::Synced => Frame::Synced {
                file_id: f.u32()?,
                held: f.u64()?,
            },
            FrameType::Commit => Frame::Commit {
                file_id: f.u32()?,
                hash: f.array()?,
            },
            FrameType::Committed => Frame::Committed { file_id: f.u32()? },
            FrameType::Close => Frame::Close { file_id: f.u32()? },
            FrameType::Check => {
                let check_id = f.u32()?;
                let compare = match (f.u8()?, f.array::<HASH_LEN>()?) {
                    (0, hash) if hash == [0; HASH_LEN] => Compare::SizeAndMtime,
                    (1, hash) => Compare::Content(hash),
                    _ => return Err(malformed),
                };
                let meta = f.meta()?;
                let name = f.name()?;
                Frame::Check {
                    check_id,
                    compare,
                    meta,
                    name,
                }
            }
            FrameType::Checked => Frame::Checked {
                check_id: f.u32()?,
                held: match f.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(malformed),
                },
            },
            FrameType::Mkdir => {
                let entry_id = f.u32()?;
                let mode = f.u32()?;
                let mtime = f.time()?;
                if mode > 0o7777 {
                    return Err(malformed);
                }
                Frame::Mkdir {
                    entry_id,
                    mode,
                    mtime,
                    name: f.name()?,
                }
            }
            FrameType::Symlink => {
                let entry_id = f.u32()?;
                let mtime = f.time()?;
                let name = f.name()?;
                let target = f.name()?;
                if target.is_empty() || target.len() >= MAX_NAME_LEN || target.contains(&0) {
                    return Err(malformed);
                }
                Frame::Symlink {
                    entry_id,
                    mtime,
                    name,
                    target,
                }
            }
            FrameType::Link => Frame::Link {
                entry_id: f.u32()?,
                name: f.name()?,
                target: f.name()?,
            },
            FrameType::Made => Frame::Made { entry_id: f.u32()? },
            FrameType::ObjCreate => Frame::ObjCreate {
                req: f.u32()?,
                name: f.text()?,
            },
            FrameType::ObjCommit => Frame::ObjCommit {
                req: f.u32()?,
                size: f.u64()?,
            },
            FrameType::ObjRead => Frame::ObjRead {
                req: f.u32()?,
                offset: f.u64()?,
                length: f.u64()?,
                name: f.text()?,
            },
            FrameType::ObjGet => Frame::ObjGet {
                req: f.u32()?,
                limit: f.u64()?,
                name: f.text()?,
            },
            FrameType::ObjStat => Frame::ObjStat {
                req: f.u32()?,
                name: f.text()?,
            },
            FrameType::ObjSize => Frame::ObjSize {
                req: f.u32()?,
                size: f.u64()?,
            },
            FrameType::ObjList => Frame::ObjList {
                req: f.u32()?,
                prefix: f.text()?,
            },
            FrameType::ObjNames => {
                let req = f.u32()?;
                let last = match f.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(malformed),
                };
                let count = f.u16()?;
                // Each entry takes at least 10 bytes: bound before allocating.
                if usize::from(count) * 10 > f.rest.len() {
                    return Err(malformed);
                }
                let mut entries = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let size = f.u64()?;
                    entries.push((size, f.text()?));
                }
                Frame::ObjNames { req, last, entries }
            }
            FrameType::ObjDelete => Frame::ObjDelete {
                req: f.u32()?,
                name: f.text()?,
            },
            FrameType::ObjDone => Frame::ObjDone { req: f.u32()? },
            FrameType::ObjInfo => Frame::ObjInfo { req: f.u32()? },
            FrameType::ObjHosting => Frame::ObjHosting {
                req: f.u32()?,
                append_only: match f.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(malformed),
                },
            },
            FrameType::Bye => Frame::Bye,
            FrameType::Error => {
                let code = ErrorCode::from_u16(f.u16()?);
                let file_id = f.u32()?;
                let text = f.rest;
                f.rest = &[];
                if text.len() > MAX_MESSAGE_LEN {
                    return Err(malformed);
                }
                let message = std::str::from_utf8(text).map_err(|_| malformed)?.to_owned();
                Frame::Error {
                    code,
                    file_id,
                    message,
                }
            }
        };
        f.end()?;
        Ok(frame)
    }

    /// Appends the whole frame (header and payload) to `out`.
    ///
    /// # Panics
    /// When a field is over its limit (a name over [`MAX_NAME_LEN`], more
    /// than [`MAX_HELD_RANGES`] ranges, data over [`MAX_DATA_PAYLOAD`]):
    /// callers check those first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[self.kind() as u8, 0, 0, 0, 0]);
        match self {
            Frame::Hello { version, nonce } => {
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(nonce);
            }
            Frame::Challenge {
                version,
                nonce,
                proof,
            } => {
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(nonce);
                out.extend_from_slice(proof);
            }
            Frame::Auth { proof } => out.extend_from_slice(proof),
            Frame::AuthOk | Frame::Bye => {}
            Frame::Open {
                file_id,
                meta,
                name,
            } => {
                out.extend_from_slice(&file_id.to_be_bytes());
                put_meta(out, meta);
                put_name(out, name);
            }
            Frame::Check {
                check_id,
                compare,
                meta,
                name,
            } => {
                out.extend_from_slice(&check_id.to_be_bytes());
                match compare {
                    Compare::SizeAndMtime => {
                        out.push(0);
                        out.extend_from_slice(&[0; HASH_LEN]);
                    }
                    Compare::Content(hash) => {
                        out.push(1);
                        out.extend_from_slice(hash);
                    }
                }
                put_meta(out, meta);
                put_name(out, name);
            }
            Frame::Checked { check_id, held } => {
                out.extend_from_slice(&check_id.to_be_bytes());
                out.push(u8::from(*held));
            }
            Frame::Mkdir {
                entry_id,
                mode,
                mtime,
                name,
            } => {
                out.extend_from_slice(&entry_id.to_be_bytes());
                out.extend_from_slice(&mode.to_be_bytes());
                put_time(out, *mtime);
                put_name(out, name);
            }
            Frame::Symlink {
                entry_id,
                mtime,
                name,
                target,
            } => {
                out.extend_from_slice(&entry_id.to_be_bytes());
                put_time(out, *mtime);
                put_name(out, name);
                put_name(out, target);
            }
            Frame::Link {
                entry_id,
                name,
                target,
            } => {
                out.extend_from_slice(&entry_id.to_be_bytes());
                put_name(out, name);
                put_name(out, target);
            }
            Frame::Held { file_id, ranges } => {
                assert!(ranges.len() <= MAX_HELD_RANGES, "held ranges are capped");
                out.extend_from_slice(&file_id.to_be_bytes());
                out.extend_from_slice(&(ranges.len() as u32).to_be_bytes());
                for (offset, len) in ranges {
                    out.extend_from_slice(&offset.to_be_bytes());
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            Frame::Data {
                file_id,
                offset,
                bytes,
            } => {
                assert!(
                    bytes.len() <= MAX_DATA_PAYLOAD as usize,
                    "data frames are capped"
                );
                out.extend_from_slice(&file_id.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Frame::Sync { file_id } | Frame::Committed { file_id } | Frame::Close { file_id } => {
                out.extend_from_slice(&file_id.to_be_bytes());
            }
            Frame::Made { entry_id } => out.extend_from_slice(&entry_id.to_be_bytes()),
            Frame::ObjCreate { req, name }
            | Frame::ObjStat { req, name }
            | Frame::ObjList { req, prefix: name }
            | Frame::ObjDelete { req, name } => {
                out.extend_from_slice(&req.to_be_bytes());
                put_name(out, name.as_bytes());
            }
            Frame::ObjCommit { req, size } | Frame::ObjSize { req, size } => {
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&size.to_be_bytes());
            }
            Frame::ObjRead {
                req,
                offset,
                length,
                name,
            } => {
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
                put_name(out, name.as_bytes());
            }
            Frame::ObjGet { req, limit, name } => {
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&limit.to_be_bytes());
                put_name(out, name.as_bytes());
            }
            Frame::ObjNames { req, last, entries } => {
                assert!(entries.len() <= usize::from(u16::MAX), "pages are capped");
                out.extend_from_slice(&req.to_be_bytes());
                out.push(u8::from(*last));
                out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                for (size, name) in entries {
                    out.extend_from_slice(&size.to_be_bytes());
                    put_name(out, name.as_bytes());
                }
            }
            Frame::ObjDone { req } | Frame::ObjInfo { req } => {
                out.extend_from_slice(&req.to_be_bytes());
            }
            Frame::ObjHosting { req, append_only } => {
                out.extend_from_slice(&req.to_be_bytes());
                out.push(u8::from(*append_only));
            }
            Frame::Synced { file_id, held } => {
                out.extend_from_slice(&file_id.to_be_bytes());
                out.extend_from_slice(&held.to_be_bytes());
            }
            Frame::Commit { file_id, hash } => {
                out.extend_from_slice(&file_id.to_be_bytes());
                out.extend_from_slice(hash);
            }
            Frame::Error {
                code,
                file_id,
                message,
            } => {
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                out.extend_from_slice(&file_id.to_be_bytes());
                out.extend_from_slice(truncate_utf8(message, MAX_MESSAGE_LEN).as_bytes());
            }
        }
        let length = (out.len() - start - HEADER_LEN) as u32;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    }

    /// The whole frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Appends size, mtime and mode as `Open` and `Check` carry them.
fn put_meta(out: &mut Vec<u8>, meta: &FileMeta) {
    out.extend_from_slice(&meta.size.to_be_bytes());
    put_time(
        out,
        EntryTime {
            seconds: meta.mtime_seconds,
            nanos: meta.mtime_nanos,
        },
    );
    out.extend_from_slice(&meta.mode.to_be_bytes());
}

fn put_time(out: &mut Vec<u8>, time: EntryTime) {
    out.extend_from_slice(&time.seconds.to_be_bytes());
    out.extend_from_slice(&time.nanos.to_be_bytes());
}

/// Appends a name (or link target) with its u16 length.
fn put_name(out: &mut Vec<u8>, name: &[u8]) {
    assert!(
        name.len() <= MAX_NAME_LEN,
        "names and targets are checked before they are sent"
    );
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The version a `Hello` payload announces, if it starts like one of any
/// version (magic, then a version): lets a server name the version of a
/// client whose hello it cannot parse.
pub fn hello_version(payload: &[u8]) -> Option<u16> {
    if payload.get(..4)? != MAGIC {
        return None;
    }
    Some(u16::from_be_bytes(payload.get(4..6)?.try_into().ok()?))
}

/// Parses one whole frame from the front of `bytes`: the frame and how
/// many bytes it took, or `Ok(None)` when more bytes are needed.
///
/// # Errors
/// Any [`FrameError`] of the header or the payload.
pub fn parse_frame(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let header = FrameHeader::parse(head.try_into().expect("HEADER_LEN bytes"))?;
    let end = HEADER_LEN + header.length as usize;
    let Some(payload) = bytes.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    Ok(Some((Frame::parse(header.kind, payload)?, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame<'static>> {
        vec![
            Frame::Hello {
                version: VERSION,
                nonce: [6; NONCE_LEN],
            },
            Frame::Challenge {
                version: VERSION,
                nonce: [7; NONCE_LEN],
                proof: [8; NONCE_LEN],
            },
            Frame::Auth { proof: [9; 32] },
            Frame::AuthOk,
            Frame::Open {
                file_id: 3,
                meta: FileMeta {
                    size: 1 << 40,
                    mtime_seconds: -5,
                    mtime_nanos: 999_999_999,
                    mode: 0o4755,
                },
                name: b"dir/file name.txt",
            },
            Frame::Held {
                file_id: 3,
                ranges: vec![(0, 10), (20, 5)],
            },
            Frame::Data {
                file_id: 3,
                offset: 20,
                bytes: b"hello",
            },
            Frame::Sync { file_id: 3 },
            Frame::Synced {
                file_id: 3,
                held: 25,
            },
            Frame::Commit {
                file_id: 3,
                hash: [1; 32],
            },
            Frame::Committed { file_id: 3 },
            Frame::Close { file_id: 3 },
            Frame::Check {
                check_id: 4,
                compare: Compare::SizeAndMtime,
                meta: FileMeta {
                    size: 10,
                    mtime_seconds: 946_684_800,
                    mtime_nanos: 5,
                    mode: 0o600,
                },
                name: b"tree/a",
            },
            Frame::Check {
                check_id: 5,
                compare: Compare::Content([3; HASH_LEN]),
                meta: FileMeta {
                    size: 0,
                    mtime_seconds: -1,
                    mtime_nanos: 0,
                    mode: 0o4755,
                },
                name: b"b",
            },
            Frame::Checked {
                check_id: 4,
                held: true,
            },
            Frame::Mkdir {
                entry_id: 6,
                mode: 0o700,
                mtime: EntryTime {
                    seconds: 946_684_800,
                    nanos: 123_456_789,
                },
                name: b"tree/empty",
            },
            Frame::Symlink {
                entry_id: 7,
                mtime: EntryTime {
                    seconds: 1,
                    nanos: 2,
                },
                name: b"tree/up",
                target: b"../../etc",
            },
            Frame::Link {
                entry_id: 8,
                name: b"tree/second",
                target: b"tree/a",
            },
            Frame::Made { entry_id: 8 },
            Frame::ObjCreate {
                req: 1,
                name: "packs/ab/0123",
            },
            Frame::ObjCommit {
                req: 1,
                size: 1 << 33,
            },
            Frame::ObjRead {
                req: 2,
                offset: 7,
                length: 1 << 20,
                name: "packs/ab/0123",
            },
            Frame::ObjGet {
                req: 3,
                limit: 65_536,
                name: "config",
            },
            Frame::ObjStat {
                req: 4,
                name: "manifests/cd/4567",
            },
            Frame::ObjSize { req: 4, size: 99 },
            Frame::ObjList {
                req: 5,
                prefix: "packs/",
            },
            Frame::ObjNames {
                req: 5,
                last: true,
                entries: vec![(10, "packs/ab/0123"), (0, "packs/cd/4567")],
            },
            Frame::ObjDelete {
                req: 6,
                name: "packs/ab/0123",
            },
            Frame::ObjDone { req: 6 },
            Frame::ObjInfo { req: 7 },
            Frame::ObjHosting {
                req: 7,
                append_only: true,
            },
            Frame::Bye,
            Frame::Error {
                code: ErrorCode::BadName,
                file_id: NO_FILE,
                message: "name refused: ../x".into(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in samples() {
            let bytes = frame.to_bytes();
            let (parsed, used) = parse_frame(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(parsed, frame);
            // Every strict prefix asks for more bytes or is refused, never
            // parsed as something else.
            for cut in 0..bytes.len() {
                assert!(parse_frame(&bytes[..cut]).unwrap().is_none());
            }
        }
    }

    #[test]
    fn trailing_and_missing_payload_bytes_are_refused() {
        for frame in samples() {
            let bytes = frame.to_bytes();
            let kind = frame.kind();
            let payload = &bytes[HEADER_LEN..];
            let mut longer = payload.to_vec();
            longer.push(0);
            if !matches!(kind, FrameType::Data | FrameType::Error) {
                assert_eq!(
                    Frame::parse(kind, &longer),
                    Err(FrameError::Malformed(kind))
                );
            }
            if !payload.is_empty() && !matches!(kind, FrameType::Data | FrameType::Error) {
                assert!(Frame::parse(kind, &payload[..payload.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn lengths_over_the_limit_are_refused_from_the_header() {
        let mut head = FrameHeader {
            kind: FrameType::Open,
            length: MAX_CONTROL_PAYLOAD + 1,
        }
        .encode();
        assert!(matches!(
            FrameHeader::parse(head),
            Err(FrameError::TooLarge { .. })
        ));
        head[0] = 0x55;
        assert_eq!(FrameHeader::parse(head), Err(FrameError::UnknownType(0x55)));
        for kind in [FrameType::Symlink, FrameType::Link] {
            let fits = FrameHeader {
                kind,
                length: MAX_LINK_PAYLOAD,
            };
            assert!(FrameHeader::parse(fits.encode()).is_ok());
            let over = FrameHeader {
                kind,
                length: MAX_LINK_PAYLOAD + 1,
            };
            assert!(matches!(
                FrameHeader::parse(over.encode()),
                Err(FrameError::TooLarge { .. })
            ));
        }
        for kind in [FrameType::Check, FrameType::Mkdir] {
            let over = FrameHeader {
                kind,
                length: MAX_CONTROL_PAYLOAD + 1,
            };
            assert!(FrameHeader::parse(over.encode()).is_err());
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let mut open = Frame::Open {
            file_id: 1,
            meta: FileMeta {
                size: 1,
                mtime_seconds: 0,
                mtime_nanos: 0,
                mode: 0o644,
            },
            name: b"a",
        }
        .to_bytes();
        // mode above 0o7777
        open[HEADER_LEN + 24..HEADER_LEN + 28].copy_from_slice(&0o10000u32.to_be_bytes());
        assert!(parse_frame(&open).is_err());
        let mut hello = Frame::Hello {
            version: VERSION,
            nonce: [0; NONCE_LEN],
        }
        .to_bytes();
        assert_eq!(hello_version(&hello[HEADER_LEN..]), Some(VERSION));
        hello[HEADER_LEN] = b'X';
        assert!(parse_frame(&hello).is_err());
        assert_eq!(hello_version(&hello[HEADER_LEN..]), None);
        // A version 1 hello (no nonce) does not parse, but says its version.
        let old = [b'C', b'S', b'T', b'N', 0, 1];
        assert!(Frame::parse(FrameType::Hello, &old).is_err());
        assert_eq!(hello_version(&old), Some(1));
        let held = Frame::Held {
            file_id: 1,
            ranges: vec![(10, 5), (0, 1)],
        }
        .to_bytes();
        assert!(parse_frame(&held).is_err(), "unsorted ranges");
    }

    #[test]
    fn bad_values_of_tree_frames_are_refused() {
        let meta = FileMeta {
            size: 1,
            mtime_seconds: 0,
            mtime_nanos: 0,
            mode: 0o644,
        };
        let check = Frame::Check {
            check_id: 1,
            compare: Compare::SizeAndMtime,
            meta: meta.clone(),
            name: b"a",
        }
        .to_bytes();
        // A quick check that carries a hash, and an unknown comparison.
        let mut with_hash = check.clone();
        with_hash[HEADER_LEN + 5] = 1;
        assert!(parse_frame(&with_hash).is_err());
        let mut unknown = check.clone();
        unknown[HEADER_LEN + 4] = 2;
        assert!(parse_frame(&unknown).is_err());
        let mut answer = Frame::Checked {
            check_id: 1,
            held: false,
        }
        .to_bytes();
        answer[HEADER_LEN + 4] = 2;
        assert!(parse_frame(&answer).is_err());
        let mut mkdir = Frame::Mkdir {
            entry_id: 1,
            mode: 0o755,
            mtime: EntryTime {
                seconds: 0,
                nanos: 0,
            },
            name: b"d",
        }
        .to_bytes();
        mkdir[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&0o10000u32.to_be_bytes());
        assert!(parse_frame(&mkdir).is_err(), "mode above 0o7777");
        let symlink = |target: &'static [u8]| {
            Frame::Symlink {
                entry_id: 1,
                mtime: EntryTime {
                    seconds: 0,
                    nanos: 0,
                },
                name: b"l",
                target,
            }
            .to_bytes()
        };
        assert!(parse_frame(&symlink(b"a\0b")).is_err(), "NUL in a target");
        assert!(parse_frame(&symlink(b"")).is_err(), "empty target");
        let long = vec![b'x'; MAX_NAME_LEN];
        let long: &'static [u8] = Box::leak(long.into_boxed_slice());
        assert!(parse_frame(&symlink(long)).is_err(), "target of PATH_MAX");
        assert!(parse_frame(&symlink(&long[1..])).is_ok());
        // Two names of the longest length fit the limit of a link frame.
        let link = Frame::Link {
            entry_id: 1,
            name: long,
            target: long,
        }
        .to_bytes();
        assert!(parse_frame(&link).is_ok());
    }

    /// A bounded fuzz loop with a fixed seed: random bytes and mutated
    /// valid frames never panic the parser, and whatever parses encodes
    /// back to the same bytes.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid: Vec<Vec<u8>> = samples().iter().map(Frame::to_bytes).collect();
        for round in 0..200_000u32 {
            let mut bytes = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                let mut random = vec![0u8; len];
                random.iter_mut().for_each(|b| *b = next() as u8);
                if len > 0 {
                    // Mostly known types, so the payload parsers are reached.
                    random[0] = valid[(next() as usize) % valid.len()][0];
                }
                random
            } else {
                valid[(next() as usize) % valid.len()].clone()
            };
            let flips = next() % 4;
            for _ in 0..flips {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= 1 << (next() % 8);
            }
            if next() % 8 == 0 && !bytes.is_empty() {
                let cut = (next() as usize) % bytes.len();
                bytes.truncate(cut);
            }
            if let Ok(Some((frame, used))) = parse_frame(&bytes) {
                assert_eq!(frame.to_bytes(), bytes[..used], "round {round}");
            }
        }
    }
}
