#!/usr/bin/env bash
# Vendors the map page's third-party files into python/georag/serving/static/vendor (run once, by hand, when
# upgrading them; the package ships the result, so users need no npm and no internet):
#   leaflet 1.9.4 (BSD-2-Clause): the map; topojson-client 3.1.0 (ISC): TopoJSON -> GeoJSON in the browser;
#   world-atlas 2.0.2 (ISC; data: Natural Earth, public domain): countries-110m.json, the country outlines.
# Each tarball comes from the npm registry (`npm pack`, which checks the registry's integrity hash) and is
# checked again against the sha512 pinned here, so the vendored bytes are exactly the published ones.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=python/georag/serving/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # name@version sha512-base64 -> unpacked under $work/name
  local spec=$1 want=$2 name=${1%@*}
  (cd "$work" && npm pack --silent "$spec" >/dev/null)
  local tgz=("$work/${name}-"*.tgz)
  local got
  got=$(openssl dgst -sha512 -binary "${tgz[0]}" | base64 -w0)
  if [ "$got" != "$want" ]; then
    echo "$spec: sha512 $got, expected $want" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar xzf "${tgz[0]}" -C "$work/$name" --strip-components=1
}

fetch leaflet@1.9.4 "nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA=="
fetch topojson-client@3.1.0 "605uxS6bcYxGXw9qi62XyrV6Q3xwbndjachmNxu8HWTtVPxZfEJN9fd/SZS1Q54Sn2y0TMyMxFj/cJINqGHrKw=="
fetch world-atlas@2.0.2 "IXfV0qwlKXpckz1FhwXVwKRjiIhOnWttOskm5CtxMsjgE/MXAYRHWJqgXOpM8IkcPBoXnyTU5lFHcYa5ChG0LQ=="

rm -rf "$dest/leaflet" "$dest/topojson-client" "$dest/world-atlas"  # README.md stays
mkdir -p "$dest/leaflet" "$dest/topojson-client" "$dest/world-atlas"
cp "$work/leaflet/dist/leaflet.js" "$work/leaflet/dist/leaflet.css" "$work/leaflet/LICENSE" "$dest/leaflet/"
cp "$work/topojson-client/dist/topojson-client.min.js" "$work/topojson-client/LICENSE" "$dest/topojson-client/"
cp "$work/world-atlas/countries-110m.json" "$work/world-atlas/LICENSE" "$dest/world-atlas/"
du -sh "$dest"
