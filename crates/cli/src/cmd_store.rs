//! `cryptstream store ...`: flags into calls of `cryptstream-store`, results
//! into lines, JSON and exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cryptstream_format::Keyring;
use cryptstream_location::{
    cache, GcGate, OpenOptions, OpenedStore, RemoteOptions, RemoteTrust, StoreLocation,
};
use cryptstream_pool::{Cancel, Pool};
use cryptstream_store::{
    format_uid, ChunkerParams, FileRow, GetOptions, PutOptions, PutOutcome, Settings, Store,
};
use indicatif::ProgressBar;

use crate::cmd_crypt::{cancel_on_signals, default_workers, EXIT_INTERRUPTED};
use crate::messages;
use crate::secrets::KeyArgs;

/// The environment variable that names the store directory.
pub const STORE_ENV: &str = "CRYPTSTREAM_STORE";

/// [`cryptstream_store::DEFAULT_MAX_MEMORY`] as the help shows it (a test checks that the two agree).
const DEFAULT_MAX_MEMORY_TEXT: &str = "256MiB";

/// Options of every store command.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The store: a directory, s3://BUCKET/PREFIX (endpoint, region and
    /// credentials from the AWS_* variables), or cst://HOST:PORT (a
    /// `serve --store` server; give --token-file).
    #[arg(long, global = true, value_name = "DIR|s3://BUCKET/PREFIX|cst://HOST:PORT", env = STORE_ENV)]
    pub store: Option<PathBuf>,
    /// S3 requests in flight at once.
    #[arg(long, global = true, value_name = "N",
          default_value_t = cryptstream_location::DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// Where registry caches live (a private directory of yours, never the
    /// store; default: $XDG_CACHE_HOME/cryptstream, else ~/.cache/cryptstream).
    #[arg(long, global = true, value_name = "DIR", env = "CRYPTSTREAM_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// For a cst://HOST:PORT store: the access token file of its server.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// For a cst:// store: the SHA-256 fingerprint of the server's
    /// certificate (printed by `serve`); without it, the known-hosts file
    /// is used as by `send`.
    #[arg(long, global = true, value_name = "HEX")]
    pub server_fingerprint: Option<String>,
    /// For a cst:// store: the known-hosts file [default:
    /// $XDG_CONFIG_HOME/cryptstream/known_hosts or ~/.config/cryptstream/known_hosts].
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "server_fingerprint"
    )]
    pub known_hosts: Option<PathBuf>,
    #[command(flatten)]
    pub secrets: KeyArgs,
    /// Worker threads (default: one per core).
    #[arg(long, global = true, value_name = "N")]
    pub workers: Option<usize>,
    /// Bytes of chunks (and packs being committed) in flight at most, for
    /// put, get and verify (e.g. 64MiB).
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size,
          default_value = DEFAULT_MAX_MEMORY_TEXT)]
    pub max_memory: u64,
    /// No progress bar.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// The store subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum StoreCommand {
    /// Create a store: config (master key wrapped under your key), data area, registry.
    Init(InitArgs),
    /// Store files and trees; prints the id of each new entry.
    Put(PutArgs),
    /// Restore a snapshot, or part of one: get SNAP[:PATH]... [DEST] (also a file id, or a name: found in the newest snapshot that holds it).
    Get(GetArgs),
    /// List the entries of the newest snapshot (--all: of every snapshot).
    List(ListArgs),
    /// List the snapshots: id, time, host, tags, paths, entries.
    Snapshots(JsonArgs),
    /// List the entries of a snapshot: ls SNAP[:PATH].
    Ls(LsArgs),
    /// Find entries whose name or path matches a glob, in every snapshot.
    Find(FindArgs),
    /// What changed between two snapshots: + added, - removed, M modified.
    Diff(DiffArgs),
    /// Write one file of a snapshot to stdout: dump SNAP:FILE.
    Dump(DumpArgs),
    /// Forget snapshots, by id or by a --keep-* policy (space comes back with `gc`, or --prune).
    Forget(ForgetArgs),
    /// Record one snapshot of a store made before snapshots (once).
    Migrate,
    /// Reclaim the space of forgotten snapshots and of killed puts; skipped while a put runs.
    Gc,
    /// Totals: entries, bytes, dedup and compression ratios.
    Stat(JsonArgs),
    /// Check that every referenced chunk exists; --read-data reads and authenticates them all.
    Verify(VerifyArgs),
    /// Rebuild the registry from the packs and manifests alone.
    Reindex,
    /// An interactive prompt: put/get/delete as background jobs, jobs, list, exit.
    Shell,
}

