//! The tamper sweep of `tamper.rs`, on age files: flipped header or nonce
//! bytes, flipped payload bytes, truncation, appended bytes, chunk reorder
//! and removal, damaged armor and a wrong identity are detected by decrypt
//! (file and stdin) and verify, with the age failure class on a line naming
//! the file, and nothing appears under the final name. Hostile headers
//! (more stanzas than the limit, lines past the bounds, a passphrase beside
//! recipients) are refused with a header failure before the rest is read.
//!
//! Each damaged copy costs three runs of the binary, so bytes are flipped
//! where the format changes meaning, not at every byte. The classes kept:
//! - header and nonce: the first and last byte of every line, every line
//!   end, the bytes either side of every space (the `->` marker, each
//!   stanza argument, the MAC), and the first and last nonce byte, so the
//!   header/nonce and nonce/payload seams;
//! - payload: for every chunk (the last, partial one included) its first
//!   byte, its last ciphertext byte, the first and last byte of its tag,
//!   plus one byte in the middle of a chunk;
//! - armor: the first and last character and the line end of the begin
//!   line, of the first, a middle and the last two data lines, and of the
//!   end line; the characters that carry the header/payload seam and every
//!   chunk edge;
//! - truncation: at 0 and 1 byte, inside the version line, around the nonce,
//!   at and beside every chunk edge, inside the last tag, one byte short.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;

/// Plaintext bytes per age chunk.
const CHUNK: usize = 64 * 1024;
/// A chunk on disk.
const STRIDE: usize = CHUNK + TAG_LEN;
/// Six chunks, the last one partial.
const SAMPLE_LEN: usize = 5 * CHUNK + 500;
/// The classes of the test kit, as the binary prints them.
const CLASSES: [&str; 5] = [
    "age no match",
    "age HMAC failure",
    "age header failure",
    "age payload failure",
    "age armor failure",
];

struct Sample {
    ws: Workspace,
    identity: PathBuf,
    encrypted: Vec<u8>,
    /// Header and payload nonce: where chunk 0 starts.
    prefix: usize,
    damaged: PathBuf,
    out_dir: PathBuf,
}

impl Sample {
    fn new(armor: bool) -> Sample {
        let ws = Workspace::new();
        let identity = ws.path("id.txt");
        run(ws.bare("keygen").arg("--age").arg("-o").arg(&identity)).success();
        let recipient = run(ws.bare("keygen").arg("--age-recipient").arg(&identity))
            .success()
            .stdout_text()
            .trim()
            .to_string();
        let plain = ws.path("plain");
        write_random_file(&plain, SAMPLE_LEN as u64, 42, 0o640);
        let good = ws.path("good.age");
        let mut encrypt = ws.bare("encrypt");
        encrypt
            .args(["-q", "-r", &recipient])
            .arg(&plain)
            .arg(&good);
        if armor {
            encrypt.arg("-a");
        }
        run(&mut encrypt).success();
        let encrypted = fs::read(&good).unwrap();
        let mac = encrypted.windows(4).position(|w| w == b"\n---").unwrap() + 1;
        let mac_end = mac + encrypted[mac..].iter().position(|&c| c == b'\n').unwrap() + 1;
        let out_dir = ws.path("out");
        fs::create_dir(&out_dir).unwrap();
        Sample {
            damaged: ws.path("damaged.age"),
            identity,
            encrypted,
            prefix: mac_end + 16,
            out_dir,
            ws,
        }
    }

    fn chunk_at(&self, index: usize) -> usize {
        self.prefix + index * STRIDE
    }

    fn chunks(&self) -> usize {
        (self.encrypted.len() - self.prefix).div_ceil(STRIDE)
    }

    fn flipped(&self, offset: usize, bit: u32) -> Vec<u8> {
        let mut bytes = self.encrypted.clone();
        bytes[offset] ^= 1 << bit;
        bytes
    }

