#!/usr/bin/env bash
# keystone-up.sh DATA_DIR [PORT]
#
# A standalone, real Keystone (Debian bookworm's keystone 22, "Zed") on
# 127.0.0.1:PORT (default 15000), everything under DATA_DIR: sqlite database
# (WAL journal: without it the second catalog write hangs and fails with
# "database is locked"), fernet tokens, no Apache, no systemd. This is the
# recipe of ../shared/docs/troveclient-and-keystone.md §2, for Coffer's
# Keystone tests and the conformance suite:
#   - installs the `keystone` Debian package when it is missing (needs root or
#     sudo; ~30 s) WITHOUT starting the package's own service: a policy-rc.d
#     that forbids service starts is put in place for the install if the
#     machine has none (container images usually have one);
#   - bootstraps admin (project admin, role admin; RegionOne, identity
#     endpoints), then find-or-create on every run: projects demo and alt, each
#     with a member user (demo/demopass, alt/altpass), and Coffer's service
#     user `coffer` (role service in project service) that validates tokens;
#   - with DATABASE_ENDPOINT=http://HOST:PORT set, registers the `database`
#     service (name trove) with public/internal/admin endpoints
#     DATABASE_ENDPOINT/v1.0/%(tenant_id)s (updated when they differ);
#   - writes DATA_DIR/openrc-{admin,demo,alt} (for the CLIs), DATA_DIR/coffer.env
#     (COFFER_AUTH=keystone and COFFER_KEYSTONE_* for Coffer's API),
#     DATA_DIR/keystone.json (everything, with project and user ids, for
#     tests), and prints `export ...` lines (stdout; progress goes to stderr):
#       eval "$(scripts/keystone-up.sh /tmp/ks)"
#     exports the admin credentials (OS_*), KEYSTONE_URL, KEYSTONE_DATA_DIR,
#     KEYSTONE_{DEMO,ALT}_PROJECT_ID and the COFFER_KEYSTONE_* variables.
#
# The server is Python's wsgiref behind a ThreadingMixIn (one thread per
# request: Coffer validates a token while the CLI that sent it waits for the
# answer), with Keystone's in-process cache on (one process, so it is
# coherent; without it each validation runs ~200 SQL queries) and bcrypt at
# its minimum cost (4): password auth ~10 ms instead of ~0.3 s.
#
# Idempotent: re-running with the same DATA_DIR reuses the database and only
# starts Keystone if it is not running. Stop it with keystone-down.sh DATA_DIR.
# KEYSTONE_SKIP_INSTALL=1: never run apt-get (fail if keystone is missing).
# KEYSTONE_ADMIN_PASSWORD (default adminpass) sets the bootstrap password.
set -euo pipefail

DATA_DIR=${1:?usage: keystone-up.sh DATA_DIR [PORT]}
PORT=${2:-15000}
mkdir -p "$DATA_DIR"
D=$(cd "$DATA_DIR" && pwd)
H=127.0.0.1
URL="http://$H:$PORT/v3"
REGION=RegionOne
ADMIN_PW=${KEYSTONE_ADMIN_PASSWORD:-adminpass}
PY=/usr/bin/python3 # the Debian scripts' interpreter, not a venv's
T0=$(date +%s%N)

