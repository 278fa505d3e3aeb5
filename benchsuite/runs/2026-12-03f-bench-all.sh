#!/usr/bin/env bash
# Quiet-machine benchmarks of this session (2026-12-03, sixth session), one after another.
cd /work/main
R=benchsuite/runs
LOG=/work/bench-all8.log
. benchsuite/quiet-run.sh
echo "start $(date +%T)" >> $LOG
for job in ${JOBS:-small age}; do
  case $job in
    small) run 2026-12-03f-small-files env LOADS=small bash benchsuite/engine-v2.sh /dev/shm 5 ;;
    small2) run 2026-12-03f-small-files-2 env LOADS=small bash benchsuite/engine-v2.sh /dev/shm 7 ;;
    smalldisk) run 2026-12-03f-small-files-disk env LOADS=small bash benchsuite/engine-v2.sh /work/bench-small 5 ;;
    age) run 2026-12-03f-age bash benchsuite/age.sh --no-tree --rounds 5 --rage /work/rage/bin/rage --disk-dir /work/bench-age/disk --out benchsuite/runs/2026-12-03f-age-results ;;
    tree) run 2026-12-03f-store-tree env LOADS=tree bash benchsuite/store.sh /dev/shm 5 ;;
    big) run 2026-12-03f-store-big env LOADS=big bash benchsuite/store.sh /dev/shm 5 ;;
    remote) run 2026-12-03f-remote env LOADS="t1m tree" bash benchsuite/remote.sh /dev/shm 5 ;;
    s3w) run 2026-12-03f-s3-warm env WARM_GIB=3 bash benchsuite/s3.sh /dev/shm 5 ;;
  esac
done
echo ALL DONE >> $LOG
