//! What the inputs of `decrypt` and `verify` ask for, read from their
//! headers before any secret is asked for: a key file (and its id), a
//! passphrase, an age identity or an age passphrase.
//!
//! The header decides what to ask for, as age does: a file sealed with a
//! key file never brings up a passphrase prompt, and an age file for a
//! recipient names `-i`. Only the first [`MAX_EXAMINED`] candidate files
//! are read, so a large tree costs a bounded number of small reads.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cryptstream_engine::{Direction, SUFFIX};
use cryptstream_format::Envelope;
use cryptstream_format::{Header, KeyId, KeySource, MAX_HEADER_LEN};

/// Candidate files whose headers are read at most, over all inputs.
pub const MAX_EXAMINED: usize = 64;

/// The most bytes read from the front of a file: enough for a native
/// header and for the header of an age file with a few post-quantum
/// recipients (each stanza is about 1.6 KiB).
const PREFIX_LEN: u64 = 64 * 1024;

/// What one encrypted input needs to be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// A cryptstream file sealed with the key file of this id (`-k`).
    KeyFile(KeyId),
    /// A cryptstream file sealed with a passphrase.
    Passphrase,
    /// An age file for recipients only (`-i`): these stanza types.
    AgeIdentity(Vec<String>),
    /// An age file sealed with a passphrase (an scrypt stanza).
    AgePassphrase,
}

impl Need {
    /// Whether a passphrase opens the file.
    pub fn is_passphrase(&self) -> bool {
        matches!(self, Need::Passphrase | Need::AgePassphrase)
    }

    /// What to give when nothing was given, in words (after the file name).
    pub fn missing(&self) -> String {
        match self {
            Need::KeyFile(id) => {
                format!("encrypted with key file id {id}: give the key file with -k FILE")
            }
            Need::AgeIdentity(kinds) => format!(
                "an age file for {} recipients: give the identity file with -i FILE",
                kinds.join(", ")
            ),
            Need::Passphrase | Need::AgePassphrase => {
                "encrypted with a passphrase: give it with --passphrase-file FILE".to_string()
            }
        }
    }
}

/// The needs of the first [`MAX_EXAMINED`] encrypted files found in
/// `inputs` (files, and the files below directories, walked in name order
/// without following links). Files that cannot be read, or that hold no
/// header either format recognises, are left out: the run reports them.
pub fn needs_of(inputs: &[&Path], direction: Direction) -> Vec<(PathBuf, Need)> {
    let mut found = Vec::new();
    let mut budget = MAX_EXAMINED;
    for input in inputs {
        collect(input, direction, true, &mut budget, &mut found);
    }
    found
}

/// Visits `path`, following it only when it was named on the command
/// line (`named`), as the plan does.
fn collect(
    path: &Path,
    direction: Direction,
    named: bool,
    budget: &mut usize,
    found: &mut Vec<(PathBuf, Need)>,
) {
    if *budget == 0 {
        return;
    }
    let meta = if named {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    let Ok(meta) = meta else { return };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        // Sorted as names (bytes), not as paths: a tree of 20,000 files
        // sorted by path components cost more than the files examined.
        // Only the first names are needed in order: the smallest
        // `MAX_EXAMINED` are picked out and sorted first, the rest only
        // when those did not use up the budget.
        let mut names: Vec<std::ffi::OsString> =
            entries.filter_map(|e| Some(e.ok()?.file_name())).collect();
        let split = MAX_EXAMINED.min(names.len());
        if split < names.len() {
            names.select_nth_unstable(split);
        }
        let (first, rest) = names.split_at_mut(split);
        first.sort_unstable();
        for name in first.iter() {
            if *budget == 0 {
                return;
            }
            collect(&path.join(name), direction, false, budget, found);
        }
        if *budget > 0 {
            rest.sort_unstable();
        }
        for name in rest.iter() {
            if *budget == 0 {
                return;
            }
            collect(&path.join(name), direction, false, budget, found);
        }
        return;
    }
    if !meta.is_file() {
        return;
    }
    let candidate = named
        || direction == Direction::Verify
        || path.extension().is_some_and(|e| {
            let e = format!(".{}", e.to_string_lossy());
            e == SUFFIX || e == cryptstream_age::AgeEnvelope::new().naming().suffix
        });
    if !candidate {
        return;
    }
    *budget -= 1;
    // Without blocking: a FIFO put in place of the file after the check
    // above must not stall the run.
    let opened = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let Ok(file) = opened else {
        return;
    };
    // Room for the whole prefix up front: one read for a small file
    // (and one that says end of file), not a read per doubling.
    let room = PREFIX_LEN.min(meta.len()) as usize + 1;
    let mut prefix = Vec::with_capacity(room);
    if file.take(PREFIX_LEN).read_to_end(&mut prefix).is_err() {
        return;
    }
    if let Some(need) = need_of(&prefix) {
        found.push((path.to_path_buf(), need));
    }
}

/// What the file that starts with `prefix` needs, or `None` when neither
/// a cryptstream nor an age header can be read from it.
pub fn need_of(prefix: &[u8]) -> Option<Need> {
    use cryptstream_format::Processing;
    if let Some(processing) = cryptstream_age::AgeEnvelope::new().detect(prefix) {
        let mut input: Box<dyn std::io::BufRead> = match processing {
            Processing::Chunked => Box::new(prefix),
            Processing::InOrder => Box::new(std::io::BufReader::new(
                cryptstream_age::ArmoredReader::new(prefix),
            )),
        };
        let header = cryptstream_age::Header::read(&mut input).ok()?;
        let kinds: Vec<String> = header
            .stanzas
            .iter()
            .map(|s| s.kind().to_string())
            .collect();
        if kinds.iter().any(|k| k == "scrypt") {
            return Some(Need::AgePassphrase);
        }
        let mut distinct = kinds.clone();
        distinct.dedup();
        return Some(Need::AgeIdentity(distinct));
    }
    let header = Header::parse(&prefix[..prefix.len().min(MAX_HEADER_LEN)]).ok()?;
    Some(match header.key_source {
        KeySource::KeyFile(id) => Need::KeyFile(id),
        KeySource::Passphrase { .. } => Need::Passphrase,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first bytes of an age file whose one stanza is of type `kind`.
    fn age_header(kind: &str) -> String {
        format!(
            "age-encryption.org/v1\n-> {kind} arg\nAAAA\n--- {}\n",
            "A".repeat(43)
        )
    }

    #[test]
    fn the_first_files_in_name_order_are_examined_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        // Created out of order, with a folder among them that sorts
        // inside the examined range and a non-candidate name.
        for i in (0..100).rev() {
            let name = format!("f{i:03}.age");
            std::fs::write(dir.path().join(name), age_header(&format!("k{i:03}"))).unwrap();
        }
        std::fs::create_dir(dir.path().join("f010.d")).unwrap();
        std::fs::write(
            dir.path().join("f010.d").join("inner.age"),
            age_header("inner"),
        )
        .unwrap();
        std::fs::write(dir.path().join("f005.txt"), age_header("skipped")).unwrap();
        let found = needs_of(&[dir.path()], Direction::Decrypt);
        let kinds: Vec<String> = found
            .iter()
            .map(|(_, need)| match need {
                Need::AgeIdentity(kinds) => kinds.join(","),
                other => panic!("{other:?}"),
            })
            .collect();
        let mut expected: Vec<String> = (0..=10).map(|i| format!("k{i:03}")).collect();
        expected.push("inner".into());
        expected.extend((11..63).map(|i| format!("k{i:03}")));
        assert_eq!(kinds, expected);
    }
}
