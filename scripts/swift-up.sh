#!/usr/bin/env bash
# swift-up.sh DATA_DIR
# swift-up.sh --install-only
#
# Start a real single-node OpenStack Swift (Debian bookworm packages, Swift
# 2.30) on 127.0.0.1 for Coffer's Swift backup store tests: memcached, the
# proxy (tempauth; tempurl, slo, bulk, ...), object, container and account
# servers and the container/object updaters, one replica on one device,
# everything under DATA_DIR (etc/ with its own swift.conf and rings, node/,
# log/, run/); nothing in /etc is used or changed. Recipe:
# ../shared/docs/object-storage-for-tests.md, section 1. ~5 s to ready
# (~8 s the first time, rings included), ~650 MB RSS.
#
# Accounts (tempauth, on http://127.0.0.1:PROXY/auth/v1.0):
# test:tester/testing (.admin of AUTH_test), test:tester2/testing2,
# test:tester3/testing3 (no .admin), test2:tester2/testing2, admin:admin/admin.
#
# Ports: SWIFT_PROXY_PORT, SWIFT_OBJECT_PORT, SWIFT_CONTAINER_PORT,
# SWIFT_ACCOUNT_PORT, SWIFT_MEMCACHED_PORT (default: free ones). They stick
# to DATA_DIR (the rings name them): DATA_DIR/ports.
#
# Keystone (optional): with SWIFT_KEYSTONE_URL (http://HOST:PORT/v3),
# SWIFT_KEYSTONE_USER, SWIFT_KEYSTONE_PASSWORD and SWIFT_KEYSTONE_PROJECT (a
# service user allowed to validate tokens; domains SWIFT_KEYSTONE_DOMAIN,
# default "Default") a second proxy on SWIFT_KEYSTONE_PROXY_PORT serves the
# same cluster with authtoken + keystoneauth (admin and member own
# AUTH_<project id>); its storage URLs are printed as
# SWIFT_KEYSTONE_STORAGE_URL (append the project id), for the catalog.
#
# Packages: installed when missing (needs root or sudo) through
# install-packages.sh, unless SWIFT_SKIP_INSTALL=1 (then: exit 3).
# `swift-up.sh --install-only` installs them and exits.
#
# Idempotent: a running cluster of DATA_DIR is left alone (config changes
# need swift-down.sh first). On success prints `export ...` lines (stdout;
# progress goes to stderr):  eval "$(scripts/swift-up.sh /tmp/swift)"
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PACKAGES=(swift swift-proxy swift-account swift-container swift-object python3-swiftclient memcached curl)

install_swift() {
  local missing=0 p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing=1
  done
  if [ -n "${SWIFT_KEYSTONE_URL:-}" ]; then
    dpkg-query -W -f='${Status}' python3-keystonemiddleware 2>/dev/null | grep -q "install ok installed" || missing=1
  fi
  [ $missing = 0 ] && return 0
  if [ "${SWIFT_SKIP_INSTALL:-}" = 1 ]; then
    echo "swift-up: Swift packages are missing (SWIFT_SKIP_INSTALL=1); run scripts/swift-up.sh --install-only" >&2
    exit 3
  fi
  local extra=()
  [ -n "${SWIFT_KEYSTONE_URL:-}" ] && extra=(python3-keystonemiddleware)
  bash "$HERE/install-packages.sh" "${PACKAGES[@]}" "${extra[@]}"
}

if [ "${1:-}" = --install-only ]; then
  install_swift
  exit 0
fi
DATA_DIR=${1:?usage: swift-up.sh DATA_DIR | --install-only}
mkdir -p "$DATA_DIR"
D=$(cd "$DATA_DIR" && pwd)
IP=127.0.0.1
mkdir -p "$D/etc" "$D/node/d1" "$D/run" "$D/log" "$D/cache"
# One run at a time per DATA_DIR. Servers must not inherit the lock (9>&-).
exec 9>"$D/.up.lock"
flock 9

install_swift

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -f "$D/ports" ]; then
  # shellcheck disable=SC1091
  . "$D/ports"
else
  PROXY=${SWIFT_PROXY_PORT:-$(free_port)}
  OBJECT=${SWIFT_OBJECT_PORT:-$(free_port)}
  CONTAINER=${SWIFT_CONTAINER_PORT:-$(free_port)}
  ACCOUNT=${SWIFT_ACCOUNT_PORT:-$(free_port)}
  MEMCACHED=${SWIFT_MEMCACHED_PORT:-$(free_port)}
  KPROXY=""
  [ -n "${SWIFT_KEYSTONE_URL:-}" ] && KPROXY=${SWIFT_KEYSTONE_PROXY_PORT:-$(free_port)}
  printf 'PROXY=%s\nOBJECT=%s\nCONTAINER=%s\nACCOUNT=%s\nMEMCACHED=%s\nKPROXY=%s\n' \
    "$PROXY" "$OBJECT" "$CONTAINER" "$ACCOUNT" "$MEMCACHED" "$KPROXY" >"$D/ports"