log() { local t=$((($(date +%s%N) - T0) / 100000000)); printf 'keystone-up: [%3d.%ds] %s\n' $((t / 10)) $((t % 10)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
running() { [ -f "$D/keystone.pid" ] && kill -0 "$(cat "$D/keystone.pid")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/$H/$1") 2>/dev/null; }

install_keystone() {
  dpkg-query -W -f='${Status}' keystone 2>/dev/null | grep -q "install ok installed" && command -v keystone-manage >/dev/null && return 0
  [ "${KEYSTONE_SKIP_INSTALL:-0}" = 1 ] && die "keystone is not installed (KEYSTONE_SKIP_INSTALL=1)"
  local sudo=() rc_tmp="" ok=1
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "keystone is not installed and installing it needs root or sudo"
    sudo=(sudo -n)
  fi
  log "installing keystone (Debian package; its service is not started)"
  # The package's postinst starts Keystone on port 5000 unless policy-rc.d forbids it.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    rc_tmp=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$rc_tmp" >/dev/null
    "${sudo[@]}" chmod +x "$rc_tmp"
  fi
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >"$D/apt.log" 2>&1 || ok=0
  [ $ok = 1 ] && { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends keystone python3-keystoneclient >>"$D/apt.log" 2>&1 || ok=0; }
  [ -n "$rc_tmp" ] && "${sudo[@]}" rm -f "$rc_tmp"
  [ $ok = 1 ] || die "apt-get install keystone failed; see $D/apt.log"
  command -v keystone-manage >/dev/null || die "keystone-manage missing after installing keystone"
  log "keystone installed"
}
install_keystone
[ -x /usr/bin/python3 ] && $PY -c 'import keystoneclient' 2>/dev/null || die "python3-keystoneclient is missing"

if ! running && port_open "$PORT"; then
  die "port $H:$PORT is already in use by another program; pick another PORT"
fi

mkdir -p "$D/fernet-keys" "$D/credential-keys" "$D/policy.d" "$D/pylib"
chmod 700 "$D/fernet-keys" "$D/credential-keys"
cat >"$D/keystone.conf" <<EOF
[DEFAULT]
log_file = $D/keystone.log
[database]
connection = sqlite:///$D/keystone.db
[token]
provider = fernet
expiration = 86400
[fernet_tokens]
key_repository = $D/fernet-keys/
[fernet_receipts]
key_repository = $D/fernet-keys/
[credential]
key_repository = $D/credential-keys/
[cache]
enabled = true
backend = dogpile.cache.memory
[identity]
password_hash_rounds = 4
[oslo_policy]
policy_dirs = $D/policy.d
EOF

KM() { keystone-manage --config-file "$D/keystone.conf" "$@"; }
if [ ! -f "$D/.bootstrapped" ]; then
  log "initialising the database (db_sync, fernet keys, bootstrap)"
  # keystone-manage prints a harmless eventlet traceback when it exits.
  {
    KM db_sync &&
    $PY -c 'import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")' "$D/keystone.db" &&
    KM fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" &&
    KM credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" &&
    KM bootstrap --bootstrap-password "$ADMIN_PW" --bootstrap-username admin \
      --bootstrap-project-name admin --bootstrap-role-name admin \
      --bootstrap-service-name keystone --bootstrap-region-id $REGION \
      --bootstrap-admin-url "$URL" --bootstrap-internal-url "$URL" --bootstrap-public-url "$URL"
  } >>"$D/manage.log" 2>&1 || die "keystone-manage failed; see $D/manage.log and $D/keystone.log"
  touch "$D/.bootstrapped"
fi

# A threaded wsgiref server: keystone-wsgi-public serves one request at a time.
cat >"$D/pylib/keystone_serve.py" <<'EOF'
"""keystone_serve.py HOST PORT -- Keystone's public WSGI app on a threaded wsgiref server."""
import socketserver, sys
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler

class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

class Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):  # access log -> server.log
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

host, port = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[:1]  # the app factory parses sys.argv as oslo.config CLI options
from keystone.server.wsgi import initialize_public_application
make_server(host, port, initialize_public_application(), server_class=Server, handler_class=Handler).serve_forever()
EOF

if ! running; then
  OS_KEYSTONE_CONFIG_FILES="$D/keystone.conf" PYTHONPATH="$D/pylib" \
    setsid $PY -m keystone_serve $H "$PORT" >>"$D/server.log" 2>&1 </dev/null &
  echo $! >"$D/keystone.pid"
  log "started keystone (pid $!) on $URL"
fi
for i in $(seq 1 300); do
  curl -fs -o /dev/null -m 5 "$URL" && break
  running || die "keystone exited; see $D/server.log and $D/keystone.log"
  [ "$i" = 300 ] && die "keystone did not answer on $URL within 60 s; see $D/server.log"
  sleep 0.2
done

