#!/usr/bin/env bash
# Lints api/openapi.json with Redocly's recommended rules. Redocly CLI comes from the npm
# registry, pinned, into a temporary directory (nothing is added to the repository).
# api/redocly.yaml says which rules are set otherwise, and why. `make openapi-lint` and CI
# run this.
set -euo pipefail
cd "$(dirname "$0")"
REDOCLY=@redocly/cli@2.77.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --silent --no-audit --no-fund --prefix "$tmp" "$REDOCLY" >/dev/null
"$tmp/node_modules/.bin/redocly" lint --config redocly.yaml --format "${FORMAT:-codeframe}" "$@" openapi.json
