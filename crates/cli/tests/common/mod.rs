//! Helpers shared by the integration tests of the `cryptstream` binary.
//!
//! A test makes a [`Workspace`] (a temp dir with a fresh key file), builds
//! input files with [`write_random_file`] or a [`Tree`], runs the real binary
//! through [`run`] (every run is bounded by [`TIMEOUT`]; a child that is
//! still alive when its [`Running`] guard drops is killed), and compares
//! directory trees with [`snapshot`] and [`assert_same_tree`] (relative
//! paths, exact bytes by BLAKE3 hash, and permission bits).
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_cryptstream");
/// Upper bound for any single run of the binary; a run that takes longer is
/// killed and the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(240);
/// The environment variable the binary reads a passphrase from.
pub const PASSPHRASE_ENV: &str = "CRYPTSTREAM_PASSPHRASE";
/// Cheap Argon2id costs (hidden flags) so passphrase tests stay fast.
pub const FAST_KDF: [&str; 4] = ["--argon2-memory-kib", "1024", "--argon2-passes", "1"];
/// Exit code of a run in which some file failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a run stopped by SIGINT or SIGTERM.
pub const EXIT_INTERRUPTED: i32 = 130;
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// The suffix of encrypted file names.
pub const SUFFIX: &str = ".cst";

/// Plaintext bytes per segment: larger files are split across workers.
pub const SEGMENT_BYTES: u64 = cryptstream_engine::SEGMENT_BYTES;
/// Length of the file header.
pub const HEADER_LEN: usize = cryptstream_format::HEADER_LEN_V2;
/// Length of each chunk's authentication tag.
pub const TAG_LEN: usize = cryptstream_format::TAG_LEN;

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// Where a store command run by a test keeps its registry cache unless
/// the test names one: never the real home's cache.
pub const TEST_CACHE_HOME: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/xdg-cache");

/// A bare `cryptstream` command: no passphrase in the environment, no logs,
/// stdin closed, registry caches under [`TEST_CACHE_HOME`].
pub fn cryptstream() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove(PASSPHRASE_ENV)
        .env_remove("CRYPTSTREAM_CACHE_DIR")
        .env("XDG_CACHE_HOME", TEST_CACHE_HOME)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

/// A spawned child that is killed and reaped if the guard is dropped before
/// it exited (a failing assertion never leaves a process behind).
pub struct Running {
    child: Child,
    command: String,
    status: Option<ExitStatus>,
}

impl Running {
    /// Spawns `cmd`.
    #[track_caller]
    pub fn spawn(cmd: &mut Command) -> Running {
        let command = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
        Running {
            child,
            command,
            status: None,
        }
    }

    /// The child itself (to take its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to the child. Never called after the child was reaped,
    /// so the pid cannot belong to another process.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(self.status.is_none(), "the child was already reaped");
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits in pid_t");
        // SAFETY: kill(2) has no memory-safety requirements; the pid is our
        // own unreaped child, so it cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Whether the child has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait on our child");
        }
        self.status.is_some()
    }

    /// Waits for the child to exit, at most `timeout`.
    ///
    /// # Panics
    /// When the child is still running after `timeout` (it is then killed).
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        while !self.has_exited() {
            assert!(
                Instant::now() < deadline,
                "cryptstream did not exit within {timeout:?}"
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        self.status.expect("has_exited set the status")
    }

    /// Waits for the child (at most `timeout`) while collecting whatever it
    /// writes to the pipes that are still attached to its stdout and stderr.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let stdout = read_in_background(self.child.stdout.take());
        let stderr = read_in_background(self.child.stderr.take());
        let status = self.wait(timeout);
        let stderr = stderr.join().expect("the stderr reader does not panic");
        Outcome {
            command: std::mem::take(&mut self.command),
            status,
            stdout: stdout.join().expect("the stdout reader does not panic"),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished run printed and how it exited.
pub struct Outcome {
    /// The command line, for failure messages.
    pub command: String,
    /// How the process ended.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Outcome {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn describe(&self) -> String {
        format!(
            "{}\nstatus: {}\nstderr:\n{}",
            self.command, self.status, self.stderr
        )
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(&self) -> &Outcome {
        assert_eq!(
            self.code(),
            Some(0),
            "expected success: {}",
            self.describe()
        );
        self
    }

    /// Asserts exit code 1 (a reported failure, not a crash).
    #[track_caller]
    pub fn failure(&self) -> &Outcome {
        assert_eq!(
            self.code(),
            Some(EXIT_FAILURE),
            "expected exit code {EXIT_FAILURE}: {}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the binary panicked: {}",
            self.describe()
        );
        self
    }

    /// Asserts that stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Outcome {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.describe()
        );
        self
    }

    /// Asserts that some stderr line starts with `cryptstream: ` and names
    /// `path` (as the binary displays it).
    #[track_caller]
    pub fn names(&self, path: &Path) -> &Outcome {
        let shown = format!("cryptstream: {}", path.display());
        assert!(
            self.stderr.lines().any(|l| l.starts_with(&shown)),
            "no stderr line starts with {shown:?}: {}",
            self.describe()
        );
        self
    }

    /// Stdout as a JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstdout:\n{}",
                self.describe(),
                String::from_utf8_lossy(&self.stdout)
            )
        })
    }

    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            pipe.read_to_end(&mut bytes).expect("read a child pipe");
        }
        bytes
    })
}

