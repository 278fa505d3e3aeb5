//! The snapshot commands of `cryptstream store`: `snapshots`, `ls`, `find`,
//! `diff`, `dump` and `forget`: flags into calls of `cryptstream-store`,
//! results into lines and JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use cryptstream_store::retention::{self, KeepPolicy};
use cryptstream_store::snapshot::{is_within, short_id, snapshot_id};
use cryptstream_store::{format_uid, SnapshotEntry, SnapshotRow, Store};

use crate::cmd_store::{DiffArgs, ForgetArgs, LsArgs};
use crate::messages;

/// A snapshot's time (ns since 1970, UTC) as RFC 3339.
fn snapshot_time(time_ns: i64) -> String {
    messages::rfc3339(
        time_ns.div_euclid(1_000_000_000),
        time_ns.rem_euclid(1_000_000_000) as u32,
    )
}

fn snapshot_json(row: &SnapshotRow) -> serde_json::Value {
    serde_json::json!({
        "id": snapshot_id(&row.name), "short_id": short_id(&row.name),
        "time": snapshot_time(row.time_ns), "time_ns": row.time_ns, "host": row.host,
        "tags": row.tags, "paths": row.paths, "entries": row.entries,
    })
}

/// `store snapshots`.
pub fn run_snapshots(store: &Store, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let rows = store.snapshots()?;
    if json {
        let list: Vec<_> = rows.iter().map(snapshot_json).collect();
        writeln!(out, "{}", serde_json::Value::Array(list))?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<8}  {:<30}  {:<16}  {:>8}  {:<12}  PATHS",
        "ID", "TIME", "HOST", "ENTRIES", "TAGS"
    )?;
    for row in &rows {
        writeln!(
            out,
            "{:<8}  {:<30}  {:<16}  {:>8}  {:<12}  {}",
            short_id(&row.name),
            snapshot_time(row.time_ns),
            messages::escape_controls(&row.host),
            row.entries,
            messages::escape_controls(&row.tags.join(",")),
            messages::escape_controls(&row.paths.join(" "))
        )?;
    }
    Ok(())
}

/// `SNAP[:PATH]` into the snapshot and the path.
fn snapshot_and_path(store: &Store, target: &str) -> anyhow::Result<(SnapshotRow, String)> {
    let (snap, path) = target.split_once(':').unwrap_or((target, ""));
    Ok((
        store.resolve_snapshot(snap)?,
        path.trim_matches('/').to_owned(),
    ))
}

