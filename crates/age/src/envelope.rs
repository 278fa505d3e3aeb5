//! age as an [`Envelope`]: the engine seals and opens age files through
//! the same seam as cryptstream's own, and never names this crate.
//!
//! [`AgeEnvelope`] holds the recipients new files are written to (and
//! whether they are armored) and the identities that open files. A binary
//! age file is [`Processing::Chunked`]: its prefix is the header and the
//! payload nonce, its chunks are 64 KiB at computable offsets. An armored
//! one is [`Processing::InOrder`]: [`Envelope::seal_stream`] and
//! [`Envelope::open_stream`] add and remove the armor around the same
//! header and payload.

use std::io::{self, BufRead, BufReader, Write};
use std::sync::Arc;

use cryptstream_format::{
    EncodedWrite, EntryKind, EntryMeta, Envelope, EnvelopeError, FormatError, Naming, OpenedPrefix,
    Processing, SealedPrefix, SealingWriter,
};
use zeroize::Zeroizing;

use crate::{
    armor_error, parse_identity_file, AgeError, ArmoredReader, ArmoredWriter, Encoding, Header,
    Identity, Recipient,
};

/// Bytes read ahead when decoding armor.
const ARMOR_BUFFER: usize = 1 << 20;

/// The name of the age envelope, for messages and worker processes.
pub const ENVELOPE_NAME: &str = "age";

/// age v1 as an [`Envelope`]; see the module docs.
#[derive(Default)]
pub struct AgeEnvelope {
    /// Who new files are for (empty: this run does not write age files).
    recipients: Vec<Recipient>,
    /// Write new files in the ASCII armor.
    armor: bool,
    /// What opens files.
    identities: Vec<Identity>,
    /// The identity files' texts, kept so that a worker process can parse
    /// them again ([`Envelope::export`]).
    identity_files: Vec<Zeroizing<String>>,
    /// The passphrase identity, if any.
    passphrase: Option<Zeroizing<Vec<u8>>>,
}

impl AgeEnvelope {
    /// An envelope that neither seals nor opens anything yet.
    pub fn new() -> AgeEnvelope {
        AgeEnvelope::default()
    }

    /// Seals new files to `recipients`, armored when `armor`.
    ///
    /// # Errors
    /// [`AgeError::Key`] for recipients age does not allow together.
    pub fn sealing_to(
        mut self,
        recipients: Vec<Recipient>,
        armor: bool,
    ) -> Result<AgeEnvelope, AgeError> {
        crate::check_recipients(&recipients)?;
        self.recipients = recipients;
        self.armor = armor;
        Ok(self)
    }

    /// Opens files with the identities of an identity file's `text`.
    ///
    /// # Errors
    /// As [`parse_identity_file`].
    pub fn identity_file(mut self, text: Zeroizing<String>) -> Result<AgeEnvelope, AgeError> {
        self.identities.extend(parse_identity_file(&text)?);
        self.identity_files.push(text);
        Ok(self)
    }

    /// Opens passphrase (scrypt) files with `passphrase`.
    pub fn passphrase(mut self, passphrase: Zeroizing<Vec<u8>>) -> AgeEnvelope {
        self.identities
            .push(Identity::passphrase(Zeroizing::new(passphrase.to_vec())));
        self.passphrase = Some(passphrase);
        self
    }

    /// Whether any identity opens files.
    pub fn has_identities(&self) -> bool {
        !self.identities.is_empty()
    }

