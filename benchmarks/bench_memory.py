"""Redis memory per waiting job and per finished job, with the queue-wide event stream on and off.

Method: a fresh server, the queue declared, ``used_memory`` (``INFO memory``) read; N jobs
enqueued with ``enqueue_many`` (params ``{"i": i}``, no user, no dedupe key) and ``used_memory``
read again: (after - before) / N is the memory per *waiting* job. Then every job is claimed and
completed with result ``null`` through the Worker's claim/finish scripts (batches of 100), and the
delta to the same baseline / N is the memory per *finished* job (kept until retention purges it:
24 h for successes by default). ``MEMORY USAGE`` of one job's keys and of each shared index
(divided by N) gives the breakdown. used_memory includes allocator rounding, so the parts do not
add up exactly.

With the peers' venv present (``PEER_PYTHON``, default ``~/.cache/peerbench-venv/bin/python``),
BullMQ, SAQ and RQ are measured the same way on the same server (benchmarks/peers/memory.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import bench_roundtrips as RT
import common as C
import compat


def _usage(r: Any, key: str) -> int:
    return int(r.memory_usage(key, samples=0) or 0)


def _breakdown(r: Any, prefix: str, job_id: str, n: int, shared: list[str]) -> dict[str, float]:
    out: dict[str, float] = {
        "job hash": _usage(r, f"{prefix}job:{job_id}"),
        "job history": _usage(r, f"{prefix}job:{job_id}:history"),
    }
    for name in shared:
        out[f"{name} (per job)"] = round(_usage(r, prefix + name) / n, 1)
    return out


def measure(url: str, n: int, queue_events: bool = True) -> dict[str, Any]:
    r = C.client(url)
    C.fresh(r)
    q = RT.sync_queue(url, queue_events)
    prefix = compat.backend(q).keys.prefix
    base = C.memory_used(r)
    s0 = C.commandstats(r)
    RT.preload(q, n)
    s1 = C.commandstats(r)
    waiting = C.memory_used(r)
    # the ready set: one lane per job type since the lanes change ("ready" before it)
    ready = prefix + "ready:noop" if r.exists(prefix + "ready:noop") else prefix + "ready"
    first = r.zrange(ready, 0, 0)[0].decode()
    waiting_parts = _breakdown(r, prefix, first, n, [ready[len(prefix) :], "state:queued", "events"])
    s2 = C.commandstats(r)
    jobs = RT.claim_all(q, n, 100)
    s3 = C.commandstats(r)
    RT.finish_all(q, jobs, 100)
    s4 = C.commandstats(r)
    finished = C.memory_used(r)

    def server_us(before: Any, after: Any) -> float:
        return round(C.stats_delta(before, after).get("evalsha", {"usec": 0})["usec"] / n, 2)

    server = {"enqueue": server_us(s0, s1), "claim": server_us(s2, s3), "finish": server_us(s3, s4)}
    server["job"] = round(sum(server.values()), 2)
    finished_parts = _breakdown(r, prefix, first, n, ["state:completed", "events"])
    sample = {k.decode(): v.decode() for k, v in r.hgetall(f"{prefix}job:{first}").items()}
    q.close()
    return {
        "queue_events": queue_events,
        "n": n,
        "bytes_per_waiting_job": round((waiting - base) / n, 1),
        "bytes_per_finished_job": round((finished - base) / n, 1),
        # server time (EVALSHA usec) per job of the same run: enqueue_many, claim and finish by 100
        "server_us_per_job": server,
        "waiting_breakdown": waiting_parts,
        "finished_breakdown": finished_parts,
        "finished_job_hash_fields": len(sample),
        "finished_job_history_entries": r.llen(f"{prefix}job:{first}:history"),
    }


def measure_tuned(url: str, n: int) -> dict[str, Any]:
    """As measure(), on a server set up like rjobs' embedded one (rjobs.cli.server.TUNING:
    stream-node-max-bytes 512; it mattered while each job's history was a stream of its own)."""
    r = C.client(url)
    default = r.config_get("stream-node-max-bytes")["stream-node-max-bytes"]
    r.config_set("stream-node-max-bytes", 512)
    try:
        return measure(url, n, True)
    finally:
        r.config_set("stream-node-max-bytes", default)


#: The peers measured next to rjobs, each in the peers' venv (benchmarks/peers/memory.py).
PEERS = ("bullmq", "saq", "rq")
PEER_PYTHON = os.environ.get("PEER_PYTHON", os.path.expanduser("~/.cache/peerbench-venv/bin/python"))


def measure_peer(peer: str, url: str, n: int) -> dict[str, Any]:
    """The same two figures for a peer, on the same server: its bulk (or single) enqueue of the
    reference job, then its own worker with its default retention of finished jobs."""
    script = Path(__file__).parent / "peers" / "memory.py"
    done = subprocess.run([PEER_PYTHON, str(script), peer, url, str(n)], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{peer}: {done.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def run(url: str, n: int, reps: int) -> dict[str, Any]:
    out = {}
    for qe in (True, False):
        tag = "events_on" if qe else "events_off"
        out[tag] = C.repeat(lambda qe=qe: measure(url, n, qe), reps, f"memory {tag}")
    out["events_on_node512"] = C.repeat(lambda: measure_tuned(url, n), reps, "memory events_on_node512")
    if Path(PEER_PYTHON).exists():  # the peers' venv (benchmarks/README.md, "Peers")
        for peer in PEERS:
            out[f"peer_{peer}"] = C.repeat(lambda peer=peer: measure_peer(peer, url, n), reps, f"memory {peer}")
    return out
