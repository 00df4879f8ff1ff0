"""Hypothesis drives random operations against a real server and a small Python model of the
queue's state machine; after every step, Redis agrees with the model and every index is
consistent."""

from __future__ import annotations

import itertools
from typing import ClassVar

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from rjobs import InvalidTransition, SyncQueue, machines
from rjobs.machine import StateMachine
from tests.invariants import assert_indexes_consistent

_names = itertools.count()


class QueueModel(RuleBasedStateMachine):
    """The model: job id -> (state, priority, creation order, lease token)."""

    url: ClassVar[str]
    machine: ClassVar[StateMachine]

    @initialize()
    def setup(self) -> None:
        self.name = f"model{next(_names)}"
        self.q = SyncQueue(self.name, self.url, machine=self.machine, actor="model")
        self.r = redis.Redis.from_url(self.url)
        self.jobs: dict[str, dict[str, object]] = {}
        self.order = itertools.count()

    def teardown(self) -> None:
        if hasattr(self, "q"):
            self.q.close()
            self.r.close()

    @rule(priority=st.sampled_from(["low", "normal", "high", 3, 10]), hold=st.booleans())
    def enqueue(self, priority: str | int, hold: bool) -> None:
        out = self.q.enqueue("t", {"n": 1}, priority=priority, hold=hold)
        state = self.machine.initial if hold else self.machine.ready
        assert out.status == state
        self.jobs[out.id] = {
            "state": state,
            "seq": next(self.order),
            "token": None,
            "priority": self.q.get(out.id).priority,
        }

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(n=st.integers(1, 4))
    def claim(self, n: int) -> None:
        ready = sorted(
            (j for j, v in self.jobs.items() if v["state"] == self.machine.ready),
            key=lambda j: (-int(self.jobs[j]["priority"]), int(self.jobs[j]["seq"])),
        )  # type: ignore[call-overload]
        got = self.q.runner.run(self.q.scripts.claim("w", n, 60_000)).jobs
        assert [j.id for j in got] == ready[:n], "claims follow priority, then FIFO"
        for j in got:
            self.jobs[j.id].update(state=self.machine.leased[-1], token=j.token)

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(data=st.data())
    def transition(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        target = data.draw(st.sampled_from(self.machine.states))
        current = str(self.jobs[job_id]["state"])
        delay = 3600 if target == self.machine.delayed else None
        if self.machine.allows(current, target):
            assert self.q.transition(job_id, target, delay=delay).status == target
            self.jobs[job_id]["state"] = target
        else:
            with pytest.raises(InvalidTransition):
                self.q.transition(job_id, target, delay=delay)

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(data=st.data())
    def finish_with_token(self, data: st.DataObject) -> None:
        held = sorted(j for j, v in self.jobs.items() if v["token"] is not None)
        if not held:
            return
        job_id = data.draw(st.sampled_from(held))
        current = str(self.jobs[job_id]["state"])
        if current in self.machine.leased:
            self.q.complete(job_id, {"ok": True}, token=str(self.jobs[job_id]["token"]))
            self.jobs[job_id]["state"] = self.machine.success
        elif current != self.machine.success:
            with pytest.raises(Exception):  # noqa: B017 - LeaseLost or InvalidTransition, both reject
                self.q.complete(job_id, {"ok": True}, token=str(self.jobs[job_id]["token"]))

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        current = self.jobs[job_id]["state"]
        if current in (self.machine.failure, self.machine.cancelled):
            assert self.q.retry(job_id).status == self.machine.ready
            self.jobs[job_id].update(state=self.machine.ready, token=None)
        else:
            with pytest.raises(InvalidTransition):
                self.q.retry(job_id)

    @invariant()
    def redis_agrees(self) -> None:
        if not hasattr(self, "q"):
            return
        for job_id, v in self.jobs.items():
            assert self.q.get(job_id).status == v["state"]
            history = self.q.events(job_id)  # every entry decodes (no 'false' from a missing field)
            assert history[-1].to_state in (v["state"], None)
        counts = assert_indexes_consistent(self.r, self.name, self.machine)
        expected = {s: sum(1 for v in self.jobs.values() if v["state"] == s) for s in self.machine.states}
        assert counts == expected == self.q.counts()


@pytest.mark.parametrize("machine", [machines.JOB, machines.TASK], ids=["job", "task"])
def test_queue_agrees_with_model(url: str, machine: StateMachine) -> None:
    QueueModel.url = url
    QueueModel.machine = machine
    run_state_machine_as_test(
        QueueModel,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
