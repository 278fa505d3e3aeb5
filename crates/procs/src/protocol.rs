//! Messages on the socket between the parent and one worker (a
//! `SOCK_SEQPACKET` pair, so every message arrives whole).
//!
//! Parent to worker: [`Hello`] once (settings and secrets, the exports of
//! the run's added envelopes included: secrets travel only on this socket,
//! never in argv or the environment), then [`Message::OpenSplit`] (the
//! input and output descriptors of a split file, passed with
//! `SCM_RIGHTS`, with its layout and its chunk cipher, key included) and
//! [`Message::CloseSplit`]. Worker to parent:
//! [`Message::Done`] for every task. The socket closing is how each side
//! learns that the other is gone.
//!
//! Encoding: a kind byte, then fixed-width little-endian integers and
//! length-prefixed byte strings.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cryptstream_engine::EnvelopeExport;
use cryptstream_engine::{Direction, IoChoice, Overwrite};
use cryptstream_format::{
    Cipher, CipherParts, KdfParams, KeySource, MasterKey, NonceScheme, MAX_HEADER_LEN,
};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use zeroize::Zeroizing;

use crate::ProcsError;

/// Version of this protocol; a worker refuses a parent of another version.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest failure message a worker sends (longer ones are cut).
const MAX_REASON: usize = 4096;

const KIND_HELLO: u8 = 1;
const KIND_OPEN_SPLIT: u8 = 2;
const KIND_CLOSE_SPLIT: u8 = 3;
const KIND_DONE: u8 = 4;

/// Everything a worker needs before its first task.
pub struct Hello {
    /// The worker's index in the ring's worker table.
    pub worker: u32,
    /// The parent's pid (the worker exits when its parent changes).
    pub parent_pid: u32,
    /// What the run does.
    pub direction: Direction,
    /// AEAD for new files.
    pub cipher: Cipher,
    /// Chunk size for new files.
    pub chunk_size: u32,
    /// What to do with existing outputs.
    pub overwrite: Overwrite,
    /// fsync outputs.
    pub durable: bool,
    /// I/O choice.
    pub io: IoChoice,
    /// Test seed for salts.
    pub fixed_salt: Option<[u8; 32]>,
    /// Where outputs go: the root of the output tree (worker processes
    /// open every output directory below it, never following a symlink).
    pub output_root: Option<std::path::PathBuf>,
    /// Whether the output root is a staged tree (its files are created
    /// directly under their names: `DirFd::open_staged`).
    pub output_staged: bool,
    /// The umask restored modes go through.
    pub umask: u32,
    /// Keep setuid/setgid/sticky bits.
    pub keep_special_bits: bool,
    /// The key that seals new files (encrypt only).
    pub encryption_key: Option<MasterKey>,
    /// Every key that may open files: key files and passphrase keys the
    /// parent derived (a worker never sees the passphrase itself).
    pub keys: Vec<MasterKey>,
    /// The envelopes beside cryptstream's own (age), as the worker builds
    /// them again.
    pub envelopes: Vec<EnvelopeExport>,
}

/// How a task ended, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Stopped because the worker was told to stop.
    Cancelled,
    /// A hard-link entry authenticated: the parent makes the link to this
    /// target (relative to the output root) once every file is written.
    LinkLater(Vec<u8>),
    /// Failed, with the reason as printed.
    Failed(String),
}

/// A message after the hello.
pub enum Message {
    /// Descriptors, layout and chunk cipher of a split file (parent to
    /// worker; the message holds the file's payload key).
    OpenSplit {
        /// The parent's id of the file.
        split_id: u64,
        /// Plaintext length (with the prefix length and the chunk size,
        /// fixes the layout).
        plaintext_len: u64,
        /// Bytes before chunk 0.
        prefix_len: u32,
        /// The chunk cipher.
        cipher: CipherParts,
        /// The name of the file's envelope.
        envelope: String,
        /// The input.
        input: OwnedFd,
        /// The temp output, when there is one.
        output: Option<OwnedFd>,
    },
    /// The parent is done with a split file (parent to worker).
    CloseSplit {
        /// The parent's id of the file.
        split_id: u64,
    },
    /// A task ended (worker to parent).
    Done {
        /// The task.
        task_id: u64,
        /// Input bytes processed (for progress).
        bytes: u64,
        /// For whole files that could be opened: header length, chunk size
        /// and plaintext length, from which the parent counts bytes in and
        /// out.
        layout: Option<(u32, u32, u64)>,
        /// How it ended.
        outcome: Outcome,
    },
}

