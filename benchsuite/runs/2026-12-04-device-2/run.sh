#!/usr/bin/env bash
# The second device run of 2026-12-04: the store's put before and after
# DECISIONS 575 (files up to 8 MiB read and cut on the workers), both
# builds alternated, at 1..16 workers; then cst:// next to the local store
# with the new build. The builds travel xz-compressed in .dev/ (A: main
# before 575, 50810e2; B: with it, aac746f), stripped, as in the first run.
set -u
here=$(cd "$(dirname "$0")/../../.." && pwd); cd "$here"
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT" /opt/dev
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
a=/opt/dev/cryptstream-a; b=/opt/dev/cryptstream-b
[ -x "$a" ] || { unxz .dev/cryptstream.xz "$a"; chmod +x "$a"; }
[ -x "$b" ] || { unxz .dev/cryptstream-b.xz "$b"; chmod +x "$b"; }
for deb in .dev/bc_*.deb .dev/time_*.deb; do dpkg -x "$deb" /opt/dev; done
export PATH=/opt/dev/usr/bin:$PATH
[ -x /usr/bin/time ] || cp /opt/dev/usr/bin/time /usr/bin/time
part() { # NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local s=$SECONDS
  { echo "\$ $*"; echo "load before: $(cat /proc/loadavg)"; } > "$OUT/$name.txt"
  timeout -k 5 "$limit" "$@" >> "$OUT/$name.txt" 2>&1
  echo "rc=$? in $((SECONDS - s)) s; load after: $(cat /proc/loadavg)" >> "$OUT/$name.txt"
}
part ab-t1m 85 env LOADS=t1m WORKERS="1 2 4 8 16" bash benchsuite/store-scaling.sh /dev/shm 3 "$a" "$b"
part ab-tree 115 env LOADS=tree WORKERS="1 4 16" bash benchsuite/store-scaling.sh /dev/shm 3 "$a" "$b"
part remote 70 env LOADS=t1m NO_RESTIC=1 bash benchsuite/remote.sh /dev/shm 5 "$b"
