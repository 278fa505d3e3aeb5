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

/// Prints the top-level manual page of `cli`, or writes every page into
/// `args.out_dir`.
///
/// # Errors
/// When a page cannot be written.
pub fn run_man(args: &ManArgs, cli: clap::Command) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create directory", dir.display()))?;
        clap_mangen::generate_to(cli, dir)
            .with_context(|| format!("{}: cannot write manual pages", dir.display()))?;
        messages::note(format_args!("wrote manual pages to {}", dir.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cli).render(&mut page)?;
    write_stdout(&page)?;
    Ok(ExitCode::SUCCESS)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
