#!/usr/bin/env python3
"""Writes summary.md for one benchsuite run.

`benchsuite/run` calls this at its end; it can be run again on a finished
run folder (`python3 benchsuite/summarize.py benchsuite/runs/DATE-MACHINE`).
It reads the folder's raw.csv (one row per timed command run), meta.tsv
(machine, versions, settings) and commands.tsv (the command templates), and
writes summary.md: a headline per workload with cryptstream's time ratio to
the copy limit and its speed-up over the fastest peer, one table per
workload, location and direction, and the machine, versions and commands.

Python standard library only.
"""

import csv
import statistics
import sys
from collections import OrderedDict
from pathlib import Path

# Tools that are not peers: the one measured and the copy limit.
SUBJECT = "cryptstream"
LIMIT_TOOLS = ("cp", "cat")
# The goal for the tree of large files on /dev/shm.
LIMIT_TARGET = 1.10

LOCATION_NAMES = {"shm": "/dev/shm (tmpfs, RAM)", "disk": "disk"}
DIRECTION_NAMES = {"encrypt": "encrypt", "decrypt": "decrypt"}


def read_tsv(path):
    # Commands hold double quotes: no quoting, a tab is the only separator.
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def human_bytes(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def workload_title(name, files, total):
    if files == 0:
        return f"{name} (no measurements)"
    if files == 1:
        return f"one {human_bytes(total)} file"
    return f"tree of {files} x {human_bytes(total // files)} ({human_bytes(total)})"


class Measurement:
    """The timed runs of one tool x mode x direction on one workload and location."""

    def __init__(self, row):
        self.workload = row["workload"]
        self.shape = row["shape"]
        self.location = row["location"]
        self.direction = row["direction"]
        self.tool = row["tool"]
        self.mode = row["mode"]
        self.bytes = int(row["bytes"])
        self.files = int(row["files"])
        self.seconds = []
        self.failed = False

    def add(self, row):
        if row["status"] == "failed":
            self.failed = True
        elif row["status"] == "ok":
            self.seconds.append(float(row["seconds"]))

    @property
    def ok(self):
        return not self.failed and bool(self.seconds)

    @property
    def median(self):
        return statistics.median(self.seconds)

    @property
    def is_peer(self):
        return self.tool not in (SUBJECT,) + LIMIT_TOOLS

    def name(self, parallel):
        if self.tool == "cp":
            return "`cp -r`" if self.shape == "tree" else "`cp`"
        if self.tool == "cat":
            return "`cat`"
        if self.tool == SUBJECT:
            return f"cryptstream ({parallel} threads)" if self.mode == "threads" else "cryptstream --workers 1"
        mode = {
            "seq": "sequential",
            "xargs": f"xargs -P {parallel}",
            "seq-default-kdf": "default S2K" if self.tool == "gpg" else "default PBKDF2",
        }.get(self.mode, self.mode)
        return f"{self.tool}, {mode}"


def load(run_dir):
    groups = OrderedDict()
    with open(run_dir / "raw.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["workload"], row["location"], row["direction"], row["tool"], row["mode"])
            if key not in groups:
                groups[key] = Measurement(row)
            groups[key].add(row)
    return list(groups.values())


def limit_of(measurements, workload, location):
    """The copy limit: `cp -r` for a tree, `cat` for a file."""
    for m in measurements:
        if m.workload == workload and m.location == location and m.direction == "copy":
            if m.tool == ("cp" if m.shape == "tree" else "cat") and m.ok:
                return m
    return None


def fastest_peer(rows):
    peers = [m for m in rows if m.is_peer and m.ok]
    return min(peers, key=lambda m: m.median) if peers else None


def subject_of(rows):
    for m in rows:
        if m.tool == SUBJECT and m.mode == "threads" and m.ok:
            return m
    return None


def headline(measurements, workload, location, direction, parallel):
    """The sentence: cryptstream against the limit and the fastest peer."""
    rows = [m for m in measurements if m.workload == workload and m.location == location and m.direction == direction]
    if not rows:
        return None, None
    subject, limit, peer = subject_of(rows), limit_of(measurements, workload, location), fastest_peer(rows)
    if subject is None:
        return "cryptstream: no successful run", None
    limit_name = "cp -r" if subject.shape == "tree" else "cat"
    parts = []
    to_limit = subject.median / limit.median if limit else None
    parts.append(f"{to_limit:.2f} x {limit_name} time" if limit else f"no {limit_name} measurement")
    speedup = peer.median / subject.median if peer else None
    if peer:
        slower = "" if speedup >= 1 else f", i.e. {1 / speedup:.2f} x slower"
        parts.append(f"{speedup:.2f} x faster than the fastest peer ({peer.name(parallel)}){slower}")
    else:
        parts.append("no peer finished")
    medians = [f"cryptstream {subject.median:.3f} s"]
    if limit:
        medians.append(f"{limit_name} {limit.median:.3f} s")
    if peer:
        medians.append(f"that peer {peer.median:.3f} s")
    sentence = "cryptstream: " + "; ".join(parts) + " (medians: " + ", ".join(medians) + ")"
    return sentence, (to_limit, speedup)


def fmt(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(measurements, workload, location, direction, parallel):
    rows = [m for m in measurements if m.workload == workload and m.location == location and m.direction == direction]
    if not rows:
        return []
    copies = [m for m in measurements if m.workload == workload and m.location == location and m.direction == "copy"]
    limit = limit_of(measurements, workload, location)
    peer = fastest_peer(rows)
    limit_name = "cp -r" if rows[0].shape == "tree" else "cat"
    out = [
        f"| tool | runs | median s | min s | max s | MB/s | files/s | time / {limit_name} | time / fastest peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = sorted(copies + rows, key=lambda m: (not m.ok, m.median if m.ok else 0))
    for m in ordered:
        name = m.name(parallel)
        if m.tool == SUBJECT:
            name = f"**{name}**"
        if not m.ok:
            out.append(f"| {name} | FAILED: see failures/ | | | | | | | |")
            continue
        med = m.median
        out.append(
            "| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.0f} | {:.0f} | {} | {} |".format(
                name,
                len(m.seconds),
                med,
                min(m.seconds),
                max(m.seconds),
                m.bytes / 1e6 / med,
                m.files / med,
                fmt(med / limit.median) if limit else "n/a",
                fmt(med / peer.median) if peer else "n/a",
            )
        )
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RUN_FOLDER")
    run_dir = Path(sys.argv[1])
    meta = {r["key"]: r["value"] for r in read_tsv(run_dir / "meta.tsv")}
    commands = read_tsv(run_dir / "commands.tsv")
    measurements = load(run_dir)
    parallel = meta.get("parallel", "?")
    main_workloads = meta.get("main_workloads", "").split()
    all_workloads = list(OrderedDict.fromkeys(m.workload for m in measurements))
    extra_workloads = [w for w in all_workloads if w not in main_workloads]
    locations = [l for l in ("shm", "disk") if any(m.location == l for m in measurements)]
    sizes = {m.workload: (m.files, m.bytes) for m in measurements}

    md = []
    md.append(f"# cryptstream benchsuite: {meta.get('date', '?')}")
    md.append("")
    md.append(
        f"{meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('memory', '?')}, "
        f"{meta.get('kernel', '?')}. Run with `bash benchsuite/run` "
        f"({'--quick, ' if meta.get('quick') == '1' else ''}1 warm-up + {meta.get('runs', '?')} timed "
        f"run{'' if meta.get('runs') == '1' else 's'} per command; took {meta.get('duration', '?')})."
    )
    if meta.get("quick") == "1":
        md.append("")
        md.append("> **--quick sanity run**: small workloads, few runs. Not a result to quote.")
    md.append("")

    # ---- headline
    md.append("## Headline (median wall time)")
    md.append("")
    verdicts = []
    for w in main_workloads:
        files, total = sizes.get(w, (0, 0))
        md.append(f"**{workload_title(w, files, total)}** (`{w}`)")
        md.append("")
        for loc in locations:
            sentence, ratios = headline(measurements, w, loc, "encrypt", parallel)
            if sentence is None:
                continue
            md.append(f"- {LOCATION_NAMES[loc]}: {sentence}.")
            if ratios:
                verdicts.append((w, loc, ratios))
        for loc in locations:
            sentence, _ = headline(measurements, w, loc, "decrypt", parallel)
            if sentence:
                md.append(f"- decrypt, {LOCATION_NAMES[loc]}: {sentence}.")
        md.append("")

    md.append("Targets (encrypt):")
    md.append("")
    for loc in locations:
        speedups = [(w, r[1]) for w, l, r in verdicts if l == loc]
        if speedups:
            beaten = all(s is not None and s > 1 for _, s in speedups)
            lost = ", ".join(w for w, s in speedups if s is None or s <= 1)
            md.append(
                f"- faster than every peer on all {len(speedups)} workloads, {LOCATION_NAMES[loc]}: "
                + ("**met**" if beaten else f"**not met** ({lost})")
            )
    if main_workloads:
        first = main_workloads[0]
        for w, l, r in verdicts:
            if w == first and l == "shm" and r[0] is not None:
                met = "**met**" if r[0] <= LIMIT_TARGET else "**not met**"
                md.append(f"- within {LIMIT_TARGET} x of `cp -r` on `{first}` on /dev/shm: {r[0]:.2f} x, {met}")
    md.append("")

    # ---- tables
    md.append("## Results")
    md.append("")
    md.append(
        "Median of the timed runs (the warm-up run is not counted). MB/s is 10^6 bytes of plaintext per second; "
        "files/s counts input files. `time / X` below 1 is faster than X. Peers are every tool except cryptstream "
        "and the copy limit (`cp`/`cat`)."
    )
    md.append("")
    for w in main_workloads + extra_workloads:
        files, total = sizes.get(w, (0, 0))
        extra = " (extra: the fixed cost of one invocation; not part of the targets)" if w in extra_workloads else ""
        for loc in locations:
            for direction in ("encrypt", "decrypt"):
                rows = table(measurements, w, loc, direction, parallel)
                if not rows:
                    continue
                md.append(f"### {workload_title(w, files, total)}, {LOCATION_NAMES[loc]}, {direction}{extra}")
                md.append("")
                md.extend(rows)
                md.append("")

    # ---- machine
    md.append("## Machine")
    md.append("")
    md.append("| | |")
    md.append("|---|---|")
    for key, label in (
        ("cpu", "CPU"),
        ("cores", "cores (nproc)"),
        ("memory", "memory"),
        ("virtualization", "virtualization"),
        ("kernel", "kernel"),
        ("os", "OS"),
        ("cpu_flags", "crypto CPU flags"),
        ("fs_shm", "location shm"),
        ("fs_disk", "location disk"),
        ("load_start", "load average at start"),
        ("load_end", "load average at end"),
        ("generator", "workload generator"),
    ):
        if key in meta:
            md.append(f"| {label} | {meta[key]} |")
    for key in sorted(k for k in meta if k.startswith("version_")):
        md.append(f"| {key[len('version_'):]} | {meta[key]} |")
    md.append("")

    # ---- method
    sync = meta.get("sync_disk") == "1"
    md.append("## Method")
    md.append("")
    runs = meta.get("runs", "?")
    md.append(
        f"- Every command runs once as a warm-up, then {runs} timed run{'' if runs == '1' else 's'} (only 1 when the warm-up "
        f"took longer than {meta.get('slow', '?')} s); the output is deleted before each run (not timed). Wall "
        "time of `bash -c COMMAND` with bash's microsecond clock."
    )
    md.append(
        "- The input is generated fresh for each workload and location, read once before measuring (the page "
        "cache is warm for every tool alike), and deleted afterwards."
    )
    md.append(
        "- On disk, "
        + (
            "the time includes a final `sync -f` of the output, so every tool pays for getting its bytes onto the "
            "disk; an untimed `sync` runs before each run."
            if sync
            else "the time stops when the tool exits (--no-sync): bytes may still sit in the page cache."
        )
    )
    md.append(
        "- Every run is checked: the output must have as many files as the input, an encryption more bytes than "
        "the input, a copy or decryption the same bytes; the last decryption run is compared with the input "
        "byte for byte. A run that fails this is marked FAILED and excluded, so a broken peer cannot look fast."
    )
    md.append(
        "- cryptstream encrypts with a key file (AES-256-GCM by default where the CPU has AES instructions); "
        "age and rage with an X25519 recipient. gpg and openssl need a passphrase: it is a random 256-bit "
        "string in a file, as strong as a key, so no key stretching is needed and none is charged: gpg runs "
        "with `--s2k-mode 1` (salted, not iterated) and openssl with `-pbkdf2 -iter 1`. Their defaults (gpg: "
        "iterated S2K, 65011712 bytes hashed per file; openssl: PBKDF2 with 10000 iterations) cost a fixed "
        "time per file, shown in the extra `1x4KiB` table."
    )
    md.append(
        "- **`openssl enc` does not authenticate**: AES-256-CTR alone detects no tampering. It is the speed "
        "bound of a cipher without a MAC, not a tool with the same guarantees. gpg (AES256 in CFB mode with "
        "the SHA-1 MDC), age and rage (ChaCha20-Poly1305 in 64 KiB chunks) do authenticate."
    )
    md.append(
        f"- age, rage, gpg and openssl take one file per process. For a tree the folders are made first, then "
        f"`find -print0 | xargs -0 sh -c 'for f; do TOOL ...; done'`: sequential is one shell running the tool "
        f"over every file; parallel is `xargs -P {parallel} -n B`, B files per shell (about 8 batches per core, "
        f"at most 1000), so the peers pay one process start per file and almost nothing for shells. "
        f"cryptstream takes the whole tree in one process."
    )
    md.append("")

    # ---- commands
    md.append("## Commands")
    md.append("")
    md.append(
        "As run with `bash -c`. `SRC`/`DST` are the input and output (a folder for a tree, a file for a file), "
        "`P` the number of cores, `B` the xargs batch size, `PF` the passphrase file, `GNUPGHOME` a fresh "
        "folder; the key variables name key files made by each tool's key generator."
    )
    md.append("")
    for shape, title in (("tree", "Trees"), ("file", "One file")):
        block = [c for c in commands if c["shape"] == shape]
        if not block:
            continue
        md.append(f"{title}:")
        md.append("")
        md.append("```sh")
        for c in block:
            md.append(f"# {c['direction']}: {c['tool']}, {c['mode']}")
            md.append(c["command"])
        md.append("```")
        md.append("")

    (run_dir / "summary.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
