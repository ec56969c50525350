#!/usr/bin/env bash
# Provisions one host of the multi-VM lab (a Vagrant VM): Debian packages, the build (the same
# scripts/setup.sh CI runs), `cluster daemon` as a systemd service, then `cluster init` on the
# first manager or `cluster join` on the others. The first manager leaves the join tokens in
# the shared folder CLUSTER_SHARED (a two-way synced folder) for the others to read.
# Environment (set by the Vagrantfile): CLUSTER_ROLE, CLUSTER_NODE_NAME, CLUSTER_ADVERTISE_ADDR,
# CLUSTER_FIRST_MANAGER, CLUSTER_FIRST_MANAGER_ADDR, CLUSTER_SHARED.
set -euo pipefail
src="${CLUSTER_SRC:-/vagrant}"
shared="${CLUSTER_SHARED:-/cluster-shared}"
role="${CLUSTER_ROLE:-worker}"
name="${CLUSTER_NODE_NAME:-$(hostname)}"
cd "$src"

# Node.js 20.19 or newer: Debian 12's own nodejs is 18.
if ! command -v node >/dev/null || ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "provision: Node.js >= 20.19 is needed on this VM; install it (for example from your distribution's or Node's package source) and re-run 'vagrant provision'" >&2
  exit 1
fi

bash scripts/setup.sh

# The address other hosts reach this one at: the one given, or the address on the lab network.
addr="${CLUSTER_ADVERTISE_ADDR:-}"
if [ -z "$addr" ]; then
  addr="$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | grep -v '^10\.0\.2\.' | head -1)"
fi
[ -n "$addr" ] || { echo "provision: cannot tell this VM's lab address; set CLUSTER_IP_BASE" >&2; exit 1; }

cat >/etc/systemd/system/cluster.service <<UNIT
[Unit]
Description=cluster daemon ($name)
After=network-online.target docker.service
Wants=network-online.target

[Service]
ExecStart=$(command -v node) $src/bin/cluster.js daemon --data-dir /var/lib/cluster --listen-addr $addr:4242 --advertise-addr $addr
Restart=on-failure
KillMode=process

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now cluster.service
for _ in $(seq 1 100); do [ -S /var/lib/cluster/cluster.sock ] && break; sleep 0.2; done
cluster() { node "$src/bin/cluster.js" "$@"; }

state="$(cluster --format json info 2>/dev/null || true)"
if echo "$state" | grep -q '"active"'; then
  echo "provision: $name is already in a cluster"
  exit 0
fi

if [ "${CLUSTER_FIRST_MANAGER:-0}" = 1 ]; then
  cluster init --advertise-addr "$addr"
  mkdir -p "$shared"
  cluster join-token -q worker >"$shared/worker.token"
  cluster join-token -q manager >"$shared/manager.token"
  echo "$addr:4242" >"$shared/manager.addr"
else
  for _ in $(seq 1 150); do [ -s "$shared/$role.token" ] && break; sleep 2; done
  [ -s "$shared/$role.token" ] || { echo "provision: no $role token in $shared: provision the first manager first" >&2; exit 1; }
  cluster join --token "$(cat "$shared/$role.token")" --advertise-addr "$addr" "$(cat "$shared/manager.addr")"
fi
echo "provision: $name ($role) is up: 'vagrant ssh $name -c \"sudo node $src/bin/cluster.js node ls\"'"
