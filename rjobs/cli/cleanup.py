"""``rjobs delete``, ``rjobs drain`` and ``rjobs obliterate``: removing jobs, one, a selection,
the waiting ones, or a whole queue (docs/cli.md)."""

from __future__ import annotations

import argparse

from rjobs.cli.commands import EXIT, act_on_selected, connect, open_queue, resolve_url
from rjobs.cli.render import Output
from rjobs.errors import ValidationError

__all__ = ["cmd_delete", "cmd_drain", "cmd_obliterate"]


def cmd_delete(args: argparse.Namespace, out: Output) -> int:
    """Delete a job with everything it owns; with --state/--all (--type, --code): every job there.
    A running job needs --force; a job others wait for needs --dependents."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    how = {"force": args.force, "dependents": args.dependents, "user_id": args.user}
    if args.id is None or args.all:
        return act_on_selected(args, out, q, lambda ids: q.bulk_delete(ids, **how))
    n = q.delete(args.id, **how)
    more = f" and {n - 1} job(s) waiting for it" if n > 1 else ""
    out.result({"id": args.id, "deleted": n}, lambda: out.out.print(f"deleted {args.id}{more}", markup=False))
    return EXIT["ok"]


def cmd_drain(args: argparse.Namespace, out: Output) -> int:
    """Delete every job of the queue that waits to run; running and finished jobs stay."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    n = q.drain()
    text = f"drained {q.name}: {n} waiting job(s) deleted"
    out.result({"queue": q.name, "deleted": n}, lambda: out.out.print(text, markup=False))
    return EXIT["ok"]


def cmd_obliterate(args: argparse.Namespace, out: Output) -> int:
    """Delete the whole queue (jobs, indexes, stream, machine); asks for --yes, and --force while
    jobs are running."""
    if not args.yes:
        raise ValidationError(f"obliterate deletes every job of {args.queue!r} and the queue itself: add --yes")
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    n = q.obliterate(force=args.force)
    text = f"obliterated {q.name}: {n} job(s) deleted, and the queue"
    out.result({"queue": q.name, "deleted": n}, lambda: out.out.print(text, markup=False))
    return EXIT["ok"]
