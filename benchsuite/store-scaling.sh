#!/usr/bin/env bash
# Two builds' store side by side across worker counts: put and get of the
# same workloads into a fresh local store, the builds alternated A B / B A
# in every rep. Per load and worker count: the median seconds of each and
# the median of the per-rep ratios A/B (> 1: B is faster). Every restore
# of B is checked with diff -r once per worker count. Loads: t1m (1000 x 1
# MiB), tree (80,000 source-like files in two levels of folders, as in
# store.sh), big (one 1 GiB file). Usage:
#   [LOADS="t1m tree"] [WORKERS="1 4 16"] benchsuite/store-scaling.sh DIR REPS BINARY_A BINARY_B
set -euo pipefail
dir=${1:?dir}; reps=${2:-3}; a=$(realpath "${3:?binary A}"); b=$(realpath "${4:?binary B}")
loads=${LOADS:-t1m tree}; workers=${WORKERS:-1 4 $(nproc)}
w="$dir/cst-store-scaling"; rm -rf "$w"; mkdir -p "$w"
trap 'rm -rf "$w"' EXIT
export CRYPTSTREAM_CACHE_DIR="$w/cache"
"$a" keygen -o "$w/key" >/dev/null 2>&1
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; A $a; B $b; dir $dir; $reps reps; load $(cut -d' ' -f1-3 /proc/loadavg)"
for load in $loads; do
  case $load in
    t1m) "$a" gen "$w/src/t1m" --count 1000 --size 1MiB --seed 1 --quiet ;;
    tree) "$a" gen "$w/src/tree" --count 80000 --size-dist lognormal:3KiB --content text --depth 2 --seed 3 --quiet ;;
    big) "$a" gen "$w/src/big" --count 1 --size 1GiB --seed 5 --quiet ;;
  esac
done
source "$(dirname "$0")/engine-workloads.sh" # secs, median
one() { # BINARY LOAD WORKERS -> "PUT GET"
  rm -rf "$w/store" "$w/out" "$w/cache"
  "$1" store --store "$w/store" -k "$w/key" -q init >/dev/null 2>&1
  local p g
  p=$(secs "$1" store --store "$w/store" -k "$w/key" -q --workers "$3" put "$w/src/$2")
  g=$(secs "$1" store --store "$w/store" -k "$w/key" -q --workers "$3" get "$2" "$w/out")
  echo "$p $g"
}
printf '| load | workers | A put s | B put s | put A/B | A get s | B get s | get A/B |\n|---|---|---|---|---|---|---|---|\n'
for load in $loads; do
  for n in $workers; do
    ap=(); bp=(); ag=(); bg=(); rp=(); rg=()
    for i in $(seq "$reps"); do
      if [ $((i % 2)) = 1 ]; then read -r x1 y1 <<<"$(one "$a" "$load" "$n")"; read -r x2 y2 <<<"$(one "$b" "$load" "$n")"
      else read -r x2 y2 <<<"$(one "$b" "$load" "$n")"; read -r x1 y1 <<<"$(one "$a" "$load" "$n")"; fi
      [ -n "$y1" ] && [ -n "$y2" ] || { echo "a run failed ($load, $n workers)" >&2; exit 1; }
      [ "$i" = 1 ] && { diff -r -q "$w/src/$load" "$w/out/$load" >/dev/null || { echo "restore differs ($load, $n)" >&2; exit 1; }; }
      ap+=("$x1"); bp+=("$x2"); ag+=("$y1"); bg+=("$y2")
      rp+=("$(awk -v x="$x1" -v y="$x2" 'BEGIN {print x / y}')"); rg+=("$(awk -v x="$y1" -v y="$y2" 'BEGIN {print x / y}')")
      echo "raw $load workers $n rep $i: A put $x1 get $y1; B put $x2 get $y2" >&2
    done
    m() { printf '%s\n' "$@" | median; }
    printf '| %s | %s | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |\n' "$load" "$n" \
      "$(m "${ap[@]}")" "$(m "${bp[@]}")" "$(m "${rp[@]}")" "$(m "${ag[@]}")" "$(m "${bg[@]}")" "$(m "${rg[@]}")"
  done
done
echo "# end load $(cut -d' ' -f1-3 /proc/loadavg)"
