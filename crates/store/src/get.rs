//! `get`: entries back out of the store, whole trees in one parallel run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cryptstream_output::{
    create_symlink, AtomicFile, DirFinish, DirIndex, OutputTree, Replace, Timestamp,
};
use cryptstream_pool::{Cancel, Pool};

use crate::backend::Backend;
use crate::blob::{self, COMPRESSION_NONE, COMPRESSION_ZSTD};
use crate::keys::StoreKeys;
use crate::manifest::{format_uid, FileMac, Kind};
use crate::registry::{FileRow, Location};
use crate::{Progress, Store, StoreError};

/// Largest chunk plaintext accepted from the registry (FastCDC's maximum).
const MAX_RAW_CHUNK: u32 = fastcdc::v2020::MAXIMUM_MAX;
/// Bytes a chunk task accounts for beyond its buffers.
const TASK_OVERHEAD: u64 = 4096;

/// How a get runs.
#[derive(Clone, Debug)]
pub struct GetOptions {
    /// Bytes of chunks in flight at most (`--max-memory`).
    pub max_memory: u64,
    /// Replace existing files (otherwise an existing name fails that entry).
    pub overwrite: bool,
    /// Apply this umask to restored modes.
    pub umask: u32,
    /// Stops the get.
    pub cancel: Cancel,
}

/// One entry's result.
#[derive(Clone, Debug)]
pub struct GetReport {
    /// Its name in the store.
    pub name: String,
    /// Its uid.
    pub uid: u64,
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// `None` when it came back exact, else the reason it did not.
    pub error: Option<String>,
}

enum Item {
    Chunk(usize, Result<u32, String>),
    End(usize),
}

/// A file being restored.
struct Open {
    file: Option<Arc<AtomicFile>>,
    /// Whether the registry's chunk list matches the record's authenticator.
    mac_ok: bool,
    bytes: u64,
    error: Option<String>,
}

/// Checks a stored name: relative, `/`-separated, no `.`/`..`/empty part.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let ok = !name.is_empty()
        && !name.contains('\0')
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    ok.then(|| path.to_path_buf())
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Fetches, opens, decompresses and checks one chunk, and writes it at
/// `offset` (runs on a worker).
fn restore_chunk(
    backend: &dyn Backend,
    keys: &StoreKeys,
    id: &[u8; 32],
    loc: &Location,
    out: &AtomicFile,
    offset: u64,
) -> Result<u32, String> {
    let at = || {
        format!(
            "chunk {} (pack {} offset {})",
            hex::encode(&id[..8]),
            loc.pack,
            loc.offset
        )
    };
    if loc.raw_len > MAX_RAW_CHUNK || loc.stored_len as usize > MAX_RAW_CHUNK as usize * 2 {
        return Err(format!("{}: lengths out of range", at()));
    }
    let mut blob = vec![0u8; loc.stored_len as usize];
    crate::hooks::before_chunk_read();
    backend
        .get_range(&loc.pack, loc.offset, &mut blob)
        .map_err(|e| format!("{}: {e}", at()))?;
    let aad = blob::chunk_aad(id, loc.compression, loc.raw_len);
    let body = blob::open_in_place(keys, &aad, &mut blob)
        .map_err(|_| format!("{}: does not authenticate (damaged)", at()))?;
    let plain: std::borrow::Cow<'_, [u8]> = match loc.compression {
        COMPRESSION_NONE => std::borrow::Cow::Borrowed(&*body),
        COMPRESSION_ZSTD => {
            let mut out = vec![0u8; loc.raw_len as usize];
            let n = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = zstd::bulk::Decompressor::new().ok();
                    }
                    slot.as_mut()?
                        .decompress_to_buffer(&*body, &mut out[..])
                        .ok()
                })
                .ok_or_else(|| format!("{}: does not decompress", at()))?;
            out.truncate(n);
            std::borrow::Cow::Owned(out)
        }
        other => return Err(format!("{}: unknown compression {other}", at())),
    };
    if plain.len() != loc.raw_len as usize || keys.chunk_id(&plain) != *id {
        return Err(format!("{}: content does not match its id", at()));
    }
    out.file()
        .write_all_at(&plain, offset)
        .map_err(|e| format!("write: {e}"))?;
    Ok(loc.raw_len)
}

