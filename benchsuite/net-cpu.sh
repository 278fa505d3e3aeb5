#!/usr/bin/env bash
# CPU seconds of each end of one transfer, for comparing two builds on a
# machine that is not quiet (compare CPU seconds, not wall time):
# `serve` and `send --connections CONN` of one SIZE_MIB file over
# 127.0.0.1, tmpfs to tmpfs, each end under /usr/bin/time, the binaries
# interleaved RUNS times. Prints, per run: the binary, server and client
# CPU seconds (user + sys) and peak RSS, their voluntary context
# switches, the wall time of the send, and whether the copy is exact.
#
# usage: bash benchsuite/net-cpu.sh [-c CONN] [-s SIZE_MIB] [-r RUNS] [-d SCRATCH] BIN...
#   e.g. bash benchsuite/net-cpu.sh -r 3 /tmp/before/cryptstream target/release/cryptstream
set -euo pipefail

conn=1 size=1024 runs=3 scratch=/dev/shm/net-cpu
while getopts c:s:r:d: opt; do
    case $opt in
    c) conn=$OPTARG ;;
    s) size=$OPTARG ;;
    r) runs=$OPTARG ;;
    d) scratch=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-c CONN] [-s SIZE_MIB] [-r RUNS] [-d SCRATCH] BIN..." >&2; exit 2; }

mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
src=$scratch/file
head -c "$((size << 20))" /dev/urandom >"$src"
fmt='%e %U %S %M %w'

one() {
    local bin=$1 root=$scratch/root out=$scratch/serve.out
    rm -rf "$root" "$out"
    mkdir -p "$root"
    /usr/bin/time -f "$fmt" -o "$scratch/server.time" "$bin" serve --listen 127.0.0.1:0 \
        --root "$root" --token-file "$scratch/token" --create-token >"$out" 2>"$scratch/serve.log" &
    local timed=$!
    for _ in $(seq 100); do grep -q fingerprint "$out" 2>/dev/null && break; sleep 0.05; done
    local addr fp
    addr=$(awk '/^listening/{print $3}' "$out")
    fp=$(awk '/^fingerprint/{print $2}' "$out")
    /usr/bin/time -f "$fmt" -o "$scratch/client.time" "$bin" send "$src" --to "$addr" \
        --token-file "$scratch/token" --server-fingerprint "$fp" --connections "$conn" --quiet
    kill -INT "$(pgrep -P "$timed")"
    wait "$timed" || true
    local exact=no
    cmp -s "$src" "$root/file" && exact=yes
    read -r _ su ss srss scs <<<"$(tail -1 "$scratch/server.time")"
    read -r cw cu cs crss ccs <<<"$(tail -1 "$scratch/client.time")"
    printf '%s server %.2f s %d KiB %d csw  client %.2f s %d KiB %d csw  wall %s s  exact %s\n' \
        "$bin" "$(awk "BEGIN{print $su + $ss}")" "$srss" "$scs" "$(awk "BEGIN{print $cu + $cs}")" "$crss" "$ccs" "$cw" "$exact"
}

echo "# $(date -u +%FT%TZ) size ${size} MiB, --connections $conn, load $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$runs"); do
    for bin in "$@"; do
        one "$bin"
    done
done
