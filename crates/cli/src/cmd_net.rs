//! `cryptstream serve` and `cryptstream send`: flags into the network
//! crate's configurations (`cryptstream-net`), signals, progress and the
//! summary.

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cryptstream_net::{
    plan_tree, send, Comparison, DirDestination, Fingerprint, Identity, Progress, SendConfig,
    ServeConfig, Server, ServerTrust, Token,
};
use cryptstream_pool::Cancel;
use cryptstream_workload::{human_size, parse_size};
use indicatif::ProgressBar;

use crate::messages;
use crate::progress::{self, Counted};

/// Exit code when some file failed.
const EXIT_FAILURE: u8 = 1;
/// Exit code of `serve` stopped by SIGINT or SIGTERM (128 + SIGINT, as
/// shells report an interrupted command).
const EXIT_STOPPED: u8 = 130;

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the
    /// address is printed).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Folder that received files go into (created if missing); names
    /// sent by clients are kept below it.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    root: Option<PathBuf>,
    /// Host the objects of the store in DIR (made by `store init`)
    /// instead of receiving files: clients use it as
    /// `store --store cst://HOST:PORT`. The server needs no key and never
    /// sees plaintext.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// With --store: clients may create and read objects, never delete
    /// one (forget and gc then run on this machine, with the key).
    #[arg(long, requires = "store")]
    append_only: bool,
    /// The access token file (64 hex digits). The TLS certificate and key
    /// are kept beside it (FILE.cert.der, FILE.key.der).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// Create the token file (mode 0600) when it does not exist.
    #[arg(long)]
    create_token: bool,
    /// Most authenticated clients served at once; others wait, once they
    /// proved the token, for a slot.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(256).expect("non-zero"))]
    max_connections: NonZeroUsize,
    /// Most connections at once that have not proven the token yet (a
    /// pool apart from --max-connections); more are closed at once.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(64).expect("non-zero"))]
    max_unauthenticated: NonZeroUsize,
    /// Most of those from one IP address.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(8).expect("non-zero"))]
    max_unauthenticated_per_address: NonZeroUsize,
    /// Seconds a new connection has for the TLS handshake and proving the
    /// token.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    auth_timeout: u64,
    /// Most files open at once, all clients together; a file beyond it
    /// is refused ("server busy") and its sender fails it with that reason.
    /// Keep it below the open-file limit (`ulimit -n`) minus
    /// --max-connections.
    #[arg(long, value_name = "N",
          default_value_t = NonZeroUsize::new(cryptstream_net::server::DEFAULT_MAX_OPEN_FILES).expect("non-zero"))]
    max_open_files: NonZeroUsize,
    /// Seconds a connection may stay silent (and a frame may take) before
    /// it is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds transfers in flight may go on after SIGINT/SIGTERM; what is
    /// not finished by then is kept for the next send to resume.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    grace: u64,
    /// Worker threads [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// Keep the setuid, setgid and sticky bits of received files and
    /// directories (dropped by default, as `decrypt` does).
    #[arg(long)]
    keep_special_bits: bool,
}

/// Arguments of `send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// Files and folders to send (a folder arrives under its own name).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// The access token file of the server.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// Parallel connections; a large file is split over all of them.
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(4).expect("non-zero"))]
    connections: NonZeroUsize,
    /// The SHA-256 fingerprint of the server's certificate (printed by
    /// `serve`). Without it, the one recorded in the known-hosts file is
    /// required, and a server seen for the first time is recorded there.
    #[arg(long, value_name = "HEX")]
    server_fingerprint: Option<String>,
    /// Known-hosts file [default: $XDG_CONFIG_HOME/cryptstream/known_hosts
    /// or ~/.config/cryptstream/known_hosts].
    #[arg(long, value_name = "FILE", conflicts_with = "server_fingerprint")]
    known_hosts: Option<PathBuf>,
    /// Bytes of a file one connection sends at a time (larger files are
    /// split into ranges of this size).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    range_size: u64,
    /// Seconds to wait for the server to connect or answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Compare file contents (BLAKE3, both sides read their files) to
    /// find the files the server already holds, instead of size and
    /// modification time.
    #[arg(long, short = 'c')]
    checksum: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `serve` until SIGINT or SIGTERM; exits 130 then.
