#!/usr/bin/env bash
# Issue figures for the engine: encrypt/decrypt next to cp -r / cat, on a
# given directory (tmpfs or disk). Usage: figures.sh DIR [BINARY]
set -euo pipefail
dir=$1; bin=${2:-target/release/cryptstream}
bin=$(realpath "$bin")
w=$dir/cs-figures; rm -rf "$w"; mkdir -p "$w"; cd "$w"
trap 'cd /; rm -rf "$w"' EXIT
"$bin" keygen -o key >/dev/null
t() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); printf '%8.3f s  %s\n' "$(echo "$e - $s" | bc)" "$*"; }
"$bin" gen t1m --count 1000 --size 1MiB --seed 1 --quiet
"$bin" gen t4k --count 20000 --size 4KiB --seed 2 --quiet
head -c 2G /dev/urandom > big
echo "== 1000 x 1 MiB on $dir"
for r in 1 2 3; do
  rm -rf cp e d; sync
  t cp -r t1m cp; t "$bin" encrypt -q -k key t1m e; t "$bin" decrypt -q -k key e d
done
diff -r t1m d && echo "decrypted tree identical"
rm -rf cp e d t1m
echo "== 20000 x 4 KiB on $dir"
for r in 1 2 3; do
  rm -rf cp e e1; sync
  t cp -r t4k cp; t "$bin" encrypt -q -k key --workers 1 t4k e1; t "$bin" encrypt -q -k key t4k e
done
echo "files/s default: $(echo "20000 / $( { /usr/bin/time -f %e "$bin" encrypt -q -k key --force t4k e; } 2>&1 )" | bc)"
rm -rf cp e e1 t4k
echo "== one 2 GiB file on $dir"
for r in 1 2 3; do
  rm -f out big.cst; sync
  t sh -c "cat big > out"; rm -f out
  t "$bin" encrypt -q -k key --workers 1 big big.cst; rm -f big.cst
  t "$bin" encrypt -q -k key --workers 2 big big.cst; rm -f big.cst
  t "$bin" encrypt -q -k key --workers 1 --cipher chacha20-poly1305 big big.cst; rm -f big.cst
  t "$bin" encrypt -q -k key --workers 2 --cipher chacha20-poly1305 big big.cst
done
t "$bin" decrypt -q -k key big.cst big.dec; cmp big big.dec && echo "decrypted file identical"; rm -f big.dec big.cst
/usr/bin/time -f "peak RSS encrypting 2 GiB: %M KiB" "$bin" encrypt -q -k key big big.cst
rm -f big.cst
if command -v age >/dev/null; then
  echo "== age (sequential, one process per file) on $dir"
  age-keygen -o agekey 2>/dev/null; r=$(age-keygen -y agekey)
  t age -r "$r" -o big.age big; rm -f big.age
  "$bin" gen t1m --count 1000 --size 1MiB --seed 1 --quiet
  mkdir -p a1m; (cd t1m && find . -type d -exec mkdir -p ../a1m/{} \;)
  t sh -c "cd t1m && find . -type f -exec age -r $r -o ../a1m/{}.age {} \;"
fi
