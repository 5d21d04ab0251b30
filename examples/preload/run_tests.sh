#!/usr/bin/env bash
# Real programs the project did not write, under libmemcg_preload.so (the plain build's ctest
# preload/real_programs). Usage: run_tests.sh LIBMEMCG_PRELOAD.so [PYTHON3] [SQLITE3] [FORK_TEST]
# Each check prints one line; exit status non-zero if any failed.
set -uo pipefail

shim=$1
python=${2:-}
sqlite=${3:-}
fork_test=${4:-}
[[ -z "$python" && -x /usr/bin/python3 ]] && python=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

pass() { echo "PASS $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
# stat_value FILE "memory.peak" -> the number
stat_value() { awk -v k="$2" '{ v = $NF; $NF = ""; sub(/ $/, ""); if ($0 == k) print v }' "$1"; }
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
#    counted anon (the libc's own few blocks) is at most the stock's batch (64 pages).
if [[ -n "$fork_test" ]]; then
  if out=$(timeout 60 env LD_PRELOAD="$shim" MEMCG_MAX=32M MEMCG_STAT="$work/sig.stat" \
        "$fork_test" signals 1 2>&1) && [[ "$out" == "ok: "* ]] && [[ "$out" != *underflow* ]]; then
    current=$(stat_value "$work/sig.stat" memory.current)
    anon=$(stat_value "$work/sig.stat" "memory.stat anon")
    if ((current - anon <= 64 * 4096 && anon <= 1 << 20)); then
      pass "signal handlers allocating inside malloc/free/realloc: $out (memory.current $current, anon $anon)"
    else
      fail "signal handlers: memory.current $current, anon $anon after everything was freed"
    fi
  else
    fail "signal handlers allocating inside malloc/free/realloc (got: ${out:-nothing})"
  fi
fi

[[ $failures -eq 0 ]]
