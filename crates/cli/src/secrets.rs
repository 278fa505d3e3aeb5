//! Where secrets come from: key files, a passphrase file, the
//! `CRYPTSTREAM_PASSPHRASE` environment variable, or a terminal prompt.
//! Never from the command line itself.

use std::path::PathBuf;

use anyhow::{bail, Context};
use cryptstream_engine::KeyMaterial;
use cryptstream_format::{parse_key_file, KdfParams, Keyring, Passphrase};
use zeroize::Zeroizing;

/// The environment variable that may hold the passphrase.
pub const PASSPHRASE_ENV: &str = "CRYPTSTREAM_PASSPHRASE";

/// Secret options shared by every command that needs a key.
#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    /// Key file made by `cryptstream keygen` (repeat to try several when decrypting).
    #[arg(short = 'k', long = "key-file", value_name = "FILE")]
    pub key_files: Vec<PathBuf>,
    /// Read the passphrase from the first line of FILE (or set CRYPTSTREAM_PASSPHRASE, or answer the prompt).
    #[arg(long, value_name = "FILE", conflicts_with = "key_files")]
    pub passphrase_file: Option<PathBuf>,
    /// Argon2id memory in KiB for new passphrase files (testing only).
    #[arg(long, hide = true, default_value_t = KdfParams::DEFAULT.m_kib)]
    pub argon2_memory_kib: u32,
    /// Argon2id passes for new passphrase files (testing only).
    #[arg(long, hide = true, default_value_t = KdfParams::DEFAULT.t)]
    pub argon2_passes: u32,
}

impl SecretArgs {
    /// The Argon2id costs for new files.
    pub fn kdf_params(&self) -> KdfParams {
        KdfParams {
            m_kib: self.argon2_memory_kib,
            t: self.argon2_passes,
            p: KdfParams::DEFAULT.p,
        }
    }

    /// Reads the secrets once, keeping them in a form that can also be
    /// handed to worker processes: key-file texts if given, else a
    /// passphrase from the file, the environment or the terminal (asked
    /// twice when `confirm`).
    pub fn key_material(&self, confirm: bool) -> anyhow::Result<KeyMaterial> {
        if !self.key_files.is_empty() {
            let mut key_files = Vec::new();
            for path in &self.key_files {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("{}: cannot read key file", path.display()))?,
                );
                parse_key_file(&text).with_context(|| path.display().to_string())?;
                key_files.push(text);
            }
            return Ok(KeyMaterial {
                key_files,
                passphrase: None,
            });
        }
        Ok(KeyMaterial {
            key_files: Vec::new(),
            passphrase: Some(self.passphrase(confirm)?),
        })
    }

    /// Builds the keyring: key files if given, else a passphrase from the
    /// file, the environment or the terminal (asked twice when `confirm`).
    pub fn keyring(&self, confirm: bool) -> anyhow::Result<Keyring> {
        if !self.key_files.is_empty() {
            let mut keys = Vec::new();
            for path in &self.key_files {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("{}: cannot read key file", path.display()))?,
                );
                keys.push(parse_key_file(&text).with_context(|| path.display().to_string())?);
            }
            return Ok(Keyring::new(keys, None));
        }
        Ok(Keyring::new(Vec::new(), Some(self.passphrase(confirm)?)))
    }

    fn passphrase(&self, confirm: bool) -> anyhow::Result<Passphrase> {
        let text = if let Some(path) = &self.passphrase_file {
            let mut text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read passphrase file", path.display()))?,
            );
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
