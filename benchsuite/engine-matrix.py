"""Medians of benchsuite/engine-matrix.sh's CSV, as a Markdown table.

Usage: python3 engine-matrix.py FILE.csv... WORKLOAD=BYTES...
"""
import csv
import statistics
import sys
from collections import defaultdict

NAMES = {"mb": "5000 x 1 MB", "kb": "20000 x 4 KiB", "big": "one 2 GiB file"}


def main():
    paths = [a for a in sys.argv[1:] if "=" not in a]
    sizes = dict(a.split("=") for a in sys.argv[1:] if "=" in a)
    cells = defaultdict(list)
    rows = [row for path in paths for row in csv.DictReader(open(path))]
    for row in rows:
        key = (row["workload"], row["location"], row["op"], row["engine"], row["io"])
        cells[key].append(row)
    groups = sorted({k[:3] for k in cells}, key=lambda g: (list(NAMES).index(g[0]), g[1], g[2]))
    for wl, loc, op in groups:
        base = statistics.median(float(r["wall_s"]) for r in cells[(wl, loc, op, "threads", "pread")])
        print(f"\n### {op} {NAMES.get(wl, wl)} on {loc}\n")
        print("| engine | io | wall s (median) | min..max | MB/s | CPU s | peak RSS MiB | vs threads+pread |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for (w, l, o, e, io), rows in sorted(cells.items()):
            if (w, l, o) != (wl, loc, op):
                continue
            walls = [float(r["wall_s"]) for r in rows]
            cpu = statistics.median(float(r["user_s"]) + float(r["sys_s"]) for r in rows)
            rss = max(int(r["maxrss_kib"]) for r in rows) / 1024
            med = statistics.median(walls)
            mbs = int(sizes[wl]) / 1e6 / med if med > 0 else float("inf")
            print(f"| {e} | {io} | {med:.2f} | {min(walls):.2f}..{max(walls):.2f} | {mbs:.0f} "
                  f"| {cpu:.2f} | {rss:.0f} | {med / base:.2f} |")


main()
