//! The store's `config` object: format version, the store's id, settings
//! and the wrapped master key.
//!
//! ```json
//! {"format":"cryptstream-store","version":1,"id":"<32 hex digits>",
//!  "settings":{"chunker":{"min":262144,"avg":1048576,"max":4194304},
//!              "zstd_level":3,"pack_target":33554432},
//!  "key":"<hex of a cryptstream v2 container>"}
//! ```
//!
//! The container's plaintext is the 32-byte master key followed by the
//! settings as JSON; the settings inside it are the ones used (the outer
//! copy is for people), so changing the config's text changes nothing.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use cryptstream_format::{Keyring, MasterKey, KEY_LEN};

use crate::keys::{self, StoreKeys};
use crate::StoreError;

/// Name of the config object.
pub const CONFIG_OBJECT: &str = "config";
/// The `format` field.
const FORMAT_NAME: &str = "cryptstream-store";
/// The store format version this build writes and reads.
pub const STORE_VERSION: u32 = 1;
/// The BLAKE3 context of the id of a config written before store ids.
pub const LEGACY_ID_CONTEXT: &str = "cryptstream store v1 2026-12-02 legacy store id";
/// Largest config object read (a config is under 1 KiB).
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Content-defined chunking sizes (FastCDC 2020), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No cut before this many bytes.
    pub min: u32,
    /// Target average chunk size (a power of two is not required).
    pub avg: u32,
    /// A cut is forced at this many bytes.
    pub max: u32,
}

impl ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB; see docs/STORE.md ("Chunking").
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
    };

    /// Checks the FastCDC 2020 bounds and `min <= avg <= max`.
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the bad value.
    pub fn check(&self) -> Result<(), StoreError> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(())
        } else {
            Err(StoreError::Config(format!(
                "chunker sizes {}/{}/{} out of range (min {MINIMUM_MIN}..={MINIMUM_MAX}, \
                 avg {AVERAGE_MIN}..={AVERAGE_MAX}, max {MAXIMUM_MIN}..={MAXIMUM_MAX}, min <= avg <= max)",
                self.min, self.avg, self.max
            )))
        }
    }
}

/// Settings fixed when the store is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Chunk sizes.
    pub chunker: ChunkerParams,
    /// zstd level for chunks (a chunk that does not shrink is stored as is).
    pub zstd_level: i32,
    /// A pack is closed once it holds this many bytes.
    pub pack_target: u64,
}

impl Settings {
    /// Smallest pack target accepted.
    pub const MIN_PACK_TARGET: u64 = 1024 * 1024;
    /// Largest pack target accepted.
    pub const MAX_PACK_TARGET: u64 = 1024 * 1024 * 1024;

    /// The defaults: [`ChunkerParams::DEFAULT`], zstd level 3 (restic's
    /// default is the same level; DECISIONS 344), 32 MiB packs.
    pub const DEFAULT: Settings = Settings {
        chunker: ChunkerParams::DEFAULT,
        zstd_level: 3,
        pack_target: 32 * 1024 * 1024,
    };

