#!/usr/bin/env bash
# openstack-up.sh DATA_DIR
#
# Bring up a small but real OpenStack (Debian bookworm packages, release "Zed")
# on 127.0.0.1, everything under DATA_DIR, no systemd, no Apache, no data
# plane: Keystone, Glance (file store), Placement, Nova (api, conductor,
# scheduler, compute with nova's fake virt driver), Cinder (api, scheduler,
# volume with cinder's fake driver plus no-op image copies), Neutron (ML2, no
# agents, a 20-line mechanism driver that "binds" every port), MariaDB and
# RabbitMQ. ~60 s from an empty DATA_DIR, ~25 s restart, ~2 GB PSS.
#
# This is the recipe of ../shared/docs/openstack-for-tests.md (appendix A),
# adapted for Coffer's OpenStack provider tests and CI:
#   - installs its Debian packages when any is missing (apt-get update first;
#     needs root or sudo; ~1-2 min on a bare machine), without starting the
#     packages' own services;
#   - creates what the provider needs, find-or-create on every run: a service
#     user "coffer" (role member in project "service", as Trove's service
#     user), a management network "coffer-mgmt" (10.98.0.0/22) owned by the
#     service project, and unlimited compute/volume/network quotas for the
#     service project (every Coffer instance lives there);
#   - writes DATA_DIR/coffer.env (COFFER_OS_* for that user) and prints it
#     with the other exports.
#
# Ports (127.0.0.1 only), override the base with OS_PORT_BASE (default 15200;
# a DATA_DIR keeps the base it was first started with):
#   +0  keystone    http://127.0.0.1:15200/v3
#   +1  mariadb     (user os / dbpass)
#   +2  rabbitmq    amqp (guest/guest)
#   +3  epmd        (erlang port mapper, for rabbitmq)
#   +4  rabbitmq    erlang distribution port
#   +10 glance      http://127.0.0.1:15210
#   +20 placement   http://127.0.0.1:15220
#   +30 nova        http://127.0.0.1:15230/v2.1
#   +40 cinder      http://127.0.0.1:15240/v3/%(project_id)s
#   +50 neutron     http://127.0.0.1:15250
#
# Idempotent: re-running with the same DATA_DIR reuses databases and only starts
# what is not running. Stop with openstack-down.sh DATA_DIR.
#
# On success prints `export ...` lines (stdout; everything else goes to
# stderr):
#   eval "$(scripts/openstack-up.sh /tmp/os)"
# DATA_DIR/openrc-{admin,demo} hold the credentials (demo: project member);
# DATA_DIR/ids holds OS_TEST_IMAGE_ID (1 MiB raw "tiny"), OS_TEST_FLAVOR_ID
# (m1.tiny; m1.small is id 2), OS_TEST_NETWORK_ID ("shared", 10.99.0.0/24) and
# OS_TEST_EXTERNAL_NETWORK_ID ("public", 203.0.113.0/24, for floating IPs);
# DATA_DIR/coffer.env holds COFFER_OS_AUTH_URL ... COFFER_OS_NETWORK_ID.
# Logs: DATA_DIR/log/*.log (service logs) and *.out (stdout/stderr).
#
# OS_USER_DATA_FOR_MEMBERS=1: let project members (not only admin) read
# OS-EXT-SRV-ATTR:user_data (nova policy override).
# OS_SKIP_INSTALL=1: never run apt-get (fail if a package is missing).
# `openstack-up.sh --install-only` installs the packages and exits (CI can
# run it early, alongside other steps).
#
# Packages (Debian 12); nova-compute itself is not installed: it pulls
# libvirt+qemu, and the fake driver only needs python3-nova, which nova-api
# already pulls in.
set -euo pipefail

INSTALL_ONLY=0
if [ "${1:-}" = --install-only ]; then
  INSTALL_ONLY=1
  DATA_DIR=$(mktemp -d)
else
  DATA_DIR=${1:?usage: openstack-up.sh DATA_DIR | --install-only}
fi
mkdir -p "$DATA_DIR"
D=$(cd "$DATA_DIR" && pwd)
# One run at a time per DATA_DIR (a CI step and a test may both ask for
# it): a second run waits, then finds everything running. The services
# must not inherit the lock's descriptor (see start).
exec 9>"$D/.up.lock"
flock 9
# The base a DATA_DIR was first started with sticks to it: its configs,
# catalog endpoints and rc files name those ports.
if [ -f "$D/port-base" ]; then
  B=$(cat "$D/port-base")
  [ -z "${OS_PORT_BASE:-}" ] || [ "$OS_PORT_BASE" = "$B" ] || { echo "openstack-up: $D was set up with OS_PORT_BASE=$B" >&2; exit 1; }
else
  B=${OS_PORT_BASE:-15200}
  echo "$B" >"$D/port-base"
