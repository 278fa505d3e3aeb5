//! The parts of a send that are not file bytes: before the files, which
//! ones the server already holds (`Check`); after every file arrived,
//! symbolic links, hard links and directories (`Symlink`, `Link`,
//! `Mkdir`), on one connection.
//!
//! Directories come last and deepest first, so a directory gets its mode
//! and mtime once nothing more is added to it (several connections carry
//! files at once: only after all of them finished is the tree complete),
//! and a read-only directory never stops its own contents. A directory
//! with anything below it that did not arrive keeps what it has on the
//! server (a later send fills it and then applies them). A hard link is
//! sent only when the file it names arrived.
//!
//! Requests go out pipelined, at most [`WINDOW`] unanswered, and each is
//! answered in order by one frame naming its id.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use super::{
    report_done, Comparison, JobError, PlannedDir, PlannedLink, PlannedSymlink, SendFailure,
    Session, Shared, HASH_SEGMENT,
};
use crate::frame::{Compare, ErrorCode, Frame, HASH_LEN};
use crate::treehash::SegmentedHash;
use crate::wire::WireError;
use crate::NetError;

/// Most requests sent and not yet answered.
const WINDOW: usize = 64;

/// What the tree step made, and what failed.
#[derive(Default)]
pub(super) struct EntriesDone {
    pub symlinks: u64,
    pub hard_links: u64,
    pub directories: u64,
    pub failures: Vec<SendFailure>,
}

