#!/usr/bin/env bash
# swift-down.sh DATA_DIR [--purge]
#
# Stop everything swift-up.sh DATA_DIR started, by the pids it recorded in
# DATA_DIR/run/*.pid. Each server was started with setsid, so its pid is a
# process-group leader and its worker children are signalled with it.
# Nothing else is touched. Idempotent. --purge also deletes DATA_DIR.
set -uo pipefail
DATA_DIR=${1:?usage: swift-down.sh DATA_DIR [--purge]}
[ -d "$DATA_DIR" ] || exit 0
D=$(cd "$DATA_DIR" && pwd)
# Wait for a running swift-up.sh of DATA_DIR (it holds this lock until it is done
# or killed), so that every server it started has recorded its pid.
exec 9>"$D/.up.lock"
flock -w 120 9 || echo "swift-down: swift-up.sh still running after 120 s; stopping what it recorded" >&2

# kill -0 succeeds for a zombie: look at the process state instead.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop_all() {
  local f pid left pids=()
  for f in "$D"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if [ -n "$pid" ] && alive "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for _ in $(seq 1 50); do
    left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [ $left = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    alive "$pid" && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; }
  done
  echo "swift-down: stopped ${#pids[@]} processes of $D" >&2
}
stop_all
# A server a killed swift-up.sh forked an instant before it died records
# its pid a moment later.
sleep 0.2
stop_all
[ "${2:-}" = --purge ] && rm -rf "$D"
exit 0