fi
H=127.0.0.1
P_KS=$B; P_DB=$((B+1)); P_MQ=$((B+2)); P_EPMD=$((B+3)); P_DIST=$((B+4))
P_GLANCE=$((B+10)); P_PLACEMENT=$((B+20)); P_NOVA=$((B+30)); P_CINDER=$((B+40)); P_NEUTRON=$((B+50))
ADMIN_PW=${OS_ADMIN_PASSWORD:-adminpass}
DEMO_PW=${OS_DEMO_PASSWORD:-demopass}
SVC_PW=servicepass
COFFER_PW=${OS_COFFER_PASSWORD:-cofferpass}
DBPW=dbpass
REGION=RegionOne
KS_URL="http://$H:$P_KS/v3"
PY=/usr/bin/python3
RUN=$D/run; LOGD=$D/log
mkdir -p "$RUN" "$LOGD" "$D/etc" "$D/pylib"
T0=$(date +%s%N)
SINCE=$(date -u +%Y-%m-%dT%H:%M:%S)
STARTED=" "

log() { local t=$((($(date +%s%N) - T0) / 100000000)); printf 'openstack-up: [%3d.%ds] %s\n' $((t / 10)) $((t % 10)) "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/$H/$1") 2>/dev/null; }
# start NAME CMD...: run CMD in its own session (so down.sh can kill the whole
# process group), stdout/stderr to log/NAME.out, pid in run/NAME.pid
start() {
  local name=$1; shift
  if running "$name"; then return 0; fi
  setsid "$@" >>"$LOGD/$name.out" 2>&1 </dev/null 9>&- &
  echo $! >"$RUN/$name.pid"
  STARTED="$STARTED$name "
  log "started $name (pid $!)"
}
wait_port() { # NAME PORT [TRIES*0.2s]
  local i
  for i in $(seq 1 "${3:-300}"); do
    port_open "$2" && return 0
    running "$1" || die "$1 exited; see $LOGD/$1.out and $LOGD/$1.log"
    sleep 0.2
  done
  die "$1 did not open port $2; see $LOGD/$1.out"
}
wait_http() { # NAME URL
  local i
  for i in $(seq 1 900); do
    curl -s -o /dev/null -m 5 "$2" && return 0
    running "$1" || die "$1 exited; see $LOGD/$1.out and $LOGD/$1.log"
    sleep 0.2
  done
  die "$1 did not answer on $2"
}
once() { [ -f "$D/.done-$1" ]; }
done_() { touch "$D/.done-$1"; }


PACKAGES=(keystone python3-openstackclient nova-api nova-conductor nova-scheduler
  placement-api glance-api cinder-api cinder-scheduler cinder-volume neutron-server
  rabbitmq-server mariadb-server curl)
# install_packages: apt-get the missing ones. The packages' init scripts
# must not start MariaDB, RabbitMQ, nova-api ... on their default ports
# (everything here runs from DATA_DIR on its own ports), so a policy-rc.d
# that forbids starting services is put in place for the install if the
# machine has none (container images usually do).
install_packages() {
  local missing=() p sudo=() rc_tmp=""
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${OS_SKIP_INSTALL:-0}" = 1 ] && die "missing packages: ${missing[*]} (OS_SKIP_INSTALL=1)"
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    sudo=(sudo)
  fi
  log "installing ${#missing[@]} packages: ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    rc_tmp=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$rc_tmp" >/dev/null
    "${sudo[@]}" chmod +x "$rc_tmp"
  fi
  local ok=1
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || ok=0
  [ $ok = 1 ] && { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends "${missing[@]}" >"$LOGD/apt.log" 2>&1 || ok=0; }
  [ -n "$rc_tmp" ] && "${sudo[@]}" rm -f "$rc_tmp"
  [ $ok = 1 ] || die "apt-get install failed; see $LOGD/apt.log"
  log "packages installed"
}
install_packages
if [ $INSTALL_ONLY = 1 ]; then
  rm -rf "$D"
  exit 0
fi

for bin in mariadbd mariadb-install-db epmd keystone-manage glance-manage placement-manage nova-manage cinder-manage neutron-db-manage; do
  command -v "$bin" >/dev/null || die "missing $bin although its package is installed"
done
# A port that is open although our service is not running belongs to someone else.
for np in mariadb:$P_DB rabbitmq:$P_MQ epmd:$P_EPMD rabbitmq:$P_DIST keystone:$P_KS glance:$P_GLANCE \
          placement:$P_PLACEMENT nova-api:$P_NOVA cinder-api:$P_CINDER neutron:$P_NEUTRON; do
  if ! running "${np%:*}" && port_open "${np#*:}"; then
    die "port $H:${np#*:} (for ${np%:*}) is already in use by another program; set OS_PORT_BASE"
  fi
done

# ------------------------------------------------------------------ MariaDB
DBURL="mysql+pymysql://os:$DBPW@$H:$P_DB"
if ! once mariadb-init; then
  rm -rf "$D/mysql"; mkdir -p "$D/mysql"
  mariadb-install-db --no-defaults --datadir="$D/mysql/data" --user=root \
    --auth-root-authentication-method=socket --skip-test-db >"$LOGD/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed; see $LOGD/mariadb-install.log"
  done_ mariadb-init
