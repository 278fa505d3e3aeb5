#!/usr/bin/env bash
# A/B of the 2 GiB and 1000 x 1 MiB S3 get: main before the write lock (A) and main (B), one server, alternated.
set -u
w=/dev/shm/s3ab; port=28533; rm -rf $w; mkdir -p $w/weed $w/src/big
weed=/work/main/target/test-tools/seaweedfs-4.48/bin/weed
export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret-not-secret
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true CRYPTSTREAM_CACHE_DIR=$w/cache
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > $w/s3.json
"$weed" mini -dir=$w/weed -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config=$w/s3.json -s3.port=$port -s3.port.grpc=$((port+1)) -master.port=$((port+2)) -master.port.grpc=$((port+3)) -filer.port=$((port+4)) -filer.port.grpc=$((port+5)) -volume.port=$((port+6)) -volume.port.grpc=$((port+7)) -admin.port=$((port+8)) -admin.port.grpc=$((port+9)) -metricsPort=$((port+10)) -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 > $w/weed.log 2>&1 &
WP=$!; trap 'kill $WP; rm -rf $w' EXIT
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done; sleep 2
curl -sf -o /dev/null -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "http://127.0.0.1:$port/abab" || { echo no bucket; exit 1; }
B=/work/main/target/release/cryptstream; A=/work/base-cryptstream-6
$B keygen -o $w/key >/dev/null 2>&1; head -c 2G /dev/urandom > $w/src/big/file; $B gen $w/src/t1m --count 1000 --size 1MiB --seed 1 --quiet
$B store --store s3://abab/st -k $w/key -q init 2>/dev/null; $B store --store s3://abab/st -k $w/key -q put $w/src/big $w/src/t1m >/dev/null 2>&1
tk() { awk '{print $14+$15}' /proc/$WP/stat; }
for i in 1 2 3 4; do for b in $A $B; do for load in big t1m; do
  rm -rf $w/out; sync; t0=$(tk); s=$(date +%s.%N)
  /usr/bin/time -f "%U %S %M" -o $w/t $b store --store s3://abab/st -k $w/key -q get $load $w/out >/dev/null 2>&1
  e=$(date +%s.%N); echo "pair $i $load $( [ $b = $A ] && echo A-before || echo B-main ) $(echo "$e - $s" | bc) s; user sys KiB $(cat $w/t); weed $(( $(tk) - t0 )) ticks"
done; done; done
