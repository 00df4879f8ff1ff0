"""Schedules of periodic jobs against real servers (docs/schedules.md): stored by name, each tick
enqueued exactly once whoever races for it (a replayed call included), missed ticks after a
downtime per policy, bad input refused with nothing written."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from rjobs import Cron, SyncQueue, ValidationError, machines
from rjobs.store.scripts import load_script
from tests.helpers import keyspace_fingerprint, script_for
from tests.invariants import assert_indexes_consistent

Q = "sched"
KEY = f"rjobs:{{{Q}}}:schedules"


def stored(r: redis.Redis, name: str) -> dict[str, Any]:
    raw = r.hget(KEY, name)
    assert raw is not None
    doc: dict[str, Any] = json.loads(raw)
    return doc


def set_next(r: redis.Redis, name: str, next_ms: int) -> None:
    """Simulate time passing (a downtime, a due tick) by moving the stored next tick back."""
    doc = stored(r, name)
    doc["next"] = next_ms
    r.hset(KEY, name, json.dumps(doc))


def server_ms(r: redis.Redis) -> int:
    s, us = r.time()
    return int(s) * 1000 + int(us) // 1000


def test_store_list_remove(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue(Q, url) as q:
        assert q.set_schedule(Cron("poll", "poll", every=30, params={"a": 1})) == "created"
        assert q.set_schedule(Cron("poll", "poll", every=30, params={"a": 1})) == "same"
        assert q.set_schedule(Cron("nightly", "report", cron="0 3 * * *", tz="Europe/Paris")) == "created"
        now = server_ms(redis_sync)
        (nightly, poll) = q.schedules()
        assert poll.every == 30 and poll.params == {"a": 1} and poll.next_ms % 30_000 == 0
        assert now < poll.next_ms <= now + 30_000 and poll.last_ms is None
        assert nightly.cron == "0 3 * * *" and nightly.tz == "Europe/Paris" and now < nightly.next_ms
        assert q.set_schedule(Cron("poll", "poll", every=60)) == "updated"
        assert q.schedules()[1].every == 60
        assert q.remove_schedule("poll") is True and q.remove_schedule("poll") is False
        assert [s.name for s in q.schedules()] == ["nightly"]


def test_a_due_tick_is_enqueued_once_and_a_replay_creates_nothing(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue(Q, url) as q:
        q.set_schedule(Cron("poll", "poll", every=30, params={"x": 1}, priority="high"))
        tick = server_ms(redis_sync) - 1000
        set_next(redis_sync, "poll", tick // 30_000 * 30_000)
        tick = stored(redis_sync, "poll")["next"]
        result = q.cron_tick()
        job_id = f"cron-poll-{tick}"
        assert result.jobs == {job_id: "fired"}
        job = q.get(job_id)
        assert job.type == "poll" and job.params == {"x": 1} and job.priority == 7 and job.status == "queued"
        doc = stored(redis_sync, "poll")
        assert doc["last"] == tick and doc["last_job"] == job_id and doc["next"] == tick + 30_000
        # the same call again (a reply lost on the wire, resent): the tick moved on, nothing is created
        before = keyspace_fingerprint(redis_sync)
        call = q.backend.scripts.cron_tick("w1", "poll", tick, None)
        assert q.backend.run(call)[0] == "stale"
        assert keyspace_fingerprint(redis_sync) == before
        assert q.cron_tick().jobs == {}
        assert_indexes_consistent(redis_sync, Q, machines.JOB)


@pytest.mark.parametrize("missed", ["skip", "once"])
def test_missed_ticks_after_a_downtime(url: str, redis_sync: redis.Redis, missed: str) -> None:
    with SyncQueue(Q, url) as q:
        q.set_schedule(Cron("m", "t", cron="* * * * *", missed=missed))  # type: ignore[arg-type]
        now = server_ms(redis_sync)
        first_missed = now // 60_000 * 60_000 - 10 * 60_000  # ten minutes of downtime
        set_next(redis_sync, "m", first_missed)
        result = q.cron_tick()
        doc = stored(redis_sync, "m")
        assert doc["next"] > now and doc["next"] % 60_000 == 0
        if missed == "skip":
            assert result.jobs == {} and "last" not in doc and q.counts()["queued"] == 0
        else:
            assert result.jobs == {f"cron-m-{first_missed}": "caught_up"} and q.counts()["queued"] == 1
        assert q.cron_tick().jobs == {}  # resumed: the next tick is in the future


def test_a_late_tick_within_grace_still_runs(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue(Q, url) as q:
        q.set_schedule(Cron("g", "t", cron="* * * * *", grace=3600))
        now = server_ms(redis_sync)
        base = now // 60_000 * 60_000
        set_next(redis_sync, "g", base - 120_000)
        result = q.cron_tick()  # three ticks within grace: each runs, one job each
        assert sorted(result.jobs) == sorted(f"cron-g-{base - k * 60_000}" for k in (2, 1, 0))


BAD: list[dict[str, Any]] = [
    {"cron": "61 * * * *"},
    {"cron": "* * * *"},
    {"cron": "not cron"},
    {"cron": "0 0 31 2 *"},
    {"every": 0},
    {"every": -5},
    {"every": 1.5},
    {"every": 5, "tz": "Mars/Olympus_Mons"},
    {"every": 5, "missed": "always"},
    {"cron": "* * * * *", "every": 5},
    {},
]


@pytest.mark.parametrize("bad", BAD, ids=[str(b) for b in BAD])
def test_bad_input_is_refused_and_writes_nothing(url: str, redis_sync: redis.Redis, bad: dict[str, Any]) -> None:
    with SyncQueue(Q, url) as q:
        q.declare()
        before = keyspace_fingerprint(redis_sync)
        with pytest.raises(ValidationError):
            q.set_schedule(Cron("x", "t", **bad))
        with pytest.raises(ValidationError):
            Cron("bad name!", "t", every=5)
        assert keyspace_fingerprint(redis_sync) == before


RAW_BAD = [
    ("t", "61 * * * *", "", "UTC"),
    ("t", "* * * *", "", "UTC"),
    ("t", "*/0 * * * *", "", "UTC"),
    ("t", "5-1 * * * *", "", "UTC"),
    ("t", "", "0", "UTC"),
    ("t", "", "-3", "UTC"),
    ("t", "", "nan", "UTC"),
    ("t", "* * * * *", "5", "UTC"),
    ("t", "* * * * *", "", "../etc"),
    ("t", "* * * * *", "", ""),
    ("bad type", "* * * * *", "", "UTC"),
    ("t", "* * * * *", "", "UTC", "bad name"),
    ("t", "* * * * *", "", "UTC", "x" * 101),
    ("t", "* * * * *", "", "UTC", "a:b"),
]


@pytest.mark.parametrize("bad", RAW_BAD, ids=[repr(b) for b in RAW_BAD])
def test_a_raw_evalsha_with_bad_input_writes_nothing(url: str, redis_sync: redis.Redis, bad: tuple[str, ...]) -> None:
    with SyncQueue(Q, url) as q:
        q.declare()
    jtype, cron, every, tz, name = (*bad, "x")[:5]
    source, sha = script_for(redis_sync, load_script("set_schedule"))
    redis_sync.script_load(source)
    prefix = f"rjobs:{{{Q}}}:"
    before = keyspace_fingerprint(redis_sync)
    argv = ["me", name, jtype, cron, every, tz, "{}", "5", "3", "skip", "60", "9999999999999" if cron else ""]
    with pytest.raises(redis.ResponseError, match=r"^RJ_INVALID"):
        redis_sync.execute_command("EVALSHA", sha, 2, prefix + "machine", prefix + "events", prefix, *argv)
    assert keyspace_fingerprint(redis_sync) == before


def test_a_tick_whose_reply_is_lost_is_not_enqueued_again(url: str, redis_sync: redis.Redis) -> None:
    """The call ran but its caller never saw the reply (sent raw here, the reply dropped): the
    next round reads the schedule again, finds the tick moved on, and creates nothing."""
    with SyncQueue(Q, url) as q:
        q.set_schedule(Cron("poll", "poll", every=30))
        tick = server_ms(redis_sync) // 30_000 * 30_000
        set_next(redis_sync, "poll", tick)
        call = q.backend.scripts.cron_tick("w1", "poll", tick, None)
        source, sha = script_for(redis_sync, call.script)
        redis_sync.script_load(source)
        redis_sync.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)  # reply "lost"
        before = keyspace_fingerprint(redis_sync)
        assert q.cron_tick(actor="w1").jobs == {}
        assert keyspace_fingerprint(redis_sync) == before
        assert [j.id for j in q.list()] == [f"cron-poll-{tick}"]


def test_rolling_deploy_last_writer_wins_and_keeps_the_last_run(url: str, redis_sync: redis.Redis) -> None:
    old, new = Cron("r", "t", every=60, params={"v": 1}), Cron("r", "t", every=60, params={"v": 2})
    with SyncQueue(Q, url) as q:
        q.set_schedule(old)
        set_next(redis_sync, "r", server_ms(redis_sync) // 60_000 * 60_000)
        (fired,) = q.cron_tick().jobs
        assert q.set_schedule(new, actor="v2-worker") == "updated"
        (s,) = q.schedules()
        assert s.params == {"v": 2} and s.by == "v2-worker" and s.last_job == fired and s.next_ms > s.last_ms
        assert q.set_schedule(new) == "same"
        assert q.set_schedule(old) == "updated" and q.schedules()[0].params == {"v": 1}
