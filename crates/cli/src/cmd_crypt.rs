//! `encrypt`, `decrypt` and `verify`: arguments, stream (`-`) handling, and
//! turning a run's [`Summary`] into output and an exit code.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use cryptstream_engine::{
    plan_transform, plan_verify, stream, AtomicOutput, Direction, EngineChoice, IoChoice,
    Overwrite, Plan, Replace, Settings, Summary,
};
use cryptstream_format::{Cipher, HeaderParams, DEFAULT_CHUNK_SIZE};

use crate::progress::Reporter;
use crate::secrets::SecretArgs;

/// Exit code after SIGINT/SIGTERM, as a shell reports a process killed by SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

/// The AEAD to use for new files.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CipherArg {
    /// AES-256-GCM (the default where the CPU has AES instructions).
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (the default elsewhere).
    #[value(name = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

/// Which executor runs the work.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum EngineArg {
    /// Threads (the process engine measured no faster; see docs/ARCHITECTURE.md).
    #[default]
    Auto,
    /// A pool of worker threads.
    Threads,
    /// Worker processes fed through a shared-memory ring (a crashed worker costs one retried task).
    Processes,
}

/// How file bytes are read and written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum IoArg {
    /// Pick per file by size from measured thresholds.
    #[default]
    Auto,
    /// read()/write() through the file position.
    Read,
    /// Positional pread()/pwrite().
    Pread,
    /// Memory-mapped input.
    Mmap,
}

/// Options every run has.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Worker threads or processes (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N")]
    workers: Option<usize>,
    /// Execution engine.
    #[arg(long, value_enum, env = "CRYPTSTREAM_ENGINE", default_value_t = EngineArg::Auto)]
    engine: EngineArg,
    /// I/O strategy.
    #[arg(long, value_enum, env = "CRYPTSTREAM_IO", default_value_t = IoArg::Auto)]
    io: IoArg,
    /// Print a machine-readable summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar and no closing line (errors are still printed).
    #[arg(short, long)]
    quiet: bool,
}

/// Arguments of `encrypt` and `decrypt`.
#[derive(clap::Args, Debug)]
pub struct CryptArgs {
    /// A file, a directory, or `-` for stdin.
    input: PathBuf,
    /// The output file or directory, or `-` for stdout.
    output: PathBuf,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    run: RunArgs,
    /// AEAD for new files (default: aes-256-gcm with AES instructions, else chacha20-poly1305).
    #[arg(long, value_enum)]
    cipher: Option<CipherArg>,
    /// Plaintext bytes per chunk for new files (1KiB to 16MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size, default_value = "64KiB")]
    chunk_size: u32,
    /// Replace existing outputs.
    #[arg(short, long, conflicts_with = "skip_existing")]
    force: bool,
    /// Keep existing outputs and skip their inputs (to resume an interrupted run).
    #[arg(long)]
    skip_existing: bool,
    /// fsync every output and its directory before counting it done.
    #[arg(long)]
    durable: bool,
    /// Derive salts from this 64-hex-digit seed instead of randomly (tests only: never for real data).
    #[arg(long, hide = true, value_name = "HEX", value_parser = parse_seed)]
    fixed_salt: Option<[u8; 32]>,
}

/// Arguments of `verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Encrypted files or directories of them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    run: RunArgs,
}

fn parse_chunk_size(text: &str) -> Result<u32, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => lower.split_at(at),
        None => (lower.as_str(), ""),
    };
    let unit = match unit.trim() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown unit '{other}' (use bytes, KiB or MiB)")),
    };
    let size = number
        .parse::<u64>()
        .map_err(|_| format!("'{text}' is not a size"))?
        .saturating_mul(unit);
    let range = u64::from(cryptstream_format::MIN_CHUNK_SIZE)
        ..=u64::from(cryptstream_format::MAX_CHUNK_SIZE);
    if !range.contains(&size) {
        return Err(format!(
            "chunk size must be between 1KiB and 16MiB, not {size} bytes"
        ));
    }
    Ok(size as u32)
}

fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text, &mut seed).map_err(|_| "expected 64 hex digits".to_string())?;
    Ok(seed)
}

fn default_cipher() -> Cipher {
    #[cfg(target_arch = "x86_64")]
    let hardware_aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let hardware_aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let hardware_aes = false;
    if hardware_aes {
        Cipher::Aes256Gcm
    } else {
        Cipher::ChaCha20Poly1305
    }
}

impl RunArgs {
    fn engine(&self) -> EngineChoice {
        match self.engine {
            EngineArg::Auto => EngineChoice::Auto,
            EngineArg::Threads => EngineChoice::Threads,
            EngineArg::Processes => EngineChoice::Processes,
        }
    }

