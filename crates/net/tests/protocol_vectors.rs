//! The test vectors of `docs/PROTOCOL.md`: every frame listed there is
//! built here from its fixed input, and must encode to exactly the bytes
//! in the document and parse back to the same frame; both authentication
//! proofs are checked the same way.

use cryptstream_net::auth::Transcript;
use cryptstream_net::frame::{
    parse_frame, Compare, EntryTime, ErrorCode, FileMeta, Frame, NO_FILE, VERSION,
};

const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

/// The fixed inputs of the authentication vector.
const TOKEN_HEX: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// The client's nonce: `00 01 ... 1f`.
fn client_nonce() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// The server's nonce: `20 21 ... 3f`.
fn server_nonce() -> [u8; 32] {
    std::array::from_fn(|i| 0x20 + i as u8)
}

/// The inputs of both proofs; the exporter is 32 bytes of 0x22.
fn transcript() -> Transcript {
    Transcript {
        client_nonce: client_nonce(),
        server_nonce: server_nonce(),
        exporter: [0x22; 32],
    }
}

/// The frames of the document, by vector name.
fn frames() -> Vec<(&'static str, Frame<'static>)> {
    vec![
        (
            "hello",
            Frame::Hello {
                version: VERSION,
                nonce: client_nonce(),
            },
        ),
        (
            "challenge",
            Frame::Challenge {
                version: VERSION,
                nonce: server_nonce(),
                proof: token().server_proof(&transcript()),
            },
        ),
        (
            "auth",
            Frame::Auth {
                proof: token().client_proof(&transcript()),
            },
        ),
        ("auth-ok", Frame::AuthOk),
        (
            "open",
            Frame::Open {
                file_id: 1,
                meta: FileMeta {
                    size: 1_048_579,
                    mtime_seconds: 1_700_000_000,
                    mtime_nanos: 123_456_789,
                    mode: 0o640,
                },
                name: b"dir/file.txt",
            },
        ),
        (
            "held",
            Frame::Held {
                file_id: 1,
                ranges: vec![(0, 65_536), (131_072, 4096)],
            },
        ),
        (
            "data",
            Frame::Data {
                file_id: 1,
                offset: 65_536,
                bytes: b"hello",
            },
        ),
        ("sync", Frame::Sync { file_id: 1 }),
        (
            "synced",
            Frame::Synced {
                file_id: 1,
                held: 69_632,
            },
        ),
        (
            "commit",
            Frame::Commit {
                file_id: 1,
                hash: *blake3::hash(b"hello").as_bytes(),
            },
        ),
        ("committed", Frame::Committed { file_id: 1 }),
        ("close", Frame::Close { file_id: 1 }),
        (
            "check",
            Frame::Check {
                check_id: 2,
                compare: Compare::SizeAndMtime,
                meta: FileMeta {
                    size: 5,
                    mtime_seconds: 946_684_800,
                    mtime_nanos: 123_456_789,
                    mode: 0o644,
                },
                name: b"t/a",
            },
        ),
        (
            "check-content",
            Frame::Check {
                check_id: 3,
                compare: Compare::Content(*blake3::hash(b"hello").as_bytes()),
                meta: FileMeta {
                    size: 5,
                    mtime_seconds: 946_684_800,
                    mtime_nanos: 123_456_789,
                    mode: 0o644,
                },
                name: b"t/a",
            },
        ),
        (
            "checked",
            Frame::Checked {
                check_id: 2,
                held: true,
            },
        ),
        (
            "mkdir",
            Frame::Mkdir {
                entry_id: 4,
                mode: 0o700,
                mtime: EntryTime {
                    seconds: 946_684_800,
                    nanos: 5,
                },
                name: b"t/private",
            },
        ),
        (
            "symlink",
            Frame::Symlink {
                entry_id: 5,
                mtime: EntryTime {
                    seconds: 946_684_800,
                    nanos: 0,
                },
                name: b"t/up",
                target: b"../etc",
            },
        ),
        (
            "link",
            Frame::Link {
                entry_id: 6,
                name: b"t/b",
                target: b"t/a",
            },
        ),
        ("made", Frame::Made { entry_id: 6 }),
        (
            "obj-create",
            Frame::ObjCreate {
                req: 1,
                name: "packs/ab/cd",
            },
        ),
        (
            "obj-data",
            Frame::Data {
                file_id: 1,
                offset: 0,
                bytes: b"hello",
            },
        ),
        ("obj-commit", Frame::ObjCommit { req: 1, size: 5 }),
        ("obj-done", Frame::ObjDone { req: 1 }),
        (
            "obj-read",
            Frame::ObjRead {
                req: 2,
                offset: 1,
                length: 3,
                name: "packs/ab/cd",
            },
        ),
        ("obj-size", Frame::ObjSize { req: 2, size: 5 }),
        (
            "obj-get",
            Frame::ObjGet {
                req: 3,
                limit: 65_536,
                name: "config",
            },
        ),
        (
            "obj-stat",
            Frame::ObjStat {
                req: 4,
                name: "config",
            },
        ),
        (
            "obj-list",
            Frame::ObjList {
                req: 5,
                prefix: "packs/",
            },
        ),
        (
            "obj-names",
            Frame::ObjNames {
                req: 5,
                last: false,
                entries: vec![(5, "packs/ab/cd")],
            },
        ),
        (
            "obj-names-last",
            Frame::ObjNames {
                req: 5,
                last: true,
                entries: vec![],
            },
        ),
        (
            "obj-delete",
            Frame::ObjDelete {
                req: 6,
                name: "packs/ab/cd",
            },
        ),
        ("obj-info", Frame::ObjInfo { req: 7 }),
        (
            "obj-hosting",
            Frame::ObjHosting {
                req: 7,
                append_only: true,
            },
        ),
        (
            "error-append-only",
            Frame::Error {
                code: ErrorCode::AppendOnly,
                file_id: 6,
                message: "append-only".into(),
            },
        ),
        ("bye", Frame::Bye),
        (
            "error",
            Frame::Error {
                code: ErrorCode::BadName,
                file_id: 1,
                message: "../x: name leaves the root".into(),
            },
        ),
        (
            "error-no-file",
            Frame::Error {
                code: ErrorCode::Unauthenticated,
                file_id: NO_FILE,
                message: "wrong token".into(),
            },
        ),
    ]
}

