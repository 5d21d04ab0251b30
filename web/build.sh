#!/usr/bin/env bash
# build.sh SOURCE_DIR WORK_DIR: builds memcg-sim for the browser with Debian's emscripten and
# puts the page in WORK_DIR/site (index.html, memcg-sim.js). Abseil is fetched once into
# WORK_DIR/src from Debian's source package; everything stays under WORK_DIR.
# Exits 77 (ctest: skipped) when emscripten is not installed or Abseil cannot be fetched.
set -euo pipefail
root=$(cd "${1:?usage: build.sh SOURCE_DIR WORK_DIR}" && pwd)
work=${2:?usage: build.sh SOURCE_DIR WORK_DIR}
mkdir -p "$work"
work=$(cd "$work" && pwd)
if ! command -v emcmake >/dev/null || ! command -v em++ >/dev/null; then
  echo "web: emscripten is not installed (Debian package emscripten); skipped" >&2
  exit 77
fi
# Debian's emscripten runs its JavaScript optimizer with the `node` on PATH; Debian's acorn
# lives in /usr/share/nodejs, which a node from elsewhere does not search.
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
if ! absl=$("$root/scripts/fetch-source.sh" abseil "$work/src" 2>"$work/fetch.log"); then
  cat "$work/fetch.log" >&2
  echo "web: could not fetch Abseil's source package; skipped" >&2
  exit 77
fi
# Debian's latomic.diff links every Abseil library with -latomic inside --push-state/--as-needed:
# right for Debian's architectures, unknown to wasm-ld. Undone once, in the fetched copy only.
if [[ ! -f "$absl/.memcg-no-latomic" ]]; then
  if [[ -f "$absl/debian/patches/latomic.diff" ]] && grep -q -- '-latomic' "$absl/absl/copts/AbseilConfigureCopts.cmake"; then
    (cd "$absl" && patch -s -R -p1 < debian/patches/latomic.diff)
  fi
  touch "$absl/.memcg-no-latomic"
fi
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
if [[ ! -f "$work/build/CMakeCache.txt" ]]; then
  emcmake cmake -S "$root/web" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DABSL_DIR="$absl" -DMEMCG_SOURCE_DIR="$root" >"$work/configure.log" 2>&1 \
    || { cat "$work/configure.log"; exit 1; }
fi
cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
mkdir -p "$work/site"
cp "$root/web/index.html" "$work/build/memcg-sim.js" "$work/site/"
echo "$work/site/index.html"