struct Writer(Zeroizing<Vec<u8>>);

impl Writer {
    fn new(kind: u8) -> Writer {
        Writer(Zeroizing::new(vec![kind]))
    }
    fn u8(&mut self, v: u8) -> &mut Writer {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Writer {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Writer {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, v: &[u8]) -> &mut Writer {
        self.0.extend_from_slice(v);
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Writer {
        self.u32(v.len() as u32).raw(v)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProcsError> {
        if self.0.len() < n {
            return Err(ProcsError::Protocol("message too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProcsError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ProcsError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, ProcsError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProcsError> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProcsError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Wire ids of the settings enums in [`Hello`]: one table per enum, read
/// both to encode and to decode.
const DIRECTIONS: &[(Direction, u8)] = &[
    (Direction::Encrypt, 1),
    (Direction::Decrypt, 2),
    (Direction::Verify, 3),
];
const OVERWRITES: &[(Overwrite, u8)] = &[
    (Overwrite::Refuse, 1),
    (Overwrite::Force, 2),
    (Overwrite::SkipExisting, 3),
];
const IO_CHOICES: &[(IoChoice, u8)] = &[
    (IoChoice::Auto, 0),
    (IoChoice::Read, 1),
    (IoChoice::Pread, 2),
    (IoChoice::Mmap, 3),
];

/// The wire id of `value` in `table`.
fn id_of<T: PartialEq>(table: &[(T, u8)], value: &T) -> u8 {
    table
        .iter()
        .find(|(v, _)| v == value)
        .map(|&(_, id)| id)
        .expect("every value has a wire id")
}

/// The value whose wire id is `id` in `table`; `what` names the table in
/// the error.
fn value_of<T: Copy>(table: &[(T, u8)], id: u8, what: &'static str) -> Result<T, ProcsError> {
    table
        .iter()
        .find(|&&(_, i)| i == id)
        .map(|&(v, _)| v)
        .ok_or(ProcsError::Protocol(what))
}

/// Writes a key: where it came from, then its 32 bytes.
fn encode_key<'w>(w: &'w mut Writer, key: &MasterKey) -> &'w mut Writer {
    match key.source() {
        KeySource::KeyFile(_) => w.u8(1),
        KeySource::Passphrase { salt, params } => w
            .u8(2)
            .raw(salt)
            .u32(params.m_kib)
            .u32(params.t)
            .u32(params.p),
    };
    w.raw(key.expose_bytes())
}

/// Reads a key written by [`encode_key`].
fn decode_key(r: &mut Reader<'_>) -> Result<MasterKey, ProcsError> {
    let kind = r.u8()?;
    let passphrase = match kind {
        1 => None,
        2 => Some((
            r.array::<16>()?,
            KdfParams {
                m_kib: r.u32()?,
                t: r.u32()?,
                p: r.u32()?,
            },
        )),
        _ => return Err(ProcsError::Protocol("unknown key kind")),
    };
    let bytes = Zeroizing::new(r.array::<32>()?);
    Ok(match passphrase {
        None => MasterKey::from_key_bytes(*bytes),
        Some((salt, params)) => {
            MasterKey::from_parts(bytes, KeySource::Passphrase { salt, params })
        }
    })
}

impl Hello {
    /// The encoded hello (zeroized when dropped: it holds the secrets).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new(KIND_HELLO);
        w.u32(PROTOCOL_VERSION)
            .u32(self.worker)
            .u32(self.parent_pid)
            .u8(id_of(DIRECTIONS, &self.direction))
            .u8(self.cipher.id())
            .u32(self.chunk_size)
            .u8(id_of(OVERWRITES, &self.overwrite))
            .u8(u8::from(self.durable))
            .u8(id_of(IO_CHOICES, &self.io));
        match &self.fixed_salt {
            Some(seed) => w.u8(1).raw(seed),
            None => w.u8(0),
        };
        match &self.output_root {
            Some(root) => w
                .u8(1)
                .bytes(std::os::unix::ffi::OsStrExt::as_bytes(root.as_os_str())),
            None => w.u8(0),
        };
        w.u8(u8::from(self.output_staged));
        w.u32(self.umask).u8(u8::from(self.keep_special_bits));
        match &self.encryption_key {
            Some(key) => encode_key(w.u8(1), key),
            None => w.u8(0),
        };
        w.u32(self.keys.len() as u32);
        for key in &self.keys {
            encode_key(&mut w, key);
        }
        w.u32(self.envelopes.len() as u32);
        for envelope in &self.envelopes {
            w.bytes(envelope.name.as_bytes())
                .u8(u8::from(envelope.seals))
                .u8(u8::from(envelope.fallback))
                .bytes(&envelope.bytes);
        }
        w.0
    }

    /// Decodes a hello.
    ///
    /// # Errors
    /// [`ProcsError::Protocol`] for anything malformed or another version.
    pub fn decode(data: &[u8]) -> Result<Hello, ProcsError> {
        let mut r = Reader(data);
        if r.u8()? != KIND_HELLO {
            return Err(ProcsError::Protocol("expected a hello"));
        }
        if r.u32()? != PROTOCOL_VERSION {
            return Err(ProcsError::Protocol(
                "parent speaks another protocol version",
            ));
        }
        let worker = r.u32()?;
        let parent_pid = r.u32()?;
        let direction = value_of(DIRECTIONS, r.u8()?, "unknown direction")?;
        let cipher =
            Cipher::from_id(r.u8()?).map_err(|_| ProcsError::Protocol("unknown cipher"))?;
        let chunk_size = r.u32()?;
        let overwrite = value_of(OVERWRITES, r.u8()?, "unknown overwrite mode")?;
        let durable = r.u8()? != 0;
        let io = value_of(IO_CHOICES, r.u8()?, "unknown I/O strategy")?;
        let fixed_salt = match r.u8()? {
            0 => None,
            _ => Some(r.array::<32>()?),
        };
        let output_root = match r.u8()? {
            0 => None,
            _ => Some(std::path::PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(r.bytes()?),
            )),
        };
        let output_staged = r.u8()? != 0;
        let umask = r.u32()?;
        let keep_special_bits = r.u8()? != 0;
        let encryption_key = match r.u8()? {
            0 => None,
            _ => Some(decode_key(&mut r)?),
        };
        let count = r.u32()? as usize;
        let mut keys = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            keys.push(decode_key(&mut r)?);
        }
        let count = r.u32()? as usize;
        let mut envelopes = Vec::with_capacity(count.min(8));
        for _ in 0..count {
            let name = std::str::from_utf8(r.bytes()?)
                .map_err(|_| ProcsError::Protocol("an envelope name is not UTF-8"))?
                .to_string();
            let seals = r.u8()? != 0;
            let fallback = r.u8()? != 0;
            let bytes = Zeroizing::new(r.bytes()?.to_vec());
            envelopes.push(EnvelopeExport {
                name,
                seals,
                fallback,
                bytes,
            });
        }
        Ok(Hello {
            worker,
            parent_pid,
            direction,
            cipher,
            chunk_size,
            overwrite,
            durable,
            io,
            fixed_salt,
            output_root,
            output_staged,
            umask,
            keep_special_bits,
            encryption_key,
            keys,
            envelopes,
        })
    }
}

fn send(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), ProcsError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ProcsError::Protocol("too many descriptors for one message"));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(data)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(ProcsError::Socket(e.into())),
        }
    }
}

