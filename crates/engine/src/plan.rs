//! Turning `INPUT OUTPUT` into a list of entries to process, with every
//! refusal decided before any work starts, and the output tree opened
//! through directory descriptors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use cryptstream_format::{Envelope, Naming};
use cryptstream_output::{DirFd, DirFinish, DirIndex, OutputTree, Timestamp, TreeError};
use thiserror::Error;

use crate::display::Shown;

/// What a run does to each file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Plaintext in, `.cst` out.
    Encrypt,
    /// `.cst` in, plaintext out.
    Decrypt,
    /// `.cst` in, nothing out: authenticate every chunk.
    Verify,
}

impl Direction {
    /// The verb, for messages and the JSON summary.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Encrypt => "encrypt",
            Direction::Decrypt => "decrypt",
            Direction::Verify => "verify",
        }
    }
}

/// The file-name suffix of encrypted files.
pub const SUFFIX: &str = ".cst";

/// How the files of a run are named and what a tree walk stores, from the
/// run's envelopes ([`Envelope::naming`]): the sealer's suffix and whether
/// it holds links, and the suffixes a decrypt input may end in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFormat {
    /// The sealing envelope's name, for messages.
    container: &'static str,
    /// How the sealing envelope names files.
    naming: Naming,
    /// The suffixes of every envelope that opens files, in the order they
    /// were added (cryptstream's first).
    opened: Vec<&'static str>,
}

impl OutputFormat {
    /// cryptstream's format alone: `NAME.cst`, links stored as entries.
    pub fn native() -> OutputFormat {
        OutputFormat {
            container: "cryptstream",
            naming: Naming {
                suffix: SUFFIX,
                holds_links: true,
            },
            opened: vec![SUFFIX],
        }
    }

    /// Adds the names of the files `envelope` opens.
    pub fn opening(mut self, envelope: &dyn Envelope) -> OutputFormat {
        let suffix = envelope.naming().suffix;
        if !self.opened.contains(&suffix) {
            self.opened.push(suffix);
        }
        self
    }

    /// New files are named as `envelope` names them (and it opens them).
    pub fn sealing(mut self, envelope: &dyn Envelope) -> OutputFormat {
        self.container = envelope.name();
        self.naming = envelope.naming();
        self.opening(envelope)
    }

    /// The suffix of encrypted names.
    pub fn suffix(&self) -> &'static str {
        self.naming.suffix
    }

    /// Whether links are stored as entries of their own.
    pub fn holds_links(&self) -> bool {
        self.naming.holds_links
    }

    /// "not named *.cst or *.age", for a decrypt input that ends in none
    /// of the suffixes.
    fn unnamed_reason(&self) -> Cow<'static, str> {
        let names: Vec<String> = self.opened.iter().map(|s| format!("*{s}")).collect();
        Cow::Owned(format!("not named {}", names.join(" or ")))
    }

    /// Why a symbolic link is skipped by an encrypt run whose files hold
    /// no links.
    fn link_reason(&self) -> Cow<'static, str> {
        Cow::Owned(format!(
            "symbolic link ({} files hold file contents only)",
            self.container
        ))
    }
}

/// What to do with outputs that already exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse the whole run before starting (the default).
    Refuse,
    /// Replace them (`--force`).
    Force,
    /// Leave them and skip their inputs (`--skip-existing`, to resume).
    SkipExisting,
}

/// What an input entry is, as the walk of an encrypt run found it. (When
/// decrypting, the kind is in each file's authenticated header.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A regular file (or anything opened as one: decrypt and verify inputs).
    File,
    /// A symbolic link, stored as an encrypted entry holding its target.
    Symlink,
    /// A second name of a file met earlier in the same tree; holds the
    /// path, relative to the tree, of the first name.
    HardLink(PathBuf),
}

/// Where one output goes: a name in a directory of the plan's output tree.
#[derive(Clone, Debug)]
pub struct OutputName {
    /// The directory, an index into the output tree (0 is its root).
    pub dir: DirIndex,
    /// The file name in it.
    pub name: OsString,
}

