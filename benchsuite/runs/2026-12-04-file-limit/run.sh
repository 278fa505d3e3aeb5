#!/usr/bin/env bash
# Issue 17, acceptance 4, single-connection row: how fast can anything
# write one 1 GiB file into tmpfs here, next to iperf3's single stream on
# 127.0.0.1 moving the same bytes? Alternated A B, PAIRS pairs:
#   A: iperf3 -c 127.0.0.1 -n 1G (single stream; the receiver's rate)
#   B: dd if=/dev/zero of=/dev/shm/out bs=1M count=1024 (writes only: the
#      source costs nothing), the file removed after each run.
# Prints each pair and the median of the per-pair ratios B/A.
set -euo pipefail
pairs=${1:-7}
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratios=()
for i in $(seq "$pairs"); do
  iperf3 -s -1 -D -p 5299 >/dev/null 2>&1; sleep 0.3
  a=$(iperf3 -c 127.0.0.1 -p 5299 -n 1G -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 8e6)')
  s=$EPOCHREALTIME
  dd if=/dev/zero of=/dev/shm/out bs=1M count=1024 status=none
  b=$(awk -v s="$s" -v e="$EPOCHREALTIME" 'BEGIN {printf "%.1f", 1073.741824 / (e - s)}')
  rm -f /dev/shm/out
  r=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')
  ratios+=("$r")
  printf 'pair %d: iperf3 %.0f MB/s, one-file write %s MB/s, ratio %s\n' "$i" "$a" "$b" "$r"
done
echo "median of the ratios (one-file write / iperf3 single stream): $(printf '%s\n' "${ratios[@]}" | median)"
