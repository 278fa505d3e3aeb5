//! Compressed bodies of the metadata objects (manifests and snapshots).
//!
//! Since the second layout of both, a manifest's or snapshot's container
//! plaintext is its 8-byte magic followed by a zstd stream (one frame,
//! maybe followed by skippable frames) whose content is the rest of the
//! plaintext. Compression happens inside the seal: the container
//! authenticates the compressed bytes, so nobody without the key can
//! craft them.
//!
//! Reading is bounded all the same (a writer with the key but a bug, or
//! a hostile one, must not make a reader allocate or spin without
//! limit): the decoder's window is at most 2^[`WINDOW_LOG`] bytes, and
//! the decompressed body at most [`MAX_EXPANSION`] times the size of the
//! object it came from; past that the read fails naming the object. A
//! writer keeps every body it writes within that bound by appending a
//! skippable frame of padding in the rare case that the body compressed
//! better than 1 : [`MAX_EXPANSION`] (ZSTD skippable frames,
//! RFC 8878 section 3.1.2), so a body a reader refuses was never written
//! by this code.

use std::io::{self, BufRead, BufReader, Read, Write};

/// zstd level of metadata bodies: small objects, mostly names, written
/// once per pack commit or put.
pub const METADATA_ZSTD_LEVEL: i32 = 3;
/// Largest window (log2 of bytes) a metadata body is written with and
/// read with: a frame that asks for more is refused.
pub const WINDOW_LOG: u32 = 21;
/// Most bytes a body may decompress to per byte of its object.
pub const MAX_EXPANSION: u64 = 64;
/// First four bytes (LE) of a zstd skippable frame.
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
/// Magic and length of a skippable frame.
const SKIPPABLE_HEADER_LEN: u64 = 8;

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses a body into `W` as it is written.
pub struct CompressingWriter<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, Counted<W>>,
    raw: u64,
}

impl<W: Write> CompressingWriter<W> {
    /// Starts a body written into `inner`.
    ///
    /// # Errors
    /// zstd could not make its context.
    pub fn new(inner: W) -> io::Result<CompressingWriter<W>> {
        let mut encoder =
            zstd::stream::write::Encoder::new(Counted { inner, written: 0 }, METADATA_ZSTD_LEVEL)?;
        encoder.window_log(WINDOW_LOG)?;
        Ok(CompressingWriter { encoder, raw: 0 })
    }

    /// Ends the frame, pads it when the body compressed better than
    /// 1 : [`MAX_EXPANSION`], and returns the writer underneath.
    ///
    /// # Errors
    /// Write failures.
    pub fn finish(self) -> io::Result<W> {
        let mut out = self.encoder.finish()?;
        let mut pad = self.raw.div_ceil(MAX_EXPANSION).saturating_sub(out.written);
        while pad > 0 {
            let content = pad
                .saturating_sub(SKIPPABLE_HEADER_LEN)
                .min(u64::from(u32::MAX));
            out.write_all(&SKIPPABLE_MAGIC.to_le_bytes())?;
            out.write_all(&(content as u32).to_le_bytes())?;
            io::copy(&mut io::repeat(0).take(content), &mut out)?;
            pad = pad.saturating_sub(SKIPPABLE_HEADER_LEN + content);
        }
        Ok(out.inner)
    }
}

impl<W: Write> Write for CompressingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        self.raw += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

/// Decompresses a body, refusing a window larger than 2^[`WINDOW_LOG`]
/// and more than `cap` bytes of output.
pub struct BoundedDecoder<R: BufRead> {
    decoder: zstd::stream::read::Decoder<'static, R>,
    cap: u64,
    left: u64,
}

impl<R: BufRead> BoundedDecoder<R> {
    /// Reads the body compressed in `input`, of an object of
    /// `object_size` bytes.
    ///
    /// # Errors
    /// zstd could not make its context.
    pub fn new(input: R, object_size: u64) -> io::Result<BoundedDecoder<R>> {
        let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?;
        decoder.window_log_max(WINDOW_LOG)?;
        let cap = object_size.saturating_mul(MAX_EXPANSION);
        Ok(BoundedDecoder {
            decoder,
            cap,
            left: cap,
        })
    }
}

impl<R: BufRead> Read for BoundedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than is left, so that a body exactly at the cap
        // still reads to its end.
        let room = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.decoder.read(&mut buf[..room]).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("its compressed body does not decompress (windows up to 2^{WINDOW_LOG} bytes): {e}"),
            )
        })?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "decompresses to more than {} bytes ({MAX_EXPANSION} x the object's size); refused",
                    self.cap
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A body as the object holds it: as is (the first layout) or compressed.
pub enum Body<R: BufRead> {
    /// The first layout: the plaintext itself.
    Plain(R),
    /// The second layout: zstd, bounded.
    Compressed(BufReader<BoundedDecoder<R>>),
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Plain(r) => r.read(buf),
            Body::Compressed(r) => r.read(buf),
        }
    }
}

/// The whole container plaintext of a compressed body: `magic` then the
/// zstd stream of `body` (test vectors; objects stream the same bytes).
pub fn plaintext(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut writer =
        CompressingWriter::new(magic.to_vec()).expect("a zstd context can be made for a vector");
    writer
        .write_all(body)
        .expect("writing to a Vec does not fail");
    writer.finish().expect("writing to a Vec does not fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompress(stream: &[u8], object_size: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        BoundedDecoder::new(stream, object_size)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_body_round_trips() {
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let stream = plaintext(b"ABCDEFGH", &body);
        assert_eq!(&stream[..8], b"ABCDEFGH");
        assert!(stream.len() < body.len());
        assert_eq!(decompress(&stream[8..], stream.len() as u64).unwrap(), body);
    }

    #[test]
    fn a_body_that_compresses_too_well_is_padded_and_still_reads() {
        let body = vec![0u8; 10 << 20];
        let stream = plaintext(b"ABCDEFGH", &body);
        let compressed = stream.len() as u64 - 8;
        assert!(
            compressed * MAX_EXPANSION >= body.len() as u64,
            "padded to {compressed} bytes"
        );
        assert_eq!(decompress(&stream[8..], compressed).unwrap(), body);
    }

    #[test]
    fn a_body_larger_than_the_cap_is_refused() {
        // A frame written without the padding: 10 MiB of zeros in a few
        // hundred bytes, read as if from an object of that size.
        let stream = zstd::encode_all(&vec![0u8; 10 << 20][..], 3).unwrap();
        let err = decompress(&stream, stream.len() as u64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("decompresses to more than"),
            "{err}"
        );
    }

    #[test]
    fn a_frame_asking_for_a_larger_window_is_refused() {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(WINDOW_LOG + 4).unwrap();
        let body = vec![7u8; 1 << 20];
        encoder.write_all(&body).unwrap();
        let stream = encoder.finish().unwrap();
        assert!(decompress(&stream, u64::MAX / MAX_EXPANSION).is_err());
    }
}
