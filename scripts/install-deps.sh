#!/usr/bin/env bash
# Installs the Debian 12 packages memcg needs to build, test and benchmark.
# Idempotent: does nothing (not even apt-get update) when every package is installed.
set -euo pipefail

packages=(
  build-essential g++ clang cmake ninja-build pkg-config git
  libclang-rt-14-dev  # libFuzzer (the fuzz preset); clang-14 only recommends it
  libabsl-dev libmimalloc-dev doctest-dev libbenchmark-dev
  python3 sqlite3  # real programs under the preload shim (examples/preload/run_tests.sh)
  libpython3.11-testsuite  # CPython's own regression tests, run under the shim
  dpkg-dev  # apt-get source lwip (examples/lwip/fetch.sh)
  abigail-tools  # abidw/abidiff: the C library's ABI check (ctest abi)
  emscripten  # memcg-sim for the browser (web/build.sh; Abseil from its source package)
  chromium  # the page's test in headless Chromium (ctest web/browser)
  libjemalloc-dev libgoogle-perftools-dev  # jemalloc and tcmalloc beside the slab (slab_bench)
)

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
