#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine (root), then builds it:
# Debian packages (apt-get), npm packages (npm ci), the TypeScript build, a running Docker
# engine and the local test images. Safe to run again: it skips what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

packages=(protobuf-compiler iproute2 nftables docker.io busybox-static runc tini openssl ca-certificates vagrant wrk haproxy docker-registry)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v node >/dev/null || { echo "setup: Node.js >= 20.19 is required" >&2; exit 1; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (!(a>20||(a===20&&b>=19))) { console.error("setup: Node.js >= 20.19 is required, found " + process.version); process.exit(1) }'

echo "setup: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build"
npm run --silent build
bash scripts/make-images.sh
