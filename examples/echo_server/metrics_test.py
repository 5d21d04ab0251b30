#!/usr/bin/env python3
"""echo_server --metrics-port: scrape /metrics while the load runs and after it, and check the
exposition against the Prometheus text format 0.0.4 and against the server's own report.

Usage: metrics_test.py PATH/TO/echo_server     (exit 0: every check passed)

Checks, on every scrape: HTTP 200 with the format's content type; every line is a # HELP, a
# TYPE or a sample `name{labels} value`; every family is declared once (HELP, TYPE) before its
samples, its samples sit together under it and carry no label set twice; label values are
escaped. On the final scrape (the server lingers after its report until stdin closes): the root
and the four tenants appear in every group family; each tenant's memcg_memory_max_bytes is the
limit the server set; usage, socket pages and the protocol's memory and sockets are back to 0 as
the server says; the watermark is at least the peak the server sampled and the tcp counter saw
traffic; the tenants that were never held back have no failcnt and no max event; the scrape
count the server prints matches the scrapes made. Then 404 and 405 for other requests."""
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'(?:[^"\\\n]|\\[\\"n])*'
LABEL = rf'[a-zA-Z_][a-zA-Z0-9_]*="{LABEL_VALUE}"'
VALUE = r"(?:[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|Inf)|NaN)"
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? ({VALUE})$")
LABEL_RE = re.compile(rf'([a-zA-Z_][a-zA-Z0-9_]*)="({LABEL_VALUE})"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TENANTS = ["/tenant0", "/tenant1", "/tenant2", "/tenant3"]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """Families {name: {"type", "help", "samples": {labels-tuple: value}}}; checks the format."""
    families = {}
    current = None  # the family whose samples may follow
    closed = set()  # families whose sample block ended
    check(text.endswith("\n"), "the exposition ends with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {n}: {line!r}"
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({NAME}) (.*)$", line)
            if not check(m, f"a comment is # HELP or # TYPE ({where})"):
                continue
            kind, name, rest = m.groups()
            if current and current != name:
                closed.add(current)
            check(name not in closed, f"family {name} appears twice ({where})")
            fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
            check(not fam["samples"], f"{kind} of {name} before its samples ({where})")
            key = kind.lower()
            check(fam[key] is None, f"{kind} of {name} once ({where})")
            if kind == "TYPE":
                check(rest in TYPES, f"a known type ({where})")
            fam[key] = rest
            current = name
            continue
        m = SAMPLE.match(line)
        if not check(m, f"a sample line name{{labels}} value ({where})"):
            continue
        name, labels, value = m.groups()
        fam = families.get(name)
        if not check(fam is not None and fam["type"], f"TYPE before the samples of {name}"):
            continue
        check(name == current, f"the samples of {name} sit together under it ({where})")
        key = tuple((k, unescape(v)) for k, v in LABEL_RE.findall(labels or ""))
        check(len({k for k, _ in key}) == len(key), f"no label twice ({where})")
        check(key not in fam["samples"], f"no label set twice in {name} ({where})")
        fam["samples"][key] = float(value)
    for name, fam in families.items():
        check(fam["help"] is not None and fam["type"] is not None, f"{name} has HELP and TYPE")
    return families


def fetch(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode("utf-8")


def scrape(url):
    status, ctype, text = fetch(url)
    check(status == 200, f"GET /metrics is 200 (got {status})")
    check(ctype == CONTENT_TYPE, f"content type {ctype!r}")
    return parse(text)


def value(fams, name, **labels):
    fam = fams.get(name)
    if not check(fam is not None, f"family {name} exists"):
        return None
    v = fam["samples"].get(tuple(labels.items()))
    check(v is not None, f"{name}{labels} exists")
    return v


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    proc = subprocess.Popen(
        [sys.argv[1], "--quick", "--metrics-port=0", "--metrics-linger"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = []  # what echo_server printed
    try:
        first = proc.stdout.readline()
        lines.append(first)
        m = re.match(r"^metrics: (http://127\.0\.0\.1:[0-9]+/metrics)$", first.strip())
        if not m:
            print(f"no metrics address in {first!r}", file=sys.stderr)
            return 1
        url = m.group(1)

        # Scrapes while the load runs (until the report's last line), each checked for format.
        done = threading.Event()
        during = []

        def scraper():
            while not done.is_set():
                during.append(scrape(url))

        t = threading.Thread(target=scraper)
        t.start()
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("metrics: lingering"):
                break
        done.set()
        t.join()
        check(lines[-1].startswith("metrics: lingering"), "the server lingers after its report")
        check(any("PASS" in ln for ln in lines), "the echo server's own checks pass")
        report = {}
        for ln in lines:
            f = ln.split()
            if f and f[0] in ("tenant0", "tenant1", "tenant2", "tenant3"):
                report["/" + f[0]] = dict(limit=int(f[1]), echoed=int(f[2]), peak=int(f[3]),
                                          closed=int(f[4]), refused=int(f[5]),
                                          blocked=int(f[6]), over=int(f[7]))
        check(sorted(report) == TENANTS, f"the report has every tenant: {sorted(report)}")

        final = scrape(url)
        # Every group family lists the root and the tenants, and nothing else.
        groups = {"/"} | set(TENANTS)
        for name, fam in final.items():
            seen = {dict(k).get("group") for k in fam["samples"]}
            if name.startswith("memcg_proto_"):
                check(seen == {None}, f"{name} is per protocol")
                continue
            check(seen == groups, f"{name} lists every group: {sorted(map(str, seen))}")
        for g, r in report.items():
            check(value(final, "memcg_memory_max_bytes", group=g) == r["limit"],
                  f"memory.max of {g} is what the server set ({r['limit']})")
            check(value(final, "memcg_memory_usage_bytes", group=g) == 0, f"{g} ends at 0")
            check(value(final, "memcg_memory_kmem_tcp_usage_bytes", group=g) == 0,
                  f"{g}'s tcp counter ends at 0")
            check(value(final, "memcg_memory_stat_bytes", group=g, kind="sock") == 0,
                  f"{g} holds no socket pages")
            check(value(final, "memcg_memory_peak_bytes", group=g) >= r["peak"] > 0,
                  f"{g}'s watermark is at least the peak the server sampled ({r['peak']})")
            check(value(final, "memcg_memory_kmem_tcp_peak_bytes", group=g) > 0,
                  f"{g}'s tcp counter saw the traffic")
            if g != "/tenant0":  # the tenants never held back
                check(r["closed"] + r["refused"] + r["blocked"] == 0, f"{g} never held back")
                check(value(final, "memcg_memory_failcnt_total", group=g) == 0,
                      f"{g} has no failcnt")
                check(value(final, "memcg_memory_events_total", group=g, event="max") == 0,
                      f"{g} has no max event")
        check(value(final, "memcg_memory_usage_bytes", group="/") == 0, "the root ends at 0")
        check(value(final, "memcg_proto_memory_allocated_bytes", proto="tcp") == 0,
              "memory_allocated ends at 0")
        check(value(final, "memcg_proto_sockets_allocated", proto="tcp") == 0,
              "no socket is left")
        check(value(final, "memcg_proto_mem_limit_bytes", proto="tcp", threshold="max")
              == 376776 * 4096, "tcp_mem[2] is the kernel's default")
        # The scrapes during the load saw the tenants' limits as set, whatever the traffic did.
        for fams in during:
            for g, r in report.items():
                check(value(fams, "memcg_memory_max_bytes", group=g) == r["limit"],
                      f"memory.max of {g} during the load")

        # Other requests.
        check(fetch(url.replace("/metrics", "/other"))[0] == 404, "another path is 404")
        check(fetch(url, method="POST")[0] == 405, "POST is 405")
        scrapes = 1 + len(during)

        proc.stdin.close()
        rest = proc.stdout.read()
        rc = proc.wait(timeout=30)
        check(rc == 0, f"echo_server exits 0 (got {rc})")
        check(f"metrics: {scrapes} scrapes" in rest,
              f"the server counted the {scrapes} scrapes: {rest.strip()!r}")
        print(f"{scrapes} scrapes ({len(during)} during the load), "
              f"{sum(len(f['samples']) for f in final.values())} samples in "
              f"{len(final)} families")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if failures:
        sys.stderr.write("echo_server said:\n" + "".join(lines))
    for f in failures[:20]:
        print("FAILED:", f, file=sys.stderr)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
