//! The age v1 header: version line, recipient stanzas and MAC, parsed
//! strictly (every non-canonical encoding is refused, as the C2SP spec
//! requires) and within fixed bounds.

use std::io::BufRead;

use crate::encoding::{b64_decode, b64_encode, b64_value};
use crate::{crypto, AgeError, FileKey};

/// The first line of every binary age v1 file.
pub const VERSION_LINE: &str = "age-encryption.org/v1";
/// What every age version line starts with.
const VERSION_PREFIX: &[u8] = b"age-encryption.org/";
/// The largest header read (8 MiB): about 5000 post-quantum stanzas or
/// 80000 X25519 stanzas. A longer header is refused before it is all read.
pub const MAX_HEADER_LEN: usize = 8 << 20;
/// The most stanzas in a header: each is tried against each identity, so
/// this bounds the work of a hostile header.
pub const MAX_STANZAS: usize = 20_000;
/// Columns of a full stanza body line.
const BODY_COLUMNS: usize = 64;
/// Length of the header MAC.
const MAC_LEN: usize = 32;

/// One recipient stanza: its arguments (the first names its type) and its
/// body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stanza {
    /// Arguments, at least one; the first is the stanza type.
    pub args: Vec<String>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Stanza {
    /// The stanza type (its first argument).
    pub fn kind(&self) -> &str {
        &self.args[0]
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"->");
        for arg in &self.args {
            out.push(b' ');
            out.extend_from_slice(arg.as_bytes());
        }
        out.push(b'\n');
        let body = b64_encode(&self.body);
        let mut lines = body.as_bytes().chunks(BODY_COLUMNS);
        let mut last_len = 0;
        for line in lines.by_ref() {
            out.extend_from_slice(line);
            out.push(b'\n');
            last_len = line.len();
        }
        // The body ends with a line shorter than 64 columns, maybe empty.
        if last_len == BODY_COLUMNS || body.is_empty() {
            out.push(b'\n');
        }
    }
}

/// A parsed (or newly made) age header.
#[derive(Clone, Debug)]
pub struct Header {
    /// The recipient stanzas, in order.
    pub stanzas: Vec<Stanza>,
    /// The header as encoded, MAC line included.
    bytes: Vec<u8>,
    /// Where the MAC line's `---` ends: the MAC covers `bytes[..mac_end]`.
    mac_end: usize,
    /// The MAC.
    mac: [u8; MAC_LEN],
}

/// Reads one line ending in LF, at most `budget` bytes; the line
/// without its LF. Header failure for a line cut by the end of input or by
/// the budget.
fn read_line(
    input: &mut dyn BufRead,
    budget: &mut usize,
    out: &mut Vec<u8>,
) -> Result<(), AgeError> {
    let start = out.len();
    let limit = (*budget as u64).saturating_add(1);
    let n = std::io::Read::take(&mut *input, limit)
        .read_until(b'\n', out)
        .map_err(|e| {
            crate::armor::armor_error(&e)
                .unwrap_or_else(|| AgeError::header(format!("cannot read the header: {e}")))
        })?;
    if n > *budget {
        return Err(AgeError::header(format!(
            "the header is longer than {MAX_HEADER_LEN} bytes"
        )));
    }
    *budget -= n;
    if n == 0 || out[start + n - 1] != b'\n' {
        return Err(AgeError::header("the header ends before its MAC line"));
    }
    Ok(())
}

impl Header {
    /// Parses the header at the start of `input`, reading exactly its bytes
    /// (the payload follows in `input`).
    ///
    /// # Errors
    /// [`AgeError::Header`] for anything that is not a canonical v1 header
    /// within [`MAX_HEADER_LEN`] and [`MAX_STANZAS`].
    pub fn read(input: &mut dyn BufRead) -> Result<Header, AgeError> {
        let mut budget = MAX_HEADER_LEN;
        let mut bytes = Vec::with_capacity(512);
        read_line(input, &mut budget, &mut bytes)?;
        if bytes[..bytes.len() - 1] != *VERSION_LINE.as_bytes() {
            return Err(if bytes.starts_with(VERSION_PREFIX) {
                AgeError::header("unsupported age version (only v1 is known)")
            } else {
                AgeError::header("not an age file (no age-encryption.org/v1 line)")
            });
        }
        let mut stanzas = Vec::new();
        loop {
            let start = bytes.len();
            read_line(input, &mut budget, &mut bytes)?;
            let line = &bytes[start..bytes.len() - 1];
            if let Some(args) = line.strip_prefix(b"-> ") {
                if stanzas.len() == MAX_STANZAS {
                    return Err(AgeError::header(format!("more than {MAX_STANZAS} stanzas")));
                }
                let args = parse_args(args)?;
                let mut body_text = Vec::new();
                loop {
                    let start = bytes.len();
                    read_line(input, &mut budget, &mut bytes)?;
                    let line = &bytes[start..bytes.len() - 1];
                    if line.len() > BODY_COLUMNS {
                        return Err(AgeError::header(
                            "a stanza body line is longer than 64 columns",
                        ));
                    }
                    if !line.iter().all(|&c| b64_value(c).is_some()) {
                        return Err(AgeError::header("a stanza body line is not base64"));
                    }
                    body_text.extend_from_slice(line);
                    if line.len() < BODY_COLUMNS {
                        break;
                    }
                }
                let body = b64_decode(&body_text)
                    .ok_or_else(|| AgeError::header("a stanza body is not canonical base64"))?;
                stanzas.push(Stanza { args, body });
            } else if line.starts_with(b"---") {
                let mac_end = start + 3;
                let text = line
                    .strip_prefix(b"--- ")
                    .filter(|t| t.len() == 43)
                    .ok_or_else(|| AgeError::header("malformed MAC line"))?;
                let mac = b64_decode(text)
                    .and_then(|m| <[u8; MAC_LEN]>::try_from(m).ok())
                    .ok_or_else(|| AgeError::header("the MAC is not canonical base64"))?;
                if stanzas.is_empty() {
                    return Err(AgeError::header("the header has no recipient stanza"));
                }
                return Ok(Header {
                    stanzas,
                    bytes,
                    mac_end,
                    mac,
                });
            } else {
                return Err(AgeError::header(
                    "a header line is neither a stanza nor the MAC",
                ));
            }
        }
    }

