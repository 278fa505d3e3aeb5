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
use cryptstream_age::AgeEnvelope;
use cryptstream_engine::{
    keys, plan_transform_as, plan_verify, stream, Direction, Engine, IoChoice, OutputFormat,
    Overwrite, Plan, PlanError, Reason, Settings, Shown, Skipped, Summary, ThreadEngine,
    KEPT_EXISTING,
};
use cryptstream_format::Processing;
use cryptstream_format::{Cipher, Keyring, MasterKey};
use cryptstream_pool::Cancel;
use cryptstream_pool::Pool;

use crate::key_needs::{self, Need};
use crate::messages;
use crate::progress::Reporter;
use crate::secrets::SecretArgs;

/// Exit code after SIGINT/SIGTERM, as a shell reports a process killed by SIGINT.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

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
    /// A file, a directory, or `-` for stdin (the default).
    input: Option<PathBuf>,
    /// The output file or directory, or `-` for stdout (the default); a
    /// name ending in `/` is a directory, which must exist.
    output: Option<PathBuf>,
    /// The output, as age spells it (instead of the OUTPUT argument).
    #[arg(
        short = 'o',
        long = "output",
        value_name = "OUTPUT",
        conflicts_with = "output"
    )]
    output_flag: Option<PathBuf>,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    run: RunArgs,
    /// AEAD for new files (default: aes-256-gcm with AES instructions, else chacha20-poly1305).
    #[arg(long, value_enum)]
    cipher: Option<CipherArg>,
    /// Plaintext bytes per chunk for new files, 1KiB to 16MiB [default: 64KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size)]
    chunk_size: Option<u32>,
    /// Replace existing outputs.
    #[arg(short, long, conflicts_with = "skip_existing")]
    force: bool,
    /// Keep existing outputs and skip their inputs (to resume an interrupted run).
    #[arg(long)]
    skip_existing: bool,
    /// fsync every output and its directory before counting it done.
    #[arg(long)]
    durable: bool,
    /// Keep setuid, setgid and sticky bits when restoring modes (by default they are dropped and the umask applies).
    #[arg(long)]
    keep_special_bits: bool,
    /// Use this salt (64 hex digits) for every file instead of a random one. `test-knobs` builds only: no other build has this option.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true, value_name = "HEX", value_parser = parse_seed)]
    fixed_salt: Option<[u8; 32]>,
    #[command(flatten)]
    age: AgeArgs,
}

/// Options that make `encrypt` write age files (decrypt and verify
/// recognise age files by their first line).
#[derive(clap::Args, Debug)]
pub struct AgeArgs {
    /// Write age files to this recipient (age1..., age1pq1..., "ssh-ed25519 ..." or "ssh-rsa ..."; repeatable).
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    recipients: Vec<String>,
    /// Write age files to the recipients listed in FILE (one per line, # comments; repeatable).
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    recipients_files: Vec<PathBuf>,
    /// Write age files protected by a passphrase (scrypt), read as for our own files.
    #[arg(long, conflicts_with_all = ["recipients", "recipients_files"])]
    age_passphrase: bool,
    /// Write age files in the PEM-style ASCII armor (each file is then done in order, not split).
    #[arg(short = 'a', long)]
    armor: bool,
    /// scrypt work factor (log2 N) for new age passphrase files. `test-knobs` builds only.
    #[cfg(feature = "test-knobs")]
    #[arg(long, hide = true, value_name = "LOG2_N")]
    age_scrypt_log_n: Option<u8>,
}

impl AgeArgs {
    /// Whether any age option was given.
    fn wanted(&self) -> bool {
        !self.recipients.is_empty()
            || !self.recipients_files.is_empty()
            || self.age_passphrase
            || self.armor
    }