fi
# Durability is traded for speed: this is a throw-away test database.
start mariadb /usr/sbin/mariadbd --no-defaults --user=root --datadir="$D/mysql/data" \
  --socket="$D/mysql/mysqld.sock" --pid-file="$D/mysql/mysqld.pid" \
  --bind-address=$H --port=$P_DB --skip-name-resolve --log-error="$LOGD/mariadb.log" \
  --max-connections=1000 --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
  --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --sync-binlog=0 \
  --performance-schema=OFF --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
wait_port mariadb $P_DB
SQL() { mariadb --no-defaults -uroot --socket="$D/mysql/mysqld.sock" "$@"; }
if ! once mariadb-dbs; then
  SQL -e "CREATE USER IF NOT EXISTS 'os'@'%' IDENTIFIED BY '$DBPW';"
  for db in keystone glance placement nova_api nova nova_cell0 cinder neutron; do
    SQL -e "CREATE DATABASE IF NOT EXISTS $db; GRANT ALL PRIVILEGES ON $db.* TO 'os'@'%';"
  done
  done_ mariadb-dbs
fi

# ----------------------------------------------------------------- RabbitMQ
MQ=$D/rabbitmq; mkdir -p "$MQ/mnesia" "$MQ/log"
cat >"$MQ/rabbitmq.conf" <<EOF
listeners.tcp.1 = $H:$P_MQ
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.absolute = 512MiB
EOF
echo '[].' >"$MQ/enabled_plugins"
[ -f "$MQ/.erlang.cookie" ] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$MQ/.erlang.cookie"; chmod 400 "$MQ/.erlang.cookie"; }
MQENV=(env HOME="$MQ" ERL_EPMD_ADDRESS=$H ERL_EPMD_PORT=$P_EPMD
  RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=$H RABBITMQ_NODE_PORT=$P_MQ
  RABBITMQ_DIST_PORT=$P_DIST RABBITMQ_MNESIA_BASE="$MQ/mnesia" RABBITMQ_LOG_BASE="$MQ/log"
  RABBITMQ_CONFIG_FILE="$MQ/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$MQ/enabled_plugins"
  RABBITMQ_PID_FILE="$MQ/rabbit.pid" RABBITMQ_CONF_ENV_FILE=/dev/null
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
# Our own epmd, on our port, in the foreground, so it can be stopped by pid.
start epmd "${MQENV[@]}" epmd -address $H -port $P_EPMD
wait_port epmd $P_EPMD
start rabbitmq "${MQENV[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server
TRANSPORT="rabbit://guest:guest@$H:$P_MQ/"

# ------------------------------------------------------------- common bits
authtoken() { # SERVICE_USER
  cat <<EOF
[keystone_authtoken]
www_authenticate_uri = http://$H:$P_KS
auth_url = http://$H:$P_KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = $1
password = $SVC_PW
region_name = $REGION
service_token_roles_required = true
service_token_roles = service
EOF
}
svcauth() { # SECTION [USERNAME, default nova]
  cat <<EOF
[$1]
auth_url = http://$H:$P_KS
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = ${2:-nova}
password = $SVC_PW
region_name = $REGION
EOF
}

# A threaded wsgiref server for the pure-WSGI services (keystone, placement).
cat >"$D/pylib/wsgi_serve.py" <<'EOF'
"""wsgi_serve.py HOST PORT MODULE:FACTORY -- threaded wsgiref server."""
import importlib, socketserver, sys
from wsgiref.simple_server import make_server, WSGIServer, WSGIRequestHandler

class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

class Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):  # access log to stderr -> NAME.out
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
mod, func = target.split(':')
sys.argv = sys.argv[:1]  # the app factories parse sys.argv as oslo.config CLI args
app = getattr(importlib.import_module(mod), func)()
make_server(host, port, app, server_class=Server, handler_class=Handler).serve_forever()
EOF

# ----------------------------------------------------------------- Keystone
mkdir -p "$D/keystone/fernet-keys" "$D/keystone/credential-keys"
chmod 700 "$D/keystone/fernet-keys" "$D/keystone/credential-keys"
cat >"$D/etc/keystone.conf" <<EOF
[DEFAULT]
log_file = $LOGD/keystone.log
[database]
connection = $DBURL/keystone
[token]
provider = fernet
expiration = 86400
[fernet_tokens]
key_repository = $D/keystone/fernet-keys/
[fernet_receipts]
key_repository = $D/keystone/fernet-keys/
[credential]
key_repository = $D/keystone/credential-keys/
[cache]
# one keystone process, so an in-process cache is coherent; without it every
# token validation costs ~200 SQL queries (~0.3 s per API request)
enabled = true
backend = dogpile.cache.memory
[identity]
# bcrypt cost 4 instead of 12: every user create/password check is ~50x cheaper
password_hash_rounds = 4
EOF
KM() { keystone-manage --config-file "$D/etc/keystone.conf" "$@"; }
sync_keystone() {
  KM db_sync &&
  KM fernet_setup --keystone-user root --keystone-group root &&
  KM credential_setup --keystone-user root --keystone-group root &&
  KM bootstrap --bootstrap-password "$ADMIN_PW" --bootstrap-username admin \
    --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id $REGION \
    --bootstrap-admin-url "$KS_URL" --bootstrap-internal-url "$KS_URL" --bootstrap-public-url "$KS_URL"
}

