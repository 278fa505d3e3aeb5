//! `get`: entries back out of the store, whole trees in one parallel run.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cryptstream_output::{
    create_symlink, restored_mode, AtomicFile, DirFd, DirFinish, DirIndex, OutputTree, Replace,
    Timestamp,
};
use cryptstream_pool::{Cancel, Pool};

use crate::blocks::{self, open_chunk, BlockPlan, ChunkShape, Fetched, Fetcher, Span, SpanOrder};
use crate::keys::StoreKeys;
use crate::manifest::{format_uid, FileMac, Kind};
use crate::registry::{FileRow, Location};
use crate::{Backend, Progress, Store, StoreError};

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
    /// Keep setuid, setgid and sticky bits (`--keep-special-bits`);
    /// dropped by default, as `decrypt` does
    /// ([`cryptstream_output::restored_mode`]).
    pub keep_special_bits: bool,
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
    /// The chunks of one block: each one's file and result.
    Chunks(Vec<(usize, Result<u32, String>)>),
    /// These files have no more chunks in flight (the files of a block:
    /// one task, not one each, so that the pool's bounded queue holds
    /// blocks, whose reads then run ahead, rather than ends).
    Ends(Vec<usize>),
}

/// A file being restored.
struct Open {
    file: Option<Arc<Output>>,
    /// Whether the registry's chunk list matches the record's authenticator.
    mac_ok: bool,
    bytes: u64,
    error: Option<String>,
    /// Its row.
    row: FileRow,
    /// Its path below the destination.
    rel: PathBuf,
}

/// A restored file's output: its temp file is made (and sized, when its
/// chunks are written by several tasks) by the first chunk written into
/// it, on a worker, or by its commit when it has no chunk; the walking
/// thread only names it.
struct Output {
    dir: DirFd,
    name: std::ffi::OsString,
    size: u64,
    /// Whether to size it when made: a file of one chunk (nearly every
    /// file of a source tree) gets its size from that one write, and one
    /// without chunks is empty; one `ftruncate` less per file.
    presize: bool,
    file: OnceLock<Result<AtomicFile, String>>,
    /// Taken around each write into a file of several chunks: writers of
    /// one file queue here, asleep, rather than in the kernel's inode
    /// lock, where a waiter spins on its core while the writer copies
    /// (DECISIONS 560).
    writing: Mutex<()>,
}

