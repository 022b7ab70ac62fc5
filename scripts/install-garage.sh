#!/usr/bin/env bash
# Builds the Garage S3 store once per version and caches the binary outside
# the checkout. Prints the binary's path on stdout; build output goes to
# stderr. Only the features a test cluster needs are built (LMDB metadata,
# bundled C libraries): no sqlite, metrics, K2V or discovery back-ends.
set -euo pipefail

version="${GARAGE_VERSION:-2.5.0}"
cache="${PARTSEAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/partseal}/garage-$version"
bin="$cache/bin/garage"

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
echo "building garage $version into $cache (only once per version)" >&2
# A private target directory, so an interrupted build resumes where it stopped.
CARGO_TARGET_DIR="$cache/target" cargo install garage --version "$version" --locked \
  --no-default-features --features bundled-libs,lmdb \
  --root "$cache" >&2
rm -rf "$cache/target"
"$bin" --version >&2
echo "$bin"
