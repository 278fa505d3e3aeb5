#!/usr/bin/env bash
# Quiet-machine benchmarks of this session, one after another.
cd /work/main
R=benchsuite/runs
waitq() { for _ in $(seq 60); do l=$(cut -d' ' -f1 /proc/loadavg); awk "BEGIN{exit !($l < 0.5)}" && return; sleep 5; done; }
run() { # NAME CMD...
  local name=$1; shift
  mkdir -p "$R/$name"
  waitq
  uptime > "$R/$name/load-before.txt"
  echo "\$ $*" > "$R/$name/command.txt"
  "$@" > "$R/$name/out.txt" 2>&1
  uptime > "$R/$name/load-after.txt"
  echo "$name done $(date +%T)" >> /work/bench-all.log
}
run 2026-12-02c-small-files env LOADS=small bash benchsuite/engine-v2.sh /dev/shm 5
waitq; uptime > /work/age-load-before.txt
bash benchsuite/age.sh --no-tree --rounds 5 --rage /work/rage/bin/rage --disk-dir /work/bench-age/disk --out $R/2026-12-02c-age > /work/age-out.txt 2>&1
uptime > /work/age-load-after.txt; echo "age done $(date +%T)" >> /work/bench-all.log
run 2026-12-02c-store-tree env LOADS=tree bash benchsuite/store.sh /dev/shm 5
run 2026-12-02c-net-wire python3 benchsuite/net-wire.py benchsuite/runs/2026-12-02c-net-wire-py --size-mib 1024 --pairs 5
run 2026-12-02c-store-1m bash benchsuite/store-1m.sh /dev/shm
run 2026-12-02c-remote env LOADS=t1m bash benchsuite/remote.sh /dev/shm 5
echo ALL DONE >> /work/bench-all.log