impl Output {
    /// The temp file, made on first use (once, whichever worker asks).
    fn get(&self) -> Result<&AtomicFile, String> {
        self.file
            .get_or_init(|| {
                AtomicFile::create(&self.dir, &self.name)
                    .and_then(|f| {
                        if self.presize {
                            reserve(f.file(), self.size)?;
                        }
                        Ok(f)
                    })
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Gives a file written at positions by several tasks its final size,
/// its blocks reserved first where the file system can (DECISIONS 572),
/// else as a hole.
fn reserve(file: &std::fs::File, size: u64) -> std::io::Result<()> {
    if !cryptstream_output::reserve_blocks(file, size)? {
        file.set_len(size)?;
    }
    Ok(())
}

/// Checks a stored name: relative, `/`-separated, no `.`/`..`/empty part
/// ([`cryptstream_output::is_plain_relative`]).
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    cryptstream_output::is_plain_relative(path).then(|| path.to_path_buf())
}

/// A chunk to restore: where it is, and where it goes.
struct Want {
    /// The file's number.
    file: usize,
    /// The chunk id.
    id: [u8; 32],
    /// Where the registry says it is.
    loc: Location,
    /// Its offset in the file.
    at: u64,
    /// The file.
    out: Arc<Output>,
}

impl Want {
    /// The chunk, for messages.
    fn describe(&self) -> String {
        format!(
            "chunk {} (pack {} offset {})",
            hex::encode(&self.id[..8]),
            self.loc.pack,
            self.loc.offset
        )
    }
}

/// Opens, decompresses and checks one chunk from its stored bytes `blob`,
/// and writes it at its offset (runs on a worker).
fn restore_chunk(keys: &StoreKeys, want: &Want, blob: &mut [u8]) -> Result<u32, String> {
    let shape = ChunkShape {
        id: &want.id,
        compression: want.loc.compression,
        raw_len: want.loc.raw_len,
    };
    let plain = open_chunk(keys, shape, blob).map_err(|e| format!("{}: {e}", want.describe()))?;
    let file = want.out.get()?.file();
    let _writing = want.out.presize.then(|| {
        want.out
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    });
    file.write_all_at(&plain, want.at)
        .map_err(|e| format!("write: {e}"))?;
    Ok(want.loc.raw_len)
}

/// Restores the chunks of one block once its bytes arrive (runs on a
/// worker): each opened in place, or from a copy when it overlaps another
/// (the same chunk twice). When the pack ends inside the block, the
/// chunks cut off fail alone.
fn restore_block(
    keys: &StoreKeys,
    cancel: &Cancel,
    fetched: Fetched,
    members: Vec<Want>,
) -> Vec<(usize, Result<u32, String>)> {
    let mut data = fetched.wait();
    let ranges: Vec<(u64, u64)> = members
        .iter()
        .map(|w| (w.loc.offset, u64::from(w.loc.stored_len)))
        .collect();
    let alone = blocks::alone(&ranges);
    let mut copy = Vec::new();
    let mut results = Vec::with_capacity(members.len());
    for (want, alone) in members.into_iter().zip(alone) {
        let result = match &mut data {
            _ if cancel.is_cancelled() => Err("interrupted".to_owned()),
            Ok(data) => match data.chunk(want.loc.offset, u64::from(want.loc.stored_len)) {
                Ok(stored) if alone => restore_chunk(keys, &want, stored),
                Ok(stored) => {
                    copy.clear();
                    copy.extend_from_slice(stored);
                    restore_chunk(keys, &want, &mut copy)
                }
                Err(e) => Err(format!("{}: {e}", want.describe())),
            },
            Err(e) => Err(format!("{}: {e}", want.describe())),
        };
        results.push((want.file, result));
    }
    results
}

/// What one argument of `get` (or `ls`, `dump`) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// One file record, by its uid (16 hex digits).
    Uid(u64),
    /// A snapshot's tree, or the entry `path` of it and what is below.
    Snapshot {
        /// The snapshot's object name.
        name: String,
        /// The entry (empty: the whole snapshot).
        path: String,
        /// Whether entries come back under their whole name (`get NAME`)
        /// rather than from `path`'s last component on (`get SNAP:PATH`).
        whole_names: bool,
    },
}

/// One entry a selector brings, with where it goes below the destination.
pub(crate) struct Selected {
    /// The registry's row (checked against the snapshot by the caller of
    /// [`for_each_selected`]: see `problem`).
    pub row: FileRow,
    /// Its path below the destination.
    pub rel: String,
    /// For a hard link whose target is restored by the same selector: the
    /// target's path below the destination.
    pub hard_link: Option<String>,
    /// Why this entry cannot be restored (the registry does not match the
    /// snapshot).
    pub problem: Option<String>,
}

/// Whether `text` could be (a prefix of) a snapshot id.
fn looks_like_snapshot_id(text: &str) -> bool {
    text.len() >= 4 && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Store {
    /// The snapshot `text` names: `latest` (the newest snapshot), or a
    /// unique prefix of a snapshot id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or an ambiguous prefix ([`StoreError::Usage`]).
    pub fn resolve_snapshot(&self, text: &str) -> Result<crate::SnapshotRow, StoreError> {
        if text == "latest" {
            return self.registry.snapshots()?.pop().ok_or_else(|| {
                StoreError::NotFound("latest (the store holds no snapshot)".into())
            });
        }
        if !looks_like_snapshot_id(text) {
            return Err(StoreError::NotFound(format!("{text}: not a snapshot id")));
        }
        let mut found = self
            .registry
            .snapshots_with_prefix(&text.to_ascii_lowercase())?;
        match found.len() {
            0 => Err(StoreError::NotFound(format!("snapshot {text}"))),
            1 => Ok(found.remove(0)),
            _ => Err(StoreError::Usage(format!(
                "{text}: more than one snapshot id starts with it; give more digits"
            ))),
        }
    }

    /// What argument `text` names: `SNAP:PATH`, a uid, `latest` or a
    /// snapshot id (its whole tree), else a name, looked up in the newest
    /// snapshot that holds it (one snapshot's tree, never a merge).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it names nothing.
    pub fn resolve_selector(&self, text: &str) -> Result<Selector, StoreError> {
        if let Some((snap, path)) = text.split_once(':') {
            if let Ok(row) = self.resolve_snapshot(snap) {
                return Ok(Selector::Snapshot {
                    name: row.name,
                    path: path.trim_matches('/').to_owned(),
                    whole_names: false,
                });
            }
            if snap == "latest" || looks_like_snapshot_id(snap) {
                return Err(StoreError::NotFound(text.to_owned()));
            }
        }
        if let Some(uid) = crate::parse_uid(text) {
            if self.registry.by_uid(uid)?.is_some() {
                return Ok(Selector::Uid(uid));
            }
        }
        if text == "latest" || looks_like_snapshot_id(text) {
            if let Ok(row) = self.resolve_snapshot(text) {
                return Ok(Selector::Snapshot {
                    name: row.name,
                    path: String::new(),
                    whole_names: false,
                });
            }
        }
        let name = text.trim_matches('/');
        match self.newest_snapshot_holding(name)? {
            Some(snapshot) => Ok(Selector::Snapshot {
                name: snapshot,
                path: name.to_owned(),
                whole_names: true,
            }),
            None => Err(StoreError::NotFound(text.to_owned())),
        }
    }

    /// The newest snapshot that holds entry `name` (only snapshots one of
    /// whose paths has `name`'s first component as its last are opened).
    fn newest_snapshot_holding(&self, name: &str) -> Result<Option<String>, StoreError> {
        if name.is_empty() {
            return Ok(None);
        }
        let root = name.split('/').next().unwrap_or(name);
        for snapshot in self.registry.snapshots()?.into_iter().rev() {
            let candidate = snapshot.paths.is_empty()
                || snapshot
                    .paths
                    .iter()
                    .any(|p| Path::new(p).file_name().is_some_and(|n| n == root));
            if !candidate {
                continue;
            }
            let mut reader =
                crate::snapshot::SnapshotReader::open(&*self.backend, &self.keys, &snapshot.name)?;
            while let Some(entry) = reader.next_entry()? {
                if crate::snapshot::is_within(&entry.name, name) {
                    return Ok(Some(snapshot.name));
                }
            }
        }
        Ok(None)
    }
}

/// Checks a snapshot entry against the registry's row of its uid: the row
/// must carry the snapshot's authenticator and name (the snapshot is
/// authenticated; the registry is not).
fn check_row(entry: &crate::SnapshotEntry, row: &FileRow) -> Option<String> {
    let name = entry.hard_link.as_deref().unwrap_or(&entry.name);
    (row.record.mac != entry.mac || row.record.name != name).then(|| {
        format!(
            "the registry's record {} does not match the snapshot (registry damaged; \
             run `store reindex`)",
            format_uid(entry.uid)
        )
    })
}

/// Calls `each` with every entry `selector` names, streamed in walk order.
pub(crate) fn for_each_selected(
    store: &Store,
    selector: &Selector,
    each: &mut dyn FnMut(Selected) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    match selector {
        Selector::Uid(uid) => match store.registry.by_uid(*uid)? {
            Some(row) => each(Selected {
                rel: row.record.name.clone(),
                row,
                hard_link: None,
                problem: None,
            }),
            None => Err(StoreError::NotFound(format_uid(*uid))),
        },
        Selector::Snapshot {
            name,
            path,
            whole_names,
        } => {
            // Entries land from `path`'s last component on (or whole).
            let strip = match path.rfind('/') {
                Some(i) if !whole_names => i + 1,
                _ => 0,
            };
            let reader = crate::snapshot::SnapshotReader::open(&*store.backend, &store.keys, name)?;
            let mut found = false;
            reader.for_each(|entry| {
                if !crate::snapshot::is_within(&entry.name, path) {
                    return Ok(());
                }
                found = true;
                let rel = entry.name[strip..].to_owned();
                let hard_link = entry
                    .hard_link
                    .as_deref()
                    .filter(|target| crate::snapshot::is_within(target, path))
                    .map(|target| target[strip..].to_owned());
                match store.registry.by_uid(entry.uid)? {
                    Some(row) => {
                        let problem = check_row(&entry, &row);
                        each(Selected {
                            row,
                            rel,
                            hard_link,
                            problem,
                        })
                    }
                    None => each(Selected {
                        row: missing_row(&entry),
                        rel,
                        hard_link: None,
                        problem: Some(format!(
                            "its file record {} is not in the registry (run `store reindex`)",
                            format_uid(entry.uid)
                        )),
                    }),
                }
            })?;
            if !found {
                return Err(not_in_snapshot(name, path));
            }
            Ok(())
        }
    }
}

/// `SNAP:PATH` names nothing in that snapshot.
fn not_in_snapshot(name: &str, path: &str) -> StoreError {
    StoreError::NotFound(format!("{}:{path}", crate::snapshot::short_id(name)))
}

/// What the first pass of [`for_each_selected`] checks, without the
/// registry's rows: a uid is in the registry; a snapshot authenticates to
/// its end and holds the path.
fn check_selected(store: &Store, selector: &Selector, cancel: &Cancel) -> Result<(), StoreError> {
    match selector {
        Selector::Uid(uid) => match store.registry.by_uid(*uid)? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(format_uid(*uid))),
        },
        Selector::Snapshot { name, path, .. } => {
            let reader = crate::snapshot::SnapshotReader::open(&*store.backend, &store.keys, name)?;
            let mut found = false;
            reader.for_each(|entry| {
                if cancel.is_cancelled() {
                    return Err(StoreError::Cancelled);
                }
                found |= crate::snapshot::is_within(&entry.name, path);
                Ok(())
            })?;
            if !found {
                return Err(not_in_snapshot(name, path));
            }
            Ok(())
        }
    }
}

/// A stand-in row for an entry whose record the registry lacks (only its
/// name is used, to report it).
fn missing_row(entry: &crate::SnapshotEntry) -> FileRow {
    FileRow {
        row: -1,
        record: crate::FileRecord {
            uid: entry.uid,
            name: entry.name.clone(),
            kind: Kind::File,
            mode: 0,
            mtime: (0, 0),
            size: 0,
            link: Vec::new(),
            created: 0,
            chunks: 0,
            mac: entry.mac,
        },
        stored: 0,
        status: String::new(),
    }
}

impl Store {
    /// Restores the entries `selectors` name into `dest` (each at
    /// `dest/NAME`). The registry is read as a stream, in name order (a
    /// directory before what is in it), and each entry is restored as it
    /// comes: nothing is collected first. Every file is written into an
    /// unnamed temp file and linked under its name only when every chunk and
    /// the whole-file authenticator check out.
    ///
    /// # Errors
    /// A selector that matches nothing, an unusable destination, registry
    /// failures; per-file failures are reported, not returned.
    /// [`StoreError::Cancelled`] after `opts.cancel`.
    pub fn get(
        &mut self,
        pool: &Pool,
        selectors: &[String],
        dest: &Path,
        opts: &GetOptions,
        progress: &dyn Progress,
        report: &mut dyn FnMut(&GetReport),
    ) -> Result<(), StoreError> {
        let selectors = selectors
            .iter()
            .map(|s| self.resolve_selector(s))
            .collect::<Result<Vec<_>, _>>()?;
        let store: &Store = self;
        // A first pass, before anything is written: every selector names
        // something and every snapshot read authenticates to its end. The
        // registry's rows are looked up only when the total is shown.
        if progress.shows_total() {
            let mut total = 0u64;
            store.registry.reading(|| {
                for sel in &selectors {
                    for_each_selected(store, sel, &mut |sel| {
                        total += sel.row.record.size;
                        if opts.cancel.is_cancelled() {
                            return Err(StoreError::Cancelled);
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
            progress.set_total(total);
        } else {
            for sel in &selectors {
                check_selected(store, sel, &opts.cancel)?;
            }
        }
        let links = RefCell::new(Vec::new());
        let mut tree = OutputTree::open_root(dest, None).map_err(|e| StoreError::Io {
            path: dest.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let restore = Restore {
            keys: &store.keys,
            dest,
            opts,
            replace: if opts.overwrite {
                Replace::Always
            } else {
                Replace::Never
            },
            progress,
            report: RefCell::new(report),
            open: RefCell::new(HashMap::new()),
            links: &links,
            max_open_files: max_open_files(&*store.backend),
        };
        let backend = &*store.backend;
        // Files are committed (mode, mtime, link under the final name,
        // close) on the workers, which a tree of small files leaves mostly
        // idle while this thread walks the registry; their reports come
        // back here.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<Finished>>();
        let finishing = AtomicUsize::new(0);
        // One read transaction for the whole walk (the registry's read
        // lock once, not once per statement; one consistent state).
        let result = store.registry.reading(|| {
            Fetcher::run(backend, &opts.cancel, |fetcher| {
                pool.scope(|scope| {
                    // The files one flush ended are committed by one task
                    // (a task, and a worker woken, per file cost more than
                    // the commit of a small file).
                    let finish = |files: Vec<Open>| {
                        if finishing.load(Ordering::Acquire) >= MAX_FINISHING {
                            // Enough temp files wait already: commit these here.
                            for open in files {
                                restore.say_finished(finish_one(
                                    open,
                                    restore.dest,
                                    opts,
                                    restore.replace,
                                ));
                            }
                            return;
                        }
                        let n = files.len();
                        finishing.fetch_add(n, Ordering::AcqRel);
                        let (tx, finishing) = (done_tx.clone(), &finishing);
                        let (dest, replace) = (restore.dest, restore.replace);
                        scope.spawn(move |_| {
                            let done: Vec<Finished> = files
                                .into_iter()
                                .map(|open| finish_one(open, dest, opts, replace))
                                .collect();
                            let _ = tx.send(done);
                            finishing.fetch_sub(n, Ordering::AcqRel);
                        });
                    };
                    let mut ordered = scope.ordered(opts.max_memory, |item: Item| {
                        restore.consume(item, &finish);
                        while let Ok(done) = done_rx.try_recv() {
                            done.into_iter().for_each(|d| restore.say_finished(d));
                        }
                    });
                    let mut state = Walk {
                        dirs: HashMap::from([(PathBuf::new(), 0)]),
                        seen: HashSet::new(),
                        next: 0,
                        plan: BlockPlan::new(opts.max_memory),
                        ends: Vec::new(),
                        fetcher,
                        last_dir: None,
                    };
                    let mut result = Ok(());
                    for sel in &selectors {
                        result = for_each_selected(store, sel, &mut |sel| {
                            if opts.cancel.is_cancelled() {
                                return Err(StoreError::Cancelled);
                            }
                            restore.entry(&store.registry, &mut tree, &mut state, &mut ordered, sel)
                        });
                        if result.is_err() {
                            break;
                        }
                    }
                    // Whatever stopped the walk, every file opened is finished
                    // (and reported) through the pipeline.
                    restore.flush(&mut state, &mut ordered);
                    ordered.finish();
                    result
                })
            })
        });
        drop(done_tx);
        for done in done_rx.into_iter().flatten() {
            restore.say_finished(done);
        }
        // Hard links, once every file they point at is in place.
        for (row, target, link) in std::mem::take(&mut *links.borrow_mut()) {
            let result = hard_link(dest, &target, &link, opts.overwrite);
            restore.say(&row, dest.join(&link), 0, result.err());
        }
        let umask = opts.umask;
        let keep = opts.keep_special_bits;
        let finished = tree.finish_dirs(|mode| restored_mode(mode, umask, keep));
        result?;
        if let Some((path, e)) = finished.into_iter().next() {
            return Err(StoreError::Io { path, source: e });
        }
        if opts.cancel.is_cancelled() {
            return Err(StoreError::Cancelled);
        }
        Ok(())
    }
}

/// The caller-thread state of a get's walk over the registry.
struct Walk<'f> {
    /// Directories added to the output tree, by path below `dest`.
    dirs: HashMap<PathBuf, DirIndex>,
    /// Uids restored (two selectors may name one entry).
    seen: HashSet<u64>,
    /// Number of the next file.
    next: usize,
    /// Groups the chunks into blocks.
    plan: BlockPlan<Want>,
    /// Files whose last chunks are in the block being grown: their Ends
    /// follow that block into the pipeline.
    ends: Vec<usize>,
    /// Reads the blocks.
    fetcher: &'f Fetcher,
    /// The directory the last file went into, open: the files of one
    /// directory come one after another, and the output tree holds only
    /// so many directories open (past that it opens one again per call).
    last_dir: Option<(DirIndex, DirFd)>,
}

/// What a get shares between its walk and the consumer of its results.
struct Restore<'a, 'r> {
    keys: &'a StoreKeys,
    dest: &'a Path,
    opts: &'a GetOptions,
    replace: Replace,
    progress: &'a dyn Progress,
    report: RefCell<&'r mut dyn FnMut(&GetReport)>,
    /// Files being restored, by number.
    open: RefCell<HashMap<usize, Open>>,
    /// Hard links to make at the end: the entry, its target, its path.
    links: &'a RefCell<Vec<(FileRow, PathBuf, PathBuf)>>,
    /// Temp files open at once at most ([`max_open_files`]).
    max_open_files: u64,
}

impl<'a> Restore<'a, '_> {
    fn say(&self, row: &FileRow, path: PathBuf, size: u64, error: Option<String>) {
        (self.report.borrow_mut())(&GetReport {
            name: row.record.name.clone(),
            uid: row.record.uid,
            path,
            size,
            error,
        });
    }

    fn say_finished(&self, (row, path, error): Finished) {
        self.say(&row, path, row.record.size, error);
    }

    /// A result of the pipeline, in order, on the caller's thread; a file
    /// whose chunks all came back goes to `finish`.
    fn consume(&self, item: Item, finish: &dyn Fn(Vec<Open>)) {
        match item {
            Item::Chunks(results) => {
                let mut open = self.open.borrow_mut();
                for (i, result) in results {
                    let file = open.get_mut(&i).expect("a chunk's file is open");
                    match result {
                        Ok(len) => {
                            file.bytes += u64::from(len);
                            self.progress.advance(u64::from(len));
                        }
                        Err(e) => {
                            file.error.get_or_insert(e);
                        }
                    }
                }
            }
            Item::Ends(ends) => {
                let files = {
                    let mut open = self.open.borrow_mut();
                    ends.into_iter()
                        .map(|i| open.remove(&i).expect("an End's file is open"))
                        .collect()
                };
                finish(files);
            }
        }
    }

    /// One entry of the walk: a directory or symlink is made now; a file's
    /// chunks go to the workers.
    fn entry<'env, C: FnMut(Item)>(
        &self,
        registry: &'env crate::Registry,
        tree: &mut OutputTree,
        walk: &mut Walk<'_>,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        sel: Selected,
    ) -> Result<(), StoreError>
    where
        'a: 'env,
    {
        let Selected {
            row,
            rel,
            hard_link,
            problem,
        } = sel;
        let dest = self.dest;
        if let Some(problem) = problem {
            self.say(&row, dest.join(&rel), row.record.size, Some(problem));
            return Ok(());
        }
        if let Some(target) = hard_link {
            match (safe_relative(&target), safe_relative(&rel)) {
                (Some(target), Some(link)) => {
                    let parent = link.parent().unwrap_or(Path::new("")).to_path_buf();
                    if let Err(e) = ensure_dir(tree, &mut walk.dirs, &parent, None) {
                        self.say(&row, dest.join(&link), 0, Some(e));
                    } else {
                        self.links.borrow_mut().push((row, target, link));
                    }
                }
                _ => self.say(
                    &row,
                    dest.join(&rel),
                    0,
                    Some("unsafe name in the store; refused".into()),
                ),
            }
            return Ok(());
        }
        if !walk.seen.insert(row.record.uid) {
            return Ok(());
        }
        let Some(rel) = safe_relative(&rel) else {
            let path = dest.join(&rel);
            self.say(
                &row,
                path,
                row.record.size,
                Some("unsafe name in the store; refused".into()),
            );
            return Ok(());
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent_index = match ensure_dir(tree, &mut walk.dirs, &parent, None) {
            Ok(i) => i,
            Err(e) => {
                self.say(&row, dest.join(&rel), row.record.size, Some(e));
                return Ok(());
            }
        };
        match row.record.kind {
            Kind::Dir if FileMac::new(self.keys, &row.record).finish() != row.record.mac => {
                self.say(
                    &row,
                    dest.join(&rel),
                    0,
                    Some("record does not authenticate (registry damaged)".into()),
                );
            }
            Kind::Dir => {
                let finish = DirFinish {
                    mode: row.record.mode,
                    mtime: Some(Timestamp {
                        seconds: row.record.mtime.0,
                        nanos: row.record.mtime.1,
                    }),
                };
                let error = ensure_dir(tree, &mut walk.dirs, &rel, Some(finish)).err();
                self.say(&row, dest.join(&rel), 0, error);
            }
            Kind::Symlink => {
                let ok_mac = FileMac::new(self.keys, &row.record).finish() == row.record.mac;
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
                                self.replace,
                            )
                        })
                        .map_err(|e| e.to_string())
                };
                self.say(&row, dest.join(&rel), 0, result.err());
            }
            Kind::File => {
                let i = walk.next;
                walk.next += 1;
                self.file(registry, tree, walk, ordered, i, row, rel, parent_index)?;
            }
        }
        Ok(())
    }

    /// Plans file `i`'s chunks into blocks, then sends its End after the
    /// last of them.
    #[allow(clippy::too_many_arguments)]
    fn file<'env, C: FnMut(Item)>(
        &self,
        registry: &'env crate::Registry,
        tree: &OutputTree,
        walk: &mut Walk<'_>,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        i: usize,
        row: FileRow,
        rel: PathBuf,
        dir: DirIndex,
    ) -> Result<(), StoreError>
    where
        'a: 'env,
    {
        let keys = self.keys;
        let cancel = &self.opts.cancel;
        let opened = match &walk.last_dir {
            Some((index, fd)) if *index == dir => Ok(fd.clone()),
            _ => tree
                .dir(dir)
                .inspect(|fd| walk.last_dir = Some((dir, fd.clone()))),
        };
        let out = opened.map(|dir| {
            Arc::new(Output {
                dir,
                name: rel.file_name().unwrap_or(OsStr::new("")).to_os_string(),
                size: row.record.size,
                presize: row.record.chunks > 1,
                writing: Mutex::new(()),
                file: OnceLock::new(),
            })
        });
        let (out, error) = match out {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut mac = FileMac::new(keys, &row.record);
        let expected_mac = row.record.mac;
        let row_id = row.row;
        self.open.borrow_mut().insert(
            i,
            Open {
                file: out.clone(),
                mac_ok: false,
                bytes: 0,
                error,
                row,
                rel,
            },
        );
        let mut offset = 0u64;
        let walked = registry.for_each_chunk_located(row_id, |id, len, loc| {
            if cancel.is_cancelled() {
                return Err(StoreError::Cancelled);
            }
            mac.add_chunk(&id, len);
            let at = offset;
            offset += u64::from(len);
            let Some(out) = out.clone() else {
                return Ok(());
            };
            let short = hex::encode(&id[..8]);
            let loc = match loc {
                None => Err(format!("chunk {short} is missing from the store")),
                Some(loc) if loc.raw_len != len => {
                    Err(format!("chunk {short}: registry lengths disagree"))
                }
                Some(loc)
                    if loc.raw_len > MAX_RAW_CHUNK
                        || loc.stored_len as usize > MAX_RAW_CHUNK as usize * 2 =>
                {
                    Err(format!(
                        "chunk {short} (pack {} offset {}): lengths out of range",
                        loc.pack, loc.offset
                    ))
                }
                Some(loc) => Ok(loc),
            };
            match loc {
                Ok(loc) => {
                    let (pack, start, len) =
                        (loc.pack.clone(), loc.offset, u64::from(loc.stored_len));
                    let want = Want {
                        file: i,
                        id,
                        loc,
                        at,
                        out,
                    };
                    if let Some(span) = walk.plan.add(&pack, start, len, want) {
                        self.submit_span(walk, ordered, span);
                    }
                }
                Err(e) => {
                    let mut open = self.open.borrow_mut();
                    let file = open.get_mut(&i).expect("inserted above");
                    file.error.get_or_insert(e);
                }
            }
            Ok(())
        });
        drop(out);
        let failure = {
            let mut open = self.open.borrow_mut();
            let file = open.get_mut(&i).expect("inserted above");
            match walked {
                Ok(()) => {
                    file.mac_ok = mac.finish() == expected_mac;
                    None
                }
                Err(StoreError::Cancelled) => {
                    file.error.get_or_insert("interrupted".into());
                    Some(StoreError::Cancelled)
                }
                Err(e) => {
                    file.error.get_or_insert(e.to_string());
                    Some(e)
                }
            }
        };
        walk.ends.push(i);
        if !walk.plan.is_open() || walk.ends.len() >= BLOCK_FILES_MAX {
            self.flush(walk, ordered);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends the span being grown, if any, then the Ends that wait for it.
    fn flush<'env, C: FnMut(Item)>(
        &self,
        walk: &mut Walk<'_>,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
    ) where
        'a: 'env,
    {
        if let Some(span) = walk.plan.flush() {
            self.submit_span(walk, ordered, span);
        }
        // Each file in flight accounts for this much, so that at most
        // max_open_files() temp files are open at once (beyond the
        // BLOCK_FILES_MAX a block being grown may hold).
        let file_cost = (self.opts.max_memory / self.max_open_files).max(TASK_OVERHEAD);
        if !walk.ends.is_empty() {
            let ends = std::mem::take(&mut walk.ends);
            ordered.submit(file_cost * ends.len() as u64, move |_| Item::Ends(ends));
        }
    }

    /// Orders the read of one span, each of its blocks once the budget has
    /// room for it, and sends each block to the workers.
    fn submit_span<'env, C: FnMut(Item)>(
        &self,
        walk: &Walk<'_>,
        ordered: &mut cryptstream_pool::Ordered<'_, '_, 'env, Item, C>,
        span: Span<Want>,
    ) where
        'a: 'env,
    {
        let keys: &'env StoreKeys = self.keys;
        let mut read = SpanOrder::new(&span.pack, span.start, span.len);
        for block in span.blocks {
            let cancel = self.opts.cancel.clone();
            let largest = block
                .members
                .iter()
                .map(|w| u64::from(w.loc.stored_len) + u64::from(w.loc.raw_len))
                .max()
                .unwrap_or(0);
            let cost = blocks::block_cost(block.len, largest, block.members.len());
            // The block is read as soon as the budget has room for it,
            // before a worker is free to open it: reads run ahead of the
            // workers.
            ordered.make_room(cost);
            let fetched = read.block(walk.fetcher, block.start, block.len);
            let members = block.members;
            ordered.submit(cost, move |_| {
                Item::Chunks(restore_block(keys, &cancel, fetched, members))
            });
        }
    }
}

/// Links `dest/link` to `dest/target` (a hard link of the snapshot).
fn hard_link(dest: &Path, target: &Path, link: &Path, overwrite: bool) -> Result<(), String> {
    let (from, to) = (dest.join(target), dest.join(link));
    if overwrite {
        match std::fs::symlink_metadata(&to) {
            Ok(meta) if !meta.is_dir() => {
                std::fs::remove_file(&to).map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    std::fs::hard_link(&from, &to).map_err(|e| format!("hard link to {}: {e}", from.display()))
}

/// Most files whose End waits for the block being grown; a block of many
/// small files is sent when it reaches this many (each holds a temp file
/// open).
const BLOCK_FILES_MAX: usize = 64;

/// Most files being restored at once (each holds a temp file open), at
/// least.
const MAX_OPEN_FILES: u64 = 128;

/// Most files being restored at once from `backend`: [`MAX_OPEN_FILES`],
/// or enough for two blocks of small files per read stream, whichever is
/// more. The files of a block wait open for its read; with 128, a tree of
/// small files had two blocks in flight, and over a network each block
/// read is a round trip (a get of 80,000 small files through `cst://` made
/// its 1,300 block reads nearly one at a time).
/// Never more than a quarter of the process's descriptor limit.
fn max_open_files(backend: &dyn Backend) -> u64 {
    let streams = backend.read_streams().max(1) as u64;
    let wanted = MAX_OPEN_FILES.max(2 * BLOCK_FILES_MAX as u64 * streams);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    wanted.min(limit / 4).max(MAX_OPEN_FILES)
}

/// Most files handed to the workers to commit and not committed yet (each
/// holds a temp file open); past it, the walking thread commits them.
/// Files go in groups of up to [`BLOCK_FILES_MAX`]: room for three.
const MAX_FINISHING: usize = 3 * BLOCK_FILES_MAX;

/// A committed (or failed) file: its row, its path, why it failed.
type Finished = (FileRow, PathBuf, Option<String>);

/// [`finish_file`], with what its report needs.
fn finish_one(open: Open, dest: &Path, opts: &GetOptions, replace: Replace) -> Finished {
    let row = open.row.clone();
    let path = dest.join(&open.rel);
    let error = finish_file(open, opts, replace);
    (row, path, error)
}

/// Checks and commits one restored file; returns the reason it failed.
fn finish_file(open: Open, opts: &GetOptions, replace: Replace) -> Option<String> {
    let row = &open.row;
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
    let Ok(output) = Arc::try_unwrap(file) else {
        return Some(format!(
            "{uid}: internal error: a task still holds the file"
        ));
    };
    // A file without chunks (empty) gets its temp file here.
    if let Err(e) = output.get() {
        return Some(format!("{uid}: {e}"));
    }
    let file = match output.file.into_inner() {
        Some(Ok(file)) => file,
        _ => unreachable!("made just above"),
    };
    let result = file
        .set_mode(restored_mode(
            row.record.mode,
            opts.umask,
            opts.keep_special_bits,
        ))
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

impl Store {
    /// Writes the content of one file of a snapshot (`SNAP:PATH`) to
    /// `out`. Its record and chunk list are checked against the snapshot's
    /// authenticator before the first byte is written, and every chunk is
    /// authenticated and its id recomputed as it is read.
    ///
    /// # Errors
    /// Not a file of a snapshot, a record that does not match, a damaged
    /// or missing chunk (named), write failures.
    pub fn dump(&self, target: &str, out: &mut dyn std::io::Write) -> Result<(), StoreError> {
        let (snap, path) = target.split_once(':').ok_or_else(|| {
            StoreError::Usage(format!(
                "{target}: give SNAP:FILE (a snapshot and a file in it)"
            ))
        })?;
        let snapshot = self.resolve_snapshot(snap)?;
        let path = path.trim_matches('/');
        let mut found = None;
        self.snapshot_entries(&snapshot.name, |entry| {
            if entry.name == path {
                found = Some(entry);
            }
            Ok(())
        })?;
        let entry = found.ok_or_else(|| StoreError::NotFound(target.to_owned()))?;
        let row = self
            .entry_record(&entry)?
            .map_err(|why| StoreError::Damaged(format!("{target}: {why}")))?;
        if row.record.kind != Kind::File {
            return Err(StoreError::Usage(format!(
                "{target}: a {}, not a file",
                row.record.kind.name()
            )));
        }
        let mut mac = FileMac::new(&self.keys, &row.record);
        let mut chunks = Vec::new();
        self.registry.for_each_chunk(row.row, |id, len| {
            mac.add_chunk(&id, len);
            chunks.push((id, len));
            Ok(())
        })?;
        if mac.finish() != entry.mac {
            return Err(StoreError::Damaged(format!(
                "{target}: its chunk list does not match its record (registry damaged)"
            )));
        }
        let mut blob = Vec::new();
        for (id, len) in chunks {
            let short = hex::encode(&id[..8]);
            let loc = self
                .registry
                .location(&id)?
                .filter(|l| l.raw_len == len && l.raw_len <= MAX_RAW_CHUNK)
                .filter(|l| l.stored_len as usize <= MAX_RAW_CHUNK as usize * 2)
                .ok_or_else(|| {
                    StoreError::Damaged(format!(
                        "{target}: chunk {short} is missing from the store"
                    ))
                })?;
            blob.clear();
            blob.resize(loc.stored_len as usize, 0);
            self.backend.get_range(&loc.pack, loc.offset, &mut blob)?;
            let shape = ChunkShape {
                id: &id,
                compression: loc.compression,
                raw_len: loc.raw_len,
            };
            let plain = open_chunk(&self.keys, shape, &mut blob).map_err(|e| {
                StoreError::Damaged(format!(
                    "{target}: chunk {short} (pack {} offset {}): {e}",
                    loc.pack, loc.offset
                ))
            })?;
            out.write_all(&plain).map_err(|source| StoreError::Io {
                path: PathBuf::from("stdout"),
                source,
            })?;
        }
        out.flush().map_err(|source| StoreError::Io {
            path: PathBuf::from("stdout"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::reserve;

    #[test]
    fn reserve_gives_a_file_its_size_whether_or_not_blocks_are_reserved() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, 3 << 20] {
            let file = std::fs::File::create(dir.path().join(format!("out-{size}"))).unwrap();
            reserve(&file, size).unwrap();
            assert_eq!(file.metadata().unwrap().len(), size);
        }
    }
}
