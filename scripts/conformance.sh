#!/usr/bin/env bash
# The conformance harness: the same workloads in real memory cgroups and through
# memcg-sim; prints one row per check (what, the kernel's value, ours, the tolerance, the result).
#   scripts/conformance.sh             builds memcg-sim and memcg-conformance (preset default), runs
#   scripts/conformance.sh --no-build  uses $MEMCG_SIM and $MEMCG_CONFORMANCE (the ctest test)
# Exit: 0 every row agrees or shows its listed divergence, 1 a row differs (or the harness
# failed), 77 skipped (no writable memory controller here). Needs root (or a delegated cgroup). Groups are made below
# our own memory cgroup, named memcg-conf-PID, and removed on every exit path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

build=1
[[ ${1:-} == --no-build ]] && build=0
if [[ $build == 1 ]]; then
  [[ -f build/default/CMakeCache.txt ]] || cmake --preset default >/dev/null
  cmake --build build/default -j2 --target memcg-sim memcg-conformance >/dev/null
  MEMCG_SIM=$root/build/default/memcg-sim
  MEMCG_CONFORMANCE=$root/build/default/conformance/memcg-conformance
  MEMCG_CONFORMANCE_OUT=${MEMCG_CONFORMANCE_OUT:-$root/build/default/conformance}
fi
: "${MEMCG_SIM:?}" "${MEMCG_CONFORMANCE:?}"
out=${MEMCG_CONFORMANCE_OUT:-$root/build/conformance}
mkdir -p "$out"

# Where the groups go: below our own memory cgroup (v1 memory hierarchy, or cgroup v2).
own=""
if line=$(grep -E '^[0-9]+:([^:]*,)?memory(,[^:]*)?:' /proc/self/cgroup); then
  own=/sys/fs/cgroup/memory${line##*:}
elif line=$(grep -E '^0::' /proc/self/cgroup); then
  own=/sys/fs/cgroup${line##*:}
fi
own=${own%/}

# The harness removes its groups itself (atexit, signals); this trap is the backstop for a
# harness that was SIGKILLed: its memcg-conf-PID tree goes, deepest first.
harness_pid=""
remove_ours() {
  [[ -n $harness_pid ]] || return 0
  # First ask the harness (it kills its agents and removes its groups), then make sure.
  if kill -TERM "$harness_pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$harness_pid" 2>/dev/null || true
  fi
  local dir=$own/memcg-conf-$harness_pid
  for _ in $(seq 50); do
    [[ -n $own && -d $dir ]] || return 0
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    sleep 0.1
  done
  echo "conformance: could not remove $dir" >&2
}
trap remove_ours EXIT
trap 'remove_ours; exit 130' INT TERM

# The page-cache workloads need a disk file system (tmpfs pages are shmem, not page cache).
workdir=$out
args=("$@"); [[ ${args[0]:-} == --no-build ]] && args=("${args[@]:1}")
"$MEMCG_CONFORMANCE" --sim "$MEMCG_SIM" --workdir "$workdir" --out "$out" "${args[@]}" >"$out/table.md" &
harness_pid=$!
set +e
wait "$harness_pid"
rc=$?
set -e
remove_ours
harness_pid=""
cat "$out/table.md"
echo "table: $out/table.md; memcg-sim transcripts: $out/*.scn"
# MEMCG_CONFORMANCE_REPORT_ONLY=1: print the table, fail only when the harness itself failed.
if [[ $rc == 1 && ${MEMCG_CONFORMANCE_REPORT_ONLY:-0} == 1 ]]; then
  echo "conformance: rows differ (MEMCG_CONFORMANCE_REPORT_ONLY=1: not a failure)"
  rc=0
fi
exit "$rc"
