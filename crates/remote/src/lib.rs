//! A store whose objects live on a `cryptstream serve --store` server:
//! the `cst://HOST:PORT` location.
//!
//! [`RemoteBackend`] implements the store's
//! [`Backend`](cryptstream_store::Backend) over the network crate's object
//! frames (`cryptstream_net::object_client`), with its own tokio runtime
//! inside a synchronous API (as the S3 backend) and a pool of
//! authenticated connections, one per request in flight (a span of a
//! pack that `get` reads is one request, whose bytes the server streams
//! and the backend takes block by block). [`host::StoreDir`]
//! is the other end: the objects of one store directory, as the server
//! keeps them. The store crate learns nothing of the network; the server
//! never holds a key and sees only the store's opaque objects.
//!
//! One server hosts one store (`serve --store DIR`), so a location is
//! `cst://HOST:PORT` and nothing more.

#![deny(missing_docs)]

mod backend;
pub mod host;

use std::fmt;

pub use backend::RemoteBackend;

/// `cst://HOST:PORT`: a store served by `cryptstream serve --store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLocation {
    /// `HOST:PORT`.
    pub address: String,
}

/// The scheme of a remote store.
pub const SCHEME: &str = "cst://";

/// A `cst://` address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{text}: {reason}")]
pub struct LocationError {
    /// The address as given.
    pub text: String,
    /// Why.
    pub reason: &'static str,
}

impl RemoteLocation {
    /// Whether `text` names a remote store.
    pub fn is_remote(text: &str) -> bool {
        text.starts_with(SCHEME)
    }

    /// Parses `cst://HOST:PORT` (a trailing `/` is allowed).
    ///
    /// # Errors
    /// No host, no port, or anything after it (one server hosts one store).
    pub fn parse(text: &str) -> Result<RemoteLocation, LocationError> {
        let fail = |reason| LocationError {
            text: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or(fail("not a cst:// address"))?;
        let address = rest.strip_suffix('/').unwrap_or(rest);
        if address.contains('/') {
            return Err(fail(
                "one server hosts one store: give cst://HOST:PORT and nothing after it",
            ));
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(fail("give the port: cst://HOST:PORT"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(fail(
                "give a host and a port from 1 to 65535: cst://HOST:PORT",
            ));
        }
        Ok(RemoteLocation {
            address: address.to_owned(),
        })
    }
}

impl fmt::Display for RemoteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_say_why() {
        let at = RemoteLocation::parse("cst://backup.lan:7070/").unwrap();
        assert_eq!(at.address, "backup.lan:7070");
        assert_eq!(at.to_string(), "cst://backup.lan:7070");
        for (text, why) in [
            ("cst://host", "give the port"),
            ("cst://host:0", "from 1 to 65535"),
            ("cst://:80", "give a host"),
            ("cst://host:80/name", "one server hosts one store"),
        ] {
            let shown = RemoteLocation::parse(text).unwrap_err().to_string();
            assert!(shown.starts_with(text) && shown.contains(why), "{shown}");
        }
    }
}
