//! `cryptstream keygen`: a new random key file, or an age identity file
//! as `age-keygen` writes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// Arguments of `keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key (created with mode 0600; never overwritten). With --age, stdout when missing.
    #[arg(short, long, value_name = "FILE", required_unless_present_any = ["age", "age_recipient"])]
    output: Option<PathBuf>,
    /// Write an age identity (X25519, as age-keygen does) instead of a cryptstream key.
    #[arg(long, conflicts_with = "age_recipient")]
    age: bool,
    /// With --age: a post-quantum hybrid identity (age1pq1... recipient, age 1.3).
    #[arg(long, requires = "age")]
    pq: bool,
    /// Print the recipients (public keys) of the age identity FILE (`-` reads it from stdin).
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    age_recipient: Option<PathBuf>,
}

/// Writes the key file and prints its public key id on stdout.
pub fn run(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.age_recipient {
        return print_recipients(path);
    }
    if args.age {
        return age_keygen(args);
    }
    let Some(output) = &args.output else {
        bail!("give the key file to write with -o FILE");
    };
    let (text, id) = cryptstream_format::generate_key_file()?;
    write_private(output, text.as_bytes(), "key file")?;
    println!("key id: {id}");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with mode 0600 (never replacing a file) and writes `text`;
/// nothing is left when the write fails.
fn write_private(path: &Path, text: &[u8], noun: &str) -> anyhow::Result<()> {
    cryptstream_output::write_new_private(path, text)
        .with_context(|| format!("{}: cannot create {noun}", path.display()))
}

/// An identity file as `age-keygen` writes it: a creation comment, the
/// public key in a comment, then the secret key.
fn age_keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let (identity, secret) = if args.pq {
        cryptstream_age::Identity::generate_hybrid()?
    } else {
        let identity = cryptstream_age::Identity::generate_x25519()?;
        let text = identity
            .encode_x25519()
            .expect("an X25519 identity has a text form");
        (identity, text)
    };
    let public = identity
        .recipient()
        .and_then(|r| r.encode())
        .expect("a key identity has a recipient");
    let text = Zeroizing::new(format!(
        "# created: {}\n# public key: {public}\n{}\n",
        rfc3339_now(),
        *secret
    ));
    match &args.output {
        Some(path) => {
            write_private(path, text.as_bytes(), "identity file")?;
            eprintln!("Public key: {public}");
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The most bytes of an identity file read from stdin: an identity
/// file holds a few keys of under 100 bytes each (or post-quantum ones of
/// a few KiB), so this bounds a mistaken `-` on a large stream.
const MAX_IDENTITY_STDIN: u64 = 64 * 1024;

/// Prints the recipient of every identity in an identity file (`-`:
/// stdin, as `age-keygen -y` reads it), one a line.
fn print_recipients(path: &PathBuf) -> anyhow::Result<ExitCode> {
    let text = if path.as_os_str() == "-" {
        use std::io::Read;
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin()
            .lock()
            .take(MAX_IDENTITY_STDIN + 1)
            .read_to_end(&mut bytes)
            .context("-: cannot read the identity file from stdin")?;
        if bytes.len() as u64 > MAX_IDENTITY_STDIN {
            bail!("-: too large to be an identity file (more than {MAX_IDENTITY_STDIN} bytes)");
        }
        Zeroizing::new(
            std::str::from_utf8(&bytes)
                .map_err(|_| anyhow::anyhow!("-: not an age identity file: not UTF-8 text"))?
                .to_owned(),
        )
    } else {
        Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read identity file", path.display()))?,
        )
    };
    let identities = cryptstream_age::parse_identity_file(&text)
        .with_context(|| format!("{}: not an age identity file", path.display()))?;
    let mut out = std::io::stdout().lock();
    for identity in identities {
        if let Some(recipient) = identity.recipient().and_then(|r| r.encode()) {
            writeln!(out, "{recipient}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The current time in UTC as RFC 3339, to the second (`2026-11-30T01:50:00Z`).
fn rfc3339_now() -> String {
    crate::messages::rfc3339(jiff::Timestamp::now().as_second(), 0)
}
