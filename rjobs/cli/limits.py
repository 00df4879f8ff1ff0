"""``rjobs limit set|rm|ls|backoff``: limits on a job type or a group (docs/cli.md)."""

from __future__ import annotations

import argparse

from rjobs.cli.commands import EXIT, connect, open_queue, resolve_url
from rjobs.cli.render import Output, limits_lines
from rjobs.errors import ValidationError

__all__ = ["cmd_limit"]


def cmd_limit(args: argparse.Namespace, out: Output) -> int:
    """Set, remove, list limits, or push a limited type or group back."""
    q = open_queue(connect(resolve_url(args.url, out)), args.queue)
    if args.action == "ls":
        doc = q.limits()

        def human() -> None:
            for line in limits_lines(doc) or ["no limits"]:
                out.out.print(line, markup=False)

        out.result(doc, human)
        return EXIT["ok"]
    which = {"type": args.type, "group": args.group}
    if args.action == "set":
        previous = q.set_limit(**which, concurrency=args.concurrency, rate=args.rate, per=args.per)
    elif args.action == "rm":
        previous = q.clear_limit(**which)
    else:
        if args.seconds is None:
            raise ValidationError("backoff needs --seconds")
        until = q.backoff(args.seconds, **which)
        out.result({"until_ms": until}, lambda: out.out.print(f"backed off until {until} (server ms)"))
        return EXIT["ok"]
    out.result({"previous": previous}, lambda: out.out.print(f"{args.action} done (was: {previous or 'none'})"))
    return EXIT["ok"]
