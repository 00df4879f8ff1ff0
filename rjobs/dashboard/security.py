"""Who may use the dashboard and how a request is checked, as one ASGI middleware (:class:`Guard`)
in front of every route:

- **Host header** against the bound host, the loopback names and ``--allow-host``: a page reached
  through a name that resolves to 127.0.0.1 (DNS rebinding) gets 400 and nothing else.
- **Authentication** when a token or basic auth is set (required off loopback): ``Authorization:
  Bearer <token>``, the cookie the login form sets, or ``Authorization: Basic``. The name it gives
  (``dashboard``, or the basic-auth user) is the actor of every action.
- **CSRF**: every action carries a token bound to the browser's session cookie (a form field or the
  ``X-CSRF-Token`` header, checked with :func:`hmac.compare_digest`) and an ``Origin`` (or
  ``Referer``) of this very site. A request authenticated by a Bearer header is exempt: a browser
  never adds that header on its own.
- **Headers**: a Content-Security-Policy without inline scripts (the JS loads from ``/static``),
  no framing, no sniffing, no referrer to other sites.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from rjobs.dashboard.options import DashboardOptions

__all__ = [
    "AUTH_COOKIE",
    "HEADERS",
    "SESSION_COOKIE",
    "Forbidden",
    "Guard",
    "check_csrf",
    "csrf_token",
    "form_fields",
    "login_cookie",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "rjobs_session"
AUTH_COOKIE = "rjobs_auth"
#: Paths served without authentication: the login form and the package's own static files.
PUBLIC = ("/login", "/static/")
_SID = re.compile(r"^[A-Za-z0-9_\-]{32}$")
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class Forbidden(Exception):
    """A refused action: a missing or wrong CSRF token, a foreign Origin, a read-only dashboard."""


def _sign(secret: bytes, what: str) -> str:
    return hmac.new(secret, what.encode(), hashlib.sha256).hexdigest()


def login_cookie(options: DashboardOptions) -> str:
    """The value of the cookie a successful token login sets (valid until the process restarts)."""
    return _sign(options.secret, f"login:{options.token}")


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser session (bound to its session cookie)."""
    options: DashboardOptions = request.app.state.options
    return _sign(options.secret, "csrf:" + request.scope["state"]["sid"])


def _same_site(request: Request) -> bool:
    # The host and port only: behind a TLS proxy the browser's origin is https:// while the
    # dashboard itself is spoken to in plain http.
    host = request.headers.get("host", "").lower()
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null" or not host:
        return False
    parts = urlsplit(sent)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


def check_csrf(request: Request, given: str | None) -> None:
    """Raise Forbidden unless the request comes from this site with this session's token."""
    if request.scope["state"].get("bearer"):
        return
    if not _same_site(request):
        raise Forbidden("cross-site request refused (Origin)")
    sent = given or request.headers.get("x-csrf-token") or ""
    if not hmac.compare_digest(sent.encode(), csrf_token(request).encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page")


#: The largest form body an action accepts (edited params included).
MAX_FORM = 1_000_000


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form post (the first value of each name); Forbidden for a body
    of another type or larger than :data:`MAX_FORM` bytes."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise Forbidden("send the form url-encoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise Forbidden("form too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise Forbidden("unreadable form") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _host_name(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """The middleware: host check, authentication, session cookie and security headers."""

    def __init__(self, app: ASGIApp, options: DashboardOptions) -> None:
        self.app = app
        self.options = options
        self.hosts = options.host_names()

    def _user(self, request: Request) -> tuple[str | None, bool]:
        """(the authenticated name or None, whether it came from a Bearer header)."""
        o = self.options
        if not o.auth_required:
            return "dashboard", False
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if o.token is not None:
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), o.token.encode()):
                return "dashboard", True
            cookie = request.cookies.get(AUTH_COOKIE, "")
            return ("dashboard" if hmac.compare_digest(cookie.encode(), login_cookie(o).encode()) else None), False
        assert o.basic_auth is not None
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        ok_user = hmac.compare_digest(user.encode(), o.basic_auth[0].encode())
        ok_password = hmac.compare_digest(password.encode(), o.basic_auth[1].encode())
        return (user if ok_user and ok_password else None), False

    def _refusal(self, request: Request) -> Response:
        if self.options.basic_auth is not None:
            return PlainTextResponse(
                "authentication required", 401, headers={"www-authenticate": 'Basic realm="rjobs dashboard"'}
            )
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login?next=" + quote(request.url.path), 303)
        return PlainTextResponse("authentication required: Authorization: Bearer <token>, or log in", 401)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        new_sid: str | None = None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                if new_sid is not None:
                    cookie = f"{SESSION_COOKIE}={new_sid}; Path=/; HttpOnly; SameSite=Lax"
                    headers.append((b"set-cookie", cookie.encode()))
            await send(message)

        if self.hosts and _host_name(request.headers.get("host", "")) not in self.hosts:
            await PlainTextResponse("bad Host header", 400)(scope, receive, send_with_headers)
            return
        sid = request.cookies.get(SESSION_COOKIE, "")
        if not _SID.match(sid):
            sid = new_sid = secrets.token_urlsafe(24)
        user, bearer = self._user(request)
        state = scope.setdefault("state", {})
        state.update(sid=sid, user=user or "", bearer=bearer)
        if user is None and not scope["path"].startswith(PUBLIC):
            await self._refusal(request)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
