"""docs/grafana/rjobs.json: a Grafana dashboard whose every query asks for metrics rjobs really
exposes: each metric name in each ``expr`` is found in the /metrics of a worker that ran jobs of
every outcome, or in what ``render_queue_metrics`` answers for its queue (read, not listed here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rjobs.client.queue import Queue
from rjobs.models import JobRequest
from rjobs.observe.prometheus import render_queue_metrics, serve_worker_metrics
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy
from tests.observe import jobs
from tests.observe.scrape import names, scrape

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "rjobs.json"
METRIC = re.compile(r"\brjobs_[a-z0-9_]+")
#: The template variables a query may use: Grafana's own and the dashboard's.
VARIABLES = {"$queue", "$__rate_interval", "${datasource}"}


def exprs(node: Any) -> Iterator[str]:
    """Every ``expr`` of the dashboard, wherever it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def test_the_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"] for p in panels).lower()
    for wanted in ("throughput", "failure rate", "quantiles", "depth", "workers", "lease losses"):
        assert wanted in titles, f"no panel for {wanted}"
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            expr = t["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            assert set(re.findall(r"\$\{?\w+\}?", expr)) <= VARIABLES, expr
    assert any("histogram_quantile" in e for e in exprs(board))


async def test_every_metric_the_dashboard_asks_for_is_exposed(url: str) -> None:
    board = json.loads(DASHBOARD.read_text())
    wanted = {name for expr in exprs(board) for name in METRIC.findall(expr)}
    async with Queue(jobs.QUEUE, url=url) as q:
        await q.enqueue_many([JobRequest(type=t, max_attempts=3) for t in ("ok", "flaky", "broken", "lost")])
        functions = [jobs.ok, jobs.flaky, jobs.broken, jobs.lost]
        worker = Worker(q, functions, burst=True, lease=2, retry=RetryPolicy(base=0, jitter="none"))
        server = serve_worker_metrics(worker, 0, "127.0.0.1")
        try:
            await worker.run()
            exposed = names(scrape(server.port))
        finally:
            server.close()
        body, _ = await render_queue_metrics([q])
        exposed |= names(body.decode())
        counts = await q.counts()
    assert (counts["completed"], counts["failed"]) == (3, 1)
    missing = sorted(wanted - exposed)
    assert not missing, f"the dashboard asks for metrics nobody exposes: {missing}"
    assert {"rjobs_worker_lease_losses_total", "rjobs_queue_finished_total"} <= wanted
