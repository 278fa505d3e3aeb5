#!/usr/bin/env bash
# A/B of two servers for the remote tree get: server A (/tmp/cs-b, before
# the spare change) and server B (/tmp/cs-c, after), each with its own
# store holding the same 80,000-file tree; one client build (/tmp/cs-c);
# gets alternated A B / B A, REPS reps; median of the per-rep ratios A/B.
set -euo pipefail
reps=${1:-7}
w=/dev/shm/srv-ab; rm -rf "$w"; mkdir -p "$w"; cd "$w"
c=/tmp/cs-c
$c keygen -o key >/dev/null 2>&1
$c gen tree --count 80000 --size-dist lognormal:3KiB --content text --depth 2 --seed 3 --quiet
start() { # NAME BINARY
  "$2" serve --store "$w/served-$1" --listen 127.0.0.1:0 --token-file "$w/token-$1" --create-token >"$w/serve-$1.log" 2>&1 &
  for _ in $(seq 100); do grep -q fingerprint "$w/serve-$1.log" 2>/dev/null && break; sleep 0.1; done
}
start a /tmp/cs-b; start b /tmp/cs-c
trap 'pkill -f "serve --store $w" || true; rm -rf "$w"' EXIT
cli() { # NAME ARGS...
  local n=$1; shift
  local addr fp
  addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$w/serve-$n.log" | head -1); fp=$(grep -oE '[0-9a-f]{64}' "$w/serve-$n.log" | head -1)
  CRYPTSTREAM_CACHE_DIR="$w/cache-$n" $c store --store "cst://$addr" --token-file "$w/token-$n" --server-fingerprint "$fp" -k key -q "$@" >/dev/null
}
for n in a b; do cli $n init 2>/dev/null; cli $n put tree; done
one() { rm -rf "$w/out"; local s=$EPOCHREALTIME; cli "$1" get tree "$w/out"; awk -v s="$s" -v e="$EPOCHREALTIME" 'BEGIN {printf "%.4f", e - s}'; }
r=()
for i in $(seq "$reps"); do
  if [ $((i % 2)) = 1 ]; then a=$(one a); b=$(one b); else b=$(one b); a=$(one a); fi
  r+=("$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}')")
  echo "rep $i: server A (before) $a s, server B (after) $b s"
done
echo "median of A/B: $(printf '%s\n' "${r[@]}" | sort -g | awk '{x[NR]=$1} END {print x[int((NR+1)/2)]}')"
