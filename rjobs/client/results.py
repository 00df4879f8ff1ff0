"""What jobs return to each other: :class:`JobResults`, a base of :class:`rjobs.Queue` (the
results of a job's dependencies; what else reads results between jobs joins it here).

This module is the async source of :mod:`rjobs.client.sync_results`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

from typing import TypeVar

from rjobs.client import fanin
from rjobs.client.operations import QueuePlans
from rjobs.models import DependencyResults
from rjobs.store.transport import Plan

__all__ = ["JobResults"]

T = TypeVar("T")


class JobResults:
    """Reads of results between jobs: a dependent (fan-in) job reads what its dependencies
    returned."""

    _plans: QueuePlans

    async def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    async def dependency_results(self, job_id: str, user_id: str | None = None) -> DependencyResults:
        """What the job's dependencies returned: ``{dependency id: result}`` for those that
        succeeded, with ``missing`` (ids purged by retention: reported, not an error) and
        ``unfinished`` (id -> status of the others). ``user_id`` enforces ownership (Unauthorized
        for another user's job or dependency; an ownerless dependency is shared). Two reads: the
        job's ``depends_on``, then every dependency in one pipelined round trip."""
        return await self._read(fanin.dependency_results(self._plans, job_id, user_id))

    async def dependents(self, job_id: str, limit: int = 200) -> list[str]:
        """The ids of the jobs waiting on (or that waited on) ``job_id``: those that listed it in
        ``depends_on`` while it was stored, sorted, at most ``limit`` (1-10000)."""
        return await self._read(fanin.dependents_plan(self._plans, job_id, limit))
