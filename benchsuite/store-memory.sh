#!/usr/bin/env bash
# Peak RSS of the store under --max-memory 64MiB (issue 9, acceptance 5):
# put and get of one 4 GiB file; then a store of ~1,000,000 small chunks
# (made efficiently: 1.3 GB of random data with 512 B / 1 KiB / 4 KiB
# chunks), in which put of one more 256 MiB file and get of one file are
# measured. Peak RSS from /usr/bin/time -v. Usage:
#   benchsuite/store-memory.sh DIR [BINARY]
set -euo pipefail
dir=${1:?dir}; bin=$(realpath "${2:-target/release/cryptstream}")
w="$dir/cst-store-memory"; rm -rf "$w"; mkdir -p "$w"
trap 'rm -rf "$w"' EXIT
"$bin" keygen -o "$w/key" >/dev/null 2>&1
rss() { # LABEL CMD...
  local s e label=$1
  shift
  s=$(date +%s.%N)
  /usr/bin/time -v "$@" >/dev/null 2>"$w/tv" || { cat "$w/tv" >&2; exit 1; }
  e=$(date +%s.%N)
  printf '%-48s peak RSS %6d KiB  %7.2f s\n' "$label" "$(awk '/Maximum resident/ {print $6}' "$w/tv")" "$(echo "$e - $s" | bc -l)"
}
echo "# $(date -u +%FT%TZ) $(nproc) cores; $("$bin" --version); dir $dir"
st() { echo "$bin" store --store "$w/$1" --cache-dir "$w/cache" -k "$w/key" -q --max-memory 64MiB; }
head -c 4G /dev/urandom > "$w/big4g"
$(st s1) init 2>/dev/null
rss "put 4 GiB --max-memory 64MiB" $(st s1) put "$w/big4g"
rss "get 4 GiB --max-memory 64MiB" $(st s1) get big4g "$w/out1"
cmp "$w/big4g" "$w/out1/big4g" && echo "4 GiB file came back identical"
rm -rf "$w/out1" "$w/s1"
$(st s2) init --chunk-min 512 --chunk-avg 1KiB --chunk-max 4KiB 2>/dev/null
mkdir -p "$w/many" && head -c 1300M /dev/urandom > "$w/many/data"
rss "build: put 1.3 GB in ~1 KiB chunks" $(st s2) put "$w/many"
$(st s2) stat | sed 's/^/  /'
ls -l "$w"/cache/stores/*/registry.sqlite | awk '{print "  registry file: " $5 " bytes"}'
head -c 256M /dev/urandom > "$w/extra"
rss "1M-chunk store: put one more 256 MiB file" $(st s2) put "$w/extra"
rss "1M-chunk store: get that file" $(st s2) get extra "$w/out2"
cmp "$w/extra" "$w/out2/extra" && echo "file came back identical"
rss "1M-chunk store: get the 1.3 GB file" $(st s2) get many/data "$w/out3"
rss "1M-chunk store: verify (no data)" $(st s2) verify
$(st s2) stat | sed "s/^/  after: /"
