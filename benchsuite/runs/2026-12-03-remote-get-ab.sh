#!/usr/bin/env bash
# A/B of a cst:// get of 1000 x 1 MiB: base vs new (server and client of the same build)
set -eu
w=/dev/shm/g; cd $w
N=/work/main/target/release/cryptstream; B=${BASE:-/work/base-cryptstream}
[ -d src ] || $N gen src --count 1000 --size 1MiB --seed 1 --quiet
[ -f key ] || $N keygen -o key >/dev/null 2>&1
for b in $B $N; do
  tag=$(basename $b); rm -rf srv-$tag; 
  $b serve --store srv-$tag --listen 127.0.0.1:0 --token-file tok-$tag --create-token > log-$tag 2>&1 &
  echo $! > pid-$tag
done
sleep 1
for b in $B $N; do tag=$(basename $b)
  addr=$(grep -oE '127\.0\.0\.1:[0-9]+' log-$tag | head -1); fp=$(grep -oE '[0-9a-f]{64}' log-$tag | head -1)
  echo "$addr $fp" > a-$tag
  CRYPTSTREAM_CACHE_DIR=$w/c-$tag $b store --store cst://$addr --token-file tok-$tag --server-fingerprint $fp -k key -q init 2>/dev/null
  CRYPTSTREAM_CACHE_DIR=$w/c-$tag $b store --store cst://$addr --token-file tok-$tag --server-fingerprint $fp -k key -q put src > /dev/null 2>&1
done
for i in 1 2 3 4 5; do for b in $B $N; do tag=$(basename $b); read addr fp < a-$tag
  rm -rf out; /usr/bin/time -f "$tag get %e s %U u %S s" env CRYPTSTREAM_CACHE_DIR=$w/c-$tag $b store --store cst://$addr --token-file tok-$tag --server-fingerprint $fp -k key -q get latest out 2>&1 | tail -1
done; done
for b in $B $N; do kill $(cat pid-$(basename $b)); done
