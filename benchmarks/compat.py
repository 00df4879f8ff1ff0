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


def claim(q: Any, worker: str, n: int, lease_ms: int, types: list[str]) -> Any:
    """The worker's claim call: with the job types it runs where the snapshot routes by type
    (lanes; as most of a worker's claims, not listing them as served: it does every few seconds),
    else the snapshot's claim of any ready job."""
    import inspect

    scripts = backend(q).scripts
    if "types" in inspect.signature(scripts.claim).parameters:
        return scripts.claim(worker, n, lease_ms, types, seen=False)
    return scripts.claim(worker, n, lease_ms)