/// Runs `cmd` to completion with stdin closed.
#[track_caller]
pub fn run(cmd: &mut Command) -> Outcome {
    run_with_stdin(cmd, None)
}

/// Runs `cmd` to completion, feeding it `stdin` when given.
#[track_caller]
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Outcome {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let feeder = stdin.map(|data| {
        let mut pipe = running.child_mut().stdin.take().expect("stdin is piped");
        // A child that fails early closes its stdin: the write error is
        // expected then, and the exit status tells the story.
        std::thread::spawn(move || drop(pipe.write_all(&data)))
    });
    let outcome = running.finish(TIMEOUT);
    if let Some(feeder) = feeder {
        feeder.join().expect("the stdin feeder does not panic");
    }
    outcome
}

/// A temp dir with a key file made by `cryptstream keygen`; commands run
/// with the temp dir as their working directory.
pub struct Workspace {
    dir: tempfile::TempDir,
    key: PathBuf,
    key_id: String,
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

impl Workspace {
    /// A new workspace under the system temp dir, with `key` generated.
    pub fn new() -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("cryptstream-test-")
            .tempdir()
            .expect("create a temp dir");
        let key = dir.path().join("key");
        let key_id = keygen(&key);
        Workspace { dir, key, key_id }
    }

    /// The temp dir.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `rel` inside the temp dir.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The key file.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The key id that `keygen` printed.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `cryptstream SUBCOMMAND` run in the temp dir, without a key.
    pub fn bare(&self, subcommand: &str) -> Command {
        let mut cmd = cryptstream();
        cmd.current_dir(self.root()).arg(subcommand);
        cmd
    }

    /// `cryptstream SUBCOMMAND -k KEY` run in the temp dir.
    pub fn keyed(&self, subcommand: &str) -> Command {
        let mut cmd = self.bare(subcommand);
        cmd.arg("-k").arg(&self.key);
        cmd
    }

    /// [`round_trip_tree`] of `plain` through `enc` and `dec` in the temp
    /// dir, with the workspace key and `encrypt_args` given to encrypt.
    /// Returns the encrypt outcome.
    #[track_caller]
    pub fn round_trip(&self, plain: &Path, encrypt_args: &[&str]) -> Outcome {
        let mut encrypt = self.keyed("encrypt");
        encrypt.args(encrypt_args);
        round_trip_tree(
            plain,
            &self.path("enc"),
            &self.path("dec"),
            encrypt,
            self.keyed("decrypt"),
        )
    }
}

/// Runs `cryptstream keygen -o PATH`, asserts success and returns the key id
/// it printed.
#[track_caller]
pub fn keygen(path: &Path) -> String {
    let outcome = run(cryptstream().arg("keygen").arg("-o").arg(path));
    outcome.success();
    let stdout = outcome.stdout_text();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id: "))
        .unwrap_or_else(|| panic!("keygen printed no key id: {stdout}"))
        .trim()
        .to_string()
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it
/// held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// Making data
// ---------------------------------------------------------------------------

/// xorshift64* — a tiny, fast, seeded generator for test data (not for
/// anything secret).
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value, zero included). Distinct seeds
    /// give distinct streams: the state is the seed through SplitMix64's
    /// finaliser, a bijection (forcing the low bit, as before, made seeds
    /// 2k and 2k+1 share one stream).
    pub fn new(seed: u64) -> XorShift {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // xorshift never leaves zero; one seed in 2^64 lands there.
        XorShift(if z == 0 { 0x9E37_79B9_7F4A_7C15 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }
}

/// `len` random bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    XorShift::new(seed).fill(&mut bytes);
    bytes
}

