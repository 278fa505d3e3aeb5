//! `forget`, `migrate`, `gc`, `verify`, `stat` and `reindex`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use cryptstream_pool::{Cancel, Pool};

use crate::backend::BackendError;
use crate::blocks::{
    self, open_chunk, Block, BlockPlan, ChunkShape, Fetched, Fetcher, Span, SpanOrder,
};
use crate::manifest::{self, format_uid, FileMac, ManifestReader};
use crate::pack::{self, PackEntry, PackWriter};
use crate::registry::{FileRow, Registry, Role, SnapshotRow, Totals};
use crate::snapshot::{SnapshotEntry, SnapshotMeta, SnapshotReader, SnapshotWriter};
use crate::{Progress, Store, StoreError};

/// What a gc did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Files of killed puts that were complete on disk and are now listed.
    pub files_recovered: u64,
    /// Pending files of killed puts that were removed.
    pub files_dropped: u64,
    /// Chunks forgotten (unreferenced).
    pub chunks_removed: u64,
    /// Their stored bytes.
    pub chunk_bytes_removed: u64,
    /// Packs deleted because nothing in them was used.
    pub packs_deleted: u64,
    /// Packs rewritten because most of them was garbage.
    pub packs_rewritten: u64,
    /// Pack bytes before minus after.
    pub bytes_reclaimed: u64,
    /// Objects no registry row knew (left by killed processes), deleted.
    pub orphans_deleted: u64,
    /// Orphans kept because a put was running.
    pub orphans_kept: u64,
    /// File records no snapshot references any more, removed.
    pub files_reclaimed: u64,
}

/// What `reindex` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReindexReport {
    /// Packs read.
    pub packs: u64,
    /// Chunks found in them.
    pub chunks: u64,
    /// Files found in manifests.
    pub files: u64,
    /// Snapshots found.
    pub snapshots: u64,
    /// Objects that could not be read (named in `problems`).
    pub problems: Vec<String>,
}

/// A pack is rewritten when less than this fraction of it is live.
const REWRITE_LIVE_FRACTION: f64 = 0.5;

fn file_label(row: &FileRow) -> String {
    format!("{} ({})", row.record.name, format_uid(row.record.uid))
}

impl Store {
    /// Lists the entries of the newest snapshot (`all`: of every snapshot,
    /// oldest first), in walk order. Entries whose registry row does not
    /// match their snapshot are left out (`verify` names them).
    ///
    /// # Errors
    /// Registry failures, an unreadable snapshot.
    pub fn list(
        &self,
        all: bool,
        mut each: impl FnMut(FileRow) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut snapshots = self.registry.snapshots()?;
        if !all {
            snapshots = snapshots.pop().into_iter().collect();
        }
        for snapshot in snapshots {
            let selector = crate::get::Selector::Snapshot {
                name: snapshot.name,
                path: String::new(),
                whole_names: true,
            };
            crate::get::for_each_selected(self, &selector, &mut |sel| match sel.problem {
                None => each(sel.row),
                Some(_) => Ok(()),
            })?;
        }
        Ok(())
    }

    /// Whether this is a store made before snapshots (see
    /// [`Store::migrate`]).
    ///
    /// # Errors
    /// Registry failures.
    pub fn needs_migration(&self) -> Result<bool, StoreError> {
        Ok(!self.keeps_snapshots && self.registry.needs_migration()?)
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// Registry failures.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        self.registry.snapshots()
    }

    /// Streams the entries of snapshot object `name` (authenticated; a
    /// damaged or truncated one fails).
    ///
    /// # Errors
    /// A missing or damaged snapshot, or what `each` returns.
    pub fn snapshot_entries(
        &self,
        name: &str,
        each: impl FnMut(SnapshotEntry) -> Result<(), StoreError>,
    ) -> Result<SnapshotMeta, StoreError> {
        let reader = SnapshotReader::open(&*self.backend, &self.keys, name)?;
        let meta = reader.meta().clone();
        reader.for_each(each)?;
        Ok(meta)
    }