/// `store init`.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// Smallest chunk (FastCDC minimum).
    #[arg(long, value_name = "SIZE", value_parser = parse_size32, default_value = "256KiB")]
    pub chunk_min: u32,
    /// Average chunk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size32, default_value = "1MiB")]
    pub chunk_avg: u32,
    /// Largest chunk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size32, default_value = "4MiB")]
    pub chunk_max: u32,
    /// Size at which a pack file is closed.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "32MiB")]
    pub pack_target: u64,
    /// zstd level for chunks.
    #[arg(long, value_name = "N", default_value_t = Settings::DEFAULT.zstd_level)]
    pub zstd_level: i32,
}

/// `store put`.
#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    /// Files and directories to store.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Read every file, even those whose size, mtime, ctime and inode match the registry.
    #[arg(long, alias = "no-cache")]
    pub force_read: bool,
    /// Print a JSON summary on stdout instead of one line per entry.
    #[arg(long)]
    pub json: bool,
    /// A tag for the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The host the snapshot names (default: this host's name).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

/// `store get`.
#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    /// Ids or names, then optionally the destination directory (default: the current directory).
    #[arg(required = true, value_name = "SEL... [DEST]")]
    pub args: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
    /// Keep setuid, setgid and sticky bits when restoring modes (by default they are dropped and the umask applies).
    #[arg(long)]
    pub keep_special_bits: bool,
}

/// `store list`.
#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// Every version, not only the newest of each name.
    #[arg(long)]
    pub all: bool,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store ls`.
#[derive(clap::Args, Debug, Clone)]
pub struct LsArgs {
    /// The snapshot (an id prefix or `latest`), optionally `:PATH` inside it.
    #[arg(value_name = "SNAP[:PATH]")]
    pub target: String,
    /// Kind, mode, size and modification time too.
    #[arg(long, short = 'l')]
    pub long: bool,
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store find`.
#[derive(clap::Args, Debug, Clone)]
pub struct FindArgs {
    /// A glob, matched against each entry's name and its whole path (`*.jpg`, `photos/**/2024*`).
    pub pattern: String,
}

/// `store diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// The older snapshot.
    pub from: String,
    /// The newer snapshot.
    pub to: String,
}

/// `store dump`.
#[derive(clap::Args, Debug, Clone)]
pub struct DumpArgs {
    /// The file: SNAP:PATH.
    #[arg(value_name = "SNAP:FILE")]
    pub target: String,
}

/// `store forget`.
#[derive(clap::Args, Debug, Clone)]
pub struct ForgetArgs {
    /// Snapshots to forget (id prefixes).
    #[arg(value_name = "SNAP")]
    pub snapshots: Vec<String>,
    /// Keep the newest N snapshots (of each host and set of paths).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the newest N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the newest N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the newest N weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the newest N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the newest N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
    /// Say what would be forgotten; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run `gc` afterwards, to reclaim the space.
    #[arg(long)]
    pub prune: bool,
}

