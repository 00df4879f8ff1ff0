"""``rjobs dashboard``: the web dashboard (rjobs.dashboard) for the queues named with ``-q``, on
127.0.0.1:8765 by default. Off loopback it refuses to start without a token or basic auth; a
missing extra or a bad flag is one line and exit 2. Reference: docs/dashboard.md."""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable

from rjobs.cli.commands import EXIT, resolve_url
from rjobs.cli.render import Output
from rjobs.dashboard.options import DEFAULT_HOST, DEFAULT_PORT, DashboardOptions, parse_basic_auth
from rjobs.errors import ValidationError

__all__ = ["EXTRA", "add_dashboard_parser", "cmd_dashboard", "dashboard_options"]

#: What the dashboard needs beyond rjobs itself: the ``dashboard`` extra.
EXTRA = ("starlette", "uvicorn", "jinja2")


def add_dashboard_parser(
    command: Callable[[str, Callable[[argparse.Namespace, Output], int], str], argparse.ArgumentParser],
) -> None:
    """The ``dashboard`` subcommand (``command`` makes a subcommand's parser)."""
    p = command("dashboard", cmd_dashboard, "the web dashboard: queues, charts, jobs, live updates and actions")
    p.add_argument("-q", "--queue", action="append", default=[], help="a queue to show (repeatable; required)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--read-only", action="store_true", help="show everything, allow no action (403)")
    p.add_argument("--token", help="require this token (Bearer or the login form); default $RJOBS_DASHBOARD_TOKEN")
    p.add_argument("--basic-auth", metavar="USER:PASS", help="require HTTP basic auth; USER is the actor of actions")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="another Host header to accept")


def dashboard_options(args: argparse.Namespace, url: str) -> DashboardOptions:
    """The checked options of the command line (ValidationError on a bad one)."""
    token = args.token if args.token is not None else os.environ.get("RJOBS_DASHBOARD_TOKEN") or None
    return DashboardOptions(
        url=url,
        queues=tuple(args.queue),
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        token=token,
        basic_auth=parse_basic_auth(args.basic_auth) if args.basic_auth else None,
        allowed_hosts=tuple(args.allow_host),
    ).validate()


def cmd_dashboard(args: argparse.Namespace, out: Output) -> int:
    """Serve the dashboard until interrupted."""
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise ValidationError(f"the dashboard needs {', '.join(missing)}: pip install 'rjobs[dashboard]'")
    if not args.queue:
        raise ValidationError("name the queues to show: rjobs dashboard -q QUEUE [-q QUEUE...]")
    dashboard_options(args, "redis://checked")  # every flag checked before a server is started
    options = dashboard_options(args, resolve_url(getattr(args, "url", None), out))
    from rjobs.dashboard.app import serve

    serve(options)
    return EXIT["ok"]
