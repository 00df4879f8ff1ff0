"""How a worker claims jobs: from its queues in their order (strict) or shared by weight
(weighted round robin, :func:`weighted_shares`), the partitions of one queue in turn (no
partition is always first), each claim shielded and bounded by the lease; on a cluster the claims
of the queues one master serves go out together, one round trip per node."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

import anyio

from rjobs.store.clients import is_cluster
from rjobs.store.cluster import run_by_node
from rjobs.store.scripts import ClaimResult
from rjobs.worker.pool import JobSlots, Served
from rjobs.worker.settings import QueueOrder
from rjobs.worker.stats import WorkerStats

__all__ = ["Claimer", "claim_groups", "claim_order", "claim_plan", "weighted_shares"]

log = logging.getLogger("rjobs.worker")
SEEN_EVERY = 5.0  # seconds between two claims that list the worker's types as served
T = TypeVar("T")


def claim_groups(served: Sequence[Served]) -> list[list[Served]]:
    """The served queues in their order, the partitions of one queue (``name#i``) grouped, so a
    claim takes them in turn (:func:`claim_order`) while separate queues keep their order."""
    groups: dict[str, list[Served]] = {}
    for s in served:
        groups.setdefault(group_name(s), []).append(s)
    return list(groups.values())


def group_name(served: Served) -> str:
    """The queue a served queue belongs to: its own name, or a partitioned queue's."""
    return served.queue.name.partition("#")[0]


def claim_order(groups: list[list[T]], turn: int) -> list[T]:
    """The order of one claim round: each group rotated by ``turn``, so no partition is always
    first (its jobs would always be claimed before the other partitions')."""
    if len(groups) == 1 and len(groups[0]) == 1:
        return groups[0]
    out: list[T] = []
    for group in groups:
        k = turn % len(group)
        out += group[k:] + group[:k]
    return out


def weighted_shares(weights: Sequence[float], credit: list[float], free: int) -> list[int]:
    """How many of ``free`` slots each group is offered in one claim round, by weighted round
    robin: each group earns ``free * weight`` credit, a share is a whole slot per ``sum(weights)``
    of credit, the slots left over go to the groups with the most credit left (ties: the earlier
    group), and each group pays for the slots it was offered. ``credit`` (one entry per group,
    starting at 0) carries over between rounds, so over rounds each group is offered
    ``free * weight / sum(weights)`` slots within one, whether or not it had jobs: an empty group
    is owed nothing when it fills. Deterministic, O(groups), no I/O."""
    total = sum(weights)
    shares = []
    for i, weight in enumerate(weights):
        credit[i] += free * weight
        shares.append(max(0, int(credit[i] // total)))
    left = free - sum(shares)
    while left != 0:  # at most one slot per group either way
        if left > 0:
            i = max(range(len(shares)), key=lambda g: (credit[g] - shares[g] * total, -g))
            shares[i] += 1
            left -= 1
        else:
            i = min((g for g in range(len(shares)) if shares[g] > 0), key=lambda g: (credit[g] - shares[g] * total, g))
            shares[i] -= 1
            left += 1
    for i, share in enumerate(shares):
        credit[i] -= share * total
    return shares


def claim_plan(groups: list[list[T]], turn: int, free: int, shares: list[int] | None = None) -> list[tuple[T, int]]:
    """One claim round: each queue (a group's partitions rotated by ``turn``, :func:`claim_order`)
    with the slots it is offered. A claim offers a queue what it is offered plus what the queues
    before it could not fill. Strict (``shares`` None): the first queue is offered every free slot,
    so the next is claimed from only when it has too few ready jobs. Weighted: each group's share
    goes to its first partition; the groups with a share come first, in their order, then the
    others (offered only what the earlier ones left)."""
    order = claim_order(groups, turn)
    if shares is None:
        return [(s, free if i == 0 else 0) for i, s in enumerate(order)]
    firsts: list[tuple[T, int]] = []
    rest: list[tuple[T, int]] = []
    at = 0
    for group, share in zip(groups, shares):
        part = order[at : at + len(group)]
        at += len(group)
        (firsts if share else rest).extend((s, share if j == 0 else 0) for j, s in enumerate(part))
    return firsts + rest


class Claimer:
    """Claims for one run of a worker: ``claim(jobs, free)`` leases at most ``free`` jobs of the
    job ``types`` the worker runs (each type's lane; other types wait for a worker that runs them)
    and hands them to the slots; returns (claimed, more ready, next due time in ms or None)."""

    def __init__(
        self,
        served: list[Served],
        worker_id: str,
        lease: float,
        stats: WorkerStats,
        types: Sequence[str] = (),
        order: QueueOrder | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.types = sorted(set(types))
        self._seen_at: dict[int, float] = {}  # per queue: when its lanes index last heard of us
        self._paused: set[str] = set()  # the queues whose last claim found them paused
        self.lease = lease
        self.stats = stats
        self._groups = claim_groups(served)
        self._weights = order.of([group_name(g[0]) for g in self._groups]) if order and self._groups else None
        if self._weights is not None and len(self._weights) < 2:
            self._weights = None  # one queue: nothing to share
        self._credit = [0.0] * len(self._groups)  # weighted round robin (weighted_shares)
        self._turn = 0
        self._by_node = len(served) > 1 and all(is_cluster(s.queue.client) for s in served)

    async def claim(self, jobs: JobSlots, free: int) -> tuple[int, bool, int | None]:
        """Claim at most ``free`` jobs (the slots with no job) and hand them to the slots."""
        claimed, more, due = 0, False, None
        self._turn += 1
        shares = None if self._weights is None else weighted_shares(self._weights, self._credit, free)
        plan = claim_plan(self._groups, self._turn, free, shares)
        if self._by_node and len(plan) > 1:
            return await self._claim_by_node(jobs, free, [s for s, _ in plan], shares and [q for _, q in plan])
        offered = 0  # what this queue is offered: its share and what the ones before left
        for served, share in plan:
            offered += share
            if free - claimed <= 0:
                return claimed, True, due
            want = min(free - claimed, offered, 1000)
            if want <= 0:  # weighted: its group's share is filled; claim again at once
                more = True
                continue
            sent = anyio.current_time()
            # Shielded: a claim that ran must be seen, or its jobs would sit leased to nobody. One
            # scope with its own deadline, rather than a shield inside a fail_after: one scope less
            # on the hot path.
            with anyio.CancelScope(shield=True, deadline=sent + self.lease) as bounded:
                result = await served.queue.backend.claim(
                    self.worker_id, want, int(self.lease * 1000), self.types, self._seen(served, sent)
                )
            if bounded.cancelled_caught:
                raise TimeoutError(f"no answer to claim within {self.lease} s")
            before = claimed
            claimed, more, due = self._took(jobs, served, result, sent, (claimed, more, due))
            offered -= claimed - before
        return claimed, more, due

    def _seen(self, served: Served, now: float) -> bool:
        """Whether this claim tells the queue's lanes index that a worker running our types came:
        every few seconds (stats count a type as served for 30 s), not on every claim."""
        last = self._seen_at.get(id(served))
        if last is not None and now - last < SEEN_EVERY:
            return False
        self._seen_at[id(served)] = now
        return True

    def _took(
        self, jobs: JobSlots, served: Served, result: ClaimResult, sent: float, tally: tuple[int, bool, int | None]
    ) -> tuple[int, bool, int | None]:
        """Hand one claim's jobs to the slots; the tally (claimed, more ready, next due) after it."""
        claimed, more, due = tally
        if result.paused != (served.queue.name in self._paused):  # said once per change
            self._paused ^= {served.queue.name}
            log.info("queue %s %s", served.queue.name, "is paused: no job is claimed" if result.paused else "resumed")
        self.stats.claim_calls += 1
        self.stats.claimed += len(result.jobs)
        jobs.add(served, result.jobs, sent + self.lease)
        if result.next_due_ms is not None:
            due = result.next_due_ms if due is None else min(due, result.next_due_ms)
        return claimed + len(result.jobs), more or result.ready_left > 0, due

    async def _claim_by_node(
        self, jobs: JobSlots, free: int, order: list[Served], quotas: list[int] | None = None
    ) -> tuple[int, bool, int | None]:
        """On a cluster: the claims of the queues one master serves go out together, one round
        trip per node (run_by_node). At most ``free`` jobs: the free slots are shared among as many
        queues as there are slots, the next ones in turn if those had nothing. Weighted
        (``quotas``, per queue of ``order``): first every queue with a share asks for it."""
        claimed, more, due = 0, False, None
        failure: BaseException | None = None
        rest, lease_ms = order, int(self.lease * 1000)
        while rest and claimed < free:
            left = free - claimed
            if quotas:  # weighted, the first round trip: the shares
                chunk = [s for s, q in zip(order, quotas) if q > 0]
                wants = [min(1000, q) for q in quotas if q > 0]
                rest, quotas = [s for s, q in zip(order, quotas) if q <= 0], None
            else:
                chunk, rest = rest[:left], rest[left:]
                wants = [min(1000, left // len(chunk) + (i < left % len(chunk))) for i in range(len(chunk))]
            sent = anyio.current_time()
            with anyio.CancelScope(shield=True, deadline=sent + self.lease) as bounded:  # see claim
                results = await run_by_node(
                    [
                        s.queue.backend.claim_call(self.worker_id, w, lease_ms, self.types, self._seen(s, sent))
                        for s, w in zip(chunk, wants)
                    ]
                )
            if bounded.cancelled_caught:
                raise TimeoutError(f"no answer to claim within {self.lease} s")
            for served, result in zip(chunk, results):
                if isinstance(result, BaseException):
                    failure = failure or result
                    continue
                claimed, more, due = self._took(jobs, served, result, sent, (claimed, more, due))
        if failure is not None:
            if not claimed:
                raise failure
            log.warning("claim failed on a queue (%s: %s); the others' jobs run", type(failure).__name__, failure)
        return claimed, more, due
