"""Work assigned to people and agents, as plans (sans I/O): assigning a job to a named holder, who
then starts it under that lease without any worker loop (human-in-the-loop), listing what an
assignee holds, and the directory of structured actors' names."""

from __future__ import annotations

from typing import Any

import msgspec

from rjobs.client.arguments import actor_text
from rjobs.client.operations import QueuePlans
from rjobs.errors import ValidationError
from rjobs.models import Actor, Job, Who
from rjobs.store import codec
from rjobs.store.scripts import Cmd
from rjobs.store.transport import Plan

__all__ = ["actors_plan", "assign_plan", "assigned_plan", "name_actors_plan"]


def _named(actors: tuple[Who | None, ...]) -> list[tuple[str, str, str]]:
    return [(a.type, a.id, a.name) for a in dict.fromkeys(actors) if isinstance(a, Actor) and a.name]


def name_actors_plan(plans: QueuePlans, actors: tuple[Actor, ...]) -> Plan[int]:
    """Keep the names of structured actors in the queue's directory; how many entries changed."""
    if not actors or len(actors) > 100 or not all(isinstance(a, Actor) for a in actors):
        raise ValidationError("name 1-100 rjobs.Actor values")
    for a in actors:
        actor_text(a)
    changed: int = yield plans.scripts.name_actors([(a.type, a.id, a.name) for a in dict.fromkeys(actors)])
    return changed


def assign_plan(plans: QueuePlans, job_id: str, assignee: Who, lease: float, by: Who | None) -> Plan[Job]:
    """Lease a ready job to ``assignee`` by hand (the machine's first leased state, e.g. TASK's
    ``assigned``), for ``lease`` seconds; ``by`` (who assigns) goes in the history's reason."""
    holder = actor_text(assignee)
    reason = f"assigned to {holder}" + (f" by {actor_text(by)}" if by is not None else "")
    named = _named((assignee, by))
    if named:
        yield plans.scripts.name_actors(named)
    job: Job = yield from plans.transition(job_id, plans.machine.leased[0], actor=holder, reason=reason, lease=lease)
    return job


def assigned_plan(plans: QueuePlans, assignee: Who, limit: int) -> Plan[list[Job]]:
    """The jobs ``assignee`` holds now (assigned or started by hand), newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValidationError("limit must be an integer 1-10000")
    key = plans.keys.assigned(actor_text(assignee))
    ids: list[Any] = yield Cmd(("ZREVRANGE", key, 0, limit - 1))
    if not ids:
        return []
    raws: list[Any] = yield [Cmd(("HGETALL", plans.keys.job(i.decode()))) for i in ids]
    return [codec.job_from_hash(r) for r in raws if r]


def actors_plan(plans: QueuePlans) -> Plan[dict[str, Actor]]:
    """The actor directory: ``type:id`` -> :class:`rjobs.Actor` with its name."""
    raw: dict[Any, Any] = yield Cmd(("HGETALL", plans.keys.actors))
    out = {}
    for key, value in sorted(raw.items()):
        out[key.decode() if isinstance(key, bytes) else key] = msgspec.json.decode(value, type=Actor)
    return out
