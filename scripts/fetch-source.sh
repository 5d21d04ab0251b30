#!/usr/bin/env bash
# fetch-source.sh PACKAGE DEST: unpacks Debian's source package PACKAGE (bookworm, with Debian's
# patches applied) into DEST, once, and prints the source directory. Uses a temporary deb-src
# list and a private apt state directory, so it works on a fresh Debian 12 without deb-src lines
# and leaves the system's lists alone; needs apt-get and dpkg-source (dpkg-dev). Nothing fetched
# enters this repository.
set -euo pipefail
pkg=${1:?usage: fetch-source.sh PACKAGE DEST}
dest=${2:?usage: fetch-source.sh PACKAGE DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
# One fetch at a time per destination: ctest runs the tests that share a source tree (the lwIP
# example and the installed-package test) in parallel.
exec 9>"$dest/.$pkg.lock"
flock 9
if [[ -f "$dest/.$pkg-dir" ]] && [[ -d $(cat "$dest/.$pkg-dir") ]]; then
  cat "$dest/.$pkg-dir"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  > "$tmp/memcg-src.sources"
opts=(-o Dir::Etc::sourcelist="$tmp/memcg-src.sources" -o Dir::Etc::sourceparts=-)
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
opts+=(-o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Get::List-Cleanup=0)
apt-get "${opts[@]}" update -qq >&2
work="$dest/.download-$pkg"
rm -rf "$work" && mkdir -p "$work"
(cd "$work" && apt-get "${opts[@]}" source --only-source "$pkg" >&2)
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
[[ -n "$src" ]] || { echo "fetch-source: no source directory for $pkg" >&2; exit 1; }
rm -rf "$dest/$(basename "$src")"
mv "$src" "$dest/"
rm -rf "$work"
echo "$dest/$(basename "$src")" > "$dest/.$pkg-dir"
echo "$dest/$(basename "$src")"
