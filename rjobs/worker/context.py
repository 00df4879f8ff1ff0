"""The context a job function receives: the job, its attempt and lease token, and fenced writes
(progress, assets, comments, review) that present the token, so a worker that lost the lease
cannot touch the job. A :class:`rjobs.LeaseLost` from any of them also cancels the function.

Async functions ``await ctx.progress(...)``; sync functions, which run in a worker thread, use the
``*_sync`` twins, which hop onto the event loop (``anyio.from_thread``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread

from rjobs.errors import LeaseLost, ValidationError
from rjobs.models import Asset, ClaimedJob, DependencyResults, Progress
from rjobs.store import codec
from rjobs.store.scripts import outcome_error
from rjobs.worker.hooks import WorkerState
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.leases import FINAL_WRITE_TIMEOUT

if TYPE_CHECKING:
    from rjobs.client.queue import Queue

__all__ = ["JobContext"]

T = TypeVar("T")
_log = logging.getLogger("rjobs.worker")
_job_log = logging.getLogger("rjobs.job")
_UNSET: Any = object()


class JobContext:
    """What a running job knows and may do. One per attempt; do not keep it after the function
    returns."""

    __slots__ = ("_held", "_log", "queue", "state", "worker_id")

    def __init__(self, held: Held, queue: Queue, worker_id: str, state: WorkerState | None = None) -> None:
        self._held = held
        self.queue = queue
        self.worker_id = worker_id
        #: The worker's shared namespace (what ``on_startup`` put there); the same object in every job.
        self.state = state if state is not None else WorkerState()
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``rjobs.job``) that adds ``job_id``, ``job_type``, ``queue`` and ``worker`` to
        every record (``rjobs worker --log-format json`` writes them as fields)."""
        if self._log is None:  # made on first use: most jobs never log
            job = self._held.job
            facts = {"job_id": job.id, "job_type": job.type, "queue": self.queue.name, "worker": self.worker_id}
            self._log = logging.LoggerAdapter(_job_log, facts)
        return self._log

    @property
    def job(self) -> ClaimedJob:
        """The job as claimed: id, type, params, attempt, max_attempts, token, user_id..."""
        return self._held.job

    @property
    def attempt(self) -> int:
        """This attempt's number, 1-based."""
        return self._held.job.attempt

    @property
    def token(self) -> str:
        """The fencing token of this attempt's lease."""
        return self._held.job.token

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, its lease lost, or the worker is shutting down. Async
        functions are cancelled at their next ``await``; sync ones should poll this."""
        return self._held.flag.is_set()

    @property
    def cancel_reason(self) -> str:
        """Why :attr:`cancelled` became true ('' while it is not)."""
        return self._held.reason

    async def _fenced(self, write: Callable[[], Awaitable[T]]) -> T:
        held = self._held
        if held.state is not HeldState.RUNNING:
            raise LeaseLost(f"job {held.job.id}: this attempt no longer holds the job ({held.state.value})")
        try:
            return await write()
        except LeaseLost as exc:
            if held.state is HeldState.RUNNING:
                _log.warning("job %s: lease lost (%s): stopping it", held.job.id, exc)
            held.stop(HeldState.LOST, f"the lease was lost ({exc})")
            raise

    async def progress(self, percent: float, step: str | None = None) -> Progress | None:
        """Record progress (0-100) and the current step; returns it with an ETA estimate."""
        return await self._fenced(
            lambda: self.queue.progress(self.job.id, percent, step, token=self.token, actor=self.worker_id)
        )

    async def comment(self, text: str) -> None:
        """Add a comment to the job's history."""
        await self._fenced(lambda: self.queue.comment(self.job.id, text, token=self.token, actor=self.worker_id))

    async def add_asset(
        self,
        asset_type: str,
        url: str,
        *,
        storage_path: str | None = None,
        file_size: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Asset:
        """Link an output (file, URL) to the job; it belongs to the job's owner."""
        return await self._fenced(
            lambda: self.queue.add_asset(
                self.job.id,
                asset_type,
                url,
                storage_path=storage_path,
                file_size=file_size,
                meta=meta,
                user_id=self.job.user_id,
                token=self.token,
                actor=self.worker_id,
            )
        )

    async def review(self, note: str = "", *, result: Any = _UNSET) -> None:
        """Send the job to the machine's review state now (with ``result`` when given). The job
        is then no longer this worker's: the function should return (its value is ignored) and
        further writes raise LeaseLost."""
        machine = self.queue.machine
        at = machine.leased[-1]
        if machine.review is None or not machine.allows(at, machine.review):
            raise ValidationError(f"machine {machine.name!r} has no review state reachable from {at!r}")
        encoded = b"" if result is _UNSET else codec.encode_json(result, limit=self.queue.config.max_payload)

        async def write() -> None:
            # Shielded: once sent, the move must be known, or the worker would finish the job twice.
            with anyio.CancelScope(shield=True), anyio.fail_after(FINAL_WRITE_TIMEOUT):
                outcome = await self.queue.backend.review(self.worker_id, self.job.id, self.token, encoded, note[:1000])
            err = outcome_error(outcome)
            if err is not None:
                raise err

        await self._fenced(write)
        self._held.stop(HeldState.RELEASED, "moved to review")

    async def dependency_results(self) -> DependencyResults:
        """What this job's dependencies returned: ``{dependency id: result}`` for those that
        succeeded (all of them, when the job was released by its dependencies), with ``missing``
        (ids purged by retention meanwhile: reported, not an error) and ``unfinished``. Read with
        the job's owner (a dependency of another user raises Unauthorized); a read: no token."""
        return await self.queue.dependency_results(self.job.id, self.job.user_id)

    # -- for sync functions, which run in a worker thread ------------------------------------------
    def progress_sync(self, percent: float, step: str | None = None) -> Progress | None:
        """:meth:`progress` from a sync job function."""
        return anyio.from_thread.run(self.progress, percent, step)

    def comment_sync(self, text: str) -> None:
        """:meth:`comment` from a sync job function."""
        anyio.from_thread.run(self.comment, text)

    def add_asset_sync(self, asset_type: str, url: str, **kwargs: Any) -> Asset:
        """:meth:`add_asset` from a sync job function (same keyword arguments)."""

        async def call() -> Asset:
            return await self.add_asset(asset_type, url, **kwargs)

        return anyio.from_thread.run(call)

    def dependency_results_sync(self) -> DependencyResults:
        """:meth:`dependency_results` from a sync job function."""
        return anyio.from_thread.run(self.dependency_results)

    def review_sync(self, note: str = "", **kwargs: Any) -> None:
        """:meth:`review` from a sync job function."""

        async def call() -> None:
            await self.review(note, **kwargs)

        anyio.from_thread.run(call)
