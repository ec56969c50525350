#!/usr/bin/env bash
# Provisions one host of the lab (a Vagrant VM): Debian packages, Node.js, the project's build.
# The namespace lab and CI run the same installation through scripts/setup.sh.
# Environment (set by the Vagrantfile): CLUSTER_ROLE, CLUSTER_NODE_NAME, CLUSTER_ADVERTISE_ADDR,
# CLUSTER_FIRST_MANAGER, CLUSTER_FIRST_MANAGER_ADDR.
set -euo pipefail
src="${CLUSTER_SRC:-/vagrant}"
cd "$src"

# Node.js 20.19 or newer: Debian 12's own nodejs is 18, so a VM without a suitable Node takes
# the current LTS from the distribution's backports or the host's package source.
if ! command -v node >/dev/null || ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "provision: Node.js >= 20.19 is needed on this VM; install it (for example from your distribution's or Node's package source) and re-run 'vagrant provision'" >&2
  exit 1
fi

bash scripts/setup.sh

# Starting the node as a systemd service and init/join come with the control plane (see
# README.md, "Multi-VM lab"): until then the VM is provisioned and built, and says so.
echo "provision: ${CLUSTER_NODE_NAME:-host} (${CLUSTER_ROLE:-worker}) is built; 'cluster init'/'join' come with the control plane"
