//! The access token and the proofs of it that both ends give.
//!
//! The token is 32 random bytes, kept hex-encoded in a file of mode 0600.
//! It never crosses the wire, not even inside TLS. Each side sends a fresh
//! random nonce (the client in `Hello`, the server in `Challenge`), and
//! each proves it holds the token with an HMAC-SHA256 over both nonces and
//! `exporter`, 32 bytes of TLS keying material exported from this very
//! session (RFC 8446 §7.5), under a label of its own:
//!
//! ```text
//! server proof = HMAC(token, SERVER_LABEL || client nonce || server nonce || exporter)
//! client proof = HMAC(token, CLIENT_LABEL || server nonce || client nonce || exporter)
//! ```
//!
//! The server proves first, in its `Challenge`, so a client learns that
//! the server holds the token before it sends a name, a size or a byte;
//! the distinct labels keep one side's proof from being replayed as the
//! other's, and the exporter keeps a proof from being relayed through
//! another TLS session (a man in the middle has two sessions, with two
//! exporters).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use crate::frame::NONCE_LEN;
use crate::NetError;

/// Bytes of a token.
pub const TOKEN_LEN: usize = 32;
/// Largest token file read (hex, a newline, some slack).
const MAX_TOKEN_FILE: u64 = 1024;
/// Domain separation of the server's proof.
const SERVER_LABEL: &[u8] = b"cryptstream-net/2 server proof";
/// Domain separation of the client's proof.
const CLIENT_LABEL: &[u8] = b"cryptstream-net/2 client proof";
/// Label of the TLS exporter both proofs are bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-cryptstream-auth";
/// Bytes of the exported keying material.
pub const EXPORTER_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;

/// What a proof is computed over: the two nonces and the TLS session.
pub struct Transcript {
    /// The client's nonce (in `Hello`).
    pub client_nonce: [u8; NONCE_LEN],
    /// The server's nonce (in `Challenge`).
    pub server_nonce: [u8; NONCE_LEN],
    /// The session's exported keying material.
    pub exporter: [u8; EXPORTER_LEN],
}

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
        let mut text = Zeroizing::new(hex::encode(&self.0[..]));
        text.push('\n');
        cryptstream_output::write_new_private(path, text.as_bytes()).map_err(fail)
    }

    /// The server's proof over `transcript`.
    pub fn server_proof(&self, transcript: &Transcript) -> [u8; PROOF_LEN] {
        self.sign(&[
            SERVER_LABEL,
            &transcript.client_nonce,
            &transcript.server_nonce,
            &transcript.exporter,
        ])
    }

    /// The client's proof over `transcript`.
    pub fn client_proof(&self, transcript: &Transcript) -> [u8; PROOF_LEN] {
        self.sign(&[
            CLIENT_LABEL,
            &transcript.server_nonce,
            &transcript.client_nonce,
            &transcript.exporter,
        ])
    }

    /// Whether `proof` is the server's proof, compared in constant time.
    pub fn verify_server(&self, transcript: &Transcript, proof: &[u8]) -> bool {
        let expected = self.server_proof(transcript);
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected, proof).is_ok()
    }

    /// Whether `proof` is the client's proof, compared in constant time.
    pub fn verify_client(&self, transcript: &Transcript, proof: &[u8]) -> bool {
        let expected = self.client_proof(transcript);
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected, proof).is_ok()
    }

    fn sign(&self, parts: &[&[u8]]) -> [u8; PROOF_LEN] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut context = hmac::Context::with_key(&key);
        for part in parts {
            context.update(part);
        }
        let mut out = [0u8; PROOF_LEN];
        out.copy_from_slice(context.sign().as_ref());
        out
    }
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
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
        let transcript = Transcript {
            client_nonce: [3; NONCE_LEN],
            server_nonce: [4; NONCE_LEN],
            exporter: [5; EXPORTER_LEN],
        };
        let server = token.server_proof(&transcript);
        let client = token.client_proof(&transcript);
        assert!(again.verify_server(&transcript, &server));
        assert!(again.verify_client(&transcript, &client));
        // One side's proof is never the other's.
        assert!(!again.verify_server(&transcript, &client));
        assert!(!again.verify_client(&transcript, &server));
        // Every input counts.
        for change in 0..3 {
            let mut other = Transcript { ..transcript };
            match change {
                0 => other.client_nonce[0] ^= 1,
                1 => other.server_nonce[0] ^= 1,
                _ => other.exporter[0] ^= 1,
            }
            assert!(!again.verify_server(&other, &server));
            assert!(!again.verify_client(&other, &client));
        }
        assert!(!Token::generate().verify_server(&transcript, &server));
        assert!(!again.verify_client(&transcript, &client[..31]));
        std::fs::write(&path, "abc\n").unwrap();
        assert!(Token::read(&path).is_err());
        std::fs::write(&path, "0".repeat(2000)).unwrap();
        assert!(Token::read(&path).is_err());
    }
}
