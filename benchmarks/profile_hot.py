"""Profiles of the hot path, client and server side.

    python3 benchmarks/profile_hot.py [--n 50000] [--concurrency 100] [--py-spy PATH]

* **worker**: drains N pre-enqueued no-op jobs with one worker process (bench_process's worker)
  while ``py-spy record --format raw`` samples it; writes the collapsed stacks to
  ``results/profiles/worker-c<C>.raw`` (git-ignored) and a summary of self and inclusive time per
  function (top 25) to ``results/profiles/worker-c<C>.txt``.
* **enqueue**: cProfile of 5,000 single ``SyncQueue.enqueue`` and ``Queue.enqueue`` calls
  (``results/profiles/enqueue-{sync,async}.txt``, sorted by internal time).
* **server**: ``INFO commandstats`` usec_per_call of each script, from bench_roundtrips' phases,
  and the fixed cost of a script call (``RJ.init`` alone and an empty script).

py-spy is not a dependency of rjobs: point ``--py-spy`` at a binary (e.g. the peer venv's,
``~/.cache/peerbench-venv/bin/py-spy``); without one the worker profile is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bench_process as P
import bench_roundtrips as RT
import common as C
import compat

import rjobs

OUT = C.RESULTS_DIR / "profiles"


def summarize_raw(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample share per function from py-spy's collapsed stacks."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        if "_find_and_load" in stack or "<module>" in stack.split(";")[-1]:
            continue  # imports / start-up
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"{total} samples", "", "self % | function (file)"]
    lines += [f"{100 * n / total:6.1f} | {f}" for f, n in self_t.most_common(top)]
    lines += ["", "inclusive % | function (file)"]
    lines += [f"{100 * n / total:6.1f} | {f}" for f, n in incl.most_common(top + 15)]
    return "\n".join(lines)


def profile_worker(url: str, n: int, concurrency: int, pyspy: str | None) -> dict[str, Any]:
    r = C.client(url)
    C.fresh(r)
    q = RT.sync_queue(url)
    RT.preload(q, n)
    key = compat.backend(q).keys.state("completed")
    raw = OUT / f"worker-c{concurrency}.raw"
    raw.unlink(missing_ok=True)
    # py-spy cannot attach to a running process here (ptrace is limited to descendants): it spawns
    # the worker and samples it from the start; import-time samples are dropped in the summary.
    prefix = (pyspy, "record", "--rate", "250", "--format", "raw", "--output", str(raw), "--") if pyspy else ()
    w = P.WorkerProcess(url, concurrency, "noop", True, f"profile-c{concurrency}", prefix=prefix)
    try:
        while int(r.zcard(key)) == 0:
            time.sleep(0.001)
        t0, c0 = time.time(), int(r.zcard(key))
        while int(r.zcard(key)) < n:
            time.sleep(0.01)
        rate = (n - c0) / (time.time() - t0)
    finally:
        if pyspy:  # stop the worker only: py-spy writes its file when its child exits
            for child in _children(w.pid):
                os.kill(child, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(30)
        w.stop()
    row: dict[str, Any] = {"concurrency": concurrency, "n": n, "jobs_per_s_while_profiled": round(rate, 1)}
    if pyspy and raw.exists():
        text = summarize_raw(raw)
        (OUT / f"worker-c{concurrency}.txt").write_text(f"worker c={concurrency}, {rate:.0f} jobs/s\n{text}\n")
        row["summary"] = str(OUT / f"worker-c{concurrency}.txt")
    return row


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def profile_enqueue(url: str, n: int = 5000) -> dict[str, Any]:
    r = C.client(url)
    out = {}
    C.fresh(r)
    q = rjobs.SyncQueue(C.QUEUE, url)
    q.declare()
    for i in range(200):
        q.enqueue("noop", {"i": i})
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    for i in range(n):
        q.enqueue("noop", {"i": i})
    pr.disable()
    out["sync_us_per_call_under_cprofile"] = round((time.perf_counter() - t) / n * 1e6, 1)
    _dump(pr, OUT / "enqueue-sync.txt")

    async def go() -> float:
        aq = rjobs.Queue(C.QUEUE, url)
        await aq.declare()
        for i in range(200):
            await aq.enqueue("noop", {"i": i})
        t = time.perf_counter()
        pr.enable()
        for i in range(n):
            await aq.enqueue("noop", {"i": i})
        pr.disable()
        await aq.close()
        return time.perf_counter() - t

    pr = cProfile.Profile()
    out["async_us_per_call_under_cprofile"] = round(asyncio.run(go()) / n * 1e6, 1)
    _dump(pr, OUT / "enqueue-async.txt")
    return out


def _dump(pr: cProfile.Profile, path: Path) -> None:
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
    path.write_text(s.getvalue())


def server_costs(url: str) -> dict[str, Any]:
    """usec_per_call per script (phases of bench_roundtrips) and the fixed cost of a call."""
    res = RT.measure(url, 5000)
    r = C.client(url)
    C.fresh(r)
    q = RT.sync_queue(url)
    fixed = {}
    for name, call in (("claim max_jobs=0", compat.claim(q, "w", 0, 30000, ["noop"])),
                       ("heartbeat 0 leases", compat.backend(q).scripts.heartbeat("w", 30000, []))):  # fmt: skip
        sha = r.script_load(call.script.source)
        r.config_resetstat()
        pipe = r.pipeline(transaction=False)
        for _ in range(2000):
            pipe.evalsha(sha, 2, *call.keys, *call.args)
        pipe.execute()
        cs = r.info("commandstats")["cmdstat_evalsha"]
        fixed[name] = round(cs["usec"] / cs["calls"], 2)
    sha = r.script_load("return 1")
    r.config_resetstat()
    pipe = r.pipeline(transaction=False)
    for _ in range(2000):
        pipe.evalsha(sha, 0)
    pipe.execute()
    cs = r.info("commandstats")["cmdstat_evalsha"]
    fixed["return 1"] = round(cs["usec"] / cs["calls"], 2)
    per_script = {k: {"server_us_per_call": v["server_us_per_call"], "server_us_per_job": v["server_us_per_job"],
                      "lua_us_per_job": v["lua_us_per_job"], "command_us_per_job": v["command_us_per_job"]}
                  for k, v in res.items() if isinstance(v, dict)}  # fmt: skip
    return {"per_script": per_script, "fixed_cost_us_per_call (pipelined)": fixed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 100])
    default_spy = shutil.which("py-spy") or os.path.expanduser("~/.cache/peerbench-venv/bin/py-spy")
    ap.add_argument("--py-spy", default=default_spy if os.path.exists(default_spy) else None)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    with C.redis_server() as server:
        result["environment"] = C.environment(C.client(server.url))
        result["worker"] = [profile_worker(server.url, a.n, c, a.py_spy) for c in a.concurrency]
        result["enqueue"] = profile_enqueue(server.url)
        result["server"] = server_costs(server.url)
    import json

    (OUT / "profile.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    for c in a.concurrency:
        p = OUT / f"worker-c{c}.txt"
        if p.exists():
            print(p.read_text())


if __name__ == "__main__":
    main()
