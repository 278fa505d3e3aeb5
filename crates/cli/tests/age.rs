//! age interop: files, trees, streams, armor, several recipients and the
//! 64 KiB boundary sizes, both ways with the real `age` binary; passphrase
//! files through `age`'s prompt on a pseudo-terminal; the community test
//! kit through the binary (each failure class named, nothing left under
//! the final name); post-quantum round trips.

mod age_support;
mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use age_support::*;
use common::*;

/// `age -e [-a] -r RECIPIENT -o OUT IN`.
#[track_caller]
fn age_encrypts(recipient: &str, input: &Path, output: &Path, armor: bool) {
    let mut cmd = age();
    cmd.arg("-e").arg("-r").arg(recipient).arg("-o").arg(output);
    if armor {
        cmd.arg("-a");
    }
    let out = cmd.arg(input).output().unwrap();
    assert!(out.status.success(), "age -e failed: {out:?}");
}

#[test]
fn files_of_the_boundary_sizes_go_both_ways_binary_and_armored() {
    let k = Keys::new();
    // 0, 1, 64 KiB -1/+0/+1, and a file split over the workers.
    let sizes = [
        0u64,
        1,
        65535,
        65536,
        65537,
        SEGMENT_BYTES * 2 + 65536 * 3 + 7,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let plain = k.ws.path(format!("plain{i}"));
        write_random_file(&plain, size, i as u64 + 1, 0o640);
        let bytes = fs::read(&plain).unwrap();
        for armor in [false, true] {
            let tag = format!("{i}{}", if armor { "a" } else { "" });
            // Ours, to both recipients, read by age with either identity.
            let ours = k.ws.path(format!("ours{tag}.age"));
            let mut encrypt = k.ws.bare("encrypt");
            encrypt
                .args([
                    "-q",
                    "-j",
                    "2",
                    "-r",
                    &k.our_recipient,
                    "-r",
                    &k.their_recipient,
                ])
                .arg(&plain)
                .arg(&ours);
            if armor {
                encrypt.arg("-a");
            }
            run(&mut encrypt).success();
            let head = fs::read(&ours).unwrap();
            let first = if armor {
                "-----BEGIN AGE ENCRYPTED FILE-----\n"
            } else {
                "age-encryption.org/v1\n"
            };
            assert!(head.starts_with(first.as_bytes()), "size {size}");
            age_decrypts_to(&k.theirs, &ours, &bytes);
            age_decrypts_to(&k.ours, &ours, &bytes);
            // age's, read by us, split over two workers when large.
            let theirs = k.ws.path(format!("theirs{tag}.age"));
            age_encrypts(&k.our_recipient, &plain, &theirs, armor);
            let back = k.ws.path(format!("back{tag}"));
            run(k
                .ws
                .bare("decrypt")
                .args(["-q", "-j", "2", "-i"])
                .arg(&k.ours)
                .arg(&theirs)
                .arg(&back))
            .success();
            assert!(
                fs::read(&back).unwrap() == bytes,
                "size {size} armor {armor}"
            );
            run(k.ws.bare("verify").arg("-i").arg(&k.ours).arg(&theirs)).success();
        }
    }
}

#[test]
fn a_recipients_file_and_several_identities_work_as_in_age() {
    let k = Keys::new();
    let list = k.ws.path("recipients.txt");
    fs::write(
        &list,
        format!("# team\n{}\n\n{}\n", k.our_recipient, k.their_recipient),
    )
    .unwrap();
    let plain = k.ws.path("plain");
    write_random_file(&plain, 100_000, 9, 0o600);
    let enc = k.ws.path("plain.age");
    run(k
        .ws
        .bare("encrypt")
        .arg("-q")
        .arg("-R")
        .arg(&list)
        .arg(&plain)
        .arg(&enc))
    .success();
    age_decrypts_to(&k.theirs, &enc, &fs::read(&plain).unwrap());
    // age -R reads the same file; we open with two -i files, the second matching.
    let theirs = k.ws.path("theirs.age");
    let out = age()
        .arg("-R")
        .arg(&list)
        .arg("-o")
        .arg(&theirs)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stranger = k.ws.path("stranger.txt");
    age_keygen(&stranger);
    let back = k.ws.path("back");
    run(k
        .ws
        .bare("decrypt")
        .arg("-q")
        .arg("-i")
        .arg(&stranger)
        .arg("-i")
        .arg(&k.theirs)
        .arg(&theirs)
        .arg(&back))
    .success();
    assert_eq!(fs::read(&back).unwrap(), fs::read(&plain).unwrap());
    // Only the stranger: no match, nothing written.
    let none = k.ws.path("none");
    run(k
        .ws
        .bare("decrypt")
        .arg("-i")
        .arg(&stranger)
        .arg(&theirs)
        .arg(&none))
    .failure()
    .names(&theirs)
    .stderr_has("no match");
    assert!(!none.exists());
}

