"""``rjobs pause`` and ``rjobs resume``: a queue as a whole (docs/cli.md)."""

from __future__ import annotations

import argparse

from rjobs.cli.commands import EXIT, connect, open_queue, resolve_url
from rjobs.cli.render import Output
from rjobs.errors import ValidationError
from rjobs.models import ACTOR_TYPES, Actor

__all__ = ["cmd_assign", "cmd_pause", "cmd_resume"]


def cmd_pause(args: argparse.Namespace, out: Output) -> int:
    """Stop workers claiming from the queue; running jobs finish. Pausing a paused queue keeps the
    first pause (who, when, why) and says so."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    changed = q.pause(args.reason)
    info = q.paused()
    by, reason = (info["by"], info["msg"]) if info else (None, None)
    doc = {"queue": q.name, "paused": True, "changed": changed, "by": by, "reason": reason}
    text = f"paused {q.name}" if changed else f"{q.name} was already paused (by {by})"
    out.result(doc, lambda: out.out.print(text + ": workers claim no job until `rjobs resume`", markup=False))
    return EXIT["ok"]


def cmd_resume(args: argparse.Namespace, out: Output) -> int:
    """Let workers claim from the queue again (idle ones wake at once)."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    changed = q.resume()
    text = f"resumed {q.name}" if changed else f"{q.name} was not paused"
    out.result({"queue": q.name, "paused": False, "changed": changed}, lambda: out.out.print(text, markup=False))
    return EXIT["ok"]


def _actor(text: str, name: str = "") -> str | Actor:
    """An actor given on the command line: ``type:id`` with a name becomes a structured Actor."""
    kind, _, ident = text.partition(":")
    if name and kind in ACTOR_TYPES and ident:
        return Actor(kind, ident, name)
    if name:
        raise ValidationError("--name needs --to as type:id with type agent, human or worker")
    return text


def cmd_assign(args: argparse.Namespace, out: Output) -> int:
    """Lease a ready job to an assignee, who then starts and finishes it with the lease token."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    job = q.assign(args.id, _actor(args.to, args.name), lease=args.lease, by=args.by)
    text = f"assigned {job.id} to {args.to} ({job.status}, token {job.token}, lease {args.lease:g} s)"
    out.result(job, lambda: out.out.print(text, markup=False))
    return EXIT["ok"]
