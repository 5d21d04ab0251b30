#!/usr/bin/env bash
# abi-check.sh LIB ABI_DUMP: the ctest `abi`. Compares the built libmemcg-c.so with the
# committed dump of the last release (abi/libmemcg-c.abi, made by `abi-check.sh --update`) with
# abidiff, over what the library exports (memcg_* functions and the types they reach; the
# handles are opaque). Fails on a removed or changed symbol and on a changed type (a struct's
# layout, an enum's values); added symbols are compatible. Needs the library's debug info.
# Exits 77 (ctest: skipped) when abidiff is not installed (Debian: abigail-tools).
#   abi-check.sh --update LIB ABI_DUMP   writes the dump (at a release)
set -euo pipefail
update=0
if [[ ${1:-} == --update ]]; then update=1; shift; fi
lib=${1:?library}; dump=${2:?abi dump}
if ! command -v abidw >/dev/null || ! command -v abidiff >/dev/null; then
  echo "abi: abidiff/abidw not found (apt-get install abigail-tools); skipped" >&2
  exit 77
fi
if ! readelf -S "$lib" | grep -q '\.debug_info'; then
  echo "abi: $lib has no debug info (build with -g, e.g. RelWithDebInfo); skipped" >&2
  exit 77
fi
if [[ $update == 1 ]]; then
  abidw --exported-interfaces-only --no-show-locs --no-corpus-path --out-file "$dump" "$lib"
  echo "abi: wrote $dump"
  exit 0
fi
if [[ ! -f $dump ]]; then
  echo "abi: no dump at $dump (scripts/abi-check.sh --update LIB $dump)" >&2
  exit 1
fi
set +e
abidiff --exported-interfaces-only --no-added-syms "$dump" "$lib"
rc=$?
set -e
# abidiff's status is a bit set: 1 error, 2 usage, 4 an ABI change, 8 an incompatible change.
if [[ $rc -ne 0 ]]; then
  echo "abi: libmemcg-c's ABI differs from $dump (abidiff status $rc)" >&2
  exit 1
fi
echo "abi: libmemcg-c matches $dump"