write_rc() { # name user password project
  cat >"$D/openrc-$1" <<EOF
export OS_AUTH_URL=$KS_URL
export OS_IDENTITY_API_VERSION=3
export OS_AUTH_TYPE=password
export OS_USERNAME=$2
export OS_PASSWORD=$3
export OS_PROJECT_NAME=$4
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
# gophercloud's openstack.AuthOptionsFromEnv() reads OS_DOMAIN_NAME, not the two above
export OS_DOMAIN_NAME=Default
export OS_REGION_NAME=$REGION
export OS_INTERFACE=public
EOF
}
write_rc admin admin "$ADMIN_PW" admin
write_rc demo demo "$DEMO_PW" demo


# ------------------------------------------------------------------- Glance
mkdir -p "$D/glance/images" "$D/glance/staging" "$D/glance/tasks"
cat >"$D/etc/glance-api.conf" <<EOF
[DEFAULT]
bind_host = $H
bind_port = $P_GLANCE
# 0 = serve from the main process (eventlet), no forked worker
workers = 0
log_file = $LOGD/glance.log
enabled_backends = local:file
[database]
connection = $DBURL/glance
[glance_store]
default_backend = local
[local]
filesystem_store_datadir = $D/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = $D/glance/staging/
[os_glance_tasks_store]
filesystem_store_datadir = $D/glance/tasks/
[paste_deploy]
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini
[oslo_messaging_notifications]
driver = noop
[oslo_concurrency]
lock_path = $D/glance/lock
$(authtoken glance)
EOF

# ---------------------------------------------------------------- Placement
mkdir -p "$D/etc/placement"
cat >"$D/etc/placement/placement.conf" <<EOF
[DEFAULT]
log_file = $LOGD/placement.log
[placement_database]
connection = $DBURL/placement
[api]
auth_strategy = keystone
$(authtoken placement)
EOF

# ------------------------------------------------------------------ Neutron
# ML2 with no agents: a mechanism driver that binds every port (vif_type ovs,
# status ACTIVE) so nova's port binding succeeds.
mkdir -p "$D/pylib/fakebind-1.0.dist-info" "$D/neutron/lock"
cat >"$D/pylib/fakebind.py" <<'EOF'
"""ML2 mechanism driver for tests: binds every port on any host, no agent."""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class FakeBindMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True,
                                 portbindings.OVS_HYBRID_PLUG: False},
                                status=constants.PORT_STATUS_ACTIVE)
            return
EOF
cat >"$D/pylib/fakebind-1.0.dist-info/METADATA" <<'EOF'
Metadata-Version: 2.1
Name: fakebind
Version: 1.0
EOF
cat >"$D/pylib/fakebind-1.0.dist-info/entry_points.txt" <<'EOF'
[neutron.ml2.mechanism_drivers]
fakebind = fakebind:FakeBindMechanismDriver
EOF
cat >"$D/etc/neutron.conf" <<EOF
[DEFAULT]
bind_host = $H
bind_port = $P_NEUTRON
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = $TRANSPORT
api_workers = 0
rpc_workers = 0
rpc_state_report_workers = 0
log_file = $LOGD/neutron.log
state_path = $D/neutron
api_paste_config = /etc/neutron/api-paste.ini
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
dhcp_agent_notification = false
[database]
connection = $DBURL/neutron
[oslo_concurrency]
lock_path = $D/neutron/lock
[oslo_messaging_notifications]
driver = noop
$(authtoken neutron)
$(svcauth nova neutron)
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = fakebind
extension_drivers = port_security
[ml2_type_vxlan]
vni_ranges = 1:10000
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:200
[securitygroup]
enable_security_group = true
EOF

# --------------------------------------------------------------------- Nova
mkdir -p "$D/nova/instances" "$D/nova/lock"
cat >"$D/etc/nova.conf" <<EOF
[DEFAULT]
host = fake-compute-1
my_ip = $H
state_path = $D/nova
instances_path = $D/nova/instances
log_file = $LOGD/nova.log
transport_url = $TRANSPORT
enabled_apis = osapi_compute
osapi_compute_listen = $H
osapi_compute_listen_port = $P_NOVA
osapi_compute_workers = 1
compute_driver = fakenova.FakeDriver
# one compute host: resize/migrate must be allowed to stay on it
allow_resize_to_same_host = true
# heartbeat every 2 s (default 10) so readiness is seen quickly after a start
report_interval = 2
# the fake driver never boots anything; no need to wait for neutron events
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[oslo_policy]
policy_file = $D/etc/nova-policy.yaml
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 2
[oslo_concurrency]
lock_path = $D/nova/lock
[oslo_messaging_notifications]
driver = noop
[vnc]
enabled = false
[glance]
region_name = $REGION
[cinder]
os_region_name = $REGION
catalog_info = volumev3::publicURL
$(authtoken nova)
$(svcauth placement)
$(svcauth neutron)
$(svcauth service_user)
send_service_user_token = true
EOF
# Policy overrides (nova reads the file on change, no restart needed).
# OS_USER_DATA_FOR_MEMBERS=1 lets project members (not only admin) see
# OS-EXT-SRV-ATTR:* (user_data, hostname, ...) with microversion >= 2.3.
if [ "${OS_USER_DATA_FOR_MEMBERS:-0}" = 1 ]; then
  echo '"os_compute_api:os-extended-server-attributes": "rule:project_reader_or_admin"' >"$D/etc/nova-policy.yaml"
