//! Turning `INPUT OUTPUT` into a list of files to process, with every
//! refusal decided before any work starts.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

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

/// One file to process.
#[derive(Clone, Debug)]
pub struct FileJob {
    /// The file to read.
    pub input: PathBuf,
    /// Where the result goes (`None` for verify).
    pub output: Option<PathBuf>,
    /// Path relative to the input root (the file name for a single file).
    pub relative: PathBuf,
    /// Size when planned; the worker re-reads it when it opens the file.
    pub size: u64,
}

/// Something in the input that is deliberately not processed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    /// The entry.
    pub path: PathBuf,
    /// Why, in words.
    pub reason: &'static str,
}

/// Everything a run will do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files to process, in walk order.
    pub files: Vec<FileJob>,
    /// Output directories and the mode to give them once the run is done.
    pub dirs: Vec<(PathBuf, u32)>,
    /// Entries left alone, with the reason.
    pub skipped: Vec<Skipped>,
    /// Sum of the planned input sizes.
    pub total_bytes: u64,
}

/// Why a run is refused before it starts.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The input cannot be read.
    #[error("{}: {source}", path.display())]
    Input {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The input is neither a regular file nor a directory.
    #[error("{}: not a regular file or directory", .0.display())]
    NotFileOrDir(PathBuf),
    /// OUTPUT lies inside the INPUT directory.
    #[error("{}: output is inside the input directory {}; choose an output outside it", output.display(), input.display())]
    OutputInsideInput {
        /// The output.
        output: PathBuf,
        /// The input.
        input: PathBuf,
    },
    /// INPUT and OUTPUT name the same file.
    #[error("{}: input and output are the same file", .0.display())]
    SameFile(PathBuf),
    /// A directory input needs a directory output.
    #[error("{}: exists and is not a directory (the input is a directory)", .0.display())]
    OutputNotDir(PathBuf),
    /// Outputs exist and neither --force nor --skip-existing was given.
    #[error("{}: output exists{}; use --force to replace or --skip-existing to keep", first.display(), if *count > 1 { format!(" (and {} more)", count - 1) } else { String::new() })]
    OutputExists {
        /// The first existing output.
        first: PathBuf,
        /// How many exist.
        count: usize,
    },
    /// The output directory could not be created.
    #[error("{}: cannot create output directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn input_err(path: &Path) -> impl FnOnce(io::Error) -> PlanError + '_ {
    move |source| PlanError::Input {
        path: path.to_path_buf(),
        source,
    }
}

