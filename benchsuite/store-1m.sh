#!/usr/bin/env bash
# Issue 16, acceptance 5: a tree of 1,000,000 entries of 0-4 KiB is put and
# got under `--max-memory 64MiB`; reports wall time and peak RSS of each
# (GNU time -v), the store's and the registry's size. A benchmark, not a
# test. Usage:
#   benchsuite/store-1m.sh DIR [COUNT] [BINARY]
# DIR should be tmpfs (/dev/shm): the tree is ~2 GB of data and a million
# inodes; everything is removed at the end.
set -euo pipefail
dir=${1:?dir}; count=${2:-1000000}; bin=$(realpath "${3:-target/release/cryptstream}")
w="$dir/cst-store-1m"; rm -rf "$w"; mkdir -p "$w"
trap 'rm -rf "$w"' EXIT
"$bin" keygen -o "$w/key" >/dev/null 2>&1
export CRYPTSTREAM_CACHE_DIR="$w/cache"
run() { # LABEL CMD...
  local s e label=$1
  shift
  s=$(date +%s.%N)
  /usr/bin/time -v "$@" >/dev/null 2>"$w/tv" || { tail -5 "$w/tv" >&2; exit 1; }
  e=$(date +%s.%N)
  printf '%-44s %8.2f s  peak RSS %7d KiB\n' "$label" "$(echo "$e - $s" | bc -l)" \
    "$(awk '/Maximum resident/ {print $6}' "$w/tv")"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores; $("$bin" --version); dir $dir; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" gen -q --count "$count" --size-dist uniform:0B..4KiB --content text --depth 2 "$w/tree"
echo "tree: $(find "$w/tree" | wc -l) entries, $(du -sb "$w/tree" | cut -f1) bytes (du)"
st() { echo "$bin" store --store "$w/store" -k "$w/key" -q --max-memory 64MiB; }
$(st) init >/dev/null 2>&1
run "put $count entries --max-memory 64MiB" $(st) put "$w/tree"
run "get $count entries --max-memory 64MiB" $(st) get tree "$w/out"
diff -r --no-dereference "$w/tree" "$w/out/tree" && echo "the tree came back identical (diff -r)"
echo "store: $(du -sb "$w/store" | cut -f1) bytes; cache (registry): $(du -sb "$w/cache" 2>/dev/null | cut -f1 || echo 0) bytes"
echo "# end load $(cut -d' ' -f1-3 /proc/loadavg)"
