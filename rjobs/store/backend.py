"""The queue as a worker sees it: the few operations that drive jobs (claim, heartbeat, finish,
review, reap) on one queue, each one script call sent over the queue's transport.

A :class:`Backend` belongs to a :class:`rjobs.Queue` (``queue.backend``); the worker, a manual
hold and tools that drive jobs by hand use it instead of reaching into the queue. It holds no
state of its own beyond what it is given: the queue's identity, its scripts and its runner.

This module is the async source of :mod:`rjobs.store.sync_backend`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from rjobs.statemachine import StateMachine
from rjobs.store.keys import QueueKeys
from rjobs.store.scripts import Call, ClaimResult, Cmd, MoveRequest, Op, Scripts
from rjobs.store.transport import Runner

__all__ = ["HEARTBEAT_CHUNK", "Backend"]

T = TypeVar("T")
#: Jobs per heartbeat call (the script's limit): a longer list is sent as several calls.
HEARTBEAT_CHUNK = 10_000


class Backend:
    """The job-driving operations of one queue. Every method is one round trip (the heartbeat
    of more than :data:`HEARTBEAT_CHUNK` jobs, several); script errors raise their typed
    :mod:`rjobs.errors` exception, per-job outcomes are returned as the scripts' outcome strings
    (see :func:`rjobs.store.scripts.outcome_error`)."""

    def __init__(self, name: str, machine: StateMachine, scripts: Scripts, runner: Runner) -> None:
        self.name = name
        self.machine = machine
        self.scripts = scripts
        self.keys: QueueKeys = scripts.keys
        self.runner = runner

    async def run(self, call: Call[T]) -> T:
        """Send one script call (exactly once)."""
        return await self.runner.run(call)

    async def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is its value or its exception (not raised)."""
        return await self.runner.run_many(ops)

    async def command(self, cmd: Cmd) -> Any:
        """Send one plain (idempotent) command."""
        return await self.runner.command(cmd)

    async def server_time(self) -> Any:
        """The server's ``TIME`` reply (seconds, microseconds)."""
        return await self.runner.command(Cmd(("TIME",)))

    async def claim(
        self, worker_id: str, max_jobs: int, lease_ms: int, types: Sequence[str], seen: bool = True
    ) -> ClaimResult:
        """Promote due delayed jobs and lease up to ``max_jobs`` ready ones of the job ``types`` to
        ``worker_id``; ``seen`` records in the lanes index that a worker running them came."""
        return await self.runner.run(self.scripts.claim(worker_id, max_jobs, lease_ms, types, seen=seen))

    def claim_call(
        self, worker_id: str, max_jobs: int, lease_ms: int, types: Sequence[str], seen: bool = True
    ) -> tuple[Runner, Call[ClaimResult]]:
        """The claim as ``(runner, call)``, for a worker that sends the claims of several queues
        together (:func:`rjobs.store.cluster.run_by_node`)."""
        return self.runner, self.scripts.claim(worker_id, max_jobs, lease_ms, types, seen=seen)

    async def backoff(self, name: str, ms: int) -> int:
        """Claim no job of the limited ``t:<type>`` / ``g:<group>`` for ``ms``; the back-off's end."""
        return await self.runner.run(self.scripts.backoff(name, ms))

    async def heartbeat(
        self, holder: str, lease_ms: int, pairs: Sequence[tuple[str, str]], register: bool = True, info: bytes = b""
    ) -> list[str]:
        """Renew the leases of ``(job id, token)`` pairs for ``lease_ms``: per job ``'ok'``,
        ``'cancel'`` (cancelled while held) or ``'lost'``. ``register`` lists the holder as a live
        worker (a worker does, a manual holder does not), with ``info`` (a JSON object, at most
        4096 bytes) as its details in ``workers:info``."""
        replies: list[str] = []
        for i in range(0, max(len(pairs), 1), HEARTBEAT_CHUNK):
            call = self.scripts.heartbeat(
                holder, lease_ms, pairs[i : i + HEARTBEAT_CHUNK], int(register), info if i == 0 else b""
            )
            chunk: list[str] = await self.runner.run(call)
            replies.extend(chunk)
        return replies

    async def leave(self, worker_id: str, lease_ms: int) -> None:
        """Drop a worker that shuts down cleanly from the live workers and their details."""
        await self.runner.run(self.scripts.heartbeat(worker_id, lease_ms, [], 2))

    async def finish(self, worker_id: str, requests: Sequence[MoveRequest]) -> list[str]:
        """Write fenced outcomes (each request carries its lease token); one outcome per request."""
        return await self.runner.run(self.scripts.finish(worker_id, requests))

    async def review(self, worker_id: str, job_id: str, token: str, result: bytes = b"", note: str = "") -> str:
        """Hand a held job to the machine's review state (``result``: a draft, left out: keep the
        stored one) -> the script's outcome for it."""
        state = self.machine.review
        if state is None:
            raise ValueError(f"machine {self.machine.name!r} has no review state")
        request = MoveRequest(job_id, state, token=token, result=result, msg=note)
        return (await self.finish(worker_id, [request]))[0]

    async def reap(self, limit: int, max_lease_losses: int, purge: int, worker_ttl_ms: int) -> list[Any]:
        """Recover expired leases and purge finished jobs past retention, with the server's
        ``TIME`` in the same round trip: ``[(requeued, failed, purged), time]``, each item its
        value or its exception (not raised)."""
        call = self.scripts.reap(limit, max_lease_losses, purge, worker_ttl_ms)
        return await self.runner.run_many([call, Cmd(("TIME",))])
