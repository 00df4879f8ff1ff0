"""Assignees and structured actors: a TASK is assigned to a named person or agent and started by
them under a lease, with no worker loop (human-in-the-loop); `list(assignee=...)` shows what each
holds; structured actors are recorded as `type:id` with their names in a directory. Real servers,
keyspace checked after each promise."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rjobs import Actor, LeaseLost, SyncQueue, ValidationError, machines
from rjobs.store.scripts import load_script
from tests.helpers import job_history, keyspace_fingerprint, script_for
from tests.integration.test_cli import cli_env
from tests.invariants import assert_indexes_consistent

TASK = machines.TASK
ALICE = Actor("human", "alice", "Alice Smith")
PLANNER = Actor("agent", "planner-1", "Planning agent")


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("tasks", url, machine=TASK, actor="ops") as queue:
        yield queue


def test_a_task_assigned_to_a_person_is_started_and_finished_by_them(q: SyncQueue, redis_sync: redis.Redis) -> None:
    jid = q.enqueue("review-doc").id
    job = q.assign(jid, ALICE, lease=600, by=PLANNER)
    assert job.status == "assigned" and job.worker == "human:alice" and job.token
    assert [j.id for j in q.list(assignee=ALICE)] == [jid] and q.list(assignee="human:bob") == []
    started = q.transition(jid, "in_progress", token=str(job.token), actor=ALICE)
    assert started.status == "in_progress" and started.token == job.token, "the same lease goes on"
    assert [j.id for j in q.list(assignee="human:alice", state="in_progress")] == [jid]
    assert_indexes_consistent(redis_sync, "tasks", TASK)
    q.complete(jid, {"ok": True}, token=str(job.token), actor=ALICE)
    assert q.list(assignee=ALICE) == [], "a finished task leaves its assignee's list"
    history = job_history(redis_sync, q.backend.keys.prefix, jid)
    assigned = next(e for e in history if e.get("to") == "assigned")
    assert assigned["actor"] == "human:alice" and "by agent:planner-1" in assigned.get("msg", "")
    assert {e["actor"] for e in history if e.get("to") in ("in_progress", "completed")} == {"human:alice"}
    assert q.actors() == {"agent:planner-1": PLANNER, "human:alice": ALICE}
    assert_indexes_consistent(redis_sync, "tasks", TASK)


def test_an_expired_assignment_is_reaped_and_leaves_the_list(q: SyncQueue, redis_sync: redis.Redis) -> None:
    jid = q.enqueue("t").id
    job = q.assign(jid, "human:bob", lease=60)
    redis_sync.zadd(q.backend.keys.leases, {jid: 1})  # bob never came back
    q.backend.run(q.backend.scripts.reap(100, 3, 0, 60_000))
    assert q.get(jid).status != "assigned" and q.list(assignee="human:bob") == []
    with pytest.raises(LeaseLost):
        q.transition(jid, "in_progress", token=str(job.token), actor="human:bob")
    assert_indexes_consistent(redis_sync, "tasks", TASK)


def test_a_worker_claim_is_not_an_assignment(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("plain", url) as q:
        q.enqueue("t")
        q.backend.run(q.backend.scripts.claim("w1", 1, 30_000, ["t"]))
        assert not redis_sync.keys(q.backend.keys.prefix + "assigned:*")
        assert redis_sync.hget(q.backend.keys.machine, "flow") is None, "a queue without assignments reads none"


@pytest.mark.parametrize(
    "bad",
    [
        Actor("robot", "r2"),
        Actor("human", "a:b"),
        Actor("human", ""),
        Actor("human", "ok", "x" * 201),
        Actor("human", "ok", "bad\x00name"),
        "has space",
        "",
    ],
)
def test_bad_actors_are_refused_and_write_nothing(q: SyncQueue, redis_sync: redis.Redis, bad: object) -> None:
    jid = q.enqueue("t").id
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError):
        q.assign(jid, bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        q.comment(jid, "hi", actor=bad)  # type: ignore[arg-type]
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.parametrize(
    "argv",
    [["0"], ["1", "robot", "x", "n"], ["1", "human", "a:b", "n"], ["1", "human", "x"], ["2", "human", "x", "n"],
     ["1", "human", "x", "n" * 801], ["nan", "human", "x", "n"]],
)  # fmt: skip
def test_a_raw_name_actors_with_bad_arguments_writes_nothing(
    q: SyncQueue, redis_sync: redis.Redis, argv: list[str]
) -> None:
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync)
    source, _ = script_for(redis_sync, load_script("name_actors"))
    k = q.backend.keys
    with pytest.raises(redis.ResponseError, match="RJ_INVALID"):
        redis_sync.eval(source, 2, k.machine, k.events, k.prefix, *argv)
    assert keyspace_fingerprint(redis_sync) == before


def test_naming_twice_changes_nothing_the_second_time(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("t")
    assert q.name_actors(ALICE, PLANNER) == 2
    before = keyspace_fingerprint(redis_sync)
    assert q.name_actors(ALICE) == 0
    assert keyspace_fingerprint(redis_sync) == before
    assert q.name_actors(Actor("human", "alice")) == 1 and "human:alice" not in q.actors(), "an empty name forgets"


@pytest.mark.timeout(60)
def test_cli_assign_ls_and_show_names(q: SyncQueue, url: str, tmp_path: Path) -> None:
    jid = q.enqueue("t").id

    def rjobs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rjobs", *args, "--url", url],
            capture_output=True, text=True, env=cli_env(tmp_path), timeout=30,
        )  # fmt: skip

    out = rjobs("assign", jid, "-q", "tasks", "--to", "human:alice", "--name", "Alice Smith", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "assigned"
    listed = rjobs("ls", "tasks", "--assignee", "human:alice", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [jid]
    shown = rjobs("show", jid, "-q", "tasks")
    assert "Alice Smith (human:alice)" in shown.stdout
    bad = rjobs("assign", jid, "-q", "tasks", "--to", "has space")
    assert bad.returncode == 2