else
  echo '{}' >"$D/etc/nova-policy.yaml"
fi
# nova-compute must not get DB credentials (it logs "No DB access allowed in
# nova-compute" errors if it has them); everything else reads both files.
cat >"$D/etc/nova-db.conf" <<EOF
[api_database]
connection = $DBURL/nova_api
[database]
connection = $DBURL/nova
EOF
NOVA_CONF=(--config-file "$D/etc/nova.conf" --config-file "$D/etc/nova-db.conf")
NM() { nova-manage "${NOVA_CONF[@]}" "$@" >>"$LOGD/nova-manage.log" 2>&1 || die "nova-manage $*; see $LOGD/nova-manage.log"; }
# nova's fake driver does not upload anything on snapshot (createImage), so the
# snapshot image would stay "queued" forever; this subclass uploads 1 MiB of
# zeros. nova only loads drivers from the nova.virt package, so the
# nova-compute entry point below registers this module as nova.virt.fakenova.
cat >"$D/pylib/fakenova.py" <<'EOF'
"""nova fake virt driver for tests, whose snapshots become active images."""
import io

from nova.image import glance
from nova.virt import fake


class FakeDriver(fake.FakeDriver):
    def snapshot(self, context, instance, image_id, update_task_state):
        super().snapshot(context, instance, image_id, update_task_state)
        glance.API().update(context, image_id,
                            {'disk_format': 'raw', 'container_format': 'bare'},
                            data=io.BytesIO(b'\0' * 1048576), purge_props=False)
EOF
# /usr/bin/nova-compute is in the nova-compute package, which drags in libvirt
# and qemu; the fake driver needs only python3-nova, so use the entry point the
# package would install (plus the fakenova registration).
mkdir -p "$D/bin"
cat >"$D/bin/nova-compute" <<'EOF'
#!/usr/bin/python3
import sys
import fakenova  # from PYTHONPATH
sys.modules['nova.virt.fakenova'] = fakenova
from nova.cmd.compute import main
sys.exit(main())
EOF
chmod +x "$D/bin/nova-compute"

# ------------------------------------------------------------------- Cinder
mkdir -p "$D/cinder/lock"
# cinder's own fake driver (cinder.tests.fake_driver, shipped in python3-cinder)
# keeps no data at all; it cannot copy an image into a volume (volume from
# image, boot from volume) or a volume into an image. These two overrides make
# those succeed without data: the volume's "content" is not kept, an uploaded
# image gets 1 MiB of zeros. A third makes volume extends succeed.
cat >"$D/pylib/fakecinder.py" <<'EOF'
"""Cinder volume driver for tests: no storage, image copies are no-ops."""
import os
import tempfile

from cinder.tests import fake_driver
from cinder.volume import volume_utils


class FakeVolumeDriver(fake_driver.FakeLoggingVolumeDriver):
    def copy_image_to_volume(self, context, volume, image_service, image_id,
                             *args, **kwargs):
        pass

    # The parent's extend goes to LVM (a fake one without extend_volume),
    # so a volume extend would end in error_extending; nothing is stored,
    # so there is nothing to grow.
    def extend_volume(self, volume, new_size):
        pass

    def copy_volume_to_image(self, context, volume, image_service, image_meta):
        fd, path = tempfile.mkstemp(prefix='fakecinder-')
        try:
            os.write(fd, b'\0' * 1048576)
            os.close(fd)
            volume_utils.upload_volume(context, image_service, image_meta, path,
                                       volume, run_as_root=False)
        finally:
            os.unlink(path)
EOF
cat >"$D/etc/cinder.conf" <<EOF
[DEFAULT]
host = cinder-1
my_ip = $H
state_path = $D/cinder
log_file = $LOGD/cinder.log
transport_url = $TRANSPORT
auth_strategy = keystone
osapi_volume_listen = $H
osapi_volume_listen_port = $P_CINDER
osapi_volume_workers = 1
api_paste_config = /etc/cinder/api-paste.ini
enabled_backends = fake
default_volume_type = __DEFAULT__
glance_api_servers = http://$H:$P_GLANCE
report_interval = 2
[fake]
volume_driver = fakecinder.FakeVolumeDriver
volume_backend_name = fake
[database]
connection = $DBURL/cinder
[oslo_concurrency]
lock_path = $D/cinder/lock
[oslo_messaging_notifications]
driver = noop
$(authtoken cinder)
$(svcauth nova cinder)
EOF

