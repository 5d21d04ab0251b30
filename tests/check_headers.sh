#!/usr/bin/env bash
# Compiles every public header on its own, with g++ and clang++, -Werror:
#   include/memcg/*.hpp                        as C++20
#   config/sync/counter/charge.hpp (the core)  also with -fno-exceptions -fno-rtti
#   include/memcg/memcg.h (if present)         also as C11 and C99 with gcc (and clang)
# Usage: tests/check_headers.sh [SOURCE_DIR]   (default: the repository of this script)
# Prints one line per header and compiler, exits non-zero if any failed.
set -euo pipefail

root=${1:-"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"}
cd "$root"

cxx_flags=(-std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I include)
c_flags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I include)
core=(config.hpp sync.hpp counter.hpp charge.hpp)

cxx_compilers=()
for c in g++ clang++; do
  if command -v "$c" >/dev/null; then cxx_compilers+=("$c"); else echo "SKIP $c: not installed"; fi
done
c_compilers=()
for c in gcc clang; do
  if command -v "$c" >/dev/null; then c_compilers+=("$c"); fi
done

failures=0
checked=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# check LABEL LANG COMPILER HEADER FLAGS...
check() {
  local label=$1 lang=$2 compiler=$3 header=$4
  shift 4
  checked=$((checked + 1))
  if printf '#include <memcg/%s>\n' "$header" |
      "$compiler" -x "$lang" "$@" - >"$log" 2>&1; then
    printf 'OK   %-28s %-8s %s\n' "$header" "$compiler" "$label"
  else
    printf 'FAIL %-28s %-8s %s\n' "$header" "$compiler" "$label"
    sed 's/^/     /' "$log" | head -n 40
    failures=$((failures + 1))
  fi
}

shopt -s nullglob
headers=(include/memcg/*.hpp)
if [[ ${#headers[@]} -eq 0 && ! -f include/memcg/memcg.h ]]; then
  echo "FAIL no headers found in $root/include/memcg"
  exit 1
fi

for path in "${headers[@]}"; do
  header=${path#include/memcg/}
  for cxx in "${cxx_compilers[@]}"; do
    check "c++20" c++ "$cxx" "$header" "${cxx_flags[@]}"
    for h in "${core[@]}"; do
      if [[ "$header" == "$h" ]]; then
        check "c++20 -fno-exceptions -fno-rtti" c++ "$cxx" "$header" \
          "${cxx_flags[@]}" -fno-exceptions -fno-rtti
      fi
    done
  done
done

if [[ -f include/memcg/memcg.h ]]; then
  for cxx in "${cxx_compilers[@]}"; do
    check "c++20" c++ "$cxx" memcg.h "${cxx_flags[@]}"
  done
  for cc in "${c_compilers[@]}"; do
    check "c11" c "$cc" memcg.h "${c_flags[@]}"
    # libmemcg-c promises C99 to its users.
    check "c99" c "$cc" memcg.h "${c_flags[@]}" -std=c99
  done
fi

# Templates are only checked when instantiated: compile the hot paths of every policy too,
# without exceptions and RTTI (and with clang's thread-safety analysis).
for cxx in "${cxx_compilers[@]}"; do
  extra=()
  [[ "$cxx" == clang++ ]] && extra=(-Wthread-safety)
  checked=$((checked + 1))
  if "$cxx" -x c++ "${cxx_flags[@]}" -fno-exceptions -fno-rtti "${extra[@]}" tests/hot_paths.cpp \
      >"$log" 2>&1; then
    printf 'OK   %-28s %-8s %s\n' "hot_paths.cpp" "$cxx" "instantiated, -fno-exceptions -fno-rtti"
  else
    printf 'FAIL %-28s %-8s %s\n' "hot_paths.cpp" "$cxx" "instantiated, -fno-exceptions -fno-rtti"
    sed 's/^/     /' "$log" | head -n 40
    failures=$((failures + 1))
  fi
done

echo "headers_standalone: $((checked - failures))/$checked passed"
[[ $failures -eq 0 ]]
