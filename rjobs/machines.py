"""Built-in state machines."""

from __future__ import annotations

from rjobs.statemachine import StateMachine

__all__ = ["JOB", "TASK"]

#: The JOB machine (queued -> processing -> completed | partial | failed) plus the edges a
#: real queue needs: ``scheduled`` for delays and retry backoff, ``waiting`` for dependencies,
#: ``cancelled``, and processing -> queued for a lost or handed-back lease.
JOB = StateMachine.define(
    "job",
    {
        "waiting": ("queued", "cancelled", "failed"),
        "scheduled": ("queued", "cancelled"),
        "queued": ("processing", "scheduled", "cancelled"),
        "processing": ("completed", "partial", "failed", "queued", "scheduled", "cancelled"),
        "completed": (),
        "partial": (),
        "failed": (),
        "cancelled": (),
    },
    initial="queued",
    ready="queued",
    leased=("processing",),
    delayed="scheduled",
    waiting="waiting",
    success="completed",
    partial="partial",
    failure="failed",
    cancelled="cancelled",
)

#: The TASK lifecycle, exactly its transition table. A claim walks queued -> assigned ->
#: in_progress in one script; ``pending`` holds a task created but not yet queued.
TASK = StateMachine.define(
    "task",
    {
        "pending": ("queued", "scheduled", "cancelled"),
        "scheduled": ("queued", "cancelled"),
        "queued": ("assigned", "blocked", "cancelled"),
        "assigned": ("in_progress", "queued", "cancelled"),
        "in_progress": ("completed", "failed", "review", "cancelled"),
        "blocked": ("queued", "cancelled"),
        "review": ("completed", "in_progress", "cancelled"),
        "completed": (),
        "failed": (),
        "cancelled": (),
    },
    initial="pending",
    ready="queued",
    leased=("assigned", "in_progress"),
    delayed="scheduled",
    waiting="blocked",
    review="review",
    success="completed",
    failure="failed",
    cancelled="cancelled",
)
