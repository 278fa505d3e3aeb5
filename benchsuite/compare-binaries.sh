#!/usr/bin/env bash
# Two cryptstream binaries side by side (A B A B, REPS pairs) on the engine
# workloads: 20000 x 4 KiB, 1000 x 1 MiB, one 2 GiB file; encrypt and
# decrypt; median of the per-pair ratios B/A. Usage:
#   compare-binaries.sh OLD_BINARY NEW_BINARY DIR [REPS]
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}; dir=${3:?dir}; reps=${4:-5}
work="$dir/cst-compare"
. "$(dirname "$0")/engine-workloads.sh"
make_workloads "$new" "$work"
for load in small mid big; do
  src="$work/$load"; [ "$load" = big ] && src="$work/big/file"
  er=(); dr=(); ea=(); eb=(); da=(); db=()
  for i in $(seq "$reps"); do
    # Each output is removed right after it is timed, so every command
    # writes into the memory (or disk space) the one before it freed; odd
    # pairs run A first, even pairs B first, so neither always goes first.
    rm -rf "$work"/enc-* "$work"/dec-*; sync
    "$old" encrypt -q -k "$work/key" "$src" "$work/enc-a"
    "$new" encrypt -q -k "$work/key" "$src" "$work/enc-b"
    once() { # BINARY OP INPUT OUTPUT
      local took; took=$(t "$1" "$2" -q -k "$work/key" "$3" "$4"); sync; rm -rf "$4"; sync; echo "$took"
    }
    if [ $((i % 2)) = 1 ]; then
      a=$(once "$old" encrypt "$src" "$work/x-a"); b=$(once "$new" encrypt "$src" "$work/x-b")
      c=$(once "$old" decrypt "$work/enc-a" "$work/dec-a"); d=$(once "$new" decrypt "$work/enc-b" "$work/dec-b")
    else
      b=$(once "$new" encrypt "$src" "$work/x-b"); a=$(once "$old" encrypt "$src" "$work/x-a")
      d=$(once "$new" decrypt "$work/enc-b" "$work/dec-b"); c=$(once "$old" decrypt "$work/enc-a" "$work/dec-a")
    fi
    ea+=("$a"); eb+=("$b"); er+=("$(echo "$b / $a" | bc -l)")
    da+=("$c"); db+=("$d"); dr+=("$(echo "$d / $c" | bc -l)")
  done
  printf '%s\t%s\tencrypt old %.3f s new %.3f s (new/old x%.2f)\tdecrypt old %.3f s new %.3f s (new/old x%.2f)\n' \
    "$dir" "$load" \
    "$(printf '%s\n' "${ea[@]}" | median)" "$(printf '%s\n' "${eb[@]}" | median)" "$(printf '%s\n' "${er[@]}" | median)" \
    "$(printf '%s\n' "${da[@]}" | median)" "$(printf '%s\n' "${db[@]}" | median)" "$(printf '%s\n' "${dr[@]}" | median)"
done
rm -rf "$work"
