//! Where secrets come from: key files, a passphrase file, the
//! `CRYPTSTREAM_PASSPHRASE` environment variable, or a terminal prompt.
//! Never from the command line itself.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cryptstream_age::Identity;
use cryptstream_format::{parse_key_file, KdfParams, Keyring, Passphrase};
use zeroize::Zeroizing;

/// The environment variable that may hold the passphrase.
pub const PASSPHRASE_ENV: &str = "CRYPTSTREAM_PASSPHRASE";

/// The largest key or passphrase file read, in bytes (64 KiB). A key file
/// made by `keygen` is under 200 bytes and a passphrase is one line; the
/// bound keeps `-k /dev/zero`, or a file that grows while it is read, from
/// filling memory with copies of would-be secrets.
pub const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// Secret options shared by every command that needs a key.
#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    /// Key file made by `cryptstream keygen` (repeat to try several when decrypting).
    #[arg(short = 'k', long = "key-file", value_name = "FILE")]
    pub key_files: Vec<PathBuf>,
    /// Read the passphrase from the first line of FILE (or set CRYPTSTREAM_PASSPHRASE, or answer the prompt).
    #[arg(long, value_name = "FILE", conflicts_with = "key_files")]
    pub passphrase_file: Option<PathBuf>,
    /// age identity file (`age-keygen` format) to open age files with (repeatable).
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// Cheaper Argon2id costs for tests; only with the `test-knobs` feature.
    #[cfg(feature = "test-knobs")]
    #[command(flatten)]
    test_kdf: TestKdfArgs,
}

/// Hidden flags that make new passphrase files cheap to derive, so tests
/// stay fast. They exist only with the `test-knobs` feature: any other binary always
/// uses [`KdfParams::DEFAULT`], and no user can weaken a file by accident.
#[cfg(feature = "test-knobs")]
#[derive(clap::Args, Debug, Clone)]
struct TestKdfArgs {
    /// Argon2id memory in KiB for new passphrase files (testing only).
    #[arg(long, hide = true, default_value_t = KdfParams::DEFAULT.m_kib)]
    argon2_memory_kib: u32,
    /// Argon2id passes for new passphrase files (testing only).
    #[arg(long, hide = true, default_value_t = KdfParams::DEFAULT.t)]
    argon2_passes: u32,
}

/// The kinds of file a secret is read from, for messages.
#[derive(Clone, Copy, Debug)]
enum SecretFile {
    /// A key file made by `keygen` (`-k`).
    Key,
    /// A file whose first line is the passphrase (`--passphrase-file`).
    Passphrase,
    /// An age identity file (`-i`).
    Identity,
}

impl SecretFile {
    fn noun(self) -> &'static str {
        match self {
            SecretFile::Key => "key file",
            SecretFile::Passphrase => "passphrase file",
            SecretFile::Identity => "identity file",
        }
    }
}

impl SecretArgs {
    /// The Argon2id costs for new files: [`KdfParams::DEFAULT`] in a
    /// build without `test-knobs`.
    pub fn kdf_params(&self) -> KdfParams {
        #[cfg(feature = "test-knobs")]
        return KdfParams {
            m_kib: self.test_kdf.argon2_memory_kib,
            t: self.test_kdf.argon2_passes,
            p: KdfParams::DEFAULT.p,
        };
        #[cfg(not(feature = "test-knobs"))]
        KdfParams::DEFAULT
    }

    /// Reads the secrets once into a keyring: key files if given, else a
    /// passphrase from the file, the environment or the terminal (asked
    /// twice when `confirm`). Passphrase keys are derived later, by the
    /// engine, once per run.
    ///
    /// # Errors
    /// A key or passphrase file that cannot be read, is not a regular file,
    /// is larger than [`MAX_SECRET_FILE_LEN`], or does not hold a key; no
    /// passphrase anywhere.
    pub fn keyring(&self, confirm: bool) -> anyhow::Result<Keyring> {
        if !self.identities.is_empty() && self.key_files.is_empty() {
            // Identities need no passphrase: one is read only when named
            // (a file or the environment), never asked for.
            let named =
                self.passphrase_file.is_some() || std::env::var_os(PASSPHRASE_ENV).is_some();
            let passphrase = if named {
                Some(self.passphrase(false)?)
            } else {
                None
            };
            return Ok(Keyring::new(Vec::new(), passphrase));
        }
        if !self.key_files.is_empty() {
            let mut keys = Vec::new();
            for path in &self.key_files {
                let text = read_secret_file(path, SecretFile::Key)?;
                keys.push(parse_key_file(&text).with_context(|| path.display().to_string())?);
            }
            return Ok(Keyring::new(keys, None));
        }
        Ok(Keyring::new(Vec::new(), Some(self.passphrase(confirm)?)))
    }

