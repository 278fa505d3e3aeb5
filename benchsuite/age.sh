#!/usr/bin/env bash
# cryptstream (age format) against age and rage, on one 2 GiB file and a
# tree of 1000 x 1 MiB, encrypt and decrypt, on tmpfs and on disk.
#
#   bash benchsuite/age.sh [--rounds N] [--out DIR] [--disk-dir DIR] [--rage PATH] [--quick] [--no-tree]
#
# Every measurement round runs every tool once in the same order (A B C A B C
# ...), so each round gives one pair per tool for the per-pair ratios; the
# summary reports absolute medians and the median of per-round ratios
# (other tool time / cryptstream time: above 1 means cryptstream is faster).
# Trees are encrypted by age/rage sequentially (one process per file) and
# with `xargs -P CORES`; cryptstream runs the whole tree in one process.
# On disk each timing includes a final `sync -f` of the output (every tool
# pays for its own writeback). Needs: cryptstream release build, age,
# age-keygen (apt), rage (optional: cargo install rage --root DIR), python3.
set -euo pipefail

ROUNDS=5
OUT="benchsuite/runs/$(date -u +%Y-%m-%d)-age"
DISK_DIR=/work/bench-age/disk
SHM_DIR=/dev/shm/bench-age
RAGE=${RAGE:-}
BIG_MIB=2048
TREE_FILES=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --disk-dir) DISK_DIR=$2; shift 2 ;;
    --rage) RAGE=$2; shift 2 ;;
    --quick) BIG_MIB=256; TREE_FILES=100; ROUNDS=2; shift ;;
    --no-tree) TREE_FILES=0; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CS=$ROOT/target/release/cryptstream
[ -x "$CS" ] || { echo "build first: cargo build --release --locked -p cryptstream" >&2; exit 1; }
command -v age >/dev/null || apt-get install -y age >/dev/null
[ -z "$RAGE" ] && RAGE=$(command -v rage || true)
CORES=$(nproc)
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
: > "$RAW"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "kernel: $(uname -r)"
  echo "cryptstream: $("$CS" --version) ($CS)"
  echo "age: $(age --version)"
  echo "rage: ${RAGE:+$("$RAGE" --version)}"
  echo "rounds: $ROUNDS; big file: $BIG_MIB MiB; tree: $TREE_FILES x 1 MiB"
  echo "load at start: $(cat /proc/loadavg)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

KEYS=$(mktemp -d)
trap 'rm -rf "$KEYS"' EXIT
age-keygen -o "$KEYS/id.txt" 2>/dev/null
R=$(age-keygen -y "$KEYS/id.txt")

# time_cmd LOCATION WORKLOAD OP TOOL ROUND OUTPUT -- COMMAND...
time_cmd() {
  local loc=$1 wl=$2 op=$3 tool=$4 round=$5 out=$6; shift 7
  sync
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  if [ "$loc" = disk ]; then sync -f "$out"; fi
  t1=$(date +%s.%N)
  local s; s=$(python3 -c "print(f'{$t1-$t0:.3f}')")
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$loc" "$wl" "$op" "$tool" "$round" "$s" "$load" | tee -a "$RAW"
}

