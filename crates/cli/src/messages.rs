//! Messages for people on stderr: one line each, prefixed with the program
//! name, with every control character made visible.
//!
//! Messages quote file names, and a file name may hold any byte but `/` and
//! NUL: a name with a newline would otherwise start a line of its own that
//! reads like a message of ours (`bad\ncryptstream: all files verified`),
//! and an escape sequence could rewrite what the terminal shows. So the
//! whole line is escaped, not only the parts known to come from outside.

use std::borrow::Cow;
use std::fmt::{Display, Write as _};
use std::io::Write as _;

/// What every message line starts with.
const PREFIX: &str = "cryptstream: ";

/// `text` with every control character (`char::is_control`: C0, DEL and
/// C1) replaced by a visible escape: `\n`, `\r` and `\t` by name, other
/// ASCII controls as `\x1b`, and the rest as `\u{85}`. Everything else,
/// letters of any script and the backslash included, is kept as is.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_ascii_control() => {
                // Writing to a String cannot fail.
                let _ = write!(escaped, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Prints `cryptstream: LINE` on stderr as one line: something failed.
pub fn error(line: impl Display) {
    say(line);
}

/// Prints `cryptstream: LINE` on stderr as one line: something worth
/// knowing that is not a failure (a skipped file, a retried task).
pub fn note(line: impl Display) {
    say(line);
}

/// Writes one escaped line to stderr in a single write. A stderr that
/// cannot be written to is not worth a panic: the exit code still tells.
fn say(line: impl Display) {
    let text = line.to_string();
    let mut out = String::with_capacity(PREFIX.len() + text.len() + 1);
    out.push_str(PREFIX);
    out.push_str(&escape_controls(&text));
    out.push('\n');
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// `count` with its noun in the right number: "1 file", "2 files",
/// "0 files".
pub fn count(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// A Unix time as RFC 3339 in UTC (`2026-11-30T01:50:00Z`, with the
/// fraction of a second when `nanos` is not zero). A time outside the
/// range people write dates in (years -9999 to 9999) is shown as seconds.
pub fn rfc3339(seconds: i64, nanos: u32) -> String {
    let nanos = i32::try_from(nanos).unwrap_or(0);
    match jiff::Timestamp::new(seconds, nanos) {
        Ok(time) => time.to_string(),
        Err(_) => format!("{seconds}.{nanos:09} s since the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::escape_controls;
    use std::borrow::Cow;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_467_400, 0), "2025-11-30T01:50:00Z");
        assert_eq!(super::rfc3339(-1, 500_000_000), "1969-12-31T23:59:59.5Z");
        assert_eq!(
            super::rfc3339(i64::MAX, 0),
            "9223372036854775807.000000000 s since the epoch"
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(super::count(0, "file", "files"), "0 files");
        assert_eq!(super::count(1, "file", "files"), "1 file");
        assert_eq!(super::count(8, "entry", "entries"), "8 entries");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "dir/naïve файл 名前.cst: authentication failed \\ ok";
        assert!(matches!(escape_controls(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn whitespace_controls_are_named() {
        assert_eq!(escape_controls("a\nb\rc\td"), "a\\nb\\rc\\td");
    }

    #[test]
    fn other_ascii_controls_are_hex() {
        assert_eq!(escape_controls("\x1b[2Jx\x7f\0"), "\\x1b[2Jx\\x7f\\x00");
    }

    #[test]
    fn c1_controls_are_unicode_escapes() {
        assert_eq!(escape_controls("a\u{85}b\u{9b}c"), "a\\u{85}b\\u{9b}c");
    }

    #[test]
    fn non_ascii_letters_and_backslashes_stay() {
        assert_eq!(escape_controls("é\\n\nü"), "é\\n\\nü");
    }

    #[test]
    fn an_escaped_line_has_no_line_break() {
        let escaped = escape_controls("bad\nname.cst\r\n\u{2028}");
        assert_eq!(escaped.lines().count(), 1);
    }
}