/// The whole-file BLAKE3 of every file (for `--checksum`), on a blocking
/// thread; `None` for a file that cannot be read (it is then sent, and
/// fails with its reason).
pub(super) async fn hash_all(shared: &std::sync::Arc<Shared>) -> Vec<Option<[u8; HASH_LEN]>> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        shared
            .files
            .iter()
            .map(|state| {
                let file = File::open(&state.planned.path).ok()?;
                let hash = SegmentedHash::new(state.planned.meta.size, HASH_SEGMENT)
                    .finish(|buf, offset| file.read_exact_at(buf, offset))
                    .ok()?;
                Some(*hash.as_bytes())
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Whether the answer `frame` is for request `id`: `Ok(true)` done,
/// `Ok(false)` refused (the reason in `refusal`), `Err` for a broken
/// session.
fn outcome(frame: &Frame<'_>, id: u32) -> Result<Result<(), String>, JobError> {
    match frame {
        Frame::Checked { check_id, .. } if *check_id == id => Ok(Ok(())),
        Frame::Made { entry_id } if *entry_id == id => Ok(Ok(())),
        Frame::Error {
            code,
            file_id,
            message,
        } if *file_id == id && *code != ErrorCode::Protocol => {
            Ok(Err(format!("refused by the server: {message}")))
        }
        Frame::Error { message, .. } => Err(JobError::Session(message.clone())),
        other => Err(JobError::Session(format!(
            "unexpected {:?} frame from the server",
            other.kind()
        ))),
    }
}

impl Session {
    /// Sends `requests` (whole frames, the `n`th with id `n`), at most
    /// [`WINDOW`] unanswered, and gives each answer to `answered` in order.
    async fn pipeline(
        &mut self,
        requests: impl Iterator<Item = Vec<u8>>,
        mut answered: impl FnMut(usize, Frame<'static>) -> Result<(), JobError>,
    ) -> Result<(), JobError> {
        let mut batch = Vec::new();
        let (mut sent, mut done) = (0usize, 0usize);
        let mut requests = requests.peekable();
        while requests.peek().is_some() || done < sent {
            if let Some(request) = requests.next_if(|_| sent - done < WINDOW) {
                batch.extend_from_slice(&request);
                sent += 1;
                if requests.peek().is_some() && sent - done < WINDOW {
                    continue;
                }
            }
            if !batch.is_empty() {
                self.tls.write_all(&batch).await.map_err(WireError::from)?;
                self.tls.flush().await.map_err(WireError::from)?;
                batch.clear();
            }
            let answer = self.answer().await?;
            answered(done, answer)?;
            done += 1;
        }
        Ok(())
    }

    /// Asks the server which files it holds already (by `comparison`,
    /// with `hashes` for [`Comparison::Checksum`]) and marks them held.
    ///
    /// # Errors
    /// [`NetError::Connect`] when the connection breaks.
    pub(super) async fn check_held(
        &mut self,
        shared: &Shared,
        comparison: Comparison,
        hashes: &[Option<[u8; HASH_LEN]>],
    ) -> Result<(), NetError> {
        // Only files that can be compared are asked about.
        let asked: Vec<(usize, Compare)> = shared
            .files
            .iter()
            .enumerate()
            .filter_map(|(index, _)| match comparison {
                Comparison::SizeAndMtime => Some((index, Compare::SizeAndMtime)),
                Comparison::Checksum => hashes
                    .get(index)
                    .copied()
                    .flatten()
                    .map(|hash| (index, Compare::Content(hash))),
            })
            .collect();
        let requests = asked.iter().enumerate().map(|(id, &(index, compare))| {
            let file = &shared.files[index].planned;
            Frame::Check {
                check_id: id as u32,
                compare,
                meta: file.meta.clone(),
                name: file.name.as_bytes(),
            }
            .to_bytes()
        });
        self.pipeline(requests, |id, answer| {
            if let Ok(()) = outcome(&answer, id as u32)? {
                if let Frame::Checked { held: true, .. } = answer {
                    shared.files[asked[id].0]
                        .held
                        .store(true, Ordering::Relaxed);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| NetError::Connect {
            address: shared.to.clone(),
            reason: match e {
                JobError::File(reason) | JobError::Session(reason) => reason,
                JobError::Broken => "connection lost".into(),
            },
        })
    }

    /// Sends the symbolic links, the hard links whose file arrived, and
    /// then the directories, deepest first, whose contents all arrived.
    pub(super) async fn send_entries(
        &mut self,
        shared: &Shared,
        symlinks: &[PlannedSymlink],
        links: &[PlannedLink],
        dirs: &[PlannedDir],
    ) -> EntriesDone {
        let mut done = EntriesDone::default();
        for link in links {
            if !shared.files[link.file].arrived() {
                let reason = format!(
                    "hard link not made: {} did not arrive",
                    shared.files[link.file].planned.name.display()
                );
                report_done(&*shared.progress, &link.name.display(), Some(&reason));
                done.failures.push(SendFailure {
                    name: link.name.display(),
                    reason,
                });
            }
        }
        let links: Vec<&PlannedLink> = links
            .iter()
            .filter(|l| shared.files[l.file].arrived())
            .collect();
        let mut requests: Vec<(String, Vec<u8>, Made)> = Vec::new();
        for link in symlinks {
            let frame = Frame::Symlink {
                entry_id: requests.len() as u32,
                mtime: link.mtime,
                name: link.name.as_bytes(),
                target: &link.target,
            };
            requests.push((link.name.display(), frame.to_bytes(), Made::Symlink));
        }
        for link in links {
            let id = requests.len() as u32;
            let frame = Frame::Link {
                entry_id: id,
                name: link.name.as_bytes(),
                target: shared.files[link.file].planned.name.as_bytes(),
            };
            requests.push((link.name.display(), frame.to_bytes(), Made::HardLink));
        }
        let links_made = self.run_entries(shared, &requests, &mut done).await;
        // Directories last, deepest first, and only over complete contents.
        let mut failed: Vec<Vec<u8>> = shared
            .files
            .iter()
            .filter(|f| !f.arrived())
            .map(|f| f.planned.name.as_bytes().to_vec())
            .chain(done.failures.iter().map(|f| f.name.clone().into_bytes()))
            .collect();
        if links_made.is_err() {
            lost_dirs(shared, dirs.iter(), &mut done);
            return done;
        }
        let mut ordered: Vec<&PlannedDir> = dirs.iter().collect();
        ordered.sort_by(|a, b| {
            let depth = |d: &PlannedDir| d.name.as_bytes().iter().filter(|&&c| c == b'/').count();
            depth(b)
                .cmp(&depth(a))
                .then(a.name.as_bytes().cmp(b.name.as_bytes()))
        });
        // One depth at a time: a directory waits for the verdicts below it.
        let mut at = 0;
        while at < ordered.len() {
            let depth = |d: &PlannedDir| d.name.as_bytes().iter().filter(|&&c| c == b'/').count();
            let level = depth(ordered[at]);
            let end = ordered[at..]
                .iter()
                .position(|d| depth(d) != level)
                .map_or(ordered.len(), |p| at + p);
            let mut requests = Vec::new();
            for dir in &ordered[at..end] {
                let prefix = [dir.name.as_bytes(), b"/"].concat();
                if failed.iter().any(|f| f.starts_with(&prefix)) {
                    // Incomplete: it keeps what it has, and so do its parents.
                    failed.push(dir.name.as_bytes().to_vec());
                    continue;
                }
                let id = requests.len() as u32;
                let frame = Frame::Mkdir {
                    entry_id: id,
                    mode: dir.mode,
                    mtime: dir.mtime,
                    name: dir.name.as_bytes(),
                };
                requests.push((dir.name.display(), frame.to_bytes(), Made::Directory));
            }
            let before = done.failures.len();
            let result = self.run_entries(shared, &requests, &mut done).await;
            failed.extend(
                done.failures[before..]
                    .iter()
                    .map(|f| f.name.clone().into_bytes()),
            );
            if result.is_err() {
                lost_dirs(shared, ordered[end..].iter().copied(), &mut done);
                return done;
            }
            at = end;
        }
        done
    }

    /// Sends `requests` and counts what was made into `done`; on a broken
    /// connection every request not answered fails.
    async fn run_entries(
        &mut self,
        shared: &Shared,
        requests: &[(String, Vec<u8>, Made)],
        done: &mut EntriesDone,
    ) -> Result<(), ()> {
        let mut verdicts: Vec<Option<Result<(), String>>> = vec![None; requests.len()];
        let result = self
            .pipeline(requests.iter().map(|r| r.1.clone()), |id, answer| {
                verdicts[id] = Some(outcome(&answer, id as u32)?);
                Ok(())
            })
            .await;
        let lost = match &result {
            Ok(()) => String::new(),
            Err(JobError::File(reason) | JobError::Session(reason)) => {
                format!("connection lost: {reason}")
            }
            Err(JobError::Broken) => "connection lost".into(),
        };
        for ((name, _, made), verdict) in requests.iter().zip(verdicts) {
            let reason = match verdict {
                Some(Ok(())) => {
                    match made {
                        Made::Symlink => done.symlinks += 1,
                        Made::HardLink => done.hard_links += 1,
                        Made::Directory => done.directories += 1,
                    }
                    continue;
                }
                Some(Err(reason)) => reason,
                None => lost.clone(),
            };
            report_done(&*shared.progress, name, Some(&reason));
            done.failures.push(SendFailure {
                name: name.clone(),
                reason,
            });
        }
        result.map_err(|_| ())
    }
}

/// Fails `dirs` after the connection was lost.
fn lost_dirs<'a>(
    shared: &Shared,
    dirs: impl Iterator<Item = &'a PlannedDir>,
    done: &mut EntriesDone,
) {
    for dir in dirs {
        let reason = "not made: the connection was lost".to_owned();
        report_done(&*shared.progress, &dir.name.display(), Some(&reason));
        done.failures.push(SendFailure {
            name: dir.name.display(),
            reason,
        });
    }
}

/// What an entry request makes.
#[derive(Clone, Copy)]
enum Made {
    Symlink,
    HardLink,
    Directory,
}
