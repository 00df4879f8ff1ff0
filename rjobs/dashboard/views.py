"""The dashboard's pages (GET): the queues, one queue (charts, workers, jobs with filters), a page
of jobs, one job, and the small JSON and HTML pieces the page script fetches to stay live. Every
read goes through the public :class:`rjobs.Queue` API; job lists through ``Queue.page``, which reads
a bounded number of index entries per request whatever the queue's size."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from rjobs.client.pages import JobPage
from rjobs.client.queue import Queue
from rjobs.dashboard.charts import Chart, line_chart
from rjobs.dashboard.registry import MAX_MINUTES, Registry, minute_series
from rjobs.dashboard.templating import render
from rjobs.errors import JobNotFound, ValidationError
from rjobs.store.keys import validate_name

__all__ = [
    "Filters",
    "counts_json",
    "find_job",
    "job_json",
    "job_page",
    "jobs_page",
    "queue_page",
    "queues_page",
    "rows",
]

PAGE_SIZE = 50


class Filters(msgspec.Struct, frozen=True):
    """The job list's filters from the query string (empty text: no filter)."""

    state: str
    type: str = ""
    user: str = ""
    code: str = ""
    cursor: str = ""

    @classmethod
    def of(cls, request: Request, queue: Queue) -> Filters:
        """The filters of ``request``; the state defaults to the machine's ready state."""
        q = request.query_params
        return cls(
            state=q.get("state") or ("" if q.get("user") else queue.machine.ready),
            type=q.get("type", "").strip(),
            user=q.get("user", "").strip(),
            code=q.get("code", "").strip(),
            cursor=q.get("cursor", "").strip(),
        )

    def query(self, **change: str) -> str:
        """The query string of these filters with ``change`` applied (for links)."""
        fields = {**msgspec.structs.asdict(self), **change}
        return urlencode({k: v for k, v in fields.items() if v})

    async def page(self, queue: Queue, limit: int = PAGE_SIZE) -> JobPage:
        """The page of jobs these filters select."""
        return await queue.page(
            self.state or None,
            type=self.type or None,
            user_id=self.user or None,
            error_code=self.code or None,
            cursor=self.cursor or None,
            limit=limit,
        )


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def open_queue(request: Request) -> tuple[str, Queue | None]:
    """The queue the path names (404 when the dashboard does not show it), None while it has no
    machine stored."""
    name = request.path_params["queue"]
    registry = _registry(request)
    if name not in registry.names:
        raise HTTPException(404, f"this dashboard does not show a queue named {name[:60]!r}")
    return name, await registry.queue(name)


async def _summary(registry: Registry, name: str) -> dict[str, Any]:
    queue = await registry.queue(name)
    if queue is None:
        return {"name": name, "missing": True}
    stats = await queue.stats()
    oldest = await queue.page(queue.machine.ready, limit=1, oldest_first=True)
    return {
        "name": name,
        "missing": False,
        "machine": queue.machine,
        "stats": stats,
        "oldest": oldest.jobs[0] if oldest.jobs else None,
    }


async def queues_page(request: Request) -> Response:
    """``/``: every queue shown, with its counts, oldest waiting job, pause and live workers."""
    registry = _registry(request)
    summaries = [await _summary(registry, name) for name in registry.names]
    return render(request, "queues.html", summaries=summaries)


def _minutes(request: Request) -> int:
    text = request.query_params.get("minutes", "60")
    if not text.isdigit() or not 1 <= int(text) <= MAX_MINUTES:
        raise HTTPException(400, f"minutes must be 1-{MAX_MINUTES}")
    return int(text)


async def _charts(queue: Queue, minutes: int) -> list[Chart]:
    """The queue page's charts from ``Queue.metrics`` (one bucket per minute, oldest first)."""
    buckets = await queue.metrics(minutes=minutes)
    s = minute_series(buckets, [queue.machine.failure])
    t = s["start_ms"]
    return [
        line_chart(
            "Throughput (jobs per minute)", t, [("enqueued", "c1", s["enqueued"]), ("finished", "c2", s["finished"])]
        ),
        line_chart("Failure rate", t, [("failed / finished", "c3", s["failure_rate"])], unit="%"),
        line_chart(
            "Average wait and run time", t, [("queue wait", "c4", s["wait_ms"]), ("run", "c5", s["run_ms"])], unit="ms"
        ),
    ]


async def _listing(request: Request, queue: Queue) -> dict[str, Any]:
    filters = Filters.of(request, queue)
    try:
        page = await filters.page(queue)
    except ValidationError as exc:
        return {"filters": filters, "page": JobPage(jobs=[], next_cursor=None, scanned=0), "problem": str(exc)}
    return {"filters": filters, "page": page, "problem": None}


