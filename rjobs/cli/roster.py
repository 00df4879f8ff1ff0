"""Who serves a queue, for the CLI: the live workers and their details (``rjobs workers``,
rjobs.cli.fleet), the warning of ``rjobs enqueue`` when nobody serves a new queue, and the notices
of ``rjobs watch`` when a queue's last worker goes away or one comes back.

A worker is listed in the queue's ``workers`` zset (id -> last heartbeat, server ms) and describes
itself in ``workers:info`` (rjobs.worker.presence); both are written by its heartbeats and removed
by the reaper once it falls silent, or at once by a clean shutdown. "Alive" means a heartbeat
within :data:`ALIVE_WINDOW_MS`, the window ``rjobs stats`` counts its workers in."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import redis
from rich.table import Table

from rjobs.cli.render import Output, age
from rjobs.store.keys import QueueKeys
from rjobs.worker.presence import decode_info

__all__ = ["ALIVE_WINDOW_MS", "QueueWatchers", "read_workers", "warn_if_unserved", "workers_table"]

#: A worker seen within this window is alive (the window of ``rjobs stats``: Queue.stats()).
ALIVE_WINDOW_MS = 30_000


def read_workers(client: redis.Redis, queues: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The workers listed in ``queues`` (one pipeline, then the server's TIME), freshest first,
    each with its details and ``last_heartbeat_ms``, ``age_ms``, ``alive`` and ``seen_in`` (the
    queues that list it); and the live workers per queue."""
    pipe = client.pipeline(transaction=False)  # TIME stays out: a cluster pipeline refuses it
    for name in queues:
        k = QueueKeys(name)
        pipe.zrange(k.workers, 0, -1, withscores=True)
        pipe.hgetall(k.workers_info)
    raw: list[Any] = pipe.execute()
    seconds, micros = client.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    found: dict[str, dict[str, Any]] = {}
    alive: dict[str, int] = {}
    for i, name in enumerate(queues):
        listed, infos = raw[2 * i], raw[2 * i + 1]
        alive[name] = 0
        for member, score in listed:
            wid = member.decode()
            seen = int(score)
            alive[name] += now - seen <= ALIVE_WINDOW_MS
            doc = found.get(wid)
            if doc is None:
                doc = found[wid] = {**decode_info(infos.get(member)), "id": wid, "seen_in": [], "last_heartbeat_ms": 0}
            doc["seen_in"].append(name)
            if seen > doc["last_heartbeat_ms"]:
                doc["last_heartbeat_ms"] = seen
                doc.update(decode_info(infos.get(member)), id=wid)  # the details of its freshest queue
    for doc in found.values():
        doc["age_ms"] = max(0, now - doc["last_heartbeat_ms"])
        doc["alive"] = doc["age_ms"] <= ALIVE_WINDOW_MS
        doc.setdefault("queues", doc["seen_in"])
    return sorted(found.values(), key=lambda d: (d["age_ms"], d["id"])), alive


def workers_table(workers: Sequence[dict[str, Any]]) -> Table:
    """One row per worker: id, host, pid, queues, jobs in flight, age of its last heartbeat, version."""
    table = Table(header_style="bold")
    for name in ("worker", "host", "pid", "queues", "in flight", "last heartbeat", "version"):
        table.add_column(name, justify="right" if name in ("pid", "in flight") else "left")
    for w in workers:
        get = functools.partial(_field, w)
        queues = ",".join(w["queues"]) + (f" +{w['queues_more']}" if w.get("queues_more") else "")
        in_flight = get("in_flight") + (f"/{w['concurrency']}" if w.get("concurrency") is not None else "")
        heartbeat = f"{age(w['age_ms'])} ago" + ("" if w["alive"] else " (silent)")
        table.add_row(w["id"], get("host"), get("pid"), queues, in_flight, heartbeat, get("version"))
    return table


def _field(doc: dict[str, Any], key: str) -> str:
    return str(doc[key]) if doc.get(key) is not None else "-"


def warn_if_unserved(client: redis.Redis, queue: str, new: bool, out: Output) -> None:
    """After an enqueue to a queue that was ``new`` (no machine stored before): warn on stderr
    when no worker is alive for it (a typo in the queue name would wait forever)."""
    if new and not read_workers(client, [queue])[1][queue]:
        out.notice(
            f"[yellow]warning:[/] queue {queue!r} is new and no worker serves it: the job waits until "
            f"one does (`rjobs worker module:attr -q {queue}`; is the name right?)"
        )


class QueueWatchers:
    """For ``rjobs watch``: says on stderr when no worker is alive for the job's queue, and again
    when one appears or the last one disappears (read at most once a second)."""

    def __init__(self, client: redis.Redis, queue: str, out: Output) -> None:
        self.client, self.queue, self.out = client, queue, out
        self.alive: bool | None = None
        self.next_check = 0.0

    def check(self) -> None:
        """Read the queue's live workers; print a notice when that changed (or, first, when none)."""
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + 1.0
        try:
            alive = read_workers(self.client, [self.queue])[1][self.queue] > 0
        except redis.RedisError:
            return  # the watch itself reports a lost server
        if alive == self.alive or (self.alive is None and alive):
            self.alive = alive
            return
        self.alive = alive
        text = "a worker is alive for queue {q} again" if alive else "no worker is alive for queue {q}"
        self.out.notice(f"[dim]rjobs: {text.format(q=repr(self.queue))}[/]")
