"""Every script fuzzed through a raw ``EVALSHA``, as redis-cli would send it: numbers that are NaN,
infinite, huge, negative or not numbers at all, empty and unicode text, wrong field counts, forged
keys. A refused call (an error reply) leaves every key exactly as it was (compared by content);
an accepted one keeps every invariant of the queue (tests/invariants.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rjobs import Cron, JobRequest, SyncQueue, machines
from rjobs.store.scripts import load_script, script_names
from tests.helpers import keyspace_fingerprint, script_for
from tests.invariants import assert_indexes_consistent

pytestmark = pytest.mark.slow
JOB = machines.JOB
QUEUE = "fuzz"
PREFIX = f"rjobs:{{{QUEUE}}}:"

#: Numbers as they may arrive in ARGV from anyone.
NUMBERS = st.one_of(
    st.integers(-5, 20).map(str),
    st.integers(-(2**63), 2**63).map(str),
    st.sampled_from(
        ["nan", "NaN", "inf", "-inf", "1e309", "-1e309", "1e3", "1.5", "0x10", " 5", "5 ", "", "abc", "½", "0", "-0"]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
TEXT = st.one_of(
    st.sampled_from(["", "a", "x" * 1001, "x" * 70000, "é", "\u202e", "a b", "{}", "null", '{"a":1}', "a:b", "{q}"]),
    st.text(max_size=40),
)
NAMES = st.one_of(st.sampled_from(["w1", "ok_name", "a.b-c"]), TEXT)
STATES = st.sampled_from([*JOB.states, "", "nope", "queued|x", "#queued", "queued>processing"])
FLAGS = st.sampled_from(["0", "1", "", "2", "true"])
#: W3C trace contexts as enqueue.lua receives them (field ``trace``): valid, near misses, hostile.
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACES = st.one_of(
    st.sampled_from([
        "", TRACE, TRACE + ";congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", TRACE.upper(), "ff" + TRACE[2:], TRACE[:-1],
        TRACE + "-x", TRACE + ";" + "a" * 600, TRACE + ";\x01", "01" + TRACE[2:] + "-00ab",
    ]),
    TEXT,
)  # fmt: skip
CRONS = st.sampled_from(["* * * * *", "0 3 * * *", "*/5 1-3 * jan mon-fri", "61 * * * *", "* * * *", "L * * * *"])


def ids(jobs: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(jobs), NAMES)


def tokens(q: SyncQueue, jobs: list[str]) -> st.SearchStrategy[str]:
    current = [str(q.get(j).token) for j in jobs if q.get(j).token]
    return st.one_of(st.sampled_from(current or ["1"]), NUMBERS)


def argv_for(name: str, q: SyncQueue, jobs: list[str]) -> st.SearchStrategy[list[str]]:
    """Mostly well-formed ARGV for ``name`` (after the prefix), with hostile values mixed in."""
    job, tok = ids(jobs), tokens(q, jobs)
    if name == "enqueue":
        record = st.tuples(
            st.one_of(st.just(""), NAMES),
            NAMES,
            TEXT,
            NUMBERS,
            st.one_of(st.just(""), NAMES),
            NUMBERS,
            NUMBERS,
            NUMBERS,
            st.one_of(st.just(""), TEXT),
            st.sampled_from(["keep", "replace", "reuse", "", "KEEP"]),
            FLAGS,
            st.sampled_from(["fail", "cancel", ""]),
            FLAGS,
            st.one_of(st.just(""), NAMES),
            TRACES,
        ).flatmap(lambda r: st.lists(job, max_size=3).map(lambda deps: [*r, str(len(deps)), *deps]))
        return st.tuples(NAMES, st.lists(record, min_size=1, max_size=3)).map(
            lambda t: [t[0], str(len(t[1])), *[x for r in t[1] for x in r]]
        )
    if name in ("transition", "finish"):
        request = st.tuples(job, tok, STATES, TEXT, TEXT, NUMBERS, TEXT, FLAGS, NUMBERS, FLAGS)
        return st.tuples(NAMES, st.lists(request, min_size=1, max_size=3)).map(
            lambda t: [t[0], str(len(t[1])), *[x for r in t[1] for x in r]]
        )
    if name == "heartbeat":  # the worker's details (info) at the end, or not
        pairs = st.lists(st.tuples(job, tok), max_size=3)
        info = st.one_of(st.just([]), TEXT.map(lambda x: [x]))
        return st.tuples(NAMES, NUMBERS, FLAGS, pairs, info).map(
            lambda t: [t[0], t[1], t[2], str(len(t[3])), *[x for p in t[3] for x in p], *t[4]]
        )
    if name == "claim":  # the job types: '*', a counted list (duplicates too), or a count that lies
        types = st.one_of(
            st.just(["*"]),
            st.lists(st.one_of(st.sampled_from(["t", "t"]), NAMES), max_size=4).map(lambda ts: [str(len(ts)), *ts]),
            st.tuples(NUMBERS, st.lists(NAMES, max_size=2)).map(lambda t: [t[0], *t[1]]),
        )
        return st.tuples(NAMES, NUMBERS, NUMBERS, NUMBERS, types).map(lambda t: [*t[:4], *t[4]])
    if name == "delete":  # the ids: a counted list (duplicates too), or a count that lies
        policy = st.sampled_from(["refuse", "fail", "cancel", "delete", "", "orphan"])
        ids_ = st.one_of(
            st.lists(job, min_size=1, max_size=4).map(lambda xs: [str(len(xs)), *xs]),
            st.tuples(NUMBERS, st.lists(job, max_size=2)).map(lambda t: [t[0], *t[1]]),
        )
        return st.tuples(NAMES, st.one_of(st.just(""), NAMES), FLAGS, policy, ids_).map(lambda t: [*t[:4], *t[4]])
    simple: dict[str, Any] = {
        "retry": st.tuples(NAMES, job, TEXT),
        "progress": st.tuples(NAMES, job, tok, NUMBERS, TEXT, FLAGS),
        "reap": st.tuples(NUMBERS, NUMBERS, NUMBERS, NUMBERS),
        "add_asset": st.tuples(NAMES, job, tok, NAMES, NAMES, TEXT, NAMES, FLAGS),
        "comment": st.tuples(NAMES, job, tok, TEXT),
        "set_priority": st.tuples(NAMES, job, NUMBERS),
        "invalidate": st.tuples(TEXT),
        "pause": st.tuples(NAMES, FLAGS, TEXT),
        "set_limit": st.tuples(
            st.one_of(st.sampled_from(["g:a", "t:t", "x:a", "g:"]), TEXT), NUMBERS, NUMBERS, NUMBERS
        ),
        "backoff": st.tuples(st.one_of(st.sampled_from(["g:a", "t:t", "g:none"]), TEXT), NUMBERS),
        "name_actors": st.tuples(NUMBERS, st.one_of(st.sampled_from(["human", "agent", "robot"]), TEXT), NAMES, TEXT),
        "drain": st.tuples(NAMES, NUMBERS),
        "obliterate": st.tuples(NAMES, FLAGS, NUMBERS),
        "set_schedule": st.tuples(
            NAMES, NAMES, NAMES, st.one_of(CRONS, TEXT), NUMBERS, TEXT, TEXT, NUMBERS, NUMBERS, TEXT, NUMBERS, NUMBERS
        ),
        "remove_schedule": st.tuples(NAMES),
        "cron_tick": st.tuples(NAMES, st.sampled_from(["poll", "c"]), NUMBERS, NUMBERS),
        "declare_machine": st.tuples(TEXT, NUMBERS, FLAGS, TEXT, TEXT, TEXT, NUMBERS),
    }
    return simple[name].map(list)


#: Changes to an otherwise valid call's shape: extra or missing arguments, forged keys.
SHAPES = st.sampled_from(["as is", "as is", "as is", "as is", "drop last", "add one", "other queue", "bad prefix"])
#: What replaces one argument of a valid call.
HOSTILE = st.sampled_from(
    [
        "nan",
        "-nan",
        "inf",
        "-inf",
        "1e309",
        "-1",
        "0",
        "99999999999999999999",
        "9007199254740993",
        "1.5",
        "0x10",
        " 5",
        "",
        "x" * 1001,
        "x" * 70000,
        "é",
        "{other}",
        "a:b",
        "queued|x",
        "\x00",
    ]
)


class State:
    """The fuzzed queue: jobs in every state the scripts handle, topped up before each call."""

    def __init__(self, q: SyncQueue) -> None:
        self.q = q
        self.tokens: dict[str, str] = {}

    def ensure(self) -> dict[str, list[str]]:
        q = self.q
        if not q.client.exists(q.backend.keys.machine):  # obliterated by a forced call: declare anew
            q.declare()
        by_state = {s: [j.id for j in q.list(state=s, limit=20)] for s in JOB.states}
        if len(by_state[JOB.ready]) < 3:
            q.enqueue_many([JobRequest(type="t", params={"i": i}, user_id="u1") for i in range(5)])
        if not by_state[JOB.delayed]:
            q.enqueue("t", delay=3600, dedupe_key="dk")
        if not by_state["processing"]:
            for job in q.backend.run(q.backend.scripts.claim("w1", 2, 60_000)).jobs:
                self.tokens[job.id] = job.token
        if not by_state[JOB.waiting] and by_state[JOB.ready]:
            q.enqueue("t", depends_on=[by_state[JOB.ready][0]])
        if not by_state[JOB.failure] or not by_state[JOB.cancelled]:
            a, b = q.enqueue("t").id, q.enqueue("t").id
            q.fail(a, "boom", token=str(q.transition(a, "processing").token))
            q.cancel(b)
        if not q.schedules():
            q.set_schedule(Cron("poll", "t", every=1, missed="once"))
            q.set_schedule(Cron("c", "t", cron="* * * * *"))
        return {s: [j.id for j in q.list(state=s, limit=20)] for s in JOB.states}

    def token(self, job_id: str) -> str:
        return str(self.q.get(job_id).token)


def valid_argv(name: str, st8: State, jobs: dict[str, list[str]], pick: Callable[[list[str]], str]) -> list[str]:
    """A call of ``name`` the script accepts (after the prefix), on the current jobs."""
    ready, leased = jobs[JOB.ready], jobs["processing"]
    finished = jobs[JOB.failure] + jobs[JOB.cancelled]
    lj = pick(leased)
    if name == "enqueue":
        return ["fuzzer", "1", "", "t", '{"a":1}', "5", "u1", "0", "0", "3", "k1", "replace", "1", "fail", "0", "",
                TRACE, "1", pick(ready)]  # fmt: skip
    if name == "claim":
        return ["w1", "2", "30000", "100", "2", "t", "t"]
    if name == "heartbeat":
        return ["w1", "30000", "1", "1", lj, st8.token(lj), '{"id":"w1","queues":["fuzz"]}']
    if name == "transition":
        return ["fuzzer", "1", pick(ready), "", JOB.delayed, "", "", "-60000", "note", "0", "0", "0"]
    if name == "finish":
        return ["w1", "1", lj, st8.token(lj), JOB.success, '{"r":2}', "", "0", "", "0", "0", "0"]
    if name == "retry":
        return ["fuzzer", pick(finished), '{"new":1}']
    if name == "progress":
        return ["w1", lj, st8.token(lj), "42.5", "step", "0"]
    if name == "reap":
        return ["100", "3", "100", "60000"]
    if name == "add_asset":
        return ["fuzzer", lj, st8.token(lj), "", "a1", '{"url":"s3://x"}', "image", "0"]
    if name == "comment":
        return ["fuzzer", pick(ready), "", "hello"]
    if name == "set_priority":
        return ["fuzzer", pick(ready), "7"]
    if name == "invalidate":
        return ["dk"]
    if name == "pause":
        return ["fuzzer", "1", "maintenance"]
    if name == "set_limit":
        return ["g:a", "2", "10", "1000"]
    if name == "name_actors":
        return ["1", "human", "alice", "Alice Smith"]
    if name == "backoff":
        st8.q.set_limit(group="a", concurrency=5)
        return ["g:a", "1000"]
    if name == "delete":
        return ["fuzzer", "u1", "0", "fail", "2", pick(finished), pick(ready)]
    if name == "drain":
        return ["fuzzer", "3"]
    if name == "obliterate":  # a leased job is always there: refused unless a mutation forces it
        return ["fuzzer", "0", "50"]
    if name == "set_schedule":
        return ["fuzzer", "c2", "t", "*/5 * * * *", "", "Europe/Paris", '{"a":1}', "5", "3", "once", "60",
                "99999999999999"]  # fmt: skip
    if name == "remove_schedule":
        return ["c2"]
    if name == "cron_tick":
        doc = json.loads(st8.q.client.hget(PREFIX + "schedules", "poll") or "{}")
        return ["w1", "poll", str(doc.get("next", 0)), ""]
    call = st8.q.backend.scripts.declare_machine(JOB, st8.q.config.redis_options(), True)
    return [str(a) for a in call.args[1:]]


@pytest.fixture
def fuzz_queue(url: str) -> Iterator[tuple[SyncQueue, list[str]]]:
    with SyncQueue(QUEUE, url, actor="fuzzer") as q:
        State(q).ensure()
        yield q, [j.id for j in q.list(limit=100)]


def raw_call(client: redis.Redis, name: str, argv: list[str], shape: str) -> Any:
    script = load_script(name)
    keys, prefix = [PREFIX + "machine", PREFIX + "events"], PREFIX
    if shape == "drop last" and argv:
        argv = argv[:-1]
    elif shape == "add one":
        argv = [*argv, "1"]
    elif shape == "other queue":
        keys = ["rjobs:{other}:machine", "rjobs:{other}:events"]
    elif shape == "bad prefix":
        prefix = "rjobs:{fuzz}:job:"
    source, sha = script_for(client, script)
    client.script_load(source)
    try:
        return client.execute_command("EVALSHA", sha, 2, *keys, prefix, *argv)
    except redis.ResponseError as exc:
        return exc


@pytest.mark.parametrize("name", script_names())
def test_raw_calls_refuse_cleanly_or_keep_every_invariant(
    name: str, fuzz_queue: tuple[SyncQueue, list[str]], redis_sync: redis.Redis
) -> None:
    q, jobs = fuzz_queue
    state = State(q)
    mutated = st.tuples(st.just("mutate"), st.data(), HOSTILE, SHAPES)
    free = st.tuples(st.just("free"), argv_for(name, q, jobs), st.just(""), SHAPES)

    @settings(
        max_examples=80,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )
    @given(st.one_of(mutated, mutated, mutated, free))
    def one(case: tuple[str, Any, str, str]) -> None:
        mode, data, hostile, shape = case
        current = state.ensure()
        if mode == "mutate":
            # always one draw per pick, whatever the queue holds now (hypothesis replays draws)
            argv = valid_argv(
                name, state, current, lambda xs: (xs or ["none"])[data.draw(st.integers(0, 99)) % max(1, len(xs))]
            )
            if data.draw(st.booleans()):
                at = data.draw(st.integers(0, len(argv) - 1))
                argv[at] = hostile
        else:
            argv = data
        before = keyspace_fingerprint(redis_sync)
        reply = raw_call(redis_sync, name, argv, shape)
        if isinstance(reply, redis.ResponseError):
            assert str(reply).startswith("RJ_"), f"{name} failed with a server error, not a refusal: {reply}"
            assert keyspace_fingerprint(redis_sync) == before, f"{name} refused ({reply}) but wrote"
        else:
            assert_indexes_consistent(redis_sync, QUEUE, JOB)

    check: Callable[[], None] = one
    check()
