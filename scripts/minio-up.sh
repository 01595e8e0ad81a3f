#!/usr/bin/env bash
# minio-up.sh DATA_DIR [PORT]
# minio-up.sh --install-only
#
# Start a real MinIO (single node, single drive, S3 API) on 127.0.0.1 for
# Coffer's S3 backup store tests, everything under DATA_DIR (data/, log,
# pid). Recipe: ../shared/docs/object-storage-for-tests.md, section 2.
#
# The binary is /opt/coffer-test/minio/bin/minio (MINIO_BIN overrides). When
# it is missing it is built with `go install` from the pinned pseudo-version
# (MinIO is source-only now): ~4.5 min and ~1.2 GB of modules cold, so CI
# runs `minio-up.sh --install-only` early (Taskfile deps:test) and keeps the
# binary. MINIO_SKIP_INSTALL=1: never build (fail if the binary is missing).
#
# PORT: the S3 port (default: the port DATA_DIR was first started on, else a
# free one). Ready in ~1 s. Idempotent: a running MinIO of DATA_DIR is left
# alone. Stop with minio-down.sh DATA_DIR.
#
# On success prints `export ...` lines (stdout; progress goes to stderr) that
# point Coffer at it:  eval "$(scripts/minio-up.sh /tmp/minio)"
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_BIN=${MINIO_BIN:-/opt/coffer-test/minio/bin/minio}

install_minio() {
  [ -x "$MINIO_BIN" ] && return 0
  if [ "${MINIO_SKIP_INSTALL:-}" = 1 ]; then
    echo "minio-up: $MINIO_BIN is missing (MINIO_SKIP_INSTALL=1); run scripts/minio-up.sh --install-only" >&2
    exit 3
  fi
  command -v go >/dev/null || { echo "minio-up: $MINIO_BIN is missing and there is no go to build it" >&2; exit 3; }
  local bindir
  bindir=$(dirname "$MINIO_BIN")
  mkdir -p "$bindir"
  # One build at a time (CI step and tests, parallel test processes).
  exec 8>"$bindir/.minio-build.lock"
  flock 8
  if [ ! -x "$MINIO_BIN" ]; then
    echo "minio-up: building MinIO $MINIO_VERSION into $bindir (4-5 min cold) ..." >&2
    local start=$SECONDS
    # Outside any module, so the repository's go.mod plays no part.
    (cd / && GOBIN=$bindir GOFLAGS= go install "github.com/minio/minio@$MINIO_VERSION") >&2
    [ "$(basename "$MINIO_BIN")" = minio ] || mv "$bindir/minio" "$MINIO_BIN"
    echo "minio-up: built in $((SECONDS - start)) s" >&2
  fi
  exec 8>&-
}

if [ "${1:-}" = --install-only ]; then
  install_minio
  exit 0
fi
DATA_DIR=${1:?usage: minio-up.sh DATA_DIR [PORT] | --install-only}
mkdir -p "$DATA_DIR"
D=$(cd "$DATA_DIR" && pwd)
mkdir -p "$D/data" "$D/run"
exec 9>"$D/.up.lock"
flock 9

install_minio

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

# The port and credentials stick to DATA_DIR.
if [ -f "$D/port" ]; then
  PORT=$(cat "$D/port")
  [ -z "${2:-}" ] || [ "$2" = "$PORT" ] || { echo "minio-up: $D was set up with port $PORT" >&2; exit 1; }
else
  PORT=${2:-$(free_port)}
  echo "$PORT" >"$D/port"
fi
if [ ! -f "$D/credentials" ]; then
  umask 077
  echo "coffer-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n') $(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')" >"$D/credentials"
fi
read -r USER_ PASS_ <"$D/credentials"

exports() {
  echo "export COFFER_BACKUP_STORE=s3 COFFER_S3_ENDPOINT=http://127.0.0.1:$PORT COFFER_S3_ACCESS_KEY=$USER_ COFFER_S3_SECRET_KEY=$PASS_ COFFER_S3_REGION=us-east-1"
  echo "export MINIO_PID=$(cat "$D/run/minio.pid")"
}

ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/minio/health/ready")" = 200 ]; }
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat")" != Z ]; }

if [ -f "$D/run/minio.pid" ] && alive "$(cat "$D/run/minio.pid")" && ready; then
  exports
  exit 0
fi

# MINIO_CI_CD: no root-drive check, small buffer pool. setsid: own process
# group, for minio-down.sh. 9>&-: the lock is not inherited.
# MinIO records its pid itself before it execs, so that minio-down.sh (which
# waits for this script's lock) finds it even if this script is killed
# right after starting it.
MINIO_ROOT_USER=$USER_ MINIO_ROOT_PASSWORD=$PASS_ MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
  setsid /bin/sh -c 'echo $$ >"$0"; exec "$@"' "$D/run/minio.pid" "$MINIO_BIN" server "$D/data" --address "127.0.0.1:$PORT" \
  >>"$D/minio.log" 2>&1 </dev/null 9>&- &
PID=$!
for _ in $(seq 1 300); do
  if ready; then
    echo "minio-up: MinIO on 127.0.0.1:$PORT (pid $PID, data $D/data)" >&2
    exports
    exit 0
  fi
  alive "$PID" || break
  sleep 0.1
done
echo "minio-up: MinIO did not become ready on 127.0.0.1:$PORT; last lines of $D/minio.log:" >&2
tail -n 20 "$D/minio.log" >&2
kill -TERM -- "-$PID" 2>/dev/null || true
exit 1
