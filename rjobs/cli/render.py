"""Human and JSON output of the CLI: rich tables, progress bars, event lines. Nothing here talks to
Redis; rjobs.cli.main and rjobs.cli.demo hand it models and it prints them."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from rjobs.models import Asset, Event, Job
from rjobs.statemachine import StateMachine

__all__ = [
    "JobBars",
    "JobWatch",
    "Output",
    "age",
    "event_line",
    "jobs_table",
    "show_job",
    "stamp",
    "state_style",
    "stats_table",
    "to_plain",
]

_encoder = msgspec.json.Encoder()


def to_plain(value: Any) -> Any:
    """Models (msgspec Structs) and containers of them -> JSON-ready builtins."""
    return msgspec.to_builtins(value)


class Output:
    """Where the CLI writes: ``out`` (stdout) for results, ``err`` (stderr) for notices and errors.

    Notices go to stderr so that ``ID=$(rjobs enqueue ...)`` and ``--json`` stay machine-readable."""

    def __init__(self, json_mode: bool) -> None:
        self.json = json_mode
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        if not self.out.is_terminal and "COLUMNS" not in os.environ:
            # Piped output has no width; rich's default of 80 would elide ids in tables.
            self.out.width = 160

    def json_doc(self, value: Any) -> None:
        """One JSON document (or one line of a JSON-lines stream), flushed at once for pipes."""
        sys.stdout.write(_encoder.encode(to_plain(value)).decode() + "\n")
        sys.stdout.flush()

    def result(self, doc: Any, human: Callable[[], object]) -> None:
        """``doc`` as JSON with --json, else whatever ``human`` prints."""
        if self.json:
            self.json_doc(doc)
        else:
            human()

    def event(self, machine: StateMachine | None, ev: Event) -> None:
        """One event of a stream: a JSON line, or a line of text, flushed for pipes."""
        if self.json:
            self.json_doc(ev)
        else:
            self.out.print(event_line(machine, ev))
            self.out.file.flush()

    def notice(self, text: str) -> None:
        """A line for people on stderr (markup allowed)."""
        self.err.print(text)

    def error(self, text: str) -> None:
        """An error line on stderr; plain text, never interpreted as markup."""
        self.err.print(Text(f"rjobs: error: {text}", style="bold red"))


# -- small formatters -----------------------------------------------------------------------------
def stamp(ms: int | None, *, with_date: bool = False) -> str:
    """Epoch ms -> local time text ('' for None)."""
    if not ms:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if with_date else moment.strftime("%H:%M:%S.%f")[:-3]


def age(ms: int | None) -> str:
    """A duration in ms -> '850ms', '12.3s', '4m05s', '2h07m' ('' for None)."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def state_style(machine: StateMachine, state: str) -> str:
    """Colour of a state by its role, so any machine (JOB, TASK, custom) reads the same way."""
    if state == machine.success:
        return "green"
    if state == machine.partial:
        return "yellow"
    if state == machine.failure:
        return "red"
    if state == machine.cancelled:
        return "magenta"
    if state in machine.leased:
        return "cyan"
    return "blue"


def _state(machine: StateMachine, state: str | None) -> Text:
    return Text(state or "", style=state_style(machine, state) if state else "")


def _percent(job: Job) -> str:
    return f"{job.progress.percent:.0f}%"


# -- jobs -----------------------------------------------------------------------------------------
def jobs_table(machine: StateMachine, jobs: Sequence[Job], title: str | None = None) -> Table:
    """Jobs as rows: id, type, state, priority, progress, attempts, owner, created, updated."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for name in ("id", "type", "state", "prio", "progress", "attempt", "user", "created", "updated"):
        table.add_column(name, no_wrap=name in ("id", "state"))
    for job in jobs:
        progress = _percent(job) + (f" {job.progress.step}" if job.progress.step else "")
        table.add_row(
            job.id,
            job.type,
            _state(machine, job.status),
            str(job.priority),
            progress,
            f"{job.attempt}/{job.max_attempts}",
            job.user_id or "",
            stamp(job.created_ms, with_date=True),
            stamp(job.updated_ms),
        )
    return table


def _error_text(job: Job) -> str:
    if job.error is None:
        return ""
    text = f"{job.error.code}: {job.error.message}"
    if job.error.retry_after_ms is not None:
        text += f" (retry after {age(job.error.retry_after_ms)})"
    return text


def _json_text(value: Any, limit: int = 400) -> str:
    text = _encoder.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_job(
    console: Console, machine: StateMachine, job: Job, events: Sequence[Event], assets: Sequence[Asset]
) -> None:
    """Print a job's fields, its assets and its full history."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    rows: list[tuple[str, Any]] = [
        ("id", job.id),
        ("queue", job.queue),
        ("type", job.type),
        ("state", _state(machine, job.status)),
        ("priority", str(job.priority)),
        ("progress", _percent(job) + (f"  {job.progress.step}" if job.progress.step else "")),
        ("eta", "" if machine.is_final(job.status) else age(job.progress.eta_ms)),
        ("attempt", f"{job.attempt}/{job.max_attempts} (executions {job.executions}, retries {job.retry_count})"),
        ("user", job.user_id or ""),
        ("worker", job.worker or ""),
        ("params", _json_text(job.params)),
        ("result", _json_text(job.result) if job.result is not None else ""),
        ("error", _error_text(job)),
        ("dedupe key", job.dedupe_key or ""),
        ("depends on", ", ".join(job.depends_on) + (f" ({job.deps_pending} pending)" if job.deps_pending else "")),
        ("created", stamp(job.created_ms, with_date=True)),
        ("scheduled", stamp(job.scheduled_ms, with_date=True)),
        ("started", stamp(job.started_ms, with_date=True)),
        ("completed", stamp(job.completed_ms, with_date=True)),
        ("duration", age(job.duration_ms)),
        ("expires", stamp(job.expire_ms, with_date=True)),
    ]
    for name, value in rows:
        if value not in ("", None):
            fields.add_row(name, value)
    console.print(fields)
    if job.error is not None and job.error.traceback:
        console.print(Text(job.error.traceback.rstrip(), style="dim"))
    if assets:
        table = Table(title="assets", header_style="bold", title_justify="left")
        for name in ("type", "url", "size", "storage path", "added"):
            table.add_column(name)
        for a in assets:
            size = str(a.file_size) if a.file_size is not None else ""
            table.add_row(a.asset_type, a.url, size, a.storage_path or "", stamp(a.created_ms))
        console.print(table)
    console.print(history_table(machine, events, job_column=False))


