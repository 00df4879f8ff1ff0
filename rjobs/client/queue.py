"""The async client: :class:`Queue`. Every method drives a plan of rjobs.client.operations (the
single definition of the client's semantics) over the queue's runner.

This module is the async source of :mod:`rjobs.client.sync_queue`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aredis

from rjobs.client.arguments import UNSET, job_request
from rjobs.client.control import QueueControl
from rjobs.client.counters import QueueCounters
from rjobs.client.hold import Hold
from rjobs.client.operations import QueuePlans
from rjobs.client.results import JobResults
from rjobs.client.scheduling import QueueSchedules
from rjobs.client.waits import Waits
from rjobs.config import QueueConfig, default_actor
from rjobs.errors import OutOfMemory, ReadOnly
from rjobs.machines import JOB
from rjobs.models import Asset, EnqueueOutcome, Event, Job, JobError, JobOutcome, JobRequest, Progress, Who
from rjobs.statemachine import StateMachine
from rjobs.store.backend import Backend
from rjobs.store.clients import async_client, close_async, is_cluster, resolve_url
from rjobs.store.cluster import runner_for
from rjobs.store.transport import Plan, drive_async

__all__ = ["Queue"]

T = TypeVar("T")


class Queue(QueueControl, JobResults, QueueSchedules, QueueCounters):
    """An async handle on one queue: enqueue, inspect and move jobs, pause and resume the queue.

    The server: ``client`` when given (a shared redis.asyncio client), else ``url``, else the
    ``REDIS_URL`` environment variable, else ``redis://localhost:6379/0``; ``url`` may be a
    Sentinel URL (:mod:`rjobs.store.clients`). ``machine`` is declared in Redis on first use; a
    different machine already stored for the queue raises :class:`rjobs.MachineConflict`.

    Attributes: ``name``, ``machine``, ``config``, ``actor`` (recorded when a call names none),
    ``client`` and ``backend`` (what a worker drives jobs with, :class:`rjobs.store.backend.Backend`)."""

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        machine: StateMachine = JOB,
        config: QueueConfig | None = None,
        client: aredis.Redis | None = None,
        actor: Who | None = None,
    ) -> None:
        self._plans = QueuePlans(name, machine, config or QueueConfig(), actor or default_actor())
        self._explicit_config = config is not None  # only an explicit config overwrites stored options
        self.name = name
        self.machine = machine
        self.actor: str = self._plans.actor
        self._own_client = client is None
        self.client: aredis.Redis = client if client is not None else async_client(resolve_url(url))
        self._plans.scripts.cluster = is_cluster(self.client)
        self._runner = runner_for(self.client, self._plans.keys.machine)
        self.backend = Backend(name, machine, self._plans.scripts, self._runner)
        self._waits = Waits(self._runner, self._plans)
        self._declared = False

    @property
    def config(self) -> QueueConfig:
        """The queue's options: the ones given, or once declared without a config, those stored."""
        return self._plans.config

    async def _drive(self, plan: Plan[T]) -> T:
        if not self._declared:
            await self.declare()
        return await drive_async(self._runner, plan)

    async def _read(self, plan: Plan[T]) -> T:
        # A server that refuses writes (OOM, a replica) still answers reads: declare with the next write.
        if not self._declared:
            with contextlib.suppress(OutOfMemory, ReadOnly):
                await self.declare()
        return await drive_async(self._runner, plan)

    async def declare(self) -> str:
        """Store the machine in Redis (or check it matches): 'created', 'same' or 'updated' (options)."""
        result = await drive_async(self._runner, self._plans.declare(self._explicit_config))
        self._declared = True
        return result

    async def close(self) -> None:
        """Stop the wait reader (pending waits fail), close the connections (the client if made here)."""
        await self._waits.aclose()
        self._runner.close()
        if self._own_client:
            await close_async(self.client)

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue(
        self,
        type: str,
        params: Any = None,
        *,
        priority: str | int = "normal",
        user_id: str | None = None,
        delay: float | dt.timedelta | None = None,
        run_at: float | dt.datetime | None = None,
        dedupe_key: str | None = None,
        dedupe: str = "keep",
        cancel_running: bool = False,
        max_attempts: int = 3,
        depends_on: Sequence[str] = (),
        on_dependency_failure: str = "fail",
        job_id: str | None = None,
        hold: bool = False,
        group: str | None = None,
        actor: Who | None = None,
    ) -> EnqueueOutcome:
        """Create a job. ``delay`` (seconds) or ``run_at`` (aware datetime / epoch seconds) put it in
        the delayed state; ``depends_on`` in the waiting state; ``hold`` in the initial state.
        ``dedupe_key`` with ``dedupe='keep'`` returns the live job holding the key, ``'replace'``
        cancels it (a running one too with ``cancel_running``) and invalidates its cached result;
        ``'reuse'`` answers with the key's fresh cached result (``cached_result``), else keeps.
        ``group``: the job's concurrency and rate-limit key (:meth:`set_limit`; claims are fair across groups)."""
        req = job_request(
            type,
            params,
            priority,
            user_id,
            delay,
            run_at,
            dedupe_key,
            dedupe,
            cancel_running,
            max_attempts,
            depends_on,
            on_dependency_failure,
            job_id,
            hold,
            group,
        )
        return await self._drive(self._plans.enqueue(req, actor))

    async def enqueue_many(self, requests: Iterable[JobRequest], *, actor: Who | None = None) -> list[EnqueueOutcome]:
        """Create many jobs in one round trip (atomic per chunk of 500)."""
        return await self._drive(self._plans.enqueue_many(requests, actor))

    async def get(self, job_id: str, user_id: str | None = None) -> Job:
        """The job; ``user_id`` enforces ownership (Unauthorized for another user's job)."""
        return await self._read(self._plans.get(job_id, user_id))

    async def events(self, job_id: str, after: str = "-", count: int | None = None) -> list[Event]:
        """The job's history, oldest first."""
        return await self._read(self._plans.events(job_id, after, count))

    async def queue_events(self, after: str = "-", count: int = 100, block_ms: int | None = None) -> list[Event]:
        """Events of the whole queue after stream id ``after`` ('$' = only new ones, with ``block_ms``)."""
        return await self._read(self._plans.queue_events(after, count, block_ms))

    async def wait(self, job_id: str, timeout: float | None = None) -> JobOutcome:
        """Wait until the job is final; WaitTimeout after ``timeout`` s. No polling: waits read the
        queue stream (see :mod:`rjobs.client.waits` for how they share their connection)."""
        if not self._declared:
            with contextlib.suppress(OutOfMemory, ReadOnly):  # a read: see _read
                await self.declare()
        return await self._waits.wait(job_id, timeout)

    async def assets(self, job_id: str, user_id: str | None = None) -> list[Asset]:
        """Assets of the job, with the ownership check."""
        return await self._read(self._plans.assets(job_id, user_id))

    async def cached_result(self, dedupe_key: str) -> Any:
        """The cached result of the dedupe key's last successful job, or None."""
        return await self._read(self._plans.cached_result(dedupe_key))

    async def dedupe_holder(self, dedupe_key: str) -> str | None:
        """Id of the job currently holding ``dedupe_key``, or None."""
        return await self._read(self._plans.dedupe_holder(dedupe_key))

    async def transition(
        self,
        job_id: str,
        target: str,
        *,
        actor: Who | None = None,
        reason: str = "",
        run_at: float | dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        token: str | None = None,
        lease: float | None = None,
        operator: bool = False,
    ) -> Job:
        """Move a job along the queue's table; InvalidTransition(current, target) otherwise.

        A leased job (a worker's, or a manual holder's) moves only with its lease ``token``, or with
        ``operator=True`` (recorded in its history). A move into a leased state from outside takes a
        lease of ``lease`` seconds (default 300) and a new token (``Job.token``): keep it alive with
        :meth:`hold`, or the reaper treats the job as abandoned when it expires. A move to the
        delayed state needs ``run_at`` or ``delay`` (seconds from the server's clock)."""
        return await self._drive(
            self._plans.transition(
                job_id,
                target,
                actor=actor,
                reason=reason,
                run_at=run_at,
                delay=delay,
                token=token,
                lease=lease,
                operator=operator,
            )
        )

    async def complete(
        self,
        job_id: str,
        result: Any = UNSET,
        *,
        token: str | None = None,
        actor: Who | None = None,
        operator: bool = False,
    ) -> Job:
        """Move to the success state with ``result`` (left out: keep the stored one, e.g. the draft
        of a job approved from review). A leased job needs its ``token`` or ``operator=True``."""
        return await self._drive(
            self._plans.finish_as("success", job_id, result=result, token=token, actor=actor, operator=operator)
        )

    async def fail(
        self,
        job_id: str,
        error: str | BaseException | JobError | dict[str, Any],
        *,
        token: str | None = None,
        actor: Who | None = None,
        operator: bool = False,
    ) -> Job:
        """Move to the failure state with a structured error (a leased job: ``token`` or ``operator``)."""
        return await self._drive(
            self._plans.finish_as("failure", job_id, error=error, token=token, actor=actor, operator=operator)
        )

    async def partial(
        self,
        job_id: str,
        result: Any,
        error: str | BaseException | JobError | dict[str, Any],
        *,
        token: str | None = None,
        actor: Who | None = None,
        operator: bool = False,
    ) -> Job:
        """Move to the partial state with what was done and what went wrong (a leased job:
        ``token`` or ``operator``)."""
        return await self._drive(
            self._plans.finish_as(
                "partial", job_id, result=result, error=error, token=token, actor=actor, operator=operator
            )
        )

    async def cancel(self, job_id: str, reason: str = "", *, actor: Who | None = None) -> Job:
        """Cancel a job; a running one is told through its worker's next heartbeat. Cancelling is an
        operator's act: on a leased job it needs no token and is recorded as such."""
        err = JobError(code="cancelled", message=reason or "cancelled")
        return await self._drive(
            self._plans.finish_as("cancelled", job_id, error=err, actor=actor, reason=reason, operator=True)
        )

    async def bulk_cancel(
        self, job_ids: Sequence[str], reason: str = "", *, actor: Who | None = None
    ) -> dict[str, str]:
        """Cancel many jobs (running ones too, as an operator); one outcome per distinct id:
        'done', 'not_found' or 'invalid_transition' (see :data:`rjobs.client.operations.BULK_OUTCOMES`)."""
        err = JobError(code="cancelled", message=reason or "cancelled")
        target = self.machine.cancelled
        return await self._drive(
            self._plans.bulk_move(job_ids, target, actor=actor, error=err, reason=reason, operator=True)
        )

    async def bulk_transition(
        self,
        job_ids: Sequence[str],
        target: str,
        *,
        actor: Who | None = None,
        reason: str = "",
        run_at: float | dt.datetime | None = None,
        delay: float | dt.timedelta | None = None,
        operator: bool = False,
    ) -> dict[str, str]:
        """Move many jobs to ``target``; one outcome per distinct id: 'done', 'not_found',
        'invalid_transition', 'lease_required', 'lease_lost' or 'invalid' (see
        :data:`rjobs.client.operations.BULK_OUTCOMES`). ``run_at``/``delay`` for the delayed state."""
        return await self._drive(
            self._plans.bulk_move(
                job_ids, target, actor=actor, reason=reason, run_at=run_at, delay=delay, operator=operator
            )
        )

    async def release(self, job_id: str, *, token: str, actor: Who | None = None, reason: str = "") -> Job:
        """Hand a job held under ``token`` back to the ready state without spending its attempt."""
        return await self._drive(self._plans.release(job_id, token=token, actor=actor, reason=reason))

    async def retry(self, job_id: str, params: Any = UNSET, *, actor: Who | None = None) -> Job:
        """Send a failed or cancelled job back to the ready state (same id, retry_count + 1)."""
        return await self._drive(self._plans.retry(job_id, params, actor))

    async def progress(
        self,
        job_id: str,
        percent: float,
        step: str | None = None,
        *,
        token: str | None = None,
        actor: Who | None = None,
        operator: bool = False,
    ) -> Progress | None:
        """Record progress of a job in a leased state (its ``token``, or ``operator=True``);
        ignored with a warning when the job is no longer leased."""
        return await self._drive(
            self._plans.progress(job_id, percent, step, token=token, actor=actor, operator=operator)
        )

    async def comment(self, job_id: str, text: str, *, actor: Who | None = None, token: str | None = None) -> None:
        """Add a comment to the job's history."""
        await self._drive(self._plans.comment(job_id, text, actor=actor, token=token))

    async def add_asset(
        self,
        job_id: str,
        asset_type: str,
        url: str,
        *,
        storage_path: str | None = None,
        file_size: int | None = None,
        meta: dict[str, Any] | None = None,
        user_id: str | None = None,
        token: str | None = None,
        actor: Who | None = None,
        operator: bool = False,
    ) -> Asset:
        """Link an asset to the job: by its lease holder (``token``), its owner (``user_id``) or an
        operator (``operator=True``, recorded)."""
        return await self._drive(
            self._plans.add_asset(
                job_id,
                asset_type,
                url,
                storage_path=storage_path,
                file_size=file_size,
                meta=meta,
                user_id=user_id,
                token=token,
                actor=actor,
                operator=operator,
            )
        )

    def hold(
        self,
        job_id: str,
        *,
        state: str | None = None,
        lease: float = 300.0,
        actor: Who | None = None,
        heartbeat: float | None = None,
    ) -> Hold:
        """Hold a job by hand: ``async with q.hold(job_id, lease=600) as held:`` moves it into its first
        leased state (or ``state``) under a new token, renews the lease every ``heartbeat`` seconds
        (default ``lease / 3``) and ends it with fenced writes (``held.complete(...)``...); the rest
        (a block that raises, ends without an outcome, or loses the lease) in :mod:`rjobs.client.hold`."""
        return Hold(self, job_id, state, lease, actor, heartbeat)

    async def set_priority(self, job_id: str, priority: str | int, *, actor: Who | None = None) -> int:
        """Change a not-yet-running job's priority atomically; returns the previous one."""
        return await self._drive(self._plans.set_priority(job_id, priority, actor))

    async def invalidate(self, dedupe_key: str) -> bool:
        """Drop the dedupe key's cached result; True when there was one."""
        return await self._drive(self._plans.invalidate(dedupe_key))

    async def list(
        self, state: str | None = None, user_id: str | None = None, limit: int = 50, *, type: str | None = None,
        error_code: str | None = None, assignee: Who | None = None,
    ) -> list[Job]:  # fmt: skip
        """Newest first, by state, owner or ``assignee``; ``type`` and ``error_code`` filter them (:meth:`select`)."""
        return await self.select(
            state, type=type, error_code=error_code, user_id=user_id, limit=limit, assignee=assignee
        )
