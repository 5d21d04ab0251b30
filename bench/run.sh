#!/usr/bin/env bash
# Runs every benchmark program of a build into JSON and turns them into the performance report.
#   bench/run.sh [BUILD_DIR] [OUT_DIR]      (defaults: build/default, BUILD_DIR/report)
# Medians of 3 repetitions with random interleaving (docs/architecture.md, "Benchmarks"); writes OUT_DIR/PROGRAM.json,
# OUT_DIR/PROGRAM.svg (throughput by threads) and OUT_DIR/report.md (bench/report.py).
# MEMCG_SCALE=full makes scale_bench build the issue's full 1,000,000 sockets and 10,000,000
# objects.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build/default}
out=${2:-$build/report}
mkdir -p "$out"
for exe in "$build"/*_bench; do
  name=$(basename "$exe" _bench)
  echo "bench/run.sh: $name" >&2
  reps=(--benchmark_enable_random_interleaving=true --benchmark_repetitions=3)
  # scale_bench measures resident memory: once, in a fresh process (a repetition would reuse
  # the heap the first one freed).
  [[ $name == scale ]] && reps=()
  "$exe" "${reps[@]}" --benchmark_min_time=0.2 --benchmark_out="$out/$name.json" \
    --benchmark_out_format=json > "$out/$name.txt"
done
python3 bench/report.py --svg "$out" "$out"/*.json > "$out/report.md"
echo "bench/run.sh: wrote $out/report.md" >&2
