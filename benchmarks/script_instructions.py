"""Instructions the server executes per script call, counted by valgrind's callgrind: a
deterministic A/B of the Lua scripts that machine noise cannot blur (the same binary, inputs and
state give the same count).

    RJOBS_SRC=/path/to/copy python3 benchmarks/script_instructions.py [--server redis|valkey] [--n 300]

Each scenario runs on a fresh redis-server started under callgrind with instrumentation off; the
setup runs, instrumentation is switched on for the measured calls only (``callgrind_control``),
and the total is divided by the number of calls (or of jobs, for batches). The counts include the
server's own work for each call (reading the request, running the script's commands, replying),
not only Lua. Needs Debian's ``valgrind`` package.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

if os.environ.get("RJOBS_SRC"):
    sys.path.insert(0, os.environ["RJOBS_SRC"])

import compat
import redis

from rjobs import JobRequest, SyncQueue

try:
    from rjobs.cli.server import find_redis_server, find_valkey_binary, free_port
    from rjobs.store.scripts import MoveRequest
except ImportError:  # a snapshot from before the redesign
    from rjobs.scripts import MoveRequest  # type: ignore[no-redef]
    from rjobs.server import find_redis_server, find_valkey_binary, free_port  # type: ignore[no-redef]


def _server(binary: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port, data = free_port(), tempfile.mkdtemp(prefix="rjobs-icount-")
    out = os.path.join(data, "callgrind.out")
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", binary]
    cmd += ["--port", str(port), "--save", "", "--appendonly", "no", "--dir", data]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(300):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    return proc, url, out


def measure(
    binary: str, setup: Callable[[SyncQueue], Any], work: Callable[[SyncQueue, Any], None], units: int
) -> float:
    """Instructions per unit of ``work`` (after ``setup``) on a fresh server."""
    proc, url, out = _server(binary)
    try:
        q = SyncQueue("icount", url)
        q.declare()
        state = setup(q)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=False)
        work(q, state)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=False)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=False)
        q.close()
    finally:
        proc.terminate()
        proc.wait()
    total = 0
    for path in glob.glob(out + "*"):
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
    return total / units


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", choices=["redis", "valkey"], default="redis")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--only", default="", help="measure only the rows whose name contains this text")
    a = p.parse_args()
    binary = str(find_redis_server() if a.server == "redis" else find_valkey_binary())
    n = a.n

    def spec(q: SyncQueue, i: int) -> Any:
        return compat.plans(q).spec(JobRequest(type="t", params={"i": i}))

    def ready(q: SyncQueue) -> None:
        compat.backend(q).run(compat.backend(q).scripts.enqueue("a1", [spec(q, i) for i in range(n)]))

    def leased(q: SyncQueue) -> list[Any]:
        ready(q)
        return [
            j for _ in range(0, n, 100) for j in compat.backend(q).run(compat.claim(q, "w1", 100, 30000, ["t"])).jobs
        ]

    def finish(q: SyncQueue, jobs: list[Any], batch: int) -> None:
        for i in range(0, len(jobs), batch):
            reqs = [MoveRequest(j.id, "completed", token=j.token, result=b"1") for j in jobs[i : i + batch]]
            compat.backend(q).run(compat.backend(q).scripts.finish("w1", reqs))

    def enqueue_1(q: SyncQueue, s: Any) -> None:
        for i in range(n):
            compat.backend(q).run(compat.backend(q).scripts.enqueue("a1", [spec(q, i)]))

    def enqueue_500(q: SyncQueue, s: Any) -> None:
        compat.backend(q).run(compat.backend(q).scripts.enqueue("a1", [spec(q, i) for i in range(500)]))

    def claim(batch: int) -> Callable[[SyncQueue, Any], None]:
        def work(q: SyncQueue, s: Any) -> None:
            for _ in range(0, n, batch):
                compat.backend(q).run(compat.claim(q, "w1", batch, 30000, ["t"]))

        return work

    def heartbeat(q: SyncQueue, jobs: list[Any]) -> None:
        for j in jobs:
            compat.backend(q).run(compat.backend(q).scripts.heartbeat("w1", 30000, [(j.id, j.token)]))

    rows: dict[str, tuple[Callable[[SyncQueue], Any], Callable[[SyncQueue, Any], None], int]] = {
        "enqueue, 1 per call": (lambda q: None, enqueue_1, n),
        "enqueue, 500 per call (per job)": (lambda q: None, enqueue_500, 500),
        "claim, 1 per call": (ready, claim(1), n),
        "claim, 100 per call (per job)": (ready, claim(100), n),
        "heartbeat, 1 lease": (leased, heartbeat, n),
        "finish, 1 per call": (leased, lambda q, jobs: finish(q, jobs, 1), n),
        "finish, 100 per call (per job)": (leased, lambda q, jobs: finish(q, jobs, 100), n),
    }
    print(f"rjobs at {os.environ.get('RJOBS_SRC', 'this checkout')}, {a.server}: instructions per call (or job)")
    for name, (setup, work, units) in rows.items():
        if a.only not in name:
            continue
        print(f"  {name:34} {measure(binary, setup, work, units):12,.0f}")


if __name__ == "__main__":
    main()
