#!/usr/bin/env bash
# keystone-down.sh DATA_DIR [--purge]
#
# Stop the Keystone that keystone-up.sh DATA_DIR started, by the pid it
# recorded in DATA_DIR/keystone.pid (a session leader: its process group is
# signalled). Nothing else is touched. Idempotent. --purge also deletes
# DATA_DIR.
set -uo pipefail
DATA_DIR=${1:?usage: keystone-down.sh DATA_DIR [--purge]}
[ -d "$DATA_DIR" ] || exit 0
D=$(cd "$DATA_DIR" && pwd)

alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }
if [ -f "$D/keystone.pid" ]; then
  pid=$(cat "$D/keystone.pid")
  if alive "$pid"; then
    echo "keystone-down: stopping keystone (pgid $pid)" >&2
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 25); do alive "$pid" || break; sleep 0.2; done
    alive "$pid" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; sleep 0.2; }
  fi
  rm -f "$D/keystone.pid"
fi

if [ "${2:-}" = "--purge" ]; then
  rm -rf "$D"
  echo "keystone-down: removed $D" >&2
fi
exit 0
