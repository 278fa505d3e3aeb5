#!/usr/bin/env bash
# The remote store (issue 18, acceptance 5): put and get through
# `cst://127.0.0.1:PORT` (a `serve --store` on this machine) next to the
# same commands on a local store, and next to restic over SFTP to
# 127.0.0.1 (Debian packages no restic REST server), same data, same run.
# Pairs alternate (local, cst, restic / restic, cst, local); per row: median
# seconds of each, the median of the per-pair ratios local/cst (>= 0.8:
# cst:// within 80% of local) and restic/cst (> 1: faster than restic), and
# the peak RSS of the client and of the server (serve; sshd's sftp-server
# is not counted), and what the server logged for each cst:// command:
# sessions (connections), objects created, requests (each one round trip
# for the client: a create with its bytes and commit counts one), bytes
# received and sent. Every restore is checked with diff -r. LOADS picks the
# workloads (default "t1m tree": 1000 x 1 MiB, and 80,000 source-like
# files as in store.sh; "small", 50 x 1 MiB, checks the script).
# NO_RESTIC=1 leaves restic out (a machine without sshd or restic): the
# restic columns then read 0. Usage:
#   [LOADS="t1m tree"] [NO_RESTIC=1] benchsuite/remote.sh DIR [REPS] [BINARY]
set -euo pipefail
dir=${1:?dir}; reps=${2:-5}; bin=$(realpath "${3:-target/release/cryptstream}")
no_restic=${NO_RESTIC:-}
if [ -z "$no_restic" ]; then
  for t in restic sshd ssh-keygen; do command -v "$t" >/dev/null || { echo "$t is missing (apt-get install -y restic openssh-server)" >&2; exit 1; }; done
fi
w="$dir/cst-remote-bench"; rm -rf "$w"; mkdir -p "$w"
"$bin" keygen -o "$w/key" >/dev/null 2>&1
printf 'bench-password\n' > "$w/pass"
export RESTIC_PASSWORD_FILE="$w/pass" RESTIC_CACHE_DIR="$w/restic-cache" CRYPTSTREAM_CACHE_DIR="$w/cst-cache"

# A throwaway sshd on 127.0.0.1 for restic's SFTP backend.
ssh_dir="$w/ssh"; mkdir -p "$ssh_dir"; chmod 700 "$ssh_dir"
if [ -z "$no_restic" ]; then
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/host"
ssh-keygen -q -t ed25519 -N "" -f "$ssh_dir/user"
cp "$ssh_dir/user.pub" "$ssh_dir/authorized_keys"
ssh_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$ssh_dir/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host
AuthorizedKeysFile $ssh_dir/authorized_keys
PidFile $ssh_dir/sshd.pid
PasswordAuthentication no
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -f "$ssh_dir/sshd_config" -E "$ssh_dir/log"
ssh_cmd="ssh -p $ssh_port -i $ssh_dir/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1 -s sftp"
fi