for loc in shm disk; do
  if [ $loc = shm ]; then BASE=$SHM_DIR; else BASE=$DISK_DIR; fi
  rm -rf "$BASE"; mkdir -p "$BASE"
  # Workloads: random bytes, generated once per location.
  head -c $((BIG_MIB << 20)) /dev/urandom > "$BASE/big"
  mkdir -p "$BASE/tree" "$BASE/tree.age"
  for i in $(seq -w 1 $TREE_FILES); do head -c 1048576 /dev/urandom > "$BASE/tree/f$i"; done
  # Decrypt inputs, made once by age itself (all tools read the same files).
  age -e -r "$R" -o "$BASE/big.age" "$BASE/big"
  [ "$TREE_FILES" -gt 0 ] && (cd "$BASE/tree" && ls | xargs -P "$CORES" -I{} age -e -r "$R" -o "$BASE/tree.age/{}.age" {})
  cat "$BASE/big" "$BASE/big.age" > /dev/null
  for round in $(seq 1 "$ROUNDS"); do
    # --- one big file, encrypt
    for tool in cryptstream age ${RAGE:+rage}; do
      rm -f "$BASE/out.age"
      case $tool in
        cryptstream) time_cmd $loc big encrypt $tool $round "$BASE/out.age" -- "$CS" encrypt -q -r "$R" "$BASE/big" "$BASE/out.age" ;;
        age) time_cmd $loc big encrypt $tool $round "$BASE/out.age" -- age -e -r "$R" -o "$BASE/out.age" "$BASE/big" ;;
        rage) time_cmd $loc big encrypt $tool $round "$BASE/out.age" -- "$RAGE" -e -r "$R" -o "$BASE/out.age" "$BASE/big" ;;
      esac
    done
    rm -f "$BASE/out.age"
    # --- one big file, decrypt
    for tool in cryptstream age ${RAGE:+rage}; do
      rm -f "$BASE/out"
      case $tool in
        cryptstream) time_cmd $loc big decrypt $tool $round "$BASE/out" -- "$CS" decrypt -q -i "$KEYS/id.txt" "$BASE/big.age" "$BASE/out" ;;
        age) time_cmd $loc big decrypt $tool $round "$BASE/out" -- age -d -i "$KEYS/id.txt" -o "$BASE/out" "$BASE/big.age" ;;
        rage) time_cmd $loc big decrypt $tool $round "$BASE/out" -- "$RAGE" -d -i "$KEYS/id.txt" -o "$BASE/out" "$BASE/big.age" ;;
      esac
    done
    cmp -s "$BASE/out" "$BASE/big" || { echo "decrypt mismatch" >&2; exit 1; }
    rm -f "$BASE/out"
    [ "$TREE_FILES" -gt 0 ] || continue
    # --- tree, encrypt
    for tool in cryptstream age age-xargs ${RAGE:+rage rage-xargs}; do
      rm -rf "$BASE/tout"; mkdir -p "$BASE/tout"
      case $tool in
        cryptstream) rmdir "$BASE/tout"; time_cmd $loc tree encrypt $tool $round "$BASE/tree" -- "$CS" encrypt -q -r "$R" "$BASE/tree" "$BASE/tout" ;;
        age) time_cmd $loc tree encrypt $tool $round "$BASE/tout" -- sh -c "cd '$BASE/tree' && for f in *; do age -e -r '$R' -o '$BASE/tout/'\$f.age \$f; done" ;;
        age-xargs) time_cmd $loc tree encrypt $tool $round "$BASE/tout" -- sh -c "cd '$BASE/tree' && ls | xargs -P $CORES -I{} age -e -r '$R' -o '$BASE/tout/{}.age' {}" ;;
        rage) time_cmd $loc tree encrypt $tool $round "$BASE/tout" -- sh -c "cd '$BASE/tree' && for f in *; do '$RAGE' -e -r '$R' -o '$BASE/tout/'\$f.age \$f; done" ;;
        rage-xargs) time_cmd $loc tree encrypt $tool $round "$BASE/tout" -- sh -c "cd '$BASE/tree' && ls | xargs -P $CORES -I{} '$RAGE' -e -r '$R' -o '$BASE/tout/{}.age' {}" ;;
      esac
    done
    rm -rf "$BASE/tout"
    # --- tree, decrypt
    for tool in cryptstream age age-xargs ${RAGE:+rage rage-xargs}; do
      rm -rf "$BASE/tback"; mkdir -p "$BASE/tback"
      case $tool in
        cryptstream) rmdir "$BASE/tback"; time_cmd $loc tree decrypt $tool $round "$BASE/tback" -- "$CS" decrypt -q -i "$KEYS/id.txt" "$BASE/tree.age" "$BASE/tback" ;;
        age) time_cmd $loc tree decrypt $tool $round "$BASE/tback" -- sh -c "cd '$BASE/tree.age' && for f in *; do age -d -i '$KEYS/id.txt' -o '$BASE/tback/'\${f%.age} \$f; done" ;;
        age-xargs) time_cmd $loc tree decrypt $tool $round "$BASE/tback" -- sh -c "cd '$BASE/tree.age' && ls | sed 's/\\.age\$//' | xargs -P $CORES -I{} age -d -i '$KEYS/id.txt' -o '$BASE/tback/{}' {}.age" ;;
        rage) time_cmd $loc tree decrypt $tool $round "$BASE/tback" -- sh -c "cd '$BASE/tree.age' && for f in *; do '$RAGE' -d -i '$KEYS/id.txt' -o '$BASE/tback/'\${f%.age} \$f; done" ;;
        rage-xargs) time_cmd $loc tree decrypt $tool $round "$BASE/tback" -- sh -c "cd '$BASE/tree.age' && ls | sed 's/\\.age\$//' | xargs -P $CORES -I{} '$RAGE' -d -i '$KEYS/id.txt' -o '$BASE/tback/{}' {}.age" ;;
      esac
    done
    diff -rq "$BASE/tback" "$BASE/tree" >/dev/null || { echo "tree decrypt mismatch" >&2; exit 1; }
    rm -rf "$BASE/tback"
  done
  rm -rf "$BASE"
done

python3 - "$RAW" > "$OUT/summary.md" <<'PY'
import sys, statistics, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
t = collections.defaultdict(dict)  # (loc, wl, op) -> tool -> {round: s}
loads = [float(r[6]) for r in rows if len(r) > 6]
for loc, wl, op, tool, rnd, s, *_ in rows:
    t[(loc, wl, op)].setdefault(tool, {})[rnd] = float(s)
if loads:
    print(f"1-minute load average during the runs: median {statistics.median(loads):.1f}, max {max(loads):.1f} (the machine has {__import__('os').cpu_count()} cores)\n")
print("| location | workload | op | tool | median s | median ratio tool/cryptstream (per round) |")
print("|---|---|---|---|---|---|")
for key in sorted(t, key=lambda k: (k[0] != "shm", k[1], k[2])):
    cs = t[key]["cryptstream"]
    for tool, runs in t[key].items():
        med = statistics.median(runs.values())
        ratios = [runs[r] / cs[r] for r in runs if r in cs]
        ratio = "" if tool == "cryptstream" else f"{statistics.median(ratios):.2f}x"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {tool} | {med:.3f} | {ratio} |")
PY
cat "$OUT/summary.md"
