#!/usr/bin/env python3
"""bench/report.py: turns Google Benchmark JSON runs into the performance report (docs/performance.md).

Usage:
  bench/report.py [--goals bench/goals.json] [--svg DIR] RUN.json...

Each RUN.json is one benchmark program's output (--benchmark_out=RUN.json
--benchmark_out_format=json; with --benchmark_repetitions the median is used). Prints markdown:
the machine, one table per program (nanoseconds per item per thread for 1, 2, 4 and 8 threads,
and each benchmark's ratio to the baselines of its program), and the goals of bench/goals.json,
each marked met or missed. With --svg DIR it also writes DIR/PROGRAM.svg: total throughput
(items per second, all threads) by thread count, one line per benchmark, log scale.

Only the Python standard library (Debian's python3). Collect the JSON with bench/run.sh.
"""
import argparse
import json
import math
import os
import re
import sys

THREADS_RE = re.compile(r"^(?P<family>.*?)(?:/iterations:\d+)?(?:/threads:(?P<n>\d+))?$")
BASELINE_RE = re.compile(r"baseline|floor|mi_malloc|glibc_malloc|listeners:0")


def load(paths):
    """{program: {"context": ..., "runs": {(family, threads): {ips, ns, counters}}}}"""
    programs = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        prog = os.path.basename(path).rsplit(".", 1)[0]
        runs, medians = {}, set()
        for b in data.get("benchmarks", []):
            if b.get("error_occurred"):
                continue
            agg = b.get("aggregate_name")
            if b.get("run_type") == "aggregate" and agg != "median":
                continue
            name = b.get("run_name", b["name"])
            m = THREADS_RE.match(name)
            family, n = m.group("family"), int(m.group("n") or b.get("threads", 1))
            key = (family, n)
            if agg == "median":
                medians.add(key)
            elif key in medians:
                continue  # a repetition: the median wins
            ips = b.get("items_per_second")
            ns = 1e9 / ips if ips else None
            counters = {k: v for k, v in b.items() if isinstance(v, (int, float))}
            if "/iterations:" in name:
                ips = ns = None  # a one-shot measurement (scale): its counters are the result
            runs[key] = {"ips": ips, "ns": ns, "counters": counters,
                         "time": b.get("real_time"), "unit": b.get("time_unit", "ns")}
        programs[prog] = {"context": data.get("context", {}), "runs": runs}
    return programs


def all_runs(programs):
    out = {}
    for p in programs.values():
        out.update(p["runs"])
    return out


def fmt(x, digits=3):
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def machine(programs):
    ctx = next(iter(programs.values()))["context"] if programs else {}
    cpus = ctx.get("num_cpus", "?")
    mhz = ctx.get("mhz_per_cpu", "?")
    lines = [f"Machine: {ctx.get('host_name', '?')}, {cpus} CPUs at {mhz} MHz, "
             f"{ctx.get('library_build_type', '?')} Google Benchmark, run {ctx.get('date', '?')}."]
    try:
        model = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
        if model:
            lines[0] += f" CPU: {model[0]}."
    except OSError:
        pass
    lines.append(f"Runs with more threads than the {cpus} CPUs show contention and time slicing, "
                 "not scaling. Times are nanoseconds of CPU time per item per thread "
                 "(1e9 / items_per_second); throughput is items_per_second x threads.")
    return lines


def program_table(name, prog):
    runs = prog["runs"]
    families = []
    for fam, _ in runs:
        if fam not in families:
            families.append(fam)
    threads = sorted({n for _, n in runs})
    rate_families = [f for f in families if any(runs[(f, n)]["ips"] for n in threads if (f, n) in runs)]
    lines = [f"### `{name}`", ""]
    if rate_families:
        baselines = [f for f in rate_families if BASELINE_RE.search(f)]
        head = "| benchmark | " + " | ".join(f"{n} thr" for n in threads) + " |"
        if baselines:
            head += " ratio to baselines (1 thread) |"
        lines += [head, "|---" * (len(threads) + 1 + (1 if baselines else 0)) + "|"]
        for f in rate_families:
            cells = [fmt(runs[(f, n)]["ns"]) if (f, n) in runs else "–" for n in threads]
            row = f"| `{f}` | " + " | ".join(cells) + " |"
            if baselines:
                ratios = []
                for b in baselines:
                    if b == f or (f, 1) not in runs or (b, 1) not in runs:
                        continue
                    if runs[(f, 1)]["ns"] and runs[(b, 1)]["ns"]:
                        ratios.append(f"{runs[(f, 1)]['ns'] / runs[(b, 1)]['ns']:.2f}× {short(b)}")
                row += " " + ("; ".join(ratios) or "–") + " |"
            lines.append(row)
    others = [f for f in families if f not in rate_families]
    if others:
        lines += ["", "| benchmark | time | counters |", "|---|---|---|"]
        for f in others:
            r = runs[(f, min(n for ff, n in runs if ff == f))]
            cs = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(r["counters"].items())
                           if k not in ("real_time", "cpu_time", "iterations", "repetitions",
                                        "repetition_index", "threads", "family_index",
                                        "per_family_instance_index", "items_per_second",
                                        "run_type", "aggregate_unit"))
            lines.append(f"| `{f}` | {fmt(r['time'])} {r['unit']} | {cs} |")
    lines.append("")
    return lines


def short(family):
    """The name without its program prefix: `mi_malloc/64` of `slab/mi_malloc/64`."""
    return family.split("/", 1)[1] if "/" in family else family


