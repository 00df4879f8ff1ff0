"""The dashboard served for real (uvicorn, the suite's servers): pages, escaping, actions through
the Queue API with the user as actor, read-only mode, and the keyspace after each. Access rules
are in test_security.py, live updates in test_live.py, the browser in test_browser.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from rjobs import SyncQueue, machines
from rjobs.cli.server import LocalServer
from tests.dashboard.conftest import Running, free_port
from tests.helpers import job_history, keyspace_fingerprint
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB
XSS = "<script>alert(1)</script>"


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("work", url, actor="app") as queue:
        yield queue


def csrf_of(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'data-csrf="([0-9a-f]+)"', page.text)
    assert found is not None
    return found.group(1)


def client_for(running: Running, headers: dict[str, str] | None = None) -> httpx.Client:
    """A browser-like client of the dashboard: its own cookies, this site's Origin on every request."""
    return httpx.Client(base_url=running.base, headers={"origin": running.base, **(headers or {})}, timeout=10)


def test_pages_show_queues_jobs_and_one_job(
    q: SyncQueue, dashboard: Callable[..., Running], redis_sync: redis.Redis
) -> None:
    old = q.enqueue("resize", {"w": 1}, user_id="ann").id
    new = q.enqueue("mail", {"to": "x"}).id
    token = str(q.transition(new, "processing").token)
    q.progress(new, 40, "sending", token=token)
    q.comment(new, "looks slow", actor="bob")
    q.add_asset(new, "log", "https://example.com/log.txt", token=token)
    child = q.enqueue("report", depends_on=[new]).id
    running = dashboard(queues=("work", "later"))
    before = keyspace_fingerprint(redis_sync)
    with client_for(running) as c:
        home = c.get("/")
        assert home.status_code == 200
        assert f'href="/q/work/job/{old}"' in home.text, "the oldest waiting job"
        assert "no jobs yet" in home.text, "a queue with nothing enqueued yet"
        page = c.get("/q/work")
        assert page.status_code == 200 and f'data-job-id="{old}"' in page.text and new not in page.text
        assert "no worker serves this queue" in page.text
        listed = c.get("/q/work/jobs", params={"state": "processing"})
        assert f'data-job-id="{new}"' in listed.text
        by_type = c.get("/q/work/jobs", params={"state": "queued", "type": "mail"})
        assert old not in by_type.text
        by_user = c.get("/q/work/jobs", params={"user": "ann"})
        assert f'data-job-id="{old}"' in by_user.text
        job = c.get(f"/q/work/job/{new}")
        assert job.status_code == 200
        for text in ('value="40.0"', "sending", "looks slow", "https://example.com/log.txt", "processing"):
            assert text in job.text
        assert c.get(f"/q/work/job/{new}/json").json()["progress"]["percent"] == 40
        assert "Waited on by" in job.text and f'href="/q/work/job/{child}"' in job.text, "its dependents"
        assert f'href="/q/work/job/{new}"' in c.get(f"/q/work/job/{child}").text, "what it depends on"
        assert c.get("/q/work/counts").json()["counts"]["queued"] == 1
        found = c.get("/q/work/find", params={"id": new}, follow_redirects=False)
        assert found.status_code == 303 and found.headers["location"] == f"/q/work/job/{new}"
        missing = c.get("/q/work/find", params={"id": "nope"}, follow_redirects=True)
        assert "no job" in missing.text
        assert c.get("/q/unknown").status_code == 404
        assert c.get("/q/work/job/nope").status_code == 404
        assert c.get("/q/work", params={"minutes": "99999"}).status_code == 400
        assert "unknown state" in c.get("/q/work/jobs", params={"state": "zzz"}).text
        deep = c.get("/q/work/jobs", params={"state": "queued", "cursor": "5"})
        assert deep.status_code == 200 and "no jobs" in deep.text
    assert keyspace_fingerprint(redis_sync) == before, "pages only read"


def test_user_data_renders_as_text(q: SyncQueue, dashboard: Callable[..., Running]) -> None:
    jid = q.enqueue("t", {"html": XSS, "quote": "\"'><img src=x onerror=alert(2)>"}, user_id="ann").id
    token = str(q.transition(jid, "processing").token)
    q.comment(jid, XSS, actor="bob")
    q.fail(jid, {"code": "boom", "message": XSS, "traceback": XSS}, token=token)
    with client_for(dashboard()) as c:
        for path in (f"/q/work/job/{jid}", "/q/work/jobs?state=failed"):
            body = c.get(path).text
            assert "<script>alert" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in c.get(f"/q/work/job/{jid}").text