/// `store ls`.
pub fn run_ls(store: &Store, args: &LsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (snapshot, path) = snapshot_and_path(store, &args.target)?;
    let mut json = Vec::new();
    let mut found = false;
    let mut failed = None;
    store.snapshot_entries(&snapshot.name, |entry| {
        if !is_within(&entry.name, &path) {
            return Ok(());
        }
        found = true;
        let record = store.entry_record(&entry)?;
        let line = match (&record, args.json, args.long) {
            (_, true, _) => {
                let mut value = serde_json::json!({
                    "name": entry.name, "id": format_uid(entry.uid),
                    "hard_link": entry.hard_link,
                });
                match &record {
                    Ok(row) => {
                        let r = &row.record;
                        value["kind"] = r.kind.name().into();
                        value["mode"] = format!("{:o}", r.mode).into();
                        value["size"] = r.size.into();
                        value["mtime"] = messages::rfc3339(r.mtime.0, r.mtime.1).into();
                    }
                    Err(why) => value["error"] = why.clone().into(),
                }
                json.push(value);
                None
            }
            (Ok(row), false, true) => {
                let r = &row.record;
                let link = match (&entry.hard_link, r.kind) {
                    (Some(target), _) => format!(" => {target}"),
                    (None, cryptstream_store::Kind::Symlink) => {
                        format!(" -> {}", String::from_utf8_lossy(&r.link))
                    }
                    _ => String::new(),
                };
                Some(format!(
                    "{:<7}  {:>6o}  {:>12}  {:<30}  {}{}",
                    r.kind.name(),
                    r.mode,
                    r.size,
                    messages::rfc3339(r.mtime.0, r.mtime.1),
                    messages::escape_controls(&entry.name),
                    messages::escape_controls(&link)
                ))
            }
            (Err(why), false, true) => Some(format!(
                "{}  ({why})",
                messages::escape_controls(&entry.name)
            )),
            (_, false, false) => Some(messages::escape_controls(&entry.name).to_string()),
        };
        if let Some(line) = line {
            if let Err(e) = writeln!(out, "{line}") {
                failed.get_or_insert(e);
            }
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if !found {
        anyhow::bail!("{}: no such entry in the snapshot", args.target);
    }
    if args.json {
        writeln!(out, "{}", serde_json::Value::Array(json))?;
    }
    Ok(())
}

/// `store find`: every entry of every snapshot whose name (last component)
/// or whole path matches the glob; exit 1 when none does.
pub fn run_find(store: &Store, pattern: &str, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| anyhow::anyhow!("{pattern}: not a glob: {e}"))?
        .compile_matcher();
    let mut found = 0u64;
    for snapshot in store.snapshots()? {
        let id = short_id(&snapshot.name).to_owned();
        let mut failed = None;
        store.snapshot_entries(&snapshot.name, |entry| {
            let base = entry.name.rsplit('/').next().unwrap_or(&entry.name);
            if glob.is_match(base) || glob.is_match(&entry.name) {
                found += 1;
                if let Err(e) = writeln!(out, "{id}  {}", messages::escape_controls(&entry.name)) {
                    failed.get_or_insert(e);
                }
            }
            Ok(())
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    Ok(if found == 0 {
        messages::note(format_args!("find: nothing matches {pattern}"));
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The entries of a snapshot by name: (uid, mac, hard link).
fn entries_by_name(
    store: &Store,
    snapshot: &SnapshotRow,
) -> anyhow::Result<BTreeMap<String, SnapshotEntry>> {
    let mut map = BTreeMap::new();
    store.snapshot_entries(&snapshot.name, |entry| {
        map.insert(entry.name.clone(), entry);
        Ok(())
    })?;
    Ok(map)
}

/// `store diff`: `+ NAME` added, `- NAME` removed, `M NAME` modified (its
/// authenticator differs: content, mode, time or link target), by name.
pub fn run_diff(store: &Store, args: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let from = entries_by_name(store, &store.resolve_snapshot(&args.from)?)?;
    let to = entries_by_name(store, &store.resolve_snapshot(&args.to)?)?;
    let names: std::collections::BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    let (mut added, mut removed, mut modified) = (0u64, 0u64, 0u64);
    for name in names {
        let mark = match (from.get(name), to.get(name)) {
            (None, Some(_)) => {
                added += 1;
                '+'
            }
            (Some(_), None) => {
                removed += 1;
                '-'
            }
            (Some(a), Some(b)) if a.mac != b.mac || a.hard_link != b.hard_link => {
                modified += 1;
                'M'
            }
            _ => continue,
        };
        writeln!(out, "{mark} {}", messages::escape_controls(name))?;
    }
    messages::note(format_args!(
        "diff: {added} added, {removed} removed, {modified} modified"
    ));
    Ok(())
}

/// `store dump`.
pub fn run_dump(store: &Store, target: &str) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    store.dump(target, &mut out)?;
    Ok(())
}

/// `store forget`: the snapshots named, or those a `--keep-*` policy does
/// not keep (per host and set of paths); `--dry-run` only says which.
pub fn run_forget(store: &mut Store, args: &ForgetArgs) -> anyhow::Result<ExitCode> {
    let policy = KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
    };
    let by_id = !args.snapshots.is_empty();
    if by_id != policy.is_empty() {
        anyhow::bail!("forget: give snapshot ids, or a --keep-* policy (not both)");
    }
    let mut forget = Vec::new();
    if !policy.is_empty() {
        let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
        let mut groups: BTreeMap<(String, Vec<String>), Vec<SnapshotRow>> = BTreeMap::new();
        for row in store.snapshots()? {
            groups
                .entry((row.host.clone(), row.paths.clone()))
                .or_default()
                .push(row);
        }
        for rows in groups.into_values() {
            let times: Vec<(String, jiff::Timestamp)> = rows
                .iter()
                .map(|r| {
                    (
                        snapshot_id(&r.name).to_owned(),
                        jiff::Timestamp::from_nanosecond(i128::from(r.time_ns))
                            .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                    )
                })
                .collect();
            let keep = retention::select(&times, &policy, &tz);
            for (row, keep) in rows.into_iter().zip(keep) {
                let verb = if keep { "keep" } else { "forget" };
                println!(
                    "{verb:<6}  {}  {}  {}  {}",
                    short_id(&row.name),
                    snapshot_time(row.time_ns),
                    messages::escape_controls(&row.host),
                    messages::escape_controls(&row.paths.join(" "))
                );
                if !keep {
                    forget.push(row);
                }
            }
        }
    } else {
        for text in &args.snapshots {
            let row = store.resolve_snapshot(text)?;
            println!(
                "forget  {}  {}  {}  {}",
                short_id(&row.name),
                snapshot_time(row.time_ns),
                messages::escape_controls(&row.host),
                messages::escape_controls(&row.paths.join(" "))
            );
            forget.push(row);
        }
    }
    if args.dry_run {
        messages::note(format_args!(
            "forget: would forget {} (dry run: nothing changed)",
            messages::count(forget.len() as u64, "snapshot", "snapshots")
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let mut unread = 0u64;
    for row in &forget {
        if !store.forget(&row.name)? {
            unread += 1;
            messages::error(format_args!(
                "snapshot {}: its object could not be read; forgotten, but the entries it \
                 referenced are only released by `store reindex`",
                short_id(&row.name)
            ));
        }
    }
    messages::note(format_args!(
        "forget: {} forgotten; {}",
        messages::count(forget.len() as u64, "snapshot", "snapshots"),
        if args.prune {
            "reclaiming their space"
        } else {
            "run `store gc` to reclaim their space"
        }
    ));
    Ok(if unread > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
