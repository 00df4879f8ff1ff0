"""The dashboard's HTML: one Jinja2 environment over the package's templates with autoescape on
for every template (a job's params, errors and comments are user data: they always render as
text), the filters the templates share, and :func:`render`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jinja2
import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse

from rjobs.dashboard.charts import short_number
from rjobs.dashboard.security import csrf_token

__all__ = ["ENV", "pretty", "render", "stamp"]


def stamp(ms: int | float | None) -> str:
    """Server epoch ms as ``YYYY-MM-DD HH:MM:SS`` UTC (``-`` for None)."""
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def pretty(value: Any) -> str:
    """A JSON value, indented (the template escapes it)."""
    try:
        return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _age(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("rjobs.dashboard", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _event_stamp(event_id: str) -> str:
    head = event_id.split("-", 1)[0]
    return stamp(int(head)) if head.isdigit() else "-"


ENV.filters.update(stamp=stamp, pretty=pretty, age=_age, short=short_number, event_stamp=_event_stamp)


def render(request: Request, template: str, status: int = 200, /, **context: Any) -> HTMLResponse:
    """The template ``template`` with the request's user, CSRF token and read-only flag."""
    state = request.app.state
    context.setdefault("message", "")
    queue = context.get("queue")
    if queue is not None:  # the final states, for the page script (a finished job has no actions)
        context.setdefault("finals", " ".join(s for s in queue.machine.states if queue.machine.is_final(s)))
    page = ENV.get_template(template).render(
        request=request,
        user=request.scope["state"].get("user", ""),
        csrf=csrf_token(request),
        read_only=state.options.read_only,
        queues=state.options.queues,
        auth=state.options.auth_required,
        **context,
    )
    return HTMLResponse(page, status)
