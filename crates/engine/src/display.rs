//! Paths in human messages, with control characters made visible so that
//! a file name cannot forge a line of output.

use std::fmt;
use std::path::Path;

/// Displays a path with every control character escaped (`\n`, `\t`,
/// `\x1b`...), other characters as `Path::display` shows them.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string_lossy();
        for c in text.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let shown = Shown(Path::new("a\nb\t\u{1b}[31mé")).to_string();
        assert_eq!(shown, "a\\nb\\t\\u{1b}[31mé");
        assert!(!shown.contains('\n'));
    }
}
