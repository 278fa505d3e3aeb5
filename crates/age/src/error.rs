//! What can go wrong with an age file, by the failure classes of the
//! community test kit.

use thiserror::Error;

/// The class of an age failure, as the C2SP test kit names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// No identity opened any stanza.
    NoMatch,
    /// The file key was found but the header MAC is wrong.
    Hmac,
    /// The header is malformed, non-canonical or refused.
    Header,
    /// A payload chunk is missing, damaged, reordered or truncated.
    Payload,
    /// The ASCII armor is malformed.
    Armor,
}

impl FailureClass {
    /// The name the test kit gives the class (`no match`, `HMAC failure`...).
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::NoMatch => "no match",
            FailureClass::Hmac => "HMAC failure",
            FailureClass::Header => "header failure",
            FailureClass::Payload => "payload failure",
            FailureClass::Armor => "armor failure",
        }
    }
}

/// An age failure: its class and what exactly was wrong.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AgeError {
    /// No identity matched a stanza of the header.
    #[error("age no match: {0}")]
    NoMatch(String),
    /// The header MAC did not verify with the file key.
    #[error("age HMAC failure: the header was modified (its MAC does not match)")]
    Hmac,
    /// The header is not valid.
    #[error("age header failure: {0}")]
    Header(String),
    /// A payload failure (produced by callers from chunk errors).
    #[error("age payload failure: {0}")]
    Payload(String),
    /// The armor is not valid.
    #[error("age armor failure: {0}")]
    Armor(String),
    /// A recipient, identity or key file could not be parsed or used.
    #[error("{0}")]
    Key(String),
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
}

impl AgeError {
    /// The test-kit class of this error (`None` for key and random errors,
    /// which are not about a file).
    pub fn class(&self) -> Option<FailureClass> {
        match self {
            AgeError::NoMatch(_) => Some(FailureClass::NoMatch),
            AgeError::Hmac => Some(FailureClass::Hmac),
            AgeError::Header(_) => Some(FailureClass::Header),
            AgeError::Payload(_) => Some(FailureClass::Payload),
            AgeError::Armor(_) => Some(FailureClass::Armor),
            AgeError::Key(_) | AgeError::Random => None,
        }
    }

    pub(crate) fn header(text: impl Into<String>) -> AgeError {
        AgeError::Header(text.into())
    }
}
