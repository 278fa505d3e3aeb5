//! Where secrets come from: key files, a passphrase file, the
//! `CRYPTSTREAM_PASSPHRASE` environment variable, or a terminal prompt.
//! Never from the command line itself.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cryptstream_age::AgeEnvelope;
use cryptstream_format::{parse_key_file, KdfParams, Keyring, Passphrase};
use zeroize::Zeroizing;

use crate::key_needs::Need;

/// The environment variable that may hold the passphrase.
pub const PASSPHRASE_ENV: &str = "CRYPTSTREAM_PASSPHRASE";

/// The largest key or passphrase file read, in bytes (64 KiB). A key file
/// made by `keygen` is under 200 bytes and a passphrase is one line; the
/// bound keeps `-k /dev/zero`, or a file that grows while it is read, from
/// filling memory with copies of would-be secrets.
pub const MAX_SECRET_FILE_LEN: u64 = 64 * 1024;

/// The key options of every command that opens or writes cryptstream
/// data: `encrypt`, `decrypt`, `verify` and every `store` subcommand.
/// They are global, so that they are accepted before or after a
/// subcommand (`store -k K put` and `store put -k K`) and listed in every
/// subcommand's help.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyArgs {
    /// Key file made by `cryptstream keygen` (repeat to try several when decrypting).
    #[arg(short = 'k', long = "key-file", value_name = "FILE", global = true)]
    pub key_files: Vec<PathBuf>,
    /// Read the passphrase from the first line of FILE (or set CRYPTSTREAM_PASSPHRASE, or answer the prompt).
    #[arg(long, value_name = "FILE", conflicts_with = "key_files", global = true)]
    pub passphrase_file: Option<PathBuf>,
    /// Cheaper Argon2id costs for tests; only with the `test-knobs` feature.
    #[cfg(feature = "test-knobs")]
    #[command(flatten)]
    test_kdf: TestKdfArgs,
}

/// The key options of `encrypt`, `decrypt` and `verify`: those of
/// [`KeyArgs`] and the age identities that open age files.
#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// age identity file (`age-keygen` format, or an OpenSSH private key) to open age files with (repeatable; decrypt and verify).
    #[arg(short = 'i', long = "identity", value_name = "FILE", global = true)]
    pub identities: Vec<PathBuf>,
}

/// Hidden flags that make new passphrase files cheap to derive, so tests
/// stay fast. They exist only with the `test-knobs` feature: any other binary always
/// uses [`KdfParams::DEFAULT`], and no user can weaken a file by accident.
#[cfg(feature = "test-knobs")]
#[derive(clap::Args, Debug, Clone)]
struct TestKdfArgs {
    /// Argon2id memory in KiB for new passphrase files (testing only).
    #[arg(long, hide = true, global = true, default_value_t = KdfParams::DEFAULT.m_kib)]
    argon2_memory_kib: u32,
    /// Argon2id passes for new passphrase files (testing only).
    #[arg(long, hide = true, global = true, default_value_t = KdfParams::DEFAULT.t)]
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

impl KeyArgs {
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
        if !self.key_files.is_empty() {
            return Ok(Keyring::new(self.key_file_keys()?, None));
        }
        Ok(Keyring::new(Vec::new(), Some(self.passphrase(confirm)?)))
    }

    /// The keys of every `-k` file. A file that holds an age identity
    /// instead is refused with a hint to give it with `-i`.
    fn key_file_keys(&self) -> anyhow::Result<Vec<cryptstream_format::MasterKey>> {
        let mut keys = Vec::new();
        for path in &self.key_files {
            let text = read_secret_file(path, SecretFile::Key)?;
            match parse_key_file(&text) {
                Ok(key) => keys.push(key),
                Err(_) if cryptstream_age::parse_identity_file(&text).is_ok() => bail!(
                    "{}: is an age identity file, not a key file: give it with -i FILE, not -k",
                    path.display()
                ),
                Err(err) => return Err(err).with_context(|| path.display().to_string()),
            }
        }
        Ok(keys)
    }

