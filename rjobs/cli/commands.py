"""The ``rjobs`` subcommands: each ``cmd_<name>(args, out)`` runs one command and returns its
exit code. Server choice: ``--url`` > ``REDIS_URL`` > the default, which for the inspection
commands is the embedded valkey of ``RJOBS_HOME`` (``~/.rjobs``; rjobs.cli.embedded), started on first use;
``rjobs worker`` uses its module's queues' own servers (``url=`` > ``REDIS_URL`` >
localhost:6379) unless ``--url``. Rendering lives in rjobs.cli.render."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from rjobs import errors
from rjobs.cli import embedded
from rjobs.cli import server as servers
from rjobs.cli.live import JobWatch
from rjobs.cli.render import Output, history_table, jobs_table, queue_stats, show_job, stamp, stats_table
from rjobs.cli.roster import QueueWatchers, warn_if_unserved
from rjobs.client.sync_queue import SyncQueue
from rjobs.config import default_actor
from rjobs.errors import JobNotFound, MachineConflict, RjobsError, ValidationError
from rjobs.machines import JOB, TASK
from rjobs.models import Job
from rjobs.statemachine import StateMachine
from rjobs.store import codec
from rjobs.store.clients import sync_client
from rjobs.store.keys import MACHINE_PATTERN, QueueKeys, queue_of_machine_key

__all__ = [
    "ERRORS",
    "EXIT",
    "MACHINES",
    "QueueNotFound",
    "act_on_selected",
    "open_queue",
    "resolve_url",
    "selected_ids",
]

#: Exit codes (docs/cli.md): watch maps the job's final role to ok / failed / partial.
EXIT = {"ok": 0, "failed": 1, "usage": 2, "not_found": 3, "connection": 4, "partial": 5, "refused": 6,
        "interrupted": 130}  # fmt: skip
MACHINES = {"job": JOB, "task": TASK}


class QueueNotFound(RjobsError, LookupError):
    """No state machine is stored for the queue: nothing was ever enqueued to it."""

    code = "not_found"


_USAGE = (
    errors.ValidationError,
    errors.InvalidTransition,
    errors.MachineConflict,
    errors.MachineNotDeclared,
    errors.Unauthorized,
    errors.JobRunning,
)
#: Exit code and words before the message per expected error; anything else is a bug and keeps its
#: traceback. An ACL refusal is 4 like a failed AUTH; refusals that pass (busy, out of memory...) 6.
ERRORS: tuple[tuple[tuple[type[Exception], ...], int, str], ...] = (
    ((errors.JobNotFound, QueueNotFound), EXIT["not_found"], ""),
    ((*_USAGE, errors.DependencyError, errors.JobExists, servers.ServerUnavailable), EXIT["usage"], ""),
    ((errors.PermissionDenied,), EXIT["connection"], ""),
    ((errors.ServerRefused,), EXIT["refused"], ""),
    ((redis.ConnectionError, redis.TimeoutError, servers.ServerStartError), EXIT["connection"], "cannot reach Redis: "),
)


# -- server and queue -----------------------------------------------------------------------------
def resolve_url(explicit: str | None, out: Output) -> str:
    """``--url`` > ``REDIS_URL`` > the embedded server (started if needed, and then announced on stderr)."""
    if explicit:
        return explicit
    if env := os.environ.get("REDIS_URL"):
        return env
    found = embedded.ensure_embedded()
    for line in found.notices():
        out.err.print(f"rjobs: {line}", style="dim", markup=False)
    return found.url


def connect(url: str) -> redis.Redis:
    """A blocking client that fails fast when nothing listens (redis-py's default retries ~4 s)."""
    try:
        return sync_client(url, socket_connect_timeout=5, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
    except ValueError as exc:  # a malformed URL is a usage error, not a connection error
        raise ValidationError(f"bad Redis URL {url!r}: {exc}") from None


def open_queue(
    client: redis.Redis, name: str, create: StateMachine | None = None, *, require: bool = False
) -> SyncQueue:
    """A SyncQueue with the machine stored in Redis, so the CLI works on any queue (JOB, TASK,
    custom); it passes no config, so the queue's stored options are adopted, never overwritten.
    A queue with nothing stored raises QueueNotFound unless ``create`` names the machine to
    declare for it; ``require`` makes an existing queue with another machine than ``create`` an
    error."""
    fields: Any = client.hgetall(QueueKeys(name).machine)
    if fields:
        machine = StateMachine.from_fingerprint(fields[b"fingerprint"])
        if require and create is not None and create.fingerprint() != machine.fingerprint():
            raise MachineConflict(f"queue {name!r} already uses machine {machine.name!r}")
    elif create is not None:
        machine = create
    else:
        raise QueueNotFound(f"queue {name!r} not found (nothing was ever enqueued to it)")
    return SyncQueue(name, machine=machine, client=client, actor=f"cli.{default_actor()}")


def list_queues(client: redis.Redis) -> list[str]:
    """Names of every queue that has a machine stored (SCAN, so safe on a busy server)."""
    keys = client.scan_iter(match=MACHINE_PATTERN, count=1000)
    return sorted({name for k in keys if (name := queue_of_machine_key(k.decode())) is not None})


def final_exit(machine: StateMachine, status: str) -> int:
    """Exit code of a finished job: 0 success, 5 partial, 1 failed or cancelled."""
    return {machine.success: EXIT["ok"], machine.partial: EXIT["partial"]}.get(status, EXIT["failed"])


def _json_arg(text: str, what: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ValidationError(f"{what} is not valid JSON: {exc}") from None


def _priority(text: str) -> str | int:
    return int(text) if text.lstrip("-").isdigit() else text


# -- commands -------------------------------------------------------------------------------------
def cmd_enqueue(args: argparse.Namespace, out: Output) -> int:
    """Create a job; stdout gets its id (or the EnqueueOutcome as JSON)."""
    params = _json_arg(args.params, "--params") if args.params is not None else None
    machine = MACHINES[args.machine or "job"]
    client = connect(resolve_url(args.url, out))
    new = not client.exists(QueueKeys(args.queue).machine)  # warned below when nobody serves it
    q = open_queue(client, args.queue, create=machine, require=args.machine is not None)
    outcome = q.enqueue(
        args.type, params, priority=_priority(args.priority), user_id=args.user, delay=args.delay,
        run_at=_when(args.run_at) if args.run_at else None,
        dedupe_key=args.dedupe_key, dedupe=args.dedupe, max_attempts=args.max_attempts,
        depends_on=args.depends_on or (), group=args.group,
    )  # fmt: skip
    warn_if_unserved(client, args.queue, new, out)
    if out.json:
        out.json_doc(outcome)
        return EXIT["ok"]
    if outcome.outcome == "cached":  # --dedupe reuse: the result, no new job
        out.json_doc(outcome.cached_result)  # one line of JSON on stdout
        out.notice(f"reused the cached result of dedupe key {args.dedupe_key!r} (job {outcome.id or 'purged'})")
        return EXIT["ok"]
    out.out.print(outcome.id, markup=False)
    if not outcome.created:
        out.notice(f"kept the live job {outcome.id} ({outcome.status}) holding dedupe key {args.dedupe_key!r}")
    elif outcome.previous_id and outcome.stale_cancelled:
        out.notice(f"replaced job {outcome.previous_id} (cancelled) holding dedupe key {args.dedupe_key!r}")
    return EXIT["ok"]


def _when(text: str) -> float | dt.datetime:
    """--run-at: epoch seconds, or an ISO 8601 time with its time zone."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"--run-at {text!r}: give ISO 8601 (2030-01-01T09:00:00+00:00) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        raise ValidationError(f"--run-at {text!r}: add a time zone (e.g. +00:00), or the time means nothing")
    return when


def cmd_queues(args: argparse.Namespace, out: Output) -> int:
    """Every queue on the server with its jobs per state (``rjobs stats`` without a queue)."""
    args.queue = None
    return cmd_stats(args, out)


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    """A job's fields, assets and full history."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    job = q.get(args.id)
    events, assets = q.events(args.id), q.assets(args.id)
    doc = {"job": job, "events": events, "assets": assets}
    names = {k: f"{a.name} ({k})" for k, a in q.actors().items()}  # structured actors by their names
    shown = [msgspec.structs.replace(e, actor=names[e.actor]) if e.actor in names else e for e in events]
    out.result(doc, lambda: show_job(out.out, q.machine, job, shown, assets))
    return EXIT["ok"]


def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    """Jobs of a queue, newest first, by state and/or owner."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    jobs = q.list(
        state=args.state, user_id=args.user, limit=args.limit, type=args.type, error_code=args.code,
        assignee=args.assignee,
    )  # fmt: skip
    if out.json:
        out.json_doc(jobs)
    elif jobs:
        out.out.print(jobs_table(q.machine, jobs))
    else:
        out.notice("no jobs")
    return EXIT["ok"]


def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    """Counts per state, live workers and the oldest ready job, for one queue or all of them."""
    client = connect(resolve_url(args.url, out))
    names = [args.queue] if args.queue else list_queues(client)
    queues = [open_queue(client, n) for n in names]
    stats = [q.stats() for q in queues]
    if args.queue:  # its schedules' next and last runs (docs/schedules.md)
        stats[0]["schedules"] = {x.name: {"next_ms": x.next_ms, "last_ms": x.last_ms} for x in queues[0].schedules()}
    if out.json:
        out.json_doc(stats[0] if args.queue else stats)
        return EXIT["ok"]
    if args.queue:
        queue_stats(out.out, queues[0].machine, stats[0])
        for name, run in stats[0]["schedules"].items():
            out.out.print(f"schedule {name}: next run {stamp(run['next_ms'], with_date=True)}", markup=False)
    elif stats:
        out.out.print(stats_table({q.name: q.machine for q in queues}, stats))
    else:
        out.notice("no queues yet: try `rjobs demo` or `rjobs enqueue QUEUE TYPE`")
    for warning in dict.fromkeys(w for s in stats for w in s["warnings"]):  # the server's: once each
        out.out.print(f"warning: {warning}", style="bold yellow", markup=False)
    return EXIT["ok"]


def cmd_events(args: argparse.Namespace, out: Output) -> int:
    """The queue's last events; with --follow, then every new one as it happens (XREAD BLOCK)."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    entries: Any = q.client.xrevrange(q.backend.keys.events, "+", "-", count=args.limit)
    events = codec.events_from_entries(entries[::-1])
    if not args.follow:
        title = f"last {len(events)} events of {q.name}"
        out.result(events, lambda: out.out.print(history_table(q.machine, events, title=title)))
        return EXIT["ok"]
    for ev in events:
        out.event(q.machine, ev)
    after = events[-1].id if events else "0-0"
    # Ctrl-C ends the loop between two reads (within a second): a KeyboardInterrupt raised inside
    # redis-py's socket read could surface as a timeout, and the exit code would then say
    # "cannot reach Redis".
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.is_set():
            for ev in q.queue_events(after, count=100, block_ms=1000):
                out.event(q.machine, ev)
                after = ev.id
    finally:
        signal.signal(signal.SIGINT, previous)
    return EXIT["interrupted"]


def cmd_watch(args: argparse.Namespace, out: Output) -> int:
    """Follow one job on the queue stream (XREAD BLOCK, no polling) until it is final; the job is
    read again whenever it shows up there, and at least once a second."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    stream, job_key = q.backend.keys.events, q.backend.keys.job(args.id)

    def snapshot() -> tuple[str, Job]:
        pipe = q.client.pipeline(transaction=False)
        pipe.xrevrange(stream, "+", "-", count=1)
        pipe.hgetall(job_key)
        last, raw = pipe.execute()
        if not raw:
            raise JobNotFound(args.id)
        return (last[0][0].decode() if last else "0-0"), codec.job_from_hash(raw)

    after, job = snapshot()  # the stream position first: no event between the two is missed
    served = QueueWatchers(q.client, q.name, out)  # says when no worker is alive, and when that changes
    with JobWatch(out, q.machine) as view:
        view.start(job)
        while not q.machine.is_final(job.status):
            served.check()
            reply: Any = q.client.xread({stream: after}, count=1000, block=1000)
            for _, entries in reply or []:
                for ev in codec.events_from_entries(entries):
                    after = ev.id
                    if ev.job_id == args.id:
                        view.event(ev)
            job = snapshot()[1]  # the job may have been purged meanwhile
            view.update(job)
    view.end(job)
    return final_exit(q.machine, job.status)


def selected_ids(q: SyncQueue, args: argparse.Namespace) -> Iterator[list[str]]:
    """The ids ``--state`` (and ``--type``, ``--code``) select, a page at a time (read from the state
    index, filtered in bounded pages: no SCAN); every page is acted on before the next is read (the
    jobs it moved leave the state), and a page with no new id ends it."""
    if args.id is not None or not args.all or not args.state:
        raise ValidationError("give a job id, or --state STATE --all (with --type TYPE, --code CODE to narrow it)")
    seen: set[str] = set()
    while True:
        found = q.list(args.state, limit=1000, type=args.type, error_code=getattr(args, "code", None))
        page = [j.id for j in found if j.id not in seen]
        if not page:
            return
        seen.update(page)
        yield page


def act_on_selected(
    args: argparse.Namespace, out: Output, q: SyncQueue, act: Callable[[list[str]], dict[str, str]]
) -> int:
    """Act on every job :func:`selected_ids` picks; prints how many were done (``--json``: the
    outcome per id), exit 0 when all were, 6 when some were refused."""
    outcomes: dict[str, str] = {}
    for ids in selected_ids(q, args):
        outcomes.update(act(ids))
    done = sum(1 for o in outcomes.values() if o == "done")
    out.result(outcomes, lambda: out.out.print(f"{done} of {len(outcomes)} {args.command} done", markup=False))
    return EXIT["ok"] if done == len(outcomes) else EXIT["refused"]


def cmd_cancel(args: argparse.Namespace, out: Output) -> int:
    """Cancel a job; a running one is stopped by its worker. With --state/--all: every job there."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    if args.id is None or args.all:
        return act_on_selected(args, out, q, lambda ids: q.bulk_cancel(ids, args.reason))
    before = q.get(args.id).status
    job = q.cancel(args.id, args.reason)
    out.result(job, lambda: out.out.print(f"cancelled {job.id} (was {before})", markup=False))
    return EXIT["ok"]


def cmd_retry(args: argparse.Namespace, out: Output) -> int:
    """Send a failed or cancelled job back to the ready state, optionally with new params. With
    --state/--all: every job there (one call each: a retry may be refused per job)."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    if args.id is None or args.all:
        return act_on_selected(args, out, q, q.bulk_retry)
    job = q.retry(args.id, _json_arg(args.params, "--params")) if args.params is not None else q.retry(args.id)
    out.result(job, lambda: out.out.print(f"retried {job.id}: now {job.status} (retry #{job.retry_count})"))
    return EXIT["ok"]


def cmd_worker(args: argparse.Namespace, out: Output) -> int:
    """Run the workers of a ``module:attr`` target (rjobs.cli.worker) on the servers its queues
    name, or on ``--url``; never the embedded server (an idle worker on it would look healthy)."""
    from rjobs.cli.worker import run_from_cli

    url = args.url or None
    return int(
        run_from_cli(
            args.target, url=url, queues=args.queue, concurrency=args.concurrency, burst=args.burst,
            log_level=args.log_level, log_format=args.log_format, processes=args.processes,
            health=(args.health_file, args.health_port, args.health_host), order=(args.order, args.weight),
            metrics=(args.metrics_port, args.metrics_host),
        )
    )  # fmt: skip


def cmd_server(args: argparse.Namespace, out: Output) -> int:
    """Run the home's embedded valkey in the foreground (AOF on) until Ctrl-C/SIGTERM; or --stop
    it, whether it runs in the foreground or was started on demand (rjobs.cli.embedded)."""
    if args.stop:
        home = embedded.rjobs_home()
        stopped = embedded.stop_embedded(home)
        text = "stopped the embedded server" if stopped else f"no embedded server was running for {home}"
        out.result({"stopped": stopped}, lambda: out.notice(text))
        return EXIT["ok"]
    return embedded.serve(embedded.rjobs_home(), args.port, out)


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    """Run the guided demo (rjobs.cli.demo)."""
    from rjobs.cli.demo import run_demo

    return run_demo(resolve_url(args.url, out), out, url_flag=bool(args.url))
