#!/usr/bin/env bash
# Runs every test CI runs, on a fresh machine too: setup (packages, npm ci, build, dockerd,
# images), the generated-code staleness check, lint, unit tests (npm test), then the
# end-to-end tests on real parts (npm run test:cluster). Stops at the first failing stage.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

stage() { printf '\n=== %s ===\n' "$*"; }

stage "setup"
bash scripts/setup.sh
stage "generated code is up to date with proto/"
npm run --silent proto:check
stage "lint"
npm run --silent lint
stage "unit tests (npm test)"
npm test --silent
stage "cluster tests (npm run test:cluster)"
npm run --silent test:cluster
