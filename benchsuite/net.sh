#!/usr/bin/env bash
# Network transfer benchmark, all on 127.0.0.1, in one run:
#   - iperf3 single stream and -P 4 (the loopback limit, no encryption);
#   - `cryptstream bench net` for 1, 10 and 50 clients (TLS 1.3);
#   - scp and rsync over ssh (a throwaway sshd on a high port, keys in a
#     temp dir), plain nc, and one `cryptstream send`, on the same file,
#     alternated, RUNS times each (medians reported);
#   - a 60 s soak: 50 clients sending in a loop, server RSS sampled.
#
# usage: bash benchsuite/net.sh [OUT_DIR] [SIZE_MIB] [SCRATCH] [RUNS]
#   OUT_DIR   raw outputs (default benchsuite/runs/<today>-net)
#   SIZE_MIB  MiB per client and of the copied file (default 469, the seed's)
#   SCRATCH   where files are written (default /dev/shm: measures the
#             network, not a disk); 10 clients need 10 x SIZE free
#   RUNS      runs of each copy tool (default 3)
# Needs: iperf3 rsync openssh-server netcat-openbsd (the script installs
# them with apt-get when missing), a release build (cargo build --release).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/benchsuite/runs/$(date -u +%Y-%m-%d)-net}
size_mib=${2:-469}
scratch=${3:-/dev/shm}
runs=${4:-3}
bin=$here/target/release/cryptstream
soak_seconds=${SOAK_SECONDS:-60}
soak_clients=${SOAK_CLIENTS:-50}
# 50 clients x SIZE would not fit in memory: the 50-client row sends
# SIZE/5 per client (the same total as 10 clients).
size50_mib=${SIZE50_MIB:-$((size_mib / 5))}