async def queue_page(request: Request) -> Response:
    """``/q/<queue>``: charts over the last ``minutes`` (60 by default), workers, counts, and the
    first page of jobs with the filters and the id lookup."""
    name, queue = await open_queue(request)
    if queue is None:
        return render(request, "missing.html", 404, name=name)
    minutes = _minutes(request)
    stats = await queue.stats()
    context = await _listing(request, queue)
    return render(
        request,
        "queue.html",
        name=name,
        queue=queue,
        stats=stats,
        charts=await _charts(queue, minutes),
        minutes=minutes,
        workers=await _registry(request).workers(name),
        message=request.query_params.get("done", ""),
        **context,
    )


async def jobs_page(request: Request) -> Response:
    """``/q/<queue>/jobs``: a page of jobs by state (or owner), type, user and error code, with a
    link to the next page."""
    name, queue = await open_queue(request)
    if queue is None:
        return render(request, "missing.html", 404, name=name)
    context = await _listing(request, queue)
    counts = await queue.counts()
    return render(request, "jobs.html", name=name, queue=queue, counts=counts,
                  message=request.query_params.get("done", ""), **context)  # fmt: skip


async def rows(request: Request) -> Response:
    """``/q/<queue>/rows?ids=a,b&state=...``: the table rows of those jobs that match the filters,
    for the live list (a job enqueued after the page loaded appears without a reload)."""
    name, queue = await open_queue(request)
    if queue is None:
        return Response("", media_type="text/html")
    filters = Filters.of(request, queue)
    ids = [i for i in request.query_params.get("ids", "").split(",") if i][:50]
    jobs = []
    for jid in ids:
        try:
            job = await queue.get(validate_name("job id", jid))
        except (JobNotFound, ValidationError):
            continue
        if filters.state and job.status != filters.state:
            continue
        if (filters.type and job.type != filters.type) or (filters.user and job.user_id != filters.user):
            continue
        if filters.code and (job.error is None or job.error.code != filters.code):
            continue
        jobs.append(job)
    return render(request, "rows.html", name=name, queue=queue, jobs=jobs)


async def counts_json(request: Request) -> Response:
    """``/q/<queue>/counts``: jobs per state and the pause, as JSON."""
    _, queue = await open_queue(request)
    if queue is None:
        return JSONResponse({"counts": {}, "paused": None})
    return JSONResponse({"counts": await queue.counts(), "paused": await queue.paused()})


async def _job(request: Request) -> tuple[str, Queue, Any]:
    name, queue = await open_queue(request)
    if queue is None:
        raise HTTPException(404, "no such job")
    try:
        job = await queue.get(validate_name("job id", request.path_params["job_id"]))
    except (JobNotFound, ValidationError):
        raise HTTPException(404, "no such job") from None
    return name, queue, job


async def job_json(request: Request) -> Response:
    """``/q/<queue>/job/<id>/json``: the job's fields (status, progress...) as JSON."""
    _, _, job = await _job(request)
    return Response(msgspec.json.encode(job), media_type="application/json")


#: The most dependents a job page lists.
DEPENDENTS_SHOWN = 200


async def job_page(request: Request) -> Response:
    """``/q/<queue>/job/<id>``: the job's fields, progress, params, result, error with traceback,
    dependencies, assets and its full history with comments and who acted."""
    name, queue, job = await _job(request)
    events = await queue.events(job.id)
    actors = {k: a.name for k, a in (await queue.actors()).items() if a.name}
    return render(
        request,
        "job.html",
        name=name,
        queue=queue,
        job=job,
        events=events,
        assets=await queue.assets(job.id),
        dependents=await queue.dependents(job.id, DEPENDENTS_SHOWN),
        dependents_shown=DEPENDENTS_SHOWN,
        actors=actors,
        who=sorted({e.actor for e in events if e.actor}),
        message=request.query_params.get("done", ""),
        retryable=job.status in (queue.machine.failure, queue.machine.cancelled),
        final=queue.machine.is_final(job.status),
    )


async def find_job(request: Request) -> Response:
    """``/q/<queue>/find?id=``: the job page of an exact id, or the queue page saying none."""
    name, queue = await open_queue(request)
    jid = request.query_params.get("id", "").strip()
    if queue is not None and jid:
        try:
            job = await queue.get(validate_name("job id", jid))
        except (JobNotFound, ValidationError):
            job = None
        if job is not None:
            return RedirectResponse(f"/q/{name}/job/{job.id}", 303)
    return RedirectResponse(f"/q/{name}?" + urlencode({"done": f"no job {jid[:80]!r} in {name}"}), 303)
