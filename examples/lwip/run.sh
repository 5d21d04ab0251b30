#!/usr/bin/env bash
# run.sh SOURCE_DIR WORK_DIR C_COMPILER CXX_COMPILER: the ctest test example/lwip. Fetches lwIP
# once into WORK_DIR (fetch.sh), builds this directory's project (lwIP, the port in ports/lwip,
# the test) there and runs lwip_groups (arguments after the fourth go to its main run).
# Exits 77 (ctest: skipped) if lwIP cannot be fetched (no network or no apt-get/dpkg-dev).
set -euo pipefail
root=${1:?}; work=${2:?}; cc=${3:?}; cxx=${4:?}
here="$root/examples/lwip"
mkdir -p "$work"
if ! lwip=$("$here/fetch.sh" "$work/src" 2>"$work/fetch.log"); then
  cat "$work/fetch.log" >&2
  echo "example/lwip: could not fetch lwIP's source package; skipped" >&2
  exit 77
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$here" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DLWIP_DIR="$lwip" -DMEMCG_INCLUDE_DIR="$root/include" >"$work/configure.log" \
  || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j2 >"$work/build.log" || { cat "$work/build.log"; exit 1; }
# The port's C99 test, then lwip_groups: the main run (4 MiB each way per connection, no loss), a short one with loss on the wire, and
# one with 8 connections per tenant (tcp_mem's pressure holds longer).
"$work/build/test_memcg_lwip"
"$work/build/lwip_groups" "${@:5}"
"$work/build/lwip_groups" --mb 2 --loss 1000
"$work/build/lwip_groups" --mb 1 --conns 8
