"""The order between queues with a real worker on the real servers: strict drains the first queue
first, weighted interleaves by the weights (counted in completions, one job at a time, not timed),
and the command line's --order/--weight reach the worker or are refused with nothing written."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
import redis

from rjobs import JobRequest, SyncQueue
from rjobs.cli.worker import run_from_cli
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint

RAN: list[str] = []  # the queue of each job, in the order the worker ran them


async def record(ctx: JobContext, params: Any) -> None:
    RAN.append(ctx.queue.name)


def make_worker() -> Worker:
    """For run_from_cli: the CLI's options give the url, queues and order."""
    return Worker(["high", "low"], [record], concurrency=1)


def fill(url: str, n: int) -> None:
    for name in ("low", "high"):  # low first: FIFO would favour it
        with SyncQueue(name, url) as q:
            q.enqueue_many([JobRequest(type="record") for _ in range(n)])


def run(worker: Worker) -> list[str]:
    RAN.clear()
    anyio.run(worker.run)
    return list(RAN)


def test_strict_order_drains_the_first_queue_first(url: str) -> None:
    fill(url, 10)
    ran = run(Worker(["high", "low"], [record], url=url, concurrency=1, burst=True))
    assert ran == ["high"] * 10 + ["low"] * 10


def test_weighted_order_interleaves_by_the_weights(url: str) -> None:
    fill(url, 30)
    worker = Worker(["high", "low"], [record], url=url, concurrency=1, burst=True, weights={"high": 2})
    assert worker.order.mode == "weighted"
    ran = run(worker)
    assert Counter(ran) == {"high": 30, "low": 30}
    assert Counter(ran[:30]) == {"high": 20, "low": 10}, "2:1 while both have jobs"
    assert ran[:6] == ["high", "low", "high", "high", "low", "high"]
    assert ran[45:] == ["low"] * 15, "once high is empty, low takes every slot"


def test_the_command_line_sets_the_order(url: str) -> None:
    fill(url, 6)
    RAN.clear()
    code = run_from_cli(
        f"{__name__}:make_worker", url=url, queues=None, concurrency=None, burst=True,
        order=("weighted", ["low=2", "high=1"]),
    )  # fmt: skip
    assert code == 0
    assert RAN[:6] == ["low", "high", "low", "low", "high", "low"]


@pytest.mark.parametrize(
    "order",
    [(None, ["high=0"]), (None, ["high=-1"]), (None, ["high=nan"]), (None, ["nope=1"]), ("strict", ["high=2"]),
     (None, ["high"])],
)  # fmt: skip
def test_bad_weights_are_a_usage_error_and_write_nothing(
    url: str, redis_sync: redis.Redis, order: tuple[str | None, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    fill(url, 1)
    before = keyspace_fingerprint(redis_sync)
    code = run_from_cli(f"{__name__}:make_worker", url=url, queues=None, concurrency=None, burst=True, order=order)
    assert code == 2 and "cannot load worker" in capsys.readouterr().err
    assert keyspace_fingerprint(redis_sync) == before


def test_a_worker_refuses_weights_of_a_queue_it_does_not_serve() -> None:
    with pytest.raises(ValueError, match="does not serve"):
        Worker(["high"], [record], url="redis://127.0.0.1:1", weights={"low": 1})
    worker = Worker(["high", "low"], [record], url="redis://127.0.0.1:1", weights={"low": 3})
    with pytest.raises(ValueError, match="does not serve"):
        worker.configure(queues=["high"])
