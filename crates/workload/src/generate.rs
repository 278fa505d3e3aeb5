//! Writing a workload to disk on several threads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use thiserror::Error;

use crate::content::Content;
use crate::dist::SizeDist;
use crate::rng::{Purpose, Xoshiro256PlusPlus};
use crate::tree::{TreeLayout, MAX_DEPTH};

/// Bytes made and written at a time; the content of a file is defined block
/// by block, so this size is part of what a seed means and never changes.
pub const BLOCK_SIZE: u64 = 1 << 20;

/// Blocks per task: a file larger than this is split into segments of this
/// many blocks that different threads write at their offsets.
const SEGMENT_BLOCKS: u64 = 64;

/// Bytes per task of a large file.
const SEGMENT_SIZE: u64 = SEGMENT_BLOCKS * BLOCK_SIZE;

/// Everything that decides a workload's names and bytes.
///
/// Two calls of [`generate`] with equal specs write identical trees, whatever
/// the number of threads.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    /// How many files.
    pub count: u64,
    /// The size of every file when `dist` is [`SizeDist::Fixed`], in bytes.
    pub size: u64,
    /// How sizes are spread.
    pub dist: SizeDist,
    /// What the bytes look like.
    pub content: Content,
    /// How many folder levels above the files (0: all files in the root).
    pub depth: u32,
    /// The seed every size and byte derives from.
    pub seed: u64,
}

impl WorkloadSpec {
    /// The size of file `index` in bytes.
    pub fn file_size(&self, index: u64) -> u64 {
        match self.dist {
            SizeDist::Fixed => self.size,
            dist => {
                let mut rng = Xoshiro256PlusPlus::derive(Purpose::FileSize, self.seed, [index, 0]);
                dist.sample(self.size, &mut rng)
            }
        }
    }

    /// The bytes of all files together (saturating at `u64::MAX`).
    pub fn total_bytes(&self) -> u64 {
        match self.dist {
            SizeDist::Fixed => self.size.saturating_mul(self.count),
            _ => (0..self.count).fold(0u64, |sum, i| sum.saturating_add(self.file_size(i))),
        }
    }

    /// The path of file `index` relative to the workload's root; see
    /// [`generate`] for the tree's shape.
    pub fn relative_path(&self, index: u64) -> PathBuf {
        self.layout().path_of(index)
    }

    fn layout(&self) -> TreeLayout {
        TreeLayout::new(self.count, self.depth, self.content.extension())
    }
}

/// What to do when the target folder already has entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse with [`GenError::NotEmpty`]: the safe default.
    Refuse,
    /// Write into it, replacing files with the same names and leaving every
    /// other entry alone.
    WriteInto,
}

/// What [`generate`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct GenReport {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time, folders included.
    pub seconds: f64,
    /// Megabytes (10^6 bytes) written per second.
    pub mb_per_s: f64,
}

/// Why a workload could not be generated.
#[derive(Debug, Error)]
pub enum GenError {
    /// The target folder has entries and [`Existing::Refuse`] was given.
    #[error("{} is not empty: choose an empty or new folder, or allow writing into it (--force)", dir.display())]
    NotEmpty {
        /// The target folder.
        dir: PathBuf,
    },
    /// The target exists but is not a folder.
    #[error("{} exists and is not a folder", path.display())]
    NotADirectory {
        /// The target.
        path: PathBuf,
    },
    /// The depth is above [`MAX_DEPTH`].
    #[error("depth {depth} is too deep (at most {MAX_DEPTH})")]
    TooDeep {
        /// The depth asked for.
        depth: u32,
    },
    /// A file-system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create folder", "write"...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
}

/// One task: file `file`, blocks from segment `segment` on.
#[derive(Clone, Copy)]
struct Task {
    file: u64,
    segment: u64,
}

