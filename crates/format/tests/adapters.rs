//! `SealingWriter` and `OpeningReader` round trips and refusals, on
//! in-memory streams.

use std::io::{self, Read, Write};

use cryptstream_format::{
    seal_header, ChunkCipher, Cipher, EntryKind, FormatError, Header, HeaderParams, MasterKey,
    OpeningReader, SealingWriter, MIN_CHUNK_SIZE, TAG_LEN,
};

const C: usize = MIN_CHUNK_SIZE as usize;

fn key() -> MasterKey {
    MasterKey::from_key_bytes([0x5a; 32])
}

fn header(plaintext_len: Option<u64>) -> (Header, ChunkCipher) {
    let params = HeaderParams {
        cipher: Cipher::Aes256Gcm,
        chunk_size: C as u32,
        plaintext_len,
        mode: 0o600,
        kind: EntryKind::File,
        mtime: None,
    };
    seal_header(&key(), &params, [0x11; 32]).unwrap()
}

fn opener(header: &Header) -> ChunkCipher {
    header.authenticate(&key()).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 253) as u8).collect()
}

/// Writes `data` in pieces of the sizes in `steps` (cycled), checking that
/// no write takes more than a chunk.
fn seal(data: &[u8], steps: &[usize]) -> (Header, Vec<u8>) {
    let (header, cipher) = header(Some(data.len() as u64));
    let mut writer = SealingWriter::new(Vec::new(), cipher);
    let mut at = 0;
    for step in steps.iter().cycle() {
        if at == data.len() {
            break;
        }
        let end = (at + step).min(data.len());
        let n = writer.write(&data[at..end]).unwrap();
        assert!(n > 0 && n <= C, "a write takes 1..=C bytes, took {n}");
        at += n;
    }
    writer.flush().unwrap();
    let (body, written) = writer.finish().unwrap();
    assert_eq!(written, data.len() as u64);
    (header, body)
}

/// Reads everything in pieces of the sizes in `steps` (cycled).
fn open(
    header: &Header,
    body: &[u8],
    expected: Option<u64>,
    steps: &[usize],
) -> Result<Vec<u8>, io::Error> {
    let mut reader = OpeningReader::new(body, opener(header), expected);
    let mut out = Vec::new();
    for &step in steps.iter().cycle() {
        let mut piece = vec![0u8; step];
        let n = reader.read(&mut piece)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&piece[..n]);
        assert_eq!(reader.plaintext_len(), out.len() as u64);
    }
    Ok(out)
}

fn format_error(e: &io::Error) -> FormatError {
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<FormatError>())
        .cloned()
        .unwrap_or_else(|| panic!("not a FormatError: {e}"))
}

const LENGTHS: [usize; 6] = [0, 1, C - 1, C, C + 1, 3 * C];
const STEPS: [&[usize]; 4] = [&[1], &[7, 1000, 3], &[C], &[C + 5, 2 * C + 1]];

#[test]
fn round_trips_match_the_chunk_layout() {
    for len in LENGTHS {
        let data = pattern(len);
        for steps in STEPS {
            let (header, body) = seal(&data, steps);
            // Byte for byte what sealing the laid-out chunks gives.
            let layout = header.layout(len as u64).unwrap();
            assert_eq!(
                body.len() as u64,
                layout.ciphertext_len() - header.len() as u64,
                "len {len}"
            );
            for read_steps in STEPS {
                let out = open(&header, &body, Some(len as u64), read_steps).unwrap();
                assert!(out == data, "len {len} steps {steps:?}/{read_steps:?}");
                assert_eq!(open(&header, &body, None, read_steps).unwrap(), data);
            }
        }
    }
}

#[test]
fn a_multiple_of_the_chunk_size_ends_with_a_full_chunk() {
    for chunks in [1usize, 3] {
        let (header, body) = seal(&pattern(chunks * C), &[C]);
        assert_eq!(body.len(), chunks * (C + TAG_LEN));
        let layout = header.layout((chunks * C) as u64).unwrap();
        assert_eq!(layout.chunk_count(), chunks as u64);
    }
    let (_, empty) = seal(&[], &[1]);
    assert_eq!(empty.len(), TAG_LEN, "an empty stream is one lone tag");
}

#[test]
fn truncated_streams_are_refused() {
    for len in LENGTHS {
        let data = pattern(len);
        let (header, body) = seal(&data, &[C]);
        for cut in 0..body.len() {
            let err = open(&header, &body[..cut], None, &[C]).unwrap_err();
            assert!(
                matches!(format_error(&err), FormatError::ChunkAuth { .. }),
                "len {len} cut {cut}: {err}"
            );
        }
    }
}

