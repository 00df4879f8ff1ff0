"""Plans that remove jobs or act on many selected ones (see rjobs.client.operations for what a plan
is): delete one or many jobs with everything they own, drain the jobs waiting to run, obliterate a
whole queue, retry many jobs, and the filtered listing that selects them (failed jobs by type and
error code). :class:`rjobs.client.control.QueueControl` drives them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rjobs.client.arguments import actor_text
from rjobs.client.operations import BULK_CHUNK, QueuePlans
from rjobs.client.pages import filter_index, matches
from rjobs.errors import ValidationError
from rjobs.models import Actor, Job, Who
from rjobs.store import codec
from rjobs.store.keys import validate_name
from rjobs.store.scripts import Cmd, outcome_error
from rjobs.store.transport import Plan

__all__ = [
    "DEPENDENTS_POLICIES",
    "FILTER_PAGE",
    "FILTER_SCAN",
    "bulk_delete_plan",
    "bulk_retry_plan",
    "delete_plan",
    "drain_plan",
    "filtered_list_plan",
    "obliterate_plan",
]

#: What happens to the jobs waiting for a deleted one (lua/lib/remove.lua): ``refuse`` the delete
#: (HasDependents), ``fail`` or ``cancel`` them (error code ``dependency_deleted``, recorded in their
#: history; their own dependents follow), or ``delete`` them too, the whole chain.
DEPENDENTS_POLICIES = ("refuse", "fail", "cancel", "delete")
#: Jobs one drain or obliterate call takes from the indexes (each call is one bounded script).
BATCH = 500
#: Index entries read per page by a filtered listing, and the most it reads in all.
FILTER_PAGE = 500
FILTER_SCAN = 100_000


def _ids(plans: QueuePlans, job_ids: Sequence[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise ValidationError("job_ids must be a sequence of job ids, not a string")
    return list(dict.fromkeys(validate_name("job id", i) for i in job_ids))


def _removal_args(
    plans: QueuePlans, user_id: str | None, force: bool, dependents: str, actor: Who | None
) -> tuple[str, str, bool, str]:
    if dependents not in DEPENDENTS_POLICIES:
        raise ValidationError(f"dependents must be one of {list(DEPENDENTS_POLICIES)}, not {dependents!r}")
    if not isinstance(force, bool):
        raise ValidationError("force must be True or False")
    user = validate_name("user id", user_id) if user_id is not None else ""
    return _actor(plans, actor), user, force, dependents


#: The actor rule of rjobs.client.queries (its plans check actors with the same pattern).


def _actor(plans: QueuePlans, actor: str | Actor | None) -> str:
    return plans.actor if actor is None else actor_text(actor)


def delete_plan(
    plans: QueuePlans,
    job_id: str,
    *,
    user_id: str | None = None,
    force: bool = False,
    dependents: str = "refuse",
    actor: Who | None = None,
) -> Plan[int]:
    """Delete one job with everything it owns; -> how many jobs went (its deleted dependents
    included). Raises the typed refusal (JobNotFound, Unauthorized, JobRunning, HasDependents);
    then nothing was written."""
    who, user, force, policy = _removal_args(plans, user_id, force, dependents, actor)
    jid = validate_name("job id", job_id)
    removed, _, outcomes = yield plans.scripts.delete(who, [jid], user, force, policy)
    err = outcome_error(outcomes[0])
    if err is not None:
        raise err
    return int(removed)


def bulk_delete_plan(
    plans: QueuePlans,
    job_ids: Sequence[str],
    *,
    user_id: str | None = None,
    force: bool = False,
    dependents: str = "refuse",
    actor: Who | None = None,
) -> Plan[dict[str, str]]:
    """Delete many jobs, one script call per :data:`BULK_CHUNK` ids (all in one round trip);
    one outcome per distinct id: 'done', or the refusal's code ('not_found', 'unauthorized',
    'running', 'has_dependents'). An id listed twice is deleted once."""
    who, user, force, policy = _removal_args(plans, user_id, force, dependents, actor)
    ids = _ids(plans, job_ids)
    if not ids:
        return {}
    chunks = [ids[i : i + BULK_CHUNK] for i in range(0, len(ids), BULK_CHUNK)]
    replies: list[Any] = yield [plans.scripts.delete(who, chunk, user, force, policy) for chunk in chunks]
    out: dict[str, str] = {}
    for chunk, reply in zip(chunks, replies):
        if isinstance(reply, BaseException):
            if not out:
                raise reply  # nothing was written
            out.update((jid, getattr(reply, "code", "refused")) for jid in chunk)
            continue
        for jid, outcome in zip(chunk, reply[2]):
            e = outcome_error(outcome)
            out[jid] = "done" if e is None else e.code
    return out


def bulk_retry_plan(plans: QueuePlans, job_ids: Sequence[str], actor: Who | None = None) -> Plan[dict[str, str]]:
    """Retry many failed or cancelled jobs, one retry call each, :data:`BULK_CHUNK` calls per
    round trip; one outcome per distinct id: 'done' or the refusal's code."""
    who = _actor(plans, actor)
    ids = _ids(plans, job_ids)
    out: dict[str, str] = {}
    for start in range(0, len(ids), BULK_CHUNK):
        chunk = ids[start : start + BULK_CHUNK]
        replies: list[Any] = yield [plans.scripts.retry(who, jid) for jid in chunk]
        for jid, reply in zip(chunk, replies):
            out[jid] = getattr(reply, "code", "refused") if isinstance(reply, BaseException) else "done"
    return out


