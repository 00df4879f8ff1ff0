# Generated from rjobs/client/scheduling.py by scripts/unasync.py: edit the source, then run the script.
"""Schedules of periodic jobs on a queue: :class:`SyncQueueSchedules`, a base of :class:`rjobs.SyncQueue`
(store, remove and list schedules, and the round of ticks a worker runs; docs/schedules.md).

This module is the blocking twin of :mod:`rjobs.client.scheduling`, generated from it by
``scripts/unasync.py``: edit that file, then run the script.
"""

from __future__ import annotations

from typing import TypeVar

from rjobs.client.arguments import actor_text
from rjobs.client.operations import QueuePlans
from rjobs.client.schedules import Cron, Schedule, TickResult, list_plan, remove_plan, set_plan, tick_plan
from rjobs.models import Who
from rjobs.store.sync_transport import Plan

__all__ = ["SyncQueueSchedules"]

T = TypeVar("T")


class SyncQueueSchedules:
    """A queue's schedules of periodic jobs: each is stored in Redis by name, and every worker
    serving the queue enqueues its ticks, each exactly once (decided in Redis with its clock)."""

    _plans: QueuePlans

    def _drive(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    def set_schedule(self, spec: Cron, *, actor: Who | None = None) -> str:
        """Store ``spec`` under its name: 'created', 'updated' (a changed definition: its next tick
        is computed again, its last run kept) or 'same' (nothing changes)."""
        if not isinstance(spec, Cron):
            raise TypeError("set_schedule takes a rjobs.Cron")
        outcome, _ = self._drive(
            set_plan(self._plans.scripts, self._plans.actor if actor is None else actor_text(actor), spec)
        )
        return outcome

    def remove_schedule(self, name: str) -> bool:
        """Remove the schedule ``name`` (its jobs stay); True when it existed."""
        return self._drive(remove_plan(self._plans.scripts, name))

    def schedules(self) -> list[Schedule]:
        """Every schedule of the queue, by name, with its next tick and last run."""
        found, _ = self._read(list_plan(self._plans.scripts))
        return found

    def cron_tick(self, *, actor: Who | None = None) -> TickResult:
        """Enqueue the job of every due tick that no one enqueued yet (what a worker does about once
        a second; safe from any number of processes at once)."""
        return self._drive(tick_plan(self._plans.scripts, self._plans.actor if actor is None else actor_text(actor)))