    /// Decrypt (file and stdin, into `out_dir`) and verify all refuse
    /// `damaged` with one of `classes` on a line that names the file
    /// (stdin: names `-`), and `out_dir` stays empty.
    #[track_caller]
    fn assert_rejected_with(
        &self,
        identity: &PathBuf,
        damaged: &[u8],
        classes: &[&str],
        case: &str,
    ) {
        fs::write(&self.damaged, damaged).unwrap();
        let output = self.out_dir.join("damaged");
        let check = |outcome: &Outcome, how: &str| {
            outcome.failure();
            let named = outcome
                .stderr
                .lines()
                .any(|l| l.starts_with("cryptstream: ") && classes.iter().any(|c| l.contains(c)));
            assert!(
                named,
                "{case} ({how}): expected one of {classes:?}: {}",
                outcome.stderr
            );
        };
        let decrypt = run(self
            .ws
            .bare("decrypt")
            .arg("-i")
            .arg(identity)
            .arg(&self.damaged)
            .arg(&output));
        decrypt.names(&self.damaged);
        check(&decrypt, "decrypt");
        assert_empty_dir(&self.out_dir);
        let verify = run(self
            .ws
            .bare("verify")
            .arg("-i")
            .arg(identity)
            .arg(&self.damaged));
        verify.names(&self.damaged);
        check(&verify, "verify");
        let mut stream = self.ws.bare("decrypt");
        stream.arg("-i").arg(identity).arg("-").arg(&output);
        check(
            &run_with_stdin(&mut stream, Some(damaged.to_vec())),
            "stdin",
        );
        assert_empty_dir(&self.out_dir);
    }

    #[track_caller]
    fn assert_rejected(&self, damaged: &[u8], classes: &[&str], case: &str) {
        self.assert_rejected_with(&self.identity, damaged, classes, case);
    }
}

#[test]
fn the_intact_sample_decrypts() {
    let s = Sample::new(false);
    assert_eq!(s.chunks(), 6);
    let out = s.out_dir.join("intact");
    run(s
        .ws
        .bare("decrypt")
        .arg("-i")
        .arg(&s.identity)
        .arg(s.ws.path("good.age"))
        .arg(&out))
    .success();
    assert_eq!(
        fs::read(&out).unwrap(),
        fs::read(s.ws.path("plain")).unwrap()
    );
}

/// The edges of the lines and fields of `text` (the header): the first and
/// last byte of every line and its line end, and the bytes either side of
/// every space.
fn field_edges(text: &[u8]) -> Vec<usize> {
    let mut edges = vec![0];
    for (at, &c) in text.iter().enumerate() {
        match c {
            b'\n' => edges.extend([at.saturating_sub(1), at, at + 1]),
            b' ' => edges.extend([at - 1, at, at + 1]),
            _ => {}
        }
    }
    edges.retain(|&at| at < text.len());
    edges
}

#[test]
fn a_bit_flip_at_every_field_edge_of_the_header_and_nonce_is_rejected() {
    let s = Sample::new(false);
    let nonce = s.prefix - 16;
    let mut offsets = field_edges(&s.encrypted[..nonce]);
    offsets.extend([nonce, s.prefix - 1]);
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        let bit = (offset % 8) as u32;
        s.assert_rejected(
            &s.flipped(offset, bit),
            &CLASSES[..4],
            &format!("header byte {offset}"),
        );
    }
}

#[test]
fn bit_flips_across_the_payload_are_payload_failures() {
    let s = Sample::new(false);
    let len = s.encrypted.len();
    let mut offsets = vec![s.chunk_at(1) + CHUNK / 2];
    for chunk in 0..s.chunks() {
        let end = (s.chunk_at(chunk) + STRIDE).min(len);
        let tag = end - TAG_LEN;
        offsets.extend([s.chunk_at(chunk), tag - 1, tag, end - 1]);
    }
    offsets.sort_unstable();
    offsets.dedup();
    for (i, offset) in offsets.into_iter().enumerate() {
        s.assert_rejected(
            &s.flipped(offset, (i % 8) as u32),
            &["age payload failure"],
            &format!("payload byte {offset}"),
        );
    }
}

