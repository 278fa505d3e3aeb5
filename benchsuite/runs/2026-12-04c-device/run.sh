#!/usr/bin/env bash
# The device run of the ninth session (2026-12-04): several packs
# committing at once in a put (DECISIONS 578) on 16 cores. The builds
# travel stripped and xz-compressed in .dev/ (A: 1b383f5, one pack in
# flight; B: with 578), with SeaweedFS's `weed` (.dev/weed.xz) and the
# Debian packages bc, time and restic, unpacked under /opt/dev.
# Parts: S3 next to restic with B (issue 16, 4), cst:// next to the local
# store with B (issue 18, 5; no sshd there, so no restic row), and the
# local put of A and B alternated at 2, 8 and 16 workers. SMALL=1 runs
# each part on small sizes (a check of the script on the 2-core machine).
set -u
here=$(cd "$(dirname "$0")/../../.." && pwd); cd "$here"
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT" /opt/dev
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
a=/opt/dev/cryptstream-a; b=/opt/dev/cryptstream-b
[ -x "$a" ] || { unxz .dev/cryptstream-a.xz "$a"; chmod +x "$a"; }
[ -x "$b" ] || { unxz .dev/cryptstream-b.xz "$b"; chmod +x "$b"; }
[ -x /opt/dev/weed ] || { unxz .dev/weed.xz /opt/dev/weed; chmod +x /opt/dev/weed; }
for deb in .dev/bc_*.deb .dev/time_*.deb .dev/restic_*.deb; do dpkg -x "$deb" /opt/dev; done
export PATH=/opt/dev/usr/bin:$PATH
[ -x /usr/bin/time ] || cp /opt/dev/usr/bin/time /usr/bin/time
{ date -u +%FT%TZ; nproc; grep -m1 'model name' /proc/cpuinfo; free -g | head -2; "$b" --version; restic version; echo "load: $(cat /proc/loadavg)"; } > "$OUT/machine.txt" 2>&1
part() { # NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local s=$SECONDS
  { echo "\$ $*"; echo "load before: $(cat /proc/loadavg)"; } > "$OUT/$name.txt"
  timeout -k 5 "$limit" "$@" >> "$OUT/$name.txt" 2>&1
  echo "rc=$? in $((SECONDS - s)) s; load after: $(cat /proc/loadavg)" >> "$OUT/$name.txt"
}
if [ -n "${SMALL:-}" ]; then
  part s3 150 env LOADS=t1m WEED=/opt/dev/weed bash benchsuite/s3.sh /dev/shm 1 "$b"
  part remote 120 env LOADS=small NO_RESTIC=1 bash benchsuite/remote.sh /dev/shm 1 "$b"
  part ab-t1m 120 env LOADS=t1m WORKERS="2" bash benchsuite/store-scaling.sh /dev/shm 1 "$a" "$b"
else
  part s3 200 env LOADS="t1m big" WEED=/opt/dev/weed bash benchsuite/s3.sh /dev/shm 3 "$b"
  part remote 100 env NO_RESTIC=1 bash benchsuite/remote.sh /dev/shm 5 "$b"
  part ab-t1m 60 env LOADS=t1m WORKERS="2 8 16" bash benchsuite/store-scaling.sh /dev/shm 3 "$a" "$b"
fi
echo "all parts done in $SECONDS s" >> "$OUT/machine.txt"
