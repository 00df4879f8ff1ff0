"""What a worker is configured with, checked: its id, its queues (given, named, or moved by the
CLI's options) and its numeric settings. A bad setting raises ValueError before anything runs."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Sequence

from rjobs.client.partitioned import PartitionedQueue
from rjobs.client.queue import Queue

__all__ = ["Given", "check_settings", "make_worker_id", "queues_of", "reconfigured"]


def make_worker_id() -> str:
    """``<hostname>-<pid>-<random>``, within the key charset (A-Z a-z 0-9 _ . -)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


#: What a worker may be given as its queues: queues, partitioned queues, or names.
Given = Queue | PartitionedQueue | str


def queues_of(queues: Given | Sequence[Given], url: str | None, own: list[Queue]) -> list[Queue]:
    """The queues a worker serves: each given queue, the partitions of a partitioned one, or a
    new queue for each name (on ``url``; appended to ``own``, the queues the worker closes)."""
    given = [queues] if isinstance(queues, (Queue, PartitionedQueue, str)) else list(queues)
    if not given:
        raise ValueError("a worker needs at least one queue")
    out = []
    for q in given:
        if isinstance(q, PartitionedQueue):
            out += q.partitions
            continue
        if isinstance(q, str):
            q = Queue(q, url=url)
            own.append(q)
        out.append(q)
    return _distinct(out)


def reconfigured(current: list[Queue], url: str | None, names: Sequence[str] | None, own: list[Queue]) -> list[Queue]:
    """The queues after ``url`` (every queue moves to that server) and ``names`` (serve these:
    those not among ``current`` take the first queue's machine, config and server)."""
    known = {q.name: q for q in current}
    template = current[0]
    out = []
    for name in names or list(known):
        base = known.get(name)
        if base is not None and url is None:
            out.append(base)
            continue
        base = base or template
        client = None if url is not None else template.client  # a new queue on the same server
        q = Queue(name, url=url, machine=base.machine, config=base.config, client=client)
        if client is None:
            own.append(q)
        out.append(q)
    return _distinct(out)


def _distinct(queues: list[Queue]) -> list[Queue]:
    if len({q.name for q in queues}) != len(queues):
        raise ValueError("a queue is listed twice")
    return queues


def check_settings(
    concurrency: int, lease: float, heartbeat: float, grace: float, max_lease_losses: int, reap_limit: int
) -> None:
    """ValueError for a setting out of range."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1000:
        raise ValueError("concurrency must be an integer 1-1000")
    if not 0.1 <= lease <= 86_400:
        raise ValueError("lease must be 0.1 s to one day")
    if not 0 < heartbeat < lease:
        raise ValueError("heartbeat must be shorter than the lease")
    if grace < 0 or max_lease_losses < 1 or not 1 <= reap_limit <= 10_000:
        raise ValueError("grace must be >= 0, max_lease_losses >= 1, reap_limit 1-10000")