    /// The identities that open age files: those of every `-i` file, and
    /// the passphrase of `keyring` (for scrypt stanzas).
    ///
    /// # Errors
    /// An identity file that cannot be read or holds anything but age
    /// secret keys.
    pub fn age_identities(&self, keyring: &Keyring) -> anyhow::Result<Vec<Identity>> {
        let mut identities = Vec::new();
        for path in &self.identities {
            let text = read_secret_file(path, SecretFile::Identity)?;
            identities.extend(
                cryptstream_age::parse_identity_file(&text)
                    .with_context(|| format!("{}: not an age identity file", path.display()))?,
            );
        }
        if let Some(passphrase) = keyring.passphrase() {
            identities.push(Identity::passphrase(Zeroizing::new(
                passphrase.as_bytes().to_vec(),
            )));
        }
        Ok(identities)
    }

    /// The passphrase for new age files (asked twice at a prompt).
    ///
    /// # Errors
    /// As [`SecretArgs::keyring`] without key files.
    pub fn age_passphrase(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(self.passphrase(true)?.as_bytes().to_vec()))
    }

    fn passphrase(&self, confirm: bool) -> anyhow::Result<Passphrase> {
        let text = if let Some(path) = &self.passphrase_file {
            let mut text = read_secret_file(path, SecretFile::Passphrase)?;
            let line_len = text.lines().next().map_or(0, str::len);
            text.truncate(line_len);
            if text.is_empty() {
                bail!("{}: passphrase file is empty", path.display());
            }
            text
        } else if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
            let value = Zeroizing::new(
                value
                    .into_string()
                    .map_err(|_| anyhow::anyhow!("{PASSPHRASE_ENV} is not valid UTF-8"))?,
            );
            if value.is_empty() {
                bail!("{PASSPHRASE_ENV} is empty");
            }
            value
        } else {
            prompt(confirm)?
        };
        Ok(Passphrase::new(text.as_bytes().to_vec()))
    }
}

/// Reads a key or passphrase file of at most [`MAX_SECRET_FILE_LEN`] bytes.
///
/// The file is opened without blocking (a FIFO would otherwise wait for a
/// writer), checked with `fstat` to be a regular file (after symlinks) no
/// larger than the limit, and then read with a bound of one byte past the
/// limit, so a file that grows after the check is refused too. The buffer
/// is allocated once at its final size: no reallocation leaves a copy of
/// the secret behind.
fn read_secret_file(path: &Path, kind: SecretFile) -> anyhow::Result<Zeroizing<String>> {
    let name = path.display();
    let noun = kind.noun();
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("{name}: cannot read {noun}"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("{name}: cannot read {noun}"))?;
    if !meta.is_file() {
        bail!("{name}: not a regular file; a {noun} must be a regular file");
    }
    let too_large = || {
        anyhow::anyhow!("{name}: too large to be a {noun} (more than {MAX_SECRET_FILE_LEN} bytes)")
    };
    if meta.len() > MAX_SECRET_FILE_LEN {
        return Err(too_large());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_SECRET_FILE_LEN as usize + 1));
    file.take(MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{name}: cannot read {noun}"))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(too_large());
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            drop(Zeroizing::new(err.into_bytes()));
            bail!("{name}: cannot read {noun}: not UTF-8 text")
        }
    }
}

fn prompt(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    let no_terminal = || {
        anyhow::anyhow!(
            "no key given: use --key-file, --passphrase-file or {PASSPHRASE_ENV} (no terminal to prompt on)"
        )
    };
    if std::fs::File::open("/dev/tty").is_err() {
        return Err(no_terminal());
    }
    let first =
        Zeroizing::new(rpassword::prompt_password("passphrase: ").map_err(|_| no_terminal())?);
    if first.is_empty() {
        bail!("the passphrase is empty");
    }
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("passphrase (again): ")?);
        if *first != *second {
            bail!("the passphrases do not match");
        }
    }
    Ok(first)
}
