//! `cryptstream inspect`: the header of an encrypted file, without a key.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cryptstream_format::envelope::DETECT_LEN;
use cryptstream_format::{Envelope, Header, KeySource, Layout, Processing, MAX_HEADER_LEN};

use crate::messages::escape_controls;

/// Arguments of `inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The encrypted file.
    file: PathBuf,
    /// Print the header as JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the header fields.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let name = args.file.display();
    let mut file =
        std::fs::File::open(&args.file).with_context(|| format!("{name}: cannot open"))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("{name}: cannot stat"))?
        .len();
    let mut prefix = vec![0u8; DETECT_LEN];
    let got =
        read_prefix(&mut file, &mut prefix).with_context(|| format!("{name}: cannot read"))?;
    // The envelope recognises its files; anything else is read as ours.
    if let Some(processing) = cryptstream_age::AgeEnvelope::new().detect(&prefix[..got]) {
        return inspect_age(args, processing, file_len);
    }
    std::io::Seek::rewind(&mut file).with_context(|| format!("{name}: cannot read"))?;
    let mut bytes = Vec::with_capacity(MAX_HEADER_LEN);
    file.by_ref()
        .take(MAX_HEADER_LEN as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{name}: cannot read"))?;
    let header = Header::parse(&bytes).with_context(|| name.to_string())?;
    let layout = Layout::from_ciphertext_len(header.len(), header.chunk_size, file_len).ok();
    let (key_kind, key_detail) = match header.key_source {
        KeySource::KeyFile(id) => ("key-file", format!("key file, id {id}")),
        KeySource::Passphrase { params, .. } => (
            "passphrase",
            format!(
                "passphrase (Argon2id, memory {} KiB, {} passes, {} lanes)",
                params.m_kib, params.t, params.p
            ),
        ),
    };
    let length_note = match (header.plaintext_len, layout) {
        (Some(n), Some(l)) if l.plaintext_len() == n => format!("{n} bytes"),
        (Some(n), _) => {
            format!("{n} bytes (but the file length does not match: truncated or extended)")
        }
        (None, Some(l)) => format!(
            "not recorded (stream); {} bytes by the file length",
            l.plaintext_len()
        ),
        (None, None) => "not recorded (stream); file length is invalid".to_string(),
    };
    if args.json {
        let value = serde_json::json!({
            "file": args.file.to_string_lossy(),
            "version": header.version,
            "kind": header.kind.name(),
            "mtime": header.mtime.map(|m| serde_json::json!({"seconds": m.seconds, "nanos": m.nanos})),
            "cipher": header.cipher.name(),
            "chunk_size": header.chunk_size,
            "key": key_kind,
            "key_id": match header.key_source {
                KeySource::KeyFile(id) => Some(id.to_string()),
                KeySource::Passphrase { .. } => None,
            },
            "kdf": match header.key_source {
                KeySource::Passphrase { params, .. } =>
                    serde_json::json!({"algorithm": "argon2id", "m_kib": params.m_kib, "t": params.t, "p": params.p}),
                KeySource::KeyFile(_) => serde_json::Value::Null,
            },
            "plaintext_len": header.plaintext_len,
            "mode": format!("{:04o}", header.mode),
            "chunks": layout.map(|l| l.chunk_count()),
            "file_len": file_len,
        });
        println!("{value:#}");
        return Ok(ExitCode::SUCCESS);
    }
    // The name is shown as `inspect` shows it in errors: a control
    // character in it must not start a line that looks like a field.
    println!("file:           {}", escape_controls(&name.to_string()));
    println!("format:         cryptstream version {}", header.version);
    println!("entry:          {}", header.kind.name());
    if let Some(mtime) = header.mtime {
        println!(
            "mtime:          {}",
            crate::messages::rfc3339(mtime.seconds, mtime.nanos)
        );
    }
    println!("cipher:         {}", header.cipher.name());
    println!("chunk size:     {} bytes", header.chunk_size);
    println!("key:            {key_detail}");
    println!("plaintext size: {length_note}");
    println!("mode:           {:04o}", header.mode);
    if let Some(l) = layout {
        println!("chunks:         {}", l.chunk_count());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads until `buf` is full or the file ends.
fn read_prefix(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Prints what an age file's header says: its stanzas (recipient types,
/// scrypt work factor) and the payload's size, without any key.
fn inspect_age(
    args: &InspectArgs,
    processing: Processing,
    file_len: u64,
) -> anyhow::Result<ExitCode> {
    use std::io::BufReader;
    let name = args.file.display();
    let file = std::fs::File::open(&args.file).with_context(|| format!("{name}: cannot open"))?;
    let mut input: Box<dyn std::io::BufRead> = match processing {
        Processing::Chunked => Box::new(BufReader::new(file)),
        Processing::InOrder => Box::new(BufReader::new(cryptstream_age::ArmoredReader::new(
            BufReader::new(file),
        ))),
    };
    let header = cryptstream_age::Header::read(&mut input).with_context(|| format!("{name}"))?;
    let stanzas: Vec<String> = header
        .stanzas
        .iter()
        .map(|s| match (s.kind(), s.args.get(2)) {
            ("scrypt", Some(work)) => format!("scrypt (work factor 2^{work})"),
            (kind, _) => kind.to_string(),
        })
        .collect();
    let prefix = header.as_bytes().len() + cryptstream_age::NONCE_LEN;
    let layout = match processing {
        Processing::Chunked => {
            Layout::from_ciphertext_len(prefix, cryptstream_age::CHUNK_SIZE, file_len).ok()
        }
        Processing::InOrder => None,
    };
    let form = match processing {
        Processing::Chunked => "binary",
        Processing::InOrder => "armored",
    };
    if args.json {
        let value = serde_json::json!({
            "file": args.file.to_string_lossy(),
            "format": "age-v1",
            "encoding": form,
            "header_len": header.as_bytes().len(),
            "stanzas": stanzas,
            "plaintext_len": layout.map(|l| l.plaintext_len()),
            "chunks": layout.map(|l| l.chunk_count()),
            "file_len": file_len,
        });
        println!("{value:#}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", escape_controls(&format!("file:        {name}")));
    println!("format:      age v1 ({form})");
    println!("recipients:  {}", escape_controls(&stanzas.join(", ")));
    println!("header:      {} bytes", header.as_bytes().len());
    match layout {
        Some(l) => println!(
            "payload:     {} bytes in {} chunks of 64 KiB (ChaCha20-Poly1305)",
            l.plaintext_len(),
            l.chunk_count()
        ),
        None if form == "armored" => println!("payload:     armored (size known after decoding)"),
        None => println!("payload:     the file length is invalid (truncated or extended)"),
    }
    Ok(ExitCode::SUCCESS)
}