    /// Whether a passphrase was named, in a file or in the environment
    /// (so that reading it asks nobody anything).
    pub fn passphrase_named(&self) -> bool {
        self.passphrase_file.is_some() || std::env::var_os(PASSPHRASE_ENV).is_some()
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

impl SecretArgs {
    /// The Argon2id costs for new files (see [`KeyArgs::kdf_params`]).
    pub fn kdf_params(&self) -> KdfParams {
        self.keys.kdf_params()
    }

    /// The keyring of an `encrypt` run: key files, or a passphrase
    /// (asked twice at a prompt).
    ///
    /// # Errors
    /// As [`KeyArgs::keyring`].
    pub fn encryption_keyring(&self) -> anyhow::Result<Keyring> {
        self.keys.keyring(true)
    }

    /// The keyring of a `decrypt` or `verify` run, decided by what the
    /// inputs' headers ask for (`needs`, see [`crate::key_needs`]): key
    /// files if given; a passphrase when one is named, or when some input
    /// needs one and no `-k` or `-i` was given (only then is the terminal
    /// asked). When no input needs a passphrase and nothing was given, the
    /// first input's header names the missing flag, before anything is
    /// asked or written.
    ///
    /// # Errors
    /// As [`KeyArgs::keyring`]; the missing `-k` or `-i` of an input.
    pub fn decryption_keyring(&self, needs: &[(PathBuf, Need)]) -> anyhow::Result<Keyring> {
        if !self.keys.key_files.is_empty() {
            return Ok(Keyring::new(self.keys.key_file_keys()?, None));
        }
        if self.keys.passphrase_named() {
            return Ok(Keyring::new(Vec::new(), Some(self.keys.passphrase(false)?)));
        }
        let wants_passphrase = needs.iter().any(|(_, need)| need.is_passphrase());
        if !self.identities.is_empty() || !wants_passphrase {
            if self.identities.is_empty() {
                if let Some((path, need)) = needs.first() {
                    bail!("{}: {}", path.display(), need.missing());
                }
            }
            return Ok(Keyring::new(Vec::new(), None));
        }
        Ok(Keyring::new(Vec::new(), Some(self.keys.passphrase(false)?)))
    }

    /// The identities that open age files: those of every `-i` file, and
    /// the passphrase of `keyring` (for scrypt stanzas).
    ///
    /// # Errors
    /// An identity file that cannot be read or holds anything but age
    /// secret keys (a cryptstream key file gets a hint to use `-k`).
    pub fn age_envelope(&self, keyring: &Keyring) -> anyhow::Result<AgeEnvelope> {
        let mut envelope = AgeEnvelope::new();
        for path in &self.identities {
            let text = read_secret_file(path, SecretFile::Identity)?;
            match cryptstream_age::parse_identity_file(&text) {
                Ok(_) => envelope = envelope.identity_file(text)?,
                Err(_) if parse_key_file(&text).is_ok() => bail!(
                    "{}: is a cryptstream key file, not an age identity file: give it with -k FILE, not -i",
                    path.display()
                ),
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("{}: not an age identity file", path.display())
                    })
                }
            }
        }
        if let Some(passphrase) = keyring.passphrase() {
            envelope = envelope.passphrase(Zeroizing::new(passphrase.as_bytes().to_vec()));
        }
        Ok(envelope)
    }

    /// The passphrase for new age files (asked twice at a prompt).
    ///
    /// # Errors
    /// As [`KeyArgs::keyring`] without key files.
    pub fn age_passphrase(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(
            self.keys.passphrase(true)?.as_bytes().to_vec(),
        ))
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
            "no key given: use -k FILE, --passphrase-file FILE or {PASSPHRASE_ENV} (no terminal to prompt on)"
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