#[test]
fn extended_streams_and_lone_tags_are_refused() {
    for len in LENGTHS {
        let (header, body) = seal(&pattern(len), &[C]);
        let chunks = header.layout(len as u64).unwrap().chunk_count();
        for extra in [1usize, TAG_LEN - 1, TAG_LEN, TAG_LEN + 1, C + TAG_LEN] {
            let mut longer = body.clone();
            longer.extend(std::iter::repeat_n(0xa5, extra));
            let err = open(&header, &longer, None, &[C]).unwrap_err();
            let FormatError::ChunkAuth { index } = format_error(&err) else {
                panic!("len {len} extra {extra}: {err}");
            };
            assert!(index < chunks + 1, "len {len} extra {extra}: chunk {index}");
        }
        // A lone tag after the last full chunk is refused by its shape.
        if len % C == 0 && len > 0 {
            let mut longer = body.clone();
            longer.extend_from_slice(&body[body.len() - TAG_LEN..]);
            let err = open(&header, &longer, None, &[C]).unwrap_err();
            assert!(
                matches!(format_error(&err), FormatError::ChunkAuth { .. }),
                "len {len}: {err}"
            );
        }
    }
}

#[test]
fn a_wrong_expected_length_is_refused() {
    for len in [0usize, 1, C, 3 * C] {
        let (header, body) = seal(&pattern(len), &[C]);
        for expected in [len as u64 + 1, (len as u64).saturating_sub(1), u64::MAX] {
            if expected == len as u64 {
                continue;
            }
            let err = open(&header, &body, Some(expected), &[C]).unwrap_err();
            let FormatError::LengthMismatch { actual, .. } = format_error(&err) else {
                panic!("len {len} expected {expected}: {err}");
            };
            assert_eq!(actual, body.len() as u64);
        }
    }
}

#[test]
fn a_failed_stream_keeps_failing_and_returns_no_unauthenticated_bytes() {
    let data = pattern(3 * C);
    let (header, mut body) = seal(&data, &[C]);
    body[C + TAG_LEN + 5] ^= 1; // chunk 1
    let mut reader = OpeningReader::new(&body[..], opener(&header), None);
    let mut out = vec![0u8; 10 * C];
    let n = reader.read(&mut out).unwrap();
    assert_eq!(&out[..n], &data[..C], "only chunk 0 is returned");
    for _ in 0..2 {
        let err = reader.read(&mut out).unwrap_err();
        assert_eq!(format_error(&err), FormatError::ChunkAuth { index: 1 });
    }
    assert_eq!(reader.plaintext_len(), C as u64);
}

/// A reader that fails once at a given offset, then carries on.
struct Flaky<'a> {
    data: &'a [u8],
    at: usize,
    fail_at: Option<usize>,
}

impl Read for Flaky<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.fail_at.is_some_and(|f| self.at >= f) {
            self.fail_at = None;
            return Err(io::Error::new(io::ErrorKind::TimedOut, "flaky"));
        }
        let n = out.len().min(self.data.len() - self.at).min(100);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn inner_read_errors_pass_through_and_can_be_retried() {
    let data = pattern(2 * C + 9);
    let (header, body) = seal(&data, &[C]);
    let inner = Flaky {
        data: &body,
        at: 0,
        fail_at: Some(C + 300),
    };
    let mut reader = OpeningReader::new(inner, opener(&header), Some(data.len() as u64));
    let mut out = Vec::new();
    let mut failures = 0;
    let mut piece = [0u8; 333];
    loop {
        match reader.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&piece[..n]),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 1);
    assert!(out == data);
}

/// A writer that fails every write after the first `ok` bytes.
struct Full {
    ok: usize,
    got: Vec<u8>,
}

impl Write for Full {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.got.len() >= self.ok {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
        }
        let n = data.len().min(self.ok - self.got.len());
        self.got.extend_from_slice(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_inner_write_breaks_the_stream() {
    let (_, cipher) = header(None);
    let mut writer = SealingWriter::new(
        Full {
            ok: 10,
            got: Vec::new(),
        },
        cipher,
    );
    writer.write_all(&pattern(C)).unwrap();
    let err = writer.write_all(&pattern(5)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    assert!(writer.write(&[1]).is_err());
    assert!(writer.finish().is_err());
}
