#!/usr/bin/env bash
# THE test command: installs dependencies, then configures, builds and tests each preset.
#   scripts/test.sh                          presets default, asan, tsan, fuzz (libFuzzer, ~1 min)
#   MEMCG_PRESETS="default" scripts/test.sh  a subset (space-separated)
# The default preset's ctest includes `conformance` (scripts/conformance.sh, label conformance,
# about 10 s, run alone): the kernel's memory controller beside memcg-sim, where the machine has
# a writable one and we are root; skipped otherwise. It also runs `abi` (libmemcg-c against the
# committed abi/libmemcg-c.abi with abidiff; install-deps.sh installs abigail-tools; skipped if
# abidiff is absent) and `consumer_package` (the installed package from C99 and C++).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh

presets=${MEMCG_PRESETS:-"default asan tsan fuzz"}
passed=()
failed=()

run_preset() {
  local p=$1
  echo "=== preset $p: configure"
  cmake --preset "$p" || return 1
  echo "=== preset $p: build"
  cmake --build --preset "$p" -j2 || return 1
  echo "=== preset $p: test"
  ctest --preset "$p" --output-on-failure -j2 || return 1
}

start=$SECONDS
for p in $presets; do
  if run_preset "$p"; then passed+=("$p"); else failed+=("$p"); fi
done

elapsed=$((SECONDS - start))
if [[ ${#failed[@]} -eq 0 ]]; then
  echo "memcg test.sh: PASS (${passed[*]}) in ${elapsed}s"
else
  echo "memcg test.sh: FAIL (failed: ${failed[*]}; passed: ${passed[*]:-none}) in ${elapsed}s"
  exit 1
fi