    /// Checks every field.
    ///
    /// # Errors
    /// [`StoreError::Config`] naming the bad value.
    pub fn check(&self) -> Result<(), StoreError> {
        self.chunker.check()?;
        if !(1..=19).contains(&self.zstd_level) {
            return Err(StoreError::Config(format!(
                "zstd level {} out of range 1..=19",
                self.zstd_level
            )));
        }
        if !(Self::MIN_PACK_TARGET..=Self::MAX_PACK_TARGET).contains(&self.pack_target) {
            return Err(StoreError::Config(format!(
                "pack target {} out of range {}..={}",
                self.pack_target,
                Self::MIN_PACK_TARGET,
                Self::MAX_PACK_TARGET
            )));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct ConfigFile {
    format: String,
    version: u32,
    /// The store's id: random, fixed at `init`, the name of its registry
    /// cache. A config written before ids existed has none (see
    /// [`LockedConfig::store_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    settings: Settings,
    key: String,
}

/// Bytes of a store id (it is written as twice as many hex digits).
pub const STORE_ID_LEN: usize = 16;

/// Whether `text` is a store id as this build writes them: exactly
/// 32 lowercase hex digits (so it is always a plain file name).
fn is_store_id(text: &str) -> bool {
    text.len() == 2 * STORE_ID_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new config: a random master key wrapped under `user_key`. Returns the
/// config object's bytes.
///
/// # Errors
/// Bad settings, random source failure.
pub fn new_config(user_key: &MasterKey, settings: &Settings) -> Result<Vec<u8>, StoreError> {
    settings.check()?;
    let mut plain = Zeroizing::new(vec![0u8; KEY_LEN]);
    cryptstream_format::fill_random(&mut plain[..])?;
    plain.extend_from_slice(&serde_json::to_vec(settings).expect("settings serialize"));
    let wrapped = keys::wrap(user_key, &plain)?;
    let mut id = [0u8; STORE_ID_LEN];
    cryptstream_format::fill_random(&mut id)?;
    let file = ConfigFile {
        format: FORMAT_NAME.into(),
        version: STORE_VERSION,
        id: Some(hex::encode(id)),
        settings: *settings,
        key: hex::encode(wrapped),
    };
    let mut text = serde_json::to_vec_pretty(&file).expect("config serializes");
    text.push(b'\n');
    Ok(text)
}

/// A parsed config whose key is still wrapped.
pub struct LockedConfig {
    wrapped: Vec<u8>,
    id: String,
    keeps_snapshots: bool,
}

impl LockedConfig {
    /// Parses the config object.
    ///
    /// # Errors
    /// [`StoreError::Config`] for anything that is not a config of a
    /// version this build reads.
    pub fn parse(bytes: &[u8]) -> Result<LockedConfig, StoreError> {
        let file: ConfigFile = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Config(format!("not a store config: {e}")))?;
        if file.format != FORMAT_NAME {
            return Err(StoreError::Config(format!(
                "not a store config (format {:?})",
                file.format
            )));
        }
        if file.version != STORE_VERSION {
            return Err(StoreError::Config(format!(
                "store format version {} is not supported (this build reads version {STORE_VERSION})",
                file.version
            )));
        }
        let wrapped = hex::decode(&file.key)
            .map_err(|_| StoreError::Config("the wrapped key is not hex".into()))?;
        let keeps_snapshots = file.id.is_some();
        let id = match file.id {
            Some(id) if is_store_id(&id) => id,
            Some(_) => {
                return Err(StoreError::Config(format!(
                    "the store id is not {} lowercase hex digits",
                    2 * STORE_ID_LEN
                )))
            }
            // A config from before store ids: the id is derived from the
            // wrapped key, which stays the same as long as the key does.
            None => {
                let hash = blake3::Hasher::new_derive_key(LEGACY_ID_CONTEXT)
                    .update(&wrapped)
                    .finalize();
                hex::encode(&hash.as_bytes()[..STORE_ID_LEN])
            }
        };
        Ok(LockedConfig {
            wrapped,
            id,
            keeps_snapshots,
        })
    }

    /// Whether `init` of a build that keeps snapshots wrote this config:
    /// store ids and snapshots arrived in the same release, so a config
    /// with its own id belongs to a store that never needs `store
    /// migrate`, whatever its objects say at the moment (a first put
    /// still in progress, every snapshot forgotten). Only a config
    /// without an id can be a store from before snapshots.
    pub fn keeps_snapshots(&self) -> bool {
        self.keeps_snapshots
    }

    /// The store's id (32 lowercase hex digits): the one `init` wrote, or
    /// for a config written before ids existed, the first 16 bytes of
    /// BLAKE3 (derive-key mode, [`LEGACY_ID_CONTEXT`]) of the wrapped key's
    /// bytes, which change only when the key is changed. It names the
    /// store's registry cache and says nothing about what the store holds.
    pub fn store_id(&self) -> &str {
        &self.id
    }

    /// The header of the wrapped key (its key source says whether a key
    /// file or a passphrase opens it, and the Argon2id costs).
    ///
    /// # Errors
    /// A damaged wrapped key.
    pub fn key_header(&self) -> Result<cryptstream_format::Header, StoreError> {
        keys::wrapped_header(&self.wrapped)
    }

    /// Opens the master key with `keyring` and returns the keys and the
    /// authenticated settings.
    ///
    /// # Errors
    /// A wrong key, a damaged config.
    pub fn unlock(&self, keyring: &Keyring) -> Result<(StoreKeys, Settings), StoreError> {
        let plain = keys::unwrap(keyring, &self.wrapped)?;
        if plain.len() < KEY_LEN {
            return Err(StoreError::Config(
                "the wrapped store key is too short".into(),
            ));
        }
        let mut master = Zeroizing::new([0u8; KEY_LEN]);
        master.copy_from_slice(&plain[..KEY_LEN]);
        let settings: Settings = serde_json::from_slice(&plain[KEY_LEN..])
            .map_err(|e| StoreError::Config(format!("bad settings in the wrapped key: {e}")))?;
        settings.check()?;
        Ok((StoreKeys::derive(&master), settings))
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    fn config_json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn every_new_store_has_a_random_id_and_an_old_config_a_stable_derived_one() {
        let key = MasterKey::from_key_bytes([3; 32]);
        let a = new_config(&key, &Settings::DEFAULT).unwrap();
        let b = new_config(&key, &Settings::DEFAULT).unwrap();
        let (ida, idb) = (
            LockedConfig::parse(&a).unwrap().store_id().to_owned(),
            LockedConfig::parse(&b).unwrap().store_id().to_owned(),
        );
        assert_ne!(ida, idb);
        assert!(is_store_id(&ida), "{ida}");
        assert_eq!(config_json(&a)["id"], ida.as_str());
        // Without an id (as before ids): derived from the wrapped key,
        // the same at every parse, not the one it had.
        let mut old = config_json(&a);
        old.as_object_mut().unwrap().remove("id");
        let old = serde_json::to_vec(&old).unwrap();
        let derived = LockedConfig::parse(&old).unwrap().store_id().to_owned();
        assert!(is_store_id(&derived) && derived != ida, "{derived}");
        assert_eq!(LockedConfig::parse(&old).unwrap().store_id(), derived);
        // An id that is not 32 lowercase hex digits is refused.
        for bad in ["../x", "ABCDEF0123456789ABCDEF0123456789", "00", ""] {
            let mut edited = config_json(&a);
            edited["id"] = bad.into();
            let err = LockedConfig::parse(&serde_json::to_vec(&edited).unwrap())
                .err()
                .expect("a bad id is refused");
            assert!(err.to_string().contains("store id"), "{bad}: {err}");
        }
    }
}
