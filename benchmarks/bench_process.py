"""Processing throughput of ONE worker process (rjobs.Worker on asyncio) at concurrency
10 and 100, job history on (always), the queue-wide stream on and off.

Method (peerbench's process mode): fresh server, N jobs pre-enqueued with ``enqueue_many``,
then the worker process is spawned and the harness polls ``ZCARD state:completed`` (1 ms until
the first completion, then every 5 ms) until N jobs completed. Reported:

* ``jobs_per_s``: N / (N-th completion seen - spawn), interpreter start-up and imports included;
* ``steady_jobs_per_s``: (N-1) / (N-th completion seen - first completion);
* worker / redis-server CPU µs per job between the first completion seen and the N-th;
* Redis round trips per job: client commands (EVALSHA, BLPOP, ...) from ``INFO commandstats``
  over the whole run (the harness's own polling subtracted), plus the worker's claim/finish
  batch sizes from its WorkerStats.

The job body is ``noop`` (returns None) by default; ``mode="incr"`` adds peerbench's per-job
``INCR`` so the figure compares with the peers' (their jobs all do that INCR).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_roundtrips as RT
import common as C
import compat

APP = Path(__file__).resolve().parent / "worker_app.py"
LOGS = C.RESULTS_DIR / "logs"


class WorkerProcess:
    """The spawned worker, in its own session so its CPU (and any child) is counted as a group."""

    def __init__(
        self,
        url: str,
        concurrency: int,
        mode: str,
        queue_events: bool,
        tag: str,
        prefix: tuple[str, ...] = (),
        keep: float | None = None,
    ) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.stats_path = Path(tempfile.mkstemp(prefix="rjbench-stats-", suffix=".json")[1])
        self.log_path = LOGS / f"{tag}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the worker
        cmd = [
            *prefix,  # e.g. py-spy record ... --  (py-spy can only sample its own children here)
            sys.executable,
            str(APP),
            "--url",
            url,
            "-c",
            str(concurrency),
            "--mode",
            mode,
            "--queue-events",
            str(int(queue_events)),
            "--stats",
            str(self.stats_path),
            "--keep",
            str(-1.0 if keep is None else keep),
        ]
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> dict[str, Any]:
        """SIGTERM (graceful), SIGKILL after 15 s; the worker's stats, if it wrote them."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        try:
            return dict(json.loads(self.stats_path.read_text() or "{}"))
        except (OSError, ValueError):
            return {}
        finally:
            self.stats_path.unlink(missing_ok=True)

    def tail(self) -> str:
        return "".join(self.log_path.read_text().splitlines(keepends=True)[-15:])


def measure(
    url: str,
    n: int,
    concurrency: int,
    queue_events: bool = True,
    mode: str = "noop",
    timeout: float = 120.0,
    keep: float | None = None,
) -> dict[str, Any]:
    """One drain of n jobs. ``keep``: the queue purges finished jobs this many seconds after they
    end (retention active during the run): progress is then read as the jobs no longer ready or
    running, since the finished ones are being purged."""
    r = C.client(url)
    C.fresh(r)
    q = RT.sync_queue(url, queue_events)
    RT.preload(q, n)
    completed_key = compat.backend(q).keys.state(q.machine.success or "completed")
    q.close()
    spid = C.server_pid(r)
    polls = 0

    running_key = compat.backend(q).keys.state(q.machine.leased[-1])

    def done() -> int:
        nonlocal polls
        polls += 1
        if keep is not None:
            polls += 1
            return n - int(r.zcard(compat.backend(q).keys.state(q.machine.ready))) - int(r.zcard(running_key))
        return int(r.zcard(completed_key))

    s0 = C.commandstats(r)
    tag = f"process-{mode}-c{concurrency}-{'ev' if queue_events else 'noev'}{'' if keep is None else '-keep'}"
    w = WorkerProcess(url, concurrency, mode, queue_events, tag, keep=keep)
    try:
        deadline = time.time() + timeout
        while done() == 0:
            if not w.alive() or time.time() > deadline:
                raise RuntimeError(f"worker did not start a job:\n{w.tail()}")
            time.sleep(0.001)
        d0 = done()
        t_first = time.time()
        wc0, sc0 = C.cpu_seconds(w.pid, group=True), C.cpu_seconds(spid)
        while (d := done()) < n:
            if not w.alive() or time.time() > deadline:
                raise RuntimeError(f"stuck at {d}/{n}:\n{w.tail()}")
            time.sleep(0.005)
        t_end = time.time()
        wc1, sc1 = C.cpu_seconds(w.pid, group=True), C.cpu_seconds(spid)
        time.sleep(0.3)
        final = done()
        if keep is None:
            first = r.zrange(completed_key, 0, 0, withscores=True)[0][1] / 1000.0
        else:  # finished jobs are being purged: the first completion as the harness saw it
            first = t_first
        finished_left = int(r.zcard(completed_key))
        delta = C.stats_delta(s0, C.commandstats(r))
    finally:
        stats = w.stop()
    jobs = max(n - d0, 1)
    parts = C.split_commands(delta, {"zcard": polls})
    client_cmds = {k: v for k, v in parts["client"].items() if k not in ("info", "config|resetstat")}
    ev = delta.get("evalsha", {"calls": 0, "usec": 0})
    row: dict[str, Any] = {
        "mode": mode,
        "concurrency": concurrency,
        "queue_events": queue_events,
        "n": n,
        "jobs_per_s": round(n / (t_end - w.t_spawn), 1),
        "steady_jobs_per_s": round((n - 1) / max(t_end - first, 1e-9), 1),
        "startup_s": round(first - w.t_spawn, 3),
        "worker_cpu_us_per_job": round((wc1 - wc0) / jobs * 1e6, 1),
        "server_cpu_us_per_job": round((sc1 - sc0) / jobs * 1e6, 1),
        "evalsha_per_job": round(ev["calls"] / n, 4),
        "client_commands_per_job": round(sum(client_cmds.values()) / n, 4),
        "script_server_us_per_job": round(ev["usec"] / n, 2),
        "completed": final,
        "duplicates": final - n,
        "retention_s": keep,
        "finished_still_stored": finished_left,
        "client_commands": client_cmds,
        "worker_stats": stats,
    }
    if stats.get("claim_calls"):
        row["jobs_per_claim"] = round(stats["claimed"] / stats["claim_calls"], 2)
    if stats.get("finish_calls"):
        row["jobs_per_finish"] = round(stats["finished"] / stats["finish_calls"], 2)
    return row


def run(url: str, n: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in (10, 100):
        for qe in (True, False):
            tag = f"noop_c{c}_{'events_on' if qe else 'events_off'}"
            out[tag] = C.repeat(lambda c=c, qe=qe: measure(url, n, c, qe), reps, f"process {tag}")
        out[f"incr_c{c}_events_on"] = C.repeat(lambda c=c: measure(url, n, c, True, "incr"), reps, f"process incr c{c}")
        # retention active during the run: finished jobs are purged 1 s after they end
        out[f"noop_c{c}_keep1s"] = C.repeat(
            lambda c=c: measure(url, n, c, True, keep=1.0), reps, f"process noop c{c} retention 1 s"
        )
    return out
