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

:class:`rjobs.client.sync_hold.SyncHold` renews from a thread and cannot cancel a blocking block,
so there a lost lease shows as ``held.lost``, as :class:`rjobs.LeaseLost` from the next write and
from the ``with`` when the block ends.

This module is the async source of :mod:`rjobs.client.sync_hold`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rjobs.client.arguments import UNSET
from rjobs.client.renewal import Renewal
from rjobs.errors import LeaseLost, RjobsError
from rjobs.models import Asset, Job, JobError, Progress, Who

if TYPE_CHECKING:
    from rjobs.client.queue import Queue

__all__ = ["Hold"]

log = logging.getLogger("rjobs")


class Hold:
    """An async hold on one job (see the module docstring). Made by :meth:`rjobs.Queue.hold`."""

    def __init__(
        self, queue: Queue, job_id: str, state: str | None, lease: float, actor: Who | None, heartbeat: float | None
    ) -> None:
        self.queue = queue
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
        self._renewal = Renewal(self.interval)

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

    async def __aenter__(self) -> Hold:
        q = self.queue
        self.job = await q.transition(self.job_id, self._target(q.machine), actor=self.actor, lease=self.lease)
        await self._renewal.start(self._beat)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        swallowed = await self._renewal.stop(exc_type, exc, tb)
        with self._renewal.final():
            await self._settle(None if swallowed else exc)
        if self.lost is not None and not self.ended and (swallowed or exc is None):
            raise LeaseLost(f"job {self.job_id}: {self.lost}")
        return swallowed

    async def _beat(self) -> bool:
        """Renew the lease once; False once it is gone (lost, or the job was cancelled)."""
        q = self.queue
        try:
            replies = await q.backend.heartbeat(
                str(self.actor or q.actor), int(self.lease * 1000), [(self.job_id, self.token)], register=False
            )
        except (RjobsError, OSError, ConnectionError) as exc:
            log.warning("hold of job %s: heartbeat failed (%s)", self.job_id, exc)
            return True
        reply = replies[0]
        if self.ended:  # the block wrote the outcome: the lease ended with it
            return True
        if reply == "cancel":
            self.lost = "the job was cancelled"
        elif reply != "ok":
            self.lost = "the lease was lost"
        return self.lost is None

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

    async def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._check()
        try:
            return await call(self.job_id, *args, token=self.token, actor=self.actor, **kwargs)
        except LeaseLost as exc:
            self.lost = str(exc)
            raise

    async def complete(self, result: Any = UNSET) -> Job:
        """End the job in the success state (``result`` left out: keep the stored one)."""
        job: Job = await self._write(self.queue.complete, result)
        self.ended = True
        return job

    async def fail(self, error: str | BaseException | JobError | dict[str, Any]) -> Job:
        """End the job in the failure state with a structured error."""
        job: Job = await self._write(self.queue.fail, error)
        self.ended = True
        return job

    async def partial(self, result: Any, error: str | BaseException | JobError | dict[str, Any]) -> Job:
        """End the job in the partial state."""
        job: Job = await self._write(self.queue.partial, result, error)
        self.ended = True
        return job

    async def move(self, target: str, reason: str = "", **kwargs: Any) -> Job:
        """Move the job along the table with the token (out of the leased states ends the hold)."""
        job: Job = await self._write(self.queue.transition, target, reason=reason, **kwargs)
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
        progress: Progress | None = await self._write(self.queue.progress, percent, step)
        return progress

    async def comment(self, text: str) -> None:
        """Add a comment to the job's history."""
        await self._write(self.queue.comment, text)

    async def add_asset(self, asset_type: str, url: str, **kwargs: Any) -> Asset:
        """Link an asset to the job under the lease."""
        asset: Asset = await self._write(self.queue.add_asset, asset_type, url, **kwargs)
        return asset
