#!/usr/bin/env bash
# browser_test.sh SOURCE_DIR WORK_DIR: the ctest test web/browser. Builds the page (build.sh),
# loads it in headless Chromium with ?lesson=container.scn&run=1, and checks the DOM once the
# run is done: memcg-sim's output (the lesson's expected refusal, exit status 0), the story's
# first step, and the plot's panel of the group `box`.
# Exits 77 (ctest: skipped) when emscripten or Chromium is missing, or Abseil cannot be fetched.
set -euo pipefail
root=$(cd "${1:?usage: browser_test.sh SOURCE_DIR WORK_DIR}" && pwd)
work=${2:?usage: browser_test.sh SOURCE_DIR WORK_DIR}
mkdir -p "$work"
work=$(cd "$work" && pwd)
browser=""
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null; then browser=$b; break; fi
done
if [[ -z "$browser" ]]; then
  echo "web/browser: Chromium is not installed (Debian package chromium); skipped" >&2
  exit 77
fi
status=0
page=$("$root/web/build.sh" "$root" "$work") || status=$?
[[ $status -eq 0 ]] || exit $status

# The page compiles the module synchronously (-sWASM_ASYNC_COMPILATION=0), so the run ends
# before the load event and --dump-dom sees its result. The profile stays in WORK_DIR; no
# sandbox, as the test may run as root (it loads one local file).
profile="$work/chromium-profile"
rm -rf "$profile"
dom="$work/dom.html"
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --no-first-run \
  --user-data-dir="$profile" --virtual-time-budget=30000 \
  --dump-dom "file://$page?lesson=container.scn&run=1" >"$dom" 2>"$work/chromium.log" || {
  cat "$work/chromium.log" >&2
  echo "web/browser: $browser failed" >&2
  exit 1
}
fail=0
check() {  # check DESCRIPTION FIXED-STRING
  if grep -qF -- "$2" "$dom"; then
    echo "ok: $1"
  else
    echo "FAILED: $1: '$2' not in the page" >&2
    fail=1
  fi
}
check "the run finished" 'data-state="done"'
check "memcg-sim's output" 'error: 25: charge split kmem 50M: ENOMEM (limit of split)'
check "the exit status" '(exit status 0)'
check "the status line" 'every expectation held (exit 0)'
check "the story's first step" 'step 1 of '
check "the story of line 7" 'created group box'
check "the plot's box panel" '<g class="panel" data-group="box">'
if [[ $fail -ne 0 ]]; then
  echo "web/browser: the page as Chromium left it: $dom" >&2
  exit 1
fi
echo "web/browser: $page passed"
