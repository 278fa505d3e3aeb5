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

/// A Unix time in UTC as (year, month, day, hour, minute, second): the
/// civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn utc_fields(seconds: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;
    use std::borrow::Cow;

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
