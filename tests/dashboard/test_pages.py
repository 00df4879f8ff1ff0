"""Paging a queue's jobs (rjobs.client.pages, ``Queue.page``): newest first from a cursor, filters on
type, owner and error code, and a bounded number of index entries read per request, however deep
the page or rare the matches. Against the real servers, with the keyspace checked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from rjobs import JobRequest, SyncQueue, ValidationError, machines
from rjobs.client.pages import PAGE_SCAN
from tests.helpers import keyspace_fingerprint
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("pages", url, actor="ops") as queue:
        yield queue


def fail(q: SyncQueue, job_id: str, code: str) -> None:
    token = str(q.transition(job_id, "processing").token)
    q.fail(job_id, {"code": code, "message": "it broke"}, token=token)


def test_pages_read_on_from_the_cursor_newest_first(q: SyncQueue, redis_sync: redis.Redis) -> None:
    ids = [q.enqueue("t", {"n": n}).id for n in range(7)]
    first = q.page(JOB.ready, limit=3)
    assert [j.id for j in first.jobs] == ids[::-1][:3]
    assert first.scanned == 3 and first.next_cursor == "3"
    second = q.page(JOB.ready, cursor=first.next_cursor, limit=3)
    third = q.page(JOB.ready, cursor=second.next_cursor, limit=3)
    assert [j.id for j in second.jobs + third.jobs] == ids[::-1][3:]
    assert third.next_cursor is None
    assert q.page(JOB.ready, cursor="100").jobs == []
    assert [j.id for j in q.page(JOB.ready, limit=2, oldest_first=True).jobs] == ids[:2]
    assert_indexes_consistent(redis_sync, "pages", JOB)


def test_filters_on_type_owner_and_error_code(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a = q.enqueue("resize", user_id="ann").id
    b = q.enqueue("mail", user_id="bob").id
    c = q.enqueue("resize", user_id="bob").id
    assert [j.id for j in q.page(JOB.ready, type="resize").jobs] == [c, a]
    assert [j.id for j in q.page(user_id="bob").jobs] == [c, b]
    assert [j.id for j in q.page(JOB.ready, user_id="bob", type="mail").jobs] == [b]
    fail(q, a, "timeout")
    fail(q, b, "quota")
    page = q.page(JOB.failure, error_code="quota")
    assert [j.id for j in page.jobs] == [b] and page.next_cursor is None and page.scanned == 2
    assert [j.id for j in q.page(JOB.failure, error_code="quota", type="resize").jobs] == []
    assert_indexes_consistent(redis_sync, "pages", JOB)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"state": "nope"}, "unknown state"),
        ({"state": None}, "needs a state or a user"),
        ({"state": "queued", "cursor": "-1"}, "cursor"),
        ({"state": "queued", "cursor": "x"}, "cursor"),
        ({"state": "queued", "limit": 0}, "limit"),
        ({"state": "queued", "limit": 10_000}, "limit"),
        ({"state": "queued", "type": "a b"}, "job type"),
        ({"state": "queued", "user_id": "{x}"}, "user id"),
        ({"state": "queued", "error_code": ""}, "error_code"),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(
    q: SyncQueue, redis_sync: redis.Redis, kwargs: dict[str, object], words: str
) -> None:
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync)
    kwargs = dict(kwargs)
    state = kwargs.pop("state")
    with pytest.raises(ValidationError, match=words):
        q.page(state, **kwargs)  # type: ignore[arg-type]
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.slow
def test_a_deep_page_and_a_rare_filter_read_a_bounded_number_of_entries(url: str, redis_sync: redis.Redis) -> None:
    """With 100,000 ready jobs a page 99,000 entries deep reads one page of the index, and a
    filter that matches nothing reads at most PAGE_SCAN entries, then hands back a cursor."""
    total = 100_000
    with SyncQueue("big", url) as q:
        for start in range(0, total, 5000):
            q.enqueue_many([JobRequest(type="bulk", params=n) for n in range(start, start + 5000)])
        q.enqueue("rare")
        assert q.counts()[JOB.ready] == total + 1
        deep = q.page(JOB.ready, cursor="99000", limit=50)
        assert deep.scanned == 50 and len(deep.jobs) == 50 and deep.next_cursor == "99050"
        assert [j.params for j in deep.jobs[:2]] == [total - 1 - 98_999, total - 1 - 99_000]
        missing = q.page(JOB.ready, type="never", cursor="1000")
        assert missing.jobs == [] and missing.scanned == PAGE_SCAN
        assert missing.next_cursor == str(1000 + PAGE_SCAN), "reads on from where it stopped"
        rare = q.page(JOB.ready, type="rare")
        assert [j.type for j in rare.jobs] == ["rare"] and rare.scanned <= PAGE_SCAN
        tail = q.page(JOB.ready, type="never", cursor=str(total - 10))
        assert tail.scanned == 11 and tail.next_cursor is None, "the index ended"
    assert redis_sync.zcard("rjobs:{big}:state:" + JOB.ready) == total + 1
