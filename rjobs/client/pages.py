"""The paging plan behind :meth:`rjobs.Queue.page` (and the dashboard's job lists): one page of a
state or owner index, newest first, from a cursor, with filters on type, owner and error code.

A request reads at most :data:`PAGE_SCAN` index entries (``ZREVRANGE`` by rank from the cursor)
and their filter fields (one pipelined ``HMGET`` each), then the matching jobs' hashes: its cost
does not grow with the index, however deep the cursor and however rare the matches. A page that
stopped at the bound before it was full says so with ``next_cursor`` (read on from there); it
never SCANs and never reads a whole index.

A cursor is a rank in the index, newest first: jobs that enter the index while someone pages
shift the later pages by as many entries (a job may show twice or be skipped), the usual price
of offset paging, and what keeps a deep page one ``ZREVRANGE`` away.
"""

from __future__ import annotations

from typing import Any

import msgspec

from rjobs.client.operations import QueuePlans
from rjobs.errors import ValidationError
from rjobs.models import Job
from rjobs.store import codec
from rjobs.store.keys import validate_name
from rjobs.store.scripts import Cmd
from rjobs.store.transport import Plan

__all__ = ["PAGE_CHUNK", "PAGE_LIMIT", "PAGE_SCAN", "JobPage", "filter_index", "matches", "page_plan"]

#: The most index entries one page request reads (filtered pages stop there, with a cursor).
PAGE_SCAN = 1000
#: Index entries read per round trip while filtering.
PAGE_CHUNK = 250
#: The most jobs a page holds.
PAGE_LIMIT = 200


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of jobs, newest first: ``next_cursor`` reads on (None: the index ends here), and
    ``scanned`` says how many index entries the request read (at most :data:`PAGE_SCAN`)."""

    jobs: list[Job]
    next_cursor: str | None
    scanned: int


def _cursor(cursor: str | int | None) -> int:
    if cursor is None or cursor == "":
        return 0
    text = str(cursor)
    if isinstance(cursor, bool) or not text.isdigit() or len(text) > 12:
        raise ValidationError(f"cursor must be a non-negative integer (a rank), not {str(cursor)[:40]!r}")
    return int(text)


def page_plan(
    plans: QueuePlans,
    state: str | None,
    *,
    user_id: str | None = None,
    job_type: str | None = None,
    error_code: str | None = None,
    cursor: str | int | None = None,
    limit: int = 50,
    oldest_first: bool = False,
) -> Plan[JobPage]:
    """One page of the jobs of ``state`` (the state index) or of ``user_id`` (the owner index, in
    ``state`` if given), newest first (``oldest_first``: oldest first) from ``cursor``, whose type
    is ``job_type`` and whose error has code ``error_code``; reads at most :data:`PAGE_SCAN`
    index entries."""
    if not isinstance(oldest_first, bool):
        raise ValidationError("oldest_first must be True or False")
    order = "ZRANGE" if oldest_first else "ZREVRANGE"
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT:
        raise ValidationError(f"limit must be an integer 1-{PAGE_LIMIT}")
    start = _cursor(cursor)
    key = filter_index(plans, state, user_id, job_type, error_code, "a page needs a state or a user")
    # The state index holds only jobs of that state: without other filters no field is read.
    filtered = job_type is not None or error_code is not None or (user_id is not None and state is not None)
    if not filtered:
        ids: list[bytes] = yield Cmd((order, key, start, start + limit - 1))
        raws: list[Any] = (yield [Cmd(("HGETALL", plans.keys.job(i.decode()))) for i in ids]) if ids else []
        more = len(ids) == limit
        return JobPage(
            jobs=[codec.job_from_hash(r) for r in raws if r],
            next_cursor=str(start + limit) if more else None,
            scanned=len(ids),
        )
    found: list[bytes] = []
    scanned, rank, ended = 0, start, False
    while len(found) < limit and scanned < PAGE_SCAN:
        chunk, first = min(PAGE_CHUNK, PAGE_SCAN - scanned), rank
        ids = yield Cmd((order, key, rank, rank + chunk - 1))
        rows: list[Any] = (
            (yield [Cmd(("HMGET", plans.keys.job(i.decode()), "status", "type", "error")) for i in ids]) if ids else []
        )
        for jid, (status, typ, err) in zip(ids, rows):
            scanned += 1
            rank += 1
            if matches(status, typ, err, state, job_type, error_code):
                found.append(jid)
                if len(found) == limit:
                    break
        if len(ids) < chunk:  # the index ends in this chunk: done when every entry of it was read
            ended = rank - first == len(ids)
            break
    raws = (yield [Cmd(("HGETALL", plans.keys.job(i.decode()))) for i in found]) if found else []
    return JobPage(
        jobs=[codec.job_from_hash(r) for r in raws if r],
        next_cursor=None if ended else str(rank),
        scanned=scanned,
    )


def filter_index(
    plans: QueuePlans,
    state: str | None,
    user_id: str | None,
    job_type: str | None,
    error_code: str | None,
    needs: str,
) -> str:
    """Check the filters of a listing and name the index it reads: the owner's (``user_id``), else
    the state's; ``needs`` is the error when there is neither."""
    if state is not None and state not in plans.machine.edges:
        raise ValidationError(
            f"unknown state {state!r} for machine {plans.machine.name!r}: {list(plans.machine.edges)}"
        )
    if job_type is not None:
        validate_name("job type", job_type)
    if error_code is not None and (not isinstance(error_code, str) or not 1 <= len(error_code) <= 200):
        raise ValidationError("error_code must be text of 1-200 characters")
    if user_id is not None:
        return plans.keys.owner(validate_name("user id", user_id))
    if state is not None:
        return plans.keys.state(state)
    raise ValidationError(needs)


def matches(
    status: bytes | None,
    typ: bytes | None,
    err: bytes | None,
    state: str | None,
    job_type: str | None,
    error_code: str | None,
) -> bool:
    """Whether an index entry's fields (status, type, error) pass the filters."""
    if status is None or (state is not None and status.decode() != state):
        return False
    if job_type is not None and (typ or b"").decode() != job_type:
        return False
    if error_code is not None:
        decoded = codec.decode_error(err) if err else None
        if decoded is None or decoded.code != error_code:
            return False
    return True