fi
if [ -n "${SWIFT_KEYSTONE_URL:-}" ] && [ -z "$KPROXY" ]; then
  echo "swift-up: $D was set up without Keystone; swift-down.sh --purge it first" >&2
  exit 1
fi

common() { # $1 = port, $2 = name
  cat <<EOF
[DEFAULT]
bind_ip = $IP
bind_port = $1
# a port taken by someone else fails in 5 s, not Swift's default 30 s
bind_timeout = 5
workers = 1
user = $(id -un)
swift_dir = $D/etc
devices = $D/node
mount_check = false
recon_cache_path = $D/cache
log_name = $2
# Every server runs with -v (log to stderr, redirected to a file). Without a
# syslog socket Swift would also log to UDP localhost:514: send that copy
# to a loopback port nobody listens on.
log_udp_host = $IP
log_udp_port = $PROXY
EOF
}

cat >"$D/etc/swift.conf" <<EOF
[swift-hash]
swift_hash_path_prefix = coffer-test-prefix
swift_hash_path_suffix = coffer-test-suffix
[storage-policy:0]
name = Policy-0
default = yes
EOF

{ common "$OBJECT" object-server; cat <<EOF
[pipeline:main]
pipeline = healthcheck object-server
[app:object-server]
use = egg:swift#object
[filter:healthcheck]
use = egg:swift#healthcheck
[object-replicator]
[object-updater]
interval = 30
[object-auditor]
EOF
} >"$D/etc/object-server.conf"

{ common "$CONTAINER" container-server; cat <<EOF
[pipeline:main]
pipeline = healthcheck container-server
[app:container-server]
use = egg:swift#container
[filter:healthcheck]
use = egg:swift#healthcheck
[container-replicator]
[container-updater]
interval = 5
[container-auditor]
[container-sync]
EOF
} >"$D/etc/container-server.conf"

{ common "$ACCOUNT" account-server; cat <<EOF
[pipeline:main]
pipeline = healthcheck account-server
[app:account-server]
use = egg:swift#account
[filter:healthcheck]
use = egg:swift#healthcheck
[account-replicator]
[account-auditor]
[account-reaper]
EOF
} >"$D/etc/account-server.conf"