# ------------------------------------------------- database schemas (parallel)
# The schema migrations are independent and take ~60 s in a row; run them side
# by side. Each logs to log/sync-NAME.log; a marker file makes them run once.
sync_glance() { glance-manage --config-file "$D/etc/glance-api.conf" db_sync; }
sync_placement() { placement-manage --config-file "$D/etc/placement/placement.conf" db sync; }
sync_neutron() { neutron-db-manage --config-file "$D/etc/neutron.conf" upgrade heads; }
sync_nova() {
  nova-manage "${NOVA_CONF[@]}" api_db sync &&
  nova-manage "${NOVA_CONF[@]}" cell_v2 map_cell0 --database_connection "$DBURL/nova_cell0" &&
  nova-manage "${NOVA_CONF[@]}" cell_v2 create_cell --name cell1 --verbose &&
  nova-manage "${NOVA_CONF[@]}" db sync
}
sync_cinder() { cinder-manage --config-file "$D/etc/cinder.conf" db sync; }

sync_pids=()
for svc in keystone glance placement neutron nova cinder; do
  once "$svc-db" && continue
  ( "sync_$svc" >"$LOGD/sync-$svc.log" 2>&1 && done_ "$svc-db" ) &
  sync_pids+=("$svc:$!")
  log "schema sync $svc started"
done
wait_sync() { # SERVICE
  local e
  for e in "${sync_pids[@]}"; do
    [ "${e%%:*}" = "$1" ] && { wait "${e#*:}" || true; }
  done
  once "$1-db" || die "schema sync for $1 failed; see $LOGD/sync-$1.log"
}

# ----------------------------------------------------- keystone: start + data
wait_sync keystone
start keystone env OS_KEYSTONE_CONFIG_FILES="$D/etc/keystone.conf" PYTHONPATH="$D/pylib" \
  $PY -m wsgi_serve $H $P_KS keystone.server.wsgi:initialize_public_application
wait_http keystone "$KS_URL"

if ! once keystone-provision; then
  log "keystone: projects, users, services, endpoints"
  env $(sed -n 's/^export //p' "$D/openrc-admin") SVC_PW="$SVC_PW" DEMO_PW="$DEMO_PW" REGION=$REGION \
    U_GLANCE="http://$H:$P_GLANCE" U_PLACEMENT="http://$H:$P_PLACEMENT" \
    U_NOVA="http://$H:$P_NOVA/v2.1" U_CINDER="http://$H:$P_CINDER/v3/%(project_id)s" \
    U_NEUTRON="http://$H:$P_NEUTRON" $PY - <<'PYEOF'
import os
from keystoneauth1.identity import v3
from keystoneauth1 import session
from keystoneclient.v3 import client
e = os.environ
ks = client.Client(session=session.Session(auth=v3.Password(
    auth_url=e['OS_AUTH_URL'], username='admin', password=e['OS_PASSWORD'],
    project_name='admin', user_domain_name='Default', project_domain_name='Default')))
one = lambda xs: xs[0] if xs else None
roles = {r.name: r for r in ks.roles.list()}
for r in ('member', 'reader', 'service'):
    if r not in roles:
        roles[r] = ks.roles.create(r)
def project(name):
    return one(ks.projects.list(name=name, domain='default')) or ks.projects.create(name, 'default')
def user(name, pw, proj, *rs):
    u = one(ks.users.list(name=name, domain='default')) or \
        ks.users.create(name, domain='default', password=pw, default_project=proj)
    for r in rs:
        ks.roles.grant(roles[r], user=u, project=proj)
service = project('service')
demo = project('demo')
user('demo', e['DEMO_PW'], demo, 'member')
for svc in ('glance', 'placement', 'nova', 'cinder', 'neutron'):
    user(svc, e['SVC_PW'], service, 'admin', 'service')
for name, typ, url in (('glance', 'image', e['U_GLANCE']),
                       ('placement', 'placement', e['U_PLACEMENT']),
                       ('nova', 'compute', e['U_NOVA']),
                       ('cinderv3', 'volumev3', e['U_CINDER']),
                       ('cinder', 'block-storage', e['U_CINDER']),
                       ('neutron', 'network', e['U_NEUTRON'])):
    s = one(ks.services.list(type=typ)) or ks.services.create(name, typ)
    have = {ep.interface for ep in ks.endpoints.list(service=s)}
    for iface in ('public', 'internal', 'admin'):
        if iface not in have:
            ks.endpoints.create(s, url, interface=iface, region=e['REGION'])
PYEOF
  done_ keystone-provision
fi

# ------------------------------------------------------ start the other APIs
for svc in glance placement neutron nova cinder; do wait_sync $svc; done
log "schemas done"
start glance glance-api --config-file "$D/etc/glance-api.conf"
start placement env OS_PLACEMENT_CONFIG_DIR="$D/etc/placement" PYTHONPATH="$D/pylib" \
  $PY -m wsgi_serve $H $P_PLACEMENT placement.wsgi:init_application
