//! What a store keeps from other local users and from hostile files: its
//! registry is private (0600, in a directory the store made 0700) and is
//! never opened through a symbolic link; a `config` object larger than a
//! config can be is refused by its size, never read; and `get` restores
//! modes by `decrypt`'s policy (umask, no setuid/setgid/sticky bit without
//! `--keep-special-bits`).

mod common;
mod store_support;

use std::fs;
use std::path::Path;

use common::*;
use store_support::*;

on_every_backend!(
    the_registry_and_its_directory_are_private,
    a_registry_replaced_by_a_symbolic_link_is_refused_and_its_target_untouched,
    a_config_larger_than_a_config_can_be_is_refused_by_its_size,
);

/// A file that holds a put at its next hook point while it exists.
struct Hold(std::path::PathBuf);

impl Hold {
    fn new(s: &StoreWs) -> Hold {
        let path = s.ws.path("hold");
        fs::write(&path, b"held").unwrap();
        Hold(path)
    }

    fn wait_reached(&self) {
        let reached = self.0.with_extension("reached");
        wait_for("a process reaches a hook point", || reached.exists());
    }

    fn release(&self) {
        fs::remove_file(&self.0).unwrap();
    }
}

fn the_registry_and_its_directory_are_private(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    let registry = s.registry_path();
    let dir = registry.parent().unwrap();
    assert_eq!(mode_of(dir), 0o700, "{}", dir.display());
    assert_eq!(mode_of(&registry), 0o600, "{}", registry.display());
    // While a put runs, SQLite's -wal and -shm exist: private too.
    let src = s.ws.path("src/tree");
    make_tree(&src, 300_000);
    let hold = Hold::new(&s);
    let mut cmd = s.cmd("put");
    cmd.arg(&src)
        .env("CRYPTSTREAM_DEBUG_STORE_HOLD_WHILE", &hold.0);
    let put = PutRun::spawn(&mut cmd);
    hold.wait_reached();
    for suffix in ["", "-wal", "-shm"] {
        let file = with_suffix(&registry, suffix);
        assert!(file.exists(), "{} while a put runs", file.display());
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    hold.release();
    let (status, _, stderr) = put.finish();
    assert!(status.success(), "{status}: {stderr}");
    // A registry left readable by others (a store made before registries
    // were private) is made private by the next command.
    set_mode(&registry, 0o644);
    s.run("list", &[]).success();
    assert_eq!(mode_of(&registry), 0o600);
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

fn a_registry_replaced_by_a_symbolic_link_is_refused_and_its_target_untouched(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    let src = s.ws.path("src/tree");
    make_tree(&src, 100_000);
    s.run("put", &[&src]).success();
    let registry = s.registry_path();
    let saved = s.ws.path("registry.saved");
    fs::rename(&registry, &saved).unwrap();
    // Another database, which a link must not make the store write into.
    let other = s.ws.path("other.sqlite");
    {
        let conn = rusqlite::Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE mine(x); INSERT INTO mine VALUES (42);")
            .unwrap();
    }
    let before = fs::read(&other).unwrap();
    let out = s.ws.path("out");
    for (suffix, what) in [("", "the registry"), ("-wal", "its -wal")] {
        let link = with_suffix(&registry, suffix);
        if suffix.is_empty() {
            std::os::unix::fs::symlink(&other, &link).unwrap();
        } else {
            fs::copy(&saved, &registry).unwrap();
            std::os::unix::fs::symlink(&other, &link).unwrap();
        }
        for (sub, args) in [("list", vec![]), ("get", vec!["tree", "out"])] {
            let mut cmd = s.cmd(sub);
            cmd.args(&args);
            let outcome = run(&mut cmd);
            let named = fs::canonicalize(link.parent().unwrap())
                .unwrap()
                .join(link.file_name().unwrap());
            outcome
                .failure()
                .stderr_has(&named.display().to_string())
                .stderr_has("symbolic link");
            assert_eq!(
                outcome.stderr.trim_end().lines().count(),
                1,
                "{what} as a link: one line: {}",
                outcome.stderr
            );
        }
        assert_eq!(fs::read(&other).unwrap(), before, "{what}: target changed");
        assert!(!other.with_extension("sqlite-wal").exists());
        assert!(!out.join("tree").exists(), "{what}: get wrote");
        fs::remove_file(&link).unwrap();
    }
    // With the link gone, the store works as before.
    let _ = fs::remove_file(&registry);
    fs::rename(&saved, &registry).unwrap();
    s.run("get", &[&"tree", &out]).success();
    assert_restored(&src, &out.join("tree"));
}

fn a_config_larger_than_a_config_can_be_is_refused_by_its_size(kind: Kind) {
    let s = StoreWs::on(kind, SMALL);
    // Locally 1 GiB, sparse (nothing to write, everything to read); on S3
    // a few MB are as good a test of "refused by its size" and quick.
    let size: u64 = match kind {
        Kind::Local => 1 << 30,
        Kind::S3 | Kind::Remote => 5 << 20,
    };
    match kind {
        Kind::Local => {
            let config = s.dir().join("config");
            fs::remove_file(&config).unwrap();
            fs::File::create(&config).unwrap().set_len(size).unwrap();
        }
        Kind::S3 | Kind::Remote => s.replace_object("config", Some(vec![7u8; size as usize])),
    }
    let outcome = s.run("list", &[]);
    outcome
        .failure()
        .stderr_has("config")
        .stderr_has(&format!("{size} bytes"))
        .stderr_has("not read");
    assert_eq!(
        outcome.stderr.trim_end().lines().count(),
        1,
        "{}",
        outcome.stderr
    );
    // Every child this test ran together stayed far below what reading
    // the config would have taken (nextest runs each test in a process of
    // its own, so these are this test's commands only).
    if kind == Kind::Local {
        let peak = children_peak_rss_bytes();
        assert!(peak < size / 4, "a child reached {peak} bytes of memory");
    }
}

/// The largest peak resident set of this process's waited-for children.
fn children_peak_rss_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is
    // a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: getrusage returned 0, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_maxrss).unwrap() * 1024
}

#[test]
fn get_drops_setuid_setgid_and_sticky_bits_unless_asked() {
    let s = StoreWs::new(SMALL);
    let src = s.ws.path("src/modes");
    Tree::new(&src)
        .file("suid", 5000, 0o644)
        .file("shared/f", 100, 0o644);
    set_mode(&src.join("suid"), 0o6755);
    set_mode(&src.join("shared"), 0o1777);
    assert_eq!(mode_of(&src.join("suid")), 0o6755, "chmod 6755 took");
    s.run("put", &[&src]).success();
    for (flag, file, dir) in [
        (None, 0o755, 0o755),
        (Some("--keep-special-bits"), 0o6755, 0o1755),
    ] {
        let out = s.ws.path(format!("out-{file:o}"));
        let mut cmd = s.cmd("get");
        cmd.args(flag).arg("modes").arg(&out);
        with_umask(&mut cmd, 0o022);
        run(&mut cmd).success();
        let got = out.join("modes");
        assert_eq!(mode_of(&got.join("suid")), file, "file, {flag:?}");
        assert_eq!(mode_of(&got.join("shared")), dir, "directory, {flag:?}");
        assert_eq!(mode_of(&got.join("shared/f")), 0o644);
    }
    // The umask applies to directories and files alike.
    let out = s.ws.path("out-027");
    let mut cmd = s.cmd("get");
    cmd.arg("modes").arg(&out);
    with_umask(&mut cmd, 0o027);
    run(&mut cmd).success();
    assert_eq!(mode_of(&out.join("modes/suid")), 0o750);
    assert_eq!(mode_of(&out.join("modes/shared")), 0o750);
}
