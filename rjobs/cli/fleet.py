"""``rjobs workers``: the workers listed in the queues (all of them by default), with the details
each one publishes with its heartbeats (rjobs.worker.presence); the reading is rjobs.cli.roster."""

from __future__ import annotations

import argparse

from rjobs.cli.commands import EXIT, QueueNotFound, connect, list_queues, resolve_url
from rjobs.cli.render import Output
from rjobs.cli.roster import ALIVE_WINDOW_MS, read_workers, workers_table
from rjobs.store.keys import QueueKeys

__all__ = ["cmd_workers"]


def cmd_workers(args: argparse.Namespace, out: Output) -> int:
    """The workers listed in the given queues (all queues by default) with their details."""
    client = connect(resolve_url(args.url, out))
    names = args.queue or list_queues(client)
    for name in args.queue or ():
        if not client.exists(QueueKeys(name).machine):
            raise QueueNotFound(f"queue {name!r} not found (nothing was ever enqueued to it)")
    workers, alive = read_workers(client, names) if names else ([], {})
    if out.json:
        out.json_doc({"workers": workers, "alive": alive})
        return EXIT["ok"]
    if workers:
        out.out.print(workers_table(workers))
    else:
        out.notice("no workers listed" + ("" if names else ": no queues yet"))
    if names:
        counts = "  ".join(f"{name} {n}" for name, n in alive.items())
        out.out.print(f"workers alive per queue (last {ALIVE_WINDOW_MS // 1000} s): {counts}", markup=False)
    return EXIT["ok"]
