//! Relative names on the wire: checked and normalised before anything is
//! created under the server's root.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::frame::MAX_NAME_LEN;

/// Longest component of a name (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Prefix of the server's partial files; names that start with it are
/// refused so that a client can never address a partial file directly.
pub const PARTIAL_PREFIX: &str = ".cst-part.";

/// A name that is safe to create below a root: relative, `/`-separated
/// components that are neither empty, `.`, nor `..`, no NUL, each at most
/// [`MAX_COMPONENT_LEN`] bytes and the whole at most [`MAX_NAME_LEN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelName {
    /// Normalised bytes: components joined by single `/`.
    bytes: Vec<u8>,
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No component left.
    #[error("empty name")]
    Empty,
    /// Starts with `/`.
    #[error("absolute name")]
    Absolute,
    /// Has a `..` component.
    #[error("name leaves the root (`..`)")]
    ParentComponent,
    /// Holds a NUL byte.
    #[error("name holds a NUL byte")]
    Nul,
    /// Longer than the limits.
    #[error("name too long")]
    TooLong,
    /// A component names a server partial file.
    #[error("name is reserved (starts with {PARTIAL_PREFIX})")]
    Reserved,
}

impl RelName {
    /// Checks and normalises wire bytes: empty and `.` components are
    /// dropped (`a//./b` is `a/b`); everything else that is not a plain
    /// component is refused.
    ///
    /// # Errors
    /// [`NameError`] naming the reason.
    pub fn parse(bytes: &[u8]) -> Result<RelName, NameError> {
        if bytes.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if bytes.contains(&0) {
            return Err(NameError::Nul);
        }
        if bytes.first() == Some(&b'/') {
            return Err(NameError::Absolute);
        }
        let mut out = Vec::with_capacity(bytes.len());
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" | b"." => continue,
                b".." => return Err(NameError::ParentComponent),
                _ if component.len() > MAX_COMPONENT_LEN => return Err(NameError::TooLong),
                _ if component.starts_with(PARTIAL_PREFIX.as_bytes()) => {
                    return Err(NameError::Reserved)
                }
                _ => {}
            }
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(component);
        }
        if out.is_empty() {
            return Err(NameError::Empty);
        }
        Ok(RelName { bytes: out })
    }

    /// The name of a local relative path (what the client sends).
    ///
    /// # Errors
    /// [`NameError`] as for [`RelName::parse`].
    pub fn from_path(path: &Path) -> Result<RelName, NameError> {
        RelName::parse(path.as_os_str().as_bytes())
    }

    /// The normalised bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The directory part (empty for a name at the root) and the last
    /// component.
    pub fn split_parent(&self) -> (PathBuf, &OsStr) {
        match self.bytes.iter().rposition(|&b| b == b'/') {
            Some(at) => (
                PathBuf::from(OsStr::from_bytes(&self.bytes[..at])),
                OsStr::from_bytes(&self.bytes[at + 1..]),
            ),
            None => (PathBuf::new(), OsStr::from_bytes(&self.bytes)),
        }
    }

    /// For messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_plain_names() {
        assert_eq!(RelName::parse(b"a//./b/").unwrap().as_bytes(), b"a/b");
        assert_eq!(RelName::parse(b"file").unwrap().as_bytes(), b"file");
        assert_eq!(RelName::parse(b"..a/b..").unwrap().as_bytes(), b"..a/b..");
        let name = RelName::parse(b"x/y/z").unwrap();
        let (dir, last) = name.split_parent();
        assert_eq!(dir, Path::new("x/y"));
        assert_eq!(last, "z");
    }

    #[test]
    fn refuses_escapes_and_odd_names() {
        assert_eq!(RelName::parse(b"../x"), Err(NameError::ParentComponent));
        assert_eq!(
            RelName::parse(b"a/../../x"),
            Err(NameError::ParentComponent)
        );
        assert_eq!(RelName::parse(b"/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(RelName::parse(b"a\0b"), Err(NameError::Nul));
        assert_eq!(RelName::parse(b""), Err(NameError::Empty));
        assert_eq!(RelName::parse(b"./."), Err(NameError::Empty));
        assert_eq!(RelName::parse(&[b'a'; 256]), Err(NameError::TooLong));
        assert_eq!(RelName::parse(&[b'a'; 4097]), Err(NameError::TooLong));
        assert_eq!(RelName::parse(b"d/.cst-part.abc"), Err(NameError::Reserved));
    }
}