mkdir -p "$out"
[ -x "$bin" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
need=()
for tool in iperf3 rsync sshd nc scp; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3 rsync openssh-server openssh-client netcat-openbsd
fi

work=$(mktemp -d "$scratch/cst-net-bench.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

{
    echo "date: $(date -u +%FT%TZ)"
    echo "kernel: $(uname -r)"
    echo "cpus: $(nproc)"
    grep -m1 "model name" /proc/cpuinfo || true
    echo "load: $(cat /proc/loadavg)"
    echo "scratch: $scratch ($(df -h --output=fstype,avail "$scratch" | tail -1))"
    echo "tcp ulp available: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null || echo unknown)"
    echo "cryptstream: $($bin --version)"
} | tee "$out/machine.txt"

# --- iperf3 -----------------------------------------------------------------
port=$((20000 + RANDOM % 20000))
iperf3 -s -p "$port" -1 >/dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p "$port" -t 5 -J > "$out/iperf3-1.json"
iperf3 -s -p "$port" -1 >/dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p "$port" -t 5 -P 4 -J > "$out/iperf3-P4.json"
iperf_mb() { python3 -c 'import json,sys; print("%.0f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/8e6))' "$1"; }
echo "iperf3 single stream: $(iperf_mb "$out/iperf3-1.json") MB/s" | tee "$out/iperf3.txt"
echo "iperf3 -P 4:          $(iperf_mb "$out/iperf3-P4.json") MB/s" | tee -a "$out/iperf3.txt"

# --- bench net --------------------------------------------------------------
"$bin" bench net --clients 1,10 --size "${size_mib}MiB" --scratch "$work" --json > "$out/bench-net.json"
"$bin" bench net --clients 50 --size "${size50_mib}MiB" --scratch "$work" --json > "$out/bench-net-50.json"
python3 - "$out/bench-net.json" "$out/bench-net-50.json" <<'PY' | tee "$out/bench-net.txt"
import json, sys
print(f"{'clients':>7} {'per client':>10} {'total MB':>9} {'MB/s':>7} {'srv CPU':>8} {'srv RSS':>9} {'cli CPU':>8} {'cli RSS':>9} {'avg s':>7} {'min s':>7} {'max s':>7} exact")
for path in sys.argv[1:]:
    report = json.load(open(path))
    for r in report["rows"]:
        print(f"{r['clients']:>7} {report['size'] / 2**20:>7.0f}MiB {r['total_bytes'] / 1e6:>9.0f} {r['mb_per_s']:>7.0f} "
              f"{r['server_cpu_percent']:>7.0f}% {r['server_max_rss_kib'] / 1024:>6.1f}MiB {r['client_cpu_percent']:>7.0f}% "
              f"{r['client_max_rss_kib'] / 1024:>6.1f}MiB {r['client_avg_seconds']:>7.2f} {r['client_min_seconds']:>7.2f} "
              f"{r['client_max_seconds']:>7.2f} {'yes' if r['verified'] else 'NO'}")
PY

# --- the same file by scp, rsync, nc and cryptstream send -------------------
src=$work/file.bin
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$src"
dest=$work/dest
mkdir -p "$dest"

ssh_dir=$work/ssh
mkdir -p "$ssh_dir"
chmod 700 "$ssh_dir"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/user_key"
cp "$ssh_dir/user_key.pub" "$ssh_dir/authorized_keys"
ssh_port=$((40000 + RANDOM % 20000))
cat > "$ssh_dir/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host_key
AuthorizedKeysFile $ssh_dir/authorized_keys
PidFile $ssh_dir/sshd.pid
PermitRootLogin yes
PasswordAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -f "$ssh_dir/sshd_config" -D -e 2> "$out/sshd.log" &
pids+=($!)
sleep 1
ssh_opts=(-i "$ssh_dir/user_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR)

token=$work/token
serve_out=$work/serve.out
"$bin" serve --listen 127.0.0.1:0 --root "$dest" --token-file "$token" --create-token > "$serve_out" 2> "$out/serve-copy.log" &
pids+=($!)
for _ in $(seq 50); do grep -q fingerprint "$serve_out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$serve_out")
fp=$(sed -n 's/^fingerprint //p' "$serve_out")

nc_port=$((30000 + RANDOM % 10000))
timed() { # command...: prints seconds, or fails
    local start end
    start=$(date +%s.%N)
    "$@" || { echo "$* failed" >&2; return 1; }
    end=$(date +%s.%N)
    python3 -c "print('%.3f' % ($end - $start))"
}
run_scp() { scp -q -P "$ssh_port" "${ssh_opts[@]}" "$src" root@127.0.0.1:"$dest/scp.bin" && cmp -s "$src" "$dest/scp.bin"; }
run_rsync() { rsync -a -e "ssh -p $ssh_port ${ssh_opts[*]}" "$src" root@127.0.0.1:"$dest/rsync.bin" && cmp -s "$src" "$dest/rsync.bin"; }
run_nc() {
    nc -l 127.0.0.1 "$nc_port" > "$dest/nc.bin" &
    local listener=$!
    sleep 0.2
    nc -N 127.0.0.1 "$nc_port" < "$src"
    wait "$listener"
    cmp -s "$src" "$dest/nc.bin"
}
run_send() { "$bin" send "$src" --to "$addr" --server-fingerprint "$fp" --token-file "$token" --quiet --connections "${1:-4}" && cmp -s "$src" "$dest/file.bin"; }
run_send1() { run_send 1; }

: > "$out/copies.tsv"
for i in $(seq "$runs"); do
    for tool in send send1 scp rsync nc; do
        rm -f "$dest"/*.bin
        t=$(timed "run_$tool") || t=failed
        printf '%s\t%s\t%s\n' "$tool" "$i" "$t" | tee -a "$out/copies.tsv"
    done
done
python3 - "$out/copies.tsv" "$size_mib" <<'PY' | tee "$out/copies.txt"
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    tool, _, t = line.split()
    if t != "failed":
        rows[tool].append(float(t))
size = int(sys.argv[2]) * 1024 * 1024
names = {"send": "cryptstream send (TLS, 4 conn)", "send1": "cryptstream send (TLS, 1 conn)",
         "scp": "scp (ssh)", "rsync": "rsync over ssh", "nc": "nc (plain TCP)"}
print(f"{'tool':34} {'median s':>9} {'MB/s':>8}  runs")
for tool, times in rows.items():
    if not times:
        print(f"{names[tool]:34} failed")
        continue
    m = statistics.median(times)
    print(f"{names[tool]:34} {m:9.3f} {size / 1e6 / m:8.0f}  {' '.join('%.3f' % t for t in times)}")
PY
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
pids=()

# --- 60 s soak, 50 clients ----------------------------------------------------
soak=$work/soak
mkdir -p "$soak/src" "$soak/root"
for c in $(seq -w 1 "$soak_clients"); do
    head -c $((16 * 1024 * 1024 + 10#$c)) /dev/urandom > "$soak/src/c$c.bin"
done
"$bin" serve --listen 127.0.0.1:0 --root "$soak/root" --token-file "$token" > "$serve_out" 2> "$out/serve-soak.log" &
serve_pid=$!
pids+=($serve_pid)
for _ in $(seq 50); do grep -q fingerprint "$serve_out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$serve_out")
end=$(( $(date +%s) + soak_seconds ))
: > "$soak/failures"
for c in $(seq -w 1 "$soak_clients"); do
    (
        n=0
        while [ "$(date +%s)" -lt "$end" ]; do
            # A new mtime each run: an unchanged file would be skipped.
            touch "$soak/src/c$c.bin"
            "$bin" send "$soak/src/c$c.bin" --to "$addr" --server-fingerprint "$fp" --token-file "$token" --quiet --connections 2 \
                || echo "client $c run $n failed" >> "$soak/failures"
            n=$((n + 1))
        done
        echo "$n" > "$soak/runs-$c"
    ) &
done
: > "$out/soak-rss.tsv"
while [ "$(date +%s)" -lt "$end" ]; do
    sleep 5
    printf '%s\t%s\t%s\n' "$(date +%s)" \
        "$(awk '/VmRSS/ {print $2}' /proc/$serve_pid/status)" \
        "$(awk '/VmHWM/ {print $2}' /proc/$serve_pid/status)" | tee -a "$out/soak-rss.tsv"
done
wait $(jobs -p | grep -v "^$serve_pid$") 2>/dev/null || true
total_runs=$(cat "$soak"/runs-* | paste -sd+ | bc)
exact=0
for c in $(seq -w 1 "$soak_clients"); do
    cmp -s "$soak/src/c$c.bin" "$soak/root/c$c.bin" && exact=$((exact + 1))
done
{
    echo "soak: $soak_clients clients for ${soak_seconds}s, $total_runs sends of ~16 MiB, $(wc -l < "$soak/failures") failed"
    echo "files exact at the end: $exact/$soak_clients"
    echo "server peak RSS (VmHWM): $(awk '/VmHWM/ {print $2}' /proc/$serve_pid/status) KiB"
    echo "server RSS samples (KiB, every 5 s): $(cut -f2 "$out/soak-rss.tsv" | paste -sd' ')"
} | tee "$out/soak.txt"
cat "$soak/failures" >> "$out/soak.txt"

# --- a tree with a 2 GiB file, byte-exact with modes --------------------------
big=$work/big
mkdir -p "$big/src/tree/sub" "$big/root"
head -c $((2048 * 1024 * 1024)) /dev/urandom > "$big/src/tree/big2g"
: > "$big/src/tree/empty"
head -c 1 /dev/urandom > "$big/src/tree/one"
head -c 5000000 /dev/urandom > "$big/src/tree/sub/mid"
chmod 600 "$big/src/tree/big2g"
chmod 755 "$big/src/tree/sub/mid"
"$bin" serve --listen 127.0.0.1:0 --root "$big/root" --token-file "$token" > "$serve_out" 2> "$out/serve-2g.log" &
pids+=($!)
for _ in $(seq 50); do grep -q fingerprint "$serve_out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$serve_out")
"$bin" send "$big/src/tree" --to "$addr" --server-fingerprint "$fp" --token-file "$token" --json --connections 4 > "$out/tree-2GiB.json"
(cd "$big/src" && find tree -type f -printf '%p %m %s\n' | sort) > "$big/a.txt"
(cd "$big/root" && find tree -type f -printf '%p %m %s\n' | sort) > "$big/b.txt"
if diff "$big/a.txt" "$big/b.txt" && cmp "$big/src/tree/big2g" "$big/root/tree/big2g" \
    && cmp "$big/src/tree/sub/mid" "$big/root/tree/sub/mid"; then
    echo "2 GiB tree: exact (names, modes, sizes, bytes)" | tee "$out/tree-2GiB.txt"
else
    echo "2 GiB tree: DIFFERS" | tee "$out/tree-2GiB.txt"
    exit 1
fi
