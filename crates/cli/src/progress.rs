//! Progress on a terminal: one bar with files, bytes, rate and ETA, and
//! failures printed above it as they happen. Off the terminal, only the
//! failures are printed.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptstream_engine::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::messages;

/// What a progress bar counts.
#[derive(Clone, Copy, Debug)]
pub enum Counted {
    /// Bytes, shown in IEC units with a rate.
    Bytes,
    /// Benchmark runs.
    Runs,
}

/// The one progress bar of every command: on stderr, `message`, a bar 30
/// wide, done of total, the rate (bytes) and the time left. `None` when
/// `quiet` is set or stderr is not a terminal.
pub fn bar(
    total: Option<u64>,
    counted: Counted,
    message: String,
    quiet: bool,
) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let template = match counted {
        Counted::Bytes => "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        Counted::Runs => "{msg} [{bar:30}] {pos}/{len} runs ETA {eta}",
    };
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the progress templates are valid")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    Some(bar)
}

/// Reports a run to stderr.
pub struct Reporter {
    bar: Option<ProgressBar>,
    files_total: u64,
    files_done: AtomicU64,
}

impl Reporter {
    /// A reporter for `files` files and `bytes` bytes; the bar is shown only
    /// when stderr is a terminal and `quiet` is off.
    pub fn new(files: u64, bytes: u64, quiet: bool) -> Reporter {
        let bar = bar(
            Some(bytes),
            Counted::Bytes,
            format!("0/{files} files"),
            quiet,
        );
        Reporter {
            bar,
            files_total: files,
            files_done: AtomicU64::new(0),
        }
    }

    /// Whether a bar is drawn (so a closing line is welcome too).
    pub fn on_terminal(&self) -> bool {
        self.bar.is_some()
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn count_file(&self) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{done}/{} files", self.files_total));
        }
    }
}

impl Progress for Reporter {
    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn file_done(&self) {
        self.count_file();
    }

    fn file_failed(&self, failure: &dyn std::fmt::Display) {
        self.count_file();
        match &self.bar {
            Some(bar) => bar.suspend(|| messages::error(failure)),
            None => messages::error(failure),
        }
    }
}
