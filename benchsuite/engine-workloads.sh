# Shared by engine-v2.sh, compare-binaries.sh, s3.sh, scaling.sh and
# store-scaling.sh (sourced, not run): the three engine workloads, two
# timers and a median.

# make_workloads BINARY WORK: a key and the workloads 20000 x 4 KiB (small),
# 1000 x 1 MiB (mid) and one 2 GiB file (big/file) under WORK.
make_workloads() {
  local bin=$1 work=$2
  rm -rf "$work"; mkdir -p "$work"
  "$bin" keygen -o "$work/key" >/dev/null 2>&1
  "$bin" gen "$work/small" --count 20000 --size 4KiB --seed 1 >/dev/null 2>&1
  "$bin" gen "$work/mid" --count 1000 --size 1MiB --seed 2 >/dev/null 2>&1
  case " ${LOADS:-big} " in *" big "*) mkdir -p "$work/big"; head -c $((2 << 30)) /dev/urandom > "$work/big/file" ;; esac
}

# t COMMAND...: wall seconds of COMMAND, its output discarded.
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }

# secs COMMAND...: wall seconds of COMMAND (bash's EPOCHREALTIME, no bc),
# its output discarded; a failure prints its stderr and ends the script.
# Needs $w, a scratch folder for that stderr.
secs() {
  local s=$EPOCHREALTIME
  "$@" >/dev/null 2>"$w/err" || { echo "failed: $*" >&2; cat "$w/err" >&2; exit 1; }
  awk -v s="$s" -v e="$EPOCHREALTIME" 'BEGIN {printf "%.4f\n", e - s}'
}

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
