#!/usr/bin/env bash
# Generates TypeScript from proto/ into src/gen/ with ts-proto (grpc-js services).
# With --check, generates into a temporary folder and fails when src/gen/ differs: the
# generated code is committed, and this check keeps it honest against proto/.
# PROTO_DIR and GEN_DIR override the folders (the staleness test uses copies).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
proto_dir="${PROTO_DIR:-proto}"
gen_dir="${GEN_DIR:-src/gen}"

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
plugin="$root/node_modules/.bin/protoc-gen-ts_proto"
[ -x "$plugin" ] || { echo "ts-proto not installed: run npm ci" >&2; exit 1; }

out="$gen_dir"
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi

opts="outputServices=grpc-js,env=node,forceLong=number,esModuleInterop=true,useOptionals=messages,useDate=true,oneof=unions-value,exportCommonSymbols=false"
mapfile -t files < <(cd "$proto_dir" && find . -name '*.proto' | sed 's|^\./||' | sort)
if [ "$out" = "$gen_dir" ]; then rm -rf "$gen_dir" && mkdir -p "$gen_dir"; fi
protoc --plugin="protoc-gen-ts_proto=$plugin" --ts_proto_out="$out" --ts_proto_opt="$opts" \
  -I "$proto_dir" "${files[@]}"
# protoc stamps its own version into each file; drop it so output depends on proto/ only.
find "$out" -name '*.ts' -exec sed -i '/^\/\/   protoc /d; /^\/\/   protoc-gen-ts_proto /d' {} +

if [ "${1:-}" = "--check" ]; then
  if ! diff -r -q "$out" "$gen_dir" >/dev/null; then
    echo "$gen_dir is stale against $proto_dir/: run 'npm run proto' and commit the result" >&2
    diff -r "$out" "$gen_dir" | head -40 >&2 || true
    exit 1
  fi
  echo "$gen_dir is up to date with $proto_dir/"
fi