/// Writes the workload `spec` into `dir` with `workers` threads, calling
/// `progress` with the bytes of every block written (from any thread).
///
/// `dir` is created if missing. Files are laid out as described on
/// [`WorkloadSpec::relative_path`]: `depth` levels of folders `dNN`, files
/// `fNNNNNN.bin` (or `.txt` for text) dealt to the leaves in index order.
/// The size of file `i` derives from `(seed, i)` and block `b` of its bytes
/// from `(seed, i, b)` ([`BLOCK_SIZE`] bytes a block), so small files are
/// one task each, large files are split across threads, and the result is
/// the same for any `workers`.
///
/// # Errors
/// [`GenError::NotEmpty`] when `dir` has entries and `existing` is
/// [`Existing::Refuse`]; [`GenError::TooDeep`]; [`GenError::NotADirectory`];
/// [`GenError::Io`] naming the path when a folder or file cannot be made or
/// written (on error, the files written so far stay).
pub fn generate(
    dir: &Path,
    spec: &WorkloadSpec,
    workers: usize,
    existing: Existing,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenReport, GenError> {
    let start = Instant::now();
    if spec.depth > MAX_DEPTH {
        return Err(GenError::TooDeep { depth: spec.depth });
    }
    prepare_root(dir, existing)?;
    let layout = spec.layout();
    for first in layout.leaf_starts(spec.count) {
        let leaf = dir.join(layout.dir_of(first));
        fs::create_dir_all(&leaf).map_err(io_error("create folder", &leaf))?;
    }

    // Files of more than one segment are created here, at full length, so
    // that any thread can write any of their segments.
    let mut extra_segments = Vec::new();
    let mut bytes = 0u64;
    let fixed_and_small = spec.dist == SizeDist::Fixed && spec.size <= SEGMENT_SIZE;
    if fixed_and_small {
        bytes = spec.total_bytes();
    } else {
        for file in 0..spec.count {
            let size = spec.file_size(file);
            bytes = bytes.saturating_add(size);
            if size > SEGMENT_SIZE {
                let path = dir.join(layout.path_of(file));
                let out = File::create(&path).map_err(io_error("create", &path))?;
                out.set_len(size).map_err(io_error("size", &path))?;
                extra_segments
                    .extend((1..size.div_ceil(SEGMENT_SIZE)).map(|segment| Task { file, segment }));
            }
        }
    }

    let tasks = spec.count + extra_segments.len() as u64;
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<GenError>> = Mutex::new(None);
    let threads = workers.clamp(1, usize::try_from(tasks).unwrap_or(usize::MAX).max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut buf = vec![0u8; BLOCK_SIZE as usize];
                while !failed.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let task = if n < spec.count {
                        Task {
                            file: n,
                            segment: 0,
                        }
                    } else if let Some(&task) = extra_segments.get((n - spec.count) as usize) {
                        task
                    } else {
                        break;
                    };
                    let path = dir.join(layout.path_of(task.file));
                    if let Err(error) = write_task(spec, task, &path, &mut buf, progress) {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(error);
                    }
                }
            });
        }
    });
    if let Some(error) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(error);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(GenReport {
        files: spec.count,
        bytes,
        seconds,
        mb_per_s: if seconds > 0.0 {
            bytes as f64 / 1e6 / seconds
        } else {
            0.0
        },
    })
}

