#!/usr/bin/env bash
# Runs one scenario through memcg-sim and checks the result.
# Usage: run.sh SIM FILE
#   expected exit code: the first "# exit: N" line of FILE (default 0; *.fail.scn files set it)
#   expected stdout:    FILE.out (e.g. oom.scn.out), compared exactly, if it exists
#   options:            the first "# args: ..." line of FILE (e.g. # args: --explain)
set -euo pipefail

sim=$1
file=$2

expected_exit=0
line=$(grep -m1 -E '^#[[:space:]]*exit:[[:space:]]*[0-9]+' "$file" || true)
if [[ -n "$line" ]]; then
  expected_exit=$(sed -E 's/^#[[:space:]]*exit:[[:space:]]*([0-9]+).*/\1/' <<<"$line")
fi

# memcg-sim's options: the first "# args: ..." line of FILE (e.g. --explain), none by default.
args=()
line=$(grep -m1 -E '^#[[:space:]]*args:' "$file" || true)
if [[ -n "$line" ]]; then
  read -r -a args <<<"$(sed -E 's/^#[[:space:]]*args:[[:space:]]*//' <<<"$line")"
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT

status=0
"$sim" "${args[@]}" "$file" >"$out" || status=$?
cat "$out"

ok=1
if [[ $status -ne $expected_exit ]]; then
  echo "scenario $file: exit code $status, expected $expected_exit" >&2
  ok=0
fi
if [[ -f "$file.out" ]]; then
  if ! diff -u "$file.out" "$out" >&2; then
    echo "scenario $file: stdout differs from $file.out" >&2
    ok=0
  fi
fi
[[ $ok -eq 1 ]]
