"""Redis Cluster: a queue's operations go to the master that owns the queue's slot.

Every key of a queue shares one hash tag, so a queue lives in one slot. :class:`ClusterRunner`
has the interface of :class:`rjobs.store.transport.AsyncRunner` and keeps one such runner per
master it has talked to, so the exactly-once rule and the lean links hold per node. It sends
each operation to the owner of the slot, and follows the cluster's answers:

- ``MOVED``: the slot has a new owner (a failover, a finished migration). Nothing ran; the op is
  sent again to the node named in the reply.
- ``ASK``: the slot is migrating and the keys the call declared are on the target already. The
  op is sent to the target, preceded on the same connection by ``ASKING``.
- ``TRYAGAIN`` (the call's keys are split between the two nodes of a migration), ``CLUSTERDOWN``,
  and a script stopped at a key that has moved away: nothing was written (a script reads every
  key it will write before its first write, docs/design.md), so the op is sent again after a
  back-off, for up to :data:`REDIRECT_WAIT` seconds.
- A connection error is not sent again: the script may have run. The next call asks the cluster
  which node owns the slot now.

This module is the async source of :mod:`rjobs.store.sync_cluster`, generated from it by
``scripts/unasync.py``: edit this file, then run the script.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

import redis
from redis.crc import key_slot

from rjobs.errors import RjobsError, ScriptError, ServerRefused, reply_text
from rjobs.store.clients import cluster_addresses, is_cluster, node_client_async
from rjobs.store.scripts import Call, Cmd, Op
from rjobs.store.transport import AsyncRunner
from rjobs.store.wire import nap_async

__all__ = ["REDIRECT_WAIT", "ClusterRunner", "node_runner", "redirect_of", "run_by_node", "runner_for"]

T = TypeVar("T")

#: How long a call keeps following TRYAGAIN / CLUSTERDOWN / moved-key answers before it raises.
REDIRECT_WAIT = 20.0
_ASKING = Cmd(("ASKING",))


def redirect_of(result: Any) -> tuple[str, tuple[str, int] | None] | None:
    """What a cluster answer tells the caller to do: ``("moved"|"ask", (host, port))``, or
    ``("wait", None)`` for an answer after which the same node may serve the op later; None when
    ``result`` is no such answer (a value, or an error of the op itself)."""
    if isinstance(result, ServerRefused):
        text = result.reply
    elif isinstance(result, ScriptError):
        text = str(result)
    elif isinstance(result, redis.ResponseError):
        text = reply_text(result)
    else:
        return None
    kind = text.split(" ", 1)[0]
    if kind in ("MOVED", "ASK"):
        host, _, port = text.split(" ")[2].rpartition(":")
        return kind.lower(), (host.strip("[]"), int(port))
    if kind in ("TRYAGAIN", "CLUSTERDOWN") or "non local key" in text or "non-local key" in text:
        return "wait", None
    return None


class ClusterRunner:
    """Sends one queue's operations to the cluster master that owns its slot (see the module)."""

    def __init__(self, client: Any, slot_key: str) -> None:
        self.cluster = client
        self.slot = key_slot(slot_key.encode())
        self._owner: tuple[str, int] | None = None

    @property
    def client(self) -> Any:
        """The redis client of the slot's owner as last known (blocking reads use it)."""
        return self._runner_at(self._owner or cluster_addresses(self.cluster)[0]).client

    def _runner_at(self, address: tuple[str, int]) -> AsyncRunner:
        return node_runner(self.cluster, address)

    def known_owner(self) -> AsyncRunner | None:
        """The runner of the slot's owner when it is known (no round trip), else None."""
        return None if self._owner is None else self._runner_at(self._owner)

    async def owner(self) -> AsyncRunner:
        """The runner of the slot's owner, asking the cluster (``CLUSTER SLOTS``) when unknown."""
        if self._owner is None:
            self._owner = await self._lookup()
        return self._runner_at(self._owner)

    def forget_owner(self) -> None:
        """Ask the cluster which node owns the slot before the next call (after a failure)."""
        self._owner = None

    async def _lookup(self) -> tuple[str, int]:
        failure: BaseException | None = None
        known = list(self.cluster.__dict__.get("_rjobs_node_runners", {}))  # nodes already talked to
        for address in dict.fromkeys([*known, *cluster_addresses(self.cluster)]):
            try:
                ranges = await self._runner_at(address).command(Cmd(("CLUSTER", "SLOTS")))
            except (redis.RedisError, RjobsError, OSError) as exc:
                failure = exc
                continue
            for start, end, master, *_ in ranges:
                if int(start) <= self.slot <= int(end):
                    host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                    return host or address[0], int(master[1])
        raise redis.ConnectionError(f"no cluster node answered for slot {self.slot}: {failure}")

    async def run(self, op: Call[T]) -> T:
        """Send one script call to the slot's owner exactly once per attempt that may have run."""
        result = (await self.run_many([op]))[0]
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    async def command(self, cmd: Cmd) -> Any:
        """Send one plain command to the slot's owner (raised errors as the node runner's)."""
        result = (await self.run_many([cmd]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip per node; each result is the decoded reply or the exception.
        Ops the cluster redirected did not run: they are sent where it says, with every plain
        read queued after the first of them (it ran before the op it was meant to observe)."""
        results: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        asking: tuple[str, int] | None = None
        delay, deadline = 0.005, time.monotonic() + REDIRECT_WAIT
        while True:
            runner = self._runner_at(asking) if asking is not None else await self.owner()
            batch = [ops[i] for i in todo]
            try:
                if asking is None:
                    replies = await runner.run_many(batch)
                else:
                    sent = [x for op in batch for x in (_ASKING, op)]
                    replies = (await runner.run_many(sent))[1::2]
            except (redis.ConnectionError, OSError):
                self._owner = None  # ask the cluster again next time: the node may have failed over
                raise
            redirected: list[int] = []
            target: tuple[str, tuple[str, int] | None] | None = None
            for i, reply in zip(todo, replies, strict=True):
                results[i] = reply
                found = redirect_of(reply)
                if found is not None:
                    redirected.append(i)
                    target = target or found
            if target is None:
                return results
            first = redirected[0]
            todo = sorted(set(redirected) | {i for i in todo if i > first and isinstance(ops[i], Cmd)})
            if time.monotonic() >= deadline:
                return results  # still redirected: the cluster's answers are the results
            kind, address = target
            asking = None
            if kind == "moved" and address is not None:
                self._owner = address
            elif kind == "ask" and address is not None:
                asking = address
            else:
                await nap_async(delay)
                delay = min(delay * 2, 0.2)
                self._owner = None

    def close(self) -> None:
        """Nothing of its own to close: the node runners are shared by every queue of the cluster
        client (their calls pipeline on one connection per node) and close with it
        (rjobs.store.clients.close_async)."""


def node_runner(cluster: Any, address: tuple[str, int]) -> AsyncRunner:
    """The runner of one node of ``cluster``, shared by every queue on that cluster client."""
    runners: dict[tuple[str, int], AsyncRunner] = cluster.__dict__.setdefault("_rjobs_node_runners", {})
    runner = runners.get(address)
    if runner is None:
        runner = runners[address] = AsyncRunner(node_client_async(cluster, *address))
    return runner


async def run_by_node(items: Sequence[tuple[Any, Call[Any]]]) -> list[Any]:
    """Send script calls of several queues, ``(runner, call)`` each, in one round trip per node:
    the calls of queues whose slots one master owns go out together over its connection. A call
    the cluster redirects did not run: it is sent again through its queue's runner, which follows
    the redirect. Each result is the call's value or its exception (not raised)."""
    results: list[Any] = [None] * len(items)
    nodes: dict[int, tuple[AsyncRunner, list[int]]] = {}
    alone: list[int] = []
    for i, (runner, _) in enumerate(items):
        owner = runner.known_owner() if isinstance(runner, ClusterRunner) else None
        if owner is None:
            alone.append(i)
        else:
            nodes.setdefault(id(owner), (owner, []))[1].append(i)
    for owner, members in nodes.values():
        try:
            replies = await owner.run_many([items[i][1] for i in members])
        except (redis.ConnectionError, OSError) as exc:
            for i in members:
                items[i][0].forget_owner()
                results[i] = exc
            continue
        for i, reply in zip(members, replies, strict=True):
            if redirect_of(reply) is None:
                results[i] = reply
            else:
                alone.append(i)
    for i in sorted(alone):
        runner, call = items[i]
        try:
            results[i] = await runner.run(call)
        except (RjobsError, redis.RedisError, OSError) as exc:
            results[i] = exc
    return results


def runner_for(client: Any, slot_key: str) -> AsyncRunner | ClusterRunner:
    """The runner for a queue whose keys hash like ``slot_key``: per slot on a cluster client."""
    return ClusterRunner(client, slot_key) if is_cluster(client) else AsyncRunner(client)
