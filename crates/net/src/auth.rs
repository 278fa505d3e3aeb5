//! The access token and the proof a client gives of it.
//!
//! The token is 32 random bytes, kept hex-encoded in a file of mode 0600.
//! It never crosses the wire, not even inside TLS: the server sends a
//! fresh random challenge, and the client answers with
//! `HMAC-SHA256(token, LABEL || challenge || exporter)` where `exporter` is
//! 32 bytes of TLS keying material exported from this very session
//! (RFC 8446 §7.5), so a proof is bound to one connection and cannot be
//! relayed through another.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::frame::NONCE_LEN;
use crate::NetError;

/// Bytes of a token.
pub const TOKEN_LEN: usize = 32;
/// Largest token file read (hex, a newline, some slack).
const MAX_TOKEN_FILE: u64 = 1024;
/// Domain separation of the proof.
const PROOF_LABEL: &[u8] = b"cryptstream-net/1 auth";
/// Label of the TLS exporter the proof is bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-cryptstream-auth";

/// The shared access secret. Zeroized on drop; no `Debug`.
pub struct Token(Zeroizing<[u8; TOKEN_LEN]>);

impl Token {
    /// A fresh random token.
    pub fn generate() -> Token {
        let mut bytes = Zeroizing::new([0u8; TOKEN_LEN]);
        aws_lc_rs::rand::fill(&mut bytes[..]).expect("the system random generator works");
        Token(bytes)
    }

    /// Reads a token file: 64 hex digits, surrounding whitespace allowed.
    ///
    /// # Errors
    /// [`NetError::Token`] naming the file and the reason.
    pub fn read(path: &Path) -> Result<Token, NetError> {
        let fail = |reason: String| NetError::Token {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        let mut text = Zeroizing::new(String::with_capacity(MAX_TOKEN_FILE as usize + 1));
        file.take(MAX_TOKEN_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_TOKEN_FILE {
            return Err(fail("file too large for a token".into()));
        }
        let mut bytes = Zeroizing::new([0u8; TOKEN_LEN]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| {
            fail(format!(
                "not a token ({} hex digits expected)",
                TOKEN_LEN * 2
            ))
        })?;
        Ok(Token(bytes))
    }

    /// Writes this token to a new file `path` (mode 0600); fails if it exists.
    ///
    /// # Errors
    /// [`NetError::Token`] naming the file and the reason.
    pub fn write_new(&self, path: &Path) -> Result<(), NetError> {
        let fail = |e: std::io::Error| NetError::Token {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(fail)?;
        let mut text = Zeroizing::new(hex::encode(&self.0[..]));
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)
    }

    /// The proof for `challenge` on a session whose exporter gave `exporter`.
    pub fn proof(&self, challenge: &[u8; NONCE_LEN], exporter: &[u8; 32]) -> [u8; 32] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut context = hmac::Context::with_key(&key);
        context.update(PROOF_LABEL);
        context.update(challenge);
        context.update(exporter);
        let tag = context.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `proof` is right, compared in constant time.
    pub fn verify(&self, challenge: &[u8; NONCE_LEN], exporter: &[u8; 32], proof: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut message = Vec::with_capacity(PROOF_LABEL.len() + NONCE_LEN + 32);
        message.extend_from_slice(PROOF_LABEL);
        message.extend_from_slice(challenge);
        message.extend_from_slice(exporter);
        hmac::verify(&key, &message, proof).is_ok()
    }
}

/// A fresh random challenge.
pub fn challenge() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).expect("the system random generator works");
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let token = Token::generate();
        token.write_new(&path).unwrap();
        assert!(token.write_new(&path).is_err(), "never overwrites");
        let again = Token::read(&path).unwrap();
        let nonce = [3u8; NONCE_LEN];
        let exporter = [4u8; 32];
        let proof = token.proof(&nonce, &exporter);
        assert!(again.verify(&nonce, &exporter, &proof));
        assert!(!again.verify(&[5u8; NONCE_LEN], &exporter, &proof));
        assert!(!again.verify(&nonce, &[0u8; 32], &proof));
        assert!(!Token::generate().verify(&nonce, &exporter, &proof));
        std::fs::write(&path, "abc\n").unwrap();
        assert!(Token::read(&path).is_err());
        std::fs::write(&path, "0".repeat(2000)).unwrap();
        assert!(Token::read(&path).is_err());
    }
}