/// Makes sure `dir` is a folder that may be written into.
fn prepare_root(dir: &Path, existing: Existing) -> Result<(), GenError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if existing == Existing::Refuse && entries.next().is_some() {
                return Err(GenError::NotEmpty {
                    dir: dir.to_owned(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(io_error("create folder", dir))
        }
        Err(_) if dir.exists() && !dir.is_dir() => Err(GenError::NotADirectory {
            path: dir.to_owned(),
        }),
        Err(e) => Err(io_error("read folder", dir)(e)),
    }
}

/// Writes one task: a whole small file, or one segment of a large one that
/// [`generate`] created beforehand.
fn write_task(
    spec: &WorkloadSpec,
    task: Task,
    path: &Path,
    buf: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), GenError> {
    let size = spec.file_size(task.file);
    let first_block = task.segment * SEGMENT_BLOCKS;
    let end = size.min((task.segment + 1) * SEGMENT_SIZE);
    if size <= SEGMENT_SIZE {
        let mut out = File::create(path).map_err(io_error("create", path))?;
        for block in 0..size.div_ceil(BLOCK_SIZE) {
            let len = (size - block * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
            spec.content
                .fill_block(spec.seed, task.file, block, &mut buf[..len]);
            out.write_all(&buf[..len])
                .map_err(io_error("write", path))?;
            progress(len as u64);
        }
    } else {
        let out = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error("open", path))?;
        let mut offset = first_block * BLOCK_SIZE;
        let mut block = first_block;
        while offset < end {
            let len = (end - offset).min(BLOCK_SIZE) as usize;
            spec.content
                .fill_block(spec.seed, task.file, block, &mut buf[..len]);
            out.write_all_at(&buf[..len], offset)
                .map_err(io_error("write", path))?;
            progress(len as u64);
            offset += len as u64;
            block += 1;
        }
    }
    Ok(())
}

/// Wraps an `io::Error` with what was being done to which path.
fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> GenError + 'a {
    move |source| GenError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(count: u64, size: u64) -> WorkloadSpec {
        WorkloadSpec {
            count,
            size,
            dist: SizeDist::Fixed,
            content: Content::Random,
            depth: 0,
            seed: 1,
        }
    }

    /// Every regular file under `root`: relative path -> bytes.
    fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in fs::read_dir(dir).expect("readable test folder") {
                let path = entry.expect("readable entry").path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).expect("under root").to_owned();
                    out.insert(rel, fs::read(&path).expect("readable test file"));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn hash_tree(root: &Path) -> String {
        crate::tree_digest(root).expect("readable test tree")
    }

    fn run(dir: &Path, spec: &WorkloadSpec, workers: usize) -> GenReport {
        generate(dir, spec, workers, Existing::Refuse, &|_| {}).expect("generation succeeds")
    }

    #[test]
    fn same_seed_same_tree_any_thread_count() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut spec = spec(40, 3000);
        spec.dist = SizeDist::Uniform {
            min: 0,
            max: 3 * BLOCK_SIZE,
        };
        spec.depth = 2;
        spec.content = Content::Text;
        run(&tmp.path().join("a"), &spec, 1);
        run(&tmp.path().join("b"), &spec, 4);
        let a = hash_tree(&tmp.path().join("a"));
        assert_eq!(a, hash_tree(&tmp.path().join("b")));
        spec.seed = 2;
        run(&tmp.path().join("c"), &spec, 2);
        let c = hash_tree(&tmp.path().join("c"));
        assert_ne!(a, c);
        // Same names, different bytes.
        let names = |d: &str| {
            read_tree(&tmp.path().join(d))
                .into_keys()
                .collect::<Vec<_>>()
        };
        assert_eq!(names("a"), names("c"));
    }

    #[test]
    fn seed_pins_the_bytes_forever() {
        // A change to this hash changes every workload ever generated: only
        // update it on purpose.
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut spec = spec(5, 5000);
        spec.seed = 7;
        run(tmp.path(), &spec, 2);
        assert_eq!(
            hash_tree(tmp.path()),
            "fbc4d4a512eff2fb88365a8ce33c05f3a2ebfb50eafa5ecac320831bda006fbd"
        );
    }

    #[test]
    fn count_and_fixed_size_are_exact() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let report = run(tmp.path(), &spec(25, 4097), 3);
        assert_eq!((report.files, report.bytes), (25, 25 * 4097));
        let tree = read_tree(tmp.path());
        assert_eq!(tree.len(), 25);
        assert!(tree.values().all(|b| b.len() == 4097));
        assert_eq!(
            tree.keys().next().map(|p| p.to_string_lossy().into_owned()),
            Some("f000000.bin".to_owned())
        );
    }

    #[test]
    fn uniform_sizes_stay_within_bounds() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut spec = spec(200, 0);
        spec.dist = SizeDist::Uniform {
            min: 1024,
            max: 4096,
        };
        let report = run(tmp.path(), &spec, 2);
        let sizes: Vec<u64> = read_tree(tmp.path())
            .values()
            .map(|b| b.len() as u64)
            .collect();
        assert!(sizes.iter().all(|s| (1024..=4096).contains(s)));
        assert!(sizes.iter().any(|&s| s < 1500) && sizes.iter().any(|&s| s > 3600));
        assert_eq!(report.bytes, sizes.iter().sum::<u64>());
        assert_eq!(report.bytes, spec.total_bytes());
    }

    #[test]
    fn lognormal_median_is_about_right() {
        // Sizes only: drawing them needs no files.
        let mut spec = spec(20_001, 0);
        spec.dist = SizeDist::LogNormal { median: 100_000 };
        let mut sizes: Vec<u64> = (0..spec.count).map(|i| spec.file_size(i)).collect();
        sizes.sort_unstable();
        let median = sizes[sizes.len() / 2] as f64;
        assert!((90_000.0..110_000.0).contains(&median), "median {median}");
        // Spread: the quartiles of a log-normal with sigma 1 are at e^±0.674.
        let q3 = sizes[sizes.len() * 3 / 4] as f64 / 100_000.0;
        assert!((1.75..2.15).contains(&q3), "upper quartile ratio {q3}");
    }

    #[test]
    fn depth_is_honoured() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut spec = spec(30, 10);
        spec.depth = 3;
        run(tmp.path(), &spec, 2);
        let tree = read_tree(tmp.path());
        assert_eq!(tree.len(), 30);
        for path in tree.keys() {
            assert_eq!(path.components().count(), 4, "{}", path.display());
        }
        assert_eq!(
            spec.relative_path(0),
            PathBuf::from("d00/d00/d00/f000000.bin")
        );
        spec.depth = MAX_DEPTH + 1;
        let err = generate(
            &tmp.path().join("deep"),
            &spec,
            1,
            Existing::Refuse,
            &|_| {},
        );
        assert!(matches!(err, Err(GenError::TooDeep { .. })));
    }

    #[test]
    fn zeros_are_all_zero_and_text_is_compressible() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut spec = spec(3, 100_000);
        spec.content = Content::Zeros;
        run(&tmp.path().join("z"), &spec, 2);
        let zeros = read_tree(&tmp.path().join("z"));
        assert!(zeros.values().all(|b| b.iter().all(|&x| x == 0)));

        spec.content = Content::Text;
        run(&tmp.path().join("t"), &spec, 2);
        let text = read_tree(&tmp.path().join("t"));
        assert!(text
            .keys()
            .all(|p| p.extension().is_some_and(|e| e == "txt")));
        for bytes in text.values() {
            // Prose uses few distinct bytes and a few hundred distinct words
            // over a 100 kB file; random data uses all 256 bytes.
            let distinct = bytes.iter().collect::<std::collections::HashSet<_>>().len();
            assert!(distinct < 64, "{distinct} distinct bytes");
            let text = std::str::from_utf8(bytes).expect("ASCII text");
            let words = text.split_whitespace().count();
            let distinct_words = text
                .split_whitespace()
                .map(|w| w.trim_end_matches([',', '.']).to_ascii_lowercase())
                .collect::<std::collections::HashSet<_>>()
                .len();
            assert!(
                words > 10_000 && distinct_words < 600,
                "{words} {distinct_words}"
            );
        }
    }

    #[test]
    fn large_files_are_split_and_still_deterministic() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let size = SEGMENT_SIZE + 3 * BLOCK_SIZE + 12345;
        let spec = spec(2, size);
        let written = AtomicU64::new(0);
        let report = generate(tmp.path(), &spec, 4, Existing::Refuse, &|n| {
            written.fetch_add(n, Ordering::Relaxed);
        })
        .expect("generation succeeds");
        assert_eq!(report.bytes, 2 * size);
        assert_eq!(written.load(Ordering::Relaxed), 2 * size);
        // Block 65 (in the second segment) of file 1 is where the content
        // rule says it is.
        let bytes = fs::read(tmp.path().join("f000001.bin")).expect("written");
        assert_eq!(bytes.len() as u64, size);
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        spec.content.fill_block(spec.seed, 1, 65, &mut block);
        let at = (65 * BLOCK_SIZE) as usize;
        assert_eq!(&bytes[at..at + BLOCK_SIZE as usize], &block[..]);
    }

    #[test]
    fn refuses_a_non_empty_folder_unless_told() {
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::write(tmp.path().join("keep.txt"), b"mine").expect("write");
        let spec = spec(2, 10);
        let err = generate(tmp.path(), &spec, 1, Existing::Refuse, &|_| {}).unwrap_err();
        assert!(matches!(err, GenError::NotEmpty { .. }));
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        generate(tmp.path(), &spec, 1, Existing::WriteInto, &|_| {}).expect("allowed");
        assert_eq!(read_tree(tmp.path()).len(), 3);
        assert_eq!(
            fs::read(tmp.path().join("keep.txt")).expect("kept"),
            b"mine"
        );

        let file = tmp.path().join("keep.txt");
        let err = generate(&file, &spec, 1, Existing::WriteInto, &|_| {}).unwrap_err();
        assert!(matches!(err, GenError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn empty_workload_and_empty_files() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let report = run(&tmp.path().join("none"), &spec(0, 10), 2);
        assert_eq!((report.files, report.bytes), (0, 0));
        run(&tmp.path().join("empty"), &spec(3, 0), 2);
        assert!(read_tree(&tmp.path().join("empty"))
            .values()
            .all(Vec::is_empty));
    }
}
