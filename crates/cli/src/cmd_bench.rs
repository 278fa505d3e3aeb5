//! `cryptstream bench`: run this binary over a matrix of engines, I/O
//! strategies and worker counts on a workload, and report throughput,
//! latency, CPU, memory and round-trip correctness (see `cryptstream-bench`).

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::{bail, Context};
use cryptstream_bench::{render_chart, render_table, run_matrix_with, BenchConfig, TempWorkload};

use crate::cmd_gen::{default_workers, WorkloadArgs};
use crate::progress::{self, Counted};

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the encrypt/decrypt matrix.
    #[command(subcommand)]
    target: Option<BenchTarget>,
    /// Benchmark on the files of this folder (not modified) instead of a
    /// generated workload.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["count", "size", "size_dist", "content", "depth", "seed"]
    )]
    workload: Option<PathBuf>,
    /// Without --workload, a workload is generated from these (into a
    /// temporary folder under --scratch, removed at the end).
    #[command(flatten)]
    generate: WorkloadArgs,
    /// Engines to compare, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "threads",
          value_parser = ["auto", "threads", "processes"])]
    engines: Vec<String>,
    /// I/O strategies to compare, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "auto",
          value_parser = ["auto", "read", "pread", "mmap"])]
    io: Vec<String>,
    /// Worker counts to compare, comma-separated [default: 1 and the number
    /// of cores].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    workers: Vec<NonZeroUsize>,
    /// Recorded runs per configuration and operation (medians are reported).
    #[arg(long, value_name = "R", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Skip the unrecorded warm-up run before each configuration's runs.
    #[arg(long)]
    no_warmup: bool,
    /// Write the full report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw an SVG bar chart of MB/s per configuration to FILE.
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Folder for the key, the outputs and a generated workload [default:
    /// the system's temporary folder]. It should be on the file system you
    /// want to measure, and outside the workload.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
}

/// Benchmarks other than the matrix.
#[derive(clap::Subcommand, Debug)]
pub enum BenchTarget {
    /// The network transfer: `serve` on 127.0.0.1 and 1, 10, 50... `send`
    /// clients at once, each sending one file of --size.
    Net(NetBenchArgs),
}

/// Arguments of `bench net`.
#[derive(clap::Args, Debug)]
pub struct NetBenchArgs {
    /// Client counts, one table row each.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,10,50"
    )]
    clients: Vec<NonZeroUsize>,
    /// Bytes each client sends (with a unit, e.g. 469MiB). The receiving
    /// folder must hold clients x size.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = cryptstream_workload::parse_size)]
    size: u64,
    /// Connections of each client (`send --connections`).
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(4).expect("non-zero"))]
    connections: NonZeroUsize,
    /// Folder for the source file and the received files [default: the
    /// system's temporary folder]; a tmpfs measures the network, a disk
    /// measures the disk.
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `bench net`: prints the table (or JSON), and fails when a client
/// or the server failed or a received file differed.
fn run_net(args: &NetBenchArgs) -> anyhow::Result<()> {
    let binary = std::env::current_exe().context("cannot find the cryptstream binary to run")?;
    let config = cryptstream_bench::NetBenchConfig {
        binary,
        clients: dedup(&args.clients.iter().map(|c| c.get()).collect::<Vec<_>>()),
        size: args.size,
        connections: args.connections.get(),
        scratch: args.scratch.clone().unwrap_or_else(std::env::temp_dir),
    };
    let on_terminal = std::io::stderr().is_terminal();
    let report = cryptstream_bench::run_net_bench(&config, |row| {
        if on_terminal {
            eprintln!("{} client(s): {:.0} MB/s", row.clients, row.mb_per_s);
        }
    })
    .context("network benchmark failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "bench net: {} per client, {} connection(s) each, {} CPUs, 127.0.0.1, TLS 1.3",
            cryptstream_workload::format_size(report.size),
            report.connections,
            report.cpus
        );
        print!("{}", cryptstream_bench::render_net_table(&report));
    }
    if report.rows.iter().any(|r| !r.verified) {
        bail!("a received file differed from the source");
    }
    Ok(())
}

/// Runs the benchmark, prints the table with the machine and workload on
/// stdout, writes the JSON and SVG files asked for, and fails when a
/// decrypted tree differed from the workload.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchTarget::Net(net)) = &args.target {
        return run_net(net);
    }
    let binary = std::env::current_exe().context("cannot find the cryptstream binary to run")?;
    let scratch = args.scratch.clone().unwrap_or_else(std::env::temp_dir);

    let generated;
    let workload = match &args.workload {
        Some(dir) => dir.clone(),
        None => {
            let spec = args.generate.spec();
            let bar = progress::bar(
                Some(spec.total_bytes()),
                Counted::Bytes,
                "generating workload".to_owned(),
                false,
            );
            let progress = |bytes: u64| {
                if let Some(bar) = &bar {
                    bar.inc(bytes);
                }
            };
            let made = TempWorkload::generate(&scratch, &spec, default_workers(), &progress);
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            generated = made.context("cannot generate the workload")?;
            generated.path().to_owned()
        }
    };

    let workers: Vec<usize> = if args.workers.is_empty() {
        vec![1, default_workers()]
    } else {
        args.workers.iter().map(|w| w.get()).collect()
    };
    let workers = dedup(&workers);
    let config = BenchConfig {
        workload,
        engines: dedup(&args.engines),
        io: dedup(&args.io),
        workers,
        runs: args.runs as usize,
        warmup: !args.no_warmup,
        scratch,
    };
    let runs_per_cell = config.runs + usize::from(config.warmup);
    let total = config.engines.len() * config.io.len() * config.workers.len() * 2 * runs_per_cell;
    let bar = progress::bar(Some(total as u64), Counted::Runs, "bench".to_owned(), false);
    let report = run_matrix_with(&binary, &config, &mut |step| {
        if let Some(bar) = &bar {
            bar.set_message(format!("bench: {step}"));
            bar.inc(1);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report.context("benchmark failed")?;

    println!("machine: {}", report.machine);
    println!(
        "workload: {} ({} files, {:.1} MB); {} recorded run{} per cell{}",
        report.workload.path.display(),
        report.workload.files,
        report.workload.bytes as f64 / 1e6,
        report.runs,
        if report.runs == 1 { "" } else { "s" },
        if report.warmup {
            " after a warm-up"
        } else {
            ""
        }
    );
    println!();
    print!("{}", render_table(&report));

    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write the JSON report", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, render_chart(&report))
            .with_context(|| format!("{}: cannot write the chart", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let wrong: Vec<String> = report
        .cells
        .iter()
        .filter(|c| c.operation == cryptstream_bench::Operation::Decrypt)
        .filter_map(|c| Some(format!("{}: {}", c.config(), c.round_trip_error.as_ref()?)))
        .collect();
    if !wrong.is_empty() {
        bail!(
            "decrypting did not give back the workload: {}",
            wrong.join("; ")
        );
    }
    Ok(())
}

/// The values of `list` without repeats, in their first order.
fn dedup<T: Clone + PartialEq>(list: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in list {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}