/// One entry to process.
#[derive(Clone, Debug)]
pub struct FileJob {
    /// The file to read.
    pub input: PathBuf,
    /// Where the result goes (`None` for verify).
    pub output: Option<OutputName>,
    /// Path relative to the input root (the file name for a single file).
    pub relative: PathBuf,
    /// Size when planned; the worker re-reads it when it opens the file
    /// unless [`FileJob::looked`] vouches for it.
    pub size: u64,
    /// What the entry is.
    pub source: Source,
    /// What the plan's lookup of a regular file found, so that the worker
    /// need not look it up again when it opens it; `None` where the job
    /// was built without one (a worker process, a test), and then the
    /// worker does.
    pub looked: Option<Looked>,
}

/// A regular file as the plan looked it up (`statx`): with
/// [`FileJob::size`], all that opening it needs to know. An encrypt run
/// checks when it ends that the file it read is still this one, of this
/// size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Looked {
    /// Device and inode number: which file it was.
    pub id: (u64, u64),
    /// Permission bits (the low 12 bits of the mode).
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
}

impl Looked {
    /// What `meta` (of a regular file) says.
    pub fn of(meta: &fs::Metadata) -> Looked {
        Looked {
            id: (meta.dev(), meta.ino()),
            mode: meta.mode() & 0o7777,
            mtime: Timestamp::mtime_of(meta),
        }
    }
}

/// The reason of an entry skipped because `--skip-existing` keeps its
/// output (a resume: the command line counts these rather than listing
/// each one).
pub const KEPT_EXISTING: &str = "output exists (--skip-existing)";

/// Something in the input that is deliberately not processed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    /// The entry.
    pub path: PathBuf,
    /// Why, in words.
    pub reason: Cow<'static, str>,
}

/// A directory of the output tree, as planned.
#[derive(Clone, Debug)]
struct PlannedDir {
    parent: DirIndex,
    name: OsString,
    finish: DirFinish,
}

/// Everything a run will do.
#[derive(Default)]
pub struct Plan {
    /// Entries to process, in walk order.
    pub files: Vec<FileJob>,
    /// Entries left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// Sum of the planned input sizes.
    pub total_bytes: u64,
    /// The output tree, opened (and its directories created, private)
    /// once every refusal has been decided; `None` for verify.
    pub tree: Option<OutputTree>,
    /// Directories to create below the tree's root, in walk order; their
    /// tree indices are their position + 1.
    dirs: Vec<PlannedDir>,
    /// Where the output root is and what it becomes at the end.
    root: Option<(PathBuf, Option<DirFinish>)>,
    /// The output of a killed run that this one took over, with how many
    /// of its files were incomplete and removed (`--skip-existing`).
    pub adopted: Option<usize>,
}

/// Where one output goes, resolved to an open directory.
#[derive(Clone, Debug)]
pub struct Target {
    /// The root of the output tree (hard links are resolved below it).
    pub root: DirFd,
    /// The directory of the output.
    pub dir: DirFd,
    /// The output's file name.
    pub name: OsString,
}

impl Plan {
    /// The open directory and name of `job`'s output; `None` for verify.
    ///
    /// # Errors
    /// When a directory of the tree cannot be opened again.
    pub fn target(&self, job: &FileJob) -> io::Result<Option<Target>> {
        match (&self.tree, &job.output) {
            (Some(tree), Some(output)) => Ok(Some(Target {
                root: tree.root(),
                dir: tree.dir(output.dir)?,
                name: output.name.clone(),
            })),
            _ => Ok(None),
        }
    }

    /// The path of `job`'s output, for messages and checks.
    pub fn output_path(&self, job: &FileJob) -> Option<PathBuf> {
        let (tree, output) = (self.tree.as_ref()?, job.output.as_ref()?);
        Some(
            tree.work_path()
                .join(tree.relative(output.dir))
                .join(&output.name),
        )
    }

    /// The output's path relative to the tree root (what a worker process
    /// opens below the root it was given).
    pub fn output_relative(&self, job: &FileJob) -> Option<PathBuf> {
        let (tree, output) = (self.tree.as_ref()?, job.output.as_ref()?);
        Some(tree.relative(output.dir).join(&output.name))
    }