/// Writes a file of `len` random bytes from `seed` (streamed, so any size
/// works) and gives it permission bits `mode`.
pub fn write_random_file(path: &Path, len: u64, seed: u64, mode: u32) {
    let mut rng = XorShift::new(seed);
    let mut file = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    let mut buf = vec![0u8; MIB.min(len.max(1)) as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).expect("write test data");
        left -= n as u64;
    }
    drop(file);
    set_mode(path, mode);
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

/// The permission bits of `path` (not following a symlink).
pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {path:?}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

/// A seed derived from a path, so every file of a tree differs.
fn seed_of(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let hash = blake3::hash(path.as_os_str().as_bytes());
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Builds a directory tree under a root, one entry at a time.
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    /// Creates `root` (mode 0755) and returns a builder for it.
    pub fn new(root: &Path) -> Tree {
        fs::create_dir_all(root).unwrap_or_else(|e| panic!("mkdir {root:?}: {e}"));
        set_mode(root, 0o755);
        Tree {
            root: root.to_path_buf(),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Adds a file of `len` random bytes (seeded by its path) with `mode`;
    /// missing parent directories are created with mode 0755.
    pub fn file(&self, rel: impl AsRef<Path>, len: u64, mode: u32) -> &Tree {
        let path = self.root.join(rel.as_ref());
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
        }
        write_random_file(&path, len, seed_of(rel.as_ref()), mode);
        self
    }

    /// Adds a directory with `mode` (and missing parents with 0755).
    pub fn dir(&self, rel: impl AsRef<Path>, mode: u32) -> &Tree {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {path:?}: {e}"));
        set_mode(&path, mode);
        self
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> &Tree {
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {path:?}: {e}"));
        self
    }
}

// ---------------------------------------------------------------------------
// Comparing results
// ---------------------------------------------------------------------------

/// The streaming BLAKE3 hash of a file's contents.
pub fn hash_file(path: &Path) -> blake3::Hash {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .unwrap_or_else(|e| panic!("read {path:?}: {e}"));
    hasher.finalize()
}

/// One entry of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file: its length, content hash and permission bits.
    File {
        /// Length in bytes.
        len: u64,
        /// BLAKE3 of the contents.
        hash: blake3::Hash,
        /// Permission bits.
        mode: u32,
    },
    /// A directory and its permission bits.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link and its target.
    Symlink(PathBuf),
    /// Anything else (a FIFO, a socket, a device): never opened.
    Special,
}

/// Every entry under a root by relative path (the root itself is `""`).
pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Takes a [`Snapshot`] of `root` (symlinks are recorded, not followed).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut entries = Snapshot::new();
    snapshot_into(root, Path::new(""), &mut entries);
    entries
}

fn snapshot_into(root: &Path, rel: &Path, entries: &mut Snapshot) {
    let path = root.join(rel);
    let meta = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {path:?}: {e}"));
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path).expect("read a symlink");
        entries.insert(rel.to_path_buf(), Entry::Symlink(target));
    } else if meta.is_dir() {
        entries.insert(rel.to_path_buf(), Entry::Dir { mode });
        for name in list_dir(&path) {
            snapshot_into(root, &rel.join(name), entries);
        }
    } else if !meta.is_file() {
        entries.insert(rel.to_path_buf(), Entry::Special);
    } else {
        let entry = Entry::File {
            len: meta.len(),
            hash: hash_file(&path),
            mode,
        };
        entries.insert(rel.to_path_buf(), entry);
    }
}

/// The names in a directory, sorted.
pub fn list_dir(dir: &Path) -> Vec<OsString> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}"))
        .map(|e| e.expect("a directory entry").file_name())
        .collect();
    names.sort();
    names
}

/// Asserts that `dir` exists and holds nothing (no output, no temp file).
#[track_caller]
pub fn assert_empty_dir(dir: &Path) {
    let names = list_dir(dir);
    assert!(names.is_empty(), "{dir:?} should be empty, holds {names:?}");
}

