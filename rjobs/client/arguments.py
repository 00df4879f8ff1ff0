"""The checks and conversions of what callers pass (errors, times, leases, tokens, reasons,
enqueue's arguments), shared by every operation: a bad value raises ValidationError here, before
anything is sent."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from rjobs.errors import ValidationError
from rjobs.models import ACTOR_TYPES, Actor, JobError, JobRequest
from rjobs.store import codec

__all__ = [
    "BULK_OUTCOMES",
    "DEDUPE_POLICIES",
    "MANUAL_LEASE",
    "MAX_DELAY_MS",
    "MAX_MS",
    "UNSET",
    "dedupe_policy",
    "due_ms",
    "flag",
    "job_request",
    "lease_ms",
    "reason_text",
    "to_job_error",
    "to_ms",
    "token_text",
]

#: A left-out argument where None is a value (e.g. a result of None).
UNSET: Any = object()


def to_job_error(error: str | BaseException | JobError | dict[str, Any]) -> JobError:
    """Normalise what a caller passes as an error into the structured form, checked: a non-empty
    code, a message, ``retry_after_ms`` a non-negative integer or None."""
    if isinstance(error, JobError):
        return checked_error(error)
    if isinstance(error, BaseException):
        return JobError(code=type(error).__name__, message=str(error)[:2000])
    if isinstance(error, dict):
        unknown = set(error) - set(JobError.__struct_fields__)
        if unknown:
            raise ValidationError(f"error dict has unknown fields {sorted(unknown)}")
        try:
            return checked_error(msgspec.convert(error, JobError))
        except msgspec.ValidationError as exc:
            raise ValidationError(f"error dict needs code and message: {exc}") from None
    if isinstance(error, str):
        return JobError(code="error", message=error[:2000])
    raise ValidationError(f"error must be a str, exception, dict or JobError, not {type(error).__name__}")


#: The latest due time a job may have (9999-12-31, epoch ms), as the scripts check it.
MAX_MS = 253_402_300_799_999
#: The longest delay (100 years, ms).
MAX_DELAY_MS = 3_153_600_000_000


def checked_error(error: JobError) -> JobError:
    """``error`` when its fields are well formed, else ValidationError."""
    after = error.retry_after_ms
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise ValidationError(f"retry_after_ms must be a non-negative integer of milliseconds, not {after!r}")
    if not isinstance(error.code, str) or not error.code or not isinstance(error.message, str):
        raise ValidationError("an error needs a non-empty code and a message (text)")
    if error.traceback is not None and not isinstance(error.traceback, str):
        raise ValidationError("an error's traceback must be text")
    return error


def to_ms(value: float | dt.timedelta | dt.datetime | None, *, absolute: bool, what: str) -> int:
    """Seconds (or a timedelta, or an aware datetime when ``absolute``) as ms, checked: finite,
    non-negative, up to :data:`MAX_MS` (absolute) or :data:`MAX_DELAY_MS`."""
    if value is None:
        return 0
    if isinstance(value, dt.datetime):
        if not absolute:
            raise ValidationError(f"{what} must be seconds or a timedelta")
        if value.tzinfo is None:
            raise ValidationError(f"{what} must be timezone-aware")
        value = value.timestamp()
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    limit = (MAX_MS if absolute else MAX_DELAY_MS) / 1000
    # NaN fails both comparisons, infinity and huge integers the second
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= limit:
        raise ValidationError(
            f"{what} must be a finite, non-negative number of seconds (up to year 9999; delays up to 100 years)"
        )
    return int(value * 1000)


#: Seconds of lease a manual move into a leased state takes when the caller gives none.
MANUAL_LEASE = 300.0
#: What a bulk move reports per id.
BULK_OUTCOMES = {
    "done": "moved",
    "not_found": "no such job",
    "invalid_transition": "the machine has no edge from the job's state to the target",
    "lease_required": "the job is leased: pass operator=True",
    "lease_lost": "a lease token was given and is not the job's",
    "invalid": "the request was refused as invalid (e.g. a delayed target without run_at/delay)",
}


#: What a dedupe key's policy may be: keep the live job, replace it, or reuse the key's fresh cached
#: result (else keep).
DEDUPE_POLICIES = ("keep", "replace", "reuse")


def dedupe_policy(value: object) -> str:
    """``value`` when it is one of :data:`DEDUPE_POLICIES`, else ValidationError."""
    if not isinstance(value, str) or value not in DEDUPE_POLICIES:
        raise ValidationError(f"dedupe policy must be 'keep', 'replace' or 'reuse', not {value!r}")
    return value


def flag(value: object, what: str) -> bool:
    """``value`` when it is a bool, else ValidationError."""
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be True or False")
    return value


def lease_ms(lease: float | None) -> int:
    """A manual lease in ms (default :data:`MANUAL_LEASE`), 0.1 s to 366 days."""
    seconds = MANUAL_LEASE if lease is None else lease
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or not 0.1 <= seconds <= 366 * 86400
    ):
        raise ValidationError("lease must be 0.1 s to 366 days")
    return int(seconds * 1000)


def due_ms(run_at: float | dt.datetime | None, delay: float | dt.timedelta | None) -> int:
    """A due time for enqueue's moves: epoch ms for ``run_at``, minus the delay in ms for
    ``delay`` (the script adds it to the server's clock), 0 for neither."""
    if run_at is not None and delay is not None:
        raise ValidationError("give delay or run_at, not both")
    if delay is not None:
        ms = to_ms(delay, absolute=False, what="delay")
        return -max(ms, 1)
    return to_ms(run_at, absolute=True, what="run_at")


def token_text(token: str | int | None) -> str:
    """A lease token as the scripts take it ('' for none)."""
    if token is None:
        return ""
    text = str(token)
    if not text.isdigit() or len(text) > 20:
        raise ValidationError("lease token must be the integer issued by claim")
    return text


def reason_text(reason: str) -> str:
    """A reason: text of at most 1000 bytes."""
    if not isinstance(reason, str) or len(codec.check_text(reason, "reason").encode()) > 1000:
        raise ValidationError("reason must be text of at most 1000 bytes")
    return reason


def job_request(
    type: str,
    params: Any,
    priority: str | int,
    user_id: str | None,
    delay: Any,
    run_at: Any,
    dedupe_key: str | None,
    dedupe: str,
    cancel_running: bool,
    max_attempts: int,
    depends_on: Sequence[str],
    on_dependency_failure: str,
    job_id: str | None,
    hold: bool,
    group: str | None = None,
) -> JobRequest:
    """Bundle enqueue's arguments into a request; timedelta/datetime become seconds."""
    if isinstance(delay, dt.timedelta):
        delay = delay.total_seconds()
    if isinstance(run_at, dt.datetime):
        if run_at.tzinfo is None:
            raise ValidationError("run_at must be timezone-aware")
        run_at = run_at.timestamp()
    if isinstance(depends_on, str):
        raise ValidationError("depends_on must be a sequence of job ids, not a string")
    try:
        return JobRequest(
            type=type,
            params=params,
            priority=priority,
            user_id=user_id,
            delay=delay,
            run_at=run_at,
            dedupe_key=dedupe_key,
            dedupe=dedupe,
            cancel_running=cancel_running,
            max_attempts=max_attempts,
            depends_on=tuple(depends_on),
            on_dependency_failure=on_dependency_failure,
            job_id=job_id,
            hold=hold,
            group=group,
        )
    except TypeError as exc:
        raise ValidationError(str(exc)) from None


_ACTOR = re.compile(r"^[A-Za-z0-9_.:@\-]{1,200}$")
_ACTOR_ID = re.compile(r"^[A-Za-z0-9_.@\-]{1,128}$")


def actor_text(actor: str | Actor) -> str:
    """An actor as the scripts record it: the text itself (1-200 of A-Z a-z 0-9 _ . : @ -), or a
    structured :class:`rjobs.Actor` as ``type:id`` (type agent, human or worker; its name, at most
    200 characters, goes to the actor directory instead)."""
    if isinstance(actor, Actor):
        if actor.type not in ACTOR_TYPES:
            raise ValidationError(f"actor type must be one of {', '.join(ACTOR_TYPES)}, not {actor.type!r}")
        if not isinstance(actor.id, str) or not _ACTOR_ID.match(actor.id):
            raise ValidationError("actor id: use 1-128 characters from A-Z a-z 0-9 _ . @ -")
        if not isinstance(actor.name, str) or len(actor.name) > 200 or any(c < " " for c in actor.name):
            raise ValidationError("actor name: text of at most 200 characters, no control characters")
        codec.check_text(actor.name, "actor name")
        return str(actor)
    if not isinstance(actor, str) or not _ACTOR.match(actor):
        raise ValidationError(
            f"invalid actor {repr(actor)[:60]}: use 1-200 characters from A-Z a-z 0-9 _ . : @ -, or an rjobs.Actor"
        )
    return actor
