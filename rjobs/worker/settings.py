"""What a worker is configured with, checked: its id, its queues (given, named, or moved by the
CLI's options) and its numeric settings. A bad setting raises ValueError before anything runs."""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
from collections.abc import Mapping, Sequence

from rjobs.client.partitioned import PartitionedQueue
from rjobs.client.queue import Queue

__all__ = [
    "ORDERS",
    "Given",
    "QueueOrder",
    "check_settings",
    "make_worker_id",
    "parse_weights",
    "queues_of",
    "reconfigured",
]


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


#: How a worker serving several queues chooses among them (:class:`QueueOrder`).
ORDERS = ("strict", "weighted")
MAX_WEIGHT = 1_000_000


class QueueOrder:
    """How a worker that serves several queues shares its free slots among them.

    ``strict`` (the default): in the order the queues are given: a queue is claimed from only once
    the ones before it have no ready job left for the free slots. ``weighted``: weighted round
    robin: over claims, each queue is offered the free slots in proportion to its weight
    (``weights``: queue name -> a positive number, default 1; a partitioned queue by its name),
    and the slots a queue cannot fill (no job ready) go to the next ones, so an empty queue
    starves nobody and is owed nothing when it fills. ``mode`` None: weighted when ``weights``
    are given, else strict. A bad mode or weight raises ValueError."""

    def __init__(self, mode: str | None = None, weights: Mapping[str, float] | None = None) -> None:
        if mode is None:
            mode = "weighted" if weights else "strict"
        if mode not in ORDERS or not isinstance(mode, str):
            raise ValueError(f"order must be 'strict' or 'weighted', not {mode!r}")
        if weights and mode != "weighted":
            raise ValueError("weights need order='weighted'")
        if weights is not None and not isinstance(weights, Mapping):
            raise ValueError("weights must map queue names to positive numbers")
        for name, weight in (weights or {}).items():
            if (
                not isinstance(name, str)
                or isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not math.isfinite(weight)
                or not 0 < weight <= MAX_WEIGHT
            ):
                raise ValueError(f"weight of queue {name!r} must be a number above 0, up to {MAX_WEIGHT}: {weight!r}")
        self.mode = mode
        self.weights = dict(weights or {})

    def __repr__(self) -> str:
        return f"QueueOrder({self.mode!r}, {self.weights!r})"

    def check(self, queues: Sequence[Queue]) -> None:
        """ValueError when a weight names a queue the worker does not serve."""
        served = {q.name.partition("#")[0] for q in queues}
        unknown = sorted(set(self.weights) - served)
        if unknown:
            raise ValueError(f"weights name queues this worker does not serve: {unknown} (it serves {sorted(served)})")

    def of(self, names: Sequence[str]) -> list[float] | None:
        """The weight of each named queue (a partitioned queue's name), None when strict."""
        if self.mode == "strict":
            return None
        return [float(self.weights.get(name, 1)) for name in names]

    def configured(self, mode: str | None, weights: Mapping[str, float] | None) -> QueueOrder:
        """The order after the command line's options: ``mode`` None keeps the mode unless
        ``weights`` are given (then weighted); ``weights`` replace the worker's own; strict drops them."""
        if mode is None and weights is None:
            return self
        if mode is None:
            mode = "weighted"
        if weights is None and mode == "weighted":
            weights = self.weights
        return QueueOrder(mode, weights)


def parse_weights(items: Sequence[str] | None) -> dict[str, float] | None:
    """``["high=5", "low=1"]`` (``--weight``) -> ``{"high": 5.0, "low": 1.0}``; ValueError for a
    malformed item or a queue named twice; None for no items."""
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weight = float(value) if sep and name else math.nan
        except ValueError:
            weight = math.nan
        if not sep or not name:
            raise ValueError(f"--weight must be QUEUE=WEIGHT (e.g. high=5), not {item!r}")
        if name in out:
            raise ValueError(f"--weight names queue {name!r} twice")
        out[name] = weight  # checked by QueueOrder (NaN included)
    return out
