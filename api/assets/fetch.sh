#!/usr/bin/env bash
# Fetches the pinned npm packages the pages use, checks every file against SHA256SUMS and
# writes them here, where the daemon embeds them (go:embed). The files are committed, so
# building the daemon needs neither npm nor the network. `make assets` runs this.
#
# To move to another version: change a version below, run `api/assets/fetch.sh -update`
# (it rewrites SHA256SUMS from what the registry served, after npm has checked the
# package's registry integrity), review the diff, then run `make assets` again.
set -euo pipefail
cd "$(dirname "$0")"

VIZ=@viz-js/viz@3.31.0
SWAGGER=swagger-ui-dist@5.35.0
# package  file in the package  file written here (viz-global.js carries its own licence
# header: the package has no LICENSE file)
FILES=(
  "$VIZ package/dist/viz-global.js viz-global.js"
  "$SWAGGER package/swagger-ui-bundle.js swagger-ui-bundle.js"
  "$SWAGGER package/swagger-ui.css swagger-ui.css"
  "$SWAGGER package/LICENSE swagger-ui.LICENSE"
  "$SWAGGER package/NOTICE swagger-ui.NOTICE"
)

update=false
[ "${1:-}" = -update ] && update=true

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for pkg in "$VIZ" "$SWAGGER"; do
  dir="$tmp/$(echo "$pkg" | tr '@/' '__')"
  mkdir -p "$dir"
  # npm pack checks the tarball against the registry's integrity hash.
  (cd "$dir" && npm pack --silent "$pkg" >/dev/null && tar xzf ./*.tgz)
done

sums="$tmp/SHA256SUMS"
: >"$sums"
for entry in "${FILES[@]}"; do
  read -r pkg src dst <<<"$entry"
  dir="$tmp/$(echo "$pkg" | tr '@/' '__')"
  cp "$dir/$src" "$tmp/$dst"
  (cd "$tmp" && sha256sum "$dst") >>"$sums"
done

if $update; then
  cp "$sums" SHA256SUMS
  echo "SHA256SUMS rewritten; review it with git diff" >&2
fi
# Every file must be exactly what SHA256SUMS records, and SHA256SUMS must list no other.
(cd "$tmp" && sha256sum --quiet -c "$OLDPWD/SHA256SUMS")
if ! diff -q <(cut -d' ' -f3 SHA256SUMS | sort) <(cut -d' ' -f3 "$sums" | sort) >/dev/null; then
  echo "SHA256SUMS does not list exactly the files fetched" >&2
  exit 1
fi
for entry in "${FILES[@]}"; do
  read -r _ _ dst <<<"$entry"
  cp "$tmp/$dst" "$dst"
done
echo "assets written and checked: $(cut -d' ' -f3 SHA256SUMS | tr '\n' ' ')" >&2
