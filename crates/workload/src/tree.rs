//! Where each generated file goes.

use std::path::PathBuf;

/// The deepest tree [`crate::generate`] makes.
pub const MAX_DEPTH: u32 = 16;

/// The shape of a generated tree.
///
/// With depth `D`, files sit only in the leaf folders, `D` levels below the
/// root. Every folder has up to `fanout` subfolders named `d00`, `d01`...,
/// where `fanout` is the smallest number (at least 2) whose power `D + 1`
/// reaches the file count, so folders and leaves hold about the same number
/// of entries. Files are dealt to the leaves in index order, `per_leaf`
/// consecutive files to each: with 10 files and depth 2, the fanout is 3 and
/// files 0 and 1 go to `d00/d00`, 2 and 3 to `d00/d01`, and so on. File `i`
/// is named `f` + `i` zero-padded to at least 6 digits, so names sort in
/// index order.
#[derive(Clone, Debug)]
pub(crate) struct TreeLayout {
    depth: u32,
    fanout: u64,
    per_leaf: u64,
    dir_width: usize,
    file_width: usize,
    extension: &'static str,
}

/// Digits of `n` in base 10.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl TreeLayout {
    /// The layout of `count` files `depth` levels deep (`depth <= MAX_DEPTH`).
    pub(crate) fn new(count: u64, depth: u32, extension: &'static str) -> Self {
        let levels = depth + 1;
        let reaches = |f: u64| !matches!(f.checked_pow(levels), Some(p) if p < count);
        // Start from the float root, then settle it with exact integer checks.
        let mut fanout = ((count as f64).powf(1.0 / f64::from(levels)).ceil() as u64).max(2);
        while !reaches(fanout) {
            fanout += 1;
        }
        while fanout > 2 && reaches(fanout - 1) {
            fanout -= 1;
        }
        let leaves = fanout.saturating_pow(depth);
        Self {
            depth,
            fanout,
            per_leaf: count.div_ceil(leaves).max(1),
            dir_width: digits(fanout - 1).max(2),
            file_width: digits(count.saturating_sub(1)).max(6),
            extension,
        }
    }

    /// The folders of the leaf that holds file `index`, outermost first.
    fn leaf_dirs(&self, index: u64) -> impl Iterator<Item = String> + '_ {
        let leaf = index / self.per_leaf;
        (0..self.depth).map(move |level| {
            let place = self.fanout.saturating_pow(self.depth - 1 - level);
            let digit = (leaf / place) % self.fanout;
            format!("d{digit:0width$}", width = self.dir_width)
        })
    }

    /// The leaf folder of file `index`, relative to the root.
    pub(crate) fn dir_of(&self, index: u64) -> PathBuf {
        self.leaf_dirs(index).collect()
    }

    /// The path of file `index`, relative to the root.
    pub(crate) fn path_of(&self, index: u64) -> PathBuf {
        let mut path = self.dir_of(index);
        path.push(format!(
            "f{index:0width$}.{ext}",
            width = self.file_width,
            ext = self.extension
        ));
        path
    }

    /// The first file index of every leaf that holds files, in order.
    pub(crate) fn leaf_starts(&self, count: u64) -> impl Iterator<Item = u64> {
        (0..count).step_by(usize::try_from(self.per_leaf).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_tree_names_sort_by_index() {
        let layout = TreeLayout::new(100, 0, "bin");
        assert_eq!(layout.path_of(0), PathBuf::from("f000000.bin"));
        assert_eq!(layout.path_of(99), PathBuf::from("f000099.bin"));
        let wide = TreeLayout::new(10_000_000, 0, "txt");
        assert_eq!(wide.path_of(42), PathBuf::from("f0000042.txt"));
    }

    #[test]
    fn ten_files_two_deep() {
        let layout = TreeLayout::new(10, 2, "bin");
        assert_eq!(layout.fanout, 3);
        assert_eq!(layout.path_of(0), PathBuf::from("d00/d00/f000000.bin"));
        assert_eq!(layout.path_of(1), PathBuf::from("d00/d00/f000001.bin"));
        assert_eq!(layout.path_of(2), PathBuf::from("d00/d01/f000002.bin"));
        assert_eq!(layout.path_of(9), PathBuf::from("d01/d01/f000009.bin"));
        assert_eq!(layout.leaf_starts(10).collect::<Vec<_>>(), [0, 2, 4, 6, 8]);
    }

    #[test]
    fn every_file_is_exactly_depth_deep_and_unique() {
        for (count, depth) in [(1, 3), (2, 1), (5000, 2), (1000, 1), (7, 16), (100, 5)] {
            let layout = TreeLayout::new(count, depth, "bin");
            let mut seen = std::collections::HashSet::new();
            for i in 0..count {
                let path = layout.path_of(i);
                assert_eq!(path.components().count(), depth as usize + 1);
                assert!(seen.insert(path));
            }
            assert!(!matches!(layout.fanout.checked_pow(depth + 1), Some(p) if p < count));
        }
    }
}
