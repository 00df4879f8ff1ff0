"""Queue configuration: validated input rules, priorities, retention. Options that every process
must agree on (retention, payload limit, stream caps) are stored with the machine in Redis."""

from __future__ import annotations

import math
import os
import socket

import msgspec

from rjobs.errors import ValidationError

__all__ = ["PRIORITIES", "QueueConfig", "Retention", "default_actor", "parse_priority"]

#: Named priority levels on the 1-10 scale (higher runs first).
PRIORITIES: dict[str, int] = {"low": 1, "normal": 5, "high": 7, "urgent": 9, "critical": 10}


def parse_priority(value: str | int) -> int:
    """A level name or an integer 1-10 -> the integer; anything else raises ValidationError."""
    if isinstance(value, str):
        if value in PRIORITIES:
            return PRIORITIES[value]
        raise ValidationError(f"unknown priority {value!r}: use {sorted(PRIORITIES)} or an integer 1-10")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        raise ValidationError(f"priority {value!r} must be a level name or an integer 1-10")
    return value


class Retention(msgspec.Struct, frozen=True):
    """How long finished jobs are kept, per outcome: ``success`` ... ``cancelled`` in seconds
    (None = no time limit), and ``success_count`` ... ``cancelled_count``, the most finished jobs
    of that outcome to keep (None = no cap; BullMQ's ``removeOnComplete: N``): beyond it the oldest
    go first. Both apply together. A purged job goes with its history, assets, dedupe key and every
    index entry; purging is bounded per call (see docs/design.md, decision 6), so a cap is reached
    within a few finishes or reaper passes, not at once."""

    success: float | None = 24 * 3600.0
    partial: float | None = 7 * 24 * 3600.0
    failure: float | None = 7 * 24 * 3600.0
    cancelled: float | None = 24 * 3600.0
    success_count: int | None = None
    partial_count: int | None = None
    failure_count: int | None = None
    cancelled_count: int | None = None


class QueueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Per-queue settings. ``max_payload`` bounds params/result size in bytes; ``cache_ttl`` is how
    long a dedupe key's successful result stays readable (seconds, 0 = no cache);
    ``queue_events`` writes every event to the queue-wide stream ``rjobs:{Q}:events`` (capped at
    about ``stream_maxlen`` entries, 10,000 by default: a window for live views, ``rjobs events``
    and waits, which re-check statuses every second); when off, only moves into a final state go
    there (waits read them). Job histories are always kept, complete."""

    retention: Retention = Retention()
    max_payload: int = 1024 * 1024
    cache_ttl: float = 3600.0
    queue_events: bool = True
    stream_maxlen: int = 10_000

    def redis_options(self) -> dict[str, int]:
        """The options as stored in the machine hash (opt:<name>, integers)."""

        def ms(seconds: float | None) -> int:
            return -1 if seconds is None else int(seconds * 1000)

        r = self.retention
        return {
            "keep_success_ms": ms(r.success),
            "keep_partial_ms": ms(r.partial),
            "keep_failure_ms": ms(r.failure),
            "keep_cancelled_ms": ms(r.cancelled),
            "keep_success_count": -1 if r.success_count is None else r.success_count,
            "keep_partial_count": -1 if r.partial_count is None else r.partial_count,
            "keep_failure_count": -1 if r.failure_count is None else r.failure_count,
            "keep_cancelled_count": -1 if r.cancelled_count is None else r.cancelled_count,
            "max_payload": self.max_payload,
            "cache_ttl_ms": ms(self.cache_ttl),
            "queue_events": int(self.queue_events),
            "stream_maxlen": self.stream_maxlen,
        }

    @classmethod
    def from_redis_options(cls, options: dict[str, int]) -> QueueConfig:
        """The config a queue's stored options describe (the inverse of :meth:`redis_options`);
        options missing from Redis keep their defaults."""

        def seconds(name: str, default: float | None) -> float | None:
            if name not in options:
                return default
            return None if options[name] < 0 else options[name] / 1000

        def count(name: str) -> int | None:
            n = options.get(name, -1)
            return None if n < 0 else n

        d = cls()
        r = d.retention
        return cls(
            retention=Retention(
                success=seconds("keep_success_ms", r.success),
                partial=seconds("keep_partial_ms", r.partial),
                failure=seconds("keep_failure_ms", r.failure),
                cancelled=seconds("keep_cancelled_ms", r.cancelled),
                success_count=count("keep_success_count"),
                partial_count=count("keep_partial_count"),
                failure_count=count("keep_failure_count"),
                cancelled_count=count("keep_cancelled_count"),
            ),
            max_payload=options.get("max_payload", d.max_payload),
            cache_ttl=seconds("cache_ttl_ms", d.cache_ttl) or 0.0,
            queue_events=bool(options.get("queue_events", int(d.queue_events))),
            stream_maxlen=options.get("stream_maxlen", d.stream_maxlen),
        )

    def validate(self) -> QueueConfig:
        """Raise ValidationError on nonsensical values; return self."""
        for name in ("success", "partial", "failure", "cancelled"):
            v = getattr(self.retention, name)
            if v is not None and not _seconds_ok(v):
                raise ValidationError(f"retention.{name} must be 0 to 100 years in seconds, or None")
            n = getattr(self.retention, f"{name}_count")
            if n is not None and (_bad_int(n) or not 0 <= n <= 1_000_000_000):
                raise ValidationError(f"retention.{name}_count must be an integer 0 to 10**9, or None")
        if _bad_int(self.max_payload) or not 1 <= self.max_payload <= 512 * 1024 * 1024:
            raise ValidationError("max_payload must be 1 byte to 512 MiB")
        if not _seconds_ok(self.cache_ttl):
            raise ValidationError("cache_ttl must be 0 to 100 years in seconds")
        if _bad_int(self.stream_maxlen) or not 1 <= self.stream_maxlen <= 1_000_000_000:
            raise ValidationError("stream_maxlen must be an integer 1 to 10**9")
        return self


_MAX_SECONDS = 100 * 365 * 86400.0


def _seconds_ok(value: object) -> bool:
    """A finite number of seconds from 0 to 100 years (NaN and infinity fail every comparison
    the wrong way, so they are ruled out explicitly)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= _MAX_SECONDS
    )


def _bad_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def default_actor() -> str:
    """Who a client acts as when the caller does not say: host and pid."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())[:60]
    return f"{host or 'host'}-{os.getpid()}"
