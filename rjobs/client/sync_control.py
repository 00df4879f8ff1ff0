# Generated from rjobs/client/control.py by scripts/unasync.py: edit the source, then run the script.
"""A queue as a whole: :class:`SyncQueueControl`, a base of :class:`rjobs.SyncQueue` (counts and stats,
pause and resume; what else reads or acts on a whole queue joins it here).

This module is the blocking twin of :mod:`rjobs.client.control`, generated from it by
``scripts/unasync.py``: edit that file, then run the script.
"""

from __future__ import annotations

from typing import Any, TypeVar

from rjobs.client.limits import backoff_plan, clear_limit_plan, limit_name, limits_plan, set_limit_plan
from rjobs.client.operations import QueuePlans
from rjobs.client.queries import paused_plan, stats_plan
from rjobs.store.sync_transport import Plan

__all__ = ["SyncQueueControl"]

T = TypeVar("T")


class SyncQueueControl:
    """What reads or acts on a queue as a whole. A paused queue keeps taking jobs (enqueue, retry) and its
    running jobs go on and finish, but no worker claims a job until it is resumed; due delayed jobs
    still become ready meanwhile. Both are recorded with the actor and the time."""

    _plans: QueuePlans

    def _drive(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    def _read(self, plan: Plan[T]) -> T:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        return self._read(self._plans.counts())

    def stats(self) -> dict[str, Any]:
        """Counts, live workers, the age of the oldest ready job, the ready jobs per job type
        (``lanes``), whether the queue is paused (``paused``), warnings, and the limits with their
        running counts (``limits``) and the ready jobs per group (``groups``)."""
        stats = self._read(stats_plan(self._plans))
        stats.update(self._read(limits_plan(self._plans.keys)))
        return stats

    def set_limit(
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
        return self._drive(set_limit_plan(self._plans.scripts, limit_name(type, group), concurrency, rate, per))

    def clear_limit(self, *, type: str | None = None, group: str | None = None) -> dict[str, Any] | None:
        """Remove the limits of a job type or a group; the previous ones, or None."""
        return self._drive(clear_limit_plan(self._plans.scripts, limit_name(type, group)))

    def backoff(self, seconds: float, *, type: str | None = None, group: str | None = None) -> int:
        """Claim no job of a limited type or group for ``seconds`` (a 429 from the service behind
        it); a longer back-off in place is kept. Returns its end (server epoch ms)."""
        return self._drive(backoff_plan(self._plans.scripts, limit_name(type, group), seconds))

    def limits(self) -> dict[str, Any]:
        """The limits by name (``t:<type>``, ``g:<group>``) with running counts and back-offs, and
        the ready jobs of the first groups of each type in turn order."""
        return self._read(limits_plan(self._plans.keys))

    def pause(self, reason: str = "", *, actor: str | None = None) -> bool:
        """Stop every worker claiming from this queue (for a partitioned queue, see its own
        method); True when it was running, False when it already was paused (then the first
        pause's actor, time and reason stay)."""
        return self._drive(self._plans.pause(True, reason, actor))

    def resume(self, *, actor: str | None = None) -> bool:
        """Let workers claim again, waking the idle ones at once; True when it was paused."""
        return self._drive(self._plans.pause(False, "", actor))

    def paused(self) -> dict[str, Any] | None:
        """Who paused the queue, when (server ms) and why: ``{"by", "t", "msg"}``; None when it runs."""
        return self._read(paused_plan(self._plans.keys))
