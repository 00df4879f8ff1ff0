"""Results between jobs (fan-in): the plan that reads what a job's dependencies returned, as
Celery's chords and BullMQ's getChildrenValues give them. Free of I/O like every plan (see
rjobs.client.operations); :class:`rjobs.client.results.JobResults` drives it."""

from __future__ import annotations

from typing import Any

from rjobs.client.queries import ReadPlans
from rjobs.errors import JobNotFound, Unauthorized, ValidationError
from rjobs.models import DependencyResults
from rjobs.store import codec
from rjobs.store.keys import validate_name
from rjobs.store.scripts import Cmd
from rjobs.store.transport import Plan

__all__ = ["MAX_DEPENDENTS", "dependency_results", "dependents_plan"]

#: The most ids :func:`dependents_plan` returns.
MAX_DEPENDENTS = 10_000


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


def dependency_results(plans: ReadPlans, job_id: str, user_id: str | None = None) -> Plan[DependencyResults]:
    """Read the job's ``depends_on`` (one HMGET), then every dependency's status, result and owner
    in one pipelined round trip. ``user_id``: the job must be that user's, and a dependency owned
    by another user raises Unauthorized too (an ownerless one is shared). A dependency no longer
    stored is reported in ``missing``, one that did not succeed in ``unfinished``."""
    jid = validate_name("job id", job_id)
    if user_id is not None:
        validate_name("user id", user_id)
    keys = plans.keys
    status, owner, listed = yield Cmd(("HMGET", keys.job(jid), "status", "user_id", "depends_on"))
    if status is None:
        raise JobNotFound(jid)
    if user_id is not None and _text(owner) != user_id:
        raise Unauthorized(f"job {jid!r} belongs to another user")
    deps = [d for d in _text(listed).split(",") if d]
    if not deps:
        return DependencyResults()
    rows: list[Any] = yield [Cmd(("HMGET", keys.job(d), "status", "result", "user_id")) for d in deps]
    results: dict[str, Any] = {}
    missing: list[str] = []
    unfinished: dict[str, str] = {}
    for dep, (dep_status, result, dep_owner) in zip(deps, rows):
        if dep_status is None:
            missing.append(dep)
            continue
        if user_id is not None and dep_owner and _text(dep_owner) != user_id:
            raise Unauthorized(f"dependency {dep!r} of job {jid!r} belongs to another user")
        state = _text(dep_status)
        if plans.machine.final_role(state) == "success":
            results[dep] = codec.decode_stored(result)
        else:
            unfinished[dep] = state
    return DependencyResults(results, tuple(missing), unfinished)


def dependents_plan(plans: ReadPlans, job_id: str, limit: int = 200) -> Plan[list[str]]:
    """The ids of the jobs that listed ``job_id`` among their dependencies (its ``dependents``
    set), sorted; at most ``limit`` of them (1-:data:`MAX_DEPENDENTS`; past it, which ones is up to
    the server). One pipelined round trip; JobNotFound for no such job."""
    jid = validate_name("job id", job_id)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DEPENDENTS:
        raise ValidationError(f"limit must be an integer 1-{MAX_DEPENDENTS}")
    status, ids = yield [
        Cmd(("HGET", plans.keys.job(jid), "status")),
        Cmd(("SRANDMEMBER", plans.keys.job_dependents(jid), limit)),
    ]
    if status is None:
        raise JobNotFound(jid)
    return sorted(_text(i) for i in ids)