    /// The age envelope new files are sealed with, or `None` for
    /// cryptstream's own.
    fn sealing_envelope(&self, secrets: &SecretArgs) -> anyhow::Result<Option<AgeEnvelope>> {
        if !self.wanted() {
            return Ok(None);
        }
        let mut recipients = Vec::new();
        for text in &self.recipients {
            recipients.push(cryptstream_age::Recipient::parse(text)?);
        }
        for path in &self.recipients_files {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read recipients file", path.display()))?;
            recipients.extend(
                cryptstream_age::parse_recipients_file(&text)
                    .with_context(|| format!("{}: not an age recipients file", path.display()))?,
            );
        }
        if self.age_passphrase {
            #[cfg(feature = "test-knobs")]
            let log_n = self
                .age_scrypt_log_n
                .unwrap_or(cryptstream_age::SCRYPT_LOG_N);
            #[cfg(not(feature = "test-knobs"))]
            let log_n = cryptstream_age::SCRYPT_LOG_N;
            recipients.push(cryptstream_age::Recipient::Scrypt {
                passphrase: secrets.age_passphrase()?,
                log_n,
            });
        }
        if recipients.is_empty() {
            bail!("--armor writes age files: give -r RECIPIENT, -R FILE or --age-passphrase");
        }
        // Refuses bad combinations (post-quantum with X25519...) before any file.
        Ok(Some(AgeEnvelope::new().sealing_to(recipients, self.armor)?))
    }
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

#[cfg(feature = "test-knobs")]
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
    fn io(&self) -> IoChoice {
        match self.io {
            IoArg::Auto => IoChoice::Auto,
            IoArg::Read => IoChoice::Read,
            IoArg::Pread => IoChoice::Pread,
            IoArg::Mmap => IoChoice::Mmap,
        }
    }
}

pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Plaintext bytes per chunk of new files when `--chunk-size` is not
/// given (64 KiB).
const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;

impl CryptArgs {
    /// INPUT, or `-` (stdin) when none is given.
    fn input(&self) -> &Path {
        self.input.as_deref().unwrap_or(Path::new("-"))
    }

    /// OUTPUT or `-o OUTPUT`, or `-` (stdout) when neither is given.
    fn output(&self) -> &Path {
        self.output
            .as_deref()
            .or(self.output_flag.as_deref())
            .unwrap_or(Path::new("-"))
    }

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
pub(crate) fn cancel_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
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

/// The settings of a run, built once from the flags, for every command.
fn settings(
    direction: Direction,
    keyring: cryptstream_format::Keyring,
    age: AgeSetup,
    derived: Derived,
    run: &RunArgs,
    crypt: Option<&CryptArgs>,
) -> Settings {
    let builder = Settings::builder(direction, keyring)
        .encryption_key(derived.encryption_key)
        .workers(run.workers.unwrap_or_else(default_workers))
        .io(run.io())
        .umask(cryptstream_engine::process_umask());
    let builder = match age.envelope {
        Some(envelope) => {
            let envelope: Arc<dyn cryptstream_format::Envelope> = envelope;
            let builder = builder.envelope(envelope.clone());
            let builder = if age.seals {
                builder.seal_with(envelope.clone())
            } else {
                builder
            };
            if age.fallback {
                builder.fallback(envelope)
            } else {
                builder
            }
        }
        None => builder,
    };
    let Some(args) = crypt else {
        return builder.build();
    };
    let builder = builder
        .cipher(args.cipher())
        .chunk_size(args.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE))
        .overwrite(args.overwrite())
        .durable(args.durable)
        .keep_special_bits(args.keep_special_bits);
    #[cfg(feature = "test-knobs")]
    let builder = builder.fixed_salt(args.fixed_salt);
    builder.build()
}

/// What a run knows about age: the envelope (recipients for encrypt,
/// identities for the others) and its roles.
struct AgeSetup {
    /// The age envelope of the run, when it has one.
    envelope: Option<Arc<AgeEnvelope>>,
    /// It seals new files (encrypt with -r, -R or --age-passphrase).
    seals: bool,
    /// It reports files neither format recognises (a run with only age
    /// identities, no key file or passphrase).
    fallback: bool,
}

impl AgeSetup {
    /// The age side of a run: the envelope that seals new files for
    /// encrypt, the one that opens age files (from `-i` files and the
    /// passphrase) for the others.
    fn new(
        direction: Direction,
        secrets: &SecretArgs,
        age: Option<&AgeArgs>,
        keyring: &cryptstream_format::Keyring,
    ) -> anyhow::Result<AgeSetup> {
        if direction == Direction::Encrypt {
            let envelope = match age {
                Some(age) => age.sealing_envelope(secrets)?,
                None => None,
            };
            return Ok(AgeSetup {
                seals: envelope.is_some(),
                envelope: envelope.map(Arc::new),
                fallback: false,
            });
        }
        if age.is_some_and(AgeArgs::wanted) {
            bail!(
                "-r, -R, --age-passphrase and --armor are options of encrypt; \
                 decrypt and verify recognise age files by their first line"
            );
        }
        let envelope = secrets.age_envelope(keyring)?;
        let fallback = envelope.has_identities()
            && keyring.key_files().is_empty()
            && !keyring.has_passphrase();
        Ok(AgeSetup {
            envelope: Some(Arc::new(envelope)),
            seals: false,
            fallback,
        })
    }