# proxy_conf PORT AUTH_FILTERS: the proxy with the given auth middleware.
proxy_conf() {
  common "$1" proxy-server
  cat <<EOF
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl $2 copy slo dlo versioned_writes symlink proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true
# one node only: never error-limit it (one 507 would make every request 503
# for a minute)
error_suppression_interval = 0
# Patient with the backend servers: on a loaded 2-core CI machine the
# defaults (0.5 s to connect and get 100-continue, 10 s per read) turned
# PUTs into 503s now and then.
conn_timeout = 5
node_timeout = 60
recoverable_node_timeout = 60
[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test_tester2 = testing2 .admin
user_test_tester3 = testing3
user_test2_tester2 = testing2 .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = $IP:$MEMCACHED
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
# segments < 1 MiB are otherwise served at 1/s after the 10th
rate_limit_under_size = 0
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
[filter:symlink]
use = egg:swift#symlink
EOF
}

proxy_conf "$PROXY" tempauth >"$D/etc/proxy-server.conf"
if [ -n "$KPROXY" ]; then
  KDOMAIN=${SWIFT_KEYSTONE_DOMAIN:-Default}
  { proxy_conf "$KPROXY" "authtoken keystoneauth"; cat <<EOF
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $SWIFT_KEYSTONE_URL
auth_url = $SWIFT_KEYSTONE_URL
auth_type = password
project_domain_name = $KDOMAIN
user_domain_name = $KDOMAIN
project_name = ${SWIFT_KEYSTONE_PROJECT:?SWIFT_KEYSTONE_PROJECT is required with SWIFT_KEYSTONE_URL}
username = ${SWIFT_KEYSTONE_USER:?SWIFT_KEYSTONE_USER is required with SWIFT_KEYSTONE_URL}
password = ${SWIFT_KEYSTONE_PASSWORD:?SWIFT_KEYSTONE_PASSWORD is required with SWIFT_KEYSTONE_URL}
delay_auth_decision = True
memcached_servers = $IP:$MEMCACHED
[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
reseller_prefix = AUTH_
EOF
  } >"$D/etc/proxy-keystone.conf"
  chmod 600 "$D/etc/proxy-keystone.conf"
fi

# Rings: part power 6, 1 replica, min_part_hours 1, one device d1. Built in
# one Python process (swift-ring-builder would start Python 9 times: ~40 s
# on a busy 2-core machine).
if [ ! -f "$D/etc/account.ring.gz" ]; then
  /usr/bin/python3 - "$D/etc" "$OBJECT" "$CONTAINER" "$ACCOUNT" <<'EOF'
import os, sys
from swift.common.ring import RingBuilder
d = sys.argv[1]
for name, port in zip(("object", "container", "account"), sys.argv[2:5]):
    b = RingBuilder(6, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "replication_ip": "127.0.0.1", "replication_port": int(port),
               "device": "d1", "weight": 100, "meta": ""})
    b.rebalance()
    b.save(os.path.join(d, name + ".builder"))
    # account last: its ring's presence means all three are there
    b.get_ring().save(os.path.join(d, name + ".ring.gz"))
EOF
fi

# kill -0 succeeds for a zombie: look at the process state instead.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# start NAME CMD...: unless running; in its own session (pgid = pid). The
# server records its pid itself before it execs, so that swift-down.sh (which
# waits for this script's lock) finds it even if this script is killed right
# after starting it.
start() {
  local n=$1
  shift
  if [ -f "$D/run/$n.pid" ] && alive "$(cat "$D/run/$n.pid")"; then return 0; fi
  setsid /bin/sh -c 'echo $$ >"$0"; exec "$@"' "$D/run/$n.pid" "$@" >>"$D/log/$n.log" 2>&1 </dev/null 9>&- &
}
start memcached memcached -l "$IP" -p "$MEMCACHED" -U 0 -m 64 -u "$(id -un)"
start object-server swift-object-server "$D/etc/object-server.conf" -v
start container-server swift-container-server "$D/etc/container-server.conf" -v
start account-server swift-account-server "$D/etc/account-server.conf" -v
start proxy-server swift-proxy-server "$D/etc/proxy-server.conf" -v
[ -n "$KPROXY" ] && start proxy-keystone swift-proxy-server "$D/etc/proxy-keystone.conf" -v
start container-updater swift-container-updater "$D/etc/container-server.conf" -v
start object-updater swift-object-updater "$D/etc/object-server.conf" -v

code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# Ready: every server's healthcheck answers (the proxy's alone is not
# enough: a restarted object server may still be starting, and the first
# object requests would get 503), tempauth hands out a token, and the
# account answers through the proxy.
healthy() {
  local p
  for p in "$PROXY" "$OBJECT" "$CONTAINER" "$ACCOUNT" $KPROXY; do
    [ "$(code "http://$IP:$p/healthcheck")" = 200 ] || return 1
  done
}
for i in $(seq 1 240); do
  if healthy; then
    tok=$(curl -s -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
      "http://$IP:$PROXY/auth/v1.0" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token"{print $2}')
    c=$(code -I -H "X-Auth-Token: $tok" "http://$IP:$PROXY/v1/AUTH_test")
    if [ -n "$tok" ] && { [ "$c" = 200 ] || [ "$c" = 204 ]; }; then
      echo "swift-up: Swift proxy on $IP:$PROXY${KPROXY:+ (Keystone proxy on $IP:$KPROXY)}, data $D" >&2
      echo "export ST_AUTH=http://$IP:$PROXY/auth/v1.0 ST_USER=test:tester ST_KEY=testing"
      echo "export COFFER_BACKUP_STORE=swift COFFER_SWIFT_AUTH=tempauth COFFER_SWIFT_AUTH_URL=http://$IP:$PROXY/auth/v1.0 COFFER_SWIFT_USER=test:tester COFFER_SWIFT_KEY=testing"
      [ -n "$KPROXY" ] && echo "export SWIFT_KEYSTONE_STORAGE_URL=http://$IP:$KPROXY/v1/AUTH_"
      exit 0
    fi
  fi
  # A server that died (a port taken, a bad config) will not come back.
  if [ $((i % 20)) = 0 ]; then
    for f in "$D"/run/*.pid; do
      if ! alive "$(cat "$f")"; then
        n=$(basename "$f" .pid)
        echo "swift-up: $n exited; last lines of $D/log/$n.log:" >&2
        tail -n 15 "$D/log/$n.log" >&2
        exit 1
      fi
    done
  fi
  sleep 0.25
done
echo "swift-up: Swift not ready after 60 s, see $D/log" >&2
exit 1
