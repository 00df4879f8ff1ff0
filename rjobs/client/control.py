"""A queue as a whole: :class:`QueueControl`, a base of :class:`rjobs.Queue` (counts and stats,
pause and resume, deleting jobs one, many or all at a time; what else reads or acts on a whole
queue or on many jobs joins it here).

This module is the async source of :mod:`rjobs.client.sync_control`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from rjobs.client.assignees import actors_plan, assign_plan, assigned_plan, name_actors_plan
from rjobs.client.limits import backoff_plan, clear_limit_plan, limit_name, limits_plan, set_limit_plan
from rjobs.client.operations import QueuePlans
from rjobs.client.pages import JobPage, page_plan
from rjobs.client.queries import paused_plan, stats_plan
from rjobs.client.removal import (
    bulk_delete_plan,
    bulk_retry_plan,
    delete_plan,
    drain_plan,
    filtered_list_plan,
    obliterate_plan,
)
from rjobs.models import Actor, Job, Who
from rjobs.store.transport import Plan

__all__ = ["QueueControl"]

T = TypeVar("T")


class QueueControl:
    """What reads or acts on a queue as a whole. A paused queue keeps taking jobs (enqueue, retry) and its
    running jobs go on and finish, but no worker claims a job until it is resumed; due delayed jobs
    still become ready meanwhile. Both are recorded with the actor and the time."""

    _plans: QueuePlans
    _declared: bool

    async def _drive(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    async def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    async def counts(self) -> dict[str, int]:
        """Jobs per state."""
        return await self._read(self._plans.counts())

    async def stats(self) -> dict[str, Any]:
        """Counts, live workers, the age of the oldest ready job, the ready jobs per job type
        (``lanes``), whether the queue is paused (``paused``), warnings, and the limits with their
        running counts (``limits``) and the ready jobs per group (``groups``)."""
        stats = await self._read(stats_plan(self._plans))
        stats.update(await self._read(limits_plan(self._plans.keys)))
        return stats

    async def set_limit(
        self,
        *,
        type: str | None = None,
        group: str | None = None,
        concurrency: int | None = None,
        rate: int | None = None,
        per: float | None = None,
    ) -> dict[str, Any] | None:
        """Limit a job type or a group (given at enqueue), in every worker process: at most
        ``concurrency`` of its jobs running, at most ``rate`` claims per ``per`` seconds. A job over
        a limit stays ready (no attempt spent) and starts when it may; other types and groups go on.
        Returns the previous limits of that name, or None."""
        return await self._drive(set_limit_plan(self._plans.scripts, limit_name(type, group), concurrency, rate, per))

    async def clear_limit(self, *, type: str | None = None, group: str | None = None) -> dict[str, Any] | None:
        """Remove the limits of a job type or a group; the previous ones, or None."""
        return await self._drive(clear_limit_plan(self._plans.scripts, limit_name(type, group)))

    async def backoff(self, seconds: float, *, type: str | None = None, group: str | None = None) -> int:
        """Claim no job of a limited type or group for ``seconds`` (a 429 from the service behind
        it); a longer back-off in place is kept. Returns its end (server epoch ms)."""
        return await self._drive(backoff_plan(self._plans.scripts, limit_name(type, group), seconds))

    async def limits(self) -> dict[str, Any]:
        """The limits by name (``t:<type>``, ``g:<group>``) with running counts and back-offs, and
        the ready jobs of the first groups of each type in turn order."""
        return await self._read(limits_plan(self._plans.keys))

    async def pause(self, reason: str = "", *, actor: Who | None = None) -> bool:
        """Stop every worker claiming from this queue (for a partitioned queue, see its own
        method); True when it was running, False when it already was paused (then the first
        pause's actor, time and reason stay)."""
        return await self._drive(self._plans.pause(True, reason, actor))

    async def resume(self, *, actor: Who | None = None) -> bool:
        """Let workers claim again, waking the idle ones at once; True when it was paused."""
        return await self._drive(self._plans.pause(False, "", actor))

    async def paused(self) -> dict[str, Any] | None:
        """Who paused the queue, when (server ms) and why: ``{"by", "t", "msg"}``; None when it runs."""
        return await self._read(paused_plan(self._plans.keys))

    # -- removal and many jobs at once (rjobs.client.removal) ---------------------------------------
    async def delete(
        self,
        job_id: str,
        *,
        force: bool = False,
        dependents: str = "refuse",
        user_id: str | None = None,
        actor: Who | None = None,
    ) -> int:
        """Delete a job with everything it owns (hash, history, assets, dedupe key, every index
        entry); returns how many jobs went (its deleted dependents included). A running job needs
        ``force=True`` (else JobRunning; its worker then finds the job gone: its heartbeat answers
        'lost' and its writes are refused); a job others wait for needs ``dependents`` = 'fail',
        'cancel' or 'delete' (else HasDependents); ``user_id`` enforces ownership (Unauthorized).
        A refused delete writes nothing."""
        return await self._drive(
            delete_plan(self._plans, job_id, user_id=user_id, force=force, dependents=dependents, actor=actor)
        )

    async def bulk_delete(
        self,
        job_ids: Sequence[str],
        *,
        force: bool = False,
        dependents: str = "refuse",
        user_id: str | None = None,
        actor: Who | None = None,
    ) -> dict[str, str]:
        """Delete many jobs as :meth:`delete` does; one outcome per distinct id: 'done',
        'not_found', 'unauthorized', 'running' or 'has_dependents' (that id: nothing written)."""
        return await self._drive(
            bulk_delete_plan(self._plans, job_ids, user_id=user_id, force=force, dependents=dependents, actor=actor)
        )

    async def bulk_retry(self, job_ids: Sequence[str], *, actor: Who | None = None) -> dict[str, str]:
        """Retry many failed or cancelled jobs; one outcome per distinct id: 'done' or the
        refusal's code ('not_found', 'invalid_transition', 'dependency', 'dedupe_conflict')."""
        return await self._drive(bulk_retry_plan(self._plans, job_ids, actor))

    async def select(
        self,
        state: str | None = None,
        *,
        type: str | None = None,
        error_code: str | None = None,
        user_id: str | None = None,
        limit: int = 50,
        assignee: Who | None = None,
    ) -> list[Job]:
        """Newest first, the jobs of ``state`` (and/or of ``user_id``) of job ``type`` whose error
        has code ``error_code`` (``Queue.list`` with filters): the index is read a page at a time,
        never SCANned (docs/design.md, "Removing jobs"). With ``assignee``: the jobs that actor
        holds now (:meth:`assign`), filtered the same way."""
        if assignee is None:
            return await self._read(filtered_list_plan(self._plans, state, user_id, limit, type, error_code))
        held = await self._read(assigned_plan(self._plans, assignee, limit))
        return [
            j
            for j in held
            if (state is None or j.status == state)
            and (type is None or j.type == type)
            and (user_id is None or j.user_id == user_id)
            and (error_code is None or (j.error is not None and j.error.code == error_code))
        ]

    async def page(
        self,
        state: str | None = None,
        *,
        type: str | None = None,
        user_id: str | None = None,
        error_code: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        oldest_first: bool = False,
    ) -> JobPage:
        """One page of the jobs of ``state`` (or of ``user_id``), newest first from ``cursor``, filtered
        by ``type`` and ``error_code`` (``oldest_first``: oldest first): a
        :class:`rjobs.client.pages.JobPage` whose ``next_cursor`` reads on. Each call reads a
        bounded number of index entries, however deep the cursor or rare the matches."""
        return await self._read(
            page_plan(
                self._plans,
                state,
                user_id=user_id,
                job_type=type,
                error_code=error_code,
                cursor=cursor,
                limit=limit,
                oldest_first=oldest_first,
            )
        )

    async def assign(self, job_id: str, assignee: Who, *, lease: float = 3600.0, by: Who | None = None) -> Job:
        """Lease a ready job to ``assignee`` (a person or an agent: text or :class:`rjobs.Actor`) for
        ``lease`` seconds, into the machine's first leased state (TASK: ``assigned``), without any
        worker: the assignee then starts it (``transition(id, "in_progress", token=job.token)``, or
        ``hold(id, state=..., actor=assignee)``) and finishes it with the token. ``by`` (who
        assigns) is recorded with it; named actors go to the directory (:meth:`actors`). Listed by
        ``list(assignee=...)`` while leased; an expired lease is reaped like a worker's."""
        return await self._drive(assign_plan(self._plans, job_id, assignee, lease, by))

    async def name_actors(self, *actors: Actor) -> int:
        """Keep the display names of structured actors (``Actor(type, id, name)``; an empty name
        forgets it); returns how many entries changed."""
        return await self._drive(name_actors_plan(self._plans, actors))

    async def actors(self) -> dict[str, Actor]:
        """The actor directory: ``type:id`` -> :class:`rjobs.Actor`, for showing who acted."""
        return await self._read(actors_plan(self._plans))

    async def drain(self, *, actor: Who | None = None) -> int:
        """Delete every job waiting to run (waiting, delayed, initial and ready states), a bounded
        batch per call; running and finished jobs stay. Returns how many went."""
        return await self._drive(drain_plan(self._plans, actor))

    async def obliterate(self, *, force: bool = False, actor: Who | None = None) -> int:
        """Delete the whole queue: every job with everything it owns, its indexes, stream,
        workers and machine (pausing it first). Refused with JobRunning while jobs are running,
        unless ``force``. Returns how many jobs went; using the queue again declares it anew."""
        removed = await self._drive(obliterate_plan(self._plans, force, actor))
        self._declared = False
        return removed