    /// The naming rules of the run's files: new ones named by the sealing
    /// envelope, and the suffixes decrypt accepts.
    fn output_format(&self) -> OutputFormat {
        let native = OutputFormat::native();
        match &self.envelope {
            Some(envelope) if self.seals => native.sealing(&**envelope),
            Some(envelope) => native.opening(&**envelope),
            None => native.opening(&AgeEnvelope::new()),
        }
    }
}

/// The keys of a run derived before its settings are built.
struct Derived {
    /// The key that seals new files (a native encrypt run).
    encryption_key: Option<Arc<MasterKey>>,
}

/// Derives the run's passphrase keys (at most once each) into `keyring`
/// and, for a native encrypt run, the encryption key, stopping at
/// SIGINT/SIGTERM; `Ok(None)` when interrupted.
fn derive_keys(
    direction: Direction,
    keyring: &Keyring,
    age: &AgeSetup,
    plan: Option<&Plan>,
    secrets: &SecretArgs,
    cancel: &Cancel,
) -> anyhow::Result<Option<Derived>> {
    let result = match (direction, plan) {
        (Direction::Encrypt, _) if age.seals => Ok(None),
        (Direction::Encrypt, _) => {
            keys::encryption_key(keyring, secrets.kdf_params(), cancel).map(Some)
        }
        (_, Some(plan)) => keys::derive_for_plan(plan, keyring, cancel).map(|()| None),
        (_, None) => Ok(None),
    };
    match result {
        Ok(encryption_key) => Ok(Some(Derived { encryption_key })),
        Err(Reason::Cancelled) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The engine the flags choose.
fn engine_for<'p>(
    run: &RunArgs,
    pool: &'p std::cell::OnceCell<Pool>,
    workers: usize,
) -> Box<dyn Engine + 'p> {
    match run.engine {
        EngineArg::Processes => Box::new(cryptstream_procs::ProcessEngine),
        EngineArg::Auto | EngineArg::Threads => {
            Box::new(ThreadEngine::new(pool.get_or_init(|| Pool::new(workers))))
        }
    }
}

/// The most bytes of stdin read before a `decrypt` decides which secret
/// to ask for: a native header, or the start of an age header.
const STREAM_PEEK_LEN: usize =
    if cryptstream_format::MAX_HEADER_LEN > cryptstream_format::envelope::DETECT_LEN {
        cryptstream_format::MAX_HEADER_LEN
    } else {
        cryptstream_format::envelope::DETECT_LEN
    };

/// Refuses the options given to a command they do not apply to, rather
/// than ignoring them.
fn refuse_inapplicable(direction: Direction, args: &CryptArgs) -> anyhow::Result<()> {
    let secrets = &args.secrets;
    match direction {
        Direction::Encrypt => {
            if !secrets.identities.is_empty() {
                bail!(
                    "-i/--identity opens age files (decrypt, verify); to encrypt to an age identity give its recipient with -r or -R"
                );
            }
            let recipients =
                !args.age.recipients.is_empty() || !args.age.recipients_files.is_empty();
            if recipients && !secrets.keys.key_files.is_empty() {
                bail!("-k/--key-file does not apply to age files: -r and -R encrypt to recipients");
            }
            if recipients && secrets.keys.passphrase_file.is_some() {
                bail!(
                    "--passphrase-file does not apply with -r or -R; add --age-passphrase for a passphrase-protected age file instead"
                );
            }
            if args.keep_special_bits {
                bail!("--keep-special-bits applies to decrypt (restored modes), not to encrypt");
            }
        }
        Direction::Decrypt | Direction::Verify => {
            if args.cipher.is_some() {
                bail!("--cipher applies to encrypt: decrypt reads the cipher from each header");
            }
            if args.chunk_size.is_some() {
                bail!(
                    "--chunk-size applies to encrypt: decrypt reads the chunk size from each header"
                );
            }
        }
    }
    Ok(())
}

