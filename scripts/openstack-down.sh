#!/usr/bin/env bash
# openstack-down.sh DATA_DIR [--purge]  (from ../shared/docs/openstack-for-tests.md, appendix B)
#
# Stop everything openstack-up.sh DATA_DIR started, by the pids it recorded in
# DATA_DIR/run/*.pid. Each service was started with setsid, so the pid is a
# process-group leader and its whole group (e.g. nova-api's forked worker,
# neutron's rpc/periodic workers, rabbitmq's beam) is signalled. Nothing else
# is touched. Idempotent. --purge also deletes DATA_DIR.
set -uo pipefail
DATA_DIR=${1:?usage: openstack-down.sh DATA_DIR [--purge]}
[ -d "$DATA_DIR" ] || exit 0
D=$(cd "$DATA_DIR" && pwd)
RUN=$D/run

alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }
# stop_group GRACE_SECONDS NAME...: TERM all groups at once, wait up to GRACE
# for them to exit, then KILL what is left.
stop_group() {
  local grace=$1 name pid i left; shift
  local pids=()
  for name in "$@"; do
    [ -f "$RUN/$name.pid" ] || continue
    pid=$(cat "$RUN/$name.pid")
    if alive "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
      pids+=("$pid")
      echo "openstack-down: stopping $name (pgid $pid)" >&2
    fi
    rm -f "$RUN/$name.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq 1 $((grace * 5))); do
    left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [ $left = 0 ] && return 0
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
  done
  sleep 0.3
}

# The OpenStack services hold nothing that needs a clean shutdown (all state is
# in MariaDB), so they get 5 s; then the bus; MariaDB last, given time to
# shut down cleanly so DATA_DIR can be reused.
stop_group 5 nova-compute nova-api nova-scheduler nova-conductor \
  cinder-volume cinder-scheduler cinder-api neutron glance placement keystone
stop_group 10 rabbitmq
stop_group 5 epmd
stop_group 30 mariadb
# anything else recorded
others=()
for f in "$RUN"/*.pid; do [ -e "$f" ] && others+=("$(basename "$f" .pid)"); done
[ ${#others[@]} -gt 0 ] && stop_group 5 "${others[@]}"

if [ "${2:-}" = "--purge" ]; then
  rm -rf "$D"
  echo "openstack-down: removed $D" >&2
fi
exit 0
