"""Run every rjobs benchmark against a throw-away redis-server and print one table.

    python3 benchmarks/run.py [--quick] [--reps 3] [--only enqueue,process,latency,memory,roundtrips]

Starts Debian's redis-server (``--save '' --appendonly no``) on a free loopback port, runs each
measurement module (bench_*.py) ``--reps`` times (medians reported, every run kept), prints a
table and writes ``benchmarks/results/latest.json`` (plus a timestamped raw copy, git-ignored).
``--quick``: N=2,000, one repetition — a smoke run, not a result.

The machine has 2 shared cores: other test suites may run at the same time. The share of busy CPU
just before each repetition (other people's work: ours is idle then) and the 1-minute load are
recorded with every run; ``--wait-quiet S`` waits up to S seconds for a quiet moment (< 25 % busy).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import bench_enqueue
import bench_latency
import bench_memory
import bench_process
import bench_roundtrips
import common as C

SECTIONS = ("enqueue", "process", "latency", "memory", "roundtrips")

# The fastest peer per enqueue column, for the bars in this table: from the last peerbench.sh run
# (results/peerbench-latest.jsonl, medians) when there is one, else peerbench's RESULTS.md.
PEER_BEST = {"single": ("huey (RESULTS.md)", 5335.0), "bulk": ("bullmq addBulk (RESULTS.md)", 19833.0)}


def _peer_best() -> dict[str, tuple[str, float]]:
    path = C.RESULTS_DIR / "peerbench-latest.jsonl"
    if not path.exists():
        return PEER_BEST
    per: dict[tuple[str, str], list[float]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.startswith("{") else {}
        if row.get("mode") == "enqueue" and row.get("peer") != "rjobs":
            per.setdefault((row["peer"], "single"), []).append(row["one_by_one_jobs_per_s"])
            if row.get("bulk_jobs_per_s"):
                per.setdefault((row["peer"], "bulk"), []).append(row["bulk_jobs_per_s"])
    best = dict(PEER_BEST)
    for col in ("single", "bulk"):
        meds = [(C.median(v), p) for (p, c), v in per.items() if c == col]
        if meds:
            value, peer = max(meds)
            best[col] = (f"{peer} (peerbench-latest)", value)
    return best


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(x: Any, nd: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, float)):
        return f"{x:,.{nd}f}"
    return str(x)


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    e, p, lt, m, rt = (res.get(k, {}) for k in SECTIONS)
    best = _peer_best()

    def bar(value: Any, ok: bool, text: str) -> str:
        return "" if value is None else f"{'PASS' if ok else 'FAIL'} ({text})"

    for tag, label in (("events_on", "stream on"), ("events_off", "stream off")):
        a, s, b = (_get(e, f"{k}_{tag}", "jobs_per_s") for k in ("single_async", "single_sync", "bulk_async"))
        best_single, best_bulk = best["single"][1], best["bulk"][1]
        if a is not None:
            rows.append(
                (
                    f"enqueue single async, {label}",
                    f"{_fmt(a)} jobs/s",
                    bar(a, a >= 1.2 * best_single, f"≥1.2x {best_single:,.0f}"),
                )
            )
            rows.append(
                (
                    f"enqueue single sync, {label}",
                    f"{_fmt(s)} jobs/s",
                    bar(s, s >= 1.2 * best_single, f"≥1.2x {best_single:,.0f}"),
                )
            )
            rows.append(
                (
                    f"enqueue bulk (enqueue_many, 1,000/call), {label}",
                    f"{_fmt(b)} jobs/s",
                    bar(b, b >= 2 * best_bulk, f"≥2x {best_bulk:,.0f}"),
                )
            )
    for key in ("bulk_sync_events_on", "bulk_async_one_call_events_on"):
        if key in e:
            rows.append(
                (
                    f"enqueue {key.replace('_events_on', '').replace('_', ' ')}, stream on",
                    f"{_fmt(e[key]['jobs_per_s'])} jobs/s",
                    "",
                )
            )
    for key, v in p.items():
        steady, spawn = v.get("steady_jobs_per_s"), v.get("jobs_per_s")
        cell = (
            f"{_fmt(spawn)} ({_fmt(steady)} steady) jobs/s; worker {_fmt(v.get('worker_cpu_us_per_job'))} µs, "
            f"redis {_fmt(v.get('server_cpu_us_per_job'))} µs CPU/job"
        )
        ok = v.get("mode") == "noop" and v.get("queue_events")
        rows.append((f"process {key}", cell, bar(steady, steady >= 10_000, "≥10k steady") if ok else ""))
    for key, v in lt.items():
        p50, p99 = v.get("p50_ms"), v.get("p99_ms")
        rows.append(
            (
                f"latency {key}",
                f"p50 {_fmt(p50, 2)} / p99 {_fmt(p99, 2)} ms",
                bar(p50, p50 <= 1 and p99 <= 3, "p50 ≤1, p99 ≤3 ms"),
            )
        )
    for tag, v in m.items():
        rows.append(
            (
                f"memory per waiting / finished job, {tag}",
                f"{_fmt(v.get('bytes_per_waiting_job'))} / {_fmt(v.get('bytes_per_finished_job'))} B",
                "",
            )
        )
    for tag, phases in rt.items():
        for ph in (
            "enqueue_single",
            "enqueue_bulk_1000",
            "claim_10",
            "claim_100",
            "finish_10",
            "finish_100",
            "heartbeat_100",
        ):
            v = phases.get(ph)
            if v:
                rows.append(
                    (
                        f"round trips/job, server µs/job: {v['phase']}, {tag}",
                        f"{v['round_trips_per_job']:g} RT, {v['server_us_per_job']:.1f} µs "
                        f"({v['server_us_per_call']:.0f} µs/call, {v['commands_in_scripts_per_job']:g} cmds/job)",
                        "",
                    )
                )
    w1 = max(len(r[0]) for r in rows) if rows else 10
    w2 = max(len(r[1]) for r in rows) if rows else 10
    lines = [f"{'measure':<{w1}} | {'value':<{w2}} | bar", f"{'-' * w1}-+-{'-' * w2}-+-----"]
    lines += [f"{a:<{w1}} | {b:<{w2}} | {c}" for a, b, c in rows]
    lines.append(f"(enqueue bars against {best['single'][0]} and {best['bulk'][0]})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=2,000, 1 rep: a smoke run")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per measurement (default 3, quick 1)")
    ap.add_argument("--n", type=int, default=None, help="jobs per measurement (default 10,000, quick 2,000)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before every repetition, wait up to this many s until under 25%% of the cores are busy",
    )
    ap.add_argument("--out", default=str(C.RESULTS_DIR / "latest.json"))
    ap.add_argument("--table", action="store_true", help="only print the table of --out (no measuring)")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(Path(a.out).read_text())))
        return
    reps = a.reps or (1 if a.quick else 3)
    n = a.n or (2000 if a.quick else 10_000)
    only = [s for s in a.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")
    C.WAIT_QUIET = (25.0, a.wait_quiet)
    t0 = time.time()
    results: dict[str, Any] = {}
    with C.redis_server() as server:
        r = C.client(server.url)
        results["environment"] = C.environment(r)
        results["environment"].update({"n": n, "reps": reps, "quick": a.quick})
        print(f"redis-server on {server.url}; N={n}, reps={reps}; load {C.loadavg()}", file=sys.stderr)
        mods = {
            "enqueue": bench_enqueue,
            "process": bench_process,
            "latency": bench_latency,
            "memory": bench_memory,
            "roundtrips": bench_roundtrips,
        }
        for section in only:
            print(f"[{time.strftime('%H:%M:%S')}] {section}", file=sys.stderr, flush=True)
            size = 200 if section == "latency" else n
            results[section] = mods[section].run(server.url, size, reps)
    results["environment"]["load_at_end"] = C.loadavg()
    results["environment"]["duration_s"] = round(time.time() - t0, 1)
    C.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, default=str)
    with open(a.out, "w") as f:
        f.write(text)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (C.RESULTS_DIR / f"raw-run-{stamp}.json").write_text(text)
    env = results["environment"]
    print(
        f"\nrjobs {env['rjobs']} | {env['server']} | python {env['python']} redis-py {env['redis-py']} "
        f"hiredis {env['hiredis']} | {env['machine']} | {env['date']} | load {env['load_at_start']} -> "
        f"{env['load_at_end']}\n"
    )
    print(table(results))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
