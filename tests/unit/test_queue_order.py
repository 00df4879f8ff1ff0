"""The order between the queues a worker serves: the weighted round robin (weighted_shares), the
plan of one claim round (claim_plan), the Claimer's carry of unfilled slots (against a fake
backend: no server), and the checks of QueueOrder. Deterministic: no time, no I/O."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from rjobs.store.messages import ClaimResult
from rjobs.worker.claims import Claimer, claim_plan, weighted_shares
from rjobs.worker.settings import QueueOrder, parse_weights
from rjobs.worker.stats import WorkerStats


def rounds(weights: list[float], free: int, n: int) -> list[list[int]]:
    credit = [0.0] * len(weights)
    return [weighted_shares(weights, credit, free) for _ in range(n)]


def test_one_slot_at_a_time_follows_the_weights_smoothly() -> None:
    picks = [shares.index(1) for shares in rounds([5, 1], 1, 60)]
    assert Counter(picks) == {0: 50, 1: 10}
    for start in range(0, 60, 6):  # every window of 6 rounds: 5 and 1, not 5 in a row then 1
        assert Counter(picks[start : start + 6]) == {0: 5, 1: 1}
    assert picks[:6] == [0, 0, 0, 1, 0, 0]
    assert [s.index(1) for s in rounds([1, 1], 1, 6)] == [0, 1, 0, 1, 0, 1]


def test_many_slots_are_split_by_weight_and_the_remainders_rotate() -> None:
    out = rounds([5, 1], 10, 6)
    assert all(sum(shares) == 10 for shares in out)
    assert [sum(col) for col in zip(*out)] == [50, 10]
    three = rounds([1, 1, 1], 2, 3)
    assert [sum(col) for col in zip(*three)] == [2, 2, 2]
    assert rounds([3, 2, 1], 0, 2) == [[0, 0, 0], [0, 0, 0]]


def test_fractional_weights_and_changing_free_slots_stay_within_a_slot() -> None:
    credit = [0.0, 0.0]
    given = [0, 0]
    frees = [3, 1, 7, 2, 5, 1, 1, 4] * 10
    for free in frees:
        shares = weighted_shares([0.5, 1.5], credit, free)
        assert sum(shares) == free and min(shares) >= 0
        given = [g + s for g, s in zip(given, shares)]
        total = sum(given)
        assert abs(given[0] - total / 4) <= 1 and abs(given[1] - 3 * total / 4) <= 1


def test_a_strict_plan_offers_everything_to_the_first_queue() -> None:
    assert claim_plan([["a"], ["b"], ["c"]], 1, 8) == [("a", 8), ("b", 0), ("c", 0)]
    # partitions of one queue rotate; separate queues keep their order
    assert claim_plan([["a#0", "a#1"], ["b"]], 1, 4) == [("a#1", 4), ("a#0", 0), ("b", 0)]


def test_a_weighted_plan_puts_the_groups_with_a_share_first() -> None:
    plan = claim_plan([["a#0", "a#1"], ["b"], ["c"]], 2, 3, [0, 2, 1])
    assert plan == [("b", 2), ("c", 1), ("a#0", 0), ("a#1", 0)]
    assert claim_plan([["a#0", "a#1"], ["b"]], 1, 3, [2, 1]) == [("a#1", 2), ("a#0", 0), ("b", 1)]


class FakeBackend:
    """A queue's backend with ``ready`` jobs: claim leases up to what it is asked for."""

    def __init__(self, name: str, ready: int) -> None:
        self.name, self.ready, self.asked = name, ready, []

    async def claim(self, worker: str, want: int, lease_ms: int, types: Any, seen: bool) -> ClaimResult:
        self.asked.append(want)
        got = min(want, self.ready)
        self.ready -= got
        return ClaimResult([SimpleNamespace(id=f"{self.name}-{i}") for i in range(got)], self.ready, None)  # type: ignore[misc]


class FakeSlots:
    def __init__(self) -> None:
        self.taken: list[str] = []

    def add(self, served: Any, jobs: list[Any], deadline: float) -> None:
        self.taken += [served.queue.name] * len(jobs)


def claimer(ready: dict[str, int], order: QueueOrder) -> tuple[Claimer, FakeSlots, dict[str, FakeBackend]]:
    backends = {name: FakeBackend(name, n) for name, n in ready.items()}
    served = [
        SimpleNamespace(index=i, queue=SimpleNamespace(name=name, backend=b, client=None))
        for i, (name, b) in enumerate(backends.items())
    ]
    return Claimer(served, "w1", 30.0, WorkerStats(), ["t"], order), FakeSlots(), backends  # type: ignore[arg-type]


