#!/usr/bin/env bash
# A real S3 server for the tests: Ceph's RADOS Gateway (Debian's radosgw) on a one-host Ceph
# cluster (one monitor, one OSD keeping objects in memory: memstore), installed from Debian's
# packages if needed, with a `tuneforge` user and a `tuneforge-test` bucket. Prints the URL to use as
# TEST_S3_URL: http://ACCESS_KEY:SECRET_KEY@ADDRESS:PORT/BUCKET. Idempotent: a gateway already
# answering is kept (restarted only to listen elsewhere); a cluster that stopped is made anew (its
# objects were in memory). Needs root or sudo. Progress goes to stderr; stdout is only the URL.
#
#   TEST_S3_ADDRESS  where the gateway listens (default 127.0.0.1; 0.0.0.0 for network namespaces)
#   TEST_S3_PORT     its port (default 7480)
#   TEST_S3_DIR      the cluster's folder (default /var/tmp/tuneforge-s3)
#   stop             as the only argument: stops the cluster and removes its folder
set -euo pipefail
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

address=${TEST_S3_ADDRESS:-127.0.0.1}
port=${TEST_S3_PORT:-7480}
dir=${TEST_S3_DIR:-/var/tmp/tuneforge-s3}
access_key=tuneforge-test
secret_key=tuneforge-test-secret
bucket=tuneforge-test
# Clients reach a gateway listening on every address through loopback.
client_address=$([ "$address" = 0.0.0.0 ] && echo 127.0.0.1 || echo "$address")
url="http://$access_key:$secret_key@$client_address:$port/$bucket"

stop_daemons() {
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # A pid file from before a reboot may name some other process now.
    if grep -qaE 'ceph-mon|ceph-osd|radosgw' "/proc/$pid/cmdline" 2>/dev/null; then
      as_root kill "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 50); do as_root kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    as_root kill -9 "$pid" 2>/dev/null || true
    as_root rm -f "$pidfile"
  done
}
if [ "${1:-}" = stop ]; then
  stop_daemons
  as_root rm -rf "$dir"
  exit 0
fi

# Bodiless requests signed with SigV4 by curl itself (radosgw wants the empty body's hash named).
s3() {
  curl -fsS --max-time 10 --aws-sigv4 aws:amz:us-east-1:s3 --user "$access_key:$secret_key" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' "$@"
}
bucket_ready() { s3 -o /dev/null -I "http://$client_address:$port/$bucket" 2>/dev/null; }
if [ -f "$dir/address" ] && [ "$(cat "$dir/address")" = "$address:$port" ] && bucket_ready; then
  echo "$url"
  exit 0
fi

if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v ceph-mon >/dev/null; then
  echo 'installing radosgw, ceph-mon, ceph-osd (apt-get)…' >&2
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd ceph-common >&2
fi

export CEPH_CONF=$dir/ceph.conf
ceph_cmd() { as_root env CEPH_CONF="$CEPH_CONF" "$@"; }
wait_for() { # description, command…
  local what=$1
  shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$what did not come up within 60 s; logs in $dir/log" >&2
  exit 1
}

if ! { [ -f "$dir/run/mon.a.pid" ] && ceph_cmd ceph --connect-timeout 5 osd stat 2>/dev/null | grep -q '1 up'; }; then
  echo "starting a one-host Ceph cluster in $dir…" >&2
  stop_daemons
  as_root rm -rf "$dir"
  as_root mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd"
  # No authentication (a test cluster on loopback); small memory and placement-group numbers.
  as_root tee "$CEPH_CONF" >/dev/null <<EOF
[global]
fsid = $(uuidgen)
mon host = v1:127.0.0.1:6789
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = $dir/run
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# The script places the OSD in the CRUSH map itself.
osd crush update on start = false
osd class update on start = false
mon max pg per osd = 1000
mon allow pool delete = true
mon data avail crit = 0
mon data avail warn = 1

[mon.a]
mon data = $dir/mon

[osd.0]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = 2147483648
osd memory target = 536870912
osd class load list = *
osd class default list = *

[client.rgw.test]
rgw thread pool size = 32
# Deleted objects' data goes at once, not after radosgw's default two hours: the OSD keeps it in memory.
rgw gc obj min wait = 0
rgw gc processor period = 5
rgw gc processor max time = 5
rgw dns name = localhost
EOF
  ceph_cmd ceph-mon --id a --mkfs --keyring /dev/null >&2
  as_root touch "$dir/mon/keyring"
  ceph_cmd ceph-mon --id a >&2
  wait_for 'the Ceph monitor' ceph_cmd ceph --connect-timeout 5 mon stat
  osd_uuid=$(uuidgen)
  osd_id=$(ceph_cmd ceph osd create "$osd_uuid")
  ceph_cmd ceph osd crush add "osd.$osd_id" 1 root=default >&2
  ceph_cmd ceph-osd --id "$osd_id" --mkfs --osd-uuid "$osd_uuid" >&2
  ceph_cmd ceph-osd --id "$osd_id" >&2
  wait_for 'the Ceph OSD' sh -c "env CEPH_CONF='$CEPH_CONF' ceph --connect-timeout 5 osd stat | grep -q '1 up'"
fi

# The gateway: (re)started to listen where asked.
rgw_pid=$(cat "$dir/run/client.rgw.test.pid" 2>/dev/null || true)
if [ -n "$rgw_pid" ] && grep -qa radosgw "/proc/$rgw_pid/cmdline" 2>/dev/null; then
  as_root kill "$rgw_pid"
  for _ in $(seq 50); do [ -d "/proc/$rgw_pid" ] || break; sleep 0.1; done
fi
echo "starting radosgw on $address:$port…" >&2
ceph_cmd radosgw -n client.rgw.test --rgw-frontends="beast endpoint=$address:$port" >&2
echo "$address:$port" | as_root tee "$dir/address" >/dev/null
wait_for 'radosgw' curl -fsS --max-time 5 -o /dev/null "http://$client_address:$port/"
if ! ceph_cmd radosgw-admin user info --uid tuneforge >/dev/null 2>&1; then
  ceph_cmd radosgw-admin user create --uid tuneforge --display-name tuneforge --access-key "$access_key" --secret-key "$secret_key" >/dev/null
fi
# Retried: a gateway just started may drop its first requests.
make_bucket() { bucket_ready || { s3 -o /dev/null -X PUT "http://$client_address:$port/$bucket" && bucket_ready; }; }
wait_for "the bucket $bucket" make_bucket
echo "$url"
