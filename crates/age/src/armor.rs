//! The ASCII armor of age files: strict PEM (RFC 7468 section 3) with the
//! label `AGE ENCRYPTED FILE`, padded base64 in lines of 64 columns.
//! Reading accepts whitespace around the block and LF or CRLF line ends,
//! and refuses everything else (headers, short or long lines, bad or
//! non-canonical padding, garbage).

use std::io::{self, BufRead, Read, Write};

use crate::encoding::b64_value;
use crate::AgeError;

/// The first line of an armored age file.
pub const BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// Its last line.
pub const END: &str = "-----END AGE ENCRYPTED FILE-----";
/// Columns of a full armor line.
const COLUMNS: usize = 64;
/// Bytes encoded by one full line.
const LINE_BYTES: usize = COLUMNS / 4 * 3;
/// The longest line read (a full line and CRLF, with room to spot a long one).
const MAX_LINE: usize = COLUMNS + 2;

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Encodes a stream as armor into `inner`; [`ArmoredWriter::finish`] writes
/// the last line and the end marker.
pub struct ArmoredWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    line: Vec<u8>,
}

impl<W: Write> ArmoredWriter<W> {
    /// Starts the armor (writes the begin line).
    ///
    /// # Errors
    /// The writer's error.
    pub fn new(mut inner: W) -> io::Result<ArmoredWriter<W>> {
        inner.write_all(BEGIN.as_bytes())?;
        inner.write_all(b"\n")?;
        Ok(ArmoredWriter {
            inner,
            pending: Vec::with_capacity(LINE_BYTES),
            line: Vec::with_capacity(COLUMNS + 1),
        })
    }

    fn emit(&mut self) -> io::Result<()> {
        self.line.clear();
        self.line
            .extend_from_slice(padded_b64(&self.pending).as_bytes());
        self.line.push(b'\n');
        self.pending.clear();
        self.inner.write_all(&self.line)
    }

    /// Writes the last line and the end marker, and gives back the writer.
    ///
    /// # Errors
    /// The writer's error.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            self.emit()?;
        }
        self.inner.write_all(END.as_bytes())?;
        self.inner.write_all(b"\n")?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ArmoredWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < data.len() {
            let n = (LINE_BYTES - self.pending.len()).min(data.len() - done);
            self.pending.extend_from_slice(&data[done..done + n]);
            done += n;
            // A full line waits for more data: the last line may be full.
            if self.pending.len() == LINE_BYTES && done < data.len() {
                self.emit()?;
            }
        }
        if self.pending.len() == LINE_BYTES {
            self.emit()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Standard padded base64.
fn padded_b64(data: &[u8]) -> String {
    let mut text = crate::encoding::b64_encode(data);
    while !text.len().is_multiple_of(4) {
        text.push('=');
    }
    text
}

/// Decodes one armored stream as it is read; errors are
/// [`AgeError::Armor`] inside an `io::Error` (see [`armor_error`]).
pub struct ArmoredReader<R: BufRead> {
    inner: R,
    line: Vec<u8>,
    decoded: Vec<u8>,
    pos: usize,
    state: ReadState,
}

#[derive(PartialEq, Eq)]
enum ReadState {
    /// Before the begin line.
    Start,
    /// Reading data lines; `short` when the last one was shorter than 64
    /// columns or padded (then only the end line may follow).
    Data { short: bool },
    /// After the end line.
    Done,
}

/// An armor failure as an `io::Error` that [`armor_error`] recognises.
fn failure(text: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, AgeError::Armor(text.into()))
}

/// The [`AgeError`] inside an `io::Error` from the readers of this crate, if any.
pub fn armor_error(e: &io::Error) -> Option<AgeError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<AgeError>())
        .cloned()
}

