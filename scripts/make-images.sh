#!/usr/bin/env bash
# Builds the local test images without a registry: a root filesystem from Debian's
# busybox-static, `docker import`ed under these tags, each serving different content with
# `httpd -f -p 80 -h /www`:
#   local/busybox:1  /www/index.html = "hello v1"
#   local/busybox:2  /www/index.html = "hello v2"
#   local/busybox:3  /www/index.html = "hello v3"
# Every image also has /www/health ("ok") for HTTP healthchecks and /www/version (1, 2, 3).
# Existing tags are kept unless FORCE=1. Starts dockerd when it is not running.
# Usage: make-images.sh [--rootfs-only DIR]   (--rootfs-only writes the v1 tree to DIR and stops)
#        make-images.sh --oci DATA_DIR...     (the same three images, with the same CMD, imported
#        into the oci runtime's store of each node data dir: `cluster image import`; no dockerd)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
busybox=/usr/bin/busybox
[ -x "$busybox" ] || { echo "need Debian's busybox-static (/usr/bin/busybox): apt-get install busybox-static" >&2; exit 1; }
# busybox-static is one static binary; the dynamic 'busybox' package would not run in an empty root.
if ldd "$busybox" >/dev/null 2>&1; then
  echo "$busybox is dynamically linked: install busybox-static (apt-get install busybox-static)" >&2
  exit 1
fi

make_rootfs() {
  local dir=$1 version=$2
  mkdir -p "$dir"/{bin,www,etc,proc,sys,dev,tmp,root}
  cp "$busybox" "$dir/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
  echo "hello v$version" >"$dir/www/index.html"
  echo "ok" >"$dir/www/health"
  echo "$version" >"$dir/www/version"
  echo "root:x:0:0:root:/root:/bin/sh" >"$dir/etc/passwd"
  echo "root:x:0:" >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
}

if [ "${1:-}" = "--rootfs-only" ]; then
  [ -n "${2:-}" ] || { echo "usage: make-images.sh --rootfs-only DIR" >&2; exit 2; }
  make_rootfs "$2" 1
  exit 0
fi

if [ "${1:-}" = "--oci" ]; then
  shift
  [ $# -gt 0 ] || { echo "usage: make-images.sh --oci DATA_DIR..." >&2; exit 2; }
  cli="$here/../bin/cluster.js"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  for version in 1 2 3; do
    make_rootfs "$work/v$version" "$version"
    tar -C "$work/v$version" -cf "$work/v$version.tar" .
  done
  for dir in "$@"; do
    for version in 1 2 3; do
      tag="local/busybox:$version"
      if [ "${FORCE:-0}" != 1 ] && node "$cli" image ls -q --data-dir "$dir" | grep -qxF "$tag"; then
        echo "exists: $tag in $dir"
        continue
      fi
      node "$cli" image import --data-dir "$dir" \
        --change 'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]' --change 'WORKDIR /' \
        "$work/v$version.tar" "$tag" >/dev/null
      echo "imported: $tag into $dir"
    done
  done
  exit 0
fi

bash "$here/dockerd.sh" >/dev/null
for version in 1 2 3; do
  tag="local/busybox:$version"
  if docker image inspect "$tag" >/dev/null 2>&1 && [ "${FORCE:-0}" != 1 ]; then
    echo "exists: $tag"
    continue
  fi
  tmp="$(mktemp -d)"
  make_rootfs "$tmp" "$version"
  tar -C "$tmp" -c . | docker import \
    --change 'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]' \
    --change 'WORKDIR /' \
    --change 'EXPOSE 80' \
    - "$tag" >/dev/null
  rm -rf "$tmp"
  echo "built: $tag"
done
