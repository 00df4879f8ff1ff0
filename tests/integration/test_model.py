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

from rjobs import InvalidTransition, LeaseLost, LeaseRequired, SyncQueue, ValidationError, machines
from rjobs.statemachine import StateMachine
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
        if hold and self.machine.initial == self.machine.ready:
            with pytest.raises(ValidationError):  # nothing to hold a job in
                self.q.enqueue("t", {"n": 1}, priority=priority, hold=hold)
            return
        out = self.q.enqueue("t", {"n": 1}, priority=priority, hold=hold)
        state = self.machine.initial if hold else self.machine.ready
        assert out.status == state
        self.jobs[out.id] = {
            "state": state,
            "seq": next(self.order),
            "token": None,
            "old_tokens": [],
            "priority": self.q.get(out.id).priority,
        }

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(n=st.integers(1, 4))
    def claim(self, n: int) -> None:
        ready = sorted(
            (j for j, v in self.jobs.items() if v["state"] == self.machine.ready),
            key=lambda j: (-int(self.jobs[j]["priority"]), int(self.jobs[j]["seq"])),
        )  # type: ignore[call-overload]
        got = self.q.backend.run(self.q.backend.scripts.claim("w", n, 60_000)).jobs
        assert [j.id for j in got] == ready[:n], "claims follow priority, then FIFO"
        for j in got:
            v = self.jobs[j.id]
            assert j.token not in v["old_tokens"] and j.token != v["token"]  # type: ignore[operator]
            if v["token"] is not None:
                v["old_tokens"].append(v["token"])  # type: ignore[attr-defined]
            v.update(state=self.machine.leased[-1], token=j.token)

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(data=st.data())
    def transition(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        target = data.draw(st.sampled_from(self.machine.states))
        v = self.jobs[job_id]
        current = str(v["state"])
        leased = self.machine.leased
        how = data.draw(st.sampled_from(["token", "operator", "none"])) if current in leased else "none"
        kwargs: dict[str, object] = {"delay": 3600 if target == self.machine.delayed else None}
        if how == "token":
            kwargs["token"] = v["token"]
        elif how == "operator":
            kwargs["operator"] = True
        if how == "none" and current in leased:
            with pytest.raises(LeaseRequired):  # a leased job moves only with its token or as an operator
                self.q.transition(job_id, target, **kwargs)  # type: ignore[arg-type]
        elif self.machine.allows(current, target):
            job = self.q.transition(job_id, target, **kwargs)  # type: ignore[arg-type]
            assert job.status == target
            v["state"] = target
            if target in leased and current not in leased:  # a new lease: a token never issued before
                assert str(job.token) not in v["old_tokens"] and str(job.token) != v["token"]
                if v["token"] is not None:
                    v["old_tokens"].append(v["token"])  # type: ignore[attr-defined]
                v["token"] = str(job.token)
        else:
            with pytest.raises(InvalidTransition):
                self.q.transition(job_id, target, **kwargs)  # type: ignore[arg-type]

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(data=st.data())
    def finish_with_token(self, data: st.DataObject) -> None:
        held = sorted(j for j, v in self.jobs.items() if v["token"] is not None)
        if not held:
            return
        job_id = data.draw(st.sampled_from(held))
        v = self.jobs[job_id]
        current = str(v["state"])
        stale = v["old_tokens"] and data.draw(st.booleans())
        if stale:
            token = data.draw(st.sampled_from(v["old_tokens"]))  # type: ignore[arg-type]
            with pytest.raises(LeaseLost):  # a lease that ended never writes again
                self.q.complete(job_id, {"ok": True}, token=str(token))
        elif current in self.machine.leased and self.machine.allows(current, self.machine.success):
            self.q.complete(job_id, {"ok": True}, token=str(v["token"]))
            v["state"] = self.machine.success
        elif current in self.machine.leased:
            with pytest.raises(InvalidTransition):
                self.q.complete(job_id, {"ok": True}, token=str(v["token"]))
        elif current != self.machine.success:
            with pytest.raises(LeaseLost):
                self.q.complete(job_id, {"ok": True}, token=str(v["token"]))

    @precondition(lambda self: bool(getattr(self, "jobs", None)))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        current = self.jobs[job_id]["state"]
        if current in (self.machine.failure, self.machine.cancelled):
            assert self.q.retry(job_id).status == self.machine.ready
            self.jobs[job_id]["state"] = self.machine.ready
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
