"""The keyspace invariants of a queue, checked after every chaos, model and fuzz test.

One checker (:func:`assert_indexes_consistent`) reads the whole queue with SCAN and plain reads
and asserts what every script promises to keep true, whatever sequence of calls came before:

- every job hash has a known status and a history list;
- each ``state:<s>`` index holds exactly the jobs in ``s``; ``ready``, ``delayed`` and ``leases``
  hold exactly the jobs whose state plays that role (every leased job has a lease and a token,
  and only a leased job has a ``lease_deadline_ms``);
- no index, owner or dedupe entry points at a job hash that does not exist, and no per-job key
  (history, assets, dependents) outlives its job;
- a waiting job waits for something: its count of pending dependencies equals the number of its
  dependencies that have not ended, and that number is above zero (no waiting job whose
  dependencies are all final) unless someone moved the job there by hand (a manual block);
- a dedupe key names a job that carries that key;
- every worker described in ``workers:info`` is listed in ``workers``.
"""

from __future__ import annotations

import msgspec
import redis

from rjobs.statemachine import StateMachine
from rjobs.store.keys import QueueKeys


def _s(v: bytes | None) -> str:
    return v.decode() if v is not None else ""


def assert_indexes_consistent(client: redis.Redis, queue: str, machine: StateMachine) -> dict[str, int]:
    """Assert every invariant above for ``queue``; returns the jobs per state found by the scan."""
    k = QueueKeys(queue)
    jobs: dict[str, dict[bytes, bytes]] = {}
    extra: dict[str, list[str]] = {}  # job id -> its per-job keys other than the hash
    for key in client.scan_iter(match=k.prefix + "job:*", count=1000):
        rest = key.decode()[len(k.prefix) + 4 :]
        if ":" in rest:
            jid, suffix = rest.split(":", 1)
            extra.setdefault(jid, []).append(suffix)
            continue
        jobs[rest] = client.hgetall(key)
    statuses: dict[str, str] = {}
    for jid, h in jobs.items():
        status = _s(h.get(b"status"))
        assert status in machine.edges, f"job {jid} has unknown status {status!r}"
        statuses[jid] = status
    for jid, suffixes in extra.items():
        assert jid in jobs, f"keys {suffixes} of job {jid} outlive its hash"
        for suffix in suffixes:
            assert suffix in ("history", "assets", "dependents"), f"unknown per-job key job:{jid}:{suffix}"
    for jid in jobs:
        assert "history" in extra.get(jid, []), f"job {jid} has no history"
        first = client.lindex(k.job_history(jid), 0)
        entry = msgspec.json.decode(first) if first is not None else {}
        assert (entry.get("ev") or entry.get("to")) == "created", (  # no "ev": the event is "to"
            f"{jid}: history starts {first!r}"
        )

    scanned = {s: 0 for s in machine.states}
    for status in statuses.values():
        scanned[status] += 1
    for state in machine.states:
        members = {m.decode() for m in client.zrange(k.state(state), 0, -1)}
        expected = {j for j, s in statuses.items() if s == state}
        assert members == expected, f"state:{state} index {sorted(members)} != jobs {sorted(expected)}"
    # ready jobs wait in the lane of their type (and group: ready:<type>:<group>, listed in the
    # type's groups index), each type listed in the lanes index
    lane_keys = {key.decode()[len(k.prefix) + 6 :] for key in client.scan_iter(match=k.prefix + "ready:*", count=1000)}
    lanes = {name.partition(":")[0] for name in lane_keys}
    listed = {m.decode() for m in client.zrange(k.lanes, 0, -1)}
    assert lanes <= listed, f"lanes {sorted(lanes - listed)} missing from the lanes index"
    ready_ids: set[str] = set()
    for name in lane_keys:
        t, _, g = name.partition(":")
        if g:
            assert client.zscore(k.prefix + "groups:" + t, g) is not None, f"group lane {name} not in groups:{t}"
        for m in client.zrange(k.prefix + "ready:" + name, 0, -1):
            jid = m.decode()
            h = jobs.get(jid, {})
            assert (_s(h.get(b"type")), _s(h.get(b"group"))) == (t, g), f"lane {name} holds {jid} of another lane"
            ready_ids.add(jid)
    # every capped slot is held by a leased job that lists it (lua/claim.lua, lib/move.lua)
    held: dict[str, int] = {}
    for jid, h in jobs.items():
        for name in filter(None, _s(h.get(b"lim")).split(",")):
            assert statuses[jid] in machine.leased, f"job {jid} holds limit slots but is {statuses[jid]}"
            held[name] = held.get(name, 0) + 1
    # a job leased by hand is listed under its assignee while it stays leased (lib/move.lua)
    assigned = {
        key.decode()[len(k.prefix) + 9 :]: {m.decode() for m in client.zrange(key, 0, -1)}
        for key in client.scan_iter(match=k.prefix + "assigned:*", count=1000)
    }
    expected_assigned: dict[str, set[str]] = {}
    for jid, h in jobs.items():
        who = _s(h.get(b"assignee"))
        if who:
            assert statuses[jid] in machine.leased, f"job {jid} keeps an assignee but is {statuses[jid]}"
            expected_assigned.setdefault(who, set()).add(jid)
    assert assigned == expected_assigned, f"assigned indexes {assigned} != assignees {expected_assigned}"
    running = {_s(n): int(v) for n, v in client.hgetall(k.prefix + "running").items()}
    assert {n: v for n, v in running.items() if v} == held, f"running counts {running} != slots held {held}"
    lines = {key.decode()[len(k.prefix) + 5 :] for key in client.scan_iter(match=k.prefix + "wake:*", count=1000)}
    assert lines <= listed, f"wake lines {sorted(lines - listed)} of types missing from the lanes index"
    assert all(client.llen(k.wake(t)) <= 1 for t in lines), "a wake line holds at most one token"
    ready = ready_ids
    assert ready == {j for j, s in statuses.items() if s == machine.ready}, "ready lanes disagree with statuses"
    if machine.delayed:
        delayed = {m.decode() for m in client.zrange(k.delayed, 0, -1)}
        assert delayed == {j for j, s in statuses.items() if s == machine.delayed}, "delayed zset disagrees"
    leases = {m.decode(): score for m, score in client.zrange(k.leases, 0, -1, withscores=True)}
    leased = {j for j, s in statuses.items() if s in machine.leased}
    assert set(leases) == leased, f"leases {sorted(leases)} != leased jobs {sorted(leased)}"
    for jid in leased:
        h = jobs[jid]
        assert h.get(b"token"), f"leased job {jid} has no token"
        assert int(float(h[b"lease_deadline_ms"])) == int(leases[jid]), f"{jid}: lease deadline disagrees"
    for jid, h in jobs.items():
        assert jid in leased or b"lease_deadline_ms" not in h, f"job {jid} keeps a lease deadline, not leased"
    listed = {m.decode() for m in client.zrange(k.workers, 0, -1)}
    described = {f.decode() for f in client.hkeys(k.workers_info)}
    assert described <= listed, f"details of workers no longer listed: {sorted(described - listed)}"

    for key in client.scan_iter(match=k.prefix + "owner:*", count=1000):
        user = key.decode()[len(k.prefix) + 6 :]
        for m in client.zrange(key, 0, -1):
            jid = m.decode()
            assert jid in jobs, f"owner:{user} lists missing job {jid}"
            assert _s(jobs[jid].get(b"user_id")) == user, f"owner:{user} lists {jid} of another user"
    for key in client.scan_iter(match=k.prefix + "dedupe:*", count=1000):
        dkey = key.decode()[len(k.prefix) + 7 :]
        holder = _s(client.get(key))
        assert holder in jobs, f"dedupe:{dkey} names missing job {holder}"
        assert _s(jobs[holder].get(b"dedupe_key")) == dkey, f"dedupe:{dkey} names {holder}, which has another key"

    for jid, status in statuses.items():
        if status != machine.waiting:
            continue
        h = jobs[jid]
        deps = [d for d in _s(h.get(b"depends_on")).split(",") if d]
        open_deps = [d for d in deps if d in statuses and not machine.is_final(statuses[d])]
        pending = int(_s(h.get(b"deps_pending")) or 0)
        assert pending == len(open_deps), f"waiting job {jid}: deps_pending {pending} != open deps {open_deps}"
        for d in open_deps:
            assert client.sismember(k.job_dependents(d), jid), f"{jid} waits for {d}, which does not list it"
        if not open_deps:  # only a manual block may wait for nothing: someone moved it there on purpose
            into = [e for e in map(msgspec.json.decode, client.lrange(k.job_history(jid), 0, -1)) if e.get("to")]
            last = into[-1]
            assert last.get("from") and last.get("by") != "rjobs", f"waiting job {jid} waits for nothing: {last}"
    return scanned
