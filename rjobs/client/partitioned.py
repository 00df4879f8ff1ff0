"""A logical queue split into partitions: :class:`PartitionedQueue`.

Partition ``i`` of queue ``name`` is a queue of its own, named ``name#i``: its keys
(``rjobs:{name#i}:...``) have their own hash tag, so on Redis Cluster the partitions spread over
the masters, and one queue's throughput is no longer one node's. Each script still runs on one
partition, atomically; what spans partitions is decided here:

- **Where a job goes.** A job with a dedupe key goes to the partition of the key (so keep and
  replace stay atomic per key), a job with dependencies to the partition of its dependencies (all
  of them must be in one partition), a job with an explicit id to the partition the id names,
  anything else round-robin. A dedupe key and dependencies in different partitions are refused.
- **Ids name their partition.** Ids the server makes in partition ``i`` end with ``-p<i>``; an
  explicit id ending with ``-p<i>`` goes to partition ``i``, any other explicit id to the partition
  of its hash. So ``get``, ``wait`` and every move by id find the job without a lookup.
- **Priorities** hold within a partition; a worker claims from the partitions in turn, so across
  partitions a higher priority is not guaranteed to run first.
- **Reads** of the logical queue (``counts``, ``stats``, ``list``) read every partition.
- **Batches** (``enqueue_many``, ``bulk_cancel``, ``bulk_transition``) send one call per partition;
  calls to several partitions cannot be atomic together, so ``enqueue_many`` never raises once one
  partition's call may have written: requests of a refused partition come back ``refused``.

This module is the async source of :mod:`rjobs.client.sync_partitioned`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aredis

from rjobs.client.hold import Hold
from rjobs.client.queue import Queue
from rjobs.config import QueueConfig
from rjobs.errors import JobRunning, RjobsError, ValidationError
from rjobs.machines import JOB
from rjobs.models import DependencyResults, EnqueueOutcome, Job, JobOutcome, JobRequest, Who
from rjobs.statemachine import StateMachine
from rjobs.store.clients import async_client, close_async, resolve_url
from rjobs.store.keys import validate_name

__all__ = ["MAX_PARTITIONS", "PartitionedQueue", "partition_name"]

#: The most partitions a queue may have (a partition's name ends with ``#<i>``, up to 4 digits).
MAX_PARTITIONS = 1024
_NAMED = re.compile(r"-p([0-9]{1,4})(?:\.[0-9]+)?$")


def partition_name(name: str, index: int) -> str:
    """The queue name of partition ``index`` of ``name``: ``name#index``."""
    return f"{name}#{index}"


def _hash(text: str, n: int) -> int:
    return zlib.crc32(text.encode()) % n