/// Runs `encrypt` or `decrypt`.
pub fn run_transform(direction: Direction, args: &CryptArgs) -> anyhow::Result<ExitCode> {
    refuse_inapplicable(direction, args)?;
    let (input, output) = (args.input(), args.output());
    let streamed = is_dash(input) || is_dash(output);
    let cancel = Cancel::from_flag(cancel_on_signals()?);
    let age_encrypt = direction == Direction::Encrypt && args.age.wanted();
    // Decrypting stdin: its first bytes are read now, to know which
    // secret to ask for, and put back in front of the stream.
    let mut peeked = None;
    let keyring = if age_encrypt {
        cryptstream_format::Keyring::new(Vec::new(), None)
    } else if direction == Direction::Encrypt {
        args.secrets.encryption_keyring()?
    } else if is_dash(input) {
        let mut prefix = Vec::with_capacity(STREAM_PEEK_LEN);
        std::io::Read::read_to_end(
            &mut std::io::Read::take(std::io::stdin().lock(), STREAM_PEEK_LEN as u64),
            &mut prefix,
        )
        .context("-: cannot read stdin")?;
        let needs: Vec<(PathBuf, Need)> = key_needs::need_of(&prefix)
            .map(|need| (PathBuf::from("-"), need))
            .into_iter()
            .collect();
        peeked = Some(prefix);
        args.secrets.decryption_keyring(&needs)?
    } else {
        let needs = key_needs::needs_of(&[input], direction);
        args.secrets.decryption_keyring(&needs)?
    };
    let age = AgeSetup::new(direction, &args.secrets, Some(&args.age), &keyring)?;
    let plan = if streamed {
        None
    } else {
        Some(listed(plan_transform_as(
            direction,
            age.output_format(),
            input,
            output,
            args.overwrite(),
        ))?)
    };
    let derive = derive_keys(
        direction,
        &keyring,
        &age,
        plan.as_ref(),
        &args.secrets,
        &cancel,
    )?;
    let Some(derived) = derive else {
        return Ok(interrupted());
    };
    let settings = settings(direction, keyring, age, derived, &args.run, Some(args));
    match &plan {
        None => run_stream(&settings, args, peeked, &cancel),
        Some(plan) => execute(plan, &settings, &args.run, &cancel),
    }
}

/// Whether `path` is `-` (stdin or stdout).
fn is_dash(path: &Path) -> bool {
    path == Path::new("-")
}

/// Runs `verify`.
pub fn run_verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let cancel = Cancel::from_flag(cancel_on_signals()?);
    let inputs: Vec<&Path> = args.inputs.iter().map(PathBuf::as_path).collect();
    let needs = key_needs::needs_of(&inputs, Direction::Verify);
    let keyring = args.secrets.decryption_keyring(&needs)?;
    let age = AgeSetup::new(Direction::Verify, &args.secrets, None, &keyring)?;
    let plan = listed(plan_verify(&args.inputs))?;
    let derive = derive_keys(
        Direction::Verify,
        &keyring,
        &age,
        Some(&plan),
        &args.secrets,
        &cancel,
    )?;
    let Some(derived) = derive else {
        return Ok(interrupted());
    };
    let settings = settings(Direction::Verify, keyring, age, derived, &args.run, None);
    execute(&plan, &settings, &args.run, &cancel)
}

/// Says that the run was interrupted and gives its exit code.
fn interrupted() -> ExitCode {
    messages::error(
        "interrupted; temporary outputs removed (rerun with --skip-existing to finish)",
    );
    ExitCode::from(EXIT_INTERRUPTED)
}

fn execute(
    plan: &Plan,
    settings: &Settings,
    run_args: &RunArgs,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let pool = std::cell::OnceCell::new();
    let engine = engine_for(run_args, &pool, settings.workers());
    let reporter = Reporter::new(plan.files.len() as u64, plan.total_bytes, run_args.quiet);
    let summary = engine.run(plan, settings, &reporter, cancel);
    reporter.finish();
    report(&summary, run_args, reporter.on_terminal())
}

