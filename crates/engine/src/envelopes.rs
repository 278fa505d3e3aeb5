//! The envelopes of a run: which one seals new files, which ones open
//! files (recognised by their first bytes), and which one reports a file
//! that none recognises. The CLI chooses them; the engine only sees the
//! [`Envelope`] trait.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use cryptstream_format::envelope::DETECT_LEN;
use cryptstream_format::{Envelope, Processing};

/// The envelopes of a run; see the module docs.
#[derive(Clone)]
pub struct Envelopes {
    /// Seals new files.
    sealer: Arc<dyn Envelope>,
    /// Open files, tried in this order by their first bytes.
    openers: Vec<Arc<dyn Envelope>>,
    /// Opens (and so reports) a file that no opener recognises.
    fallback: Arc<dyn Envelope>,
}

impl Envelopes {
    /// `native` seals, opens and reports unknown files, until changed.
    pub(crate) fn new(native: Arc<dyn Envelope>) -> Envelopes {
        Envelopes {
            sealer: native.clone(),
            openers: vec![native.clone()],
            fallback: native,
        }
    }

    /// Adds `envelope` to the openers, before those already there.
    pub(crate) fn add_opener(&mut self, envelope: Arc<dyn Envelope>) {
        self.openers.insert(0, envelope);
    }

    /// Makes `envelope` the sealer.
    pub(crate) fn set_sealer(&mut self, envelope: Arc<dyn Envelope>) {
        self.sealer = envelope;
    }

    /// Makes `envelope` the one that reports unrecognised files.
    pub(crate) fn set_fallback(&mut self, envelope: Arc<dyn Envelope>) {
        self.fallback = envelope;
    }

    /// The envelope that seals new files.
    pub fn sealer(&self) -> &Arc<dyn Envelope> {
        &self.sealer
    }

    /// The envelopes that open files, in detection order.
    pub fn openers(&self) -> &[Arc<dyn Envelope>] {
        &self.openers
    }

    /// The envelope that reports a file no opener recognises.
    pub fn fallback(&self) -> &Arc<dyn Envelope> {
        &self.fallback
    }

    /// The envelope of a file that starts with `prefix` (its first
    /// [`DETECT_LEN`] bytes), and how it is processed; the fallback (as
    /// chunked) when none recognises it.
    pub fn detect(&self, prefix: &[u8]) -> (&Arc<dyn Envelope>, Processing) {
        self.openers
            .iter()
            .find_map(|e| e.detect(prefix).map(|p| (e, p)))
            .unwrap_or((&self.fallback, Processing::Chunked))
    }

    /// How the file at `path` is processed (a file that cannot be read is
    /// chunked: the worker that opens it reports the error).
    pub fn processing_of(&self, path: &Path) -> Processing {
        let Ok(file) = File::open(path) else {
            return Processing::Chunked;
        };
        let mut prefix = [0u8; DETECT_LEN];
        let got = crate::file::pread_full(&file, &mut prefix, 0).unwrap_or(0);
        self.detect(&prefix[..got]).1
    }
}