class PartitionedQueue:
    """An async handle on a queue split into ``partitions`` queues (see the module for what is
    decided where). Arguments as for :class:`rjobs.Queue`; the partitions share one client.
    ``partitions`` is the list of the partition queues, for a worker or a direct look."""

    def __init__(
        self,
        name: str,
        partitions: int,
        url: str | None = None,
        *,
        machine: StateMachine = JOB,
        config: QueueConfig | None = None,
        client: aredis.Redis | None = None,
        actor: Who | None = None,
    ) -> None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
            raise ValidationError(f"partitions must be an integer 1-{MAX_PARTITIONS}")
        self.name = validate_name("queue name", name)
        self.machine = machine
        names = [partition_name(name, i) for i in range(partitions)]
        self._own_client = client is None
        self.client: aredis.Redis = client if client is not None else async_client(resolve_url(url))
        self.partitions = [Queue(n, machine=machine, config=config, client=self.client, actor=actor) for n in names]
        self._turn = 0

    # -- routing ----------------------------------------------------------------------------------
    def route(self, job_id: str) -> Queue:
        """The partition that holds (or would hold) the job ``job_id``."""
        named = _NAMED.search(job_id)
        if named is not None:
            index = int(named.group(1))
            if index >= len(self.partitions):
                raise ValidationError(f"job id {job_id!r} names partition {index} of {len(self.partitions)}")
            return self.partitions[index]
        return self.partitions[_hash(job_id, len(self.partitions))]

    def for_key(self, dedupe_key: str) -> Queue:
        """The partition of a dedupe key."""
        return self.partitions[_hash(dedupe_key, len(self.partitions))]

    def _place(self, req: JobRequest) -> int:
        """The partition index a request goes to (see the module)."""
        wanted = set()
        if req.dedupe_key:
            wanted.add(self.partitions.index(self.for_key(req.dedupe_key)))
        for dep in tuple(req.depends_on or ()):
            wanted.add(self.partitions.index(self.route(dep)))
        if req.job_id:
            wanted.add(self.partitions.index(self.route(req.job_id)))
        if len(wanted) > 1:
            raise ValidationError(
                "a job's dedupe key, dependencies and id must all be in one partition "
                f"(they name partitions {sorted(wanted)})"
            )
        if wanted:
            return wanted.pop()
        self._turn = (self._turn + 1) % len(self.partitions)
        return self._turn

    # -- writes -----------------------------------------------------------------------------------
    async def enqueue(self, type: str, params: Any = None, **options: Any) -> EnqueueOutcome:
        """Create a job in its partition: :meth:`rjobs.Queue.enqueue`'s arguments."""
        placed = {k: v for k, v in options.items() if k in ("dedupe_key", "depends_on", "job_id")}
        index = self._place(JobRequest(type=type, **placed))
        return await self.partitions[index].enqueue(type, params, **options)

    async def enqueue_many(self, requests: Iterable[JobRequest], *, actor: Who | None = None) -> list[EnqueueOutcome]:
        """Create many jobs, one call per partition involved (each partition's as
        :meth:`rjobs.Queue.enqueue_many`). When one partition refuses while another may have
        written, the refused requests come back as ``refused`` outcomes instead of an error."""
        reqs = list(requests)
        groups: dict[int, list[int]] = {}
        for i, req in enumerate(reqs):
            groups.setdefault(self._place(req), []).append(i)
        out: list[EnqueueOutcome | None] = [None] * len(reqs)
        failures: list[tuple[list[int], RjobsError]] = []
        for index, members in groups.items():
            try:
                done = await self.partitions[index].enqueue_many([reqs[i] for i in members], actor=actor)
            except RjobsError as exc:
                if len(groups) == 1:
                    raise  # one partition, one call: nothing was written
                failures.append((members, exc))
                continue
            for i, outcome in zip(members, done, strict=True):
                out[i] = outcome
        if failures and len(failures) == len(groups):
            raise failures[0][1]  # every partition refused: nothing was written
        for members, refusal in failures:
            for i in members:
                out[i] = EnqueueOutcome(id=reqs[i].job_id or "", outcome="refused", status="", error=str(refusal))
        return [o for o in out if o is not None]

    async def cancel(self, job_id: str, reason: str = "", *, actor: Who | None = None) -> Job:
        """:meth:`rjobs.Queue.cancel` on the job's partition."""
        return await self.route(job_id).cancel(job_id, reason, actor=actor)

    async def retry(self, job_id: str, *args: Any, **kwargs: Any) -> Job:
        """:meth:`rjobs.Queue.retry` on the job's partition."""
        return await self.route(job_id).retry(job_id, *args, **kwargs)

    async def transition(self, job_id: str, target: str, **kwargs: Any) -> Job:
        """:meth:`rjobs.Queue.transition` on the job's partition."""
        return await self.route(job_id).transition(job_id, target, **kwargs)

    def hold(self, job_id: str, **kwargs: Any) -> Hold:
        """:meth:`rjobs.Queue.hold` on the job's partition."""
        return self.route(job_id).hold(job_id, **kwargs)

    async def bulk_cancel(
        self, job_ids: Sequence[str], reason: str = "", *, actor: Who | None = None
    ) -> dict[str, str]:
        """:meth:`rjobs.Queue.bulk_cancel`, one call per partition involved."""
        out: dict[str, str] = {}
        for q, ids in self._by_partition(job_ids):
            out.update(await q.bulk_cancel(ids, reason, actor=actor))
        return out

    async def bulk_transition(self, job_ids: Sequence[str], target: str, **kwargs: Any) -> dict[str, str]:
        """:meth:`rjobs.Queue.bulk_transition`, one call per partition involved."""
        out: dict[str, str] = {}
        for q, ids in self._by_partition(job_ids):
            out.update(await q.bulk_transition(ids, target, **kwargs))
        return out

    async def delete(self, job_id: str, **options: Any) -> int:
        """:meth:`rjobs.Queue.delete` on the job's partition (its dependents are there too)."""
        return await self.route(job_id).delete(job_id, **options)

    async def bulk_delete(self, job_ids: Sequence[str], **options: Any) -> dict[str, str]:
        """:meth:`rjobs.Queue.bulk_delete`, one call per partition involved."""
        out: dict[str, str] = {}
        for q, ids in self._by_partition(job_ids):
            out.update(await q.bulk_delete(ids, **options))
        return out

    async def bulk_retry(self, job_ids: Sequence[str], *, actor: Who | None = None) -> dict[str, str]:
        """:meth:`rjobs.Queue.bulk_retry`, one call per partition involved."""
        out: dict[str, str] = {}
        for q, ids in self._by_partition(job_ids):
            out.update(await q.bulk_retry(ids, actor=actor))
        return out

    async def drain(self, *, actor: Who | None = None) -> int:
        """:meth:`rjobs.Queue.drain` on every partition; how many jobs went in all."""
        return sum([await q.drain(actor=actor) for q in self.partitions])

    async def obliterate(self, *, force: bool = False, actor: Who | None = None) -> int:
        """:meth:`rjobs.Queue.obliterate` on every partition. Without ``force``, refused (JobRunning)
        before any partition is touched while one of them has a running job."""
        if not force:
            leased = self.machine.leased
            running = sum([sum(n for s, n in (await q.counts()).items() if s in leased) for q in self.partitions])
            if running:
                raise JobRunning(f"{running} job(s) of {self.name} are running: cancel them, wait, or force")
        return sum([await q.obliterate(force=force, actor=actor) for q in self.partitions])

    def _by_partition(self, job_ids: Sequence[str]) -> list[tuple[Queue, list[str]]]:
        groups: dict[int, tuple[Queue, list[str]]] = {}
        for jid in job_ids:
            q = self.route(jid)
            groups.setdefault(id(q), (q, []))[1].append(jid)
        return list(groups.values())

    async def invalidate(self, dedupe_key: str) -> bool:
        """:meth:`rjobs.Queue.invalidate` on the key's partition."""
        return await self.for_key(dedupe_key).invalidate(dedupe_key)

    # -- reads ------------------------------------------------------------------------------------
    async def get(self, job_id: str, user_id: str | None = None) -> Job:
        """:meth:`rjobs.Queue.get` on the job's partition."""
        return await self.route(job_id).get(job_id, user_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobOutcome:
        """:meth:`rjobs.Queue.wait` on the job's partition."""
        return await self.route(job_id).wait(job_id, timeout)

    async def dependency_results(self, job_id: str, user_id: str | None = None) -> DependencyResults:
        """:meth:`rjobs.Queue.dependency_results` on the job's partition (its dependencies are there)."""
        return await self.route(job_id).dependency_results(job_id, user_id)

    async def cached_result(self, dedupe_key: str) -> Any:
        """:meth:`rjobs.Queue.cached_result` on the key's partition."""
        return await self.for_key(dedupe_key).cached_result(dedupe_key)

    async def counts(self) -> dict[str, int]:
        """Jobs per state, summed over the partitions."""
        total = dict.fromkeys(self.machine.states, 0)
        for q in self.partitions:
            for state, n in (await q.counts()).items():
                total[state] += n
        return total

    async def stats(self) -> dict[str, Any]:
        """The partitions' stats summed (counts, workers, the oldest ready job), and each one's."""
        parts = [await q.stats() for q in self.partitions]
        ages = [s["oldest_ready_age_ms"] for s in parts if s["oldest_ready_age_ms"] is not None]
        counts = dict.fromkeys(self.machine.states, 0)
        lanes: dict[str, dict[str, Any]] = {}
        for s in parts:
            for state, n in s["counts"].items():
                counts[state] += n
            for t, lane in s["lanes"].items():
                total = lanes.setdefault(t, {"ready": 0, "served": False})
                total["ready"] += lane["ready"]
                total["served"] = total["served"] or lane["served"]
        paused = [s["paused"] for s in parts if s["paused"]]
        return {
            "queue": self.name,
            "machine": self.machine.name,
            "counts": counts,
            "workers": sorted({w for s in parts for w in s["workers"]}),
            "oldest_ready_age_ms": max(ages) if ages else None,
            "lanes": dict(sorted(lanes.items())),
            "paused": paused[0] if len(paused) == len(parts) else None,  # each partition's is in partitions
            "warnings": list(dict.fromkeys(w for s in parts for w in s["warnings"])),
            "partitions": parts,
        }

    async def pause(self, reason: str = "", *, actor: Who | None = None) -> bool:
        """:meth:`rjobs.Queue.pause` on every partition; True when one of them was running."""
        return any([await q.pause(reason, actor=actor) for q in self.partitions])

    async def resume(self, *, actor: Who | None = None) -> bool:
        """:meth:`rjobs.Queue.resume` on every partition; True when one of them was paused."""
        return any([await q.resume(actor=actor) for q in self.partitions])

    async def set_limit(self, **limit: Any) -> dict[str, Any] | None:
        """:meth:`rjobs.Queue.set_limit` on every partition: a limit holds per partition (each one
        is its own Redis queue), so a cap of K over N partitions lets up to N * K run."""
        previous = [await q.set_limit(**limit) for q in self.partitions]
        return previous[0]

    async def clear_limit(self, **name: Any) -> dict[str, Any] | None:
        """:meth:`rjobs.Queue.clear_limit` on every partition."""
        previous = [await q.clear_limit(**name) for q in self.partitions]
        return previous[0]

    async def list(
        self, state: str | None = None, user_id: str | None = None, limit: int = 50, **filters: Any
    ) -> list[Job]:
        """Newest first over every partition, by state and/or owner, with :meth:`rjobs.Queue.list`'s
        filters (``type``, ``error_code``, ``assignee``)."""
        found = [job for q in self.partitions for job in await q.list(state, user_id, limit, **filters)]
        return sorted(found, key=lambda job: (job.created_ms, job.id), reverse=True)[:limit]

    async def close(self) -> None:
        """Close every partition, and the client if made here."""
        for q in self.partitions:
            await q.close()
        if self._own_client:
            await close_async(self.client)

    async def __aenter__(self) -> PartitionedQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
