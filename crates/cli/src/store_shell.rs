//! `store shell`: an interactive prompt over one store. put, get and forget
//! run as background jobs (each on its own registry connection, all on one
//! worker pool); `jobs` shows them with their progress, `list` and `stat`
//! answer while they run, `exit` or Ctrl-D waits for them, and Ctrl-C
//! twice cancels them (complete files stay; a cancelled put is crash-safe
//! like a killed one).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use cryptstream_format::Keyring;
use cryptstream_location::{OpenOptions, OpenedStore, StoreLocation};
use cryptstream_pool::{Cancel, Pool};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::{Context, Editor, Helper, Highlighter, Hinter, Validator};

use crate::cmd_store::{self, Bar, JobCounters, StoreArgs};
use crate::messages;

/// Commands the prompt knows, for completion and `help`.
const COMMANDS: &[&str] = &[
    "put",
    "get",
    "forget",
    "list",
    "snapshots",
    "stat",
    "jobs",
    "help",
    "exit",
    "quit",
];
/// Two Ctrl-C within this time cancel the running jobs.
const DOUBLE_CTRL_C: Duration = Duration::from_secs(3);

/// One line of the prompt, parsed with clap.
#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    disable_help_subcommand = true
)]
enum Line {
    /// put PATH... [--force-read]
    Put(cmd_store::PutArgs),
    /// get SEL... [DEST] [--force]
    Get(cmd_store::GetArgs),
    /// forget SNAP... | --keep-* N [--dry-run]
    Forget(cmd_store::ForgetArgs),
    /// snapshots [--json]
    Snapshots(cmd_store::JsonArgs),
    /// list [--all] [--json]
    List(cmd_store::ListArgs),
    /// stat [--json]
    Stat(cmd_store::JsonArgs),
    /// jobs
    Jobs,
    /// help
    Help,
    /// exit (waits for running jobs)
    #[command(alias = "quit")]
    Exit,
}

struct Job {
    id: usize,
    command: String,
    counters: Arc<JobCounters>,
    cancel: Cancel,
    state: Arc<Mutex<Option<String>>>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Helper, Hinter, Highlighter, Validator)]
struct ShellHelper {
    files: FilenameCompleter,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if !before.contains(' ') {
            let pairs = COMMANDS
                .iter()
                .filter(|c| c.starts_with(before))
                .map(|c| Pair {
                    display: (*c).to_owned(),
                    replacement: format!("{c} "),
                })
                .collect();
            return Ok((0, pairs));
        }
        self.files.complete(line, pos, ctx)
    }
}

/// Splits a line into words: whitespace separates, single or double quotes
/// group, a backslash escapes the next character.
fn split_words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                word.push(chars.next().ok_or("a backslash ends the line")?);
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unclosed quote");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn print_jobs(jobs: &[Job]) {
    if jobs.is_empty() {
        println!("no jobs");
    }
    for job in jobs {
        let state = job.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let done = job.counters.done.load(Ordering::Relaxed);
        let total = job.counters.total.load(Ordering::Relaxed);
        let size = cryptstream_workload::format_size;
        let progress = if total > 0 {
            format!("{}/{}", size(done), size(total))
        } else {
            size(done)
        };
        match state {
            None => println!("[{}] running  {progress}  {}", job.id, job.command),
            Some(result) => println!("[{}] {result}  {}", job.id, job.command),
        }
    }
}