def run_rounds(c: Claimer, slots: FakeSlots, free: int, n: int) -> list[tuple[int, bool]]:
    async def go() -> list[tuple[int, bool]]:
        out = []
        for _ in range(n):
            claimed, more, _due = await c.claim(slots, free)  # type: ignore[arg-type]
            out.append((claimed, more))
        return out

    return anyio.run(go)


def test_the_claimer_follows_the_weights_one_slot_at_a_time() -> None:
    c, slots, backends = claimer({"high": 100, "low": 100}, QueueOrder("weighted", {"high": 2}))
    run_rounds(c, slots, 1, 30)
    assert Counter(slots.taken) == {"high": 20, "low": 10}
    assert slots.taken[:6] == ["high", "low", "high", "high", "low", "high"]
    assert sum(map(len, (b.asked for b in backends.values()))) == 30, "one claim call per round"


def test_an_empty_queue_passes_its_slots_on_and_starves_nobody() -> None:
    c, slots, backends = claimer({"big": 0, "small": 100}, QueueOrder("weighted", {"big": 9}))
    result = run_rounds(c, slots, 1, 20)
    assert slots.taken == ["small"] * 20, "every round fills its slot from the queue that has jobs"
    assert all(claimed == 1 for claimed, _ in result)
    backends["big"].ready = 100  # the big queue fills: it gets its share, not the rounds it missed
    slots.taken.clear()
    run_rounds(c, slots, 10, 10)
    assert Counter(slots.taken) == {"big": 90, "small": 10}


def test_strict_order_drains_the_first_queue_first() -> None:
    c, slots, backends = claimer({"a": 5, "b": 5}, QueueOrder())
    run_rounds(c, slots, 2, 5)
    assert slots.taken == ["a"] * 5 + ["b"] * 5
    assert backends["b"].asked == [1, 2, 2], "b is asked only for what a could not fill"


def test_a_skipped_partition_asks_for_another_round_at_once() -> None:
    c, slots, _ = claimer({"p#0": 1, "p#1": 5, "q": 0}, QueueOrder("weighted"))
    claimed, more = run_rounds(c, slots, 2, 1)[0]
    assert claimed >= 1 and (claimed == 2 or more)


@pytest.mark.parametrize(
    ("mode", "weights", "words"),
    [
        ("fair", None, "order must be"),
        ("strict", {"a": 1}, "need order='weighted'"),
        ("weighted", {"a": 0}, "above 0"),
        ("weighted", {"a": -1}, "above 0"),
        ("weighted", {"a": math.nan}, "above 0"),
        ("weighted", {"a": math.inf}, "above 0"),
        ("weighted", {"a": True}, "above 0"),
        ("weighted", {"a": "5"}, "above 0"),
        ("weighted", ["a"], "must map"),
    ],
)
def test_bad_orders_and_weights_are_refused(mode: str, weights: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        QueueOrder(mode, weights)


def test_weights_must_name_served_queues_and_parse_from_the_command_line() -> None:
    queues: Any = [SimpleNamespace(name="high"), SimpleNamespace(name="low#0"), SimpleNamespace(name="low#1")]
    QueueOrder(weights={"high": 5, "low": 1}).check(queues)  # a partitioned queue by its name
    with pytest.raises(ValueError, match="does not serve: \\['nope'\\]"):
        QueueOrder(weights={"nope": 1}).check(queues)
    assert QueueOrder(weights={"a": 2}).mode == "weighted" and QueueOrder().mode == "strict"
    assert parse_weights(["high=5", "low=0.5"]) == {"high": 5.0, "low": 0.5}
    assert parse_weights(None) is None
    for bad in (["high"], ["=5"], ["high=5", "high=1"]):
        with pytest.raises(ValueError, match="--weight"):
            parse_weights(bad)
    with pytest.raises(ValueError, match="above 0"):
        QueueOrder(weights=parse_weights(["high=x"]))
    base = QueueOrder("weighted", {"high": 5})
    assert base.configured(None, None) is base
    assert base.configured("weighted", None).weights == {"high": 5}
    assert base.configured("strict", None).mode == "strict"
    assert QueueOrder().configured(None, {"low": 2}).mode == "weighted"