#[test]
fn a_tree_goes_both_ways_file_by_file() {
    let k = Keys::new();
    let src = k.ws.path("src");
    let tree = Tree::new(&src);
    tree.file("a.txt", 6, 0o644)
        .file("empty", 0, 0o600)
        .file("sub/b.bin", 200_000, 0o644)
        .file("sub/deeper/c", 65536, 0o640)
        .file("sub/large", SEGMENT_BYTES + 12345, 0o644)
        .symlink("link", "a.txt");
    let enc = k.ws.path("enc");
    run(k
        .ws
        .bare("encrypt")
        .args(["-q", "-j", "2", "-r", &k.their_recipient])
        .arg(&src)
        .arg(&enc))
    .success();
    for rel in ["a.txt", "empty", "sub/b.bin", "sub/deeper/c", "sub/large"] {
        let file = enc.join(format!("{rel}.age"));
        age_decrypts_to(&k.theirs, &file, &fs::read(src.join(rel)).unwrap());
    }
    // age files hold contents only: the symbolic link is skipped.
    assert!(!enc.join("link.age").exists() && !enc.join("link").exists());
    // age encrypts each file of the tree; we decrypt the tree, names lose .age.
    let theirs = k.ws.path("theirs");
    for rel in ["a.txt", "empty", "sub/b.bin", "sub/deeper/c", "sub/large"] {
        let out = theirs.join(format!("{rel}.age"));
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        age_encrypts(&k.our_recipient, &src.join(rel), &out, rel == "sub/b.bin");
    }
    let back = k.ws.path("back");
    run(k
        .ws
        .bare("decrypt")
        .args(["-q", "-j", "2", "-i"])
        .arg(&k.ours)
        .arg(&theirs)
        .arg(&back))
    .success();
    for rel in ["a.txt", "empty", "sub/b.bin", "sub/deeper/c", "sub/large"] {
        assert_eq!(
            fs::read(back.join(rel)).unwrap(),
            fs::read(src.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn streams_go_both_ways_through_stdin_and_stdout() {
    let k = Keys::new();
    for (i, size) in [0usize, 1, 65536, 300_001].into_iter().enumerate() {
        let plain = random_bytes(size, 20 + i as u64);
        for armor in [false, true] {
            let mut encrypt = k.ws.bare("encrypt");
            encrypt.args(["-r", &k.their_recipient, "-", "-"]);
            if armor {
                encrypt.arg("-a");
            }
            let out = run_with_stdin(&mut encrypt, Some(plain.clone()));
            out.success();
            let file = k.ws.path(format!("s{i}{armor}.age"));
            fs::write(&file, &out.stdout).unwrap();
            age_decrypts_to(&k.theirs, &file, &plain);
            // age -e to stdout, we decrypt stdin to stdout.
            let mut cmd = age();
            cmd.arg("-e").arg("-r").arg(&k.our_recipient);
            if armor {
                cmd.arg("-a");
            }
            let src = k.ws.path(format!("s{i}"));
            fs::write(&src, &plain).unwrap();
            let enc = cmd.arg(&src).output().unwrap();
            assert!(enc.status.success());
            let mut decrypt = k.ws.bare("decrypt");
            decrypt.arg("-i").arg(&k.ours).args(["-", "-"]);
            let back = run_with_stdin(&mut decrypt, Some(enc.stdout));
            back.success();
            assert!(back.stdout == plain, "size {size} armor {armor}");
        }
    }
}

#[test]
fn passphrase_files_made_by_us_open_in_age_at_its_prompt_and_back() {
    let ws = Workspace::new();
    let pass = ws.path("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    let plain = ws.path("plain");
    write_random_file(&plain, 150_000, 77, 0o600);
    let enc = ws.path("plain.age");
    run(ws
        .bare("encrypt")
        .args([
            "-q",
            "--age-passphrase",
            "--age-scrypt-log-n",
            "12",
            "--passphrase-file",
        ])
        .arg(&pass)
        .arg(&plain)
        .arg(&enc))
    .success();
    let out = ws.path("by-age");
    let mut cmd = age();
    cmd.arg("-d").arg("-o").arg(&out).arg(&enc);
    let (status, screen) = run_with_tty(
        &mut cmd,
        "passphrase",
        "correct horse battery staple",
        Duration::from_secs(60),
    );
    assert!(status.success(), "age -d failed at the prompt: {screen}");
    assert_eq!(fs::read(&out).unwrap(), fs::read(&plain).unwrap());
    // age -p writes one (asking twice); we read it with the passphrase file.
    let theirs = ws.path("theirs.age");
    let mut cmd = age();
    cmd.arg("-e").arg("-p").arg("-o").arg(&theirs).arg(&plain);
    let (status, screen) = run_with_tty(
        &mut cmd,
        "assphrase",
        "correct horse battery staple",
        Duration::from_secs(60),
    );
    assert!(status.success(), "age -e -p failed at the prompt: {screen}");
    let back = ws.path("back");
    run(ws
        .bare("decrypt")
        .arg("-q")
        .arg("--passphrase-file")
        .arg(&pass)
        .arg(&theirs)
        .arg(&back))
    .success();
    assert_eq!(fs::read(&back).unwrap(), fs::read(&plain).unwrap());
    // A wrong passphrase is no match, and nothing is written.
    fs::write(&pass, "wrong\n").unwrap();
    let none = ws.path("none");
    run(ws
        .bare("decrypt")
        .arg("--passphrase-file")
        .arg(&pass)
        .arg(&theirs)
        .arg(&none))
    .failure()
    .names(&theirs)
    .stderr_has("no match");
    assert!(!none.exists());
}

#[test]
fn post_quantum_identities_round_trip_and_refuse_mixing() {
    let ws = Workspace::new();
    let id = ws.path("pq.txt");
    run(ws.bare("keygen").args(["--age", "--pq", "-o"]).arg(&id)).success();
    let text = fs::read_to_string(&id).unwrap();
    assert!(text.contains("# public key: age1pq1") && text.contains("AGE-SECRET-KEY-PQ-1"));
    let recipient = run(ws.bare("keygen").arg("--age-recipient").arg(&id))
        .success()
        .stdout_text()
        .trim()
        .to_string();
    let plain = ws.path("plain");
    write_random_file(&plain, SEGMENT_BYTES + 99, 8, 0o600);
    for armor in [false, true] {
        let enc = ws.path(format!("p{armor}.age"));
        let mut encrypt = ws.bare("encrypt");
        encrypt.args(["-q", "-r", &recipient]).arg(&plain).arg(&enc);
        if armor {
            encrypt.arg("-a");
        }
        run(&mut encrypt).success();
        let back = ws.path(format!("back{armor}"));
        run(ws
            .bare("decrypt")
            .arg("-q")
            .arg("-i")
            .arg(&id)
            .arg(&enc)
            .arg(&back))
        .success();
        assert_eq!(fs::read(&back).unwrap(), fs::read(&plain).unwrap());
    }
    let classic = ws.path("classic.txt");
    let classic_recipient = age_keygen(&classic);
    run(ws
        .bare("encrypt")
        .args(["-r", &recipient, "-r", &classic_recipient])
        .arg(&plain)
        .arg(ws.path("mixed.age")))
    .failure()
    .stderr_has("cannot be mixed");
    assert!(!ws.path("mixed.age").exists());
}

#[test]
fn keygen_writes_an_identity_file_that_age_reads() {
    let ws = Workspace::new();
    let id = ws.path("id.txt");
    let out = run(ws.bare("keygen").arg("--age").arg("-o").arg(&id));
    out.success().stderr_has("Public key: age1");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&id).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&id).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# created: "));
    assert!(lines[1].starts_with("# public key: age1"));
    assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
    let theirs = Command::new(age_tool("age-keygen"))
        .arg("-y")
        .arg(&id)
        .output()
        .unwrap();
    assert!(theirs.status.success());
    let ours = run(ws.bare("keygen").arg("--age-recipient").arg(&id));
    assert_eq!(ours.success().stdout, theirs.stdout);
    assert_eq!(
        lines[1].trim_start_matches("# public key: "),
        String::from_utf8_lossy(&theirs.stdout).trim()
    );
    // Never overwritten.
    run(ws.bare("keygen").arg("--age").arg("-o").arg(&id)).failure();
}

use std::process::Command;

/// One vector of the test kit, as the binary sees it.
struct Vector {
    name: String,
    expect: String,
    payload: Option<String>,
    identities: Vec<String>,
    passphrase: Option<String>,
    file: Vec<u8>,
}

fn kit() -> Vec<Vector> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../age/tests/data/testkit");
    let mut vectors = Vec::new();
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect();
    names.sort();
    for name in names {
        let bytes = fs::read(dir.join(&name)).unwrap();
        let mut at = 0;
        let mut v = Vector {
            name,
            expect: String::new(),
            payload: None,
            identities: Vec::new(),
            passphrase: None,
            file: Vec::new(),
        };
        let mut compressed = false;
        loop {
            let end = at + bytes[at..].iter().position(|&c| c == b'\n').unwrap();
            let line = std::str::from_utf8(&bytes[at..end]).unwrap().to_string();
            at = end + 1;
            let Some((key, value)) = line.split_once(": ") else {
                break;
            };
            match key {
                "expect" => v.expect = value.into(),
                "payload" => v.payload = Some(value.into()),
                "identity" => v.identities.push(value.into()),
                "passphrase" => v.passphrase = v.passphrase.or(Some(value.into())),
                "compressed" => compressed = true,
                _ => {}
            }
        }
        v.file = bytes[at..].to_vec();
        if compressed {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&bytes[at..])
                .read_to_end(&mut out)
                .unwrap();
            v.file = out;
        }
        vectors.push(v);
    }
    vectors
}

#[test]
fn every_kit_vector_through_the_binary_names_its_class_and_leaves_nothing() {
    let ws = Workspace::new();
    let out_dir = ws.path("out");
    fs::create_dir(&out_dir).unwrap();
    let vectors = kit();
    assert_eq!(vectors.len(), 143);
    let stranger = ws.path("stranger.txt");
    run(ws.bare("keygen").arg("--age").arg("-o").arg(&stranger)).success();
    for v in &vectors {
        let input = ws.path(format!("{}.age", v.name));
        fs::write(&input, &v.file).unwrap();
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if v.identities.is_empty() && v.passphrase.is_none() {
            // The binary needs some key: one that matches nothing.
            args.extend(["-i".into(), stranger.clone().into()]);
        }
        if !v.identities.is_empty() {
            let id = ws.path(format!("{}.id", v.name));
            fs::write(&id, v.identities.join("\n") + "\n").unwrap();
            args.extend(["-i".into(), id.into()]);
        }
        if let Some(pass) = &v.passphrase {
            let file = ws.path(format!("{}.pass", v.name));
            fs::write(&file, format!("{pass}\n")).unwrap();
            args.extend(["--passphrase-file".into(), file.into()]);
        }
        let output = out_dir.join(&v.name);
        // File to file (binary files over the chunk machinery, armored in order).
        let file_run = run(ws
            .bare("decrypt")
            .args(&args)
            .arg("-q")
            .arg(&input)
            .arg(&output));
        // Stdin to file.
        let mut stream = ws.bare("decrypt");
        stream
            .args(&args)
            .arg("-")
            .arg(out_dir.join(format!("{}.s", v.name)));
        let stream_run = run_with_stdin(&mut stream, Some(v.file.clone()));
        for (how, outcome, path) in [
            ("file", &file_run, output.clone()),
            ("stdin", &stream_run, out_dir.join(format!("{}.s", v.name))),
        ] {
            if v.expect == "success" {
                outcome.success();
                let plain = fs::read(&path).unwrap();
                assert_eq!(Some(sha256_hex(&plain)), v.payload, "{} ({how})", v.name);
                fs::remove_file(&path).unwrap();
            } else {
                outcome.failure();
                let line = outcome
                    .stderr
                    .lines()
                    .find(|l| l.contains(&format!("age {}", v.expect)))
                    .unwrap_or_else(|| {
                        panic!(
                            "{} ({how}): no line names {:?}: {}",
                            v.name, v.expect, outcome.stderr
                        )
                    });
                assert!(line.starts_with("cryptstream: "), "{line}");
                assert!(!path.exists(), "{} ({how}) left {}", v.name, path.display());
            }
        }
        if v.expect != "success" {
            run(ws.bare("verify").args(&args).arg(&input))
                .failure()
                .names(&input)
                .stderr_has(&format!("age {}", v.expect));
        }
    }
    assert_empty_dir(&out_dir);
}
