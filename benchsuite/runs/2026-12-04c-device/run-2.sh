#!/usr/bin/env bash
# Second device run of the ninth session: (1) how fast one tmpfs file
# takes 1 GiB from one writer and from four writers at once (each a
# quarter, at its own offset, as four connections of one `send` write),
# next to `iperf3 -P 4` moving 1 GiB, alternated 5 times (issue 17's
# 4-connection row sends one file); (2) cst:// next to the local store
# with build C (the remote backend's runtime with a worker per
# connection), 1000 x 1 MiB. .dev/ holds cryptstream-c.xz and the Debian
# packages bc, time, iperf3, libiperf0, libsctp1.
set -u
here=$(cd "$(dirname "$0")/../../.." && pwd); cd "$here"
OUT=${OUT:-/tmp/device-out}; mkdir -p "$OUT" /opt/dev
unxz() { python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$@"; }
c=/opt/dev/cryptstream-c
[ -x "$c" ] || { unxz .dev/cryptstream-c.xz "$c"; chmod +x "$c"; }
for deb in .dev/*.deb; do dpkg -x "$deb" /opt/dev; done
export PATH=/opt/dev/usr/bin:$PATH
export LD_LIBRARY_PATH=/opt/dev/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[ -x /usr/bin/time ] || cp /opt/dev/usr/bin/time /usr/bin/time
s=${SMALL:+64}; s=${s:-1024}
{
  echo "load before: $(cat /proc/loadavg); $s MiB per run"
  for i in 1 2 3 4 5; do
    f=/dev/shm/one-file; rm -f "$f"
    t0=$(date +%s.%N); dd if=/dev/zero of="$f" bs=1M count=$s status=none; t1=$(date +%s.%N)
    rm -f "$f"; q=$((s / 4))
    t2=$(date +%s.%N)
    for k in 0 1 2 3; do dd if=/dev/zero of="$f" bs=1M count=$q seek=$((k * q)) conv=notrunc status=none & done; wait
    t3=$(date +%s.%N); rm -f "$f"
    iperf3 -s -1 -D -B 127.0.0.1 -p 5299 >/dev/null 2>&1; sleep 0.3
    ip=$(iperf3 -c 127.0.0.1 -p 5299 -P 4 -n ${s}M -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["seconds"])')
    echo "run $i: one writer $(echo "$t1 - $t0" | bc -l) s, four writers $(echo "$t3 - $t2" | bc -l) s, iperf3 -P 4 $ip s"
  done
  echo "load after: $(cat /proc/loadavg)"
} > "$OUT/file-ceiling.txt" 2>&1
{ echo "load before: $(cat /proc/loadavg)"
  loads=t1m; [ -n "${SMALL:-}" ] && loads=small
  timeout -k 5 90 env LOADS=$loads NO_RESTIC=1 bash benchsuite/remote.sh /dev/shm 5 "$c"
  echo "rc=$? load after: $(cat /proc/loadavg)"; } > "$OUT/remote-c.txt" 2>&1
