#!/usr/bin/env bash
# fetch.sh DEST: unpacks Debian's lwIP source package (bookworm, lwip 2.1.3) into DEST, once.
# Prints the source directory. Uses a temporary deb-src list, so it works on machines without
# deb-src lines; needs apt-get and dpkg-source (dpkg-dev). Nothing of lwIP enters this repository.
set -euo pipefail
dest=${1:?usage: fetch.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
existing=$(ls -d "$dest"/lwip-*/src/core 2>/dev/null | head -n1 || true)
if [[ -n "$existing" ]]; then
  dirname "$(dirname "$existing")"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  > "$tmp/memcg-src.sources"
opts=(-o Dir::Etc::sourcelist="$tmp/memcg-src.sources" -o Dir::Etc::sourceparts=-)
# Lists go to a private state directory: no root needed, the system's lists are untouched.
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
opts+=(-o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Get::List-Cleanup=0)
apt-get "${opts[@]}" update -qq >&2
work="$dest/.download"
rm -rf "$work" && mkdir -p "$work"
(cd "$work" && apt-get "${opts[@]}" source lwip >&2)
src=$(ls -d "$work"/lwip-*/src/core | head -n1)
src=$(dirname "$(dirname "$src")")
mv "$src" "$dest/"
rm -rf "$work"
echo "$dest/$(basename "$src")"
