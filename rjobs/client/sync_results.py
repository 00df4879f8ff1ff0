# Generated from rjobs/client/results.py by scripts/unasync.py: edit the source, then run the script.
"""What jobs return to each other: :class:`SyncJobResults`, a base of :class:`rjobs.SyncQueue` (the
results of a job's dependencies; what else reads results between jobs joins it here).

This module is the blocking twin of :mod:`rjobs.client.results`, generated from it by
``scripts/unasync.py``: edit that file, then run the script.
"""

from __future__ import annotations

from typing import TypeVar

from rjobs.client import fanin
from rjobs.client.operations import QueuePlans
from rjobs.models import DependencyResults
from rjobs.store.sync_transport import Plan

__all__ = ["SyncJobResults"]

T = TypeVar("T")


class SyncJobResults:
    """Reads of results between jobs: a dependent (fan-in) job reads what its dependencies
    returned."""

    _plans: QueuePlans

    def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    def dependency_results(self, job_id: str, user_id: str | None = None) -> DependencyResults:
        """What the job's dependencies returned: ``{dependency id: result}`` for those that
        succeeded, with ``missing`` (ids purged by retention: reported, not an error) and
        ``unfinished`` (id -> status of the others). ``user_id`` enforces ownership (Unauthorized
        for another user's job or dependency; an ownerless dependency is shared). Two reads: the
        job's ``depends_on``, then every dependency in one pipelined round trip."""
        return self._read(fanin.dependency_results(self._plans, job_id, user_id))

    def dependents(self, job_id: str, limit: int = 200) -> list[str]:
        """The ids of the jobs waiting on (or that waited on) ``job_id``: those that listed it in
        ``depends_on`` while it was stored, sorted, at most ``limit`` (1-10000)."""
        return self._read(fanin.dependents_plan(self._plans, job_id, limit))
