"""The benchmarks run against snapshots of rjobs from before and after a change (A/B): these
helpers reach the same internals under either layout."""

from __future__ import annotations

import types
from typing import Any


def backend(q: Any) -> Any:
    """The queue's backend (``run``, ``run_many``, ``command``, ``scripts``, ``keys``); for a snapshot
    from before the redesign, a stand-in with the same attributes."""
    if hasattr(q, "backend"):
        return q.backend
    runner = q.runner
    return types.SimpleNamespace(
        run=runner.run, run_many=runner.run_many, command=runner.command, scripts=q.scripts, keys=q.keys
    )


def plans(q: Any) -> Any:
    """The queue's plans (the sans-IO operations), under either layout."""
    return getattr(q, "_plans", None) or q.plans