# The store server.
"$bin" serve --store "$w/served" --listen 127.0.0.1:0 --token-file "$w/token" --create-token >"$w/serve.log" 2>&1 &
serve_pid=$!
cleanup() { kill "$serve_pid" 2>/dev/null || true; kill "$(cat "$ssh_dir/sshd.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$w"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q fingerprint "$w/serve.log" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -oE '127\.0\.0\.1:[0-9]+' "$w/serve.log" | head -1)
fp=$(grep -oE '[0-9a-f]{64}' "$w/serve.log" | head -1)

mkdir -p "$w/src"
loads=${LOADS:-t1m tree}
case " $loads " in *" small "*) "$bin" gen "$w/src/small" --count 50 --size 1MiB --seed 1 --quiet ;; esac
case " $loads " in *" t1m "*) "$bin" gen "$w/src/t1m" --count 1000 --size 1MiB --seed 1 --quiet ;; esac
case " $loads " in *" tree "*) "$bin" gen "$w/src/tree" --count 80000 --size-dist lognormal:3KiB --content text --depth 2 --seed 3 --quiet ;; esac
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }
timed() { # CMD... -> "SECONDS KIB USER SYS" (the client's CPU seconds)
  local s e
  s=$(date +%s.%N)
  /usr/bin/time -f '%M %U %S' -o "$w/rss" "$@" >/dev/null 2>"$w/err" || { cat "$w/err" >&2; exit 1; }
  e=$(date +%s.%N)
  echo "$(echo "$e - $s" | bc -l) $(tail -1 "$w/rss")"
}
run_local() { # SRC NAME
  rm -rf "$w/store" "$w/out" "$w/cst-cache"
  "$bin" store --store "$w/store" -k "$w/key" -q init 2>/dev/null
  timed "$bin" store --store "$w/store" -k "$w/key" -q put "$1"
  timed "$bin" store --store "$w/store" -k "$w/key" -q get "$2" "$w/out"
  diff -r -q "$1" "$w/out/$2" >/dev/null || { echo "local restore differs" >&2; exit 1; }
  rm -rf "$w/store" "$w/out"
}
# What the server logged since line $1 of its log: "S sessions, O objects, R requests, IN bytes in, OUT bytes out".
serve_stats() {
  sleep 0.3 # the client's sessions end as it exits
  tail -n +"$(($1 + 1))" "$w/serve.log" | awk '/object\(s\) created/ {
      s++; o += $4; i += $7; r += $10; x += $12 }
    END { printf "%d sessions, %d objects, %d requests, %d bytes in, %d bytes out\n", s, o, r, i, x }'
}
remote() { "$bin" store --store "cst://$addr" --token-file "$w/token" --server-fingerprint "$fp" -k "$w/key" -q "$@"; }
serve_ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; }
run_cst() { # SRC NAME
  rm -rf "$w/served"/* "$w/out" "$w/cst-cache"
  remote init 2>/dev/null
  local mark
  mark=$(wc -l <"$w/serve.log")
  local op o t0
  for op in put get; do
    mark=$(wc -l <"$w/serve.log"); t0=$(serve_ticks)
    if [ "$op" = put ]; then
      o=$(timed "$bin" store --store "cst://$addr" --token-file "$w/token" --server-fingerprint "$fp" -k "$w/key" -q put "$1") || exit 1
    else
      o=$(timed "$bin" store --store "cst://$addr" --token-file "$w/token" --server-fingerprint "$fp" -k "$w/key" -q get "$2" "$w/out") || exit 1
    fi
    # The line of timed, and the server's CPU seconds for the command.
    echo "$o $(echo "($(serve_ticks) - $t0) / $(getconf CLK_TCK)" | bc -l)"
    echo "$2 $op: $(serve_stats "$mark")" >>"$w/requests"
  done
  diff -r -q "$1" "$w/out/$2" >/dev/null || { echo "cst:// restore differs" >&2; exit 1; }
  rm -rf "$w/out"
}
run_restic() { # SRC
  if [ -n "$no_restic" ]; then echo "0 0 0 0"; echo "0 0 0 0"; return; fi
  rm -rf "$w/repo" "$w/out" "$w/restic-cache"
  local repo=(-o "sftp.command=$ssh_cmd" --repo "sftp:root@127.0.0.1:$w/repo")
  restic -q "${repo[@]}" init >/dev/null
  timed restic -q "${repo[@]}" backup "$1"
  timed restic -q "${repo[@]}" restore latest --target "$w/out"
  diff -r -q "$1" "$w/out$1" >/dev/null || { echo "restic restore differs" >&2; exit 1; }
  rm -rf "$w/repo" "$w/out"
}
echo "# $(date -u +%FT%TZ) $(uname -r) $(nproc) cores; $("$bin" --version); $( [ -n "$no_restic" ] && echo "no restic" || restic version | cut -d' ' -f1-2); dir $dir; $reps pairs; load $(cut -d' ' -f1-3 /proc/loadavg)"
for load in $loads; do
  src="$w/src/$load"
  declare -A TT=(); declare -A RATIO_L=(); declare -A RATIO_R=(); declare -A RSS=()
  for i in $(seq "$reps"); do
    if [ $((i % 2)) = 1 ]; then l=$(run_local "$src" "$load"); c=$(run_cst "$src" "$load"); r=$(run_restic "$src")
    else r=$(run_restic "$src"); c=$(run_cst "$src" "$load"); l=$(run_local "$src" "$load"); fi
    k=1
    for op in put get; do
      read -r lt lk lu lsy <<<"$(echo "$l" | sed -n "${k}p")"
      read -r ct ck cu csy cserv <<<"$(echo "$c" | sed -n "${k}p")"
      read -r rt rk ru rsy <<<"$(echo "$r" | sed -n "${k}p")"
      TT[l$op]+="$lt "; TT[c$op]+="$ct "; TT[r$op]+="$rt "
      RATIO_L[$op]+="$(echo "$lt / $ct" | bc -l) "; RATIO_R[$op]+="$(echo "$rt / $ct" | bc -l) "
      for x in "l $lk" "c $ck" "r $rk"; do
        set -- $x; [ "$2" -gt "${RSS[$1$op]:-0}" ] && RSS[$1$op]=$2
      done
      # The client's user / system CPU seconds: a system time far above
      # the others' is the slow tmpfs mode of DECISIONS 561.
      echo "raw $load pair $i $op local ${lt}s (${lu}u ${lsy}s) cst ${ct}s (${cu}u ${csy}s, server $(printf '%.2f' "$cserv")) restic-sftp ${rt}s (${ru}u ${rsy}s)"
      k=$((k+1))
    done
  done
  serve_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")
  printf '\n| %s | local s | cst:// s | restic sftp s | local/cst (>= 0.8) | restic/cst (> 1) | RSS client local / cst / restic (KiB) |\n|---|---|---|---|---|---|---|\n' "$load"
  for op in put get; do
    printf '| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %s / %s / %s |\n' "$op" \
      "$(echo "${TT[l$op]}" | tr ' ' '\n' | grep . | median)" \
      "$(echo "${TT[c$op]}" | tr ' ' '\n' | grep . | median)" \
      "$(echo "${TT[r$op]}" | tr ' ' '\n' | grep . | median)" \
      "$(echo "${RATIO_L[$op]}" | tr ' ' '\n' | grep . | median)" \
      "$(echo "${RATIO_R[$op]}" | tr ' ' '\n' | grep . | median)" \
      "${RSS[l$op]:-0}" "${RSS[c$op]:-0}" "${RSS[r$op]:-0}"
  done
  echo "serve peak RSS so far (VmHWM): $serve_hwm KiB"
  echo "server's count per cst:// command (last pair):"; grep "^$load " "$w/requests" | tail -2 | sed 's/^/  /'
  unset TT RATIO_L RATIO_R RSS
done
echo "# end load $(cut -d' ' -f1-3 /proc/loadavg)"
