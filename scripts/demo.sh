#!/usr/bin/env bash
# Builds the default preset and runs the demo: memcg-sim on examples/scenarios/container.scn
# (plot in build/default/container.svg), or else the hierarchy_demo example.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh
cmake --preset default

if [[ -d examples/memcg-sim ]]; then
  cmake --build --preset default -j2 --target memcg-sim
else
  cmake --build --preset default -j2
fi

sim=build/default/memcg-sim
scenario=examples/scenarios/container.scn
if [[ -x $sim && -f $scenario ]]; then
  "$sim" --plot build/default/container.svg "$scenario"
  echo "demo: plot written to build/default/container.svg"
elif [[ -x build/default/hierarchy_demo ]]; then
  build/default/hierarchy_demo
else
  echo "demo: neither $sim with $scenario nor build/default/hierarchy_demo exists yet" >&2
  exit 1
fi