/// Sends the hello.
///
/// # Errors
/// [`ProcsError::Socket`] when the worker is gone.
pub fn send_hello(socket: BorrowedFd<'_>, hello: &Hello) -> Result<(), ProcsError> {
    send(socket, &hello.encode(), &[])
}

/// Sends a message (with its descriptors).
///
/// # Errors
/// [`ProcsError::Socket`] when the other side is gone.
pub fn send_message(socket: BorrowedFd<'_>, message: &Message) -> Result<(), ProcsError> {
    match message {
        Message::OpenSplit {
            split_id,
            plaintext_len,
            prefix_len,
            cipher,
            envelope,
            input,
            output,
        } => {
            let mut w = Writer::new(KIND_OPEN_SPLIT);
            let NonceScheme::Stream = cipher.nonces;
            w.u64(*split_id)
                .u64(*plaintext_len)
                .u32(*prefix_len)
                .u8(cipher.cipher.id())
                .raw(&cipher.key[..])
                .bytes(&cipher.aad)
                .u32(cipher.chunk_size)
                .bytes(envelope.as_bytes())
                .u8(u8::from(output.is_some()));
            let mut fds = vec![input.as_fd()];
            fds.extend(output.as_ref().map(|o| o.as_fd()));
            send(socket, &w.0, &fds)
        }
        Message::CloseSplit { split_id } => {
            let mut w = Writer::new(KIND_CLOSE_SPLIT);
            w.u64(*split_id);
            send(socket, &w.0, &[])
        }
        Message::Done {
            task_id,
            bytes,
            layout,
            outcome,
        } => {
            let mut w = Writer::new(KIND_DONE);
            w.u64(*task_id).u64(*bytes);
            match layout {
                Some((header_len, chunk, len)) => w.u8(1).u32(*header_len).u32(*chunk).u64(*len),
                None => w.u8(0),
            };
            match outcome {
                Outcome::Ok => w.u8(0),
                Outcome::Cancelled => w.u8(1),
                Outcome::LinkLater(target) => w.u8(3).bytes(target),
                Outcome::Failed(text) => {
                    let mut end = text.len().min(MAX_REASON);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    w.u8(2).bytes(&text.as_bytes()[..end])
                }
            };
            send(socket, &w.0, &[])
        }
    }
}

