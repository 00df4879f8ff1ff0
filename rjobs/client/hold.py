"""Holding a job by hand: a service or a person takes a job into a leased state under a lease of
its own length, keeps the lease alive, and ends it with fenced writes — without a worker loop.

``async with queue.hold(job_id, lease=600) as held:`` moves the job into its first leased state
(or ``state=``), which issues a new lease token, and renews the lease every ``lease / 3`` seconds
while the block runs. Every write through ``held`` presents the token. If the lease is lost (it
expired, or an operator moved the job) or the job is cancelled, the block is cancelled at its next
``await`` and :class:`rjobs.LeaseLost` is raised from the ``async with``. On the way out:

- the block ended the job (``complete``/``fail``/``partial``/``review``/``move``): nothing more;
- the block raised: the job fails with that exception as its error (when the table allows), and
  the exception propagates;
- the block returned without an outcome: the job is handed back to the ready state without
  spending the attempt when the table has that edge; otherwise (TASK's ``in_progress``) it stays
  held until its lease expires and the reaper fails it (``lease_expired``), and a warning says so.

:class:`SyncHold` is the blocking twin (a heartbeat thread); it cannot cancel the block, so a lost
lease shows as ``held.lost`` and as :class:`rjobs.LeaseLost` from the next write.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from rjobs.errors import LeaseLost, RjobsError
from rjobs.models import Asset, Job, JobError, Progress

if TYPE_CHECKING:
    from rjobs.client.queue import Queue

__all__ = ["Hold"]

log = logging.getLogger("rjobs")
_UNSET: Any = object()


class _HoldBase:
    """What both twins share: the job, its token, the state machine's exits."""

    def __init__(
        self, job_id: str, state: str | None, lease: float, actor: str | None, heartbeat: float | None
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.lease = lease
        self.actor = actor
        self.interval = heartbeat if heartbeat is not None else lease / 3
        if not 0 < self.interval < lease:
            raise ValueError("heartbeat must be shorter than the lease")
        self.job: Job | None = None
        self.ended = False  # the block wrote the job's outcome (or moved it out of the lease)
        self.lost: str | None = None  # why the lease is gone, once it is

    @property
    def token(self) -> str:
        """The lease token (issued when the hold started)."""
        if self.job is None:
            raise RuntimeError("the hold has not started")
        return str(self.job.token)

    def _target(self, machine: Any) -> str:
        return self.state or machine.leased[0]

    def _check(self) -> None:
        if self.lost is not None:
            raise LeaseLost(f"job {self.job_id}: {self.lost}")

    def _beat_reply(self, reply: str) -> None:
        if self.ended:  # the block wrote the outcome: the lease ended with it
            return
        if reply == "cancel":
            self.lost = "the job was cancelled"
        elif reply != "ok":
            self.lost = "the lease was lost"


class Hold(_HoldBase):
    """An async hold on one job (see the module docstring). Made by :meth:`rjobs.Queue.hold`."""

    def __init__(
        self, queue: Queue, job_id: str, state: str | None, lease: float, actor: str | None, heartbeat: float | None
    ) -> None:
        super().__init__(job_id, state, lease, actor, heartbeat)
        self.queue = queue
        self._tg: Any = None
        self._scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> Hold:
        q = self.queue
        self.job = await q.transition(self.job_id, self._target(q.machine), actor=self.actor, lease=self.lease)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._heartbeat)
        self._scope = anyio.CancelScope()
        self._scope.__enter__()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert self._scope is not None and self._tg is not None
        swallowed = self._scope.__exit__(exc_type, exc, tb)
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await self._settle(None if swallowed else exc)
        if self.lost is not None and not self.ended and (swallowed or exc is None):
            raise LeaseLost(f"job {self.job_id}: {self.lost}")
        return bool(swallowed)

    async def _heartbeat(self) -> None:
        q = self.queue
        while True:
            await anyio.sleep(self.interval)
            try:
                call = q.scripts.heartbeat(
                    self.actor or q.plans.actor, int(self.lease * 1000), [(self.job_id, self.token)], False
                )
                replies = await q.runner.run(call)
            except (RjobsError, OSError, ConnectionError) as exc:
                log.warning("hold of job %s: heartbeat failed (%s)", self.job_id, exc)
                continue
            self._beat_reply(replies[0])
            if self.lost is not None:
                if self._scope is not None:
                    self._scope.cancel()
                return

    async def _settle(self, exc: BaseException | None) -> None:
        if self.ended or self.lost is not None:
            return
        q, m = self.queue, self.queue.machine
        status = (await q.get(self.job_id)).status
        try:
            if exc is not None and isinstance(exc, Exception) and m.allows(status, m.failure):
                await self.fail(exc)
            elif exc is None and m.allows(status, m.ready):
                await q.release(self.job_id, token=self.token, actor=self.actor)
            elif exc is None:
                log.warning(
                    "hold of job %s ended without an outcome and %r has no way back to %r: the job stays held "
                    "until its lease expires",
                    self.job_id,
                    status,
                    m.ready,
                )
        except LeaseLost:
            pass

    async def _write(self, coro: Any) -> Any:
        self._check()
        try:
            return await coro
        except LeaseLost as exc:
            self.lost = str(exc)
            raise

    async def complete(self, result: Any = _UNSET) -> Job:
        """End the job in the success state (``result`` left out: keep the stored one)."""
        job = await self._write(self.queue.complete(self.job_id, result, token=self.token, actor=self.actor))
        self.ended = True
        return job  # type: ignore[no-any-return]

    async def fail(self, error: str | BaseException | JobError | dict[str, Any]) -> Job:
        """End the job in the failure state with a structured error."""
        job = await self._write(self.queue.fail(self.job_id, error, token=self.token, actor=self.actor))
        self.ended = True
        return job  # type: ignore[no-any-return]

    async def partial(self, result: Any, error: str | BaseException | JobError | dict[str, Any]) -> Job:
        """End the job in the partial state."""
        job = await self._write(self.queue.partial(self.job_id, result, error, token=self.token, actor=self.actor))
        self.ended = True
        return job  # type: ignore[no-any-return]

    async def move(self, target: str, reason: str = "", **kwargs: Any) -> Job:
        """Move the job along the table with the token (out of the leased states ends the hold)."""
        job: Job = await self._write(
            self.queue.transition(self.job_id, target, token=self.token, actor=self.actor, reason=reason, **kwargs)
        )
        if job.status not in self.queue.machine.leased:
            self.ended = True
        return job

    async def review(self, note: str = "") -> Job:
        """Hand the job to the machine's review state."""
        review = self.queue.machine.review
        if review is None:
            raise RjobsError(f"machine {self.queue.machine.name!r} has no review state")
        return await self.move(review, note)

    async def progress(self, percent: float, step: str | None = None) -> Progress | None:
        """Record progress under the lease."""
        return await self._write(  # type: ignore[no-any-return]
            self.queue.progress(self.job_id, percent, step, token=self.token, actor=self.actor)
        )

    async def comment(self, text: str) -> None:
        """Add a comment to the job's history."""
        await self._write(self.queue.comment(self.job_id, text, token=self.token, actor=self.actor))

    async def add_asset(self, asset_type: str, url: str, **kwargs: Any) -> Asset:
        """Link an asset to the job under the lease."""
        return await self._write(  # type: ignore[no-any-return]
            self.queue.add_asset(self.job_id, asset_type, url, token=self.token, actor=self.actor, **kwargs)
        )