    fn io(&self) -> IoChoice {
        match self.io {
            IoArg::Auto => IoChoice::Auto,
            IoArg::Read => IoChoice::Read,
            IoArg::Pread => IoChoice::Pread,
            IoArg::Mmap => IoChoice::Mmap,
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl CryptArgs {
    fn overwrite(&self) -> Overwrite {
        if self.force {
            Overwrite::Force
        } else if self.skip_existing {
            Overwrite::SkipExisting
        } else {
            Overwrite::Refuse
        }
    }

    fn cipher(&self) -> Cipher {
        match self.cipher {
            Some(CipherArg::Aes256Gcm) => Cipher::Aes256Gcm,
            Some(CipherArg::ChaCha20Poly1305) => Cipher::ChaCha20Poly1305,
            None => default_cipher(),
        }
    }
}

/// Flags set by SIGINT/SIGTERM; a second signal exits at once with 130.
fn cancel_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(EXIT_INTERRUPTED),
            cancel.clone(),
        )?;
        signal_hook::flag::register(signal, cancel.clone())?;
    }
    Ok(cancel)
}

/// Runs `encrypt` or `decrypt`.
pub fn run_transform(direction: Direction, args: &CryptArgs) -> anyhow::Result<ExitCode> {
    let dash = Path::new("-");
    if args.input == dash || args.output == dash {
        return run_stream(direction, args);
    }
    let key_material = args.secrets.key_material(direction == Direction::Encrypt)?;
    let keyring = key_material.keyring()?;
    let encryption_key = match direction {
        Direction::Encrypt => Some(keyring.encryption_key(args.secrets.kdf_params())?),
        _ => None,
    };
    let plan = plan_transform(direction, &args.input, &args.output, args.overwrite())?;
    let settings = Settings {
        direction,
        workers: args.run.workers.unwrap_or_else(default_workers),
        cipher: args.cipher(),
        chunk_size: args.chunk_size,
        overwrite: args.overwrite(),
        durable: args.durable,
        keyring,
        encryption_key,
        fixed_salt: args.fixed_salt,
        engine: args.run.engine(),
        io: args.run.io(),
        key_material: Some(key_material),
    };
    execute(&plan, &settings, &args.run)
}

/// Runs `verify`.
pub fn run_verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let key_material = args.secrets.key_material(false)?;
    let keyring = key_material.keyring()?;
    let plan = plan_verify(&args.inputs)?;
    let settings = Settings {
        direction: Direction::Verify,
        workers: args.run.workers.unwrap_or_else(default_workers),
        cipher: default_cipher(),
        chunk_size: DEFAULT_CHUNK_SIZE,
        overwrite: Overwrite::Refuse,
        durable: false,
        keyring,
        encryption_key: None,
        fixed_salt: None,
        engine: args.run.engine(),
        io: args.run.io(),
        key_material: Some(key_material),
    };
    execute(&plan, &settings, &args.run)
}

fn execute(plan: &Plan, settings: &Settings, run_args: &RunArgs) -> anyhow::Result<ExitCode> {
    let cancel = cancel_on_signals()?;
    let reporter = Reporter::new(plan.files.len() as u64, plan.total_bytes, run_args.quiet);
    let summary = cryptstream_procs::execute(plan, settings, &reporter, &cancel);
    reporter.finish();
    report(&summary, run_args, reporter.on_terminal())
}