fn wait_all(jobs: &mut [Job], interrupted: &AtomicBool) {
    let mut cancelled = false;
    for job in jobs.iter_mut() {
        if let Some(handle) = job.handle.take() {
            while !handle.is_finished() {
                if interrupted.swap(false, Ordering::Relaxed) && !cancelled {
                    messages::note("cancelling the running jobs");
                    cancelled = true;
                }
                if cancelled {
                    job.cancel.cancel();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = handle.join();
        }
    }
}

/// Runs the prompt until `exit` or end of input.
pub fn run(
    args: &StoreArgs,
    location: &StoreLocation,
    options: &OpenOptions,
    keyring: Arc<Keyring>,
    opened: OpenedStore,
    workers: usize,
) -> anyhow::Result<ExitCode> {
    let pool = Arc::new(Pool::new(workers));
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())?;
    let mut editor: Editor<ShellHelper, rustyline::history::DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(ShellHelper {
        files: FilenameCompleter::new(),
    }));
    let mut jobs: Vec<Job> = Vec::new();
    let mut last_ctrl_c: Option<Instant> = None;
    loop {
        let line = match editor.readline("store> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                let running = jobs
                    .iter()
                    .filter(|j| j.handle.as_ref().is_some_and(|h| !h.is_finished()))
                    .count();
                if running == 0 {
                    continue;
                }
                if last_ctrl_c.is_some_and(|t| t.elapsed() < DOUBLE_CTRL_C) {
                    for job in &jobs {
                        job.cancel.cancel();
                    }
                    messages::note(format_args!("cancelled {running} running jobs"));
                    last_ctrl_c = None;
                } else {
                    messages::note("press Ctrl-C again to cancel the running jobs");
                    last_ctrl_c = Some(Instant::now());
                }
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let words = match split_words(&line) {
            Ok(words) if words.is_empty() => continue,
            Ok(words) => words,
            Err(e) => {
                messages::error(e);
                continue;
            }
        };
        let _ = editor.add_history_entry(line.as_str());
        let parsed = match Line::try_parse_from(&words) {
            Ok(parsed) => parsed,
            Err(e) => {
                let text = e.to_string();
                messages::error(
                    text.lines()
                        .next()
                        .unwrap_or("bad command")
                        .trim_start_matches("error: "),
                );
                continue;
            }
        };
        match parsed {
            Line::Exit => break,
            Line::Help => {
                println!("commands: put PATH... | get SEL... [DEST] | forget SNAP... | list [--all] [--json] | snapshots [--json] | stat | jobs | exit");
            }
            Line::Jobs => print_jobs(&jobs),
            Line::List(list) => {
                if let Err(e) = cmd_store::run_list(opened.store(), &list, &mut std::io::stdout()) {
                    messages::error(crate::one_line(&e));
                }
            }
            Line::Snapshots(json) => {
                if let Err(e) = crate::store_views::run_snapshots(
                    opened.store(),
                    json.json,
                    &mut std::io::stdout(),
                ) {
                    messages::error(crate::one_line(&e));
                }
            }
            Line::Stat(json) => {
                if let Err(e) = cmd_store::run_stat(opened.store(), json.json) {
                    messages::error(crate::one_line(&e));
                }
            }
            Line::Put(_) | Line::Get(_) | Line::Forget(_) => {
                let id = jobs.len() + 1;
                let counters = Arc::new(JobCounters::default());
                let cancel = Cancel::new();
                let state = Arc::new(Mutex::new(None));
                let handle = spawn_job(
                    id,
                    parsed,
                    location.clone(),
                    options.clone(),
                    keyring.clone(),
                    pool.clone(),
                    args.max_memory,
                    counters.clone(),
                    cancel.clone(),
                    state.clone(),
                )?;
                println!("[{id}] started: {line}");
                jobs.push(Job {
                    id,
                    command: line.clone(),
                    counters,
                    cancel,
                    state,
                    handle: Some(handle),
                });
            }
        }
    }
    let running = jobs
        .iter()
        .filter(|j| j.handle.as_ref().is_some_and(|h| !h.is_finished()))
        .count();
    if running > 0 {
        messages::note(format_args!(
            "waiting for {running} running jobs (Ctrl-C cancels them)"
        ));
    }
    wait_all(&mut jobs, &interrupted);
    let failed = jobs.iter().any(|j| {
        j.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|s| s != "done")
    });
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[allow(clippy::too_many_arguments)]
fn spawn_job(
    id: usize,
    line: Line,
    location: StoreLocation,
    options: OpenOptions,
    keyring: Arc<Keyring>,
    pool: Arc<Pool>,
    max_memory: u64,
    counters: Arc<JobCounters>,
    cancel: Cancel,
    state: Arc<Mutex<Option<String>>>,
) -> anyhow::Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name(format!("job-{id}"))
        .spawn(move || {
            let result = (|| -> anyhow::Result<ExitCode> {
                let mut opened = cmd_store::open_store(&location, &options, &keyring, &cancel)?;
                let bar = Bar::counters(counters);
                match line {
                    Line::Put(put) => {
                        let mut sink = Vec::new();
                        cmd_store::run_put(
                            &mut opened,
                            &pool,
                            &put,
                            max_memory,
                            &cancel,
                            &bar,
                            &mut sink,
                        )
                    }
                    Line::Get(get) => cmd_store::run_get(
                        opened.store_mut(),
                        &pool,
                        &get,
                        max_memory,
                        &cancel,
                        &bar,
                    ),
                    Line::Forget(forget) => {
                        crate::store_views::run_forget(opened.store_mut(), &forget)
                    }
                    _ => unreachable!("only put, get and forget run as jobs"),
                }
            })();
            let text = match result {
                Ok(code) if code == ExitCode::SUCCESS => "done".to_owned(),
                Ok(_) if cancel.is_cancelled() => "cancelled".to_owned(),
                Ok(_) => "failed (see the messages above)".to_owned(),
                Err(e) => format!("failed: {}", crate::one_line(&e)),
            };
            messages::note(format_args!("[{id}] {text}"));
            *state.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        })?)
}
