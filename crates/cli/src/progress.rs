//! Progress on a terminal: one bar with files, bytes, rate and ETA, and
//! failures printed above it as they happen. Off the terminal, only the
//! failures are printed.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use cryptstream_engine::{FileFailure, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::messages;

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
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("the progress template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(format!("0/{files} files"));
            bar
        });
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

    fn file_failed(&self, failure: &FileFailure) {
        self.count_file();
        match &self.bar {
            Some(bar) => bar.suspend(|| messages::error(failure)),
            None => messages::error(failure),
        }
    }
}