/// The fixed token: 32 bytes of 0x11.
fn token() -> cryptstream_net::Token {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, TOKEN_HEX).unwrap();
    cryptstream_net::Token::read(&path).unwrap()
}

/// The hex of vector `name` in the document: the lines after a line
/// `vector NAME` inside a fenced block, up to a blank line or the fence.
fn documented(name: &str) -> Option<Vec<u8>> {
    let marker = format!("vector {name}");
    let mut lines = DOC.lines();
    lines.find(|l| l.trim() == marker)?;
    let hex: String = lines
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("```"))
        .flat_map(|l| l.split_whitespace())
        .collect();
    Some(hex::decode(hex).expect("vector hex is valid"))
}

#[test]
fn every_documented_frame_matches_the_encoder_and_parser() {
    let mut missing = Vec::new();
    for (name, frame) in frames() {
        let bytes = frame.to_bytes();
        match documented(name) {
            None => missing.push(format!("vector {name}\n{}", spaced(&bytes))),
            Some(doc) => {
                assert_eq!(spaced(&doc), spaced(&bytes), "vector {name}");
                let (parsed, used) = parse_frame(&doc).unwrap().unwrap();
                assert_eq!(used, doc.len(), "vector {name}");
                assert_eq!(parsed, frame, "vector {name}");
            }
        }
    }
    assert!(
        missing.is_empty(),
        "vectors missing from docs/PROTOCOL.md:\n{}",
        missing.join("\n\n")
    );
}

#[test]
fn the_documented_proofs_match() {
    let server = documented("server-proof").expect("docs/PROTOCOL.md lists `vector server-proof`");
    assert_eq!(server, token().server_proof(&transcript()));
    let client = documented("client-proof").expect("docs/PROTOCOL.md lists `vector client-proof`");
    assert_eq!(client, token().client_proof(&transcript()));
    assert!(token().verify_server(&transcript(), &server));
    assert!(token().verify_client(&transcript(), &client));
}

/// Header (type, length) then payload, as the document lays them out.
fn spaced(bytes: &[u8]) -> String {
    let (head, payload) = bytes.split_at(5.min(bytes.len()));
    let mut out = format!("{} {}", hex::encode(&head[..1]), hex::encode(&head[1..]));
    for chunk in payload.chunks(16) {
        out.push('\n');
        out.push_str(&hex::encode(chunk));
    }
    out
}
