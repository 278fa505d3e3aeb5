//! The `cryptstream` command line: parses flags and wires the library
//! crates together. Everything that does work lives in the crates below
//! (`cryptstream-engine`, `cryptstream-format`); this crate only turns
//! arguments into settings, secrets into a keyring, and results into output
//! and an exit code.

mod cmd_bench;
mod cmd_crypt;
mod cmd_gen;
mod cmd_inspect;
mod cmd_keygen;
mod progress;
mod secrets;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code when something failed.
const EXIT_FAILURE: u8 = 1;

/// Encrypt, store and move files at the speed of the machine.
#[derive(Parser, Debug)]
#[command(name = "cryptstream", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a new random 256-bit key file (mode 0600).
    Keygen(cmd_keygen::KeygenArgs),
    /// Encrypt a file, a directory tree, or stdin (`-`).
    Encrypt(cmd_crypt::CryptArgs),
    /// Decrypt a file, a directory tree, or stdin (`-`).
    Decrypt(cmd_crypt::CryptArgs),
    /// Authenticate every chunk of encrypted files; writes nothing.
    Verify(cmd_crypt::VerifyArgs),
    /// Print the header of an encrypted file (no key needed).
    Inspect(cmd_inspect::InspectArgs),
    /// Generate a deterministic workload of files for benchmarks.
    Gen(cmd_gen::GenArgs),
    /// Benchmark encrypt/decrypt over an engine x I/O x workers matrix.
    Bench(cmd_bench::BenchArgs),
}

fn main() -> ExitCode {
    // A worker process of the process engine: before anything else, while
    // this process has a single thread (see docs/ARCHITECTURE.md).
    if let Some(code) = cryptstream_procs::run_worker_if_requested() {
        return code;
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Keygen(args) => cmd_keygen::run(args),
        Command::Encrypt(args) => {
            cmd_crypt::run_transform(cryptstream_engine::Direction::Encrypt, args)
        }
        Command::Decrypt(args) => {
            cmd_crypt::run_transform(cryptstream_engine::Direction::Decrypt, args)
        }
        Command::Verify(args) => cmd_crypt::run_verify(args),
        Command::Inspect(args) => cmd_inspect::run(args),
        Command::Gen(args) => cmd_gen::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => cmd_bench::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cryptstream: {}", one_line(&err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause that the
/// text before it already says (library errors often print their source).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A closed stdout (`cryptstream decrypt x.cst - | head`) is a normal end.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use cryptstream_engine::Reason;
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || matches!(cause.downcast_ref::<Reason>(), Some(Reason::Write(e)) if broken(e))
    })
}
