"""The blocking twin of rjobs.client.hold."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from rjobs.errors import LeaseLost, RjobsError
from rjobs.models import Asset, Job, JobError, Progress

if TYPE_CHECKING:
    from rjobs.client.sync_queue import SyncQueue


from rjobs.client.hold import _UNSET, _HoldBase

__all__ = ["SyncHold"]

log = logging.getLogger("rjobs")


class SyncHold(_HoldBase):
    """The blocking twin of :class:`Hold`, with a heartbeat thread. Made by :meth:`rjobs.SyncQueue.hold`."""

    def __init__(
        self, queue: SyncQueue, job_id: str, state: str | None, lease: float, actor: str | None, heartbeat: float | None
    ) -> None:
        super().__init__(job_id, state, lease, actor, heartbeat)
        self.queue = queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SyncHold:
        q = self.queue
        self.job = q.transition(self.job_id, self._target(q.machine), actor=self.actor, lease=self.lease)
        self._thread = threading.Thread(target=self._heartbeat, name=f"rjobs hold {self.job_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._settle(exc)

    def _heartbeat(self) -> None:
        q = self.queue
        while not self._stop.wait(self.interval):
            try:
                call = q.scripts.heartbeat(
                    self.actor or q.plans.actor, int(self.lease * 1000), [(self.job_id, self.token)], False
                )
                replies = q.runner.run(call)
            except (RjobsError, OSError, ConnectionError) as exc:
                log.warning("hold of job %s: heartbeat failed (%s)", self.job_id, exc)
                continue
            self._beat_reply(replies[0])
            if self.lost is not None:
                return

    def _settle(self, exc: BaseException | None) -> None:
        if self.ended or self.lost is not None:
            return
        q, m = self.queue, self.queue.machine
        status = q.get(self.job_id).status
        try:
            if exc is not None and isinstance(exc, Exception) and m.allows(status, m.failure):
                self.fail(exc)
            elif exc is None and m.allows(status, m.ready):
                q.release(self.job_id, token=self.token, actor=self.actor)
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

    def _write(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        self._check()
        try:
            return call(*args, token=self.token, actor=self.actor, **kwargs)
        except LeaseLost as exc:
            self.lost = str(exc)
            raise

    def complete(self, result: Any = _UNSET) -> Job:
        """End the job in the success state (``result`` left out: keep the stored one)."""
        job: Job = self._write(self.queue.complete, self.job_id, result)
        self.ended = True
        return job

    def fail(self, error: str | BaseException | JobError | dict[str, Any]) -> Job:
        """End the job in the failure state with a structured error."""
        job: Job = self._write(self.queue.fail, self.job_id, error)
        self.ended = True
        return job

    def partial(self, result: Any, error: str | BaseException | JobError | dict[str, Any]) -> Job:
        """End the job in the partial state."""
        job: Job = self._write(self.queue.partial, self.job_id, result, error)
        self.ended = True
        return job

    def move(self, target: str, reason: str = "", **kwargs: Any) -> Job:
        """Move the job along the table with the token (out of the leased states ends the hold)."""
        job: Job = self._write(self.queue.transition, self.job_id, target, reason=reason, **kwargs)
        if job.status not in self.queue.machine.leased:
            self.ended = True
        return job

    def review(self, note: str = "") -> Job:
        """Hand the job to the machine's review state."""
        review = self.queue.machine.review
        if review is None:
            raise RjobsError(f"machine {self.queue.machine.name!r} has no review state")
        return self.move(review, note)

    def progress(self, percent: float, step: str | None = None) -> Progress | None:
        """Record progress under the lease."""
        return self._write(self.queue.progress, self.job_id, percent, step)  # type: ignore[no-any-return]

    def comment(self, text: str) -> None:
        """Add a comment to the job's history."""
        self._write(self.queue.comment, self.job_id, text)

    def add_asset(self, asset_type: str, url: str, **kwargs: Any) -> Asset:
        """Link an asset to the job under the lease."""
        return self._write(self.queue.add_asset, self.job_id, asset_type, url, **kwargs)  # type: ignore[no-any-return]
