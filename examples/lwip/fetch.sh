#!/usr/bin/env bash
# fetch.sh DEST: unpacks Debian's lwIP source package (bookworm, lwip 2.1.3) into DEST, once, and
# prints the source directory (scripts/fetch-source.sh). Nothing of lwIP enters this repository.
exec "$(dirname "${BASH_SOURCE[0]}")/../../scripts/fetch-source.sh" lwip "${1:?usage: fetch.sh DEST}"
