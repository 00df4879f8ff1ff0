"""Summarize a peerbench.sh run: rjobs next to every peer, medians (and min-max), and rjobs' ratio
to the fastest peer per column.  usage: python benchmarks/peers/summarize.py results/raw-peerbench-*.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

# (row label, peer, c10 config, c100 config, latency config); None = not applicable
LAYOUT: list[tuple[str, str, str | None, str | None, str | None]] = [
    ("**rjobs**", "rjobs", "c10", "c100", "c10"),
    ("**rjobs** (queue_events=False)", "rjobs", "c10-noevents", "c100-noevents", "c10-noevents"),
    ("rq (SimpleWorker)", "rq", "simple-c1", None, "simple"),
    ("rq (default fork Worker)", "rq", "fork-c1", None, "fork"),
    ("arq", "arq", "c10", "c100", "c10"),
    ("saq", "saq", "c10", "c100", "c10"),
    ("streaq", "streaq", "c10", "c100", "c10"),
    ("dramatiq (1 proc, threads)", "dramatiq", "threads8", "threads100", "threads8"),
    ("huey (thread workers)", "huey", "threads10", "threads100", "threads10"),
    ("taskiq-redis", "taskiq-redis", "c10", "c100", "c10"),
    ("bullmq (python)", "bullmq", "c10", "c100", "c10"),
    ("celery (-P threads)", "celery", "threads10", "threads100", "threads10"),
    ("celery (-P solo)", "celery", "solo", None, "solo"),
]
CFG_LABEL = {"simple-c1": "c=1 ", "fork-c1": "c=1 ", "threads8": "t=8 "}


def load(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for p in paths:
        with open(p) as f:
            rows += [json.loads(line) for line in f if line.startswith("{")]
    return rows


def med(xs: list[float | None]) -> float | None:
    ys = [x for x in xs if x is not None]
    return statistics.median(ys) if ys else None


def fmt(x: float | None, nd: int = 0) -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}"


def spread(xs: list[float | None], nd: int = 0) -> str:
    ys = [x for x in xs if x is not None]
    if not ys:
        return "n/a"
    return f"{fmt(statistics.median(ys), nd)} [{fmt(min(ys), nd)}-{fmt(max(ys), nd)}] n={len(ys)}"


def main() -> None:
    rows = load(sys.argv[1:])
    enq: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    proc: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    lat: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    versions: dict[str, str] = {}
    loads: list[float] = []
    busy: list[float] = []
    failed: list[str] = []
    sources: list[str] = []
    for r in rows:
        m = r.get("mode")
        if m == "enqueue":
            cfg = r.get("config", "c10")
            enq[r["peer"], "c10-noevents" if cfg.endswith("noevents") else "c10"].append(r)
            versions[r["peer"]] = r["version"]
        elif m == "process":
            proc[r["peer"], r["config"]].append(r)
            versions.setdefault(r["peer"], r["version"])
        elif m == "latency":
            lat[r["peer"], r["config"]].append(r)
        elif m == "load":
            loads.append(float(r["loadavg"].split()[0]))
            if r.get("busy_pct") is not None:
                busy.append(float(r["busy_pct"]))
        elif m == "failed":
            failed.append(r["cmd"])
        elif m == "source":
            sources.append(r["rjobs"])

    # one value per (row, column) -> medians
    table: dict[str, dict[str, float | None]] = {}
    for label, peer, c10, c100, lc in LAYOUT:
        ecfg = "c10-noevents" if c10 and c10.endswith("noevents") else "c10"
        e = enq.get((peer, ecfg), [])
        table[label] = {
            "one": med([x["one_by_one_jobs_per_s"] for x in e]),
            "sync": med([x.get("one_by_one_sync_jobs_per_s") for x in e]),
            "bulk": med([x["bulk_jobs_per_s"] for x in e]),
            "c10": med([x["jobs_per_s"] for x in proc.get((peer, c10), [])]) if c10 else None,
            "c10s": med([x["steady_jobs_per_s"] for x in proc.get((peer, c10), [])]) if c10 else None,
            "c100": med([x["jobs_per_s"] for x in proc.get((peer, c100), [])]) if c100 else None,
            "c100s": med([x["steady_jobs_per_s"] for x in proc.get((peer, c100), [])]) if c100 else None,
            "p50": med([x["p50_ms"] for x in lat.get((peer, lc), [])]) if lc else None,
            "p99": med([x["p99_ms"] for x in lat.get((peer, lc), [])]) if lc else None,
        }
    peers = [label for label, peer, *_ in LAYOUT if peer != "rjobs"]

    def best(col: str, lower: bool = False) -> tuple[str | None, float | None]:
        vals = [(table[p][col], p) for p in peers if table[p][col] is not None]
        if not vals:
            return None, None
        v, p = (min if lower else max)(vals)
        return p, v

    columns = ("one", "bulk", "c10", "c100", "c10s", "c100s", "p50", "p99")
    bests = {c: best(c, lower=c in ("p50", "p99")) for c in columns}

    print("## rjobs vs peers (medians; one run of every peer, same redis-server)\n")
    for src in sources:
        print(f"rjobs measured: {src}\n")
    if loads:
        print(f"1-minute load average when each benchmark started: median {statistics.median(loads):.2f}, "
              f"max {max(loads):.2f} (2 shared cores; other test suites may have been running)")  # fmt: skip
    if busy:
        quiet = sum(1 for b in busy if b < 25)
        print(f"CPU busy (others) in the second before each benchmark: median {statistics.median(busy):.0f} %, "
              f"max {max(busy):.0f} %; {quiet} of {len(busy)} benchmarks started quiet (< 25 %)")  # fmt: skip
    print()
    print("Process cells: jobs/s from worker spawn to N-th completion (steady state, 1st to N-th completion, in "
          "parentheses). Every job does peerbench's `INCR peerbench:done` bookkeeping.\n")  # fmt: skip
    print("| peer | version | enqueue one-by-one jobs/s | enqueue bulk jobs/s | process c=10 jobs/s | "
          "process c=100 jobs/s | latency p50 / p99 ms |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, peer, c10, _c100, _lc in LAYOUT:
        t = table[label]
        one = fmt(t["one"])
        if t["sync"] is not None:
            one += f" (sync {fmt(t['sync'])})"
        lab10 = CFG_LABEL.get(c10 or "", "")
        c10cell = f"{lab10}{fmt(t['c10'])} ({fmt(t['c10s'])})" if t["c10"] is not None else ("—" if not c10 else "n/a")
        c100cell = f"{fmt(t['c100'])} ({fmt(t['c100s'])})" if t["c100"] is not None else "—"
        latcell = f"{fmt(t['p50'], 2)} / {fmt(t['p99'], 2)}" if t["p50"] is not None else "n/a"
        version = versions.get(peer, "?")
        print(f"| {label} | {version} | {one} | {fmt(t['bulk'])} | {c10cell} | {c100cell} | {latcell} |")

    print("\n### rjobs / fastest peer\n")
    print("| column | fastest peer | its value | rjobs | ratio | rjobs (queue_events=False) | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    names = {"one": "enqueue one-by-one (async)", "bulk": "enqueue bulk", "c10": "process c=10 (spawn→done)",
             "c10s": "process c=10 (steady)", "c100": "process c=100 (spawn→done)",
             "c100s": "process c=100 (steady)", "p50": "latency p50 ms (lower is better)",
             "p99": "latency p99 ms (lower is better)"}  # fmt: skip
    for col, name in names.items():
        bp, bv = bests[col]
        cells = []
        for label in ("**rjobs**", "**rjobs** (queue_events=False)"):
            v = table[label][col]
            if v is None or bv is None:
                cells += ["n/a", "n/a"]
                continue
            ratio = (bv / v) if col in ("p50", "p99") else (v / bv)
            nd = 2 if col in ("p50", "p99") else 0
            cells += [fmt(v, nd), f"{ratio:.2f}x"]
        nd = 2 if col in ("p50", "p99") else 0
        print(f"| {name} | {bp or 'n/a'} | {fmt(bv, nd)} | {' | '.join(cells)} |")
    sync = table["**rjobs**"]["sync"]
    if sync is not None and bests["one"][1]:
        print(f"| enqueue one-by-one (rjobs SyncQueue) | {bests['one'][0]} | {fmt(bests['one'][1])} | {fmt(sync)} | "
              f"{sync / bests['one'][1]:.2f}x | {fmt(table['**rjobs** (queue_events=False)']['sync'])} | "
              f"{(table['**rjobs** (queue_events=False)']['sync'] or 0) / bests['one'][1]:.2f}x |")  # fmt: skip
    print("\nlatency ratio = fastest peer's ms / rjobs' ms (above 1 = rjobs is faster).\n")

    print("### CPU per job while draining (medians, µs; includes the INCR bookkeeping)\n")
    print("| peer | config | worker CPU µs/job | redis-server CPU µs/job |")
    print("|---|---|---:|---:|")
    for (peer, cfg), rs in sorted(proc.items()):
        print(f"| {peer} | {cfg} | {fmt(med([r['worker_cpu_us_per_job'] for r in rs]))} | "
              f"{fmt(med([r['server_cpu_us_per_job'] for r in rs]))} |")  # fmt: skip

    print("\n### Spread: median [min-max] n=runs\n")
    print("| peer | measure | value |")
    print("|---|---|---|")
    for (peer, cfg), e in sorted(enq.items()):
        tag = "" if cfg == "c10" else f" ({cfg})"
        print(f"| {peer}{tag} | enqueue one-by-one | {spread([r['one_by_one_jobs_per_s'] for r in e])} |")
        if any(r.get("bulk_jobs_per_s") for r in e):
            print(f"| {peer}{tag} | enqueue bulk ({e[0]['bulk_api']}) | {spread([r['bulk_jobs_per_s'] for r in e])} |")
    for (peer, cfg), rs in sorted(proc.items()):
        print(f"| {peer} | process {cfg} spawn→done (N={rs[0]['n']}) | {spread([r['jobs_per_s'] for r in rs])} |")
        print(f"| {peer} | process {cfg} steady | {spread([r['steady_jobs_per_s'] for r in rs])} |")
        dup = sum(r["duplicates"] for r in rs)
        if dup:
            print(f"| {peer} | process {cfg} DUPLICATE completions | {dup} |")
    for (peer, cfg), rs in sorted(lat.items()):
        print(f"| {peer} | latency {cfg} p50 ms | {spread([r['p50_ms'] for r in rs], 2)} |")
        print(f"| {peer} | latency {cfg} p99 ms | {spread([r['p99_ms'] for r in rs], 2)} |")
    if failed:
        print("\n### Failed runs\n")
        for f in failed:
            print(f"- `{f}`")


if __name__ == "__main__":
    main()
