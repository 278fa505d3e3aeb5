# Shared by engine-v2.sh and compare-binaries.sh (sourced, not run):
# the three engine workloads, a timer and a median.

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

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
