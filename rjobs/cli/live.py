"""The CLI's live views: progress bars per job (:class:`JobBars`, used by ``rjobs watch`` and the
demo) fed with job snapshots and events. Nothing here talks to Redis."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from rjobs.cli.render import Output, age, percent_text, state_style
from rjobs.models import Event, Job
from rjobs.statemachine import StateMachine

__all__ = ["EtaColumn", "JobBars", "JobWatch"]


# -- live progress bars ---------------------------------------------------------------------------
class EtaColumn(ProgressColumn):
    """Time left as the server estimated it at the last progress update, counted down locally."""

    def render(self, task: Task) -> Text:
        """'eta 3.2s' while running, '' when unknown or finished."""
        eta_at = task.fields.get("eta_at")
        if eta_at is None or task.finished:
            return Text("")
        return Text(f"eta {age(max(0, int((eta_at - time.monotonic()) * 1000)))}", style="cyan")


class JobBars:
    """A rich Progress with one bar per job, fed with job snapshots and events.

    Each bar shows type and id, the bar, percent, state (coloured by role), the named step and
    the server's ETA. Works in a terminal (live) and without one (rich prints the final frame)."""

    def __init__(self, console: Console, machine: StateMachine) -> None:
        self.machine = machine
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=28),
            TaskProgressColumn(),
            TextColumn("{task.fields[state]}"),
            TextColumn("{task.fields[step]}", style="dim"),
            EtaColumn(),
            console=console,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> JobBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.refresh()
        self.progress.stop()

    def _styled(self, state: str) -> str:
        return f"[{state_style(self.machine, state)}]{state}[/]"

    def track(self, job: Job, label: str | None = None) -> None:
        """Add (or refresh) the bar of ``job`` from a full snapshot."""
        eta = job.progress.eta_ms
        fields: dict[str, Any] = {
            "state": self._styled(job.status),
            "step": job.progress.step or "",
            "eta_at": None if eta is None or self.machine.is_final(job.status) else time.monotonic() + eta / 1000,
        }
        if job.id not in self._tasks:
            self._tasks[job.id] = self.progress.add_task(label or f"{job.type} {job.id}", total=100, **fields)
        task = self._tasks[job.id]
        done = 100.0 if job.status in (self.machine.success, self.machine.partial) else job.progress.percent
        self.progress.update(task, completed=done, **fields)


class JobWatch:
    """How ``rjobs watch`` shows one job: a live bar in a terminal, one line per event without
    one, JSON lines (``{"event": ...}`` then ``{"job": ...}``) with --json."""

    def __init__(self, out: Output, machine: StateMachine) -> None:
        self.out, self.machine = out, machine
        self.bars = JobBars(out.out, machine) if out.out.is_terminal and not out.json else None

    def __enter__(self) -> JobWatch:
        if self.bars:
            self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars:
            self.bars.__exit__(*exc)

    def start(self, job: Job) -> None:
        """The job as the watch begins."""
        if self.bars:
            self.bars.track(job)
        elif not self.out.json:
            self.out.out.print(f"watching {job.type} {job.id}: {job.status} {percent_text(job)}", markup=False)

    def event(self, ev: Event) -> None:
        """A new event of the job (from the queue stream)."""
        if self.out.json:
            self.out.json_doc({"event": ev})
        elif not self.bars:
            self.out.event(self.machine, ev)

    def update(self, job: Job) -> None:
        """A fresh snapshot of the job (after events, or a quiet spell)."""
        if self.bars:
            self.bars.track(job)

    def end(self, job: Job) -> None:
        """The job reached a final state."""
        if self.out.json:
            self.out.json_doc({"job": job})
            return
        extra = f": {job.error.code}: {job.error.message}" if job.error else ""
        self.out.out.print(f"{job.id} ended {job.status} after {job.attempt} attempt(s){extra}", markup=False)