def history_table(
    machine: StateMachine, events: Iterable[Event], title: str = "history", *, job_column: bool = True
) -> Table:
    """Events as rows: time, (job,) event, from -> to, attempt, actor, message."""
    table = Table(title=title, header_style="bold", title_justify="left")
    for name in ("time", "job", "event", "from → to", "attempt", "actor", "message"):
        if name != "job" or job_column:
            table.add_column(name, no_wrap=name != "message")
    for ev in events:
        move = Text("")
        if ev.to_state:
            move = Text(f"{ev.from_state or '∅'} → ")
            move.append(ev.to_state, style=state_style(machine, ev.to_state))
        message = ev.message or ""
        if ev.event == "progress" and ev.data:
            message = f"{float(ev.data):.0f}% {message}".strip()
        cells: list[Any] = [stamp(ev.ts_ms), ev.job_id] if job_column else [stamp(ev.ts_ms)]
        table.add_row(
            *cells,
            ev.event,
            move,
            "" if ev.attempt is None else str(ev.attempt),
            ev.actor or "",
            message,
        )
    return table


def event_line(machine: StateMachine | None, ev: Event) -> Text:
    """One event as one line of text, for streams (``events --follow``, ``watch`` without a TTY)."""
    line = Text(f"{stamp(ev.ts_ms)}  {ev.job_id}  {ev.event}")
    if ev.to_state:
        line.append(f"  {ev.from_state or '∅'} → ")
        line.append(ev.to_state, style=state_style(machine, ev.to_state) if machine else "")
    if ev.event == "progress" and ev.data:
        line.append(f"  {float(ev.data):.0f}%")
    if ev.message:
        line.append(f"  {ev.message}")
    if ev.attempt is not None:
        line.append(f"  (attempt {ev.attempt})", style="dim")
    if ev.actor:
        line.append(f"  by {ev.actor}", style="dim")
    return line


# -- stats ----------------------------------------------------------------------------------------
def stats_table(machines: dict[str, StateMachine], stats: Sequence[dict[str, Any]]) -> Table:
    """One row per queue: counts per state (non-zero ones), live workers, oldest ready job's age."""
    table = Table(header_style="bold")
    for name in ("queue", "machine", "jobs by state", "total", "workers", "oldest ready"):
        table.add_column(name)
    for s in stats:
        machine = machines[s["queue"]]
        counts = Text()
        for state, n in s["counts"].items():
            if n:
                if counts:
                    counts.append("  ")
                counts.append(f"{state} {n}", style=state_style(machine, state))
        table.add_row(
            s["queue"],
            s["machine"],
            counts if counts else Text("empty", style="dim"),
            str(sum(s["counts"].values())),
            str(len(s["workers"])),
            age(s["oldest_ready_age_ms"]),
        )
    return table


def queue_stats(console: Console, machine: StateMachine, s: dict[str, Any]) -> None:
    """One queue in detail: every state with its count, workers alive, oldest ready age."""
    console.print(f"queue {s['queue']} (machine {s['machine']})", markup=False)
    table = Table(header_style="bold")
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state, n in s["counts"].items():
        table.add_row(_state(machine, state), str(n))
    console.print(table)
    workers = ", ".join(s["workers"]) or "none"
    console.print(f"workers alive (last 30 s): {len(s['workers'])}  {workers}", markup=False)
    oldest = s["oldest_ready_age_ms"]
    console.print(f"oldest ready job waiting: {age(oldest) if oldest is not None else '-'}", markup=False)


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
            self.out.out.print(f"watching {job.type} {job.id}: {job.status} {_percent(job)}", markup=False)

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