/// Only the regular files and directories of `snapshot`: what an
/// encrypted or decrypted copy should hold.
pub fn files_and_dirs(snapshot: &Snapshot) -> Snapshot {
    snapshot
        .iter()
        .filter(|(_, e)| matches!(e, Entry::File { .. } | Entry::Dir { .. }))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

/// Asserts that two snapshots are equal, listing every difference.
#[track_caller]
pub fn assert_same_tree(expected: &Snapshot, actual: &Snapshot) {
    let mut problems = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => problems.push(format!("missing {path:?}")),
            Some(got) if got != want => {
                problems.push(format!("{path:?}: expected {want:?}, got {got:?}"))
            }
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!("unexpected {path:?}"));
    }
    assert!(
        problems.is_empty(),
        "trees differ in {} places:\n{}",
        problems.len(),
        problems[..problems.len().min(20)].join("\n")
    );
}

/// `path` with `.cst` appended to its last component.
pub fn with_suffix(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Asserts that `encrypted` mirrors `plain`: the same directories (with the
/// same modes), every regular file present as `NAME.cst`, and nothing else
/// (no symlinks, no special files, no temp files).
#[track_caller]
pub fn assert_encrypted_layout(plain: &Snapshot, encrypted: &Snapshot) {
    let mut problems = Vec::new();
    let mut expected_names = std::collections::BTreeSet::new();
    for (path, entry) in plain {
        match entry {
            Entry::Dir { mode } => {
                expected_names.insert(path.clone());
                match encrypted.get(path) {
                    Some(Entry::Dir { mode: got }) if got == mode => {}
                    other => problems.push(format!("dir {path:?}: got {other:?}")),
                }
            }
            Entry::File { len, .. } => {
                let name = with_suffix(path);
                let smallest = len + (HEADER_LEN + TAG_LEN) as u64;
                match encrypted.get(&name) {
                    Some(Entry::File { len: got, .. }) if *got >= smallest => {}
                    other => problems.push(format!("file {name:?}: got {other:?}")),
                }
                expected_names.insert(name);
            }
            Entry::Symlink(_) | Entry::Special => {}
        }
    }
    for path in encrypted.keys().filter(|p| !expected_names.contains(*p)) {
        problems.push(format!("unexpected {path:?}"));
    }
    assert!(
        problems.is_empty(),
        "encrypted tree does not mirror the input:\n{}",
        problems[..problems.len().min(20)].join("\n")
    );
}

/// Runs `cmd INPUT OUTPUT` (`cmd` already holds the subcommand, secret and
/// flags) and asserts success.
#[track_caller]
pub fn run_ok(mut cmd: Command, input: &Path, output: &Path) -> Outcome {
    let outcome = run(cmd.arg(input).arg(output));
    outcome.success();
    outcome
}

/// Encrypts the tree `plain` into `encrypted` with `encrypt`, checks the
/// mirrored layout, decrypts it into `decrypted` with `decrypt` and checks
/// that it equals the input (symlinks and special files aside) and that the input did not
/// change. `encrypt` and `decrypt` carry the secret and flags; the paths
/// are appended. Returns the encrypt outcome.
#[track_caller]
pub fn round_trip_tree(
    plain: &Path,
    encrypted: &Path,
    decrypted: &Path,
    encrypt: Command,
    decrypt: Command,
) -> Outcome {
    let before = snapshot(plain);
    let outcome = run_ok(encrypt, plain, encrypted);
    assert_encrypted_layout(&before, &snapshot(encrypted));
    run_ok(decrypt, encrypted, decrypted);
    assert_same_tree(&files_and_dirs(&before), &snapshot(decrypted));
    assert_same_tree(&before, &snapshot(plain));
    outcome
}

/// Encrypts the file `plain` to `NAME.cst` beside it with `encrypt` and
/// decrypts that to `NAME.out` with `decrypt`, checks bytes and mode, then
/// removes both outputs.
#[track_caller]
pub fn round_trip_file(plain: &Path, encrypt: Command, decrypt: Command) {
    let encrypted = with_suffix(plain);
    let mut decrypted = plain.as_os_str().to_os_string();
    decrypted.push(".out");
    let decrypted = PathBuf::from(decrypted);
    let what = format!("{:?}", encrypt.get_args().collect::<Vec<_>>());
    run_ok(encrypt, plain, &encrypted);
    run_ok(decrypt, &encrypted, &decrypted);
    assert_eq!(
        fs::metadata(&decrypted).unwrap().len(),
        fs::metadata(plain).unwrap().len(),
        "length of {decrypted:?} ({what})"
    );
    assert_eq!(
        hash_file(&decrypted),
        hash_file(plain),
        "contents of {decrypted:?} ({what})"
    );
    assert_eq!(mode_of(&decrypted), mode_of(plain), "mode of {decrypted:?}");
    fs::remove_file(&encrypted).unwrap();
    fs::remove_file(&decrypted).unwrap();
}

/// Makes `cmd` run with umask `mask` (so modes that depend on it are known).
pub fn with_umask(cmd: &mut Command, mask: libc::mode_t) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: umask(2) is async-signal-safe and touches no memory of the
    // parent; it is the only thing done between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        })
    }
}

