"""Human and JSON output of the CLI: rich tables, job details, event lines (the live views are in
rjobs.cli.live). Nothing here talks to Redis; the commands and the demo hand it models."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rjobs.models import Asset, Event, Job
from rjobs.statemachine import StateMachine

__all__ = [
    "Output",
    "age",
    "event_line",
    "jobs_table",
    "limits_lines",
    "percent_text",
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


def percent_text(job: Job) -> str:
    """The job's progress as text, e.g. '42%'."""
    return f"{job.progress.percent:.0f}%"


# -- jobs -----------------------------------------------------------------------------------------
def jobs_table(machine: StateMachine, jobs: Sequence[Job], title: str | None = None) -> Table:
    """Jobs as rows: id, type, state, priority, progress, attempts, owner, created, updated."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for name in ("id", "type", "state", "prio", "progress", "attempt", "user", "created", "updated"):
        table.add_column(name, no_wrap=name in ("id", "state"))
    for job in jobs:
        progress = percent_text(job) + (f" {job.progress.step}" if job.progress.step else "")
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
        ("progress", percent_text(job) + (f"  {job.progress.step}" if job.progress.step else "")),
        ("eta", "" if machine.is_final(job.status) else age(job.progress.eta_ms)),
        ("attempt", f"{job.attempt}/{job.max_attempts} (executions {job.executions}, retries {job.retry_count})"),
        ("user", job.user_id or ""),
        ("worker", job.worker or ""),
        ("params", _json_text(job.params)),
        ("result", _json_text(job.result) if job.result is not None else ""),
        ("error", _error_text(job)),
        ("dedupe key", job.dedupe_key or ""),
        ("group", job.group or ""),
        ("trace", job.trace or ""),
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
            s["queue"] + (" (paused)" if s.get("paused") else ""),
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
    if s.get("paused"):
        p = s["paused"]
        when = dt.datetime.fromtimestamp(p["t"] / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        why = f": {p['msg']}" if p["msg"] else ""
        line = f"PAUSED by {p['by']} at {when}{why} (rjobs resume {s['queue']})"
        console.print(line, style="bold yellow", markup=False)
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
    for line in limits_lines(s):
        console.print(line, markup=False)
    lanes = s.get("lanes") or {}
    if lanes:  # ready jobs wait in one lane per job type: a type no live worker runs is marked
        shown = [f"{t} {v['ready']}" + ("" if v["served"] else " (no live worker runs it)") for t, v in lanes.items()]
        console.print("ready by job type: " + ", ".join(shown), markup=False)


def limits_lines(doc: dict[str, Any]) -> list[str]:
    """One line per limit (running count, back-off) and per type with groups (ready per group)."""
    lines = []
    for name, lim in doc.get("limits", {}).items():
        parts = []
        if lim["concurrency"]:
            parts.append(f"running {lim['running']}/{lim['concurrency']}")
        if lim["rate"]:
            parts.append(f"rate {lim['rate']} per {lim['per']:g} s")
        if lim["backoff_until_ms"]:
            parts.append(f"backed off until {lim['backoff_until_ms']} ms")
        lines.append(f"limit {name}: " + ", ".join(parts))
    for t, groups in doc.get("groups", {}).items():
        lines.append(f"groups of {t} (ready, in turn): " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    return lines