fn report(summary: &Summary, run_args: &RunArgs, on_terminal: bool) -> anyhow::Result<ExitCode> {
    if run_args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    }
    // Skipped entries are told whether or not stderr is a terminal, and
    // with --quiet too: a file left out is never left out silently.
    report_skipped(&summary.skipped);
    if on_terminal {
        eprintln!(
            "{}",
            messages::escape_controls(&format!(
                "{} {}, {} in {:.2} s ({}/s, {:.0} files/s)",
                past_tense(summary.operation),
                messages::count(summary.files_ok, "file", "files"),
                cryptstream_workload::human_size(summary.bytes_in),
                summary.seconds,
                cryptstream_workload::human_size(
                    (summary.bytes_in as f64 / summary.seconds.max(1e-9)) as u64
                ),
                summary.files_per_s
            ))
        );
    }
    if !summary.retried.is_empty() {
        messages::note(format_args!(
            "retried {} after a worker process died: {}",
            messages::count(summary.retried.len() as u64, "task", "tasks"),
            summary
                .retried
                .iter()
                .map(|r| format!(
                    "{} ({}, worker {} {})",
                    Shown(&r.path),
                    r.task,
                    r.worker_pid,
                    r.cause
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if summary.cancelled {
        return Ok(interrupted());
    }
    if summary.files_failed > 0 {
        messages::error(format_args!(
            "{} of {} failed",
            summary.files_failed,
            messages::count(summary.files_failed + summary.files_ok, "file", "files")
        ));
        return Ok(ExitCode::from(crate::EXIT_FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

/// "encrypted", "decrypted", "verified".
fn past_tense(direction: Direction) -> &'static str {
    match direction {
        Direction::Encrypt => "encrypted",
        Direction::Decrypt => "decrypted",
        Direction::Verify => "verified",
    }
}

/// One line per skipped entry on stderr; the outputs that --skip-existing
/// kept are counted in one line instead (a resume would otherwise repeat
/// the whole first run).
fn report_skipped(skipped: &[Skipped]) {
    let mut kept = 0u64;
    for entry in skipped {
        if entry.reason == KEPT_EXISTING {
            kept += 1;
            continue;
        }
        messages::note(format_args!(
            "skipped {}: {}",
            Shown(&entry.path),
            entry.reason
        ));
    }
    if kept > 0 {
        messages::note(format_args!(
            "kept {} (--skip-existing)",
            messages::count(kept, "existing output", "existing outputs")
        ));
    }
}

/// A plan, or the refusal of a run that would process nothing, with every
/// entry it skipped listed first (the refusal line says how many).
fn listed(plan: Result<Plan, PlanError>) -> anyhow::Result<Plan> {
    if let Err(PlanError::NothingToProcess { skipped, .. }) = &plan {
        report_skipped(skipped);
    }
    let plan = plan?;
    if let (Some(incomplete), Some(root)) = (plan.adopted, plan.output_root()) {
        messages::note(format_args!(
            "resuming the output that an interrupted run left for {} ({} removed)",
            Shown(root),
            messages::count(incomplete as u64, "incomplete file", "incomplete files")
        ));
    }
    Ok(plan)
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

/// Encrypts or decrypts a single stream where INPUT or OUTPUT is `-`, with
/// the run's settings.
fn run_stream(
    settings: &Settings,
    args: &CryptArgs,
    peeked: Option<Vec<u8>>,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let (input_path, output_path) = (args.input(), args.output());
    let direction = settings.direction();
    if is_dash(output_path) && args.run.json {
        bail!("--json needs stdout: give an output file with -o FILE");
    }
    // As age: encrypted binary is not written to a terminal, armor is.
    let armored = settings.envelopes().sealer().sealing() == Processing::InOrder;
    if direction == Direction::Encrypt
        && is_dash(output_path)
        && !armored
        && std::io::stdout().is_terminal()
    {
        bail!(
            "refusing to write encrypted data to a terminal: redirect stdout, \
             give -o FILE, or use --armor for age text"
        );
    }
    let started = Instant::now();
    let stdin = std::io::stdin();
    let input = if is_dash(input_path) {
        stream::StreamInput::Reader(match peeked {
            Some(prefix) => Box::new(std::io::Read::chain(
                std::io::Cursor::new(prefix),
                stdin.lock(),
            )),
            None => Box::new(stdin.lock()),
        })
    } else {
        stream::StreamInput::File(input_path)
    };
    let stdout = std::io::stdout();
    let output = if is_dash(output_path) {
        stream::StreamOutput::Writer(Box::new(FdWriter(stdout.as_fd())))
    } else {
        stream::StreamOutput::File(output_path)
    };
    let streamed = match stream::run_stream(settings, input, output, cancel)? {
        stream::StreamOutcome::Done(streamed) => streamed,
        stream::StreamOutcome::KeptExisting => return Ok(ExitCode::SUCCESS),
        stream::StreamOutcome::Cancelled => return Ok(interrupted()),
    };
    let (bytes_in, bytes_out) = match direction {
        Direction::Encrypt => (streamed.plaintext_len, streamed.encrypted_len),
        _ => (streamed.encrypted_len, streamed.plaintext_len),
    };
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
