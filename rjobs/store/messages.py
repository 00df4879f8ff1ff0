"""What the scripts take and return: the typed requests the client builds (:class:`EnqueueSpec`,
:class:`MoveRequest`, in ARGV order) and the decoders of their replies (:class:`ClaimResult`, the
per-request outcomes). rjobs.store.scripts builds the calls from them."""

from __future__ import annotations

from typing import Any

import msgspec

from rjobs.errors import RjobsError, error_from_reply
from rjobs.models import ClaimedJob, EnqueueOutcome
from rjobs.store.codec import decode_stored

__all__ = [
    "Arg",
    "ClaimResult",
    "EnqueueSpec",
    "MoveRequest",
    "decode_claim",
    "decode_declared",
    "decode_enqueue",
    "decode_strings",
    "decode_text",
    "outcome_error",
]

#: What a script's ARGV may hold.
Arg = str | bytes | int | float


class EnqueueSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One job for enqueue.lua, already validated and encoded by the client. The fields are in
    ARGV order: :meth:`args` sends them as declared (``depends_on`` as its count, then the ids),
    and enqueue.lua names the same offsets at its top (a unit test holds the three together)."""

    job_id: str = ""
    type: str
    params: bytes
    priority: int
    user_id: str = ""
    run_at_ms: int = 0
    delay_ms: int = 0
    max_attempts: int = 1
    dedupe_key: str = ""
    dedupe_policy: str = "keep"
    cancel_running: bool = False
    on_dep_failure: str = "fail"
    hold: bool = False
    group: str = ""
    trace: str = ""  # the enqueuing trace context (rjobs.tracing), '' = none
    depends_on: tuple[str, ...] = ()

    def args(self) -> list[Arg]:
        """The record's ARGV fields, in declaration order."""
        return [
            self.job_id,
            self.type,
            self.params,
            self.priority,
            self.user_id,
            self.run_at_ms,
            self.delay_ms,
            self.max_attempts,
            self.dedupe_key,
            self.dedupe_policy,
            int(self.cancel_running),
            self.on_dep_failure,
            int(self.hold),
            self.group,
            self.trace,
            len(self.depends_on),
            *self.depends_on,
        ]


class MoveRequest(msgspec.Struct, frozen=True):
    """One move for transition.lua / finish.lua (see lua/lib/apply.lua for what each field means)."""

    job_id: str
    target: str
    token: str = ""
    result: bytes = b""
    error: bytes = b""
    run_at_ms: int = 0
    msg: str = ""
    refund: bool = False
    lease_ms: int = 0
    operator: bool = False

    def args(self) -> list[Arg]:
        """The request's 10 ARGV fields, in lua/lib/apply.lua's order."""
        return [
            self.job_id,
            self.token,
            self.target,
            self.result,
            self.error,
            self.run_at_ms,
            self.msg,
            int(self.refund),
            self.lease_ms,
            int(self.operator),
        ]


class ClaimResult(msgspec.Struct, frozen=True):
    """What claim.lua returns: the leased jobs, how many remain ready, the next delayed due time,
    and whether the queue is paused (then no job)."""

    jobs: list[ClaimedJob]
    ready_left: int
    next_due_ms: int | None
    paused: bool = False


def outcome_error(outcome: bytes | str) -> RjobsError | None:
    """Per-request outcome of a batch script -> None for 'ok'/'already', else the exception."""
    text = outcome.decode() if isinstance(outcome, bytes) else outcome
    if text in ("ok", "already"):
        return None
    return error_from_reply(text)


def decode_text(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


def decode_enqueue(raw: list[Any]) -> list[EnqueueOutcome]:
    # enqueue.lua replies one flat array, 6 entries per job (no table per job in Lua); the last
    # entry of a `cached` outcome is the cached result, not the cache_invalidated flag
    out = []
    for i in range(0, len(raw), 6):
        outcome = decode_text(raw[i + 1])
        cached = outcome == "cached"
        out.append(
            EnqueueOutcome(
                id=decode_text(raw[i]),
                outcome=outcome,
                status=decode_text(raw[i + 2]),
                previous_id=decode_text(raw[i + 3]) or None,
                stale_cancelled=bool(raw[i + 4]),
                cache_invalidated=not cached and bool(raw[i + 5]),
                cached_result=decode_stored(raw[i + 5]) if cached else None,
            )
        )
    return out


def decode_claim(raw: list[Any]) -> ClaimResult:
    jobs = [
        ClaimedJob(
            id=decode_text(j[0]),
            type=decode_text(j[1]),
            params=decode_stored(j[2]),  # Undecodable: that job fails alone (invalid_params)
            attempt=int(j[3]),
            max_attempts=int(j[4]),
            token=decode_text(j[5]),
            user_id=decode_text(j[6]) or None,
            priority=int(j[7]),
            retry_count=int(j[8]),
            created_ms=int(j[9]),
            lease_deadline_ms=int(j[10]),
            group=decode_text(j[11]) or None if len(j) > 11 else None,
            trace=decode_text(j[12]) or None if len(j) > 12 else None,
        )
        for j in raw[2:]
    ]
    due, left = int(raw[0]), int(raw[1])
    return ClaimResult(jobs, max(left, 0), None if due < 0 else due, left < 0)


def decode_declared(raw: list[Any]) -> tuple[str, dict[str, int]]:
    return decode_text(raw[0]), {decode_text(raw[i]): int(raw[i + 1]) for i in range(1, len(raw), 2)}


def decode_strings(raw: list[Any]) -> list[str]:
    return [decode_text(x) for x in raw]
