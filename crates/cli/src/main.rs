//! The `cryptstream` command line: parses flags and wires the library
//! crates together. Everything that does work lives in the crates below
//! (`cryptstream-engine`, `cryptstream-format`); this crate only turns
//! arguments into settings, secrets into a keyring, and results into output
//! and an exit code.

mod cmd_bench;
mod cmd_crypt;
mod cmd_docs;
mod cmd_gen;
mod cmd_inspect;
mod cmd_keygen;
mod cmd_net;
mod cmd_store;
mod key_needs;
mod messages;
mod process;
mod progress;
mod secrets;
mod store_shell;
mod store_views;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Write a new random 256-bit key file (mode 0600), or an age identity (--age).
    Keygen(cmd_keygen::KeygenArgs),
    /// Encrypt a file or a directory tree; stdin to stdout when no path is given.
    Encrypt(cmd_crypt::CryptArgs),
    /// Decrypt a file or a directory tree; stdin to stdout when no path is given.
    Decrypt(cmd_crypt::CryptArgs),
    /// Authenticate every chunk of encrypted files; writes nothing.
    Verify(cmd_crypt::VerifyArgs),
    /// Print the header of an encrypted file (no key needed).
    Inspect(cmd_inspect::InspectArgs),
    /// Generate a deterministic workload of files for benchmarks.
    Gen(cmd_gen::GenArgs),
    /// Benchmark encrypt/decrypt over an engine x I/O x workers matrix,
    /// or the network transfer (`bench net`).
    Bench(cmd_bench::BenchArgs),
    /// Receive files from `send` over TLS into a folder.
    Serve(cmd_net::ServeArgs),
    /// Send files and folders to a `serve`, over parallel TLS connections.
    Send(cmd_net::SendArgs),
    /// The chunked, encrypted, deduplicating store: init, put, snapshots, get, ls, find, diff, dump, forget, gc, stat, verify, reindex, shell.
    Store(cmd_store::StoreArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd_docs::CompletionsArgs),
    /// Print the manual page, or write one per subcommand with --out-dir.
    Man(cmd_docs::ManArgs),
}

/// What a closed stdout (a broken pipe) means for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClosedStdout {
    /// A reader that stops early is normal (`cryptstream decrypt x.cst - |
    /// head`, `cryptstream man | head`): exit 0 and say nothing, as ripgrep
    /// does.
    Normal,
    /// What was written is the first part of an encrypted stream, which
    /// cannot be decrypted: the reader must learn that it got nothing
    /// usable, so it is a failure.
    TruncatesStream,
}

impl Command {
    fn closed_stdout(&self) -> ClosedStdout {
        match self {
            Command::Encrypt(_) => ClosedStdout::TruncatesStream,
            _ => ClosedStdout::Normal,
        }
    }
}

fn main() -> ExitCode {
    // Limits first, so that worker processes of the process engine run
    // under them too.
    if let Err(err) = process::process_setup() {
        messages::error(one_line(&err));
        return ExitCode::from(EXIT_FAILURE);
    }
    // A worker process of the process engine: right after the limits,
    // while this process has a single thread (see docs/ARCHITECTURE.md).
    debug_hooks();
    if let Some(code) = cryptstream_procs::run_worker_if_requested(&[(
        cryptstream_age::ENVELOPE_NAME,
        cryptstream_age::AgeEnvelope::restore,
    )]) {
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
        Command::Serve(args) => cmd_net::run_serve(args),
        Command::Send(args) => cmd_net::run_send(args),
        Command::Store(args) => cmd_store::run(args),
        Command::Completions(args) => cmd_docs::run_completions(args, Cli::command()),
        Command::Man(args) => cmd_docs::run_man(args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => match cli.command.closed_stdout() {
            ClosedStdout::Normal => ExitCode::SUCCESS,
            ClosedStdout::TruncatesStream => {
                messages::error(
                    "the output was closed before the encrypted stream was complete \
                     (broken pipe); what was written cannot be decrypted",
                );
                ExitCode::from(EXIT_FAILURE)
            }
        },
        Err(err) => {
            messages::error(one_line(&err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Turns on the fault hooks that tests ask for with `CRYPTSTREAM_DEBUG_*`
/// variables. Only in builds with the `test-knobs` feature (the test
/// command's): any other build has no hooks and reads none of these
/// variables.
fn debug_hooks() {
    #[cfg(feature = "test-knobs")]
    {
        let number = |name: &str| std::env::var(name).ok()?.parse::<u64>().ok();
        if let Some(bytes) = number("CRYPTSTREAM_DEBUG_STALL_AFTER_BYTES") {
            cryptstream_engine::hooks::stall_after_bytes(bytes);
        }
        if let Some(bytes) = number("CRYPTSTREAM_DEBUG_NET_STALL_AFTER_BYTES") {
            cryptstream_net::hooks::stall_after_bytes(bytes);
        }
        if let Some(bytes) = number("CRYPTSTREAM_DEBUG_NET_CHECKPOINT_BYTES") {
            cryptstream_net::hooks::checkpoint_every(bytes);
        }
        if std::env::var_os("CRYPTSTREAM_DEBUG_NO_TMPFILE").is_some() {
            cryptstream_output::force_named_temp_files();
        }
        if let Some(ms) = number("CRYPTSTREAM_DEBUG_STORE_DELAY_MS") {
            cryptstream_store::hooks::set_delay_ms(ms);
        }
        // Every chunk task of a put sleeps this long on its worker.
        if let Some(ms) = number("CRYPTSTREAM_DEBUG_STORE_TASK_DELAY_MS") {
            cryptstream_store::hooks::set_task_delay_ms(ms);
        }
        // A put, gc or get waits at each hook point while this file exists.
        if let Some(path) = std::env::var_os("CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE") {
            cryptstream_store::hooks::hold_while_exists(std::path::PathBuf::from(path));
        }
        // ... only at the hook point of this name.
        if let Some(name) = std::env::var_os("CRYPTSTREAM_DEBUG_STORE_HOLD_AT") {
            cryptstream_store::hooks::hold_only_at(name.to_string_lossy().into_owned());
        }
        // Bytes above which an S3 object goes up in parts.
        if let Some(bytes) = number("CRYPTSTREAM_DEBUG_S3_MULTIPART_THRESHOLD") {
            cryptstream_s3::set_multipart_threshold(bytes as usize);
        }
        // A retry budget short enough for a test to outlast.
        if let Some(ms) = number("CRYPTSTREAM_DEBUG_S3_RETRY_TIMEOUT_MS") {
            cryptstream_s3::set_retry_timeout(std::time::Duration::from_millis(ms));
        }
        if std::env::var_os("CRYPTSTREAM_DEBUG_ANNOUNCE_DERIVE").is_some() {
            cryptstream_engine::hooks::announce_derivations();
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause that the
/// text before it already says (library errors often print their source).
pub(crate) fn one_line(err: &anyhow::Error) -> String {
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

/// Whether the error comes from writing to a closed pipe (what that means
/// is up to the command: see [`ClosedStdout`]).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use cryptstream_engine::stream::StreamError;
    use cryptstream_engine::Reason;
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || matches!(cause.downcast_ref::<Reason>(), Some(Reason::Write(e)) if broken(e))
            || matches!(
                cause.downcast_ref::<StreamError>(),
                Some(StreamError::File(_, Reason::Write(e))) if broken(e)
            )
    })
}
