"""Every edge of the JOB machine and the TASK lifecycle, valid and invalid, against real
servers. A rejected transition raises InvalidTransition(current, target) and leaves every key of
the queue exactly as it was."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import pytest
import redis

from rjobs import InvalidTransition, SyncQueue, machines
from rjobs.statemachine import StateMachine
from tests.helpers import keyspace_fingerprint
from tests.invariants import assert_indexes_consistent


def placements(m: StateMachine) -> dict[str, dict[str, object]]:
    """Where enqueue can put a job directly, and the enqueue options that do it."""
    out: dict[str, dict[str, object]] = {m.ready: {}}
    if m.initial != m.ready:
        out[m.initial] = {"hold": True}
    if m.delayed:
        out[m.delayed] = {"delay": 3600}
    if m.waiting:
        out[m.waiting] = {"needs_dependency": True}
    return out


def paths(m: StateMachine) -> dict[str, tuple[str, list[str]]]:
    """For every state, a placement and the shortest list of moves that reaches it."""
    found: dict[str, tuple[str, list[str]]] = {}
    todo: deque[tuple[str, str, list[str]]] = deque((s, s, []) for s in placements(m))
    while todo:
        start, state, path = todo.popleft()
        if state in found:
            continue
        found[state] = (start, path)
        for nxt in m.edges[state]:
            todo.append((start, nxt, [*path, nxt]))
    return found


def reach(q: SyncQueue, state: str) -> tuple[str, str | None]:
    """A job in ``state`` and its lease token (None unless the state is leased): a manual move
    into a leased state takes a lease, and moves out of it present the token."""
    m = q.machine
    start, path = paths(m)[state]
    opts = dict(placements(m)[start])
    if opts.pop("needs_dependency", False):
        blocker = q.enqueue("blocker")
        opts["depends_on"] = [blocker.id]
    job = q.enqueue("work", {"n": 1}, **opts)  # type: ignore[arg-type]
    assert job.status == start
    token: str | None = None
    for target in path:
        moved = q.transition(job.id, target, delay=3600 if target == m.delayed else None, token=token)
        token = str(moved.token) if target in m.leased else None
    assert q.get(job.id).status == state
    return job.id, token


def all_pairs(m: StateMachine) -> Iterator[tuple[str, str]]:
    for a in m.states:
        for b in m.states:
            yield a, b


@pytest.mark.parametrize("machine", [machines.JOB, machines.TASK], ids=["job", "task"])
def test_every_state_is_reachable(machine: StateMachine) -> None:
    assert set(paths(machine)) == set(machine.states)


@pytest.mark.parametrize(
    ("machine", "pair"),
    [(m, p) for m in (machines.JOB, machines.TASK) for p in all_pairs(m)],
    ids=lambda v: v.name if isinstance(v, StateMachine) else "->".join(v),
)
def test_transition(url: str, redis_sync: redis.Redis, machine: StateMachine, pair: tuple[str, str]) -> None:
    current, target = pair
    name = f"matrix-{machine.name}"
    with SyncQueue(name, url, machine=machine, actor="tester") as q:
        job_id, token = reach(q, current)
        delay = 3600 if target == machine.delayed else None
        if machine.allows(current, target):
            job = q.transition(job_id, target, delay=delay, reason="test", token=token)
            assert job.status == target
            last = q.events(job_id)[-1]
            assert (last.from_state, last.to_state, last.actor, last.message) == (current, target, "tester", "test")
            if machine.is_final(target):
                assert job.completed_ms is not None and job.expire_ms is not None
        else:
            before = keyspace_fingerprint(redis_sync)
            with pytest.raises(InvalidTransition) as info:
                q.transition(job_id, target, delay=delay, token=token)
            assert (info.value.current, info.value.target, info.value.job_id) == (current, target, job_id)
            assert keyspace_fingerprint(redis_sync) == before
        assert_indexes_consistent(redis_sync, name, machine)
