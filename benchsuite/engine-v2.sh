#!/usr/bin/env bash
# Engine v2 figures: cryptstream encrypt/decrypt (metadata restore on)
# beside cp -r (trees) and cat (one file), alternating A B A B, REPS pairs,
# median of the per-pair ratios. Usage: [LOADS="small mid big"] engine-v2.sh DIR [REPS]
set -euo pipefail
dir=${1:?usage: engine-v2.sh DIR [REPS]}
reps=${2:-5}
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release/cryptstream
work="$dir/cst-v2-bench"
. "$(dirname "$0")/engine-workloads.sh"
make_workloads "$bin" "$work"
for load in ${LOADS:-small mid big}; do
  enc_r=(); dec_r=(); base_t=(); enc_t=(); dec_t=()
  for i in $(seq "$reps"); do
    # Pairs A B A B: the copy, then encrypt; the copy again, then decrypt.
    # Each command writes into freshly freed memory or disk, as the one
    # before it did, and every output is removed before the next command.
    base() {
      rm -rf "$work/copy"; sync
      if [ "$load" = big ]; then t sh -c "cat '$work/big/file' > '$work/copy'"; else t cp -r "$work/$load" "$work/copy"; fi
      rm -rf "$work/copy"; sync
    }
    rm -rf "$work/enc" "$work/dec"; sync
    src="$work/$load"; [ "$load" = big ] && src="$work/big/file"
    b1=$(base)
    e=$(t "$bin" encrypt -q -k "$work/key" "$src" "$work/enc"); sync
    b2=$(base)
    d=$(t "$bin" decrypt -q -k "$work/key" "$work/enc" "$work/dec"); sync
    if [ "$load" = big ]; then
      cmp -s "$src" "$work/dec" || { echo "round trip differs" >&2; exit 1; }
    else
      diff -r --no-dereference "$src" "$work/dec" >/dev/null || { echo "round trip differs" >&2; exit 1; }
    fi
    rm -rf "$work/dec"; sync
    base_t+=("$b1" "$b2"); enc_t+=("$e"); dec_t+=("$d")
    echo "raw $load pair $i copy $b1 encrypt $e copy $b2 decrypt $d"
    enc_r+=("$(echo "$e / $b1" | bc -l)"); dec_r+=("$(echo "$d / $b2" | bc -l)")
  done
  printf '%s\t%s\tbase %.3f s\tencrypt %.3f s (x%.2f)\tdecrypt %.3f s (x%.2f)\n' "$dir" "$load" \
    "$(printf '%s\n' "${base_t[@]}" | median)" \
    "$(printf '%s\n' "${enc_t[@]}" | median)" "$(printf '%s\n' "${enc_r[@]}" | median)" \
    "$(printf '%s\n' "${dec_t[@]}" | median)" "$(printf '%s\n' "${dec_r[@]}" | median)"
done
rm -rf "$work"
