#!/usr/bin/env bash
# One fresh SeaweedFS: put 1000 x 1 MiB, then the same get under MODE:
#   after: at once, 15 s and 45 s later and at once again;
#   freed: after writing and deleting 4 GiB in /dev/shm (5 s before, just before);
#   held:  with 2 GiB, then 6 GiB more held in /dev/shm.
# Usage: s3lone.sh after|freed|held
set -u
w=/dev/shm/s3af; port=28633; rm -rf $w; mkdir -p $w/weed
weed=/work/main/target/test-tools/seaweedfs-4.48/bin/weed
export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret-not-secret
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true CRYPTSTREAM_CACHE_DIR=$w/cache
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > $w/s3.json
B=/work/main/target/release/cryptstream
$B keygen -o $w/key >/dev/null 2>&1; $B gen $w/src/t1m --count 1000 --size 1MiB --seed 1 --quiet
"$weed" mini -dir=$w/weed -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config=$w/s3.json -s3.port=$port -s3.port.grpc=$((port+1)) -master.port=$((port+2)) -master.port.grpc=$((port+3)) -filer.port=$((port+4)) -filer.port.grpc=$((port+5)) -volume.port=$((port+6)) -volume.port.grpc=$((port+7)) -admin.port=$((port+8)) -admin.port.grpc=$((port+9)) -metricsPort=$((port+10)) -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 > $w/weed.log 2>&1 &
WP=$!; trap 'kill $WP; rm -rf $w' EXIT
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done; sleep 1
curl -sf -o /dev/null -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "http://127.0.0.1:$port/after" || { echo no bucket; exit 1; }
tk() { awk '{print $14+$15}' /proc/$WP/stat; }
st=(store --store s3://after/st -k $w/key -q)
$B "${st[@]}" init 2>/dev/null
t0=$(tk); /usr/bin/time -f "put %e s %U u %S s" $B "${st[@]}" put $w/src/t1m 2>&1 >/dev/null | grep -v stored; echo "  weed $(( $(tk) - t0 )) ticks"
g() { rm -rf $w/out; t0=$(tk); /usr/bin/time -f "get ($1): %e s %U u %S s" $B "${st[@]}" get t1m $w/out 2>&1 >/dev/null | grep -v restored; echo "  weed $(( $(tk) - t0 )) ticks"; }
case ${1:?usage: s3lone.sh after|freed|held} in
  after)
    for wait in 0 15 30 0; do sleep $wait; g "after ${wait}s more"; done ;;
  freed)
    g baseline
    head -c 4G /dev/zero > $w/fill; rm $w/fill; sleep 5; g "4 GiB freed 5 s before"
    head -c 4G /dev/zero > $w/fill; rm $w/fill; g "4 GiB freed just before"
    g "again at once" ;;
  held)
    g baseline
    head -c 2G /dev/urandom > $w/hold2g; g "2 GiB more held in /dev/shm"
    head -c 4G /dev/zero > $w/hold4g; g "6 GiB more held"
    g "again at once" ;;
esac