impl<R: BufRead> ArmoredReader<R> {
    /// Reads armor from `inner` (whitespace before the begin line is skipped).
    pub fn new(inner: R) -> ArmoredReader<R> {
        ArmoredReader {
            inner,
            line: Vec::with_capacity(MAX_LINE + 1),
            decoded: Vec::with_capacity(LINE_BYTES),
            pos: 0,
            state: ReadState::Start,
        }
    }

    /// Reads the next line without its LF (or CRLF); `false` at the end of
    /// the input. A line cut by the end of input has no end.
    fn next_line(&mut self) -> io::Result<(bool, bool)> {
        self.line.clear();
        let n = (&mut self.inner)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok((false, false));
        }
        let ended = self.line.last() == Some(&b'\n');
        if !ended && n > MAX_LINE {
            return Err(failure("a line is longer than 64 columns"));
        }
        if ended {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
        }
        Ok((true, ended))
    }

    fn skip_space(&mut self) -> io::Result<()> {
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf.iter().take_while(|&&c| is_space(c)).count();
            let all = n == buf.len();
            self.inner.consume(n);
            if !all {
                return Ok(());
            }
        }
    }

    /// Decodes the next line into `decoded`; `false` once the end line is read.
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            match self.state {
                ReadState::Done => return Ok(false),
                ReadState::Start => {
                    self.skip_space()?;
                    let (got, ended) = self.next_line()?;
                    if !got || !ended || self.line != BEGIN.as_bytes() {
                        return Err(failure("the armor does not start with the age begin line"));
                    }
                    self.state = ReadState::Data { short: false };
                }
                ReadState::Data { short } => {
                    let (got, ended) = self.next_line()?;
                    if !got {
                        return Err(failure("the armor has no end line"));
                    }
                    if self.line == END.as_bytes() {
                        // Only whitespace may follow.
                        self.skip_space()?;
                        if !self.inner.fill_buf()?.is_empty() {
                            return Err(failure("data after the armor's end line"));
                        }
                        self.state = ReadState::Done;
                        return Ok(false);
                    }
                    if !ended {
                        return Err(failure("the armor has no end line"));
                    }
                    if short {
                        return Err(failure("a short line in the middle of the armor"));
                    }
                    let len = self.line.len();
                    if len == 0 || len > COLUMNS || !len.is_multiple_of(4) {
                        return Err(failure("an armor line has a wrong length"));
                    }
                    self.decoded.clear();
                    let padded = decode_padded(&self.line, &mut self.decoded)?;
                    self.pos = 0;
                    self.state = ReadState::Data {
                        short: padded || len < COLUMNS,
                    };
                    return Ok(true);
                }
            }
        }
    }
}

/// Decodes padded canonical base64 whose length is a multiple of 4;
/// returns whether it ended with padding.
fn decode_padded(text: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
    let groups = text.len() / 4;
    for (g, group) in text.chunks(4).enumerate() {
        let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && g != groups - 1) {
            return Err(failure("misplaced base64 padding"));
        }
        let mut n = 0u32;
        for (i, &c) in group[..4 - pad].iter().enumerate() {
            let v = b64_value(c).ok_or_else(|| failure("a character that is not base64"))?;
            n |= u32::from(v) << (18 - 6 * i);
        }
        let keep = 3 - pad;
        if n & ((1u32 << (8 * pad)) - 1) != 0 {
            return Err(failure("non-canonical base64"));
        }
        out.extend_from_slice(&n.to_be_bytes()[1..1 + keep]);
        if pad > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

impl<R: BufRead> Read for ArmoredReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.decoded.len() {
            if !self.advance()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.decoded.len() - self.pos);
        out[..n].copy_from_slice(&self.decoded[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armor_round_trips_at_line_boundaries() {
        for len in [0usize, 1, 47, 48, 49, 96, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let mut w = ArmoredWriter::new(Vec::new()).unwrap();
            w.write_all(&data).unwrap();
            let text = w.finish().unwrap();
            let mut back = Vec::new();
            ArmoredReader::new(&text[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }
}
