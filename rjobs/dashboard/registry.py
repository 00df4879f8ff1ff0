"""The queues a dashboard shows, opened once per process: each an async :class:`rjobs.Queue` on
the dashboard's one client, with the machine stored in Redis (so any machine shows: JOB, TASK or a
custom one), plus the reads a page needs besides the Queue API: the workers listed in a queue and
the per-minute series the charts draw from ``Queue.metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aredis

from rjobs.client.queue import Queue
from rjobs.models import MetricsBucket
from rjobs.statemachine import StateMachine
from rjobs.store.keys import QueueKeys

__all__ = ["ALIVE_WINDOW_MS", "MAX_MINUTES", "Registry", "minute_series"]

#: A worker seen within this window is alive (the window of Queue.stats() and ``rjobs workers``).
ALIVE_WINDOW_MS = 30_000
#: The longest chart window a page may ask for (a day of one-minute buckets).
MAX_MINUTES = 1440


class Registry:
    """The dashboard's queues by name; a queue with nothing stored yet is opened when it appears."""

    def __init__(self, client: aredis.Redis, names: Sequence[str]) -> None:
        self.client = client
        self.names = tuple(names)
        self.opened: dict[str, Queue] = {}

    async def queue(self, name: str) -> Queue | None:
        """The open queue, or None while nothing was ever enqueued to it (no machine stored)."""
        if name in self.opened:
            return self.opened[name]
        raw: Any = await self.client.hget(QueueKeys(name).machine, "fingerprint")
        if raw is None:
            return None
        queue = Queue(name, machine=StateMachine.from_fingerprint(raw), client=self.client, actor="dashboard")
        self.opened[name] = queue
        return queue

    async def workers(self, name: str) -> list[dict[str, Any]]:
        """The workers listed in the queue, freshest first: their details (host, pid, in_flight,
        concurrency, version...) with ``id``, ``age_ms`` and ``alive``."""
        keys = QueueKeys(name)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.workers, 0, 999, withscores=True)
            pipe.hgetall(keys.workers_info)
            listed, infos = await pipe.execute()
        seconds, micros = await self.client.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        out = []
        for member, score in listed:
            try:
                doc = msgspec.json.decode(infos.get(member) or b"{}")
            except msgspec.DecodeError:
                doc = {}
            doc = doc if isinstance(doc, dict) else {}
            age = max(0, now - int(score))
            doc.update(id=member.decode(), age_ms=age, alive=age <= ALIVE_WINDOW_MS)
            out.append(doc)
        return sorted(out, key=lambda d: (d["age_ms"], d["id"]))

    async def close(self) -> None:
        """Close the queues (their wait readers; the client is the caller's)."""
        for queue in self.opened.values():
            await queue.close()


def _total(counts: Any) -> int:
    return sum(int(v) for v in counts.values()) if isinstance(counts, dict) else 0


def minute_series(buckets: Sequence[MetricsBucket], failure_states: Sequence[str]) -> dict[str, list[float | None]]:
    """Per-minute series from ``Queue.metrics()`` buckets (oldest first): ``enqueued`` and
    ``finished`` jobs, ``failure_rate`` (the share of finished jobs that ended in a failure
    state, None for a minute with none), and the average ``wait_ms`` (queue wait per claim) and
    ``run_ms`` (last attempt's run time per finished job that had started), None when nothing ran."""
    out: dict[str, list[float | None]] = {k: [] for k in ("start_ms", "enqueued", "finished", "failure_rate")}
    out.update(wait_ms=[], run_ms=[])
    for b in buckets:
        finished = sum(_total(per_type) for per_type in b.finished.values())
        failed = sum(_total(b.finished.get(s, {})) for s in failure_states)
        claimed, runs = _total(b.claimed), _total(b.runs)
        out["start_ms"].append(b.start_ms)
        out["enqueued"].append(_total(b.enqueued))
        out["finished"].append(finished)
        out["failure_rate"].append(failed / finished if finished else None)
        out["wait_ms"].append(_total(b.wait_ms) / claimed if claimed else None)
        out["run_ms"].append(_total(b.run_ms) / runs if runs else None)
    return out