    /// Builds the envelope again from [`Envelope::export`]'s bytes (in a
    /// worker process).
    ///
    /// # Errors
    /// [`EnvelopeError::Container`] for bytes no export wrote.
    pub fn restore(bytes: &[u8]) -> Result<Arc<dyn Envelope>, EnvelopeError> {
        let bad = || EnvelopeError::Container("a damaged age envelope from the parent".into());
        let mut envelope = AgeEnvelope::new();
        let mut recipients = Vec::new();
        let mut armor = false;
        let mut rest = bytes;
        while let Some((&tag, after)) = rest.split_first() {
            let len_bytes: [u8; 4] = after
                .get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let value = after.get(4..4 + len).ok_or_else(bad)?;
            rest = &after[4 + len..];
            match tag {
                TAG_ARMOR => armor = true,
                TAG_RECIPIENT => {
                    let text = std::str::from_utf8(value).map_err(|_| bad())?;
                    recipients.push(Recipient::parse(text).map_err(container)?);
                }
                TAG_SCRYPT => {
                    let (&log_n, passphrase) = value.split_first().ok_or_else(bad)?;
                    recipients.push(Recipient::Scrypt {
                        passphrase: Zeroizing::new(passphrase.to_vec()),
                        log_n,
                    });
                }
                TAG_IDENTITY_FILE => {
                    let text = std::str::from_utf8(value).map_err(|_| bad())?;
                    envelope = envelope
                        .identity_file(Zeroizing::new(text.to_string()))
                        .map_err(container)?;
                }
                TAG_PASSPHRASE => {
                    envelope = envelope.passphrase(Zeroizing::new(value.to_vec()));
                }
                _ => return Err(bad()),
            }
        }
        if !recipients.is_empty() {
            envelope = envelope.sealing_to(recipients, armor).map_err(container)?;
        }
        Ok(Arc::new(envelope))
    }
}

/// Export record tags.
const TAG_ARMOR: u8 = 1;
const TAG_RECIPIENT: u8 = 2;
const TAG_SCRYPT: u8 = 3;
const TAG_IDENTITY_FILE: u8 = 4;
const TAG_PASSPHRASE: u8 = 5;

/// Appends one export record.
fn record(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// An age failure as an envelope's.
fn container(error: AgeError) -> EnvelopeError {
    EnvelopeError::Container(Box::new(error))
}

impl Envelope for AgeEnvelope {
    fn name(&self) -> &'static str {
        ENVELOPE_NAME
    }

    fn naming(&self) -> Naming {
        // age files hold file contents only.
        Naming {
            suffix: ".age",
            holds_links: false,
        }
    }

    fn detect(&self, prefix: &[u8]) -> Option<Processing> {
        Encoding::detect(prefix).map(|encoding| match encoding {
            Encoding::Binary => Processing::Chunked,
            Encoding::Armored => Processing::InOrder,
        })
    }

    fn sealing(&self) -> Processing {
        if self.armor {
            Processing::InOrder
        } else {
            Processing::Chunked
        }
    }

    fn seal(&self, meta: &EntryMeta) -> Result<SealedPrefix, EnvelopeError> {
        if meta.kind != EntryKind::File {
            return Err(container(AgeError::Key(
                "age files hold file contents only".into(),
            )));
        }
        let sealed = crate::seal(&self.recipients).map_err(container)?;
        Ok(SealedPrefix {
            prefix: sealed.prefix,
            cipher: sealed.cipher,
        })
    }

    fn open(&self, input: &mut dyn BufRead) -> Result<OpenedPrefix, EnvelopeError> {
        let header = Header::read(input).map_err(container)?;
        let nonce = crate::read_nonce(input).map_err(container)?;
        let cipher = crate::open(&header, &nonce, &self.identities).map_err(container)?;
        Ok(OpenedPrefix {
            prefix_len: header.as_bytes().len() + crate::NONCE_LEN,
            cipher,
            meta: EntryMeta::stream(),
        })
    }

    fn payload_error(&self, error: FormatError) -> EnvelopeError {
        container(AgeError::Payload(match error {
            FormatError::ChunkAuth { index } => format!("chunk {index} does not authenticate"),
            FormatError::BadLength { .. } => {
                "the payload's length is not that of whole chunks (truncated or extended)".into()
            }
            other => other.to_string(),
        }))
    }

    fn stream_error(&self, error: &io::Error) -> Option<EnvelopeError> {
        if let Some(armor) = armor_error(error) {
            return Some(container(armor));
        }
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<FormatError>())
            .map(|format| container(AgeError::Payload(format.to_string())))
    }

    fn seal_stream<'a>(
        &self,
        meta: &EntryMeta,
        output: Box<dyn Write + 'a>,
    ) -> Result<SealingWriter<Box<dyn EncodedWrite + 'a>>, EnvelopeError> {
        let sealed = self.seal(meta)?;
        let mut output: Box<dyn EncodedWrite + 'a> = if self.armor {
            Box::new(ArmoredWriter::new(output).map_err(EnvelopeError::Write)?)
        } else {
            Box::new(cryptstream_format::envelope::PlainWrite(output))
        };
        output
            .write_all(&sealed.prefix)
            .map_err(EnvelopeError::Write)?;
        Ok(SealingWriter::new(output, sealed.cipher))
    }

    fn open_stream<'a>(
        &self,
        processing: Processing,
        input: Box<dyn BufRead + 'a>,
    ) -> Result<(OpenedPrefix, Box<dyn BufRead + 'a>), EnvelopeError> {
        let mut input: Box<dyn BufRead + 'a> = match processing {
            Processing::Chunked => input,
            Processing::InOrder => Box::new(BufReader::with_capacity(
                ARMOR_BUFFER,
                ArmoredReader::new(input),
            )),
        };
        let opened = self.open(&mut input)?;
        Ok((opened, input))
    }

    fn export(&self) -> Option<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        if self.armor {
            record(&mut out, TAG_ARMOR, &[]);
        }
        for recipient in &self.recipients {
            match recipient {
                Recipient::Scrypt { passphrase, log_n } => {
                    let mut value = Zeroizing::new(vec![*log_n]);
                    value.extend_from_slice(passphrase);
                    record(&mut out, TAG_SCRYPT, &value);
                }
                other => {
                    let text = other.encode().unwrap_or_default();
                    record(&mut out, TAG_RECIPIENT, text.as_bytes());
                }
            }
        }
        for text in &self.identity_files {
            record(&mut out, TAG_IDENTITY_FILE, text.as_bytes());
        }
        if let Some(passphrase) = &self.passphrase {
            record(&mut out, TAG_PASSPHRASE, passphrase);
        }
        Some(out)
    }
}

