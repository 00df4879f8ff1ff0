"""Counters of one worker's round trips and outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


__all__ = ["WorkerStats"]


@dataclass
class WorkerStats:
    """Counters of one worker's round trips and outcomes (for tests, logs and benchmarks)."""

    claim_calls: int = 0
    claimed: int = 0
    finish_calls: int = 0
    finished: int = 0
    lease_lost: int = 0
    cancelled: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    reaped: int = 0
    purged: int = 0
    handed_back: int = 0
