#!/usr/bin/env bash
# Files past 4 GiB and 2 GiB for real: the two cases that left the CI test
# suite because they move gigabytes through the disk (CI now checks the same
# arithmetic with unit tests, named below).
#
#   bash benchsuite/big-files.sh [--dir DIR] [--native-mib N] [--age-mib N] [--no-age] [--quick]
#
# 1. native: a sparse file of N MiB + 4097 bytes (default 4096 MiB, so past
#    2^32) with 1 MiB random islands at its start, past 1 GiB, across the
#    4 GiB mark and at its very end is encrypted and decrypted with
#    cryptstream (all cores); the result must equal the input byte for byte,
#    keep its mode, and stay sparse. Was roundtrip.rs
#    `a_4gib_sparse_file_round_trips`; CI: format `layout::tests::
#    offsets_past_2_pow_32_and_2_pow_36_do_not_wrap`, `stream::tests::
#    chunk_indexes_past_2_pow_32_have_their_own_nonces`, engine
#    `file::tests::segments_past_2_pow_32_and_2_pow_36_land_at_their_offsets`.
# 2. age: a sparse file of N MiB + 1 byte (default 2048 MiB) goes both ways
#    with the real age: cryptstream encrypts (2 workers) and `age -d` reads
#    it; `age -e` writes one and cryptstream decrypts it (2 workers). Was
#    age_big.rs `a_two_gib_file_goes_both_ways_with_age`; CI: age
#    `tests::payload_chunks_past_2_pow_32_bytes_are_counted_and_placed_exactly`,
#    `tests::payload_chunks_past_2_pow_32_bytes_open_with_the_spec_nonce`,
#    and the boundary sizes of age.rs against the real age.
#
# --quick runs both at 64 MiB (a check that the script works, not of the
# offsets). Needs: a cryptstream build (release, or $CRYPTSTREAM), and for
# the age case age and age-keygen (apt-get install age). Prints one line per
# check and exits non-zero on the first failure.
set -euo pipefail

DIR=/var/tmp/cryptstream-big-files
NATIVE_MIB=4096
AGE_MIB=2048
AGE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --native-mib) NATIVE_MIB=$2; shift 2 ;;
    --age-mib) AGE_MIB=$2; shift 2 ;;
    --no-age) AGE=0; shift ;;
    --quick) NATIVE_MIB=64; AGE_MIB=64; shift ;;
    -h|--help) sed -n 2,28p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CS=${CRYPTSTREAM:-$ROOT/target/release/cryptstream}
[ -x "$CS" ] || { echo "build first: cargo build --release --locked -p cryptstream" >&2; exit 1; }
MIB=$((1024 * 1024))

mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "cryptstream: $("$CS" --version) ($CS); work dir $WORK"

# island FILE OFFSET LEN: LEN random bytes at OFFSET, the rest left as is.
island() {
  head -c "$3" /dev/urandom | dd of="$1" bs=1M seek="$2" oflag=seek_bytes conv=notrunc status=none
}

# allocated FILE: bytes the file takes on disk.
allocated() {
  echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") ))
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# --- 1. native --------------------------------------------------------------
LEN=$((NATIVE_MIB * MIB + 4097))
PLAIN=$WORK/sparse
truncate -s "$LEN" "$PLAIN"
MARK=$((NATIVE_MIB * MIB))
for at in 0 $((MARK / 4 + 12345)) $((MARK - MIB / 2)) $((LEN - MIB)); do
  island "$PLAIN" "$at" "$MIB"
done
chmod 640 "$PLAIN"
KEY=$WORK/key
"$CS" keygen -o "$KEY" >/dev/null
start=$(date +%s%N)
"$CS" encrypt -q -k "$KEY" "$PLAIN" "$WORK/sparse.cst"
"$CS" decrypt -q -k "$KEY" "$WORK/sparse.cst" "$WORK/back"
end=$(date +%s%N)
cmp "$PLAIN" "$WORK/back" || fail "native: the decrypted file differs from the input"
[ "$(stat -c %a "$WORK/back")" = 640 ] || fail "native: mode $(stat -c %a "$WORK/back"), not 640"
[ "$(allocated "$WORK/back")" -lt $((LEN / 2)) ] \
  || fail "native: the decrypted file is not sparse ($(allocated "$WORK/back") bytes allocated of $LEN)"
echo "ok native: $LEN bytes (past $MARK) round trip, mode kept, output sparse ($(allocated "$WORK/back") bytes allocated); $(( (end - start) / 1000000 )) ms"
rm -f "$PLAIN" "$WORK/sparse.cst" "$WORK/back"

# --- 2. age interop ---------------------------------------------------------
[ "$AGE" = 1 ] || exit 0
command -v age >/dev/null || fail "age is not installed (apt-get install age)"
LEN=$((AGE_MIB * MIB + 1))
PLAIN=$WORK/big
truncate -s "$LEN" "$PLAIN"
for at in 0 $((LEN / 2 - 1000)) $((LEN - 70000)); do
  left=$((LEN - at))
  island "$PLAIN" "$at" $((left < 3 * MIB ? left : 3 * MIB))
done
age-keygen -o "$WORK/id.txt" 2>/dev/null
RECIPIENT=$(age-keygen -y "$WORK/id.txt")
EXPECTED=$(sha256sum < "$PLAIN")
"$CS" encrypt -q -j 2 -r "$RECIPIENT" "$PLAIN" "$WORK/ours.age"
[ "$(age -d -i "$WORK/id.txt" "$WORK/ours.age" | sha256sum)" = "$EXPECTED" ] \
  || fail "age: age -d of our file differs from the input"
rm -f "$WORK/ours.age"
age -e -r "$RECIPIENT" -o "$WORK/theirs.age" "$PLAIN"
"$CS" decrypt -q -j 2 -i "$WORK/id.txt" "$WORK/theirs.age" "$WORK/back"
[ "$(stat -c %s "$WORK/back")" = "$LEN" ] || fail "age: our decrypt of age's file has the wrong length"
[ "$(sha256sum < "$WORK/back")" = "$EXPECTED" ] || fail "age: our decrypt of age's file differs"
echo "ok age: $LEN bytes both ways with $(age --version)"
