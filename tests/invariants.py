"""Keyspace invariants every test can assert after any sequence of operations."""

from __future__ import annotations

import redis

from rjobs.keys import QueueKeys
from rjobs.machine import StateMachine


def assert_indexes_consistent(client: redis.Redis, queue: str, machine: StateMachine) -> dict[str, int]:
    """Each job is in exactly the state index of its status; the ready/delayed/leases zsets hold
    exactly the jobs whose status plays that role; every index member has a job hash; counts
    (ZCARD per state) equal a full scan. Returns the scanned counts."""
    k = QueueKeys(queue)
    statuses: dict[str, str] = {}
    for key in client.scan_iter(match=k.prefix + "job:*", count=1000):
        name = key.decode()
        rest = name[len(k.prefix) + 4 :]
        if ":" in rest:
            continue
        status = client.hget(name, "status")
        assert status is not None, f"job hash {name} has no status"
        statuses[rest] = status.decode()
    scanned = {s: 0 for s in machine.states}
    for job_id, status in statuses.items():
        assert status in machine.edges, f"{job_id} has unknown status {status}"
        scanned[status] += 1
    for state in machine.states:
        members = {m.decode() for m in client.zrange(k.state(state), 0, -1)}
        expected = {j for j, s in statuses.items() if s == state}
        assert members == expected, f"state:{state} index {sorted(members)} != jobs {sorted(expected)}"
    ready = {m.decode() for m in client.zrange(k.ready, 0, -1)}
    assert ready == {j for j, s in statuses.items() if s == machine.ready}, "ready zset disagrees with statuses"
    if machine.delayed:
        delayed = {m.decode() for m in client.zrange(k.delayed, 0, -1)}
        assert delayed == {j for j, s in statuses.items() if s == machine.delayed}, "delayed zset disagrees"
    leases = {m.decode() for m in client.zrange(k.leases, 0, -1)}
    assert all(statuses.get(j) in machine.leased for j in leases), f"leases hold non-leased jobs: {leases}"
    expiring = {m.decode() for m in client.zrange(k.expiring, 0, -1)}
    finals = set(machine.final_states())
    assert expiring <= {j for j, s in statuses.items() if s in finals}, "expiring holds a job that is not final"
    return scanned