start neutron env PYTHONPATH="$D/pylib" neutron-server --config-file "$D/etc/neutron.conf"
start nova-api nova-api "${NOVA_CONF[@]}"
start nova-conductor nova-conductor "${NOVA_CONF[@]}"
start nova-scheduler nova-scheduler "${NOVA_CONF[@]}"
start nova-compute env PYTHONPATH="$D/pylib" "$D/bin/nova-compute" --config-file "$D/etc/nova.conf"
start cinder-api cinder-api --config-file "$D/etc/cinder.conf"
start cinder-scheduler cinder-scheduler --config-file "$D/etc/cinder.conf"
start cinder-volume env PYTHONPATH="$D/pylib" cinder-volume --config-file "$D/etc/cinder.conf"

# ----------------------------------------------------------------- readiness
wait_port rabbitmq $P_MQ 600
wait_http glance "http://$H:$P_GLANCE/"
wait_http placement "http://$H:$P_PLACEMENT/"
wait_http neutron "http://$H:$P_NEUTRON/"
wait_http nova-api "http://$H:$P_NOVA/"
wait_http cinder-api "http://$H:$P_CINDER/"
log "all APIs answer"

# ------------------------------------------------- wait for compute + volume
# Before a server can be scheduled, nova-compute must be up, have created its
# resource provider in placement, and its host must be mapped to cell1
# (`nova-manage cell_v2 discover_hosts`; the scheduler would also do it on its
# own every discover_hosts_in_cells_interval seconds, but only after a while).
# A volume can be created once cinder-volume has reported in.
cat >"$D/pylib/os_wait.py" <<'PYEOF'
"""os_wait.py CHECK... -- poll the APIs (admin creds from OS_* env) until each CHECK passes."""
import os, sys, time
from keystoneauth1.identity import v3
from keystoneauth1 import session
e = os.environ
s = session.Session(auth=v3.Password(auth_url=e['OS_AUTH_URL'], username=e['OS_USERNAME'],
    password=e['OS_PASSWORD'], project_name=e['OS_PROJECT_NAME'],
    user_domain_name='Default', project_domain_name='Default'))
def get(svc, path, **kw):
    return s.get(path, endpoint_filter={'service_type': svc}, **kw).json()
# After a restart the old heartbeat still reads "up" for a minute: when the
# service was (re)started by this run, also require a heartbeat newer than that.
def fresh(x, binary):
    since = e.get('OS_WAIT_SINCE_' + binary.replace('-', '_').upper(), '')
    return x['state'] == 'up' and (x.get('updated_at') or '')[:19] >= since
CHECKS = {
    'compute-up': lambda: any(fresh(x, 'nova-compute') for x in
                              get('compute', '/os-services?binary=nova-compute')['services']),
    'placement-rp': lambda: len(get('placement', '/resource_providers')['resource_providers']) > 0,
    # hypervisors are listed only once the host is mapped to a cell
    'hypervisor': lambda: len(get('compute', '/os-hypervisors')['hypervisors']) > 0,
    'volume-up': lambda: any(x['binary'] == 'cinder-volume' and fresh(x, 'cinder-volume') for x in
                             get('volumev3', '/os-services')['services']),
}
deadline = time.time() + float(e.get('OS_WAIT_TIMEOUT', '180'))
for name in sys.argv[1:]:
    while True:
        try:
            if CHECKS[name]():
                break
        except Exception as ex:
            print('  waiting for %s: %s' % (name, ex), file=sys.stderr)
        if time.time() > deadline:
            sys.exit('timed out waiting for ' + name)
        time.sleep(0.5)
PYEOF
since_env=()
case $STARTED in *" nova-compute "*) since_env+=(OS_WAIT_SINCE_NOVA_COMPUTE=$SINCE);; esac
case $STARTED in *" cinder-volume "*) since_env+=(OS_WAIT_SINCE_CINDER_VOLUME=$SINCE);; esac
os_wait() { env $(sed -n 's/^export //p' "$D/openrc-admin") "${since_env[@]}" $PY "$D/pylib/os_wait.py" "$@" >&2 || die "$* not ready; see $LOGD/"; }
os_wait compute-up placement-rp volume-up
# discover_hosts costs ~5 s (nova-manage start-up); a re-run whose compute
# host is mapped already skips it.
mapped() { env $(sed -n 's/^export //p' "$D/openrc-admin") OS_WAIT_TIMEOUT=0 $PY "$D/pylib/os_wait.py" hypervisor >/dev/null 2>&1; }
if ! mapped; then
  NM cell_v2 discover_hosts
  os_wait hypervisor
fi
for svc in mariadb epmd rabbitmq keystone glance placement neutron nova-api nova-conductor \
           nova-scheduler nova-compute cinder-api cinder-scheduler cinder-volume; do
  running $svc || die "$svc is not running; see $LOGD/$svc.out and the service log"
done
log "compute and volume services ready"

# ---------------------------------------------------------- test resources
# find-or-create, so it runs every time (~2 s). One python process
# (openstacksdk) instead of ~8 `openstack` CLI runs (~1.5 s each); the CLI
# equivalents are in the comments.
log "image, flavors, networks"
head -c 1048576 /dev/zero >"$D/tiny.img"
env $(sed -n 's/^export //p' "$D/openrc-admin") IMG_FILE="$D/tiny.img" $PY - >"$D/ids.tmp" <<'PYEOF' \
  || die "creating the test image/flavors/networks failed"
