//! `cryptstream gen`: write a deterministic workload of files to benchmark
//! and test on (see `cryptstream-workload`).

use std::num::NonZeroUsize;
use std::path::PathBuf;

use cryptstream_workload::{
    generate, parse_size, Content, ContentError, DistError, Existing, SizeDist, WorkloadSpec,
};

use crate::progress::{self, Counted};

/// What a workload is made of; shared by `gen` and `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Number of files.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub count: u64,
    /// Size of every file with `--size-dist fixed`: a number with a unit,
    /// B, kB/KiB, MB/MiB, GB/GiB, TB/TiB (e.g. 4KiB, 1MB, 1.5MiB).
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub size: u64,
    /// How sizes are spread: fixed (all --size), uniform:MIN..MAX (e.g.
    /// uniform:1KiB..4MiB), or lognormal:MEDIAN (log standard deviation 1,
    /// sizes within a factor 55 of the median).
    #[arg(long, value_name = "DIST", default_value = "fixed", value_parser = parse_dist)]
    pub size_dist: SizeDist,
    /// What the bytes look like: random (incompressible), text (English-like
    /// prose, compresses about 3.5x) or zeros.
    #[arg(long, value_name = "KIND", default_value = "random", value_parser = parse_content)]
    pub content: Content,
    /// Folder levels above the files (0: all files in DIR).
    #[arg(long, value_name = "D", default_value_t = 0)]
    pub depth: u32,
    /// Seed of every size and byte: the same seed and options always give
    /// the same names and bytes.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

impl WorkloadArgs {
    /// The workload these arguments describe.
    pub fn spec(&self) -> WorkloadSpec {
        WorkloadSpec {
            count: self.count,
            size: self.size,
            dist: self.size_dist,
            content: self.content,
            depth: self.depth,
            seed: self.seed,
        }
    }
}

/// Reads `--size-dist` (clap wants a function of `&str`).
fn parse_dist(text: &str) -> Result<SizeDist, DistError> {
    text.parse()
}

/// Reads `--content`.
fn parse_content(text: &str) -> Result<Content, ContentError> {
    text.parse()
}

/// Arguments of `gen`.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// The folder to fill; created if missing, and it must be empty unless
    /// --force is given.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Threads that write files [default: one per core].
    #[arg(long, value_name = "N")]
    workers: Option<NonZeroUsize>,
    /// Write into DIR even if it is not empty: files with the same names are
    /// replaced, other entries are left alone.
    #[arg(long)]
    force: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

/// The number of cores this process may use (1 when unknown).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Generates the workload, with a progress bar on a terminal, and prints
/// `generated N files, X bytes in S s (Y MB/s)` on stderr unless --quiet.
pub fn run(args: &GenArgs) -> anyhow::Result<()> {
    let spec = args.workload.spec();
    let workers = args.workers.map_or_else(default_workers, NonZeroUsize::get);
    let existing = if args.force {
        Existing::WriteInto
    } else {
        Existing::Refuse
    };
    let bar = progress::bar(
        Some(spec.total_bytes()),
        Counted::Bytes,
        "generating".to_owned(),
        args.quiet,
    );
    let progress = |bytes: u64| {
        if let Some(bar) = &bar {
            bar.inc(bytes);
        }
    };
    let result = generate(&args.dir, &spec, workers, existing, &progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if !args.quiet {
        eprintln!(
            "generated {}, {} in {:.2} s ({}/s)",
            crate::messages::count(report.files as u64, "file", "files"),
            cryptstream_workload::human_size(report.bytes),
            report.seconds,
            cryptstream_workload::human_size(
                (report.bytes as f64 / report.seconds.max(1e-9)) as u64
            )
        );
    }
    Ok(())
}