    /// The registry's record of snapshot entry `entry`, if it matches the
    /// snapshot (else why not).
    ///
    /// # Errors
    /// Registry failures.
    pub fn entry_record(
        &self,
        entry: &SnapshotEntry,
    ) -> Result<Result<FileRow, String>, StoreError> {
        let name = entry.hard_link.as_deref().unwrap_or(&entry.name);
        Ok(match self.registry.by_uid(entry.uid)? {
            None => Err(format!("record {} is missing", format_uid(entry.uid))),
            Some(row) if row.record.mac != entry.mac || row.record.name != name => Err(format!(
                "record {} does not match the snapshot (registry damaged)",
                format_uid(entry.uid)
            )),
            Some(row) => Ok(row),
        })
    }

    /// Totals for `stat`.
    ///
    /// # Errors
    /// Registry failures.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        self.registry.totals()
    }

    /// Forgets snapshot object `name`: its row goes and every file it
    /// referenced loses a reference (in one transaction), then its object
    /// is deleted. Space comes back with `gc`. Returns false when the
    /// object could not be read (missing or damaged): its references are
    /// then recounted by the next `reindex`.
    ///
    /// # Errors
    /// Backend or registry failures.
    pub fn forget(&mut self, name: &str) -> Result<bool, StoreError> {
        let mut uids = HashSet::new();
        let read = SnapshotReader::open(&*self.backend, &self.keys, name).and_then(|reader| {
            reader.for_each(|entry| {
                uids.insert(entry.uid);
                Ok(())
            })
        });
        let counted = match read {
            Ok(_) => true,
            Err(StoreError::Damaged(_) | StoreError::Backend(BackendError::NotFound(_))) => false,
            Err(e) => return Err(e),
        };
        let uids: Vec<u64> = uids.into_iter().collect();
        self.registry
            .forget_snapshot(name, counted.then_some(&uids[..]))?;
        self.backend.delete(name)?;
        Ok(counted)
    }

    /// Migrates a store made before snapshots: records one snapshot
    /// (tagged `migrated`, no paths) holding the newest version of every
    /// name, whose record still authenticates; the older versions become
    /// reclaimable by `gc`. Returns the snapshot (`None` when the store
    /// needed no migration).
    ///
    /// # Errors
    /// Backend or registry failures.
    pub fn migrate(&mut self) -> Result<Option<SnapshotRow>, StoreError> {
        if !self.needs_migration()? {
            return Ok(None);
        }
        let lease = self.registry.register_writer(Role::Put)?;
        let result = self.migrate_with_lease(lease);
        let ended = self.registry.end_writer(lease);
        let row = result?;
        ended?;
        self.registry.settle_unreferenced(true)?;
        Ok(Some(row))
    }

    fn migrate_with_lease(
        &mut self,
        lease: crate::registry::WriterLease,
    ) -> Result<SnapshotRow, StoreError> {
        let meta = SnapshotMeta {
            name: crate::snapshot::new_snapshot_name()?,
            time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            host: crate::registry::host(),
            paths: Vec::new(),
            tags: vec!["migrated".to_owned()],
        };
        let mut writer = SnapshotWriter::create(&*self.backend, &self.keys, &meta)?;
        let mut uids = Vec::new();
        let (registry, keys) = (&self.registry, &self.keys);
        registry.by_name("", |row| {
            let mut mac = FileMac::new(keys, &row.record);
            registry.for_each_chunk(row.row, |id, len| {
                mac.add_chunk(&id, len);
                Ok(())
            })?;
            if mac.finish() != row.record.mac {
                // Not authenticated: not vouched for by the new snapshot.
                return Ok(());
            }
            uids.push(row.record.uid);
            writer.add(&SnapshotEntry {
                name: row.record.name.clone(),
                uid: row.record.uid,
                mac: row.record.mac,
                hard_link: None,
            })
        })?;
        self.registry.add_put_refs(lease, &uids)?;
        let (entries, size) = writer.commit()?;
        let row = meta.into_row(entries, size);
        self.registry.record_snapshot(lease, &row)?;
        Ok(row)
    }

    /// Rewrites each manifest that holds deleted files without them (or
    /// deletes it), then forgets the deleted rows. Resumes an interrupted
    /// delete too.
    fn finish_deletes(&mut self, mut manifests: Vec<String>) -> Result<(), StoreError> {
        for m in self.registry.deleting_manifests()? {
            if !manifests.contains(&m) {
                manifests.push(m);
            }
        }
        for old in manifests {
            let remaining = self.registry.files_in_manifest(&old)?;
            if !remaining.is_empty() {
                let new = manifest::new_manifest_name()?;
                let registry = &self.registry;
                manifest::write_manifest(
                    &*self.backend,
                    &self.keys,
                    &new,
                    remaining.len() as u64,
                    |w| {
                        for row in &remaining {
                            let io = |e: std::io::Error| StoreError::Io {
                                path: PathBuf::from(&new),
                                source: e,
                            };
                            w.record(&row.record).map_err(io)?;
                            registry
                                .for_each_chunk(row.row, |id, len| w.chunk(&id, len).map_err(io))?;
                        }
                        Ok(())
                    },
                )?;
                self.registry.move_manifest(&old, &new)?;
            }
            self.backend.delete(&old)?;
            self.registry.drop_deleting(&old)?;
        }
        self.registry.drop_deleting_without_manifest()?;
        Ok(())
    }

    /// Reclaims space; safe while puts of this registry run (see
    /// docs/STORE.md, "gc"). `refreshed`: the registry was just rebuilt
    /// from the store's objects; when it was not (a gc beside puts of this
    /// registry, DECISIONS 301), objects it does not know are kept, since
    /// they may be another writer's. `cancel` stops it between two steps,
    /// each of which leaves the store consistent (a pack rewrite is one
    /// step).
    ///
    /// # Errors
    /// Another gc running; backend or registry failures;
    /// [`StoreError::Cancelled`].
    pub fn gc(
        &mut self,
        progress: &dyn Progress,
        cancel: &Cancel,
        refreshed: bool,
    ) -> Result<GcReport, StoreError> {
        let lease = self.registry.register_writer(Role::Gc)?;
        crate::hooks::gc_registered();
        let result = self.gc_with_lease(progress, cancel, refreshed);
        let ended = self.registry.unregister_writer(lease);
        let report = result?;
        ended?;
        Ok(report)
    }

    fn gc_with_lease(
        &mut self,
        progress: &dyn Progress,
        cancel: &Cancel,
        refreshed: bool,
    ) -> Result<GcReport, StoreError> {
        let stopped = || {
            if cancel.is_cancelled() {
                Err(StoreError::Cancelled)
            } else {
                Ok(())
            }
        };
        let mut report = GcReport::default();
        // 1. Puts that were killed: complete what is durable, drop the rest.
        let (dead, files) = self.registry.dead_writer_files()?;
        let mut complete = Vec::new();
        let mut remove = Vec::new();
        for (row, manifest) in files {
            match manifest {
                Some(m) if self.backend.exists(&m)? => complete.push(row),
                _ => remove.push(row),
            }
        }
        report.files_recovered = complete.len() as u64;
        report.files_dropped = remove.len() as u64;
        self.registry.settle_dead(&dead, &complete, &remove)?;
        stopped()?;
        // 2. Deletes that were interrupted, then the file records that no
        //    snapshot references any more (and no running put relies on).
        self.finish_deletes(Vec::new())?;
        stopped()?;
        let (reclaimed, manifests) = self.registry.mark_unreferenced()?;
        report.files_reclaimed = reclaimed;
        self.finish_deletes(manifests)?;
        stopped()?;
        // 3. Mark, then sweep what was marked before every running put began.
        self.registry.mark_garbage()?;
        let (chunks, bytes) = self.registry.sweep_garbage()?;
        report.chunks_removed = chunks;
        report.chunk_bytes_removed = bytes;
        // 4. Packs: delete the unused, rewrite the mostly unused.
        let usage = self.registry.pack_usage()?;
        progress.set_total(usage.iter().map(|u| u.2).sum());
        for (id, name, size, live) in usage {
            stopped()?;
            if live == 0 {
                if self.registry.drop_pack_if_empty(id)? {
                    self.backend.delete(&name)?;
                    report.packs_deleted += 1;
                    report.bytes_reclaimed += size;
                }
            } else if (live as f64) < REWRITE_LIVE_FRACTION * size as f64 {
                let entries = self.registry.chunks_in_pack(id)?;
                let mut writer = PackWriter::create(&*self.backend)?;
                for e in &entries {
                    let mut blob = vec![0u8; e.stored_len as usize];
                    self.backend.get_range(&name, e.offset, &mut blob)?;
                    writer.add(e.id, e.raw_len, e.compression, &blob)?;
                }
                let (new_name, new_size, new_entries) = writer.finish(&self.keys)?;
                self.registry
                    .move_chunks(id, &new_name, new_size, &new_entries)?;
                if self.registry.drop_pack_if_empty(id)? {
                    self.backend.delete(&name)?;
                    report.packs_rewritten += 1;
                    report.bytes_reclaimed += size.saturating_sub(new_size);
                }
            }
            progress.advance(size);
        }
        // 5. Objects no row knows, only if no put ran at any time meanwhile.
        stopped()?;
        let (running, epoch) = self.registry.puts_running()?;
        let mut orphans = Vec::new();
        for prefix in ["packs/", "manifests/", crate::snapshot::SNAPSHOT_PREFIX] {
            let registry = &self.registry;
            self.backend.list(prefix, &mut |meta| {
                if cancel.is_cancelled() {
                    return Ok(());
                }
                let known = match prefix {
                    "packs/" => registry.has_pack(&meta.name),
                    "manifests/" => registry.has_manifest(&meta.name),
                    _ => registry.has_snapshot(&meta.name),
                }
                .map_err(|e| BackendError::Io {
                    name: meta.name.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                if !known {
                    orphans.push(meta.name);
                }
                Ok(())
            })?;
        }
        stopped()?;
        let (running_after, epoch_after) = self.registry.puts_running()?;
        if !refreshed || running || running_after || epoch != epoch_after {
            report.orphans_kept = orphans.len() as u64;
        } else {
            for name in orphans {
                stopped()?;
                self.backend.delete(&name)?;
                report.orphans_deleted += 1;
            }
        }
        Ok(report)
    }

    /// Whether this registry is behind the store: a snapshot object it
    /// does not know, a snapshot it knows whose object is gone, or a pack
    /// it knows that is gone. Any of these means another writer (another
    /// user's cache, another machine, a killed `forget` that a reindex
    /// would settle) changed the store since this registry last read it;
    /// the reason, naming the object, or `None` when it is up to date as
    /// far as a gc needs (DECISIONS 301). Objects it does not know besides
    /// snapshots (packs, manifests) are left alone by a gc that did not
    /// refresh, so they need not be read.
    ///
    /// # Errors
    /// Backend or registry failures.
    pub fn behind_the_store(&self) -> Result<Option<String>, StoreError> {
        let mut stored = HashSet::new();
        self.backend
            .list(crate::snapshot::SNAPSHOT_PREFIX, &mut |meta| {
                stored.insert(meta.name);
                Ok(())
            })?;
        let known: HashSet<String> = self
            .registry
            .snapshots()?
            .into_iter()
            .map(|s| s.name)
            .collect();
        if let Some(name) = stored.iter().find(|n| !known.contains(*n)) {
            return Ok(Some(format!(
                "the store holds snapshot {name}, which this cache has not read"
            )));
        }
        if let Some(name) = known.iter().find(|n| !stored.contains(*n)) {
            return Ok(Some(format!(
                "snapshot {name}, which this cache knows, is gone from the store"
            )));
        }
        let mut packs = HashSet::new();
        self.backend.list("packs/", &mut |meta| {
            packs.insert(meta.name);
            Ok(())
        })?;
        for (_, name, _) in self.registry.packs()? {
            if !packs.contains(&name) {
                return Ok(Some(format!(
                    "pack {name}, which this cache knows, is gone from the store"
                )));
            }
        }
        Ok(None)
    }

    /// Checks the store; `report` hears every problem, each naming the file
    /// and chunk. With `read_data`, every chunk is read, authenticated,
    /// decompressed and hashed (in parallel on `pool`). Returns the number
    /// of problems.
    ///
    /// # Errors
    /// Backend or registry failures that stop the check itself.
    pub fn verify(
        &self,
        pool: &Pool,
        read_data: bool,
        max_memory: u64,
        cancel: &Cancel,
        progress: &dyn Progress,
        report: &mut dyn FnMut(&str),
    ) -> Result<u64, StoreError> {
        let stopped = || {
            if cancel.is_cancelled() {
                Err(StoreError::Cancelled)
            } else {
                Ok(())
            }
        };
        let mut problems = 0u64;
        let mut say = |text: String| {
            problems += 1;
            report(&text);
        };
        // Every snapshot the registry knows: its object opens and
        // authenticates to its end, and every record it references is in
        // the registry with the snapshot's authenticator.
        for snapshot in self.registry.snapshots()? {
            stopped()?;
            let short = crate::snapshot::short_id(&snapshot.name).to_owned();
            let mut bad = Vec::new();
            let read = self.snapshot_entries(&snapshot.name, |entry| {
                if let Err(why) = self.entry_record(&entry)? {
                    bad.push(format!("{}: {why}", entry.name));
                }
                Ok(())
            });
            match read {
                Ok(_) => {}
                Err(StoreError::Backend(BackendError::NotFound(_))) => say(format!(
                    "snapshot {short} ({}): missing (the registry knew it; deleted from the store?)",
                    snapshot.name
                )),
                Err(e) => say(format!("snapshot {short}: {e}")),
            }
            for line in bad {
                say(format!("snapshot {short}: {line}"));
            }
        }
        // Chunk lists against records, and chunks against the registry.
        self.registry.for_each_file(|row| {
            stopped()?;
            let mut mac = FileMac::new(&self.keys, &row.record);
            let mut count = 0u64;
            self.registry.for_each_chunk(row.row, |id, len| {
                mac.add_chunk(&id, len);
                count += 1;
                Ok(())
            })?;
            if count != row.record.chunks || mac.finish() != row.record.mac {
                say(format!(
                    "{}: its chunk list does not match its record (registry damaged)",
                    file_label(&row)
                ));
            }
            Ok(())
        })?;
        stopped()?;
        self.registry.missing_chunks(|row, id| {
            say(format!(
                "{}: chunk {} is missing",
                file_label(&row),
                hex::encode(id)
            ));
            Ok(())
        })?;
        // Manifests exist; with read_data, each authenticates to its end.
        let mut manifest_sizes: HashMap<String, u64> = HashMap::new();
        self.backend.list("manifests/", &mut |meta| {
            manifest_sizes.insert(meta.name, meta.size);
            Ok(())
        })?;
        for name in self.registry.manifests()? {
            stopped()?;
            let problem = match manifest_sizes.get(&name) {
                None => Some("is missing".to_owned()),
                Some(&size) if read_data => {
                    read_manifest(&*self.backend, &self.keys, &name, size, |_, _| Ok(()))
                        .err()
                        .map(|e| format!("cannot be read: {e}"))
                }
                Some(_) => None,
            };
            if let Some(why) = problem {
                for row in self.registry.files_in_manifest(&name)? {
                    say(format!("{}: its manifest {name} {why}", file_label(&row)));
                }
                say(format!("manifest {name} {why}"));
            }
        }
        // Packs exist with their size.
        let mut sizes: HashMap<String, u64> = HashMap::new();
        self.backend.list("packs/", &mut |meta| {
            sizes.insert(meta.name, meta.size);
            Ok(())
        })?;
        let packs = self.registry.packs()?;
        let mut readable = Vec::new();
        for (id, name, size) in packs {
            stopped()?;
            let problem = match sizes.get(&name) {
                None => Some("is missing".to_owned()),
                Some(&s) if s != size => Some(format!("has {s} bytes, {size} expected")),
                Some(_) => None,
            };
            match problem {
                Some(why) => {
                    for e in self.registry.chunks_in_pack(id)? {
                        for row in self.registry.files_using(&e.id)? {
                            say(format!(
                                "{}: chunk {} is in pack {name}, which {why}",
                                file_label(&row),
                                hex::encode(e.id)
                            ));
                        }
                    }
                    say(format!("pack {name} {why}"));
                }
                None => readable.push((id, name, size)),
            }
        }
        if !read_data {
            return Ok(problems);
        }
        progress.set_total(readable.iter().map(|p| p.2).sum());
        let backend = &*self.backend;
        let keys = &self.keys;
        let mut bad: Vec<(PackEntry, String, String)> = Vec::new();
        let mut index_problems: Vec<String> = Vec::new();
        Fetcher::run(backend, cancel, |fetcher| {
            pool.scope(|scope| {
                let mut ordered =
                    scope.ordered(max_memory, |found: Vec<(PackEntry, String, String)>| {
                        bad.extend(found);
                    });
                // Orders the read of one span, each block once the budget
                // has room for it (ahead of the workers), and sends each
                // block to the workers.
                let mut submit = |span: Span<PackEntry>| {
                    let mut read = SpanOrder::new(&span.pack, span.start, span.len);
                    for block in span.blocks {
                        let largest = block
                            .members
                            .iter()
                            .map(|e| 2 * u64::from(e.stored_len))
                            .max()
                            .unwrap_or(0);
                        let cost = blocks::block_cost(block.len, largest, block.members.len());
                        ordered.make_room(cost);
                        let fetched = read.block(fetcher, block.start, block.len);
                        let pack = span.pack.clone();
                        ordered.submit(cost, move |_| {
                            check_block(keys, cancel, progress, pack, block, fetched)
                        });
                    }
                };
                for (id, name, size) in &readable {
                    if cancel.is_cancelled() {
                        break;
                    }
                    if let Err(e) = pack::read_index(backend, keys, name, *size) {
                        index_problems.push(e.to_string());
                    }
                    let Ok(entries) = self.registry.chunks_in_pack(*id) else {
                        continue;
                    };
                    // In offset order: neighbours share a block.
                    let mut plan = BlockPlan::new(max_memory);
                    for e in entries {
                        if let Some(span) = plan.add(name, e.offset, u64::from(e.stored_len), e) {
                            submit(span);
                        }
                    }
                    if let Some(span) = plan.flush() {
                        submit(span);
                    }
                }
                ordered.finish();
            });
        });
        stopped()?;
        for why in index_problems {
            say(why);
        }
        for (e, pack_name, why) in bad {
            let users = self.registry.files_using(&e.id)?;
            if users.is_empty() {
                say(format!(
                    "unreferenced chunk {} (pack {pack_name} offset {}): {why}",
                    hex::encode(e.id),
                    e.offset
                ));
            }
            for row in users {
                say(format!(
                    "{}: chunk {} (pack {pack_name} offset {}): {why}",
                    file_label(&row),
                    hex::encode(e.id),
                    e.offset
                ));
            }
        }
        Ok(problems)
    }

    /// Rebuilds the registry from the data area alone (packs' indexes and
    /// manifests), aside, and puts it in place only when every object
    /// could be read; what put knew of each file's source is carried over
    /// from the old one. Run it when no other store command runs. When an
    /// object cannot be read, the old registry is kept unchanged and the
    /// report names the object.
    ///
    /// # Errors
    /// Backend or registry failures; unreadable objects are listed in the
    /// report instead.
    pub fn reindex(
        &mut self,
        progress: &dyn Progress,
        cancel: &Cancel,
    ) -> Result<ReindexReport, StoreError> {
        let path = self.registry.path().to_path_buf();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".reindex");
        let tmp = PathBuf::from(tmp);
        remove_db(&tmp);
        let mut fresh = Registry::open(&tmp)?;
        let mut report = ReindexReport::default();
        let mut packs = Vec::new();
        self.backend.list("packs/", &mut |meta| {
            packs.push(meta);
            Ok(())
        })?;
        progress.set_total(packs.len() as u64);
        for meta in packs {
            if cancel.is_cancelled() {
                break;
            }
            match pack::read_index(&*self.backend, &self.keys, &meta.name, meta.size) {
                Ok(entries) => {
                    fresh.add_pack(&meta.name, meta.size, &entries)?;
                    report.packs += 1;
                    report.chunks += entries.len() as u64;
                }
                Err(e) => report.problems.push(e.to_string()),
            }
            progress.advance(1);
        }
        let mut manifests = Vec::new();
        self.backend.list("manifests/", &mut |meta| {
            manifests.push(meta);
            Ok(())
        })?;
        for meta in manifests {
            if cancel.is_cancelled() {
                break;
            }
            let mut added = 0;
            let result =
                read_manifest(&*self.backend, &self.keys, &meta.name, meta.size, |r, c| {
                    if fresh.add_complete_file(&r, &meta.name, &c)? {
                        added += 1;
                    }
                    Ok(())
                });
            match result {
                Ok(()) => report.files += added,
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        let mut snapshots = Vec::new();
        self.backend
            .list(crate::snapshot::SNAPSHOT_PREFIX, &mut |meta| {
                snapshots.push(meta);
                Ok(())
            })?;
        for (i, meta) in snapshots.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let mut uids = HashSet::new();
            let mut count = 0u64;
            let read = self.snapshot_entries(&meta.name, |entry| {
                uids.insert(entry.uid);
                count += 1;
                Ok(())
            });
            match read {
                Ok(head) => {
                    // Each snapshot counts its references as a put does,
                    // under a writer id no real writer has.
                    let lease = crate::registry::WriterLease {
                        id: -(i as i64) - 1,
                        epoch: 0,
                    };
                    let uids: Vec<u64> = uids.into_iter().collect();
                    fresh.add_put_refs(lease, &uids)?;
                    fresh.record_snapshot(
                        lease,
                        &SnapshotRow {
                            name: meta.name.clone(),
                            time_ns: head.time_ns,
                            host: head.host,
                            paths: head.paths,
                            tags: head.tags,
                            entries: count,
                            size: meta.size,
                        },
                    )?;
                    report.snapshots += 1;
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        fresh.settle_unreferenced(
            self.keeps_snapshots || report.snapshots > 0 || report.files == 0,
        )?;
        if cancel.is_cancelled() {
            // The old registry stays, as after a problem.
            drop(fresh);
            remove_db(&tmp);
            return Err(StoreError::Cancelled);
        }
        if !report.problems.is_empty() {
            // A registry without what could not be read would drop those
            // entries silently (and a gc would then reclaim their data):
            // the old one stays until the objects are repaired or removed.
            drop(fresh);
            remove_db(&tmp);
            return Ok(report);
        }
        fresh.keep_sources_of(&path);
        drop(fresh);
        self.registry = Registry::in_memory()?;
        remove_db(&path);
        std::fs::rename(&tmp, &path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        self.registry = Registry::open(&path)?;
        Ok(report)
    }
}

/// Reads manifest `name` (`size` bytes) to its authenticated end, calling
/// `each` with every record whose chunk list matches its authenticator.
fn read_manifest(
    backend: &dyn crate::Backend,
    keys: &crate::StoreKeys,
    name: &str,
    size: u64,
    mut each: impl FnMut(crate::FileRecord, Vec<([u8; 32], u32)>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut reader = ManifestReader::open(backend, keys, name, size)?;
    while let Some(record) = reader.next_record()? {
        let mut chunks = Vec::new();
        let mut mac = FileMac::new(keys, &record);
        for _ in 0..record.chunks {
            let (id, len) = reader.chunk()?;
            mac.add_chunk(&id, len);
            chunks.push((id, len));
        }
        if mac.finish() != record.mac {
            return Err(StoreError::Damaged(format!(
                "manifest {name}: record of {} does not authenticate",
                record.name
            )));
        }
        each(record, chunks)?;
    }
    reader.finish()
}

/// Removes a database and its WAL files.
fn remove_db(path: &std::path::Path) {
    for suffix in std::iter::once("").chain(crate::registry::SIDE_FILES) {
        let _ = std::fs::remove_file(crate::registry::with_suffix(path, suffix));
    }
}

/// Opens (in place unless it overlaps another chunk of the block),
/// decompresses and hashes the chunks of one block once its bytes arrive
/// (on a worker); returns those that are not what they should be,
/// with the pack and the reason. When the pack ends inside the block,
/// only the chunks really cut off are named.
fn check_block(
    keys: &crate::StoreKeys,
    cancel: &Cancel,
    progress: &dyn Progress,
    pack: String,
    block: Block<PackEntry>,
    fetched: Fetched,
) -> Vec<(PackEntry, String, String)> {
    let mut data = fetched.wait();
    let ranges: Vec<(u64, u64)> = block
        .members
        .iter()
        .map(|e| (e.offset, u64::from(e.stored_len)))
        .collect();
    let alone = blocks::alone(&ranges);
    let mut copy = Vec::new();
    let mut bad = Vec::new();
    for (e, alone) in block.members.into_iter().zip(alone) {
        if cancel.is_cancelled() {
            break;
        }
        progress.advance(u64::from(e.stored_len));
        let shape = ChunkShape {
            id: &e.id,
            compression: e.compression,
            raw_len: e.raw_len,
        };
        let checked = match &mut data {
            Ok(data) => data
                .chunk(e.offset, u64::from(e.stored_len))
                .map_err(|err| err.to_string())
                .and_then(|stored| {
                    let blob = if alone {
                        stored
                    } else {
                        copy.clear();
                        copy.extend_from_slice(stored);
                        &mut copy[..]
                    };
                    open_chunk(keys, shape, blob)
                        .map(drop)
                        .map_err(|fault| fault.to_string())
                }),
            Err(err) => Err(err.to_string()),
        };
        if let Err(why) = checked {
            bad.push((e, pack.clone(), why));
        }
    }
    bad
}