    /// Whether the plan mirrors a directory tree (rather than one file).
    pub fn is_tree(&self) -> bool {
        matches!(self.root, Some((_, Some(_))))
    }

    /// Where the output tree is while the run writes it (what a worker
    /// process opens): its stage when it is staged, its root otherwise.
    pub fn output_root(&self) -> Option<&Path> {
        self.tree.as_ref().map(OutputTree::work_path)
    }

    /// Whether the output tree is staged ([`OutputTree::open_staged`]).
    pub fn output_staged(&self) -> bool {
        self.tree.as_ref().is_some_and(OutputTree::is_staged)
    }

    /// Planned output path of a job, before the tree is opened.
    fn planned_output_path(&self, job: &FileJob) -> Option<PathBuf> {
        let (root, _) = self.root.as_ref()?;
        let output = job.output.as_ref()?;
        let mut path = root.clone();
        let mut chain = Vec::new();
        let mut dir = output.dir;
        while dir != 0 {
            let planned = &self.dirs[dir - 1];
            chain.push(&planned.name);
            dir = planned.parent;
        }
        for name in chain.into_iter().rev() {
            path.push(name);
        }
        path.push(&output.name);
        Some(path)
    }
}

/// Why a run is refused before it starts.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The input cannot be read.
    #[error("{}: {source}", Shown(path))]
    Input {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The input is neither a regular file nor a directory.
    #[error("{}: not a regular file or directory", Shown(.0))]
    NotFileOrDir(PathBuf),
    /// OUTPUT lies inside the INPUT directory.
    #[error(
        "{}: output is inside the input directory {}; choose an output outside it",
        Shown(output),
        Shown(input)
    )]
    OutputInsideInput {
        /// The output.
        output: PathBuf,
        /// The input.
        input: PathBuf,
    },
    /// INPUT and OUTPUT name the same file.
    #[error("{}: input and output are the same file", Shown(.0))]
    SameFile(PathBuf),
    /// A directory input needs a directory output.
    #[error("{}: exists and is not a directory (the input is a directory)", Shown(.0))]
    OutputNotDir(PathBuf),
    /// Outputs exist and neither --force nor --skip-existing was given.
    #[error("{}: output exists{}; use --force to replace or --skip-existing to keep", Shown(first), if *count > 1 { format!(" (and {} more)", count - 1) } else { String::new() })]
    OutputExists {
        /// The first existing output.
        first: PathBuf,
        /// How many exist.
        count: usize,
    },
    /// The output tree could not be made as planned.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Every entry found in the input was skipped: the run would process
    /// nothing it was given. Nothing has been created.
    #[error(
        "{}: nothing to {}: {}",
        Shown(input),
        direction.name(),
        count_entries(skipped.len(), "skipped")
    )]
    NothingToProcess {
        /// The input named on the command line.
        input: PathBuf,
        /// What the run was asked to do.
        direction: Direction,
        /// Each skipped entry and why (for the caller to list).
        skipped: Vec<Skipped>,
    },
    /// OUTPUT ends in `/`, so it names a directory, and there is none.
    #[error(
        "{}: no such directory (a trailing slash names a directory: create it first, or drop the slash to name a file)",
        Shown(.0)
    )]
    MissingOutputDir(PathBuf),
}

/// "1 entry skipped", "2 entries skipped".
fn count_entries(count: usize, what: &str) -> String {
    let noun = if count == 1 { "entry" } else { "entries" };
    format!("{count} {noun} {what}")
}

/// Whether `path` is spelled with a trailing slash (`newdir/`), which
/// names a directory whether or not one exists.
pub fn names_directory(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    bytes.len() > 1 && bytes.ends_with(b"/")
}

fn input_err(path: &Path) -> impl FnOnce(io::Error) -> PlanError + '_ {
    move |source| PlanError::Input {
        path: path.to_path_buf(),
        source,
    }
}