pub fn run_serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let token = match Token::read(&args.token_file) {
        Ok(token) => token,
        Err(_) if args.create_token && !args.token_file.exists() => {
            let token = Token::generate();
            token.write_new(&args.token_file)?;
            messages::note(format!("created token file {}", args.token_file.display()));
            token
        }
        Err(e) if !args.token_file.exists() => {
            anyhow::bail!("{e} (give --create-token to make a new token file)")
        }
        Err(e) => return Err(e.into()),
    };
    let identity = Identity::load_or_create(&args.token_file)?;
    let (destination, objects): (Arc<dyn cryptstream_net::Destination>, _) = match &args.store {
        Some(dir) => {
            // A new store is made by its first client (`store init` on cst://).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("{}: cannot create the store folder", dir.display()))?;
            let host = cryptstream_remote::host::StoreDir::open(dir, args.append_only)
                .with_context(|| format!("{}: cannot open the store folder", dir.display()))?;
            let host: Arc<dyn cryptstream_net::objects::ObjectHost> = Arc::new(host);
            (Arc::new(cryptstream_net::objects::NoTree), Some(host))
        }
        None => {
            let root = args
                .root
                .as_ref()
                .context("give --root DIR or --store DIR")?;
            std::fs::create_dir_all(root)
                .with_context(|| format!("{}: cannot create the root folder", root.display()))?;
            let destination = DirDestination::new(root, cryptstream_engine::process_umask())
                .with_context(|| format!("{}: cannot open the root folder", root.display()))?
                .keep_special_bits(args.keep_special_bits);
            (Arc::new(destination), None)
        }
    };
    // SIGINT/SIGTERM stop the server; a second signal exits at once.
    let stop = Cancel::from_flag(crate::cmd_crypt::cancel_on_signals()?);
    let config = ServeConfig {
        listen: args.listen.clone(),
        destination,
        objects,
        token,
        identity,
        max_connections: args.max_connections.get(),
        max_open_files: args.max_open_files.get(),
        max_unauthenticated: args.max_unauthenticated.get(),
        max_unauthenticated_per_address: args.max_unauthenticated_per_address.get(),
        auth_timeout: Duration::from_secs(args.auth_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        grace: Duration::from_secs(args.grace),
        stop,
        log: Arc::new(|line: &str| messages::note(format!("serve: {line}"))),
        threads: args.threads.map(NonZeroUsize::get),
    };
    let fingerprint = config.identity.fingerprint();
    let server = Server::bind(config)?;
    let address = server.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {address}")?;
        writeln!(out, "fingerprint {}", fingerprint.to_hex())?;
        out.flush()?;
    }
    let stats = server.run();
    messages::note(format!(
        "serve: stopped by a signal after {}, {}, {} received",
        messages::count(stats.sessions, "session", "sessions"),
        messages::count(stats.files, "file", "files"),
        human_size(stats.bytes)
    ));
    Ok(ExitCode::from(EXIT_STOPPED))
}

/// The default known-hosts file.
pub fn default_known_hosts() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("cryptstream/known_hosts"));
    }
    let home = std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .context("no HOME: give --known-hosts FILE or --server-fingerprint HEX")?;
    Ok(Path::new(&home).join(".config/cryptstream/known_hosts"))
}

/// Runs `send`.
pub fn run_send(args: &SendArgs) -> anyhow::Result<ExitCode> {
    let token = Token::read(&args.token_file)?;
    let trust = match &args.server_fingerprint {
        Some(hex) => ServerTrust::Pinned(Fingerprint::parse(hex)?),
        None => ServerTrust::KnownHosts {
            file: match &args.known_hosts {
                Some(file) => file.clone(),
                None => default_known_hosts()?,
            },
            host: args.to.clone(),
        },
    };
    let plan = plan_tree(&args.paths)?;
    for skip in &plan.skipped {
        messages::note(format!("{}: skipped: {}", skip.path.display(), skip.reason));
    }
    let progress = Arc::new(SendBar::new(
        plan.files.len() as u64,
        plan.bytes(),
        args.quiet,
    ));
    let config = SendConfig {
        to: args.to.clone(),
        plan,
        comparison: if args.checksum {
            Comparison::Checksum
        } else {
            Comparison::SizeAndMtime
        },
        connections: args.connections.get(),
        token,
        trust,
        range_bytes: args.range_size,
        timeout: Duration::from_secs(args.timeout),
        progress: progress.clone(),
    };
    let summary = send(config);
    progress.finish();
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if std::io::stderr().is_terminal() && !args.quiet {
        messages::note(format!(
            "{} ({}) on the server: {} sent in {:.2} s ({}/s), {} resumed, {} ({}) already there",
            messages::count(summary.files, "file", "files"),
            human_size(summary.bytes),
            human_size(summary.bytes_sent),
            summary.seconds,
            human_size((summary.bytes_sent as f64 / summary.seconds.max(1e-9)) as u64),
            human_size(summary.bytes_resumed),
            messages::count(summary.files_skipped, "file", "files"),
            human_size(summary.bytes_skipped)
        ));
    }
    Ok(if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

/// The progress bar of `send`; failures are printed above it.
struct SendBar {
    bar: Option<ProgressBar>,
}

impl SendBar {
    fn new(files: u64, bytes: u64, quiet: bool) -> SendBar {
        let bar = progress::bar(Some(bytes), Counted::Bytes, format!("{files} files"), quiet);
        SendBar { bar }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for SendBar {
    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn note(&self, line: &dyn std::fmt::Display) {
        match &self.bar {
            Some(bar) => bar.suspend(|| messages::note(line)),
            None => messages::note(line),
        }
    }

    fn file_failed(&self, failure: &dyn std::fmt::Display) {
        match &self.bar {
            Some(bar) => bar.suspend(|| messages::error(failure)),
            None => messages::error(failure),
        }
    }
}
