#!/usr/bin/env bash
# Installs the current build tree into a temporary prefix, then builds and runs
# tests/consumer against it (find_package(memcg CONFIG) and pkg-config memcg).
# Usage: run.sh CMAKE BUILD_DIR CONSUMER_SOURCE_DIR [CXX_COMPILER] [MAKE_PROGRAM]
set -euo pipefail

cmake=$1
build_dir=$2
consumer_src=$3
cxx=${4:-}
make_program=${5:-}

work=$build_dir/consumer_package
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

"$cmake" --install "$build_dir" --prefix "$prefix"

pc_dir=$(dirname "$(find "$prefix" -name memcg.pc -print -quit)")
export PKG_CONFIG_PATH="$pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

args=(-S "$consumer_src" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix"
      -DCMAKE_BUILD_TYPE=Release)
if command -v ninja >/dev/null; then args+=(-G Ninja); fi
if [[ -n "$cxx" ]]; then args+=(-DCMAKE_CXX_COMPILER="$cxx"); fi
if [[ -n "$make_program" && "$make_program" == *ninja* ]]; then
  args+=(-DCMAKE_MAKE_PROGRAM="$make_program")
fi

"$cmake" "${args[@]}"
"$cmake" --build "$work/build" -j2

"$work/build/consumer_cmake"
echo "consumer_cmake: OK"
"$work/build/consumer_pkgconfig"
echo "consumer_pkgconfig: OK"