/// Sets the mtime of `path` (not following a symlink) to `seconds.nanos`.
pub fn set_mtime(path: &Path, seconds: i64, nanos: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: seconds,
            tv_nsec: nanos,
        },
    ];
    // SAFETY: a valid C string and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {path:?}");
}

/// Everything `tar`/`rsync -a` restore, per entry (relative path): kind,
/// mode, mtime with nanoseconds, content hash or link target, and which
/// hard-link group a file belongs to.
#[derive(Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub content: String,
    pub link_group: Option<usize>,
}

/// Every entry below `root` with its metadata (the root itself excluded).
pub fn metadata_of(root: &Path) -> BTreeMap<PathBuf, Meta> {
    let mut out = BTreeMap::new();
    let mut groups: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for name in list_dir(&root.join(&rel)) {
            let rel = rel.join(name);
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let (kind, content) = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                ("symlink", target.to_string_lossy().into_owned())
            } else if meta.is_dir() {
                stack.push(rel.clone());
                ("dir", String::new())
            } else {
                ("file", hash_file(&path).to_hex().to_string())
            };
            let link_group = (kind == "file" && meta.nlink() > 1).then(|| {
                let next = groups.len();
                *groups.entry((meta.dev(), meta.ino())).or_insert(next)
            });
            // Linux has no mode for a symlink itself.
            let mode = if kind == "symlink" {
                0
            } else {
                meta.mode() & 0o7777
            };
            out.insert(
                rel,
                Meta {
                    kind,
                    mode,
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    content,
                    link_group,
                },
            );
        }
    }
    out
}

/// A source tree with everything a real one has.
pub fn real_tree(root: &Path) {
    let tree = Tree::new(root);
    tree.file("README", 1000, 0o644)
        .file("bin/tool", 70_000, 0o755)
        .file("secret/key.pem", 300, 0o600)
        .file("src/lib/big.bin", 5 * 1024 * 1024 + 123, 0o644)
        .file("src/main.c", 4096, 0o644)
        .dir("empty", 0o755)
        .dir("private", 0o700)
        .file("private/notes", 10, 0o600)
        .symlink("link-relative", "src/main.c")
        .symlink("link-absolute", "/etc/hostname")
        .symlink("link-dangling", "does/not/exist")
        .symlink("link-to-dir", "src")
        .symlink("src/lib/up", "../../README");
    std::fs::hard_link(root.join("src/main.c"), root.join("main-hard")).expect("link");
    std::fs::hard_link(root.join("README"), root.join("src/README-again")).expect("link");
    std::fs::hard_link(root.join("README"), root.join("private/README-third")).expect("link");
    // Old times with nanoseconds on everything, directories last (adding
    // entries changes a directory's mtime).
    let mut seconds = 1_000_000_000;
    let all = metadata_of(root);
    for (rel, meta) in all.iter().rev() {
        seconds += 7;
        let nanos = (seconds % 1_000_000_000) * 13 % 1_000_000_000;
        if meta.kind != "dir" {
            set_mtime(&root.join(rel), seconds, nanos);
        }
    }
    for (rel, meta) in all.iter().rev() {
        if meta.kind == "dir" {
            seconds += 11;
            set_mtime(&root.join(rel), seconds, 123_456_789);
        }
    }
    std::fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700))
        .expect("chmod");
}

/// A new pseudo-terminal pair (master, slave).
pub fn open_pty() -> (File, std::os::fd::OwnedFd) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut master = 0;
    let mut slave = 0;
    // SAFETY: openpty writes two descriptors into the given integers; the
    // name, termios and window-size pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The stages of `output` beside it (`.NAME.cst-partial.PID`).
pub fn stages_of(output: &Path) -> Vec<PathBuf> {
    let prefix = format!(
        ".{}.cst-partial.",
        output.file_name().unwrap().to_str().unwrap()
    );
    let Ok(entries) = fs::read_dir(output.parent().unwrap()) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_str().unwrap().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect()
}