fn report(summary: &Summary, run_args: &RunArgs, on_terminal: bool) -> anyhow::Result<ExitCode> {
    if run_args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    }
    if on_terminal {
        for skipped in &summary.skipped {
            eprintln!(
                "cryptstream: skipped {}: {}",
                skipped.path.display(),
                skipped.reason
            );
        }
        eprintln!(
            "{}ed {} files, {:.1} MB in {:.2} s ({:.1} MB/s, {:.0} files/s)",
            summary.operation.name().trim_end_matches('e'),
            summary.files_ok,
            summary.bytes_in as f64 / 1e6,
            summary.seconds,
            summary.mb_per_s,
            summary.files_per_s
        );
    }
    if !summary.retried.is_empty() {
        eprintln!(
            "cryptstream: retried {} task(s) after a worker process died: {}",
            summary.retried.len(),
            summary
                .retried
                .iter()
                .map(|r| format!(
                    "{} ({}, worker {} {})",
                    r.path.display(),
                    r.task,
                    r.worker_pid,
                    r.cause
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if summary.cancelled {
        eprintln!("cryptstream: interrupted; temporary outputs removed (rerun with --skip-existing to finish)");
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if summary.files_failed > 0 {
        eprintln!(
            "cryptstream: {} of {} files failed",
            summary.files_failed,
            summary.files_failed + summary.files_ok
        );
        return Ok(ExitCode::from(crate::EXIT_FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

/// Unbuffered writes to a borrowed descriptor (stdout), without the line
/// scanning of `Stdout`.
struct FdWriter<'a>(BorrowedFd<'a>);

impl Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(rustix::io::write(self.0, buf)?)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encrypts or decrypts a single stream where INPUT or OUTPUT is `-`.
fn run_stream(direction: Direction, args: &CryptArgs) -> anyhow::Result<ExitCode> {
    let dash = Path::new("-");
    if args.output == dash && args.run.json {
        bail!("--json needs stdout: give an OUTPUT file instead of -");
    }
    if direction == Direction::Encrypt && args.output == dash && std::io::stdout().is_terminal() {
        bail!("refusing to write encrypted data to a terminal: redirect stdout or give an OUTPUT file");
    }
    let started = Instant::now();
    let keyring = args.secrets.keyring(direction == Direction::Encrypt)?;
    let stdin = std::io::stdin();
    let (mut input, input_meta): (Box<dyn std::io::Read>, Option<std::fs::Metadata>) =
        if args.input == dash {
            (Box::new(stdin.lock()), None)
        } else {
            let file = std::fs::File::open(&args.input)
                .with_context(|| format!("{}: cannot open", args.input.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("{}: cannot stat", args.input.display()))?;
            if meta.is_dir() {
                bail!(
                    "{}: is a directory; a directory needs a directory OUTPUT, not -",
                    args.input.display()
                );
            }
            (Box::new(file), Some(meta))
        };
    let input_name = args.input.display().to_string();
    let stdout = std::io::stdout();
    let mut atomic = None;
    let mut sink: Box<dyn Write> = if args.output == dash {
        Box::new(FdWriter(stdout.as_fd()))
    } else {
        if std::fs::symlink_metadata(&args.output).is_ok() {
            if args.skip_existing {
                return Ok(ExitCode::SUCCESS);
            }
            if !args.force {
                bail!(
                    "{}: output exists; use --force to replace or --skip-existing to keep",
                    args.output.display()
                );
            }
        }
        let out = AtomicOutput::create(&args.output, 0o666)
            .with_context(|| format!("{}: cannot create output", args.output.display()))?;
        let writer = out.file().try_clone()?;
        atomic = Some(out);
        Box::new(std::io::BufWriter::with_capacity(1 << 20, writer))
    };
    let (mode, bytes_in, bytes_out) = match direction {
        Direction::Encrypt => {
            use std::os::unix::fs::PermissionsExt;
            let key = keyring.encryption_key(args.secrets.kdf_params())?;
            let params = HeaderParams {
                cipher: args.cipher(),
                chunk_size: args.chunk_size,
                plaintext_len: input_meta.as_ref().map(|m| m.len()),
                mode: input_meta
                    .as_ref()
                    .map_or(0, |m| m.permissions().mode() & 0o7777),
            };
            let mut salt = [0u8; 32];
            match &args.fixed_salt {
                Some(seed) => salt = *blake3::keyed_hash(seed, b"-").as_bytes(),
                None => cryptstream_format::fill_random(&mut salt)?,
            }
            let n = stream::encrypt_stream(&mut input, &mut sink, &key, &params, salt)
                .with_context(|| input_name.clone())?;
            let out = cryptstream_format::Layout::new(args.chunk_size, n).ciphertext_len();
            (params.mode, n, out)
        }
        _ => {
            let (header, n) = stream::decrypt_stream(&mut input, &mut sink, &keyring)
                .with_context(|| input_name.clone())?;
            let ct = cryptstream_format::Layout::new(header.chunk_size, n).ciphertext_len();
            (header.mode, ct, n)
        }
    };
    drop(sink);
    if let Some(out) = atomic {
        if mode != 0 {
            out.set_mode(mode)?;
        }
        let replace = if args.force {
            Replace::Always
        } else {
            Replace::Never
        };
        out.commit(replace, args.durable)
            .with_context(|| format!("{}: cannot write output", args.output.display()))?;
    }
    if args.run.json {
        let seconds = started.elapsed().as_secs_f64();
        let summary = serde_json::json!({
            "operation": direction.name(), "workers": 1, "files_ok": 1, "files_failed": 0,
            "bytes_in": bytes_in, "bytes_out": bytes_out, "seconds": seconds,
            "mb_per_s": bytes_in as f64 / 1e6 / seconds.max(1e-9),
        });
        println!("{summary:#}");
    }
    Ok(ExitCode::SUCCESS)
}
