#!/usr/bin/env bash
# Installs the current build tree into a temporary prefix, then builds and runs tests/consumer
# against it: the C++ headers (find_package(memcg CONFIG), pkg-config memcg) and the C library
# from C99 (find_package: memcg::c and memcg::c_static; pkg-config memcg-c on the command line),
# and checks that nothing a C program links pulls in mimalloc.
# With lwIP's source (fetched once by examples/lwip/fetch.sh; skipped when it can't be), the
# lwIP port's C99 test is built the same two ways.
# Usage: run.sh CMAKE BUILD_DIR CONSUMER_SOURCE_DIR [CXX_COMPILER] [MAKE_PROGRAM] [C_COMPILER]
set -euo pipefail

cmake=$1
build_dir=$(cd "$2" && pwd)
consumer_src=$(cd "$3" && pwd)
cxx=${4:-}
make_program=${5:-}
cc=${6:-cc}
c_test=$(cd "$consumer_src/.." && pwd)/c_api_test.c
source_dir=$(cd "$consumer_src/../.." && pwd)

work=$build_dir/consumer_package
rm -rf "$work"
mkdir -p "$work"
prefix=$work/prefix

"$cmake" --install "$build_dir" --prefix "$prefix" >"$work/install.log"

pc_dirs=$(find "$prefix" -name '*.pc' -printf '%h\n' | sort -u | paste -sd:)
export PKG_CONFIG_PATH="$pc_dirs${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

fail() { echo "consumer_package: $*" >&2; exit 1; }

# The .pc files: C flags only for memcg-c; mimalloc nowhere but memcg-slab.
[[ $(pkg-config --cflags memcg-c) != *std=c++* ]] || fail "memcg-c.pc carries a C++ flag"
[[ $(pkg-config --libs memcg) != *mimalloc* ]] || fail "memcg.pc links mimalloc"
[[ $(pkg-config --libs memcg-c) != *mimalloc* ]] || fail "memcg-c.pc links mimalloc"
[[ $(pkg-config --static --libs memcg-c) != *mimalloc* ]] || fail "memcg-c.pc (static) links mimalloc"
[[ $(pkg-config --static --libs memcg-c) == *stdc++* ]] || fail "memcg-c.pc --static lacks the C++ runtime"

# The shared library: SONAME, memcg_* exports only, no mimalloc.
lib=$(find "$prefix" -name 'libmemcg-c.so.*.*' -print -quit)
[[ -n $lib ]] || fail "libmemcg-c.so not installed"
readelf -d "$lib" | grep -q "SONAME.*libmemcg-c\.so\.[0-9]" || fail "no SONAME libmemcg-c.so.N"
if nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^memcg_'; then
  fail "libmemcg-c.so exports symbols other than memcg_*"
fi
if readelf -d "$lib" | grep NEEDED | grep -i mimalloc; then fail "libmemcg-c.so needs mimalloc"; fi

args=(-S "$consumer_src" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix"
      -DCMAKE_BUILD_TYPE=Release -DMEMCG_C_API_TEST="$c_test" -DCMAKE_C_COMPILER="$cc")
if command -v ninja >/dev/null; then args+=(-G Ninja); fi
if [[ -n "$cxx" ]]; then args+=(-DCMAKE_CXX_COMPILER="$cxx"); fi
# lwIP's source, shared with the example/lwip test's fetch (same place).
lwip=""
if lwip=$("$source_dir/examples/lwip/fetch.sh" "$build_dir/lwip/src" 2>"$work/fetch.log"); then
  args+=(-DLWIP_DIR="$lwip" -DMEMCG_SOURCE_DIR="$source_dir")
else
  lwip=""
  echo "consumer_package: lwIP's source could not be fetched; the lwIP port's test is skipped"
fi
if [[ -n "$make_program" && "$make_program" == *ninja* ]]; then
  args+=(-DCMAKE_MAKE_PROGRAM="$make_program")
fi

"$cmake" "${args[@]}" >"$work/configure.log" || { cat "$work/configure.log"; exit 1; }
"$cmake" --build "$work/build" -j2

# pkg-config memcg-c by hand, as a C project's Makefile would.
libdir=$(pkg-config --variable=libdir memcg-c)
# shellcheck disable=SC2046
"$cc" -std=c99 -pedantic -Wall -Wextra -Werror $(pkg-config --cflags memcg-c) "$c_test" \
  -o "$work/build/consumer_c_pkgconfig" $(pkg-config --libs memcg-c) -pthread -Wl,-rpath,"$libdir"

"$work/build/consumer_cmake"
echo "consumer_cmake: OK"
"$work/build/consumer_pkgconfig"
echo "consumer_pkgconfig: OK"
c_programs=(consumer_c consumer_c_pkgconfig consumer_c_static)
if [[ -n "$lwip" ]]; then
  # The port and its test by hand on pkg-config memcg-c, over the lwIP core the build made.
  port=$source_dir/ports/lwip
  # shellcheck disable=SC2046
  "$cc" -std=c99 -pedantic -Wall -Wextra -Werror $(pkg-config --cflags memcg-c) \
    -I"$source_dir/examples/lwip/port" -I"$lwip/src/include" -I"$port" \
    "$port/memcg_lwip.c" "$port/test_memcg_lwip.c" "$work/build/libconsumer_lwip_core.a" \
    -o "$work/build/consumer_lwip_pkgconfig" $(pkg-config --libs memcg-c) -pthread -Wl,-rpath,"$libdir"
  c_programs+=(consumer_lwip_port consumer_lwip_pkgconfig)
fi
for exe in "${c_programs[@]}"; do
  path=$work/build/$exe
  deps=$(ldd "$path")
  if grep -i mimalloc <<<"$deps"; then fail "$exe links mimalloc"; fi
  if readelf -d "$path" | grep NEEDED | grep -i mimalloc; then fail "$exe needs mimalloc"; fi
  case $exe in
    consumer_c_static)
      if grep -q libmemcg-c <<<"$deps"; then fail "$exe is linked to libmemcg-c.so"; fi ;;
    *)
      # The installed library, and nothing of C++ or Abseil linked by the program itself.
      grep -q "libmemcg-c.so.[0-9]* => $prefix" <<<"$deps" || fail "$exe does not use $lib: $deps"
      if readelf -d "$path" | grep NEEDED | grep -E "stdc\+\+|absl"; then
        fail "$exe links C++ or Abseil itself"
      fi ;;
  esac
  "$path"
  echo "$exe: OK (ldd: no mimalloc)"
done
