#!/usr/bin/env bash
# One fresh SeaweedFS holding a 2 GiB file: alternated lone gets of it by
# binaries A and B (PAIRS), each after WARM_GIB GiB written and deleted in /dev/shm.
set -u
A=${A:-/work/base-cryptstream-8} B=${B:-/work/falloc-cryptstream} PAIRS=${PAIRS:-4} WARM_GIB=${WARM_GIB:-3}
w=/dev/shm/s3fa; port=28733; rm -rf $w; mkdir -p $w/weed
weed=/work/main/target/test-tools/seaweedfs-4.48/bin/weed
export AWS_ACCESS_KEY_ID=benchaccess AWS_SECRET_ACCESS_KEY=benchsecret-not-secret
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true CRYPTSTREAM_CACHE_DIR=$w/cache
printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > $w/s3.json
$A keygen -o $w/key >/dev/null 2>&1; mkdir -p $w/src/big && head -c 2G /dev/urandom > $w/src/big/file && $A gen $w/src/t1m --count 1000 --size 1MiB --seed 1 --quiet
"$weed" mini -dir=$w/weed -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config=$w/s3.json -s3.port=$port -s3.port.grpc=$((port+1)) -master.port=$((port+2)) -master.port.grpc=$((port+3)) -filer.port=$((port+4)) -filer.port.grpc=$((port+5)) -volume.port=$((port+6)) -volume.port.grpc=$((port+7)) -admin.port=$((port+8)) -admin.port.grpc=$((port+9)) -metricsPort=$((port+10)) -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 > $w/weed.log 2>&1 &
WP=$!; trap "kill $WP; wait $WP; rm -rf $w" EXIT
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done; sleep 1
curl -sf -o /dev/null -X PUT --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "http://127.0.0.1:$port/fabench" || { echo no bucket; exit 1; }
st=(store --store s3://fabench/st -k $w/key -q)
$A "${st[@]}" init 2>/dev/null
$A "${st[@]}" put $w/src/${LOAD:-big} >/dev/null 2>&1 || { echo put failed; exit 1; }
[ -n "${HOLD:-}" ] || rm -f $w/src/big/file
warm() { [ "$WARM_GIB" -gt 0 ] && { head -c ${WARM_GIB}G /dev/zero > $w/fill; rm $w/fill; }; }
g() { rm -rf $w/out; warm; /usr/bin/time -f "$1: %e s %U u %S s, %R minor faults, %M KiB" $2 "${st[@]}" get ${LOAD:-big} $w/out 2>&1 >/dev/null | grep -v restored; }
for i in $(seq $PAIRS); do g A $A; g B $B; done