impl EncodedWrite for ArmoredWriter<Box<dyn Write + '_>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        ArmoredWriter::finish(*self).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptstream_format::TAG_LEN;

    /// An envelope with an identity file, a passphrase and recipients.
    fn envelope(identity: &Identity, armor: bool) -> AgeEnvelope {
        let text = Zeroizing::new(format!("# test\n{}\n", *identity.encode_x25519().unwrap()));
        AgeEnvelope::new()
            .identity_file(text)
            .unwrap()
            .passphrase(Zeroizing::new(b"pw".to_vec()))
            .sealing_to(vec![identity.recipient().unwrap()], armor)
            .unwrap()
    }

    /// What a worker process rebuilds from the export opens what the
    /// original seals and the other way round, and seals in the same
    /// encoding; bytes that no export wrote are refused.
    #[test]
    fn an_envelope_rebuilt_from_its_export_opens_and_seals_like_the_original() {
        let identity = Identity::generate_x25519().unwrap();
        for armor in [false, true] {
            let original = envelope(&identity, armor);
            let rebuilt = AgeEnvelope::restore(&original.export().unwrap()).unwrap();
            assert_eq!(rebuilt.sealing(), original.sealing());
            for (sealer, opener) in [
                (&original as &dyn Envelope, &*rebuilt),
                (&*rebuilt, &original as &dyn Envelope),
            ] {
                let sealed = sealer.seal(&EntryMeta::stream()).unwrap();
                let opened = opener.open(&mut &sealed.prefix[..]).unwrap();
                assert_eq!(opened.prefix_len, sealed.prefix.len());
                let mut chunk = vec![5u8; 10 + TAG_LEN];
                sealed.cipher.seal_in_place(0, true, &mut chunk);
                opened.cipher.open_in_place(0, true, &mut chunk).unwrap();
            }
        }
        assert!(AgeEnvelope::restore(&[TAG_RECIPIENT, 9, 0, 0, 0]).is_err());
        assert!(AgeEnvelope::restore(&[77, 0, 0, 0, 0]).is_err());
    }

    /// Binary age is chunked, armored age in order, anything else is not
    /// age; a link entry cannot be sealed.
    #[test]
    fn detection_says_how_an_age_file_is_processed() {
        let age = AgeEnvelope::new();
        assert_eq!(
            age.detect(b"age-encryption.org/v1\n-> X25519"),
            Some(Processing::Chunked)
        );
        assert_eq!(
            age.detect(b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl"),
            Some(Processing::InOrder)
        );
        assert_eq!(age.detect(b"\x89CST\r\n\x1a\n"), None);
        let identity = Identity::generate_x25519().unwrap();
        let link = EntryMeta {
            kind: EntryKind::Symlink,
            ..EntryMeta::stream()
        };
        assert!(envelope(&identity, false).seal(&link).is_err());
    }
}
