"""The dashboard application: :func:`create_app` builds the Starlette app (routes, the guard of
rjobs.dashboard.security, the static files, the queues and their live feeds opened in its
lifespan) and :func:`serve` runs it with uvicorn. Reference: docs/dashboard.md."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rjobs.dashboard import actions, views
from rjobs.dashboard.feeds import Feeds
from rjobs.dashboard.options import DashboardOptions
from rjobs.dashboard.registry import Registry
from rjobs.dashboard.security import AUTH_COOKIE, Forbidden, Guard, check_csrf, form_fields, login_cookie
from rjobs.dashboard.templating import render
from rjobs.store.clients import async_client, close_async

__all__ = ["HEARTBEAT_S", "create_app", "serve"]

#: A comment line sent on an idle live stream this often (seconds), so proxies keep it open and
#: a closed browser is noticed.
HEARTBEAT_S = 15.0


async def events(request: Request) -> Response:
    """``/q/<queue>/events`` (``?job=<id>``: that job's only): Server-Sent Events, one per stream
    entry of the queue, from the queue's one reader in this process."""
    name, _ = await views.open_queue(request)
    job = request.query_params.get("job") or None
    feed = request.app.state.feeds.feed(name)
    sub = feed.subscribe(job)

    async def stream() -> AsyncIterator[bytes]:
        entries = sub.entries().__aiter__()
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    doc = await asyncio.wait_for(entries.__anext__(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    yield b": ping\n\n"
                    continue
                except StopAsyncIteration:
                    return
                yield b"data: " + msgspec.json.encode(doc) + b"\n\n"
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"x-accel-buffering": "no"})


async def metrics(request: Request) -> Response:
    """``/metrics``: the queues' metrics in the Prometheus text format (behind the same access
    rules as every page); 404 when this rjobs has no Prometheus support."""
    try:
        from rjobs.observe.prometheus import render_queue_metrics  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return PlainTextResponse("this rjobs has no Prometheus metrics (rjobs.observe.prometheus)", 404)
    registry: Registry = request.app.state.registry
    queues = [q for name in registry.names if (q := await registry.queue(name)) is not None]
    body, content_type = await render_queue_metrics(queues)
    return Response(body, media_type=content_type)


def _next(target: str) -> str:
    # only a path of this site: never //other.example or a scheme
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def login(request: Request) -> Response:
    """``/login``: the token form (GET), and its check (POST) setting the login cookie."""
    options: DashboardOptions = request.app.state.options
    target = _next(request.query_params.get("next", "/"))
    if options.token is None or (request.method == "GET" and request.scope["state"].get("user")):
        return RedirectResponse(target, 303)  # nothing to log in to, or logged in already
    if request.method == "GET":
        return render(request, "login.html", target=target)
    try:
        form = await form_fields(request)
        check_csrf(request, form.get("csrf"))
    except Forbidden as exc:
        return PlainTextResponse(str(exc), 403)
    given = str(form.get("token") or "")
    if not hmac.compare_digest(given.encode(), options.token.encode()):
        return render(request, "login.html", 401, target=target, message="wrong token")
    response = RedirectResponse(_next(str(form.get("next") or "/")), 303)
    response.set_cookie(AUTH_COOKIE, login_cookie(options), httponly=True, samesite="lax", path="/")
    return response


async def logout(request: Request) -> Response:
    """``/logout`` (POST): forget the login cookie."""
    try:
        form = await form_fields(request)
        check_csrf(request, form.get("csrf"))
    except Forbidden as exc:
        return PlainTextResponse(str(exc), 403)
    response = RedirectResponse("/login", 303)
    response.delete_cookie(AUTH_COOKIE, path="/")
    return response


def create_app(options: DashboardOptions, client: Any = None) -> Guard:
    """The dashboard as an ASGI app for ``options`` (validated here); ``client`` (an async redis
    client) is used instead of one made from ``options.url`` and then left open."""
    options.validate()
    own = client is None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis_client = async_client(options.url) if own else client
        app.state.registry = Registry(redis_client, options.queues)
        app.state.feeds = Feeds(redis_client)
        try:
            yield
        finally:
            await app.state.feeds.close()
            await app.state.registry.close()
            if own:
                await close_async(redis_client)

    q = "/q/{queue}"
    job = q + "/job/{job_id}"
    routes = [
        Route("/", views.queues_page),
        Route(q, views.queue_page),
        Route(q + "/jobs", views.jobs_page),
        Route(q + "/rows", views.rows),
        Route(q + "/counts", views.counts_json),
        Route(q + "/find", views.find_job),
        Route(q + "/events", events),
        Route(job, views.job_page),
        Route(job + "/json", views.job_json),
        Route(job + "/cancel", actions.cancel, methods=["POST"]),
        Route(job + "/retry", actions.retry, methods=["POST"]),
        Route(job + "/priority", actions.priority, methods=["POST"]),
        Route(q + "/bulk", actions.bulk, methods=["POST"]),
        Route(q + "/pause", actions.pause, methods=["POST"]),
        Route(q + "/resume", actions.resume, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(packages=[("rjobs.dashboard", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.options = options
    return Guard(app, options)


def serve(options: DashboardOptions, *, log_level: str = "info") -> None:
    """Run the dashboard with uvicorn until interrupted (Ctrl-C)."""
    import uvicorn

    print(f"rjobs dashboard on http://{quote(options.host, safe='.:[]')}:{options.port}/", flush=True)
    uvicorn.run(
        create_app(options),
        host=options.host.strip("[]"),
        port=options.port,
        log_level=log_level,
        timeout_graceful_shutdown=1,
        proxy_headers=False,
    )