def judge(goal, runs):
    """(measured text, met: True/False/None)"""
    kind = goal["kind"]
    if kind in ("time_ratio_max", "throughput_ratio_min"):
        parts, ok = [], True
        for n in goal["threads"]:
            a, b = runs.get((goal["bench"], n)), runs.get((goal["baseline"], n))
            if not a or not b or not a["ns"] or not b["ns"]:
                return "not measured", None
            r = a["ns"] / b["ns"] if kind == "time_ratio_max" else b["ns"] / a["ns"]
            ok = ok and (r <= goal["limit"] if kind == "time_ratio_max" else r >= goal["limit"])
            parts.append(f"{r:.2f}× ({n} thr)")
        return ", ".join(parts), ok
    if kind == "scaling_min":
        one = runs.get((goal["bench"], 1))
        parts, ok = [], True
        for n in goal["threads"]:
            many = runs.get((goal["bench"], n))
            if not one or not many or not one["ips"] or not many["ips"]:
                return "not measured", None
            r = many["ips"] * n / one["ips"]
            ok = ok and r >= goal["limit"]
            parts.append(f"{r:.2f}× ({n} thr)")
        return ", ".join(parts), ok
    if kind == "linear_max":
        s, b = runs.get((goal["bench_small"], 1)), runs.get((goal["bench_big"], 1))
        if not s or not b or not s["time"] or not b["time"]:
            return "not measured", None
        growth = b["time"] / s["time"]
        r = growth / goal["size_ratio"]
        return f"{growth:.1f}× for {goal['size_ratio']}× the groups ({r:.2f}× linear)", r <= goal["limit"]
    if kind == "time_max":
        parts, ok = [], True
        for n in goal["threads"]:
            a = runs.get((goal["bench"], n))
            if not a or not a["ns"]:
                return "not measured", None
            ok = ok and a["ns"] <= goal["limit"]
            parts.append(f"{a['ns']:.3g} ns ({n} thr)")
        return ", ".join(parts), ok
    if kind == "counter_max":
        r = next((v for (f, _), v in runs.items() if f == goal["bench"]), None)
        if not r or goal["counter"] not in r["counters"]:
            return "not measured", None
        v = r["counters"][goal["counter"]]
        return f"{fmt(v)}", v <= goal["limit"]
    return f"unknown kind {kind}", None


def goals_table(goals, runs):
    lines = ["| issue | goal | measured | verdict |", "|---|---|---|---|"]
    met = missed = unmeasured = 0
    for g in goals:
        text, ok = judge(g, runs)
        verdict = "met" if ok else ("**missed**" if ok is False else "not measured")
        met += ok is True
        missed += ok is False
        unmeasured += ok is None
        lines.append(f"| {g['issue']} | {g['what']} | {text} | {verdict} |")
    lines += ["", f"{met} met, {missed} missed, {unmeasured} not measured.", ""]
    return lines


def svg(path, name, prog):
    runs = prog["runs"]
    fams = []
    for f, n in runs:
        if runs[(f, n)]["ips"] and f not in fams:
            fams.append(f)
    if not fams:
        return False
    threads = sorted({n for f, n in runs if f in fams})
    W, H, L, R, T, B = 760, 420, 70, 300, 40, 50
    vals = [runs[(f, n)]["ips"] * n for f in fams for n in threads if (f, n) in runs and runs[(f, n)]["ips"]]
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    lo, hi = math.floor(lo), math.ceil(hi) if hi > lo else math.floor(lo) + 1
    def x(n):
        i = threads.index(n)
        return L + (W - L - R) * (i / max(1, len(threads) - 1))
    def y(v):
        return T + (H - T - B) * (1 - (math.log10(v) - lo) / (hi - lo))
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
              "#666666", "#1f78b4", "#b2df8a"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="20" font-size="14">{name}: total throughput (items/s, all threads) by threads</text>']
    for e in range(lo, hi + 1):
        yy = y(10 ** e)
        out.append(f'<line x1="{L}" x2="{W - R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{yy + 4:.1f}" text-anchor="end">1e{e}</text>')
    for n in threads:
        out.append(f'<text x="{x(n):.1f}" y="{H - B + 18}" text-anchor="middle">{n}</text>')
    out.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 12}" text-anchor="middle">threads '
               f'(more than {prog["context"].get("num_cpus", "?")} CPUs: contention)</text>')
    for i, f in enumerate(fams):
        c = colors[i % len(colors)]
        pts = [(x(n), y(runs[(f, n)]["ips"] * n)) for n in threads if (f, n) in runs and runs[(f, n)]["ips"]]
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="' +
                       " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>')
        ly = T + 16 * i
        out.append(f'<rect x="{W - R + 12}" y="{ly - 9}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{W - R + 28}" y="{ly}">{f}</text>')
    out.append("</svg>")
    with open(path, "w") as fh:
        fh.write("\n".join(out) + "\n")
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="Google Benchmark JSON files, one per program")
    ap.add_argument("--goals", default=os.path.join(os.path.dirname(__file__), "goals.json"))
    ap.add_argument("--svg", help="directory for one throughput-by-threads SVG per program")
    args = ap.parse_args()
    programs = load(args.runs)
    lines = machine(programs) + [""]
    with open(args.goals) as f:
        goals = json.load(f)["goals"]
    lines += ["#### Goals", ""] + goals_table(goals, all_runs(programs))
    for name, prog in programs.items():
        lines += program_table(name, prog)
        if args.svg:
            os.makedirs(args.svg, exist_ok=True)
            if svg(os.path.join(args.svg, f"{name}.svg"), name, prog):
                lines += [f"![{name}: throughput by threads]({os.path.join(args.svg, name + '.svg')})", ""]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
