"""How long the dashboard's reads take with a million jobs: a page of a state index (first and
deep), a page filtered by a rare job type and by an error code, an exact id lookup, and the
queue's counters (an hour and a day of minutes).

    python3 benchmarks/bench_pages.py [--jobs 1000000] [--failed 100000] [--reps 20]

Method: a fresh Debian redis-server, no persistence; ``--jobs`` jobs enqueued with
``enqueue_many`` (500 per call; one job in a hundred of type ``rare``), then ``--failed`` of them
claimed and failed through the worker's scripts (one in a hundred with error code ``rare_code``).
Each read is timed ``--reps`` times from this process over loopback; the median and the worst
are printed, with how many index entries the page read (``scanned``). Nothing is asserted: the
figures go to benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import common as C

from rjobs import JobRequest, SyncQueue
from rjobs.store.messages import MoveRequest


def timed(fn: Callable[[], Any], reps: int) -> tuple[float, float, Any]:
    """Median and worst wall time (ms) of ``fn`` over ``reps`` calls, and its last value."""
    times, value = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        value = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times), value


def fill(q: SyncQueue, jobs: int, failed: int) -> None:
    batch = 500
    for start in range(0, jobs, batch):
        q.enqueue_many(
            [JobRequest(type="rare" if (start + i) % 100 == 7 else "common") for i in range(min(batch, jobs - start))]
        )
    done = 0
    while done < failed:
        leased = q.backend.run(q.backend.scripts.claim("bench", min(100, failed - done), 600_000, None)).jobs
        if not leased:
            break
        moves = [
            MoveRequest(
                j.id,
                "failed",
                token=j.token,
                error=b'{"code":"%s","message":"x"}' % (b"rare_code" if (done + k) % 100 == 3 else b"boom"),
            )
            for k, j in enumerate(leased)
        ]
        q.backend.run(q.backend.scripts.finish("bench", moves))
        done += len(leased)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--failed", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    with C.redis_server() as server:
        q = SyncQueue("pages", server.url)
        t0 = time.perf_counter()
        fill(q, args.jobs, args.failed)
        print(f"filled {args.jobs:,} jobs ({args.failed:,} failed) in {time.perf_counter() - t0:.0f} s")
        r = C.client(server.url)
        print(f"used_memory {int(r.info('memory')['used_memory']) / 1e6:,.0f} MB")
        deep = str(args.jobs - args.failed - 100)
        some_id = q.page("queued", cursor=deep, limit=1).jobs[0].id
        reads: list[tuple[str, Callable[[], Any]]] = [
            ("page 1 of queued (50)", lambda: q.page("queued")),
            (f"page at rank {int(deep):,} of queued (50)", lambda: q.page("queued", cursor=deep)),
            ("queued, type=rare (50)", lambda: q.page("queued", type="rare")),
            ("failed, code=rare_code (50)", lambda: q.page("failed", error_code="rare_code")),
            ("failed, type=nope (no match)", lambda: q.page("failed", type="nope")),
            ("exact id", lambda: q.get(some_id)),
            ("counts per state", lambda: q.counts()),
            ("metrics, 60 minutes", lambda: q.metrics(60)),
            ("metrics, 1440 minutes", lambda: q.metrics(1440)),
        ]
        print(f"{'read':40} {'median ms':>10} {'worst ms':>10} {'scanned':>8}")
        for name, fn in reads:
            med, worst, value = timed(fn, args.reps)
            scanned = getattr(value, "scanned", "")
            print(f"{name:40} {med:10.2f} {worst:10.2f} {scanned!s:>8}")
        q.close()


if __name__ == "__main__":
    main()
