#!/usr/bin/env bash
# The store next to restic, same run, same machine: put (first backup),
# second put of unchanged data, get (restore), for 1000 x 1 MiB and one
# 2 GiB file. Pairs alternate A B / B A; per row: median seconds of each
# tool, median of the per-pair ratios restic/cryptstream (> 1: we are
# faster), and the peak RSS of each (max over the runs, /usr/bin/time -v).
# Every timing includes a final `sync -f` of the destination, as the rest
# of the benchsuite does (decision 18). LOADS picks the workloads
# (default "t1m big"); "tree" is 80,000 source-like files (lognormal around
# 3 KiB, text, in folders two levels deep, made by `gen`), where put2 is
# the re-put after `touch`ing 100 files, and the row "size" compares the
# store with the repository after the first put. Every restore is checked
# with diff -r. Usage:
#   [LOADS="t1m big tree"] benchsuite/store.sh DIR [REPS] [BINARY]
set -euo pipefail
dir=${1:?dir}; reps=${2:-5}; bin=$(realpath "${3:-target/release/cryptstream}")
command -v restic >/dev/null || { echo "restic is missing: apt-get install -y restic" >&2; exit 1; }
w="$dir/cst-store-bench"; rm -rf "$w"; mkdir -p "$w"
trap 'rm -rf "$w"' EXIT
"$bin" keygen -o "$w/key" >/dev/null 2>&1
printf 'bench-password\n' > "$w/pass"
export RESTIC_PASSWORD_FILE="$w/pass" RESTIC_CACHE_DIR="$w/restic-cache" CRYPTSTREAM_CACHE_DIR="$w/cst-cache"
mkdir -p "$w/src"
"$bin" gen "$w/src/t1m" --count 1000 --size 1MiB --seed 1 --quiet
loads=${LOADS:-t1m big}
case " $loads " in *" big "*) mkdir -p "$w/src/big" && head -c 2G /dev/urandom > "$w/src/big/file" ;; esac
case " $loads " in *" tree "*) "$bin" gen "$w/src/tree" --count 80000 --size-dist lognormal:3KiB --content text --depth 2 --seed 3 --quiet ;; esac
# touch100 SRC: a new mtime on 100 files spread over the tree (tree only).
touch100() { [ "$(basename "$1")" = tree ] && find "$1" -type f | awk 'NR % 800 == 1' | head -100 | xargs touch; true; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# timed CMD...: prints "SECONDS KIB" (wall including sync -f of $w, peak RSS)
timed() {
  local s e rss
  s=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$w/rss" "$@" >/dev/null 2>"$w/err" || { cat "$w/err" >&2; exit 1; }
  sync -f "$w"
  e=$(date +%s.%N)
  rss=$(tail -1 "$w/rss")
  echo "$(echo "$e - $s" | bc -l) $rss"
}
cst() { "$bin" store --store "$w/store" -k "$w/key" -q "$@"; }
run_cst() { # SRC NAME -> "put put2 get" lines of "s kib"
  rm -rf "$w/store" "$w/out"; sync -f "$w"
  cst init 2>/dev/null
  timed "$bin" store --store "$w/store" -k "$w/key" -q put "$1"
  du -sk "$w/store" | cut -f1 > "$w/size-cst"
  touch100 "$1"
  timed "$bin" store --store "$w/store" -k "$w/key" -q put "$1"
  timed "$bin" store --store "$w/store" -k "$w/key" -q get "$2" "$w/out"
  diff -r -q "$1" "$w/out/$2" >/dev/null || { echo "cryptstream restore differs" >&2; exit 1; }
  rm -rf "$w/store" "$w/out"
}
run_restic() {
  rm -rf "$w/repo" "$w/out" "$w/restic-cache"; sync -f "$w"
  restic -q init --repo "$w/repo" >/dev/null
  timed restic -q --repo "$w/repo" backup "$1"
  du -sk "$w/repo" | cut -f1 > "$w/size-restic"
  touch100 "$1"
  timed restic -q --repo "$w/repo" backup "$1"
  timed restic -q --repo "$w/repo" restore latest --target "$w/out"
  diff -r -q "$1" "$w/out$1" >/dev/null || { echo "restic restore differs" >&2; exit 1; }
  rm -rf "$w/repo" "$w/out"
}
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; $("$bin" --version); $(restic version | cut -d' ' -f1-2); dir $dir; $reps pairs"
for load in $loads; do
  src="$w/src/$load"
  declare -A T=() R=()
  for op in put put2 get; do T[c$op]=""; T[r$op]=""; R[$op]=""; done
  rss_c=(0 0 0); rss_r=(0 0 0)
  for i in $(seq "$reps"); do
    if [ $((i % 2)) = 1 ]; then c=$(run_cst "$src" "$load"); r=$(run_restic "$src"); else r=$(run_restic "$src"); c=$(run_cst "$src" "$load"); fi
    k=0
    for op in put put2 get; do
      cs=$(echo "$c" | sed -n "$((k+1))p"); rs=$(echo "$r" | sed -n "$((k+1))p")
      ct=${cs% *}; ck=${cs#* }; rt=${rs% *}; rk=${rs#* }
      T[c$op]+="$ct "; T[r$op]+="$rt "; R[$op]+="$(echo "$rt / $ct" | bc -l) "
      [ "$ck" -gt "${rss_c[$k]}" ] && rss_c[$k]=$ck; [ "$rk" -gt "${rss_r[$k]}" ] && rss_r[$k]=$rk
      echo "raw $load pair $i $op cryptstream ${ct}s ${ck}KiB restic ${rt}s ${rk}KiB"
      k=$((k+1))
    done
  done
  k=0
  for op in put put2 get; do
    printf '%s\t%s\tcryptstream %.3f s (%d MiB)\trestic %.3f s (%d MiB)\trestic/cryptstream x%.2f\n' "$load" "$op" \
      "$(echo ${T[c$op]} | tr ' ' '\n' | median)" $((rss_c[$k] / 1024)) \
      "$(echo ${T[r$op]} | tr ' ' '\n' | median)" $((rss_r[$k] / 1024)) \
      "$(echo ${R[$op]} | tr ' ' '\n' | median)"
    k=$((k+1))
  done
  printf '%s\tsize\tcryptstream store %d MiB (%d KiB)\trestic repository %d MiB (%d KiB)\n' "$load" \
    $(($(cat "$w/size-cst") / 1024)) "$(cat "$w/size-cst")" $(($(cat "$w/size-restic") / 1024)) "$(cat "$w/size-restic")"
done
