#!/usr/bin/env bash
# Real programs the project did not write, under libmemcg_preload.so (the plain build's ctest
# preload/real_programs). Usage:
#   run_tests.sh LIBMEMCG_PRELOAD.so [PYTHON3] [SQLITE3] [FORK_TEST] [SOURCE_DIR]
# Each check prints one line; exit status non-zero if any failed. SOURCE_DIR (the repository)
# enables the compiler checks: g++ compiling one of the project's test files.
set -uo pipefail

shim=$1
python=${2:-}
sqlite=${3:-}
fork_test=${4:-}
source_dir=${5:-}
[[ -z "$python" && -x /usr/bin/python3 ]] && python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

pass() { echo "PASS $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
# stat_value FILE "memory.peak" -> the number, from the file's last block (each process that
# inherits MEMCG_STAT appends one; the parent, which waits for its children, writes last)
stat_value() { awk -v k="$2" '{ v = $NF; $NF = ""; sub(/ $/, ""); if ($0 == k) last = v } END { if (last != "") print last }' "$1"; }
under() { env LD_PRELOAD="$shim" "$@"; }

# 1. A trivial program starts, exits and writes its statistics.
if out=$(under MEMCG_STAT="$work/echo.stat" /bin/echo hello) && [[ "$out" == hello ]] &&
    [[ $(stat_value "$work/echo.stat" memory.peak) -gt 0 ]]; then
  pass "echo runs and memory.peak is written"
else
  fail "echo under the shim"
fi

# 2. sort of 400,000 lines: the same output as without the shim, unlimited and within 32M.
awk 'BEGIN { srand(7); for (i = 0; i < 400000; i++) printf "%08x %s\n", int(rand() * 4294967295), substr("abcdefghijklmnopqrstuvwxyz", 1, int(rand() * 26)) }' >"$work/in.txt"
LC_ALL=C sort "$work/in.txt" >"$work/want.txt"
if LC_ALL=C under MEMCG_STAT="$work/sort.stat" sort "$work/in.txt" >"$work/got.txt" &&
    cmp -s "$work/want.txt" "$work/got.txt"; then
  pass "sort without a limit (memory.peak $(stat_value "$work/sort.stat" memory.peak))"
else
  fail "sort without a limit"
fi
if LC_ALL=C under MEMCG_MAX=32M MEMCG_STAT="$work/sort32.stat" sort --parallel=2 "$work/in.txt" \
      >"$work/got32.txt" && cmp -s "$work/want.txt" "$work/got32.txt" &&
    [[ $(stat_value "$work/sort32.stat" memory.peak) -le $((32 << 20)) ]]; then
  pass "sort with MEMCG_MAX=32M (memory.peak $(stat_value "$work/sort32.stat" memory.peak))"
else
  fail "sort with MEMCG_MAX=32M"
fi

if [[ -n "$python" ]]; then
  # 3. Python past its limit gets a MemoryError instead of being killed.
  cat >"$work/grow.py" <<'PY'
chunks = []
try:
    while True:
        chunks.append(bytearray(1 << 20))
except MemoryError:
    n = len(chunks)
    chunks.clear()
    print(f"MemoryError after {n} MiB")
PY
  if out=$(under MEMCG_MAX=64M MEMCG_STAT="$work/py.stat" "$python" "$work/grow.py") &&
      [[ "$out" == "MemoryError after "* ]] &&
      [[ $(stat_value "$work/py.stat" "memory.events max") -gt 0 ]] &&
      [[ $(stat_value "$work/py.stat" memory.peak) -le $((64 << 20)) ]]; then
    pass "python MemoryError at MEMCG_MAX=64M: $out"
  else
    fail "python MemoryError at MEMCG_MAX=64M (got: ${out:-nothing})"
  fi
  # 4. Threads and fork, without a limit, every allocation through malloc.
  cat >"$work/threads.py" <<'PY'
import os, threading
def work(n):
    d = {}
    for i in range(100000):
        d[i % 1000] = [str(i)] * 3
threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
for t in threads: t.start()
pid = os.fork()
if pid == 0:
    work(0)
    os._exit(0)
for t in threads: t.join()
_, status = os.waitpid(pid, 0)
print("ok" if status == 0 else "child failed")
PY
  if out=$(under PYTHONMALLOC=malloc "$python" "$work/threads.py") && [[ "$out" == ok ]]; then
    pass "python threads and fork"
  else
    fail "python threads and fork (got: ${out:-nothing})"
  fi
fi

# 5. sqlite3 runs a real job within a limit.
if [[ -n "$sqlite" ]]; then
  sql="CREATE TABLE t(a INTEGER, b TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO t SELECT x, hex(randomblob(16)) FROM c;
CREATE INDEX tb ON t(b);
SELECT count(*), sum(a) FROM t;"
  if out=$(echo "$sql" | under MEMCG_MAX=48M MEMCG_STAT="$work/sql.stat" "$sqlite" "$work/db.sqlite") &&
      [[ "$out" == "200000|20000100000" ]]; then
    pass "sqlite3 with MEMCG_MAX=48M (memory.peak $(stat_value "$work/sql.stat" memory.peak))"
  else
    fail "sqlite3 with MEMCG_MAX=48M (got: ${out:-nothing})"
  fi
fi

# 6. fork from a multi-threaded process while the other threads allocate: every child runs
#    (no deadlock), stays under the limit (ENOMEM at MEMCG_MAX) and gets its charges back.
if [[ -n "$fork_test" ]]; then
  if out=$(under MEMCG_MAX=48M MEMCG_STAT="$work/fork.stat" "$fork_test" 48 2>&1) &&
      [[ "$out" == "ok: "* ]]; then
    pass "fork while 4 threads allocate, MEMCG_MAX=48M: $out"
  else
    fail "fork while threads allocate (got: ${out:-nothing})"
  fi
fi

# 7. A signal handler that mallocs, reallocs and frees while the main code is inside malloc,
#    free and realloc (SIGALRM every 100 us): no block changes under its owner, nothing hangs,
#    no counter underflows, and at exit, everything freed, what is charged beyond what is
#    counted anon (the libc's own few blocks) is at most what the stocks may park: a batch
#    (64 pages) per CPU with per-CPU stocks (a thread that migrated left a batch on each CPU).
if [[ -n "$fork_test" ]]; then
  if out=$(timeout 60 env LD_PRELOAD="$shim" MEMCG_MAX=32M MEMCG_STAT="$work/sig.stat" \
        "$fork_test" signals 1 2>&1) && [[ "$out" == "ok: "* ]] && [[ "$out" != *underflow* ]]; then
    current=$(stat_value "$work/sig.stat" memory.current)
    anon=$(stat_value "$work/sig.stat" "memory.stat anon")
    cpus=$(getconf _NPROCESSORS_CONF 2>/dev/null || echo 1)
    if ((current - anon <= cpus * 64 * 4096 && anon <= 1 << 20)); then
      pass "signal handlers allocating inside malloc/free/realloc: $out (memory.current $current, anon $anon)"
    else
      fail "signal handlers: memory.current $current, anon $anon after everything was freed"
    fi
  else
    fail "signal handlers allocating inside malloc/free/realloc (got: ${out:-nothing})"
  fi
fi

# 8. Anonymous private mappings are charged (Python's mmap module, MAP_PRIVATE): refused with
#    ENOMEM at the limit, given back by munmap; shared ones are not charged.
if [[ -n "$python" ]]; then
  cat >"$work/anon_map.py" <<'PY'
import mmap, sys
flags = mmap.MAP_PRIVATE if sys.argv[1] == "private" else mmap.MAP_SHARED
maps = []
try:
    for i in range(64):
        m = mmap.mmap(-1, 1 << 20, flags=flags)
        m[0] = 1
        maps.append(m)
    print(f"mapped {len(maps)} MiB")
except OSError as e:
    print(f"refused after {len(maps)} MiB: errno {e.errno}")
for m in maps:
    m.close()
PY
  out=$(under MEMCG_MAX=32M MEMCG_STAT="$work/mmap-%p.stat" "$python" "$work/anon_map.py" private)
  f=$(ls "$work"/mmap-*.stat 2>/dev/null | head -n1)
  if [[ "$out" == "refused after "*": errno 12" && -n "$f" ]] &&
      [[ $(stat_value "$f" memory.peak) -le $((32 << 20)) ]] &&
      [[ $(stat_value "$f" "preload.mappings charged_pages") -lt 1024 ]]; then
    pass "private anonymous mmap at MEMCG_MAX=32M: $out, unmapped at exit ($(stat_value "$f" "preload.mappings charged_pages") pages left: the interpreter's arenas)"
  else
    fail "private anonymous mmap at MEMCG_MAX=32M (got: ${out:-nothing}; stat ${f:-missing})"
  fi
  if out=$(under MEMCG_MAX=32M "$python" "$work/anon_map.py" shared) && [[ "$out" == "mapped 64 MiB" ]]; then
    pass "shared anonymous mmap is not charged: $out under MEMCG_MAX=32M"
  else
    fail "shared anonymous mmap (got: ${out:-nothing})"
  fi
fi

# 9. MEMCG_STAT with %p and %e: one file per process, named as core_pattern names them; each
#    process has its own budget and its own numbers (the child is a new program: exec).
if [[ -n "$python" ]]; then
  spawn='import os, subprocess; subprocess.run(["/bin/echo", "child"], check=True); print(os.getpid())'
  if out=$(under MEMCG_STAT="$work/proc-%e-%p.stat" "$python" -c "$spawn"); then
    py_pid=$(echo "$out" | tail -n1)
    parent="$work/proc-python3-$py_pid.stat"
    child=$(ls "$work"/proc-echo-*.stat 2>/dev/null | head -n1)
    if [[ -f "$parent" && -n "$child" ]] &&
        (($(stat_value "$child" memory.peak) < $(stat_value "$parent" memory.peak))); then
      pass "MEMCG_STAT=%e-%p: python3 ($py_pid, memory.peak $(stat_value "$parent" memory.peak)) and its child echo (memory.peak $(stat_value "$child" memory.peak)) each write their own"
    else
      fail "MEMCG_STAT=%e-%p: $(ls "$work" | grep '^proc-' | tr '\n' ' ')"
    fi
  else
    fail "python3 spawning echo under the shim"
  fi
fi

# 10. A compiler: g++ (its cc1plus takes most of its memory with mmap) compiling one of the
#     project's test files: byte-identical output under a generous limit; under 150M, GCC's
#     own out-of-memory message and a non-zero exit.
gxx=$(command -v g++ || true)
if [[ -n "$source_dir" && -n "$gxx" ]]; then
  src="$source_dir/tests/counter_test.cpp"
  cc=("$gxx" -std=c++20 -O2 -I"$source_dir/include" -c "$src")
  if "${cc[@]}" -o "$work/plain.o" &&
      under MEMCG_MAX=2G MEMCG_STAT="$work/gcc-%e.stat" "${cc[@]}" -o "$work/shim.o" &&
      cmp -s "$work/plain.o" "$work/shim.o"; then
    pass "g++ under MEMCG_MAX=2G: the same object file (cc1plus memory.peak $(stat_value "$work/gcc-cc1plus.stat" memory.peak))"
  else
    fail "g++ under MEMCG_MAX=2G: failed or a different object file"
  fi
  under MEMCG_MAX=150M MEMCG_STAT="$work/gcc150-%e.stat" "${cc[@]}" -o "$work/tight.o" >"$work/gcc150.out" 2>&1
  rc=$?
  # GCC's own messages: xmalloc's "out of memory allocating", ggc's "virtual memory exhausted";
  # or, when the limit falls on one of cc1plus's C++ allocations, std::bad_alloc, which GCC
  # reports as an internal compiler error (the driver exits 4). Never a signal of the driver.
  oom='out of memory\|virtual memory exhausted\|std::bad_alloc'
  if [[ $rc -ne 0 && $rc -lt 128 ]] && grep -q "$oom" "$work/gcc150.out" &&
      [[ $(stat_value "$work/gcc150-cc1plus.stat" memory.peak) -le $((150 << 20)) ]]; then
    pass "g++ under MEMCG_MAX=150M stops with exit $rc: $(grep -m1 "$oom" "$work/gcc150.out")"
  else
    fail "g++ under MEMCG_MAX=150M (exit $rc): $(head -c 300 "$work/gcc150.out")"
  fi
fi

# 11. A peer's own test suite: a set of CPython's regression tests (Debian's
#     libpython3.11-testsuite) passes under the shim exactly as without it; under a tight limit
#     it fails with MemoryError, never a crash (a signal).
py_tests=(test_list test_dict test_set test_json test_re test_bytes test_tuple test_collections
          test_itertools test_functools test_string test_textwrap test_statistics test_heapq
          test_bisect test_array test_deque test_sort test_pickle)
if [[ -n "$python" ]] && "$python" -c "import test.test_list" 2>/dev/null; then
  "$python" -m test "${py_tests[@]}" -q >"$work/py-plain.out" 2>&1
  rc_plain=$?
  under MEMCG_MAX=2G "$python" -m test "${py_tests[@]}" -q >"$work/py-shim.out" 2>&1
  rc_shim=$?
  if [[ $rc_plain -eq $rc_shim ]] &&
      [[ "$(grep "Tests result" "$work/py-plain.out")" == "$(grep "Tests result" "$work/py-shim.out")" ]]; then
    pass "CPython's ${#py_tests[@]} regression tests under MEMCG_MAX=2G: $(grep -m1 "Tests result" "$work/py-shim.out") (without the shim: the same)"
  else
    fail "CPython's tests: exit $rc_plain without the shim, $rc_shim with it: $(tail -n 5 "$work/py-shim.out")"
  fi
  # -W: the output of failed tests (their MemoryError tracebacks).
  under MEMCG_MAX=40M "$python" -m test test_list test_dict test_set test_pickle -W >"$work/py-tight.out" 2>&1
  rc=$?
  if [[ $rc -ne 0 && $rc -lt 128 ]] && grep -q MemoryError "$work/py-tight.out" &&
      ! grep -qi "segmentation fault\|fatal python error\|core dumped" "$work/py-tight.out"; then
    pass "CPython's tests under MEMCG_MAX=40M fail with MemoryError ($(grep -c MemoryError "$work/py-tight.out") lines; exit $rc), no crash"
  else
    fail "CPython's tests under MEMCG_MAX=40M: exit $rc: $(tail -n 5 "$work/py-tight.out")"
  fi
else
  echo "SKIP CPython's regression tests (Debian's libpython3.11-testsuite is not installed)"
fi

[[ $failures -eq 0 ]]
