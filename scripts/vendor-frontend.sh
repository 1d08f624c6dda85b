#!/usr/bin/env bash
# Re-vendor the browser assets GraphiQL needs into gateway/http/static/vendor/, from the npm
# registry, at the versions pinned below. Needs only `npm` (for `npm pack`) and `tar`.
#
#   scripts/vendor-frontend.sh
#
# Each package lands in its own versioned folder (<name>@<version>/), so the gateway can serve
# it with an immutable cache header; bumping a version changes every URL. After a bump, update
# VENDOR in gateway/http/pages.py and the table in gateway/http/static/vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=gateway/http/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package version files-to-copy (paths inside the package tarball)
packages=(
  "react 18.2.0 umd/react.production.min.js LICENSE"
  "react-dom 18.2.0 umd/react-dom.production.min.js LICENSE"
  "graphiql 3.8.3 graphiql.min.js graphiql.min.css LICENSE"
  "@graphiql/plugin-explorer 1.0.2 dist/index.umd.js dist/style.css"
  "graphql-ws 5.16.2 umd/graphql-ws.min.js LICENSE.md"
)

rm -rf "$dest"/*@*/
for entry in "${packages[@]}"; do
  read -r name version files <<<"$entry"
  folder="$dest/${name//\//-}@$version"
  folder="${folder/@graphiql-/graphiql-}"
  mkdir -p "$folder" "$work/$name"
  tarball=$(cd "$work" && npm pack --silent "$name@$version" | tail -1)
  tar -xzf "$work/$tarball" -C "$work/$name"
  for file in $files; do
    cp "$work/$name/package/$file" "$folder/$(basename "$file")"
  done
  echo "$name@$version ($tarball) -> $folder"
done

# @graphiql/plugin-explorer ships no licence file; it is MIT (its package.json) and lives in
# the GraphiQL monorepo, whose licence text graphiql's tarball carries.
cp "$dest/graphiql@3.8.3/LICENSE" "$dest/graphiql-plugin-explorer@1.0.2/LICENSE"

(cd "$dest" && sha256sum */* > SHA256SUMS)
echo "vendored into $dest (checksums in $dest/SHA256SUMS)"
