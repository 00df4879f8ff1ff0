"""StateMachine validation, presets and storage form (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from rjobs import machines
from rjobs.errors import MachineError
from rjobs.statemachine import StateMachine

BASE: dict[str, Any] = {
    "edges": {"ready": ("run",), "run": ("ok", "bad", "gone"), "ok": (), "bad": (), "gone": ()},
    "initial": "ready",
    "ready": "ready",
    "leased": ("run",),
    "success": "ok",
    "failure": "bad",
    "cancelled": "gone",
}


def define(**changes: Any) -> StateMachine:
    spec = {**BASE, **changes}
    return StateMachine.define("m", spec.pop("edges"), **spec)


def test_minimal_machine_is_valid() -> None:
    m = define()
    assert m.final_states() == ("ok", "bad", "gone")
    assert m.is_final("ok") and not m.is_final("run")
    assert m.allows("ready", "run") and not m.allows("run", "ready")


def test_the_job_machine() -> None:
    m = machines.JOB
    assert m.allows("queued", "processing")
    for final in ("completed", "partial", "failed"):
        assert m.allows("processing", final)
        assert m.is_final(final)
    assert m.allows("processing", "queued"), "a lost lease goes back to the queue"
    assert m.allows("processing", "scheduled"), "retry backoff"


def test_the_task_lifecycle_is_exactly_its_table() -> None:
    expected = {
        "pending": {"queued", "scheduled", "cancelled"},
        "scheduled": {"queued", "cancelled"},
        "queued": {"assigned", "blocked", "cancelled"},
        "assigned": {"in_progress", "queued", "cancelled"},
        "in_progress": {"completed", "failed", "review", "cancelled"},
        "blocked": {"queued", "cancelled"},
        "review": {"completed", "in_progress", "cancelled"},
        "completed": set(),
        "failed": set(),
        "cancelled": set(),
    }
    assert {s: set(t) for s, t in machines.TASK.edges.items()} == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"edges": {**BASE["edges"], "run": ("ok", "bad", "gone", "nowhere")}}, "not a declared state"),
        ({"ready": "missing"}, "unknown state"),
        ({"edges": {**BASE["edges"], "ok": ("ready",)}}, "must be terminal"),
        ({"edges": {**BASE["edges"], "limbo": ()}}, "has no final role"),
        ({"edges": {**BASE["edges"], "loop": ("loop",)}}, "never reach a final state"),
        ({"leased": ()}, "at least one leased state"),
        ({"edges": {**BASE["edges"], "ready": ("ok",)}}, "claims need the edge"),
        ({"edges": {**BASE["edges"], "run": ("ok",)}}, "expired lease"),
        ({"success": "bad"}, "distinct"),
        ({"edges": {"bad state": ()}}, "state name"),
    ],
)
def test_invalid_machines_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MachineError, match=message):
        define(**changes)


def test_storage_form_is_flat_and_round_trips() -> None:
    fields = machines.TASK.to_redis()
    assert fields["next:queued"] == "assigned,blocked,cancelled"
    assert fields["role:leased"] == "assigned,in_progress"
    assert fields["next:completed"] == ""
    assert StateMachine.from_fingerprint(fields["fingerprint"]) == machines.TASK