/// The output name of `name` for `direction` (encrypted names get the
/// suffix of `format`), or `None` when a decrypt input ends neither in
/// `.cst` nor in `.age`.
pub fn output_name(direction: Direction, format: &OutputFormat, name: &OsStr) -> Option<OsString> {
    match direction {
        Direction::Encrypt => {
            let mut out = name.to_os_string();
            out.push(format.suffix());
            Some(out)
        }
        Direction::Decrypt | Direction::Verify => {
            use std::os::unix::ffi::OsStrExt;
            let stem = format
                .opened
                .iter()
                .find_map(|suffix| name.as_bytes().strip_suffix(suffix.as_bytes()))
                .filter(|s| !s.is_empty())?;
            Some(OsStr::from_bytes(stem).to_os_string())
        }
    }
}

/// Makes `path` absolute and resolves symlinks in the longest prefix that
/// exists, so that an output that does not exist yet can still be compared
/// with the input.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.clone();
    let mut rest = Vec::new();
    while fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = fs::canonicalize(&existing)?;
    for part in rest.into_iter().rev() {
        resolved.push(part);
    }
    // Lexically drop `.`/`..` left in the part that does not exist yet.
    let mut clean = PathBuf::new();
    for component in resolved.components() {
        match component {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    Ok(clean)
}

/// What a directory of the output becomes: the source directory's mode
/// and mtime.
fn dir_finish(meta: &fs::Metadata) -> DirFinish {
    DirFinish {
        mode: meta.mode() & 0o7777,
        mtime: Some(Timestamp::mtime_of(meta)),
    }
}

/// Plans an encrypt or decrypt of `input` into `output`.
///
/// A file input gives one job (into `output`, or inside it when it is an
/// existing directory); a directory input is walked and mirrored. Symbolic
/// links inside the tree are never followed: encrypting stores each as an
/// entry of its own, and a second name of a file already met (a hard link)
/// as a link entry; decrypting skips links it meets in the encrypted tree.
/// A symlink named on the command line is followed. Once nothing is left
/// to refuse, the output tree is opened and its directories are created
/// (private until the run ends), each relative to its open parent, never
/// following a symbolic link.
///
/// # Errors
/// Any [`PlanError`]; nothing has been written then, except directories
/// created before a [`PlanError::Tree`] refusal.
pub fn plan_transform(
    direction: Direction,
    input: &Path,
    output: &Path,
    overwrite: Overwrite,
) -> Result<Plan, PlanError> {
    plan_transform_as(direction, OutputFormat::native(), input, output, overwrite)
}

/// [`plan_transform`] for new files in `format` (encrypt runs; decrypt
/// runs read both formats whatever `format` says).
///
/// # Errors
/// As [`plan_transform`].
pub fn plan_transform_as(
    direction: Direction,
    format: OutputFormat,
    input: &Path,
    output: &Path,
    overwrite: Overwrite,
) -> Result<Plan, PlanError> {
    let meta = fs::metadata(input).map_err(input_err(input))?;
    let mut plan = Plan::default();
    let mut new_root = false;
    if meta.is_file() {
        let out_meta = fs::metadata(output).ok();
        if out_meta.is_none() && names_directory(output) {
            return Err(PlanError::MissingOutputDir(output.to_path_buf()));
        }
        let (root, name) = match &out_meta {
            Some(m) if m.is_dir() => {
                let name = input
                    .file_name()
                    .ok_or_else(|| PlanError::NotFileOrDir(input.into()))?;
                let name = output_name(direction, &format, name).unwrap_or_else(|| {
                    let mut n = name.to_os_string();
                    n.push(".out");
                    n
                });
                (output.to_path_buf(), name)
            }
            _ => {
                let name = output
                    .file_name()
                    .ok_or_else(|| PlanError::NotFileOrDir(output.into()))?;
                let parent = match output.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                (parent.to_path_buf(), name.to_os_string())
            }
        };
        let target = root.join(&name);
        if let Ok(target_meta) = fs::metadata(&target) {
            if target_meta.dev() == meta.dev() && target_meta.ino() == meta.ino() {
                return Err(PlanError::SameFile(target));
            }
        }
        plan.total_bytes = meta.len();
        plan.files.push(FileJob {
            input: input.to_path_buf(),
            output: Some(OutputName { dir: 0, name }),
            relative: PathBuf::from(input.file_name().unwrap_or(input.as_os_str())),
            size: meta.len(),
            source: Source::File,
            looked: Some(Looked::of(&meta)),
        });
        plan.root = Some((root, None));
    } else if meta.is_dir() {
        let input_resolved = resolve(input).map_err(input_err(input))?;
        let output_resolved = resolve(output).map_err(input_err(output))?;
        if output_resolved.starts_with(&input_resolved) {
            return Err(PlanError::OutputInsideInput {
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
        match fs::metadata(output) {
            Ok(m) if !m.is_dir() => return Err(PlanError::OutputNotDir(output.to_path_buf())),
            Ok(_) => {}
            // A root that does not exist yet holds no output that could be
            // overwritten: no output is looked up one by one (a taken name
            // still fails at commit).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A run killed on its way leaves its tree staged beside the
                // root; resuming takes it over.
                let adopted = match overwrite {
                    Overwrite::SkipExisting => cryptstream_output::adopt_interrupted(output)
                        .map_err(|source| TreeError::Io {
                            path: output.to_path_buf(),
                            source,
                        })?,
                    _ => None,
                };
                plan.adopted = adopted;
                new_root = adopted.is_none();
            }
            Err(_) => {}
        }
        plan.root = Some((output.to_path_buf(), Some(dir_finish(&meta))));
        let mut walk = Walk {
            direction,
            format,
            root: input,
            plan: &mut plan,
            first_names: HashMap::new(),
        };
        walk.dir(Path::new(""), Some(0))?;
        refuse_nothing_to_process(&mut plan, direction, input)?;
    } else {
        return Err(PlanError::NotFileOrDir(input.to_path_buf()));
    }
    if !new_root {
        apply_overwrite(&mut plan, overwrite)?;
    }
    open_tree(&mut plan, meta.is_dir(), new_root)?;
    Ok(plan)
}

/// Refuses a walk that found entries and skipped every one of them
/// (`decrypt` of a plaintext tree): such a run would create an empty
/// tree and report success. An empty input tree is not refused (mirroring
/// it is the whole job), nor are entries kept by `--skip-existing`, which
/// are decided later.
fn refuse_nothing_to_process(
    plan: &mut Plan,
    direction: Direction,
    input: &Path,
) -> Result<(), PlanError> {
    if plan.files.is_empty() && !plan.skipped.is_empty() {
        return Err(PlanError::NothingToProcess {
            input: input.to_path_buf(),
            direction,
            skipped: std::mem::take(&mut plan.skipped),
        });
    }
    Ok(())
}

/// Opens the planned output root and creates the planned directories: a
/// tree whose root is new is staged (built under a hidden name and renamed
/// into place at the end).
fn open_tree(plan: &mut Plan, is_tree: bool, new_root: bool) -> Result<(), PlanError> {
    let Some((root, finish)) = plan.root.clone() else {
        return Ok(());
    };
    let mut tree = if is_tree && new_root {
        OutputTree::open_staged(&root, finish)?
    } else if is_tree {
        OutputTree::open_root(&root, finish)?
    } else {
        OutputTree::open_existing(&root)?
    };
    for dir in &plan.dirs {
        tree.add_dir(dir.parent, &dir.name, Some(dir.finish))?;
    }
    plan.tree = Some(tree);
    Ok(())
}

/// Plans a verify of every regular file named or found under `inputs`.
///
/// # Errors
/// [`PlanError::Input`] for an input that cannot be read.
pub fn plan_verify(inputs: &[PathBuf]) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let mut seen = std::collections::HashSet::new();
    for input in inputs {
        let meta = fs::metadata(input).map_err(input_err(input))?;
        if meta.is_dir() {
            let mut walk = Walk {
                direction: Direction::Verify,
                format: OutputFormat::native(),
                root: input,
                plan: &mut plan,
                first_names: HashMap::new(),
            };
            walk.dir(Path::new(""), None)?;
        } else if meta.is_file() {
            plan.files.push(FileJob {
                input: input.clone(),
                output: None,
                relative: PathBuf::from(input.file_name().unwrap_or(input.as_os_str())),
                size: meta.len(),
                source: Source::File,
                looked: Some(Looked::of(&meta)),
            });
        } else {
            return Err(PlanError::NotFileOrDir(input.clone()));
        }
    }
    if let Some(first) = inputs.first() {
        refuse_nothing_to_process(&mut plan, Direction::Verify, first)?;
    }
    // The same file named twice is verified once.
    plan.files.retain(|job| match fs::metadata(&job.input) {
        Ok(m) => seen.insert((m.dev(), m.ino())),
        Err(_) => true,
    });
    plan.total_bytes = plan.files.iter().map(|j| j.size).sum();
    Ok(plan)
}

/// One walk of an input tree into a plan.
/// Directories with at least this many entries have them looked up
/// (`statx`) by several threads: a folder of 20,000 small files spent a
/// tenth of the run looking them up one by one before any work started.
const PARALLEL_LOOKUP_MIN: usize = 1024;

/// The metadata of each entry (not following links), in order: looked up
/// on up to as many threads as there are cores when there are many. An
/// error stays with its entry, to be reported only if the entry needs it.
fn entry_metadata(entries: &[(OsString, fs::DirEntry)]) -> Vec<io::Result<fs::Metadata>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if entries.len() < PARALLEL_LOOKUP_MIN || threads < 2 {
        return entries.iter().map(|(_, entry)| entry.metadata()).collect();
    }
    let look_up = |part: &[(OsString, fs::DirEntry)]| -> Vec<io::Result<fs::Metadata>> {
        part.iter().map(|(_, entry)| entry.metadata()).collect()
    };
    let per_thread = entries.len().div_ceil(threads);
    let (first, rest) = entries.split_at(per_thread);
    std::thread::scope(|scope| {
        let others: Vec<_> = rest
            .chunks(per_thread)
            .map(|part| scope.spawn(move || look_up(part)))
            .collect();
        // This thread takes the first part.
        let mut metas = look_up(first);
        for other in others {
            metas.extend(
                other
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        metas
    })
}

struct Walk<'a> {
    direction: Direction,
    format: OutputFormat,
    root: &'a Path,
    plan: &'a mut Plan,
    /// Files with several names: (device, inode) to the first name met.
    first_names: HashMap<(u64, u64), PathBuf>,
}

impl Walk<'_> {
    /// Walks `relative` (below the root), whose output directory is
    /// `out_dir` (`None` for verify).
    fn dir(&mut self, relative: &Path, out_dir: Option<DirIndex>) -> Result<(), PlanError> {
        let dir = self.root.join(relative);
        let mut entries = fs::read_dir(&dir)
            .map_err(input_err(&dir))?
            .map(|entry| entry.map(|e| (e.file_name(), e)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(input_err(&dir))?;
        // Each name is copied out once, not at every comparison.
        entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        let mut metas = entry_metadata(&entries).into_iter();
        // Room for the folder's files at once, not by doubling.
        self.plan.files.reserve(entries.len());
        for (name, entry) in entries {
            let meta = metas.next().expect("one metadata result per entry");
            let path = dir.join(&name);
            let rel = relative.join(&name);
            let file_type = entry.file_type().map_err(input_err(&path))?;
            if file_type.is_dir() {
                let child = match out_dir {
                    Some(parent) => {
                        let meta = meta.map_err(input_err(&path))?;
                        self.plan.dirs.push(PlannedDir {
                            parent,
                            name: name.clone(),
                            finish: dir_finish(&meta),
                        });
                        Some(self.plan.dirs.len())
                    }
                    None => None,
                };
                self.dir(&rel, child)?;
                continue;
            }
            let stored_link = file_type.is_symlink()
                && self.direction == Direction::Encrypt
                && self.format.holds_links();
            if !(file_type.is_file() || stored_link) {
                self.plan.skipped.push(Skipped {
                    path,
                    reason: if file_type.is_symlink() && self.direction == Direction::Encrypt {
                        self.format.link_reason()
                    } else if file_type.is_symlink() {
                        Cow::Borrowed("symbolic link (not followed)")
                    } else {
                        Cow::Borrowed("not a regular file")
                    },
                });
                continue;
            }
            let meta = meta.map_err(input_err(&path))?;
            let output = match out_dir {
                None => None,
                Some(dir) => match output_name(self.direction, &self.format, &name) {
                    Some(name) => Some(OutputName { dir, name }),
                    None => {
                        self.plan.skipped.push(Skipped {
                            path,
                            reason: self.format.unnamed_reason(),
                        });
                        continue;
                    }
                },
            };
            let source = if stored_link {
                Source::Symlink
            } else if self.direction == Direction::Encrypt
                && self.format.holds_links()
                && meta.nlink() > 1
            {
                match self.first_names.get(&(meta.dev(), meta.ino())) {
                    Some(first) => Source::HardLink(first.clone()),
                    None => {
                        self.first_names
                            .insert((meta.dev(), meta.ino()), rel.clone());
                        Source::File
                    }
                }
            } else {
                Source::File
            };
            let (size, looked) = match source {
                Source::File => (meta.len(), Some(Looked::of(&meta))),
                _ => (0, None),
            };
            self.plan.total_bytes += size;
            self.plan.files.push(FileJob {
                input: path,
                output,
                relative: rel,
                size,
                source,
                looked,
            });
        }
        Ok(())
    }
}

fn apply_overwrite(plan: &mut Plan, overwrite: Overwrite) -> Result<(), PlanError> {
    let exists = |plan: &Plan, job: &FileJob| {
        plan.planned_output_path(job)
            .is_some_and(|o| fs::symlink_metadata(o).is_ok())
    };
    match overwrite {
        Overwrite::Force => {}
        Overwrite::Refuse => {
            let mut existing = plan.files.iter().filter(|j| exists(plan, j));
            if let Some(first) = existing.next() {
                return Err(PlanError::OutputExists {
                    first: plan.planned_output_path(first).unwrap_or_default(),
                    count: 1 + existing.count(),
                });
            }
        }
        Overwrite::SkipExisting => {
            let files = std::mem::take(&mut plan.files);
            for job in files {
                if exists(plan, &job) {
                    plan.total_bytes -= job.size;
                    plan.skipped.push(Skipped {
                        path: job.input,
                        reason: Cow::Borrowed(KEPT_EXISTING),
                    });
                } else {
                    plan.files.push(job);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptstream_format::{EntryMeta, EnvelopeError, OpenedPrefix, Processing, SealedPrefix};

    /// A container the engine has never heard of: only its naming matters
    /// to the plan.
    struct Third;

    impl Envelope for Third {
        fn name(&self) -> &'static str {
            "third"
        }
        fn naming(&self) -> Naming {
            Naming {
                suffix: ".x",
                holds_links: false,
            }
        }
        fn detect(&self, _: &[u8]) -> Option<Processing> {
            None
        }
        fn seal(&self, _: &EntryMeta) -> Result<SealedPrefix, EnvelopeError> {
            Err(EnvelopeError::Container("not in this test".into()))
        }
        fn open(&self, _: &mut dyn std::io::BufRead) -> Result<OpenedPrefix, EnvelopeError> {
            Err(EnvelopeError::Container("not in this test".into()))
        }
        fn export(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
            None
        }
    }

    /// New names take the sealing envelope's suffix, decrypt strips the
    /// suffix of any envelope of the run and no other, and the messages
    /// name what the run knows.
    #[test]
    fn names_and_link_rules_come_from_the_envelopes() {
        let format = OutputFormat::native().sealing(&Third);
        let name = |direction, name: &str| output_name(direction, &format, OsStr::new(name));
        assert_eq!(name(Direction::Encrypt, "a"), Some("a.x".into()));
        assert_eq!(name(Direction::Decrypt, "a.x"), Some("a".into()));
        assert_eq!(name(Direction::Decrypt, "a.cst"), Some("a".into()));
        assert_eq!(name(Direction::Decrypt, "a.age"), None);
        assert_eq!(name(Direction::Decrypt, ".x"), None);
        assert!(!format.holds_links() && OutputFormat::native().holds_links());
        assert_eq!(format.unnamed_reason(), "not named *.cst or *.x");
        assert_eq!(
            format.link_reason(),
            "symbolic link (third files hold file contents only)"
        );
    }
}
