#!/usr/bin/env bash
# The npm tools the tests run (tests/npm/package.json, pinned by its package-lock.json):
# installed once per machine into a cache outside the work tree, in a folder named by the
# lock file's hash, so that a fresh clone (CI) reuses it and a changed lock installs anew.
# Prints the folder; its node_modules/.bin holds the tools.
# FACILITIES_NPM_CACHE overrides the cache (default ${XDG_CACHE_HOME:-~/.cache}/facilities-npm).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
spec="$here/tests/npm"
cache="${FACILITIES_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/facilities-npm}"
hash="$(cat "$spec/package.json" "$spec/package-lock.json" | sha256sum | cut -c1-16)"
dest="$cache/$hash"

if [ ! -e "$dest/.installed" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "setup-npm: npm is missing: run 'sudo apt-get install nodejs npm' and retry" >&2
        exit 1
    fi
    echo "setup-npm: installing the tests' npm tools into $dest" >&2
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/.install-XXXXXX")"
    cp "$spec/package.json" "$spec/package-lock.json" "$tmp/"
    (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$tmp/.installed"
    # another process may have finished first: keep its folder
    mv -T "$tmp" "$dest" 2>/dev/null || rm -rf "$tmp"
fi
echo "$dest"
