#!/usr/bin/env bash
# Quiet-machine benchmarks of this session (2026-12-03, fifth session), one after another.
cd /work/main
R=benchsuite/runs
LOG=/work/bench-all7.log
# waitq and run (inline in the scripts before this one; the same code).
. benchsuite/quiet-run.sh
echo "start $(date +%T)" >> $LOG
for job in ${JOBS:-small tree remote}; do
  case $job in
    small) run 2026-12-03e-small-files env LOADS=small bash benchsuite/engine-v2.sh /dev/shm 5 ;;
    tree) run 2026-12-03e-store-tree env LOADS=tree bash benchsuite/store.sh /dev/shm 5 ;;
    s3) run 2026-12-03e-s3 bash benchsuite/s3.sh /dev/shm 5 ;;
    remote) run 2026-12-03e-remote env LOADS="t1m tree" bash benchsuite/remote.sh /dev/shm 5 ;;
    net) run 2026-12-03e-net-wire python3 benchsuite/net-wire.py benchsuite/runs/2026-12-03e-net-wire-py --size-mib 1024 --pairs 5 ;;
    tree2) run 2026-12-03e-store-tree-2 env LOADS=tree bash benchsuite/store.sh /dev/shm 5 ;;
    tree3) run 2026-12-03e-store-tree-3 env LOADS=tree bash benchsuite/store.sh /dev/shm 5 ;;
    remote3) run 2026-12-03e-remote-3 env LOADS="t1m tree" bash benchsuite/remote.sh /dev/shm 5 ;;
    small2) run 2026-12-03e-small-files-2 env LOADS=small bash benchsuite/engine-v2.sh /dev/shm 7 ;;
    s3b) run 2026-12-03e-s3-2 bash benchsuite/s3.sh /dev/shm 5 ;;
    remote2) run 2026-12-03e-remote-t1m-2 env LOADS=t1m bash benchsuite/remote.sh /dev/shm 5 ;;
    s3w) run 2026-12-03e-s3-warm env WARM_GIB=3 bash benchsuite/s3.sh /dev/shm 5 ;;
    s3c) run 2026-12-03e-s3 bash benchsuite/s3.sh /dev/shm 5 ;;
    s3wt) run 2026-12-03e-s3-warm-t1m env WARM_GIB=3 LOADS=t1m bash benchsuite/s3.sh /dev/shm 5 ;;
    s3wb) run 2026-12-03e-s3-warm-big env WARM_GIB=3 LOADS=big bash benchsuite/s3.sh /dev/shm 5 ;;
    m1) run 2026-12-03e-store-1m bash benchsuite/store-1m.sh /dev/shm ;;
    big) run 2026-12-03e-store-big env LOADS=big bash benchsuite/store.sh /dev/shm 5 ;;
  esac
done
echo ALL DONE >> $LOG
