#!/usr/bin/env bash
# Issue figures for the process engine and the I/O strategies: every engine
# (threads, processes) x every --io (read, pread, mmap, auto), side by side in
# one session, on three workloads: 5000 x 1 MB, 20000 x 4 KiB, one 2 GiB file.
#
# Usage: bash benchsuite/engine-matrix.sh DIR [RUNS] [BINARY]
#
# DIR is where the workloads and outputs live (a tmpfs such as /dev/shm, or a
# folder on disk). Each rep runs every configuration once, in turn, so that
# drift in the machine hits every configuration alike. Before each timed
# command the previous output is removed and `sync` runs (not timed), so that
# on disk no configuration pays for another one's writeback. Encrypt and
# decrypt are both timed; the decrypted output is compared with the input
# once per configuration.
#
# Prints one CSV row per command (DIR/engine-matrix.csv keeps them) and then a
# table of medians per workload: wall seconds, MB/s, CPU seconds, and the
# ratio to threads+pread (the default).
set -euo pipefail
dir=${1:?usage: engine-matrix.sh DIR [RUNS] [BINARY]}
runs=${2:-3}
bin=$(realpath "${3:-target/release/cryptstream}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
w=$dir/cs-engine-matrix
rm -rf "$w"; mkdir -p "$w"
trap 'rm -rf "$w"' EXIT
csv=$dir/engine-matrix.csv
echo "workload,location,op,engine,io,run,wall_s,user_s,sys_s,maxrss_kib" > "$csv"
loc=$(findmnt -n -o FSTYPE -T "$dir" 2>/dev/null || stat -f -c %T "$dir")

"$bin" keygen -o "$w/key" >/dev/null
declare -A bytes=([mb]=5000000000 [kb]=81920000 [big]=2147483648)
"$bin" gen "$w/mb" --count 5000 --size 1MB --seed 1 --quiet
"$bin" gen "$w/kb" --count 20000 --size 4KiB --seed 2 --quiet
"$bin" gen "$w/big" --count 1 --size 2GiB --seed 3 --quiet

timed() { # op engine io run -- command...
    local op=$1 e=$2 io=$3 r=$4; shift 5
    sync
    /usr/bin/time -o "$w/time" -f '%e,%U,%S,%M' "$@" >/dev/null 2>"$w/err" ||
        { cat "$w/err" >&2; echo "failed: $*" >&2; exit 1; }
    local out; out=$(cat "$w/time")
    [ "$r" = 0 ] && return 0 # the warm-up run is not reported
    echo "$wl,$loc,$op,$e,$io,$r,$out" | tee -a "$csv"
}

for wl in mb kb big; do
    for r in $(seq 0 "$runs"); do # run 0 is the warm-up, not reported
        for e in threads processes; do
            for io in read pread mmap auto; do
                rm -rf "$w/out" "$w/dec"
                timed encrypt $e $io $r -- "$bin" encrypt -q -k "$w/key" --engine $e --io $io "$w/$wl" "$w/out"
                timed decrypt $e $io $r -- "$bin" decrypt -q -k "$w/key" --engine $e --io $io "$w/out" "$w/dec"
                if [ "$r" = 1 ]; then diff -r "$w/$wl" "$w/dec" >/dev/null || { echo "MISMATCH $wl $e $io" >&2; exit 1; }; fi
            done
        done
    done
    rm -rf "$w/out" "$w/dec" "$w/$wl"
done

python3 "$here/engine-matrix.py" "$csv" mb=${bytes[mb]} kb=${bytes[kb]} big=${bytes[big]}
