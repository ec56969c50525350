#!/usr/bin/env bash
# Generates TypeScript from proto/ into src/gen/ with ts-proto (grpc-js services).
# With --check, generates into a temporary folder and fails when src/gen/ differs: the
# generated code is committed, and this check keeps it honest against proto/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
plugin="$root/node_modules/.bin/protoc-gen-ts_proto"
[ -x "$plugin" ] || { echo "ts-proto not installed: run npm ci" >&2; exit 1; }

out="src/gen"
if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi

opts="outputServices=grpc-js,env=node,forceLong=number,esModuleInterop=true,useOptionals=messages,useDate=true,oneof=unions-value,exportCommonSymbols=false"
mapfile -t files < <(find proto -name '*.proto' | sort)
[ "$out" = "src/gen" ] && rm -rf src/gen && mkdir -p src/gen
protoc --plugin="protoc-gen-ts_proto=$plugin" --ts_proto_out="$out" --ts_proto_opt="$opts" \
  -I proto "${files[@]}"
# protoc stamps its own version into each file; drop it so output depends on proto/ only.
find "$out" -name '*.ts' -exec sed -i '/^\/\/   protoc /d; /^\/\/   protoc-gen-ts_proto /d' {} +

if [ "${1:-}" = "--check" ]; then
  if ! diff -r -q "$out" src/gen >/dev/null; then
    echo "src/gen is stale against proto/: run 'npm run proto' and commit the result" >&2
    diff -r "$out" src/gen | head -40 >&2 || true
    exit 1
  fi
  echo "src/gen is up to date with proto/"
fi
