//! `cryptstream completions` and `cryptstream man`: shell completion
//! scripts and manual pages, generated from the same flag definitions that
//! parse the command line, so they cannot drift from it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;

use crate::messages;

/// The program name used in completion scripts and page titles.
const BIN_NAME: &str = "cryptstream";

/// Arguments of `completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Arguments of `man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write `cryptstream.1` and one page per subcommand
    /// (`cryptstream-encrypt.1`, ...) into DIR instead of printing the
    /// top-level page on stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` of the command `cli`.
///
/// # Errors
/// When stdout cannot be written.
pub fn run_completions(args: &CompletionsArgs, mut cli: clap::Command) -> anyhow::Result<ExitCode> {
    // Rendered in memory first: the generator panics on a write error, and
    // a closed stdout is an error to return, not a crash.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, BIN_NAME, &mut script);
    write_stdout(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// One example of the EXAMPLES section: the subcommand whose page shows
/// it (every example is on the top-level page too), the command line and
/// what it does.
struct Example {
    subcommand: &'static str,
    line: &'static str,
    what: &'static str,
}

/// The EXAMPLES section, in the order a new user meets them.
const EXAMPLES: &[Example] = &[
    Example {
        subcommand: "keygen",
        line: "cryptstream keygen -o my.key",
        what: "Write a new random key file (mode 0600) and print its key id.",
    },
    Example {
        subcommand: "encrypt",
        line: "cryptstream encrypt -k my.key photos/ photos.enc/",
        what: "Encrypt a directory tree into a mirror tree of NAME.cst files.",
    },
    Example {
        subcommand: "decrypt",
        line: "cryptstream decrypt -k my.key photos.enc/ photos/",
        what: "Decrypt it again, restoring modes, times and links.",
    },
    Example {
        subcommand: "encrypt",
        line: "tar c docs | cryptstream encrypt -r age1... > docs.tar.age",
        what: "With no path, read stdin and write stdout: an age file for a recipient.",
    },
    Example {
        subcommand: "decrypt",
        line: "cryptstream decrypt -i key.txt docs.tar.age -o docs.tar",
        what: "Decrypt an age file with an age identity file, as age -d does.",
    },
    Example {
        subcommand: "verify",
        line: "cryptstream verify -k my.key photos.enc/",
        what: "Authenticate every chunk of every file without writing anything.",
    },
    Example {
        subcommand: "store",
        line: "cryptstream store --store /backup init -k my.key",
        what: "Create a deduplicating store in /backup.",
    },
    Example {
        subcommand: "store",
        line: "cryptstream store --store /backup put -k my.key photos",
        what: "Store a tree (key flags go before or after the subcommand).",
    },
    Example {
        subcommand: "keygen",
        line: "cryptstream keygen --age-recipient - < key.txt",
        what: "Print the recipient of an age identity read from stdin.",
    },
];

/// The EXIT STATUS section.
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Every input given was processed."),
    (
        "1",
        "Something failed or was refused (each with one line on stderr), \
         or the run processed nothing it was given (every entry skipped).",
    ),
    ("2", "The command line could not be parsed."),
    (
        "130",
        "Interrupted by SIGINT or SIGTERM; temporary outputs were removed.",
    ),
];

/// The ENVIRONMENT section.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "CRYPTSTREAM_PASSPHRASE",
        "The passphrase, when no -k or --passphrase-file is given (instead of the prompt).",
    ),
    (
        "CRYPTSTREAM_STORE",
        "The store of the store commands when --store is not given.",
    ),
    ("CRYPTSTREAM_ENGINE", "The default of --engine."),
    ("CRYPTSTREAM_IO", "The default of --io."),
    (
        "CRYPTSTREAM_CACHE_DIR",
        "The default of --cache-dir: where the registry caches of stores are kept (else XDG_CACHE_HOME or HOME).",
    ),
    (
        "AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ALLOW_HTTP",
        "Where and how an s3:// store is reached.",
    ),
    ("RUST_LOG", "Diagnostic logging on stderr (e.g. RUST_LOG=debug)."),
];

/// The FILES section.
const FILES: &[(&str, &str)] = &[
    (
        "NAME.cst, NAME.age",
        "Encrypted files: cryptstream's format, or age v1 (with -r, -R or --age-passphrase).",
    ),
    (
        "key files",
        "Made by keygen, mode 0600: one line cryptstream-key-v1:HEX after # comments.",
    ),
    (
        "$XDG_CACHE_HOME/cryptstream (~/.cache/cryptstream)",
        "Local registries of S3 stores.",
    ),
    (
        "$XDG_CONFIG_HOME/cryptstream/known_hosts (~/.config/cryptstream/known_hosts)",
        "Server fingerprints that send trusts.",
    ),
];

/// Text made safe for roff: backslashes and hyphens escaped, and a line
/// that would start with a control character (`.` or `'`) guarded.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// A section of tagged paragraphs (`.TP`), one per (tag, text).
fn roff_section(title: &str, items: &[(&str, &str)]) -> String {
    let mut out = format!(".SH {title}\n");
    for (tag, text) in items {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_text(tag),
            roff_text(text)
        ));
    }
    out
}

/// The EXAMPLES, EXIT STATUS, ENVIRONMENT and FILES sections of the page
/// of `subcommand` (`None`: the top-level page, which has every example).
fn extra_sections(subcommand: Option<&str>) -> String {
    let examples: Vec<(&str, &str)> = EXAMPLES
        .iter()
        .filter(|e| match subcommand {
            None => true,
            Some(name) => name == e.subcommand,
        })
        .map(|e| (e.line, e.what))
        .collect();
    let mut out = String::new();
    if !examples.is_empty() {
        out.push_str(&roff_section("EXAMPLES", &examples));
    }
    out.push_str(&roff_section("EXIT STATUS", EXIT_STATUS));
    out.push_str(&roff_section("ENVIRONMENT", ENVIRONMENT));
    out.push_str(&roff_section("FILES", FILES));
    out
}

/// A page: clap's sections, then ours (`subcommand`: see
/// [`extra_sections`]) before the version.
fn render_page(cmd: clap::Command, subcommand: Option<&str>) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    man.render_extra_section(&mut page)?;
    page.extend_from_slice(extra_sections(subcommand).as_bytes());
    man.render_version_section(&mut page)?;
    man.render_authors_section(&mut page)?;
    Ok(page)
}

/// Writes the page of `cmd` and of each of its visible subcommands into
/// `dir`, named as `clap_mangen` names them (`cryptstream-store-put.1`).
/// `depth` 0 is the top-level page.
fn write_pages(cmd: &clap::Command, dir: &std::path::Path, depth: usize) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, depth + 1)?;
    }
    let name = cmd.get_name().to_string();
    let subcommand = (depth > 0).then_some(name.as_str());
    let file = clap_mangen::Man::new(cmd.clone()).get_filename();
    std::fs::write(dir.join(file), render_page(cmd.clone(), subcommand)?)
}

/// Prints the top-level manual page of `cli`, or writes every page into
/// `args.out_dir`.
///
/// # Errors
/// When a page cannot be written.
pub fn run_man(args: &ManArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        let mut cli = cli.disable_help_subcommand(true);
        cli.build();
        write_pages(&cli, dir, 0)
            .with_context(|| format!("{}: cannot write manual pages", dir.display()))?;
        messages::note(format_args!("wrote manual pages to {}", dir.display()));
        return Ok(ExitCode::SUCCESS);
    }
    write_stdout(&render_page(cli, None)?)?;
    Ok(ExitCode::SUCCESS)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