def test_actions_go_through_the_queue_api_as_the_user(
    q: SyncQueue, dashboard: Callable[..., Running], redis_sync: redis.Redis, url: str
) -> None:
    a = q.enqueue("t", {"n": 1}).id
    b = q.enqueue("t", {"n": 2}).id
    with client_for(dashboard()) as c:
        csrf = csrf_of(c, f"/q/work/job/{a}")
        done = c.post(f"/q/work/job/{a}/cancel", data={"csrf": csrf, "reason": "not needed"}, follow_redirects=False)
        assert done.status_code == 303 and "cancelled" in done.headers["location"]
        assert q.get(a).status == JOB.cancelled
        entry = job_history(redis_sync, "rjobs:{work}:", a)[-1]
        assert entry["actor"] == "human:dashboard" and entry["to"] == JOB.cancelled
        again = c.post(f"/q/work/job/{a}/cancel", data={"csrf": csrf}, headers={"accept": "application/json"})
        assert again.status_code == 409 and again.json()["ok"] is False
        before = keyspace_fingerprint(redis_sync)
        bad = c.post(
            f"/q/work/job/{a}/retry", data={"csrf": csrf, "params": "{nope"}, headers={"accept": "application/json"}
        )
        assert bad.status_code == 400 and "JSON" in bad.json()["message"]
        assert keyspace_fingerprint(redis_sync) == before, "a refused action writes nothing"
        ok = c.post(
            f"/q/work/job/{a}/retry", data={"csrf": csrf, "params": '{"n": 10}'}, headers={"accept": "application/json"}
        )
        assert ok.json() == {"ok": True, "message": f"job {a} sent back to {JOB.ready}"}
        assert q.get(a).params == {"n": 10} and q.get(a).status == JOB.ready
        prio = c.post(
            f"/q/work/job/{b}/priority", data={"csrf": csrf, "priority": "9"}, headers={"accept": "application/json"}
        )
        assert prio.status_code == 200 and q.get(b).priority == 9
        paused = c.post(
            "/q/work/pause", data={"csrf": csrf, "reason": "deploy"}, headers={"accept": "application/json"}
        )
        assert paused.json()["ok"] and q.paused() is not None and q.paused()["by"] == "human:dashboard"
        assert "deploy" in c.get("/q/work").text
        c.post("/q/work/resume", data={"csrf": csrf}, headers={"accept": "application/json"})
        assert q.paused() is None
        bulk = c.post(
            "/q/work/bulk", data={"csrf": csrf, "action": "cancel", "state": JOB.ready, "type": "t"},
            headers={"accept": "application/json"},
        )  # fmt: skip
        assert bulk.json()["message"] == "cancel: 2 of 2 job(s) done"
        assert q.counts()[JOB.cancelled] == 2
        retried = c.post(
            "/q/work/bulk", data={"csrf": csrf, "action": "retry", "state": JOB.cancelled},
            headers={"accept": "application/json"},
        )  # fmt: skip
        assert retried.json()["message"] == "retry: 2 of 2 job(s) done" and q.counts()[JOB.ready] == 2
        refused = c.post("/q/work/bulk", data={"csrf": csrf, "action": "delete", "state": JOB.ready})
        assert refused.status_code == 303 and "refused" in refused.headers["location"]
    assert_indexes_consistent(redis_sync, "work", JOB)


def test_read_only_hides_and_refuses_every_action(
    q: SyncQueue, dashboard: Callable[..., Running], redis_sync: redis.Redis
) -> None:
    jid = q.enqueue("t").id
    running = dashboard(read_only=True)
    before = keyspace_fingerprint(redis_sync)
    with client_for(running) as c:
        csrf = csrf_of(c, f"/q/work/job/{jid}")
        assert "/cancel" not in c.get(f"/q/work/job/{jid}").text and "/pause" not in c.get("/q/work").text
        for path in (f"/q/work/job/{jid}/cancel", f"/q/work/job/{jid}/retry", f"/q/work/job/{jid}/priority",
                     "/q/work/bulk", "/q/work/pause", "/q/work/resume"):  # fmt: skip
            assert c.post(path, data={"csrf": csrf, "action": "cancel", "state": "queued"}).status_code == 403
    assert keyspace_fingerprint(redis_sync) == before
    assert q.get(jid).status == JOB.ready


def test_queue_page_draws_the_metrics_as_svg(q: SyncQueue, dashboard: Callable[..., Running]) -> None:
    """The charts read Queue.metrics: the minute of this test holds its jobs."""
    ids = [q.enqueue("t", {"n": n}).id for n in range(3)]
    for jid, ok in zip(ids[:2], (True, False)):
        token = str(q.transition(jid, "processing").token)
        if ok:
            q.complete(jid, 1, token=token)
        else:
            q.fail(jid, {"code": "boom", "message": "no"}, token=token)
    with client_for(dashboard()) as c:
        page = c.get("/q/work", params={"minutes": "30"}).text
    assert page.count("<svg") == 3 and "Failure rate" in page and "Throughput" in page
    assert "enqueued 3</span>" in page and "finished 2</span>" in page and "failed / finished 50%</span>" in page
    points = re.findall(r'<polyline class="c1" points="([^"]+)"', page)
    assert len(points) == 1 and len(points[0].split()) == 30, "one point per minute of the window"


def test_the_command_serves_until_interrupted(fresh_server: LocalServer) -> None:
    """The real command, once (a new Valkey of its own: the server kind does not matter here)."""
    url = fresh_server.url
    SyncQueue("work", url).enqueue("t")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rjobs", "dashboard", "--url", url, "-q", "work", "--port", str(port), "--read-only"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                counts = httpx.get(f"http://127.0.0.1:{port}/q/work/counts", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "rjobs dashboard did not start"
                time.sleep(0.1)
        assert counts["counts"][JOB.ready] == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        out = proc.stdout.read() if proc.stdout else ""
        assert f"rjobs dashboard on http://127.0.0.1:{port}/" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
