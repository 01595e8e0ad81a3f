#!/usr/bin/env bash
# minio-down.sh DATA_DIR [--purge]
#
# Stop the MinIO that minio-up.sh DATA_DIR started (by its recorded pid; it
# runs in its own process group). Nothing else is touched. Idempotent.
# --purge also deletes DATA_DIR.
set -uo pipefail
DATA_DIR=${1:?usage: minio-down.sh DATA_DIR [--purge]}
[ -d "$DATA_DIR" ] || exit 0
D=$(cd "$DATA_DIR" && pwd)
# Wait for a running minio-up.sh of DATA_DIR (it holds this lock until it is done
# or killed), so that every server it started has recorded its pid.
exec 9>"$D/.up.lock"
flock -w 120 9 || echo "minio-down: minio-up.sh still running after 120 s; stopping what it recorded" >&2

# kill -0 succeeds for a zombie: look at the process state instead.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop() {
  [ -f "$D/run/minio.pid" ] || return 0
  local pid
  pid=$(cat "$D/run/minio.pid")
  if [ -n "$pid" ] && alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
    echo "minio-down: stopped MinIO (pid $pid)" >&2
  fi
  rm -f "$D/run/minio.pid"
}
stop
# A MinIO that a killed minio-up.sh forked an instant before it died
# records its pid a moment later.
sleep 0.2
stop
[ "${2:-}" = --purge ] && rm -rf "$D"
exit 0
