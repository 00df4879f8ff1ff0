"""The ``rjobs`` command: the argument parser and the dispatch to rjobs.cli.commands, with one
exit code and one line per expected error. Reference: docs/cli.md."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import redis

from rjobs import errors
from rjobs.about import VERSION
from rjobs.cli.cleanup import cmd_delete, cmd_drain, cmd_obliterate
from rjobs.cli.commands import (
    ERRORS,
    EXIT,
    MACHINES,
    cmd_cancel,
    cmd_demo,
    cmd_enqueue,
    cmd_events,
    cmd_ls,
    cmd_queues,
    cmd_retry,
    cmd_server,
    cmd_show,
    cmd_stats,
    cmd_watch,
    cmd_worker,
)
from rjobs.cli.control import cmd_assign, cmd_pause, cmd_resume
from rjobs.cli.dashboard import add_dashboard_parser
from rjobs.cli.fleet import cmd_workers
from rjobs.cli.limits import cmd_limit
from rjobs.cli.render import Output
from rjobs.cli.schedules import add_schedule_parser

__all__ = ["build_parser", "main"]


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option given before the subcommand is not overwritten by the subcommand's default.
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="Redis URL (default: $REDIS_URL, else embedded; worker: its queues' own)",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="output JSON for scripts")
    parser = argparse.ArgumentParser(prog="rjobs", description="Redis-native job queue: inspect and drive queues.")
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"rjobs {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace, Output], int], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(func=func)
        return p

    def job_ref(p: argparse.ArgumentParser) -> None:
        p.add_argument("id", help="job id")
        p.add_argument("-q", "--queue", required=True, help="the job's queue (ids are per queue)")

    p = command("enqueue", cmd_enqueue, "create a job; prints its id")
    p.add_argument("queue")
    p.add_argument("type", help="job type (the worker's function name)")
    p.add_argument("-p", "--params", help="params as JSON, e.g. '{\"w\": 100}'")
    p.add_argument("--priority", default="normal", help="low|normal|high|urgent|critical or 1-10 (default normal)")
    p.add_argument("--delay", type=float, help="seconds to wait before the job may run")
    p.add_argument("--run-at", help="when the job may run: ISO 8601 with a time zone, or epoch seconds")
    p.add_argument("-u", "--user", help="owner user id")
    p.add_argument("--dedupe-key", help="at most one live job per key")
    p.add_argument(
        "--dedupe", choices=("keep", "replace", "reuse"), default="keep",
        help="keep the live duplicate, replace it, or reuse the key's fresh cached result (prints it)",
    )  # fmt: skip
    p.add_argument("--max-attempts", type=int, default=3, help="attempts before the job fails (default 3)")
    p.add_argument("--depends-on", nargs="+", action="extend", metavar="ID", help="run after these jobs succeed")
    p.add_argument("--group", help="concurrency / rate-limit group (see rjobs limit)")
    p.add_argument("--machine", choices=sorted(MACHINES), help="machine of a new queue (default job)")

    job_ref(command("show", cmd_show, "a job's fields, assets and full history"))

    p = command("ls", cmd_ls, "list jobs, newest first")
    p.add_argument("queue")
    p.add_argument("-s", "--state", help="only jobs in this state")
    p.add_argument("-u", "--user", help="only jobs of this owner")
    p.add_argument("-n", "--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("-t", "--type", help="only jobs of this type (with --state or --user)")
    p.add_argument("--code", help="only jobs whose error has this code (with --state or --user)")
    p.add_argument("--assignee", help="only the jobs this actor holds now (rjobs assign)")

    p = command("stats", cmd_stats, "jobs per state, live workers, oldest waiting job (all queues by default)")
    p.add_argument("queue", nargs="?")

    command("queues", cmd_queues, "every queue on the server, with its jobs per state")

    p = command("workers", cmd_workers, "live workers: host, pid, queues, jobs in flight (all queues by default)")
    p.add_argument("-q", "--queue", action="append", help="only workers of these queues (repeatable)")

    p = command("pause", cmd_pause, "stop workers claiming from a queue (running jobs finish)")
    p.add_argument("queue")
    p.add_argument("--reason", default="", help="why, for whoever looks (stats show it)")

    p = command("resume", cmd_resume, "let workers claim from a paused queue again")
    p.add_argument("queue")

    p = command("assign", cmd_assign, "lease a ready job to a person or agent, who starts and finishes it")
    job_ref(p)
    p.add_argument("--to", required=True, help="the assignee: an actor (e.g. human:alice)")
    p.add_argument("--name", default="", help="the assignee's display name (kept in the actor directory)")
    p.add_argument("--by", help="who assigns (default: this client)")
    p.add_argument("--lease", type=float, default=3600.0, help="seconds the assignee holds it (default 3600)")

    p = command("limit", cmd_limit, "limit a job type or group: running jobs and claims per window")
    p.add_argument("action", choices=["set", "rm", "ls", "backoff"])
    p.add_argument("queue")
    p.add_argument("--type", help="the job type to limit")
    p.add_argument("--group", help="the group to limit (given at enqueue)")
    p.add_argument("--concurrency", type=int, help="at most this many of its jobs running")
    p.add_argument("--rate", type=int, help="at most this many claims per window (with --per)")
    p.add_argument("--per", type=float, help="the rate's window, seconds")
    p.add_argument("--seconds", type=float, help="backoff: claim none of it for this long")

    add_schedule_parser(command, common)

    p = command("events", cmd_events, "the queue's event stream")
    p.add_argument("queue")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events (JSON lines with --json)")
    p.add_argument("-n", "--limit", type=int, default=20, help="past events to show first (default 20)")

    job_ref(command("watch", cmd_watch, "live progress until the job ends (exit 0 ok, 1 failed/cancelled, 5 partial)"))

    def many(p: argparse.ArgumentParser, verb: str) -> None:
        p.add_argument("id", nargs="?", help=f"job id (or --state STATE --all to {verb} many)")
        p.add_argument("-q", "--queue", required=True, help="the job's queue (ids are per queue)")
        p.add_argument("-s", "--state", help=f"with --all: {verb} every job in this state")
        p.add_argument("-t", "--type", help="with --all: only jobs of this type")
        p.add_argument("--code", help="with --all: only jobs whose error has this code (e.g. failed ones)")
        p.add_argument("--all", action="store_true", help=f"{verb} every job --state (and --type) selects")

    p = command("cancel", cmd_cancel, "cancel a job, or every job in a state (a running one is stopped)")
    many(p, "cancel")
    p.add_argument("-r", "--reason", default="", help="why, recorded in the history")

    p = command("retry", cmd_retry, "send a failed or cancelled job (or all of a state) back to the queue")
    many(p, "retry")
    p.add_argument("-p", "--params", help="new params as JSON")

    p = command("delete", cmd_delete, "delete a job (or all of a state) with its history, assets and index entries")
    many(p, "delete")
    p.add_argument("--force", action="store_true", help="delete running jobs too (their workers find them gone)")
    p.add_argument("-u", "--user", help="only if the job belongs to this user (else exit 2, nothing deleted)")
    p.add_argument(
        "--dependents", choices=("refuse", "fail", "cancel", "delete"), default="refuse",
        help="what happens to jobs waiting for a deleted one (default: refuse the delete)",
    )  # fmt: skip

    p = command("drain", cmd_drain, "delete every job waiting to run (running and finished ones stay)")
    p.add_argument("queue")

    p = command("obliterate", cmd_obliterate, "delete a whole queue: its jobs, indexes, stream and machine")
    p.add_argument("queue")
    p.add_argument("--yes", action="store_true", help="yes, delete it all")
    p.add_argument("--force", action="store_true", help="even while jobs are running")

    p = command("worker", cmd_worker, "run workers: rjobs worker myapp.jobs:worker")
    p.add_argument("target", help="module:attr of a Worker (or a factory returning one)")
    p.add_argument("-q", "--queue", action="append", help="only these queues (repeatable)")
    p.add_argument("-c", "--concurrency", type=int, help="jobs at a time")
    p.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    p.add_argument("--processes", type=int, default=1, help="run N worker processes (prefork; default 1)")
    p.add_argument("--order", choices=("strict", "weighted"), help="between queues: strict (in order) or weighted")
    p.add_argument("--weight", action="append", metavar="QUEUE=W", help="a queue's weight (repeatable; weighted)")
    p.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="INFO: a line per job that succeeded, failed or is retried; DEBUG: and when each starts",
    )  # fmt: skip
    p.add_argument("--log-format", default="text", choices=("text", "json"), help="json: one object per line")
    p.add_argument("--health-file", metavar="PATH", help="touch PATH after every good heartbeat (for liveness probes)")
    p.add_argument("--health-port", type=int, metavar="PORT", help="serve GET /health: 200 while heartbeats are fresh")
    p.add_argument("--health-host", metavar="HOST", help="address --health-port listens on (default 127.0.0.1)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics (N processes: PORT+i-1)")
    p.add_argument("--metrics-host", metavar="HOST", help="address --metrics-port listens on (default 0.0.0.0)")

    p = command("server", cmd_server, "run the embedded valkey in the foreground (AOF on, data in $RJOBS_HOME/data)")
    p.add_argument("--port", type=int, help="TCP port (default: $RJOBS_SERVER_PORT, else its last one, else 6390)")
    p.add_argument("--stop", action="store_true", help="stop the embedded server, foreground or started on demand")

    add_dashboard_parser(command)

    command("demo", cmd_demo, "a guided tour: runs demo jobs on a fresh queue with live progress")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rjobs`` script; returns the exit code (see docs/cli.md)."""
    args = build_parser().parse_args(argv)
    out = Output(bool(args.json))
    try:
        return int(args.func(args, out))
    except KeyboardInterrupt:
        return EXIT["interrupted"]
    except Exception as exc:
        # the CLI's own redis-py reads (not through a queue) get the same typed refusals
        typed = errors.server_refusal(exc) if isinstance(exc, (redis.ResponseError, redis.BusyLoadingError)) else None
        found = next(((code, words) for kinds, code, words in ERRORS if isinstance(typed or exc, kinds)), None)
        if found is None:
            raise
        out.error(found[1] + str(typed or exc))
        return found[0]


if __name__ == "__main__":
    sys.exit(main())
