//! Sequential encryption and decryption of byte streams (`-` for stdin or
//! stdout, pipes, sockets).
//!
//! A stream is read one chunk ahead, so that the last chunk is known when it
//! is sealed; each chunk is written as soon as it is sealed or, when
//! decrypting, as soon as it authenticates. A consumer of decrypted stdout
//! therefore sees the plaintext of the chunks before a damaged one and must
//! trust the exit status, exactly as with age: a failure is always reported
//! and exits non-zero. To a file, nothing appears under the final name
//! unless the whole stream authenticates.

use std::io::{self, Read, Write};

use cryptstream_format::{
    seal_header, FormatError, Header, HeaderParams, Keyring, Layout, MasterKey, HEADER_LEN, TAG_LEN,
};

use crate::file::Reason;

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match input.read(&mut buf[total..]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Encrypts `input` to `output` and returns the plaintext bytes read.
///
/// `params.plaintext_len` is written to the header when known; the stream
/// must then hold exactly that many bytes.
///
/// # Errors
/// [`Reason::Read`], [`Reason::Write`] or [`Reason::Changed`].
pub fn encrypt_stream(
    input: &mut dyn Read,
    output: &mut dyn Write,
    key: &MasterKey,
    params: &HeaderParams,
    salt: [u8; 32],
) -> Result<u64, Reason> {
    let (header, cipher) = seal_header(key, params, salt)?;
    output.write_all(header.as_bytes()).map_err(Reason::Write)?;
    let chunk = params.chunk_size as usize;
    let mut current = vec![0u8; chunk + TAG_LEN];
    let mut next = vec![0u8; chunk + TAG_LEN];
    let mut len = read_full(input, &mut current[..chunk]).map_err(Reason::Read)?;
    let mut index = 0u64;
    let mut total = 0u64;
    loop {
        let next_len = if len == chunk {
            read_full(input, &mut next[..chunk]).map_err(Reason::Read)?
        } else {
            0
        };
        let last = next_len == 0;
        cipher.seal_in_place(index, last, &mut current[..len + TAG_LEN]);
        output
            .write_all(&current[..len + TAG_LEN])
            .map_err(Reason::Write)?;
        total += len as u64;
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        len = next_len;
        index += 1;
    }
    output.flush().map_err(Reason::Write)?;
    if let Some(expected) = params.plaintext_len {
        if expected != total {
            return Err(Reason::Changed {
                before: expected,
                after: total,
            });
        }
    }
    Ok(total)
}

/// Decrypts `input` and writes the plaintext of each authenticated chunk to
/// `output`; returns the header and the plaintext length.
///
/// # Errors
/// A [`FormatError`] (not a cryptstream file, wrong key, chunk `i` failed,
/// truncated) or an I/O [`Reason`].
pub fn decrypt_stream(
    input: &mut dyn Read,
    output: &mut dyn Write,
    keyring: &Keyring,
) -> Result<(Header, u64), Reason> {
    let mut header_bytes = [0u8; HEADER_LEN];
    let got = read_full(input, &mut header_bytes).map_err(Reason::Read)?;
    let header = Header::parse(&header_bytes[..got])?;
    let cipher = keyring.unlock(&header)?;
    let stride = header.chunk_size as usize + TAG_LEN;
    let mut current = vec![0u8; stride];
    let mut next = vec![0u8; stride];
    let mut len = read_full(input, &mut current).map_err(Reason::Read)?;
    let mut index = 0u64;
    let mut total = 0u64;
    loop {
        let next_len = if len == stride {
            read_full(input, &mut next).map_err(Reason::Read)?
        } else {
            0
        };
        let last = next_len == 0;
        // A lone tag after full chunks is not a valid ending.
        if len < TAG_LEN || (last && len == TAG_LEN && index > 0) {
            return Err(FormatError::ChunkAuth { index }.into());
        }
        cipher.open_in_place(index, last, &mut current[..len])?;
        output
            .write_all(&current[..len - TAG_LEN])
            .map_err(Reason::Write)?;
        total += (len - TAG_LEN) as u64;
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        len = next_len;
        index += 1;
    }
    output.flush().map_err(Reason::Write)?;
    if let Some(expected) = header.plaintext_len {
        if expected != total {
            let layout = |n| cryptstream_format::Layout::new(header.chunk_size, n).ciphertext_len();
            return Err(FormatError::LengthMismatch {
                expected: layout(expected),
                actual: layout(total),
            }
            .into());
        }
    }
    Ok((header, total))
}

/// The layout of `encrypted` when it authenticates under `keyring` and
/// decrypts to exactly the bytes of `plain`; `None` when it does not, or
/// when either cannot be read. Stops at the first difference.
pub fn decrypts_to(
    encrypted: &mut dyn Read,
    plain: &mut dyn Read,
    keyring: &Keyring,
) -> Option<Layout> {
    let mut compare = Compare {
        plain,
        theirs: Vec::new(),
    };
    let (header, len) = decrypt_stream(encrypted, &mut compare, keyring).ok()?;
    let at_end = matches!(read_full(compare.plain, &mut [0u8; 1]), Ok(0));
    at_end.then(|| Layout::new(header.chunk_size, len))
}

/// A writer that only checks that what it is given comes next in `plain`.
struct Compare<'a> {
    plain: &'a mut dyn Read,
    theirs: Vec<u8>,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.theirs.resize(buf.len(), 0);
        let got = read_full(self.plain, &mut self.theirs)?;
        if got != buf.len() || self.theirs != buf {
            return Err(io::Error::other("the contents differ"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptstream_format::{Cipher, MIN_CHUNK_SIZE};

    fn encrypted(plain: &[u8], key: &MasterKey) -> Vec<u8> {
        let params = HeaderParams {
            cipher: Cipher::Aes256Gcm,
            chunk_size: MIN_CHUNK_SIZE,
            plaintext_len: Some(plain.len() as u64),
            mode: 0o600,
        };
        let mut out = Vec::new();
        encrypt_stream(&mut &plain[..], &mut out, key, &params, [3; 32]).expect("encrypts");
        out
    }

    #[test]
    fn decrypts_to_accepts_only_the_exact_plaintext() {
        let key = MasterKey::from_key_bytes([9; 32]);
        let keyring = Keyring::new(vec![MasterKey::from_key_bytes([9; 32])], None);
        let plain: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let enc = encrypted(&plain, &key);
        let check = |plain: &[u8]| decrypts_to(&mut &enc[..], &mut &plain[..], &keyring);
        let layout = check(&plain).expect("the true plaintext matches");
        assert_eq!(layout.plaintext_len(), 5000);
        let mut changed = plain.clone();
        changed[4321] ^= 1;
        assert!(check(&changed).is_none(), "one byte differs");
        assert!(check(&plain[..4999]).is_none(), "plaintext shorter");
        let mut longer = plain.clone();
        longer.push(0);
        assert!(check(&longer).is_none(), "plaintext longer");
        let other = Keyring::new(vec![MasterKey::from_key_bytes([8; 32])], None);
        assert!(decrypts_to(&mut &enc[..], &mut &plain[..], &other).is_none());
        let mut tampered = enc.clone();
        tampered[HEADER_LEN + 10] ^= 1;
        assert!(decrypts_to(&mut &tampered[..], &mut &plain[..], &keyring).is_none());
    }
}
