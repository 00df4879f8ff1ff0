"""``rjobs pause`` and ``rjobs resume``: a queue as a whole (docs/cli.md)."""

from __future__ import annotations

import argparse

from rjobs.cli.commands import EXIT, connect, open_queue, resolve_url
from rjobs.cli.render import Output

__all__ = ["cmd_pause", "cmd_resume"]


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
