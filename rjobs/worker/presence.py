"""What a worker tells the people and supervisors who look at a queue: its details, stored in the
queue's ``workers:info`` hash (field = worker id, value = a JSON object) by every heartbeat, next to
its last heartbeat time in the ``workers`` zset. ``rjobs workers`` reads them; the reaper drops both
once the worker falls silent, and a clean shutdown drops them at once
(:meth:`rjobs.worker.leases.LeaseKeeper.leave`).

The object is bounded: at most :data:`MAX_INFO` bytes (heartbeat.lua refuses more), so a worker
with very many functions or queues lists the first ones and counts the rest."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import msgspec

from rjobs.about import VERSION
from rjobs.worker.clock import ServerClock

if TYPE_CHECKING:
    from rjobs.worker.leases import LeaseBook
    from rjobs.worker.loop import Worker

__all__ = ["MAX_INFO", "Presence", "decode_info"]

#: The largest details object heartbeat.lua stores (bytes of JSON).
MAX_INFO = 4096
_encode = msgspec.json.Encoder().encode


class Presence:
    """The details of one running worker, as the JSON object each heartbeat stores: ``id``,
    ``host``, ``pid``, ``queues``, ``functions`` (the job types it runs), ``concurrency``,
    ``in_flight`` (jobs held now), ``started_ms`` (server clock), ``heartbeat_s``, ``lease_s``
    and ``version`` (of rjobs)."""

    def __init__(self, worker: Worker, book: LeaseBook, clock: ServerClock) -> None:
        self.worker = worker
        self.book = book
        self.host = socket.gethostname()[:200]
        self.pid = os.getpid()
        self.started_ms = clock.now_ms()

    def info(self) -> bytes:
        """The details now, as JSON of at most :data:`MAX_INFO` bytes."""
        w = self.worker
        doc: dict[str, Any] = {
            "id": w.worker_id,
            "host": self.host,
            "pid": self.pid,
            "queues": [q.name for q in w.queues],
            "functions": sorted(w.functions),
            "concurrency": w.concurrency,
            "in_flight": len(self.book),
            "started_ms": self.started_ms,
            "heartbeat_s": w.heartbeat,
            "lease_s": w.lease,
            "version": VERSION,
        }
        raw = _encode(doc)
        for name in ("functions", "queues"):  # too long: keep the first ones and count the rest
            items: list[str] = doc[name]
            while len(raw) > MAX_INFO and items:
                del items[len(items) // 2 :]
                doc[f"{name}_more"] = len(getattr(w, name)) - len(items)
                raw = _encode(doc)
        return raw


def decode_info(raw: bytes | str | None) -> dict[str, Any]:
    """A stored details object (``{}`` for none, or for one that is not a JSON object)."""
    if raw is None:
        return {}
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