/// Finds the entries `selectors` name (uids or names; a directory's name
/// brings its whole tree).
///
/// # Errors
/// [`StoreError::NotFound`] for a selector that matches nothing.
pub(crate) fn select(store: &Store, selectors: &[String]) -> Result<Vec<FileRow>, StoreError> {
    let mut rows = Vec::new();
    for sel in selectors {
        let before = rows.len();
        if let Some(uid) = crate::parse_uid(sel) {
            if let Some(row) = store.registry.by_uid(uid)? {
                rows.push(row);
            }
        }
        if rows.len() == before {
            let name = sel.trim_end_matches('/');
            store.registry.by_name(name, |row| {
                rows.push(row);
                Ok(())
            })?;
        }
        if rows.len() == before {
            return Err(StoreError::NotFound(sel.clone()));
        }
    }
    rows.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    rows.dedup_by(|a, b| a.record.uid == b.record.uid);
    Ok(rows)
}

impl Store {
    /// Restores the entries `selectors` name into `dest` (each at
    /// `dest/NAME`). Every file is written into an unnamed temp file and
    /// linked under its name only when every chunk and the whole-file
    /// authenticator check out.
    ///
    /// # Errors
    /// A selector that matches nothing, an unusable destination, registry
    /// failures; per-file failures are reported, not returned.
    pub fn get(
        &mut self,
        pool: &Pool,
        selectors: &[String],
        dest: &Path,
        opts: &GetOptions,
        progress: &dyn Progress,
        report: &mut dyn FnMut(&GetReport),
    ) -> Result<(), StoreError> {
        let rows = select(self, selectors)?;
        progress.set_total(rows.iter().map(|r| r.record.size).sum());
        let mut tree = OutputTree::open_root(dest, None).map_err(|e| StoreError::Io {
            path: dest.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let replace = if opts.overwrite {
            Replace::Always
        } else {
            Replace::Never
        };
        // Directories first (names sort parents before children), so that
        // files land in them and they get their mode and mtime last.
        let mut dirs: HashMap<PathBuf, DirIndex> = HashMap::new();
        dirs.insert(PathBuf::new(), 0);
        let dir_error =
            |name: &str, why: String, report: &mut dyn FnMut(&GetReport), row: &FileRow| {
                report(&GetReport {
                    name: name.to_owned(),
                    uid: row.record.uid,
                    path: dest.join(name),
                    size: row.record.size,
                    error: Some(why),
                });
            };
        let mut files = Vec::new();
        for row in rows {
            let Some(rel) = safe_relative(&row.record.name) else {
                dir_error(
                    &row.record.name.clone(),
                    "unsafe name in the store; refused".into(),
                    report,
                    &row,
                );
                continue;
            };
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let parent_index = match ensure_dir(&mut tree, &mut dirs, &parent, None) {
                Ok(i) => i,
                Err(e) => {
                    dir_error(&row.record.name.clone(), e, report, &row);
                    continue;
                }
            };
            match row.record.kind {
                Kind::Dir => {
                    let finish = DirFinish {
                        mode: row.record.mode & 0o7777 & !opts.umask,
                        mtime: Some(Timestamp {
                            seconds: row.record.mtime.0,
                            nanos: row.record.mtime.1,
                        }),
                    };
                    match ensure_dir(&mut tree, &mut dirs, &rel, Some(finish)) {
                        Ok(_) => report(&GetReport {
                            name: row.record.name.clone(),
                            uid: row.record.uid,
                            path: dest.join(&rel),
                            size: 0,
                            error: None,
                        }),
                        Err(e) => dir_error(&row.record.name.clone(), e, report, &row),
                    }
                }
                Kind::Symlink => {
                    let ok_mac = FileMac::new(&self.keys, &row.record).finish() == row.record.mac;
                    let result = if !ok_mac {
                        Err("record does not authenticate (registry damaged)".to_owned())
                    } else {
                        tree.dir(parent_index)
                            .and_then(|dir| {
                                create_symlink(
                                    &dir,
                                    rel.file_name().unwrap_or(OsStr::new("")),
                                    &row.record.link,
                                    Some(Timestamp {
                                        seconds: row.record.mtime.0,
                                        nanos: row.record.mtime.1,
                                    }),
                                    replace,
                                )
                            })
                            .map_err(|e| e.to_string())
                    };
                    report(&GetReport {
                        name: row.record.name.clone(),
                        uid: row.record.uid,
                        path: dest.join(&rel),
                        size: 0,
                        error: result.err(),
                    });
                }
                Kind::File => files.push((row, rel, parent_index)),
            }
        }
        self.restore_files(pool, &tree, dest, &files, opts, replace, progress, report)?;
        if let Some((path, e)) = tree.finish_dirs(|mode| mode).into_iter().next() {
            return Err(StoreError::Io { path, source: e });
        }
        if opts.cancel.is_cancelled() {
            return Err(StoreError::Cancelled);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn restore_files(
        &self,
        pool: &Pool,
        tree: &OutputTree,
        dest: &Path,
        files: &[(FileRow, PathBuf, DirIndex)],
        opts: &GetOptions,
        replace: Replace,
        progress: &dyn Progress,
        report: &mut dyn FnMut(&GetReport),
    ) -> Result<(), StoreError> {
        let backend: &dyn Backend = &*self.backend;
        let keys = &self.keys;
        let registry = &self.registry;
        let open: RefCell<HashMap<usize, Open>> = RefCell::new(HashMap::new());
        let mut failure: Option<StoreError> = None;
        let budget = opts.max_memory;
        // Each file in flight accounts for this much, so that at most
        // MAX_OPEN_FILES temp files are open at once.
        let file_cost = (budget / MAX_OPEN_FILES).max(TASK_OVERHEAD);
        pool.scope(|scope| {
            let mut ordered = scope.ordered(budget, |item: Item| match item {
                Item::Chunk(i, result) => {
                    let mut open = open.borrow_mut();
                    let file = open.get_mut(&i).expect("a chunk's file is open");
                    match result {
                        Ok(len) => {
                            file.bytes += u64::from(len);
                            progress.advance(u64::from(len));
                        }
                        Err(e) => {
                            file.error.get_or_insert(e);
                        }
                    }
                }
                Item::End(i) => {
                    let file = open.borrow_mut().remove(&i).expect("an End's file is open");
                    let (row, rel, _) = &files[i];
                    let error = finish_file(file, row, opts, replace);
                    report(&GetReport {
                        name: row.record.name.clone(),
                        uid: row.record.uid,
                        path: dest.join(rel),
                        size: row.record.size,
                        error,
                    });
                }
            });
            for (i, (row, rel, dir)) in files.iter().enumerate() {
                if opts.cancel.is_cancelled() {
                    break;
                }
                let out = tree
                    .dir(*dir)
                    .and_then(|d| AtomicFile::create(&d, rel.file_name().unwrap_or(OsStr::new(""))))
                    .and_then(|f| f.file().set_len(row.record.size).map(|()| Arc::new(f)));
                let (out, error) = match out {
                    Ok(f) => (Some(f), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let mut mac = FileMac::new(keys, &row.record);
                let mut offset = 0u64;
                open.borrow_mut().insert(
                    i,
                    Open {
                        file: out.clone(),
                        mac_ok: false,
                        bytes: 0,
                        error,
                    },
                );
                let walked = registry.for_each_chunk(row.row, |id, len| {
                    if opts.cancel.is_cancelled() {
                        return Err(StoreError::Cancelled);
                    }
                    mac.add_chunk(&id, len);
                    let chunk_offset = offset;
                    offset += u64::from(len);
                    let Some(out) = out.clone() else {
                        return Ok(());
                    };
                    let loc = registry.location(&id)?;
                    let cost = 2 * u64::from(len) + TASK_OVERHEAD;
                    ordered.submit(cost, move |_| {
                        let result = match loc {
                            None => Err(format!(
                                "chunk {} is missing from the store",
                                hex::encode(&id[..8])
                            )),
                            Some(loc) if loc.raw_len != len => Err(format!(
                                "chunk {}: registry lengths disagree",
                                hex::encode(&id[..8])
                            )),
                            Some(loc) => {
                                restore_chunk(backend, keys, &id, &loc, &out, chunk_offset)
                            }
                        };
                        Item::Chunk(i, result)
                    });
                    Ok(())
                });
                drop(out);
                {
                    let mut open = open.borrow_mut();
                    let file = open.get_mut(&i).expect("inserted above");
                    match walked {
                        Ok(()) => file.mac_ok = mac.finish() == row.record.mac,
                        Err(StoreError::Cancelled) => {
                            file.error.get_or_insert("interrupted".into());
                        }
                        Err(e) => {
                            file.error.get_or_insert(e.to_string());
                            failure.get_or_insert(e);
                        }
                    }
                }
                ordered.submit(file_cost, move |_| Item::End(i));
            }
            ordered.finish();
        });
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(())
    }
}

/// Most files being restored at once (each holds a temp file open).
const MAX_OPEN_FILES: u64 = 128;

/// Checks and commits one restored file; returns the reason it failed.
fn finish_file(open: Open, row: &FileRow, opts: &GetOptions, replace: Replace) -> Option<String> {
    let uid = format_uid(row.record.uid);
    if let Some(e) = open.error {
        return Some(format!("{uid}: {e}"));
    }
    let file = open.file?;
    if open.bytes != row.record.size {
        return Some(format!(
            "{uid}: {} bytes restored, {} expected",
            open.bytes, row.record.size
        ));
    }
    if !open.mac_ok {
        return Some(format!(
            "{uid}: whole-file hash does not match (registry damaged)"
        ));
    }
    let Ok(file) = Arc::try_unwrap(file) else {
        return Some(format!(
            "{uid}: internal error: a task still holds the file"
        ));
    };
    let result = file
        .set_mode(row.record.mode & 0o7777 & !opts.umask)
        .and_then(|()| {
            file.set_mtime(Timestamp {
                seconds: row.record.mtime.0,
                nanos: row.record.mtime.1,
            })
        })
        .and_then(|()| file.commit(replace, false));
    result.err().map(|e| e.to_string())
}

fn ensure_dir(
    tree: &mut OutputTree,
    dirs: &mut HashMap<PathBuf, DirIndex>,
    rel: &Path,
    finish: Option<DirFinish>,
) -> Result<DirIndex, String> {
    if finish.is_none() {
        if let Some(&i) = dirs.get(rel) {
            return Ok(i);
        }
    }
    let parent = rel.parent().unwrap_or(Path::new(""));
    let parent_index = if rel.as_os_str().is_empty() {
        return Ok(0);
    } else {
        ensure_dir(tree, dirs, parent, None)?
    };
    if let Some(&i) = dirs.get(rel) {
        if finish.is_none() {
            return Ok(i);
        }
    }
    let name = rel.file_name().unwrap_or(OsStr::new(""));
    let index = tree
        .add_dir(parent_index, name, finish)
        .map_err(|e| e.to_string())?;
    dirs.insert(rel.to_path_buf(), index);
    Ok(index)
}
