"""``rjobs schedule ls|add|rm QUEUE``: a queue's schedules of periodic jobs (docs/cli.md,
docs/schedules.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec
from rich.table import Table

from rjobs.cli.commands import EXIT, MACHINES, QueueNotFound, connect, open_queue, resolve_url
from rjobs.cli.render import Output, stamp
from rjobs.client.schedules import Cron, Schedule
from rjobs.errors import ValidationError

__all__ = ["add_schedule_parser", "cmd_schedule"]


def add_schedule_parser(
    command: Callable[[str, Callable[[argparse.Namespace, Output], int], str], argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """The ``schedule`` subcommand and its actions (``command`` makes a subcommand's parser)."""
    p = command("schedule", cmd_schedule, "periodic jobs: list, add or remove a queue's schedules")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", parents=[common], help="each schedule with its next and last run")
    ls.add_argument("queue")
    add = actions.add_parser("add", parents=[common], help="add a schedule, or change the one of that name")
    add.add_argument("queue")
    add.add_argument("name", help="the schedule's name (A-Z a-z 0-9 _ . -, at most 100)")
    add.add_argument("type", help="job type of its jobs (the worker's function name)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="a 5-field cron expression, e.g. '0 3 * * *'")
    when.add_argument("--every", type=int, help="seconds between ticks")
    add.add_argument("--tz", default="UTC", help="timezone the cron expression is read in (default UTC)")
    add.add_argument("-p", "--params", help="params of its jobs as JSON")
    add.add_argument("--priority", default="normal", help="low|normal|high|urgent|critical or 1-10")
    add.add_argument("--max-attempts", type=int, default=3, help="attempts before a job fails (default 3)")
    add.add_argument("--missed", choices=("skip", "once"), default="skip", help="ticks missed while no worker ran")
    add.add_argument("--grace", type=int, default=60, help="seconds a tick may be late and still run (default 60)")
    rm = actions.add_parser("rm", parents=[common], help="remove a schedule (its jobs stay)")
    rm.add_argument("queue")
    rm.add_argument("name")


def cmd_schedule(args: argparse.Namespace, out: Output) -> int:
    """Dispatch ``rjobs schedule ACTION``."""
    if args.action == "add":
        spec = _spec(args)  # bad input fails here, before any connection
        q = open_queue(connect(resolve_url(args.url, out)), args.queue, MACHINES["job"])
        outcome = q.set_schedule(spec)
        (s,) = [s for s in q.schedules() if s.name == spec.name]
        doc = {"queue": q.name, "schedule": spec.name, "outcome": outcome, "next_ms": s.next_ms}
        out.result(doc, lambda: out.out.print(f"{outcome} {spec.name}: next run {stamp(s.next_ms, with_date=True)}"))
        return EXIT["ok"]
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    if args.action == "rm":
        if not q.remove_schedule(args.name):
            raise QueueNotFound(f"queue {q.name!r} has no schedule {args.name!r}")
        out.result(
            {"queue": q.name, "schedule": args.name, "removed": True}, lambda: out.out.print(f"removed {args.name}")
        )
        return EXIT["ok"]
    schedules = q.schedules()
    if out.json:
        out.json_doc([msgspec.to_builtins(s) for s in schedules])
    elif schedules:
        out.out.print(_table(schedules))
    else:
        out.notice(f"queue {q.name} has no schedules: `rjobs schedule add {q.name} NAME TYPE --every 60`")
    return EXIT["ok"]


def _spec(args: argparse.Namespace) -> Cron:
    params: Any = None
    if args.params is not None:
        try:
            params = msgspec.json.decode(args.params)
        except msgspec.DecodeError as exc:
            raise ValidationError(f"--params is not valid JSON: {exc}") from None
    priority: str | int = int(args.priority) if args.priority.lstrip("-").isdigit() else args.priority
    return Cron(
        args.name, args.type, cron=args.cron, every=args.every, tz=args.tz, params=params, priority=priority,
        max_attempts=args.max_attempts, missed=args.missed, grace=args.grace,
    )  # fmt: skip


def _table(schedules: list[Schedule]) -> Table:
    table = Table(header_style="bold")
    for col in ("name", "type", "when", "next run", "last run", "last job", "missed"):
        table.add_column(col)
    for s in schedules:
        when = f"{s.cron} ({s.tz})" if s.cron else f"every {s.every} s"
        last = stamp(s.last_ms, with_date=True) or "never"
        table.add_row(s.name, s.type, when, stamp(s.next_ms, with_date=True), last, s.last_job or "", s.missed)
    return table
