#!/usr/bin/env bash
# Provisions one host of a lab: Debian packages and the build (the same scripts/setup.sh CI
# runs), `cluster daemon` as a systemd service, then `cluster init` on the first manager or
# `cluster join` on the others. The first manager leaves the join tokens in the shared folder
# CLUSTER_SHARED for the others to read.
#
# The Vagrant VMs run all of it. The namespace lab (scripts/lab up) runs it too, on every host,
# with PROVISION_SETUP=0 (the lab's machine is already set up) and PROVISION_DAEMON=0 (the lab
# starts each host's daemon in its namespace): so init, the token hand-over and the joins the
# VMs do are the ones CI exercises.
#
# Environment (set by the Vagrantfile or scripts/lab): CLUSTER_ROLE, CLUSTER_NODE_NAME,
# CLUSTER_ADVERTISE_ADDR, CLUSTER_FIRST_MANAGER (1 on the first manager), CLUSTER_SHARED,
# CLUSTER_SRC (the project, /vagrant), CLUSTER_DATA_DIR (/var/lib/cluster), CLUSTER_PORT (4242),
# PROVISION_SETUP (1), PROVISION_DAEMON (1), PROVISION_TOKEN_WAIT_S (300).
set -euo pipefail
src="${CLUSTER_SRC:-/vagrant}"
shared="${CLUSTER_SHARED:-/cluster-shared}"
role="${CLUSTER_ROLE:-worker}"
name="${CLUSTER_NODE_NAME:-$(hostname)}"
data="${CLUSTER_DATA_DIR:-/var/lib/cluster}"
port="${CLUSTER_PORT:-4242}"
token_wait="${PROVISION_TOKEN_WAIT_S:-300}"
case "$role" in manager|worker) ;; *) echo "provision: CLUSTER_ROLE must be manager or worker, not '$role'" >&2; exit 2 ;; esac
cd "$src"

# Node.js 20.19 or newer: Debian 12's own nodejs is 18.
if ! command -v node >/dev/null || ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "provision: Node.js >= 20.19 is needed on this host; install it (for example from your distribution's or Node's package source) and re-run 'vagrant provision'" >&2
  exit 1
fi

[ "${PROVISION_SETUP:-1}" = 0 ] || bash scripts/setup.sh

# The address other hosts reach this one at: the one given, or the address on the lab network
# (not VirtualBox's NAT address 10.0.2.x).
addr="${CLUSTER_ADVERTISE_ADDR:-}"
if [ -z "$addr" ]; then
  addr="$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | grep -v '^10\.0\.2\.' | head -1)"
fi
[ -n "$addr" ] || { echo "provision: cannot tell this host's lab address; set CLUSTER_IP_BASE" >&2; exit 1; }

if [ "${PROVISION_DAEMON:-1}" != 0 ]; then
  cat >/etc/systemd/system/cluster.service <<UNIT
[Unit]
Description=cluster daemon ($name)
After=network-online.target docker.service
Wants=network-online.target

[Service]
# The script itself, not node SCRIPT: its first line carries the daemon's V8 flags.
Environment=PATH=$(dirname "$(command -v node)"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ExecStart=$src/bin/cluster.js daemon --data-dir $data --listen-addr $addr:$port --advertise-addr $addr
Restart=on-failure
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now cluster.service
fi
for _ in $(seq 1 100); do [ -S "$data/cluster.sock" ] && break; sleep 0.2; done
[ -S "$data/cluster.sock" ] || { echo "provision: the daemon's socket $data/cluster.sock did not appear" >&2; exit 1; }
cluster() { CLUSTER_HOST="unix://$data/cluster.sock" node "$src/bin/cluster.js" "$@"; }

state="$(cluster --format json info 2>/dev/null || true)"
if echo "$state" | grep -q '"active"'; then
  echo "provision: $name is already in a cluster"
  exit 0
fi

if [ "${CLUSTER_FIRST_MANAGER:-0}" = 1 ]; then
  [ "$role" = manager ] || { echo "provision: the first manager must have CLUSTER_ROLE=manager" >&2; exit 2; }
  cluster init --advertise-addr "$addr" --listen-addr "$addr:$port" >/dev/null
  mkdir -p "$shared"
  # Written to a temporary name and renamed: a host reading it never sees half a token.
  cluster join-token -q worker >"$shared/.worker.token.tmp" && mv "$shared/.worker.token.tmp" "$shared/worker.token"
  cluster join-token -q manager >"$shared/.manager.token.tmp" && mv "$shared/.manager.token.tmp" "$shared/manager.token"
  echo "$addr:$port" >"$shared/.manager.addr.tmp" && mv "$shared/.manager.addr.tmp" "$shared/manager.addr"
else
  for _ in $(seq 1 $((token_wait * 5))); do [ -s "$shared/$role.token" ] && [ -s "$shared/manager.addr" ] && break; sleep 0.2; done
  [ -s "$shared/$role.token" ] || { echo "provision: no $role token in $shared after ${token_wait} s: provision the first manager first" >&2; exit 1; }
  cluster join --token "$(cat "$shared/$role.token")" --advertise-addr "$addr" --listen-addr "$addr:$port" "$(cat "$shared/manager.addr")" >/dev/null
fi
echo "provision: $name ($role) is up"