#[test]
fn truncation_and_appended_bytes_are_rejected() {
    let s = Sample::new(false);
    let len = s.encrypted.len();
    let mut cuts = vec![
        0,
        1,
        21,
        22,
        s.prefix - 17,
        s.prefix - 16,
        s.prefix - 1,
        s.prefix,
        s.prefix + 1,
        len - 1,
    ];
    for chunk in 1..s.chunks() {
        let at = s.chunk_at(chunk);
        cuts.extend([at - 1, at, at + 1]);
    }
    cuts.extend([len - TAG_LEN, len - TAG_LEN - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        s.assert_rejected(
            &s.encrypted[..cut],
            &CLASSES[..4],
            &format!("truncated to {cut}"),
        );
    }
    for extra in [1usize, TAG_LEN, STRIDE] {
        let mut longer = s.encrypted.clone();
        longer.extend(random_bytes(extra, extra as u64));
        s.assert_rejected(
            &longer,
            &["age payload failure"],
            &format!("{extra} bytes appended"),
        );
    }
}

#[test]
fn reordered_removed_and_duplicated_chunks_are_rejected() {
    let s = Sample::new(false);
    let chunk =
        |i: usize| s.encrypted[s.chunk_at(i)..s.chunk_at(i + 1).min(s.encrypted.len())].to_vec();
    let head = s.encrypted[..s.prefix].to_vec();
    let build = |order: &[usize]| {
        let mut out = head.clone();
        for &i in order {
            out.extend(chunk(i));
        }
        out
    };
    for (order, case) in [
        (vec![0, 2, 1, 3, 4, 5], "chunks 1 and 2 swapped"),
        (vec![1, 0, 2, 3, 4, 5], "chunks 0 and 1 swapped"),
        (vec![0, 1, 2, 3, 5], "chunk 4 removed"),
        (vec![0, 1, 2, 3, 4], "last chunk removed"),
        (vec![0, 1, 1, 2, 3, 4, 5], "chunk 1 twice"),
        (vec![0, 1, 2, 3, 4, 5, 5], "last chunk twice"),
    ] {
        s.assert_rejected(&build(&order), &["age payload failure"], case);
    }
}

#[test]
fn a_wrong_identity_is_no_match() {
    let s = Sample::new(false);
    let other = s.ws.path("other.txt");
    run(s.ws.bare("keygen").arg("--age").arg("-o").arg(&other)).success();
    s.assert_rejected_with(&other, &s.encrypted, &["age no match"], "wrong identity");
}

#[test]
fn damaged_armor_is_rejected() {
    let s = Sample::new(true);
    let len = s.encrypted.len();
    // Line starts, ends and line ends of the begin line, the first, a
    // middle and the last two data lines, and the end line.
    let text = &s.encrypted;
    let mut line_starts = vec![0];
    line_starts.extend(
        text.iter()
            .enumerate()
            .filter(|&(at, &c)| c == b'\n' && at + 1 < len)
            .map(|(at, _)| at + 1),
    );
    let lines = line_starts.len();
    let mut offsets = Vec::new();
    for line in [0, 1, 2, lines / 2, lines - 3, lines - 2, lines - 1] {
        let start = line_starts[line];
        let end = line_starts.get(line + 1).map_or(len, |&next| next);
        offsets.extend([start, end - 2, end - 1]);
    }
    // The characters that carry the header/payload seam and each chunk
    // edge of the binary file inside (4 characters per 3 bytes, 64 to a
    // line after the begin line).
    // (Every one-recipient X25519 header has the same length.)
    let prefix = Sample::new(false).prefix;
    let armored_at = |binary: usize| {
        let char_at = binary / 3 * 4;
        line_starts[1] + char_at / 64 * 65 + char_at % 64
    };
    offsets.push(armored_at(prefix));
    for chunk in 1..6 {
        offsets.push(armored_at(prefix + chunk * STRIDE));
    }
    offsets.extend([5, 36, 40, len - 5, len - 2]);
    offsets.retain(|&at| at < len);
    offsets.sort_unstable();
    offsets.dedup();
    for (i, offset) in offsets.into_iter().enumerate() {
        s.assert_rejected(
            &s.flipped(offset, (i % 7) as u32),
            &CLASSES,
            &format!("armor byte {offset}"),
        );
    }
    // A line removed from the middle, and a truncated armor.
    let text = String::from_utf8(s.encrypted.clone()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(lines.len() / 2);
    s.assert_rejected(
        (lines.join("\n") + "\n").as_bytes(),
        &CLASSES,
        "a line removed",
    );
    s.assert_rejected(&s.encrypted[..len / 2], &CLASSES, "armor cut in half");
}

// ---------------------------------------------------------------------------
// Hostile headers: the bounds on stanzas and lines, and a passphrase beside
// recipients
// ---------------------------------------------------------------------------

/// The most stanzas an age header may hold (`cryptstream_age::MAX_STANZAS`).
const MAX_STANZAS: usize = cryptstream_age::MAX_STANZAS;
/// The longest age header read (`cryptstream_age::MAX_HEADER_LEN`).
const MAX_HEADER_LEN: usize = cryptstream_age::MAX_HEADER_LEN;
/// One well-formed X25519 stanza (a fixed share and body that open for no
/// identity), as it appears in a header.
const X25519_STANZA: &str = "-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n\
                             EmECAEcKN+n/Vs9SbWiV+Hu0r+E8R77DdWYyd83nw7U\n";
/// A MAC line (the header is refused before the MAC is ever checked).
const MAC_LINE: &str = "--- Vn+54jqiiUCE+WZcEVY3f1sqHjlu/z1LCQ/T7Xm7qI0\n";

/// The binary age header of `stanzas` copies of [`X25519_STANZA`].
fn header_with_stanzas(stanzas: usize) -> Vec<u8> {
    let mut header = format!("{}\n", cryptstream_age::VERSION_LINE).into_bytes();
    for _ in 0..stanzas {
        header.extend_from_slice(X25519_STANZA.as_bytes());
    }
    header
}

/// A finished age file: `header` (without its MAC line), a MAC line, the
/// payload nonce and one (undecryptable) chunk.
fn age_file(mut header: Vec<u8>) -> Vec<u8> {
    header.extend_from_slice(MAC_LINE.as_bytes());
    header.extend_from_slice(&random_bytes(16 + 100 + TAG_LEN, 7));
    header
}

/// Runs `decrypt -i IDENTITY - OUT` with `head` on stdin followed by
/// `filler` repeated without end, and returns the outcome: the binary must
/// refuse the header before it reads all of an input that never ends.
#[track_caller]
fn decrypt_endless_stdin(s: &Sample, head: Vec<u8>, filler: &'static [u8]) -> Outcome {
    use std::io::Write;
    let mut cmd = s.ws.bare("decrypt");
    cmd.arg("-i")
        .arg(&s.identity)
        .arg("-")
        .arg(s.out_dir.join("endless"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut running = Running::spawn(&mut cmd);
    let mut pipe = running.child_mut().stdin.take().expect("stdin is piped");
    // Ends with a write error once the binary stops reading and exits.
    let feeder = std::thread::spawn(move || {
        if pipe.write_all(&head).is_err() {
            return;
        }
        let block = filler.repeat((64 * 1024) / filler.len() + 1);
        while pipe.write_all(&block).is_ok() {}
    });
    let outcome = running.finish(TIMEOUT);
    feeder.join().expect("the stdin feeder does not panic");
    outcome
}

#[test]
fn a_header_with_more_stanzas_than_the_limit_is_refused_before_the_rest_is_read() {
    let s = Sample::new(false);
    // One stanza over the limit, in a finished file.
    let damaged = age_file(header_with_stanzas(MAX_STANZAS + 1));
    assert!(
        damaged.len() < MAX_HEADER_LEN,
        "the length bound is not what refuses it"
    );
    let limit = format!("age header failure: more than {MAX_STANZAS} stanzas");
    s.assert_rejected(&damaged, &[limit.as_str()], "one stanza over the limit");
    // Stanzas without end on stdin: refused at the limit, not read forever.
    let endless = decrypt_endless_stdin(
        &s,
        header_with_stanzas(MAX_STANZAS),
        X25519_STANZA.as_bytes(),
    );
    endless.failure().stderr_has(&limit);
    assert_empty_dir(&s.out_dir);
    // At the limit the header is read, and the stanzas are tried: no match.
    s.assert_rejected(
        &age_file(header_with_stanzas(MAX_STANZAS)),
        &["age no match"],
        "exactly the most stanzas allowed",
    );
}

#[test]
fn an_over_long_header_line_or_stanza_body_line_is_refused() {
    let s = Sample::new(false);
    // A body line of 65 columns (a full line has 64).
    let mut header = header_with_stanzas(1);
    header.extend_from_slice(b"-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n");
    header.extend_from_slice(&[b'A'; 65]);
    header.extend_from_slice(b"\n\n");
    s.assert_rejected(
        &age_file(header),
        &["age header failure: a stanza body line is longer than 64 columns"],
        "a 65-column body line",
    );
    // A stanza line that never ends: refused at the header bound.
    let mut head = header_with_stanzas(1);
    head.extend_from_slice(b"-> X25519 ");
    let endless = decrypt_endless_stdin(&s, head, b"A");
    endless
        .failure()
        .stderr_has(&format!("the header is longer than {MAX_HEADER_LEN} bytes"));
    assert_empty_dir(&s.out_dir);
    // The same in a file: one line just over the bound.
    let mut header = header_with_stanzas(1);
    header.extend_from_slice(b"-> X25519 ");
    header.resize(MAX_HEADER_LEN + 1, b'A');
    header.push(b'\n');
    s.assert_rejected(
        &age_file(header),
        &["age header failure: the header is longer than"],
        "a header line past the header bound",
    );
}

/// The stanza lines of a binary age file's header (after the version line,
/// before the MAC line).
fn stanza_lines(file: &[u8]) -> Vec<u8> {
    let start = file.iter().position(|&c| c == b'\n').unwrap() + 1;
    let mac = file.windows(4).position(|w| w == b"\n---").unwrap() + 1;
    file[start..mac].to_vec()
}

#[test]
fn a_passphrase_is_refused_beside_recipients_on_encrypt_and_decrypt() {
    let s = Sample::new(false);
    let pass = s.ws.path("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    let recipient = run(s.ws.bare("keygen").arg("--age-recipient").arg(&s.identity))
        .success()
        .stdout_text()
        .trim()
        .to_string();

    // Encrypt: --age-passphrase with -r is refused, and nothing is written.
    let out = s.out_dir.join("both.age");
    let refused = run(s
        .ws
        .bare("encrypt")
        .args(["--age-passphrase", "--passphrase-file"])
        .arg(&pass)
        .args(["-r", &recipient])
        .arg(s.ws.path("plain"))
        .arg(&out));
    assert_ne!(refused.code(), Some(0), "{}", refused.stderr);
    refused.stderr_has("--age-passphrase");
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);
    assert_empty_dir(&s.out_dir);

    // Decrypt: a file whose header holds an scrypt stanza and an X25519
    // stanza for our identity (the age spec: an scrypt stanza must be the
    // only one) is refused with the identity, with the passphrase, and
    // with both, in either stanza order.
    let by_passphrase = s.ws.path("p.age");
    run(s
        .ws
        .bare("encrypt")
        .args(["-q", "--age-passphrase", "--age-scrypt-log-n", "10"])
        .arg("--passphrase-file")
        .arg(&pass)
        .arg(s.ws.path("plain"))
        .arg(&by_passphrase))
    .success();
    let scrypt = stanza_lines(&fs::read(&by_passphrase).unwrap());
    assert!(scrypt.starts_with(b"-> scrypt "), "{scrypt:?}");
    let x25519 = stanza_lines(&s.encrypted);
    let version_end = s.encrypted.iter().position(|&c| c == b'\n').unwrap() + 1;
    let mac = s.encrypted.windows(4).position(|w| w == b"\n---").unwrap() + 1;
    for (first, second, order) in [
        (&x25519, &scrypt, "X25519 then scrypt"),
        (&scrypt, &x25519, "scrypt then X25519"),
    ] {
        let mut crafted = s.encrypted[..version_end].to_vec();
        crafted.extend_from_slice(first);
        crafted.extend_from_slice(second);
        crafted.extend_from_slice(&s.encrypted[mac..]);
        let only = ["age header failure: an scrypt stanza must be the only stanza"];
        s.assert_rejected(&crafted, &only, &format!("{order}, with the identity"));
        fs::write(&s.damaged, &crafted).unwrap();
        for with_identity in [false, true] {
            let mut cmd = s.ws.bare("decrypt");
            cmd.arg("--passphrase-file").arg(&pass);
            if with_identity {
                cmd.arg("-i").arg(&s.identity);
            }
            run(cmd.arg(&s.damaged).arg(s.out_dir.join("crafted")))
                .failure()
                .names(&s.damaged)
                .stderr_has(only[0]);
            assert_empty_dir(&s.out_dir);
        }
    }
}