/// What one receive found.
pub enum Received {
    /// The raw bytes of a hello (decode with [`Hello::decode`]).
    Hello(Zeroizing<Vec<u8>>),
    /// A message.
    Message(Message),
    /// Nothing waiting (non-blocking receive only).
    Empty,
    /// The other side closed the socket (it exited or died).
    Closed,
}

/// Receives one message into `data` (a scratch buffer of at least
/// [`MAX_MESSAGE`] bytes that the caller reuses; the hello is copied out
/// into a zeroizing buffer, and a worker receives it into a zeroizing
/// scratch); with `block` false, returns [`Received::Empty`] when none is
/// waiting.
///
/// # Errors
/// [`ProcsError::Socket`] or [`ProcsError::Protocol`].
pub fn receive(
    socket: BorrowedFd<'_>,
    block: bool,
    data: &mut [u8],
) -> Result<Received, ProcsError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = if block {
        RecvFlags::CMSG_CLOEXEC
    } else {
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
    };
    let got = loop {
        match rustix::net::recvmsg(socket, &mut [IoSliceMut::new(data)], &mut control, flags) {
            Ok(msg) => break msg.bytes,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return Ok(Received::Empty),
            Err(rustix::io::Errno::CONNRESET) => return Ok(Received::Closed),
            Err(e) => return Err(ProcsError::Socket(e.into())),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got == 0 {
        return Ok(Received::Closed);
    }
    let mut r = Reader(&data[..got]);
    let message = match r.u8()? {
        KIND_HELLO => {
            return Ok(Received::Hello(Zeroizing::new(data[..got].to_vec())));
        }
        KIND_OPEN_SPLIT => {
            let split_id = r.u64()?;
            let plaintext_len = r.u64()?;
            let prefix_len = r.u32()?;
            let algorithm =
                Cipher::from_id(r.u8()?).map_err(|_| ProcsError::Protocol("unknown cipher"))?;
            let key = Zeroizing::new(r.array::<{ cryptstream_format::AEAD_KEY_LEN }>()?);
            let aad = r.bytes()?;
            if aad.len() > MAX_HEADER_LEN {
                return Err(ProcsError::Protocol("associated data too long"));
            }
            let cipher = CipherParts {
                cipher: algorithm,
                key,
                nonces: NonceScheme::Stream,
                aad: aad.to_vec(),
                chunk_size: r.u32()?,
            };
            let envelope = std::str::from_utf8(r.bytes()?)
                .map_err(|_| ProcsError::Protocol("an envelope name is not UTF-8"))?
                .to_string();
            let has_output = r.u8()? != 0;
            let mut fds = fds.into_iter();
            let input = fds
                .next()
                .ok_or(ProcsError::Protocol("split file without its input"))?;
            let output = if has_output {
                Some(
                    fds.next()
                        .ok_or(ProcsError::Protocol("split file without its output"))?,
                )
            } else {
                None
            };
            // The payload key is in the message: it does not stay in the
            // caller's scratch buffer.
            zeroize::Zeroize::zeroize(&mut data[..got]);
            Message::OpenSplit {
                split_id,
                plaintext_len,
                prefix_len,
                cipher,
                envelope,
                input,
                output,
            }
        }
        KIND_CLOSE_SPLIT => Message::CloseSplit { split_id: r.u64()? },
        KIND_DONE => {
            let task_id = r.u64()?;
            let bytes = r.u64()?;
            let layout = match r.u8()? {
                0 => None,
                _ => Some((r.u32()?, r.u32()?, r.u64()?)),
            };
            let outcome = match r.u8()? {
                0 => Outcome::Ok,
                1 => Outcome::Cancelled,
                3 => Outcome::LinkLater(r.bytes()?.to_vec()),
                _ => Outcome::Failed(String::from_utf8_lossy(r.bytes()?).into_owned()),
            };
            Message::Done {
                task_id,
                bytes,
                layout,
                outcome,
            }
        }
        _ => return Err(ProcsError::Protocol("unknown message kind")),
    };
    Ok(Received::Message(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant is in its wire-id table, once, and decodes back. The
    /// matches have no wildcard, so a new variant stops this test from
    /// compiling until it is listed here (and then in the table).
    #[test]
    fn every_settings_variant_has_one_wire_id() {
        fn check<T: PartialEq + Copy + std::fmt::Debug>(table: &[(T, u8)], all: &[T]) {
            assert_eq!(table.len(), all.len(), "{all:?}");
            for value in all {
                let id = id_of(table, value);
                assert_eq!(value_of(table, id, "test").unwrap(), *value);
                assert_eq!(table.iter().filter(|(_, i)| *i == id).count(), 1);
            }
            assert!(value_of(table, 200, "unknown").is_err());
        }
        let directions = [Direction::Encrypt, Direction::Decrypt, Direction::Verify];
        for d in directions {
            match d {
                Direction::Encrypt | Direction::Decrypt | Direction::Verify => {}
            }
        }
        check(DIRECTIONS, &directions);
        let overwrites = [Overwrite::Refuse, Overwrite::Force, Overwrite::SkipExisting];
        for o in overwrites {
            match o {
                Overwrite::Refuse | Overwrite::Force | Overwrite::SkipExisting => {}
            }
        }
        check(OVERWRITES, &overwrites);
        let ios = [
            IoChoice::Auto,
            IoChoice::Read,
            IoChoice::Pread,
            IoChoice::Mmap,
        ];
        for io in ios {
            match io {
                IoChoice::Auto | IoChoice::Read | IoChoice::Pread | IoChoice::Mmap => {}
            }
        }
        check(IO_CHOICES, &ios);
    }

    #[test]
    fn hello_round_trips_with_its_secrets() {
        let hello = Hello {
            worker: 3,
            parent_pid: 42,
            direction: Direction::Encrypt,
            cipher: Cipher::ChaCha20Poly1305,
            chunk_size: 4096,
            overwrite: Overwrite::SkipExisting,
            durable: true,
            io: IoChoice::Mmap,
            fixed_salt: Some([9; 32]),
            output_root: Some("/out/root".into()),
            output_staged: true,
            umask: 0o027,
            keep_special_bits: true,
            encryption_key: Some(MasterKey::from_parts(
                Zeroizing::new([7; 32]),
                KeySource::Passphrase {
                    salt: [1; 16],
                    params: KdfParams {
                        m_kib: 64,
                        t: 1,
                        p: 1,
                    },
                },
            )),
            keys: vec![MasterKey::from_key_bytes([5; 32])],
            envelopes: Vec::new(),
        };
        let back = Hello::decode(&hello.encode()).unwrap();
        assert_eq!(back.worker, 3);
        assert_eq!(back.parent_pid, 42);
        assert_eq!(back.direction, Direction::Encrypt);
        assert_eq!(back.cipher, Cipher::ChaCha20Poly1305);
        assert_eq!(back.overwrite, Overwrite::SkipExisting);
        assert!(back.durable);
        assert_eq!(back.io, IoChoice::Mmap);
        assert_eq!(back.fixed_salt, Some([9; 32]));
        assert_eq!(back.output_root, Some("/out/root".into()));
        assert!(back.output_staged);
        assert_eq!((back.umask, back.keep_special_bits), (0o027, true));
        let key = back.encryption_key.unwrap();
        assert_eq!(key.expose_bytes(), &[7; 32]);
        assert!(matches!(key.source(), KeySource::Passphrase { salt, .. } if *salt == [1; 16]));
        assert_eq!(
            back.keys[0].key_id(),
            MasterKey::from_key_bytes([5; 32]).key_id()
        );
    }

    #[test]
    fn messages_and_descriptors_cross_a_socket_pair() {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        send_message(
            a.as_fd(),
            &Message::OpenSplit {
                split_id: 5,
                plaintext_len: 77,
                prefix_len: 160,
                cipher: CipherParts {
                    cipher: Cipher::Aes256Gcm,
                    key: Zeroizing::new([7; 32]),
                    nonces: NonceScheme::Stream,
                    aad: vec![3; MAX_HEADER_LEN],
                    chunk_size: 1024,
                },
                envelope: "cryptstream".into(),
                input: OwnedFd::from(file.try_clone().unwrap()),
                output: None,
            },
        )
        .unwrap();
        send_message(
            b.as_fd(),
            &Message::Done {
                task_id: 9,
                bytes: 10,
                layout: Some((160, 1024, 10)),
                outcome: Outcome::Failed("nope".into()),
            },
        )
        .unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        match receive(b.as_fd(), true, &mut buf).unwrap() {
            Received::Message(Message::OpenSplit {
                split_id, output, ..
            }) => {
                assert_eq!(split_id, 5);
                assert!(output.is_none());
            }
            _ => panic!("expected OpenSplit"),
        }
        match receive(a.as_fd(), false, &mut buf).unwrap() {
            Received::Message(Message::Done {
                task_id, outcome, ..
            }) => {
                assert_eq!(task_id, 9);
                assert_eq!(outcome, Outcome::Failed("nope".into()));
            }
            _ => panic!("expected Done"),
        }
        assert!(matches!(
            receive(a.as_fd(), false, &mut buf).unwrap(),
            Received::Empty
        ));
        drop(b);
        assert!(matches!(
            receive(a.as_fd(), true, &mut buf).unwrap(),
            Received::Closed
        ));
    }
}
