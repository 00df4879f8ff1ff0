"""The dashboard's actions (POST): cancel, retry with edited params, re-prioritise, bulk retry or
cancel of what the current filter selects, pause and resume. Each is one call of the public
:class:`rjobs.Queue` API (the same scripts as code and the CLI use), made as the authenticated
user: ``rjobs.Actor(type="human", id=<name>)``, recorded in the job's history.

Every action checks first, in this order: the dashboard is not read-only (else 403), the request
comes from this site with this session's CSRF token (else 403), its input is valid (else 400,
nothing written). A refusal of the queue (a job already final, not found...) answers 409 with the
error's words. A form post is answered with a redirect back to where it came from, the outcome in
the page; a ``fetch`` that accepts JSON gets ``{"ok": bool, "message": str}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from rjobs.client.queue import Queue
from rjobs.dashboard.security import Forbidden, check_csrf, form_fields
from rjobs.dashboard.views import Filters, open_queue
from rjobs.errors import JobNotFound, RjobsError, ValidationError
from rjobs.models import Actor
from rjobs.store.keys import validate_name

__all__ = ["BULK_MAX", "bulk", "cancel", "pause", "priority", "resume", "retry"]

#: The most jobs one bulk action selects (pages of the filter, read before acting), and the most
#: pages it reads for them (each a bounded read: rjobs.client.pages).
BULK_MAX = 10_000
BULK_PAGES = 200

Act = Callable[[Queue, "dict[str, str]", Actor], Awaitable[str]]


def _answer(request: Request, ok: bool, message: str, status: int, back: str) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"ok": ok, "message": message}, status)
    if not ok and status == 403:
        return Response(message, status, media_type="text/plain")
    return RedirectResponse(back + ("&" if "?" in back else "?") + urlencode({"done": message}), 303)


async def _act(request: Request, act: Act, back: str) -> Response:
    if request.app.state.options.read_only:
        return _answer(request, False, "this dashboard is read-only", 403, back)
    try:
        form = await form_fields(request)
        check_csrf(request, form.get("csrf"))
    except Forbidden as exc:
        return _answer(request, False, str(exc), 403, back)
    _, queue = await open_queue(request)
    if queue is None:
        return _answer(request, False, "the queue has no jobs yet", 404, back)
    actor = Actor(type="human", id=request.scope["state"]["user"])
    try:
        message = await act(queue, form, actor)
    except ValidationError as exc:
        return _answer(request, False, f"refused: {exc}", 400, back)
    except JobNotFound as exc:
        return _answer(request, False, f"not found: {exc}", 404, back)
    except RjobsError as exc:
        return _answer(request, False, f"refused ({exc.code}): {exc}", 409, back)
    return _answer(request, True, message, 200, back)


def _job_id(request: Request) -> str:
    return validate_name("job id", request.path_params["job_id"])


def _job_back(request: Request) -> str:
    return f"/q/{request.path_params['queue']}/job/{request.path_params['job_id']}"


def _text(form: dict[str, str], name: str, limit: int = 500) -> str:
    value = str(form.get(name) or "").strip()
    if len(value) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters")
    return value


async def cancel(request: Request) -> Response:
    """Cancel one job (a running one is stopped through its worker's next heartbeat)."""

    async def act(queue: Queue, form: dict[str, str], actor: Actor) -> str:
        job = await queue.cancel(_job_id(request), _text(form, "reason"), actor=actor)
        return f"job {job.id} cancelled"

    return await _act(request, act, _job_back(request))


async def retry(request: Request) -> Response:
    """Retry a failed or cancelled job, with the params of the form's JSON text when given."""

    async def act(queue: Queue, form: dict[str, str], actor: Actor) -> str:
        text = str(form.get("params") or "").strip()
        params: Any
        if text:
            try:
                params = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise ValidationError(f"params are not valid JSON: {exc}") from None
            job = await queue.retry(_job_id(request), params, actor=actor)
        else:
            job = await queue.retry(_job_id(request), actor=actor)
        return f"job {job.id} sent back to {job.status}"

    return await _act(request, act, _job_back(request))


async def priority(request: Request) -> Response:
    """Change a not-yet-running job's priority (1-10 or low, normal, high, urgent, critical)."""

    async def act(queue: Queue, form: dict[str, str], actor: Actor) -> str:
        text = _text(form, "priority", 20)
        value: str | int = int(text) if text.isdigit() else text
        before = await queue.set_priority(_job_id(request), value, actor=actor)
        return f"priority {before} -> {text}"

    return await _act(request, act, _job_back(request))


async def bulk(request: Request) -> Response:
    """Retry or cancel every job the filter of the form selects (at most :data:`BULK_MAX`)."""
    back = f"/q/{request.path_params['queue']}/jobs"

    async def act(queue: Queue, form: dict[str, str], actor: Actor) -> str:
        what = _text(form, "action", 20)
        if what not in ("retry", "cancel"):
            raise ValidationError("action must be retry or cancel")
        filters = Filters(
            state=_text(form, "state", 128), type=_text(form, "type", 128), user=_text(form, "user", 128),
            code=_text(form, "code", 200),
        )  # fmt: skip
        if not filters.state:
            raise ValidationError("a bulk action needs a state")
        ids: list[str] = []
        for _ in range(BULK_PAGES):
            page = await filters.page(queue, limit=200)
            ids += [j.id for j in page.jobs]
            if page.next_cursor is None or len(ids) >= BULK_MAX:
                break
            filters = msgspec.structs.replace(filters, cursor=page.next_cursor)
        ids = ids[:BULK_MAX]
        if what == "retry":
            outcomes = await queue.bulk_retry(ids, actor=actor)
        else:
            outcomes = await queue.bulk_cancel(ids, _text(form, "reason"), actor=actor)
        done = sum(o == "done" for o in outcomes.values())
        return f"{what}: {done} of {len(ids)} job(s) done"

    return await _act(request, act, back)


async def pause(request: Request) -> Response:
    """Pause the queue: workers claim nothing until it is resumed."""

    async def act(queue: Queue, form: dict[str, str], actor: Actor) -> str:
        changed = await queue.pause(_text(form, "reason"), actor=actor)
        return "queue paused" if changed else "the queue was already paused"

    return await _act(request, act, f"/q/{request.path_params['queue']}")


async def resume(request: Request) -> Response:
    """Resume a paused queue."""

    async def act(queue: Queue, form: dict[str, str], actor: Actor) -> str:
        changed = await queue.resume(actor=actor)
        return "queue resumed" if changed else "the queue was not paused"

    return await _act(request, act, f"/q/{request.path_params['queue']}")
