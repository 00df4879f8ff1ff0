"""Who may use the dashboard: the Host header check (DNS rebinding), the token (Bearer or the login
form's cookie), basic auth with its user as the actor, CSRF tokens and Origin checks on every
action, the security headers, and /metrics behind the same rules. A refused request changes
nothing in Redis."""

from __future__ import annotations

import base64
import importlib
from collections.abc import Callable

import httpx
import pytest
import redis

from rjobs import SyncQueue, machines
from tests.dashboard.conftest import Running
from tests.dashboard.test_app import client_for, csrf_of
from tests.helpers import job_history, keyspace_fingerprint

JOB = machines.JOB
TOKEN = "s3cret-token-0123456789"


def has_prometheus() -> bool:
    try:
        importlib.import_module("rjobs.observe.prometheus")
    except ImportError:
        return False
    return True


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_headers_and_the_host_check(url: str, dashboard: Callable[..., Running]) -> None:
    running = dashboard(allowed_hosts=("jobs.internal",))
    with client_for(running) as c:
        page = c.get("/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
        assert '<script src="/static/dashboard.js"' in page.text and "<script>" not in page.text
        assert c.get("/", headers={"host": "attacker.example"}).status_code == 400
        assert c.get("/", headers={"host": "attacker.example:8765"}).status_code == 400
        assert c.get("/", headers={"host": "localhost"}).status_code == 200
        assert c.get("/", headers={"host": "jobs.internal:443"}).status_code == 200
        assert c.get("/static/dashboard.css").status_code == 200


def test_a_token_is_required_by_bearer_or_login(
    url: str, dashboard: Callable[..., Running], redis_sync: redis.Redis
) -> None:
    jid = SyncQueue("work", url).enqueue("t").id
    running = dashboard(token=TOKEN)
    before = keyspace_fingerprint(redis_sync)
    with client_for(running) as c:
        assert c.get("/q/work").status_code == 401
        to_login = c.get("/q/work", headers={"accept": "text/html"}, follow_redirects=False)
        assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=/q/work"
        assert c.get("/", headers={"authorization": "Bearer wrong-token-000000000"}).status_code == 401
        assert c.post(f"/q/work/job/{jid}/cancel").status_code == 401
        assert 'href="/q/work"' not in c.get("/login").text, "no queue names before logging in"
        csrf = csrf_of(c, "/login")
        wrong = c.post("/login", data={"csrf": csrf, "token": "nope", "next": "/q/work"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        assert c.post("/login", data={"token": TOKEN}).status_code == 403, "the login form has a CSRF token too"
        ok = c.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "//evil.example/"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        assert c.get("/q/work").status_code == 200, "the login cookie"
    assert keyspace_fingerprint(redis_sync) == before
    # a script with the token: no cookie, no CSRF token (a browser never sends Bearer on its own)
    with httpx.Client(base_url=running.base, headers={"authorization": f"Bearer {TOKEN}"}) as api:
        done = api.post(f"/q/work/job/{jid}/cancel", headers={"accept": "application/json"})
        assert done.status_code == 200 and done.json()["ok"]


def test_basic_auth_user_is_the_actor(url: str, dashboard: Callable[..., Running], redis_sync: redis.Redis) -> None:
    jid = SyncQueue("work", url).enqueue("t").id
    running = dashboard(basic_auth=("alice", "pw-alice"))
    with client_for(running) as c:
        refused = c.get("/")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert c.get("/", headers=basic("alice", "nope")).status_code == 401
        assert c.get("/", headers=basic("bob", "pw-alice")).status_code == 401
    with client_for(running, basic("alice", "pw-alice")) as c:
        csrf = csrf_of(c, f"/q/work/job/{jid}")
        assert c.post(f"/q/work/job/{jid}/cancel", data={"csrf": csrf}).status_code == 303
    assert job_history(redis_sync, "rjobs:{work}:", jid)[-1]["actor"] == "human:alice"


def test_actions_need_the_session_token_and_this_origin(
    url: str, dashboard: Callable[..., Running], redis_sync: redis.Redis
) -> None:
    q = SyncQueue("work", url)
    jid = q.enqueue("t").id
    running = dashboard()
    with client_for(running) as c:
        csrf = csrf_of(c, f"/q/work/job/{jid}")
        before = keyspace_fingerprint(redis_sync)
        path = f"/q/work/job/{jid}/cancel"
        assert c.post(path).status_code == 403, "no token"
        assert c.post(path, data={"csrf": "0" * 64}).status_code == 403, "a wrong token"
        assert c.post(path, data={"csrf": csrf}, headers={"origin": "http://evil.example"}).status_code == 403
        assert c.post(path, data={"csrf": csrf}, headers={"origin": "null"}).status_code == 403
        evil_port = running.base.rsplit(":", 1)[0] + ":1"
        assert c.post(path, data={"csrf": csrf}, headers={"origin": evil_port}).status_code == 403
        assert c.post(path, content=b'{"csrf": 1}', headers={"content-type": "application/json"}).status_code == 403
    with httpx.Client(base_url=running.base) as other:  # another browser: its own session
        other.get("/")
        assert other.post(path, data={"csrf": csrf}, headers={"origin": running.base}).status_code == 403
        assert other.post(path, data={"csrf": csrf}, headers={"referer": running.base + "/"}).status_code == 403
    assert keyspace_fingerprint(redis_sync) == before
    # the token in a header instead of the form works the same; behind a TLS proxy the origin is https
    https = running.base.replace("http://", "https://")
    with client_for(running, {"origin": https}) as c:
        csrf = csrf_of(c, f"/q/work/job/{jid}")
        assert c.post(path, headers={"x-csrf-token": csrf, "accept": "application/json"}).status_code == 200
    assert q.get(jid).status == JOB.cancelled


def test_metrics_follow_the_access_rules(url: str, dashboard: Callable[..., Running]) -> None:
    SyncQueue("work", url).enqueue("t")
    running = dashboard(token=TOKEN)
    with httpx.Client(base_url=running.base) as c:
        assert c.get("/metrics").status_code == 401
        answer = c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    if not has_prometheus():
        assert answer.status_code == 404
        pytest.skip("rjobs.observe.prometheus is not in this tree yet: /metrics answers 404")
    assert answer.status_code == 200 and "work" in answer.text