/// The output name of `name` for `direction`, or `None` when a decrypt
/// input does not end in `.cst`.
pub fn output_name(direction: Direction, name: &std::ffi::OsStr) -> Option<std::ffi::OsString> {
    match direction {
        Direction::Encrypt => {
            let mut out = name.to_os_string();
            out.push(SUFFIX);
            Some(out)
        }
        Direction::Decrypt | Direction::Verify => {
            use std::os::unix::ffi::OsStrExt;
            let stem = name
                .as_bytes()
                .strip_suffix(SUFFIX.as_bytes())
                .filter(|s| !s.is_empty())?;
            Some(std::ffi::OsStr::from_bytes(stem).to_os_string())
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

/// Plans an encrypt or decrypt of `input` into `output`.
///
/// A file input gives one job (into `output`, or inside it when it is an
/// existing directory); a directory input is walked and mirrored, creating
/// the output directories. Symlinks inside the tree are not followed and
/// not copied (they are listed in [`Plan::skipped`]); a symlink named on the
/// command line is followed.
///
/// # Errors
/// Any [`PlanError`]; nothing has been written then, except output
/// directories when the refusal comes from the walk itself.
pub fn plan_transform(
    direction: Direction,
    input: &Path,
    output: &Path,
    overwrite: Overwrite,
) -> Result<Plan, PlanError> {
    let meta = fs::metadata(input).map_err(input_err(input))?;
    let mut plan = Plan::default();
    if meta.is_file() {
        let out_meta = fs::metadata(output).ok();
        let target = match &out_meta {
            Some(m) if m.is_dir() => {
                let name = input
                    .file_name()
                    .ok_or_else(|| PlanError::NotFileOrDir(input.into()))?;
                let name = output_name(direction, name).unwrap_or_else(|| {
                    let mut n = name.to_os_string();
                    n.push(".out");
                    n
                });
                output.join(name)
            }
            _ => output.to_path_buf(),
        };
        if let Ok(target_meta) = fs::metadata(&target) {
            use std::os::unix::fs::MetadataExt;
            if target_meta.dev() == meta.dev() && target_meta.ino() == meta.ino() {
                return Err(PlanError::SameFile(target));
            }
        }
        plan.total_bytes = meta.len();
        plan.files.push(FileJob {
            input: input.to_path_buf(),
            output: Some(target),
            relative: PathBuf::from(input.file_name().unwrap_or(input.as_os_str())),
            size: meta.len(),
        });
    } else if meta.is_dir() {
        let input_resolved = resolve(input).map_err(input_err(input))?;
        let output_resolved = resolve(output).map_err(input_err(output))?;
        if output_resolved.starts_with(&input_resolved) {
            return Err(PlanError::OutputInsideInput {
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
        if let Ok(m) = fs::metadata(output) {
            if !m.is_dir() {
                return Err(PlanError::OutputNotDir(output.to_path_buf()));
            }
        }
        use std::os::unix::fs::PermissionsExt;
        plan.dirs
            .push((output.to_path_buf(), meta.permissions().mode() & 0o7777));
        walk(direction, input, output, Path::new(""), &mut plan)?;
    } else {
        return Err(PlanError::NotFileOrDir(input.to_path_buf()));
    }
    apply_overwrite(&mut plan, overwrite)?;
    for (dir, _) in &plan.dirs {
        fs::create_dir_all(dir).map_err(|source| PlanError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(plan)
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
            walk(
                Direction::Verify,
                input,
                Path::new(""),
                Path::new(""),
                &mut plan,
            )?;
        } else if meta.is_file() {
            plan.total_bytes += meta.len();
            plan.files.push(FileJob {
                input: input.clone(),
                output: None,
                relative: PathBuf::from(input.file_name().unwrap_or(input.as_os_str())),
                size: meta.len(),
            });
        } else {
            return Err(PlanError::NotFileOrDir(input.clone()));
        }
    }
    // The same file named twice is verified once.
    plan.files.retain(|job| {
        use std::os::unix::fs::MetadataExt;
        match fs::metadata(&job.input) {
            Ok(m) => seen.insert((m.dev(), m.ino())),
            Err(_) => true,
        }
    });
    plan.total_bytes = plan.files.iter().map(|j| j.size).sum();
    Ok(plan)
}

fn walk(
    direction: Direction,
    root: &Path,
    out_root: &Path,
    relative: &Path,
    plan: &mut Plan,
) -> Result<(), PlanError> {
    let dir = root.join(relative);
    let mut entries = fs::read_dir(&dir)
        .map_err(input_err(&dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(input_err(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = relative.join(entry.file_name());
        let file_type = entry.file_type().map_err(input_err(&path))?;
        if file_type.is_dir() {
            if direction != Direction::Verify {
                use std::os::unix::fs::PermissionsExt;
                let mode = entry
                    .metadata()
                    .map_err(input_err(&path))?
                    .permissions()
                    .mode();
                plan.dirs.push((out_root.join(&rel), mode & 0o7777));
            }
            walk(direction, root, out_root, &rel, plan)?;
        } else if file_type.is_file() {
            let size = entry.metadata().map_err(input_err(&path))?.len();
            let output = match direction {
                Direction::Verify => None,
                _ => match output_name(direction, &entry.file_name()) {
                    Some(name) => Some(out_root.join(relative).join(name)),
                    None => {
                        plan.skipped.push(Skipped {
                            path,
                            reason: "not named *.cst",
                        });
                        continue;
                    }
                },
            };
            plan.total_bytes += size;
            plan.files.push(FileJob {
                input: path,
                output,
                relative: rel,
                size,
            });
        } else if file_type.is_symlink() {
            plan.skipped.push(Skipped {
                path,
                reason: "symbolic link (not followed)",
            });
        } else {
            plan.skipped.push(Skipped {
                path,
                reason: "not a regular file",
            });
        }
    }
    Ok(())
}

fn apply_overwrite(plan: &mut Plan, overwrite: Overwrite) -> Result<(), PlanError> {
    let exists = |job: &FileJob| {
        job.output
            .as_ref()
            .is_some_and(|o| fs::symlink_metadata(o).is_ok())
    };
    match overwrite {
        Overwrite::Force => {}
        Overwrite::Refuse => {
            let mut existing = plan.files.iter().filter(|j| exists(j));
            if let Some(first) = existing.next() {
                return Err(PlanError::OutputExists {
                    first: first.output.clone().unwrap_or_default(),
                    count: 1 + existing.count(),
                });
            }
        }
        Overwrite::SkipExisting => {
            let mut kept = Vec::with_capacity(plan.files.len());
            for job in plan.files.drain(..) {
                if exists(&job) {
                    plan.total_bytes -= job.size;
                    plan.skipped.push(Skipped {
                        path: job.input,
                        reason: "output exists (--skip-existing)",
                    });
                } else {
                    kept.push(job);
                }
            }
            plan.files = kept;
        }
    }
    Ok(())
}