write_rc() { # name user password project
  cat >"$D/openrc-$1" <<EOF
export OS_AUTH_URL=$URL
export OS_IDENTITY_API_VERSION=3
export OS_AUTH_TYPE=password
export OS_USERNAME=$2
export OS_PASSWORD=$3
export OS_PROJECT_NAME=$4
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_REGION_NAME=$REGION
export OS_INTERFACE=public
EOF
}
write_rc admin admin "$ADMIN_PW" admin
write_rc demo demo demopass demo
write_rc alt alt altpass alt
# The service user's password is made once per DATA_DIR.
[ -s "$D/coffer-password" ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$D/coffer-password"; chmod 600 "$D/coffer-password"; }

# Provisioning in one Python process (one `openstack` call costs ~2 s); a
# restart on the same port with no catalog change has nothing to do.
if [ -f "$D/keystone.json" ] && [ -z "${DATABASE_ENDPOINT:-}" ] && grep -q "\"auth_url\": \"$URL\"" "$D/keystone.json"; then
  log "already provisioned"
else
log "provisioning projects, users and roles"
KS_URL=$URL ADMIN_PW=$ADMIN_PW COFFER_PW=$(cat "$D/coffer-password") REGION=$REGION OUT="$D/keystone.json" \
  DATA_DIR="$D" DATABASE_ENDPOINT=${DATABASE_ENDPOINT:-} $PY - <<'PYEOF' >>"$D/provision.log" 2>&1 || die "provisioning failed; see $D/provision.log"
import json, os
from keystoneauth1 import session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client

env = os.environ
url = env["KS_URL"]
sess = session.Session(auth=v3.Password(auth_url=url, username="admin", password=env["ADMIN_PW"],
    project_name="admin", user_domain_name="Default", project_domain_name="Default"))
# endpoint_override: the catalog may still name the port this data directory
# was bootstrapped on.
ks = client.Client(session=sess, interface="public", endpoint_override=url)

def role(name):
    found = ks.roles.list(name=name)
    return found[0] if found else ks.roles.create(name)

def project(name):
    found = ks.projects.list(name=name, domain="default")
    return found[0] if found else ks.projects.create(name, "default", description="Coffer tests")

def user(name, password, proj, role_name):
    found = ks.users.list(name=name, domain="default")
    # An existing user keeps its password: changing it would revoke its tokens.
    u = found[0] if found else ks.users.create(name, domain="default", password=password, default_project=proj)
    ks.roles.grant(role(role_name), user=u, project=proj)
    return u

# The identity endpoints follow the URL this Keystone serves on now (the data
# directory may be a copy of one bootstrapped on another port).
for s in ks.services.list(type="identity"):
    for e in ks.endpoints.list(service=s):
        if e.url != url:
            ks.endpoints.update(e, url=url)

out = {"auth_url": url, "region": env["REGION"], "data_dir": env["DATA_DIR"],
       "admin": {"username": "admin", "password": env["ADMIN_PW"], "project_name": "admin",
                 "project_id": project("admin").id, "user_id": ks.users.list(name="admin", domain="default")[0].id}}
for name, password in (("demo", "demopass"), ("alt", "altpass")):
    p = project(name)
    u = user(name, password, p, "member")
    out[name] = {"username": name, "password": password, "project_name": name, "project_id": p.id, "user_id": u.id}
svc = project("service")
u = user("coffer", env["COFFER_PW"], svc, "service")
out["service"] = {"username": "coffer", "password": env["COFFER_PW"], "project_name": "service",
                  "project_id": svc.id, "user_id": u.id}

endpoint = env.get("DATABASE_ENDPOINT", "").rstrip("/")
if endpoint:
    found = ks.services.list(type="database")
    s = found[0] if found else ks.services.create("trove", type="database", description="Database")
    want = endpoint + "/v1.0/%(tenant_id)s"
    have = {e.interface: e for e in ks.endpoints.list(service=s)}
    for iface in ("public", "internal", "admin"):
        if iface not in have:
            ks.endpoints.create(s, want, interface=iface, region=env["REGION"])
        elif have[iface].url != want:
            ks.endpoints.update(have[iface], url=want)
    out["database_endpoint"] = want

with open(env["OUT"] + ".tmp", "w") as f:
    json.dump(out, f, indent=2)
os.chmod(env["OUT"] + ".tmp", 0o600)
os.replace(env["OUT"] + ".tmp", env["OUT"])
PYEOF
fi

ids() { $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]]["project_id"])' "$D/keystone.json" "$1"; }
DEMO_ID=$(ids demo)
ALT_ID=$(ids alt)
cat >"$D/coffer.env" <<EOF
export COFFER_AUTH=keystone
export COFFER_KEYSTONE_URL=$URL
export COFFER_KEYSTONE_USERNAME=coffer
export COFFER_KEYSTONE_PASSWORD=$(cat "$D/coffer-password")
export COFFER_KEYSTONE_PROJECT_NAME=service
export COFFER_KEYSTONE_USER_DOMAIN_NAME=Default
export COFFER_KEYSTONE_PROJECT_DOMAIN_NAME=Default
EOF
chmod 600 "$D/coffer.env"
log "ready: $URL (demo project $DEMO_ID, alt project $ALT_ID)"

cat "$D/openrc-admin"
cat "$D/coffer.env"
cat <<EOF
export KEYSTONE_URL=$URL
export KEYSTONE_DATA_DIR=$D
export KEYSTONE_DEMO_PROJECT_ID=$DEMO_ID
export KEYSTONE_ALT_PROJECT_ID=$ALT_ID
EOF