def drain_plan(plans: QueuePlans, actor: Who | None = None) -> Plan[int]:
    """Delete every job waiting to run (waiting, delayed, initial, ready), a bounded batch per
    call until a call finds none; running and finished jobs stay. -> how many went."""
    who = _actor(plans, actor)
    total = 0
    while True:
        n: int = yield plans.scripts.drain(who, BATCH)
        if n == 0:
            return total
        total += n


def obliterate_plan(plans: QueuePlans, force: bool = False, actor: Who | None = None) -> Plan[int]:
    """Delete the whole queue: its jobs a bounded batch per call, then its own keys and machine.
    JobRunning (nothing written by that call) while jobs are leased, unless ``force``. -> jobs deleted."""
    who = _actor(plans, actor)
    if not isinstance(force, bool):
        raise ValidationError("force must be True or False")
    total = 0
    while True:
        n, gone = yield plans.scripts.obliterate(who, force, BATCH)
        total += int(n)
        if gone:
            return total


def filtered_list_plan(
    plans: QueuePlans,
    state: str | None,
    user_id: str | None,
    limit: int,
    job_type: str | None,
    error_code: str | None,
) -> Plan[list[Job]]:
    """Newest first, the jobs of ``state`` (or of the owner ``user_id``, in ``state`` if given)
    whose type is ``job_type`` and whose error code is ``error_code`` (None: any). No SCAN: it
    reads the index a page of :data:`FILTER_PAGE` entries at a time and the fields it filters on
    (one pipelined HMGET per entry), at most :data:`FILTER_SCAN` entries in all."""
    if job_type is None and error_code is None:
        return (yield from plans.list_jobs(state, user_id, limit))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValidationError("limit must be an integer 1-10000")
    key = filter_index(
        plans, state, user_id, job_type, error_code, "filtering by type or error code needs a state (or a user)"
    )
    found: list[bytes] = []
    start = 0
    while len(found) < limit and start < FILTER_SCAN:
        ids: list[bytes] = yield Cmd(("ZREVRANGE", key, start, start + FILTER_PAGE - 1))
        if not ids:
            break
        rows: list[Any] = yield [Cmd(("HMGET", plans.keys.job(i.decode()), "status", "type", "error")) for i in ids]
        for jid, (status, typ, err) in zip(ids, rows):
            if not matches(status, typ, err, state, job_type, error_code):
                continue
            found.append(jid)
        start += FILTER_PAGE
    raws: list[Any] = (yield [Cmd(("HGETALL", plans.keys.job(i.decode()))) for i in found[:limit]]) if found else []
    return [codec.job_from_hash(r) for r in raws if r]