import os, openstack
c = openstack.connect()
# openstack image create --disk-format raw --container-format bare --public --file tiny.img tiny
img = c.image.find_image('tiny') or c.image.create_image(
    name='tiny', filename=os.environ['IMG_FILE'], disk_format='raw',
    container_format='bare', visibility='public', wait=True)
# openstack flavor create --id 1 --vcpus 1 --ram 256 --disk 1 m1.tiny  (and m1.small)
for fid, name, vcpus, ram, disk in (('1', 'm1.tiny', 1, 256, 1), ('2', 'm1.small', 2, 1024, 10)):
    if not c.compute.find_flavor(fid):
        c.compute.create_flavor(id=fid, name=name, vcpus=vcpus, ram=ram, disk=disk)
# openstack network create --share shared
# openstack subnet create --network shared --subnet-range 10.99.0.0/24 shared-subnet
net = c.network.find_network('shared') or c.network.create_network(name='shared', shared=True)
if not c.network.find_subnet('shared-subnet'):
    c.network.create_subnet(name='shared-subnet', network_id=net.id, ip_version=4, cidr='10.99.0.0/24')
# an external network for routers / floating IPs (documentation range; no
# traffic ever flows, there is no data plane)
# openstack network create --external --provider-network-type flat --provider-physical-network public public
# openstack subnet create --network public --subnet-range 203.0.113.0/24 --no-dhcp public-subnet
ext = c.network.find_network('public') or c.network.create_network(
    name='public', is_router_external=True, provider_network_type='flat',
    provider_physical_network='public')
if not c.network.find_subnet('public-subnet'):
    c.network.create_subnet(name='public-subnet', network_id=ext.id, ip_version=4,
                            cidr='203.0.113.0/24', is_dhcp_enabled=False)
print('export OS_TEST_IMAGE_ID=%s' % img.id)
print('export OS_TEST_FLAVOR_ID=1')
print('export OS_TEST_NETWORK_ID=%s' % net.id)
print('export OS_TEST_EXTERNAL_NETWORK_ID=%s' % ext.id)
PYEOF
mv "$D/ids.tmp" "$D/ids"

# ------------------------------------------------------------------ Coffer
# What Coffer's OpenStack provider runs as and on, find-or-create: the
# service user (member of the service project, like Trove's; it needs no
# admin role), the management network its instances' ports go on, and no
# quota limits in the service project (all instances of all tenants live
# there; Coffer enforces its own per-tenant quotas).
if ! once coffer-setup || [ ! -s "$D/coffer.env" ]; then
log "coffer: service user, management network, service project quotas"
env $(sed -n 's/^export //p' "$D/openrc-admin") COFFER_PW="$COFFER_PW" $PY - >"$D/coffer.tmp" <<'PYEOF' \
  || die "creating Coffer's user/network/quotas failed"
import os, openstack
c = openstack.connect()
svc = c.identity.find_project('service', domain_id='default')
member = c.identity.find_role('member')
user = c.identity.find_user('coffer', domain_id='default') or c.identity.create_user(
    name='coffer', password=os.environ['COFFER_PW'], domain_id='default',
    default_project_id=svc.id)
c.identity.assign_project_role_to_user(svc, user, member)  # a PUT: idempotent
# openstack network create --project service coffer-mgmt
# openstack subnet create --project service --network coffer-mgmt --subnet-range 10.98.0.0/22 coffer-mgmt-subnet
net = c.network.find_network('coffer-mgmt', project_id=svc.id) or c.network.create_network(
    name='coffer-mgmt', project_id=svc.id)
if not c.network.find_subnet('coffer-mgmt-subnet', project_id=svc.id):
    c.network.create_subnet(name='coffer-mgmt-subnet', network_id=net.id, project_id=svc.id,
                            ip_version=4, cidr='10.98.0.0/22')
c.set_compute_quotas(svc.id, instances=-1, cores=-1, ram=-1)
c.set_volume_quotas(svc.id, volumes=-1, gigabytes=-1, snapshots=-1)
c.set_network_quotas(svc.id, port=-1, security_group=-1, security_group_rule=-1)
print('export COFFER_OS_NETWORK_ID=%s' % net.id)
PYEOF
{
  echo "export COFFER_OS_AUTH_URL=$KS_URL"
  echo "export COFFER_OS_USERNAME=coffer"
  echo "export COFFER_OS_PASSWORD=$COFFER_PW"
  echo "export COFFER_OS_PROJECT_NAME=service"
  echo "export COFFER_OS_USER_DOMAIN_NAME=Default"
  echo "export COFFER_OS_PROJECT_DOMAIN_NAME=Default"
  echo "export COFFER_OS_REGION=$REGION"
  cat "$D/coffer.tmp"
} >"$D/coffer.env"
rm -f "$D/coffer.tmp"
done_ coffer-setup
fi

log "up: $KS_URL (data in $D)"
cat "$D/openrc-admin" "$D/ids" "$D/coffer.env"
echo "export OS_DATA_DIR=$D"
