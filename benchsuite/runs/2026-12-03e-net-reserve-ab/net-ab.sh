#!/usr/bin/env bash
# Alternated one-file sends (1 GiB, CONN connections) to a fresh `serve` of
# binary A, then B, PAIRS times; receiver and source on /dev/shm.
set -u
A=${A:-/work/base-cryptstream-8} B=${B:-/work/new-cryptstream-573} PAIRS=${PAIRS:-6} CONN=${CONN:-4}
w=/dev/shm/netab; rm -rf $w; mkdir -p $w; head -c 1G /dev/urandom > $w/file
trap 'rm -rf $w' EXIT
one() { # LABEL BIN
  local bin=$2 root=$w/root; rm -rf $root $w/serve.out $w/token; mkdir -p $root
  $bin serve --listen 127.0.0.1:0 --root $root --token-file $w/token --create-token > $w/serve.out 2>$w/serve.log &
  local sp=$!
  for _ in $(seq 100); do grep -q fingerprint $w/serve.out 2>/dev/null && break; sleep 0.05; done
  local addr fp; addr=$(awk '/^listening/{print $3}' $w/serve.out); fp=$(awk '/^fingerprint/{print $2}' $w/serve.out)
  local c0; c0=$(awk '{print $14+$15}' /proc/$sp/stat)
  local s; s=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o $w/ct $bin send $w/file --to "$addr" --token-file $w/token --server-fingerprint "$fp" --connections $CONN --quiet >/dev/null 2>$w/err || { cat $w/err; }
  local e; e=$(date +%s.%N)
  local c1; c1=$(awk '{print $14+$15}' /proc/$sp/stat)
  local ss; ss=$(awk '{printf "%.2fu %.2fs", $14/100, $15/100}' /proc/$sp/stat)
  kill -INT $sp; wait $sp
  cmp -s $w/file $root/file || echo "$1: received file differs"
  printf '%s %.3f s  server cpu %.2f s (%s)  client %s\n' "$1" "$(echo "$e - $s" | bc -l)" "$(echo "($c1 - $c0)/100" | bc -l)" "$ss" "$(cat $w/ct)"
}
for i in $(seq $PAIRS); do one A $A; one B $B; done
