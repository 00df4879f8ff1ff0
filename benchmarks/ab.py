"""Interleaved A/B of the hot paths between two copies of rjobs.

    python3 benchmarks/ab.py /path/to/A /path/to/B [--reps 5] [--n 5000] [--kinds enqueue,sync,bulk,process10]

Each path is a directory holding an ``rjobs/`` package (e.g. ``git archive main rjobs | tar -x -C A``).
One redis-server is started for the whole run; every measurement runs in a fresh process with
``RJOBS_SRC`` set to one copy (a spawned worker inherits it), alternating A, B, A, B... so machine
drift hits both alike. Prints every run and the medians (jobs/s; client CPU µs per call, or the
worker's CPU µs per job for ``process*``). Kinds: ``enqueue`` (single async), ``sync`` (single
blocking), ``bulk`` (``enqueue_many``), ``get`` (``await q.get(id)``), ``raw`` (the same read
through redis-py, for reference), ``process10`` / ``process100`` (one worker process draining N
no-op jobs at that concurrency; steady jobs/s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import common as C

ONE = """
import json, sys
sys.path.insert(0, {bench!r})
import bench_enqueue as B
kind, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "enqueue":
    row = B.single_async(url, n)
elif kind == "sync":
    row = B.single_sync(url, n)
elif kind == "bulk":
    row = B.bulk(url, n)
elif kind == "get":
    row = B.single_get_async(url, n)
elif kind.startswith("process"):
    import bench_process as P
    row = P.measure(url, n, int(kind[len("process"):]))
    row["client_cpu_us_per_job"] = row["worker_cpu_us_per_job"]
    row["jobs_per_s"] = row["steady_jobs_per_s"]
else:
    row = B.single_get_async(url, n, raw=True)
print(json.dumps(row))
"""


def one(src: str, kind: str, url: str, n: int) -> dict[str, float]:
    env = {**os.environ, "RJOBS_SRC": src}
    code = ONE.format(bench=str(C.BENCH_DIR))
    out = subprocess.run([sys.executable, "-c", code, kind, url, str(n)], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    row: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--wait-quiet", type=float, default=20.0, help="wait up to S s for < 25 %% busy CPU")
    p.add_argument("--kinds", default="enqueue,get,raw", help="comma-separated, see the module docstring")
    args = p.parse_args()
    C.WAIT_QUIET = (25.0, args.wait_quiet)
    srcs = {"A": str(Path(args.a).resolve()), "B": str(Path(args.b).resolve())}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with C.redis_server() as server:
        for rep in range(args.reps):
            for kind in args.kinds.split(","):
                for label, src in srcs.items():
                    if kind == "raw" and label == "A":
                        continue  # the redis-py path does not depend on the copy
                    C.wait_for_quiet(*C.WAIT_QUIET)
                    row = one(src, kind, server.url, args.n)
                    runs.setdefault((kind, label), []).append(row)
                    print(f"rep {rep + 1} {kind:7} {label}: {row['jobs_per_s']:>9,.0f}/s "
                          f"cpu {row['client_cpu_us_per_job']:6.1f} µs", flush=True)  # fmt: skip
    print("\nmedians (jobs/s, client CPU µs per call):")
    for (kind, label), rows in sorted(runs.items()):
        rate = statistics.median(r["jobs_per_s"] for r in rows)
        cpu = statistics.median(r["client_cpu_us_per_job"] for r in rows)
        print(f"  {kind:7} {label} ({srcs[label]}): {rate:>9,.0f}/s  {cpu:6.1f} µs  n={len(rows)}")


if __name__ == "__main__":
    main()
