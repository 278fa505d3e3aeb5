#!/usr/bin/env bash
# How the engine and the store scale with cores: the same workloads at
# --workers 1, 2, 4, ... up to the machine's cores (and the core count
# itself), on one machine, in one run. Made for the 16-core device machine;
# it runs anywhere.
#   engine: `cryptstream bench` (encrypt and decrypt, medians of REPS runs
#           after a warm-up) on one BIG file, 1000 x 1 MiB and 20000 x 4 KiB;
#   store:  put and get of 1000 x 1 MiB and of one BIG file, each into a
#           fresh local store, medians of REPS; every restore is checked
#           with diff -r once per worker count;
#   copy:   cp -r of each, the no-encryption limit.
# Speed-up is against --workers 1 of the same row. Timings are wall clock
# (`secs` of engine-workloads.sh).
# Usage: [BIG=4GiB] [STORE_BIG=2GiB] benchsuite/scaling.sh DIR [REPS] [BINARY]
set -euo pipefail
dir=${1:?dir}; reps=${2:-3}; bin=$(realpath "${3:-target/release/cryptstream}")
big=${BIG:-4GiB}; store_big=${STORE_BIG:-2GiB}
cores=$(nproc)
list=(); for w in 1 2 4 8 16 32 64; do [ "$w" -lt "$cores" ] && list+=("$w"); done; list+=("$cores")
workers=$(IFS=,; echo "${list[*]}")
w="$dir/cst-scaling"; rm -rf "$w"; mkdir -p "$w"
trap 'rm -rf "$w"' EXIT
export CRYPTSTREAM_CACHE_DIR="$w/cache"
"$bin" keygen -o "$w/key" >/dev/null 2>&1

echo "# $(date -u +%FT%TZ) $(uname -r) $cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)); $("$bin" --version); dir $dir ($(df --output=fstype "$dir" | tail -1)); workers $workers; $reps runs; load $(cut -d' ' -f1-3 /proc/loadavg)"

source "$(dirname "$0")/engine-workloads.sh" # secs, median

echo
echo "## engine: cryptstream bench --workers $workers --runs $reps"
bench() { # LABEL WORKLOAD-ARGS...
  local label=$1; shift
  echo
  echo "### $label"
  "$bin" bench --scratch "$w" --workers "$workers" --runs "$reps" --json "$w/bench-$label.json" "$@" 2>&1 \
    | grep -v '^\s*$' || { echo "bench $label failed" >&2; exit 1; }
}
bench big --count 1 --size "$big" --seed 7
bench t1m --count 1000 --size 1MiB --seed 1
bench t4k --count 20000 --size 4KiB --seed 2

echo
echo "## store: put and get into a fresh local store, medians of $reps"
"$bin" gen "$w/src/t1m" --count 1000 --size 1MiB --seed 1 --quiet
"$bin" gen "$w/src/big" --count 1 --size "$store_big" --seed 5 --quiet
st() { "$bin" store --store "$w/store" -k "$w/key" -q --workers "$@"; }
for load in t1m big; do
  src="$w/src/$load"; bytes=$(du -sb --apparent-size "$src" | cut -f1)
  c=(); for _ in $(seq "$reps"); do rm -rf "$w/copy"; c+=("$(secs cp -r "$src" "$w/copy")"); done; rm -rf "$w/copy"
  cmed=$(printf '%s\n' "${c[@]}" | median)
  printf '\n| %s (%d MB) | put s | put MB/s | put speed-up | get s | get MB/s | get speed-up |\n|---|---|---|---|---|---|---|\n' "$load" $((bytes / 1000000))
  printf '| cp -r (no encryption) | %.3f | %.0f | | | | |\n' "$cmed" "$(awk -v b="$bytes" -v t="$cmed" 'BEGIN {print b / 1e6 / t}')"
  put1=""; get1=""
  for n in "${list[@]}"; do
    p=(); g=()
    for r in $(seq "$reps"); do
      rm -rf "$w/store" "$w/out" "$w/cache"
      st "$n" init >/dev/null 2>&1
      p+=("$(secs st "$n" put "$src")")
      g+=("$(secs st "$n" get "$load" "$w/out")")
      if [ "$r" = 1 ]; then diff -r -q "$src" "$w/out/$load" >/dev/null || { echo "store restore differs ($load, $n workers)" >&2; exit 1; }; fi
    done
    pm=$(printf '%s\n' "${p[@]}" | median); gm=$(printf '%s\n' "${g[@]}" | median)
    put1=${put1:-$pm}; get1=${get1:-$gm}
    awk -v n="$n" -v b="$bytes" -v p="$pm" -v g="$gm" -v p1="$put1" -v g1="$get1" \
      'BEGIN {printf "| --workers %d | %.3f | %.0f | %.2f x | %.3f | %.0f | %.2f x |\n", n, p, b / 1e6 / p, p1 / p, g, b / 1e6 / g, g1 / g}'
  done
  rm -rf "$w/store" "$w/out"
done
echo
echo "# end load $(cut -d' ' -f1-3 /proc/loadavg)"
