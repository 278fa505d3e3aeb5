//! Passphrase keys derived once per run, before any file is touched, in a
//! way that a signal can interrupt.
//!
//! Argon2id is deliberately slow and large (up to the caps of
//! [`KdfParams::check`]: 1 GiB and a few seconds). The engine therefore
//! derives every passphrase key a run needs up front, on a helper thread
//! that the calling thread watches: Ctrl-C or SIGTERM (the `cancel` flag)
//! ends the wait at once, and the process exits without waiting for the
//! derivation. The keys go into the run's [`Keyring`], so workers (threads
//! or processes) never derive a key again.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use cryptstream_format::{
    Header, KdfParams, KeySource, Keyring, MasterKey, Passphrase, MAX_HEADER_LEN,
};
use cryptstream_pool::Cancel;

use crate::file::pread_full;
use crate::plan::Plan;
use crate::Reason;

/// How often the calling thread looks at the cancel flag while a key is
/// being derived.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Stretches `passphrase` with Argon2id on a helper thread and waits for
/// it, giving up as soon as `cancel` is set.
///
/// # Errors
/// [`Reason::Cancelled`] when `cancel` was set (the helper thread is left
/// to finish on its own: the process is about to exit), or the format's
/// error for costs outside the caps.
pub fn derive_cancellable(
    passphrase: &Passphrase,
    salt: [u8; 16],
    params: KdfParams,
    cancel: &Cancel,
) -> Result<MasterKey, Reason> {
    params.check()?;
    crate::hooks::deriving();
    let (send, receive) = mpsc::channel();
    let passphrase = Passphrase::new(passphrase.as_bytes().to_vec());
    std::thread::Builder::new()
        .name("argon2id".into())
        .spawn(move || {
            let _ = send.send(MasterKey::from_passphrase(&passphrase, salt, params));
        })
        .map_err(Reason::Read)?;
    loop {
        if cancel.is_cancelled() {
            return Err(Reason::Cancelled);
        }
        match receive.recv_timeout(CANCEL_POLL) {
            Ok(result) => return Ok(result?),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Reason::Executor("the key derivation thread died".into()))
            }
        }
    }
}

/// The key that seals new files: the first key file, or the passphrase
/// stretched once with a fresh random Argon2id salt and `params` (and kept
/// in `keyring`, so that the run's own files open with it).
///
/// # Errors
/// As [`derive_cancellable`]; [`cryptstream_format::FormatError::NeedsPassphrase`]
/// when the keyring is empty.
pub fn encryption_key(
    keyring: &Keyring,
    params: KdfParams,
    cancel: &Cancel,
) -> Result<Arc<MasterKey>, Reason> {
    let Some(passphrase) = keyring
        .passphrase()
        .filter(|_| keyring.key_files().is_empty())
    else {
        return Ok(keyring.encryption_key(params)?);
    };
    let mut salt = [0u8; 16];
    cryptstream_format::fill_random(&mut salt)?;
    let key = derive_cancellable(passphrase, salt, params, cancel)?;
    keyring.insert_derived(copy_of(&key));
    Ok(Arc::new(key))
}

/// A second copy of `key` (both zeroized on drop).
pub fn copy_of(key: &MasterKey) -> MasterKey {
    MasterKey::from_parts(zeroize::Zeroizing::new(*key.expose_bytes()), *key.source())
}

/// Derives, once each, the passphrase keys that the files of `plan` name
/// in their headers (a tree encrypted in one run names one), so that no
/// worker derives a key. Headers that cannot be read or parsed are left
/// to the worker that opens the file, which reports them.
///
/// # Errors
/// [`Reason::Cancelled`] when `cancel` is set during a derivation; a
/// header whose costs exceed the caps fails its own file later, not the run.
pub fn derive_for_plan(plan: &Plan, keyring: &Keyring, cancel: &Cancel) -> Result<(), Reason> {
    let Some(passphrase) = keyring.passphrase() else {
        return Ok(());
    };
    let mut wanted: Vec<([u8; 16], KdfParams)> = Vec::new();
    for job in &plan.files {
        let Ok(file) = std::fs::File::open(&job.input) else {
            continue;
        };
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let Ok(got) = pread_full(&file, &mut bytes, 0) else {
            continue;
        };
        let Ok(header) = Header::parse(&bytes[..got]) else {
            continue;
        };
        if let KeySource::Passphrase { salt, params } = header.key_source {
            if !wanted.contains(&(salt, params)) {
                wanted.push((salt, params));
            }
        }
    }
    for (salt, params) in wanted {
        derive_into(keyring, passphrase, salt, params, cancel)?;
    }
    Ok(())
}

/// Derives the passphrase key that `header` names, if it names one, into
/// `keyring` (for a stream, whose header is read before it is decrypted).
///
/// # Errors
/// [`Reason::Cancelled`] when `cancel` is set during the derivation.
pub fn derive_for_header(
    header: &Header,
    keyring: &Keyring,
    cancel: &Cancel,
) -> Result<(), Reason> {
    match (header.key_source, keyring.passphrase()) {
        (KeySource::Passphrase { salt, params }, Some(passphrase)) => {
            derive_into(keyring, passphrase, salt, params, cancel)
        }
        _ => Ok(()),
    }
}

/// Derives one passphrase key into `keyring`. Only a cancellation is an
/// error: costs outside the caps fail the file that names them, when it
/// is opened.
fn derive_into(
    keyring: &Keyring,
    passphrase: &Passphrase,
    salt: [u8; 16],
    params: KdfParams,
    cancel: &Cancel,
) -> Result<(), Reason> {
    match derive_cancellable(passphrase, salt, params, cancel) {
        Ok(key) => keyring.insert_derived(key),
        Err(Reason::Cancelled) => return Err(Reason::Cancelled),
        Err(_) => {}
    }
    Ok(())
}