    /// A new header holding `stanzas`, with its MAC made under `file_key`.
    pub fn seal(stanzas: Vec<Stanza>, file_key: &FileKey) -> Header {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(VERSION_LINE.as_bytes());
        bytes.push(b'\n');
        for stanza in &stanzas {
            stanza.encode(&mut bytes);
        }
        bytes.extend_from_slice(b"---");
        let mac_end = bytes.len();
        let mac = crypto::hmac_sha256(&file_key.mac_key()[..], &bytes);
        bytes.push(b' ');
        bytes.extend_from_slice(b64_encode(&mac).as_bytes());
        bytes.push(b'\n');
        Header {
            stanzas,
            bytes,
            mac_end,
            mac,
        }
    }

    /// The header as encoded, from the version line to the MAC line's LF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the MAC verifies under `file_key` (constant time).
    pub fn mac_matches(&self, file_key: &FileKey) -> bool {
        crypto::hmac_verify(
            &file_key.mac_key()[..],
            &self.bytes[..self.mac_end],
            &self.mac,
        )
    }
}

/// Splits a stanza's argument text at single spaces: at least one
/// argument, none empty, each made of visible ASCII.
fn parse_args(text: &[u8]) -> Result<Vec<String>, AgeError> {
    let mut args = Vec::new();
    for arg in text.split(|&c| c == b' ') {
        if arg.is_empty() {
            return Err(AgeError::header("a stanza has an empty argument"));
        }
        if !arg.iter().all(|c| (0x21..=0x7e).contains(c)) {
            return Err(AgeError::header(
                "a stanza argument has an invalid character",
            ));
        }
        args.push(String::from_utf8_lossy(arg).into_owned());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_header_parses_back_with_a_valid_mac() {
        let key = FileKey::from_bytes([7; 16]);
        for body_len in [0usize, 1, 32, 47, 48, 96, 100] {
            let stanza = Stanza {
                args: vec!["test".into(), "a".into()],
                body: vec![9; body_len],
            };
            let header = Header::seal(vec![stanza.clone()], &key);
            let mut input = header.as_bytes();
            let back = Header::read(&mut input).unwrap();
            assert!(input.is_empty());
            assert_eq!(back.stanzas, vec![stanza]);
            assert!(back.mac_matches(&key));
            assert!(!back.mac_matches(&FileKey::from_bytes([8; 16])));
        }
    }

    /// A header of `stanzas` copies of one X25519-shaped stanza, then `tail`.
    fn header_text(stanzas: usize, tail: &str) -> Vec<u8> {
        let stanza = "-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n\
                      EmECAEcKN+n/Vs9SbWiV+Hu0r+E8R77DdWYyd83nw7U\n";
        let mut text = format!("{VERSION_LINE}\n").into_bytes();
        for _ in 0..stanzas {
            text.extend_from_slice(stanza.as_bytes());
        }
        text.extend_from_slice(tail.as_bytes());
        text
    }

    const MAC: &str = "--- Vn+54jqiiUCE+WZcEVY3f1sqHjlu/z1LCQ/T7Xm7qI0\n";

    #[test]
    fn max_stanzas_parse_and_one_more_is_refused_before_the_rest_is_read() {
        let at_limit = header_text(MAX_STANZAS, MAC);
        assert_eq!(
            Header::read(&mut &at_limit[..]).unwrap().stanzas.len(),
            MAX_STANZAS
        );
        // One more, and no MAC line after it: refused at the stanza count.
        let over = header_text(MAX_STANZAS + 1, "");
        let refused = Header::read(&mut &over[..]).unwrap_err();
        assert_eq!(
            refused,
            AgeError::header(format!("more than {MAX_STANZAS} stanzas"))
        );
    }

    #[test]
    fn a_line_past_the_header_bound_is_refused_without_reading_on() {
        let mut text = header_text(1, "-> X25519 ");
        let head = text.len();
        // Far more than the bound, with no line end: only the bound is read.
        text.resize(2 * MAX_HEADER_LEN, b'A');
        let mut input = &text[..];
        let refused = Header::read(&mut input).unwrap_err();
        assert_eq!(
            refused,
            AgeError::header(format!("the header is longer than {MAX_HEADER_LEN} bytes"))
        );
        let read = text.len() - input.len();
        assert!(
            read <= MAX_HEADER_LEN + 1,
            "read {read} bytes (header starts {head} long)"
        );
    }

    #[test]
    fn a_stanza_body_line_over_64_columns_is_refused() {
        let body = "A".repeat(BODY_COLUMNS + 1);
        let text = header_text(0, &format!("-> X25519 abc\n{body}\n\n{MAC}"));
        assert_eq!(
            Header::read(&mut &text[..]).unwrap_err(),
            AgeError::header("a stanza body line is longer than 64 columns")
        );
    }
}
