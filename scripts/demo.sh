#!/usr/bin/env bash
# Builds the default preset and runs the demo: memcg-sim --explain on
# examples/scenarios/container.scn, the story of the 100M container told command by command
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
plot=build/default/container.svg
if [[ -x $sim && -f $scenario ]]; then
  status=0
  "$sim" --explain --plot "$plot" "$scenario" || status=$?
  echo
  if [[ $status -eq 0 ]]; then
    echo "demo: every refusal above was expected (the lesson's lines that start with \`!\`), and"
    echo "      every \`expect\` line held: memcg-sim exited 0."
  else
    echo "demo: memcg-sim exited $status: a command or an expectation failed (see above)." >&2
  fi
  cat <<END
demo: the plot is $plot: one panel per group, memory by kind after every
      command, its limits and events. Open it in a web browser:
        xdg-open $plot        (or open file://$PWD/$plot)
demo: more lessons: ls examples/scenarios/; the same story step by step in your browser:
        cmake --build build/default --target memcg-sim-web   (then open build/default/web/site/index.html)
END
  exit $status
elif [[ -x build/default/hierarchy_demo ]]; then
  build/default/hierarchy_demo
else
  echo "demo: neither $sim with $scenario nor build/default/hierarchy_demo exists yet" >&2
  exit 1
fi