/// A `--json` flag.
#[derive(clap::Args, Debug, Clone)]
pub struct JsonArgs {
    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store verify`.
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Read, authenticate, decompress and hash every chunk.
    #[arg(long)]
    pub read_data: bool,
}

fn parse_size(text: &str) -> Result<u64, String> {
    cryptstream_workload::parse_size(text).map_err(|e| e.to_string())
}

fn parse_size32(text: &str) -> Result<u32, String> {
    u32::try_from(parse_size(text)?).map_err(|_| "too large".to_owned())
}

/// Progress: a bar on stderr when it is a terminal, and counters that a
/// shell job shows on `jobs`.
pub struct Bar(Option<ProgressBar>, Option<Arc<JobCounters>>);

/// Bytes done and total of a job.
#[derive(Default)]
pub struct JobCounters {
    /// Bytes done.
    pub done: std::sync::atomic::AtomicU64,
    /// Bytes in all, when known.
    pub total: std::sync::atomic::AtomicU64,
}

impl Bar {
    /// Counters only (a shell job).
    pub fn counters(counters: Arc<JobCounters>) -> Bar {
        Bar(None, Some(counters))
    }

    /// A bar titled `what`, hidden when `quiet` or stderr is no terminal.
    pub fn new(what: &str, quiet: bool) -> Bar {
        Bar(
            crate::progress::bar(
                None,
                crate::progress::Counted::Bytes,
                what.to_owned(),
                quiet,
            ),
            None,
        )
    }

    fn suspend(&self, f: impl FnOnce()) {
        match &self.0 {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl cryptstream_store::Progress for Bar {
    fn shows_total(&self) -> bool {
        self.0.is_some() || self.1.is_some()
    }

    fn set_total(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(bytes);
        }
        if let Some(c) = &self.1 {
            c.total.store(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
        if let Some(c) = &self.1 {
            c.done
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The store directory from `--store` or `CRYPTSTREAM_STORE`.
pub fn store_dir(args: &StoreArgs) -> anyhow::Result<PathBuf> {
    args.store.clone().ok_or_else(|| {
        anyhow::anyhow!("no store given: use --store DIR, s3://BUCKET/PREFIX or cst://HOST:PORT, or set {STORE_ENV}")
    })
}

/// How every store of this run is opened: `--connections`, and the
/// registry cache directory (`--cache-dir`, else from the environment).
pub fn open_options(args: &StoreArgs) -> OpenOptions {
    OpenOptions {
        connections: args.connections,
        cache_dir: args
            .cache_dir
            .clone()
            .or_else(|| cache::default_root(|name| std::env::var_os(name))),
        remote: args.token_file.as_ref().map(|token_file| RemoteOptions {
            token_file: token_file.clone(),
            trust: match (&args.server_fingerprint, &args.known_hosts) {
                (Some(hex), _) => RemoteTrust::Fingerprint(hex.clone()),
                (None, Some(file)) => RemoteTrust::KnownHosts(file.clone()),
                (None, None) => RemoteTrust::KnownHosts(
                    crate::cmd_net::default_known_hosts().unwrap_or_default(),
                ),
            },
            timeout_secs: 30,
        }),
    }
}

/// Opens and unlocks the store (a passphrase key is derived once,
/// cancellably); a new registry cache is filled from the store's objects.
pub fn open_store(
    location: &StoreLocation,
    options: &OpenOptions,
    keyring: &Keyring,
    cancel: &Cancel,
) -> anyhow::Result<OpenedStore> {
    let locked = location.open(options)?;
    if let Some(line) = locked.first_contact() {
        messages::note(line);
    }
    let header = locked.key_header()?;
    cryptstream_engine::keys::derive_for_header(&header, keyring, cancel)?;
    let mut opened = locked
        .unlock(keyring)
        .with_context(|| format!("{location}: cannot open the store"))?;
    if let Some(report) = opened.fill_registry(cancel)? {
        refuse_unreadable(
            &report,
            "the new local registry was not filled from the store",
        )?;
        messages::note(format_args!(
            "{location}: new local registry filled from the store ({}, {})",
            messages::count(report.files, "file", "files"),
            messages::count(report.packs, "pack", "packs")
        ));
    }
    Ok(opened)
}

/// Names every object a reindex could not read and fails with `what`: a
/// registry without their entries must not be used (a gc would reclaim
/// their data).
fn refuse_unreadable(
    report: &cryptstream_store::maintain::ReindexReport,
    what: &str,
) -> anyhow::Result<()> {
    if report.problems.is_empty() {
        return Ok(());
    }
    for p in &report.problems {
        messages::error(p);
    }
    anyhow::bail!(
        "{what}: {} objects could not be read; repair or remove them, then run `store reindex`",
        report.problems.len()
    )
}

/// Runs `store ...`.
pub fn run(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let location = StoreLocation::from_arg(&store_dir(args)?)?;
    let options = open_options(args);
    let cancel = Cancel::from_flag(cancel_on_signals()?);
    if let StoreCommand::Init(init) = &args.command {
        let keyring = args.secrets.keyring(true)?;
        let key =
            cryptstream_engine::keys::encryption_key(&keyring, args.secrets.kdf_params(), &cancel)?;
        let settings = Settings {
            chunker: ChunkerParams {
                min: init.chunk_min,
                avg: init.chunk_avg,
                max: init.chunk_max,
            },
            zstd_level: init.zstd_level,
            pack_target: init.pack_target,
        };
        let created = location.init(&options, &key, &settings)?;
        match created.write_mode {
            None => messages::note(format_args!("created store {location}")),
            Some(mode) => messages::note(format_args!(
                "created store {location}; {}",
                mode.describe()
            )),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keyring = Arc::new(args.secrets.keyring(false)?);
    let result = open_store(&location, &options, &keyring, &cancel)
        .and_then(|store| run_command(args, &location, &options, keyring, store, &cancel));
    match result {
        // Stopped by SIGINT or SIGTERM: every step already taken left the
        // store consistent.
        Err(e) if cancel.is_cancelled() && is_cancelled(&e) => {
            messages::note("interrupted");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
        other => other,
    }
}

/// Whether `err` is the store's or the key derivation's "stopped by the
/// user".
fn is_cancelled(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<cryptstream_store::StoreError>(),
            Some(cryptstream_store::StoreError::Cancelled)
        ) || matches!(
            cause.downcast_ref::<cryptstream_engine::Reason>(),
            Some(cryptstream_engine::Reason::Cancelled)
        )
    })
}

/// Runs a store command other than `init` on the open store.
fn run_command(
    args: &StoreArgs,
    location: &StoreLocation,
    options: &OpenOptions,
    keyring: Arc<Keyring>,
    mut opened: OpenedStore,
    cancel: &Cancel,
) -> anyhow::Result<ExitCode> {
    let workers = args.workers.unwrap_or_else(default_workers).max(1);
    let interrupted = || ExitCode::from(EXIT_INTERRUPTED);
    let works_unmigrated = matches!(
        args.command,
        StoreCommand::Migrate
            | StoreCommand::Reindex
            | StoreCommand::Verify(_)
            | StoreCommand::Stat(_)
            | StoreCommand::Gc
    );
    if !works_unmigrated && opened.store().needs_migration()? {
        anyhow::bail!(
            "{location}: this store was made before snapshots; run `cryptstream store migrate` once \
             (it records one snapshot holding the newest version of every name)"
        );
    }
    match &args.command {
        StoreCommand::Init(_) => unreachable!("handled above"),
        StoreCommand::Put(put) => {
            let pool = Pool::with_queue_below_caller(
                workers,
                cryptstream_store::PUT_QUEUED_TASKS_PER_WORKER,
                cryptstream_store::PUT_WORKER_NICE_STEPS,
            );
            let bar = Bar::new("put", args.quiet);
            let code = run_put(
                &mut opened,
                &pool,
                put,
                args.max_memory,
                cancel,
                &bar,
                &mut std::io::stdout(),
            )?;
            bar.finish();
            Ok(code)
        }
        StoreCommand::Get(get) => {
            let pool = Pool::new(workers);
            let bar = Bar::new("get", args.quiet);
            let code = run_get(
                opened.store_mut(),
                &pool,
                get,
                args.max_memory,
                cancel,
                &bar,
            )?;
            bar.finish();
            Ok(code)
        }
        StoreCommand::List(list) => {
            run_list(opened.store(), list, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Snapshots(json) => {
            crate::store_views::run_snapshots(opened.store(), json.json, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Ls(ls) => {
            crate::store_views::run_ls(opened.store(), ls, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Find(find) => {
            crate::store_views::run_find(opened.store(), &find.pattern, &mut std::io::stdout())
        }
        StoreCommand::Diff(diff) => {
            crate::store_views::run_diff(opened.store(), diff, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Dump(dump) => {
            crate::store_views::run_dump(opened.store(), &dump.target)?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Forget(forget) => {
            if !forget.dry_run {
                opened.check_deletes()?;
            }
            let pruning = forget.prune && !forget.dry_run;
            let code = crate::store_views::run_forget(opened.store_mut(), forget)?;
            if pruning {
                return run_gc(args, &mut opened, cancel);
            }
            Ok(code)
        }
        StoreCommand::Migrate => {
            match opened.store_mut().migrate()? {
                Some(row) => messages::note(format_args!(
                    "migrate: snapshot {} records {}; older versions are reclaimed by `store gc`",
                    cryptstream_store::snapshot::short_id(&row.name),
                    messages::count(row.entries, "entry", "entries")
                )),
                None => messages::note("migrate: nothing to do (the store keeps snapshots)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Gc => run_gc(args, &mut opened, cancel),
        StoreCommand::Stat(json) => {
            run_stat(opened.store(), json.json)?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Verify(verify) => {
            let store = opened.store_mut();
            let pool = Pool::new(workers);
            let bar = Bar::new("verify", args.quiet);
            let problems = store.verify(
                &pool,
                verify.read_data,
                args.max_memory,
                cancel,
                &bar,
                &mut |p| bar.suspend(|| messages::error(p)),
            )?;
            bar.finish();
            if cancel.is_cancelled() {
                return Ok(interrupted());
            }
            if problems > 0 {
                messages::error(format_args!("verify: {problems} problems found"));
                return Ok(ExitCode::from(1));
            }
            let totals = store.totals()?;
            messages::note(format_args!(
                "verify: ok ({}, {}{})",
                messages::count(totals.files, "entry", "entries"),
                messages::count(totals.chunks, "chunk", "chunks"),
                if verify.read_data {
                    ", all data read"
                } else {
                    ""
                }
            ));
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Reindex => {
            let report = opened
                .store_mut()
                .reindex(&cryptstream_store::NoProgress, cancel)?;
            refuse_unreadable(&report, "reindex: the registry was kept as it was")?;
            messages::note(format_args!(
                "reindex: {}, {}, {}",
                messages::count(report.packs, "pack", "packs"),
                messages::count(report.chunks, "chunk", "chunks"),
                messages::count(report.files, "entry", "entries")
            ));
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Shell => {
            crate::store_shell::run(args, location, options, keyring, opened, workers)
        }
    }
}

/// `gc` (also `forget --prune`).
fn run_gc(args: &StoreArgs, opened: &mut OpenedStore, cancel: &Cancel) -> anyhow::Result<ExitCode> {
    let (_lease, refreshed) = match opened.gc_gate(cancel)? {
        GcGate::Skip(why) => {
            messages::note(format_args!("gc: skipped: {why}"));
            return Ok(ExitCode::SUCCESS);
        }
        GcGate::Behind(why) => {
            messages::note(format_args!("gc: skipped: {why}"));
            return Ok(ExitCode::SUCCESS);
        }
        GcGate::Exclusive { lease, refresh } => {
            refuse_unreadable(&refresh, "gc: not run")?;
            (lease, true)
        }
        GcGate::Beside { lease, puts } => {
            messages::note(format_args!(
                "gc: running beside {} of this cache",
                messages::count(puts as u64, "put", "puts")
            ));
            (lease, false)
        }
    };
    let store = opened.store_mut();
    let bar = Bar::new("gc", args.quiet);
    let report = store.gc(&bar, cancel, refreshed)?;
    bar.finish();
    messages::note(format_args!(
        "gc: {} chunks removed, {} packs deleted, {} rewritten, {} reclaimed; \
         {} unreferenced entries removed; \
         {} files of killed puts recovered, {} dropped; {} orphan objects deleted, {} kept (a put was running)",
        report.chunks_removed,
        report.packs_deleted,
        report.packs_rewritten,
        cryptstream_workload::human_size(report.bytes_reclaimed),
        report.files_reclaimed,
        report.files_recovered,
        report.files_dropped,
        report.orphans_deleted,
        report.orphans_kept
    ));
    Ok(ExitCode::SUCCESS)
}

/// `put`, shared with the shell. Lines go to `out`.
pub fn run_put(
    opened: &mut OpenedStore,
    pool: &Pool,
    args: &PutArgs,
    max_memory: u64,
    cancel: &Cancel,
    bar: &Bar,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let location = opened.location().clone();
    let _lease = opened.put_lease(&mut |gc| {
        messages::note(format_args!(
            "{location}: waiting for a gc by another client to finish ({})",
            gc.name
        ))
    })?;
    let store = opened.store_mut();
    let opts = PutOptions {
        max_memory,
        force_read: args.force_read,
        cancel: cancel.clone(),
        tags: args.tags.clone(),
        host: args.host.clone(),
    };
    if bar.0.is_some() {
        cryptstream_store::Progress::set_total(bar, total_size(&args.paths));
    }
    let mut entries = Vec::new();
    let (mut stored, mut unchanged, mut failed, mut new_bytes) = (0u64, 0u64, 0u64, 0u64);
    let (mut skipped, mut hard_links) = (0u64, 0u64);
    let result = store.put(pool, &args.paths, &opts, bar, &mut |r| {
        let uid = r.uid.map(format_uid).unwrap_or_default();
        let status = match &r.outcome {
            PutOutcome::Stored => {
                stored += 1;
                new_bytes += r.stored;
                if !args.json {
                    let _ = writeln!(out, "{uid}  {}", r.name);
                    let _ = out.flush();
                }
                "stored".to_owned()
            }
            PutOutcome::Unchanged => {
                unchanged += 1;
                if !args.json {
                    let _ = writeln!(out, "{uid}  {}  (unchanged)", r.name);
                }
                "unchanged".to_owned()
            }
            PutOutcome::HardLink(target) => {
                hard_links += 1;
                if !args.json {
                    let _ = writeln!(out, "{uid}  {}  (hard link to {target})", r.name);
                }
                "hard link".to_owned()
            }
            PutOutcome::Skipped(why) => {
                skipped += 1;
                bar.suspend(|| messages::note(format_args!("{}: skipped: {why}", r.name)));
                "skipped".to_owned()
            }
            PutOutcome::Failed(why) => {
                failed += 1;
                bar.suspend(|| messages::error(format_args!("{}: {why}", r.name)));
                format!("failed: {why}")
            }
        };
        if args.json {
            entries.push(serde_json::json!({
                "id": uid, "name": r.name, "kind": r.kind.name(), "size": r.size,
                "stored_bytes": r.stored, "status": status,
            }));
        }
    });
    let cancelled = matches!(result, Err(cryptstream_store::StoreError::Cancelled));
    let snapshot = match result {
        Ok(snapshot) => snapshot,
        Err(_) if cancelled => None,
        Err(e) => return Err(e.into()),
    };
    let snapshot_id = snapshot
        .as_ref()
        .map(|s| cryptstream_store::snapshot::snapshot_id(&s.name).to_owned());
    if args.json {
        let summary = serde_json::json!({
            "files": entries, "stored": stored, "unchanged": unchanged, "hard_links": hard_links, "failed": failed,
            "new_bytes": new_bytes, "interrupted": cancelled,
            "snapshot": snapshot_id,
            "snapshot_short": snapshot.as_ref().map(|s| cryptstream_store::snapshot::short_id(&s.name)),
        });
        writeln!(out, "{summary}")?;
    } else if let Some(s) = &snapshot {
        let _ = writeln!(
            out,
            "snapshot {}",
            cryptstream_store::snapshot::short_id(&s.name)
        );
    }
    bar.suspend(|| {
        messages::note(format_args!(
            "put: {stored} stored ({} new), {unchanged} unchanged, {}{failed} failed",
            cryptstream_workload::human_size(new_bytes),
            if hard_links > 0 {
                format!(
                    "{}, ",
                    messages::count(hard_links, "hard link", "hard links")
                )
            } else {
                String::new()
            }
        ))
    });
    if !cancelled && stored + unchanged + hard_links + failed == 0 && skipped > 0 {
        // Everything given was skipped: not a success (as encrypt).
        messages::error(format_args!(
            "put: nothing to store: {} skipped",
            messages::count(skipped, "entry", "entries")
        ));
        return Ok(ExitCode::from(1));
    }
    Ok(if cancelled {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The bytes below `paths` (a quick stat-only walk, for the bar's ETA).
fn total_size(paths: &[PathBuf]) -> u64 {
    fn walk(path: &Path, follow: bool) -> u64 {
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        match meta {
            Ok(m) if m.is_dir() => std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| walk(&e.path(), false)).sum())
                .unwrap_or(0),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        }
    }
    paths.iter().map(|p| walk(p, true)).sum()
}

/// Splits `get` arguments into selectors and destination (with two or
/// more, the last is the destination, as for `cp`).
pub fn get_targets(args: &[String]) -> (Vec<String>, PathBuf) {
    if args.len() >= 2 {
        let (sel, dest) = args.split_at(args.len() - 1);
        (sel.to_vec(), PathBuf::from(&dest[0]))
    } else {
        (args.to_vec(), PathBuf::from("."))
    }
}

/// `get`, shared with the shell.
pub fn run_get(
    store: &mut Store,
    pool: &Pool,
    args: &GetArgs,
    max_memory: u64,
    cancel: &Cancel,
    bar: &Bar,
) -> anyhow::Result<ExitCode> {
    let (selectors, dest) = get_targets(&args.args);
    let opts = GetOptions {
        max_memory,
        overwrite: args.force,
        umask: cryptstream_engine::process_umask(),
        keep_special_bits: args.keep_special_bits,
        cancel: cancel.clone(),
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    let result = store.get(
        pool,
        &selectors,
        &dest,
        &opts,
        bar,
        &mut |r| match &r.error {
            None => ok += 1,
            Some(why) => {
                failed += 1;
                bar.suspend(|| messages::error(format_args!("{}: {why}", r.path.display())));
            }
        },
    );
    if matches!(result, Err(cryptstream_store::StoreError::Cancelled)) {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    result?;
    bar.suspend(|| messages::note(format_args!("get: {ok} restored, {failed} failed")));
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A Unix time as RFC 3339 in UTC, as every time the command line shows.
fn format_time(seconds: i64) -> String {
    messages::rfc3339(seconds, 0)
}

fn row_json(row: &FileRow) -> serde_json::Value {
    serde_json::json!({
        "id": format_uid(row.record.uid), "name": row.record.name, "kind": row.record.kind.name(),
        "size": row.record.size, "chunks": row.record.chunks, "stored_bytes": row.stored,
        "status": row.status, "mode": format!("{:o}", row.record.mode),
        "created": row.record.created, "date": format_time(row.record.created),
    })
}

/// `list`, shared with the shell.
pub fn run_list(store: &Store, args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.json {
        let mut rows = Vec::new();
        store.list(args.all, |row| {
            rows.push(row_json(&row));
            Ok(())
        })?;
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<16}  {:>12}  {:>6}  {:>12}  {:<8}  {:<19}  {:<7}  NAME",
        "ID", "SIZE", "CHUNKS", "STORED", "STATUS", "DATE", "KIND"
    )?;
    let mut failed = None;
    store.list(args.all, |row| {
        if let Err(e) = writeln!(
            out,
            "{:<16}  {:>12}  {:>6}  {:>12}  {:<8}  {:<19}  {:<7}  {}",
            format_uid(row.record.uid),
            row.record.size,
            row.record.chunks,
            row.stored,
            row.status,
            format_time(row.record.created),
            row.record.kind.name(),
            messages::escape_controls(&row.record.name)
        ) {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(())
}

pub fn run_stat(store: &Store, json: bool) -> anyhow::Result<()> {
    let t = store.totals()?;
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let dedup = ratio(t.logical_bytes, t.unique_bytes);
    let compression = ratio(t.unique_bytes, t.stored_bytes);
    if json {
        let mut value = serde_json::to_value(&t)?;
        value["dedup_ratio"] = serde_json::json!(dedup);
        value["compression_ratio"] = serde_json::json!(compression);
        println!("{value}");
        return Ok(());
    }
    let size = cryptstream_workload::human_size;
    println!("entries:            {}", t.files);
    println!("logical size:       {}", size(t.logical_bytes));
    println!(
        "chunks:             {} ({} references)",
        t.chunks, t.chunk_refs
    );
    println!("unique data:        {}", size(t.unique_bytes));
    println!("stored (sealed):    {}", size(t.stored_bytes));
    println!("packs:              {} ({})", t.packs, size(t.pack_bytes));
    println!("dedup ratio:        {dedup:.2}");
    println!("compression ratio:  {compression:.2}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes the help shows as defaults are the library's defaults.
    #[test]
    fn help_defaults_are_the_library_defaults() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            store: StoreArgs,
        }
        let matches = Wrapper::command()
            .try_get_matches_from(["x", "init"])
            .expect("init parses with defaults");
        let store =
            <StoreArgs as clap::FromArgMatches>::from_arg_matches(&matches).expect("store args");
        assert_eq!(store.max_memory, cryptstream_store::DEFAULT_MAX_MEMORY);
        let StoreCommand::Init(init) = store.command else {
            panic!("init parsed as init");
        };
        assert_eq!(init.chunk_min, ChunkerParams::DEFAULT.min);
        assert_eq!(init.chunk_avg, ChunkerParams::DEFAULT.avg);
        assert_eq!(init.chunk_max, ChunkerParams::DEFAULT.max);
        assert_eq!(init.pack_target, Settings::DEFAULT.pack_target);
    }
}
