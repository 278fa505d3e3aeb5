#!/usr/bin/env bash
# Third device run of the ninth session: the cst:// put of 1000 x 1 MiB
# with build B (578; the remote backend's runtime with 2 workers) and
# build C (B plus a runtime worker per connection, up to the cores),
# alternated B C / C B 7 times against one `serve --store` (of C), a
# fresh store each time. .dev/ holds cryptstream-b.xz and cryptstream-c.xz.
set -u
here=$(cd "$(dirname "$0")/../../.." && pwd); cd "$here"
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT" /opt/dev
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
for x in b c; do [ -x /opt/dev/cryptstream-$x ] || { unxz .dev/cryptstream-$x.xz /opt/dev/cryptstream-$x; chmod +x /opt/dev/cryptstream-$x; }; done
b=/opt/dev/cryptstream-b; c=/opt/dev/cryptstream-c
w=/dev/shm/remote-ab; rm -rf "$w"; mkdir -p "$w"; export CRYPTSTREAM_CACHE_DIR="$w/cache"
n=${SMALL:+50}; n=${n:-1000}
"$c" keygen -o "$w/key" >/dev/null 2>&1; "$c" gen "$w/src" --count "$n" --size 1MiB --seed 1 --quiet
"$c" serve --store "$w/served" --listen 127.0.0.1:0 --token-file "$w/token" --create-token >"$w/serve.log" 2>&1 &
sp=$!; trap 'kill $sp; rm -rf "$w"' EXIT
for _ in $(seq 100); do grep -q fingerprint "$w/serve.log" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$w/serve.log" | head -1); fp=$(grep -oE '[0-9a-f]{64}' "$w/serve.log" | head -1)
one() { # BINARY -> seconds of its put
  rm -rf "$w/served"/* "$w/cache"
  "$1" store --store "cst://$addr" --token-file "$w/token" --server-fingerprint "$fp" -k "$w/key" -q init >/dev/null 2>&1
  local s e; s=$(date +%s.%N)
  "$1" store --store "cst://$addr" --token-file "$w/token" --server-fingerprint "$fp" -k "$w/key" -q put "$w/src" >/dev/null 2>&1 || echo FAILED >&2
  e=$(date +%s.%N); echo "$e - $s" | bc -l
}
{ echo "load before: $(cat /proc/loadavg)"
  for i in 1 2 3 4 5 6 7; do
    if [ $((i % 2)) = 1 ]; then tb=$(one "$b"); tc=$(one "$c"); else tc=$(one "$c"); tb=$(one "$b"); fi
    echo "pair $i: B $tb s, C $tc s, B/C $(echo "$tb / $tc" | bc -l)"
  done
  echo "load after: $(cat /proc/loadavg)"; } > "$OUT/remote-ab.txt" 2>&1
