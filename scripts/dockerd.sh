#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock: starts Debian's dockerd in the
# background when none runs (logs in /var/log/cluster-dockerd.log). Prints the engine version.
set -euo pipefail
docker_cli="$(command -v docker || true)"
[ -n "$docker_cli" ] || { echo "docker CLI not found: apt-get install docker.io" >&2; exit 1; }

if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  docker version --format 'docker engine {{.Server.Version}} (already running)'
  exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "starting dockerd needs root" >&2; exit 1; }

log=/var/log/cluster-dockerd.log
# Detach from our session so the engine outlives this script (as a service would).
setsid nohup dockerd >"$log" 2>&1 </dev/null &
for _ in $(seq 1 120); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    docker version --format 'docker engine {{.Server.Version}} (started, log in '"$log"')'
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -20 "$log" >&2 || true
exit 1
