//! `cryptstream keygen`: a new random key file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key (created with mode 0600; never overwritten).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

/// Writes the key file and prints its public key id on stdout.
pub fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let (text, id) = cryptstream_format::generate_key_file()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.output)
        .with_context(|| format!("{}: cannot create key file", args.output.display()))?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&args.output);
        return Err(e).with_context(|| format!("{}: cannot write key file", args.output.display()));
    }
    println!("key id: {id}");
    Ok(ExitCode::SUCCESS)
}
