"""Input validation before any Redis call (no server): names cannot forge keys."""

from __future__ import annotations

import pytest

from rjobs.config import PRIORITIES, QueueConfig, Retention, parse_priority
from rjobs.errors import ValidationError
from rjobs.keys import MACHINE_PATTERN, QueueKeys, queue_of_machine_key, validate_dedupe_key, validate_name
from rjobs.machines import JOB
from rjobs.models import JobRequest
from rjobs.plans import QueuePlans

FORGERIES = ["a}b", "a{b", "x:y", "*", "a b", "line\nbreak", "x" * 300, "", "ü", "a?b", "[ab]"]


@pytest.mark.parametrize("bad", FORGERIES)
def test_names_that_could_forge_keys_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        QueueKeys(bad)
    with pytest.raises(ValidationError):
        validate_name("job id", bad)


@pytest.mark.parametrize("bad", ["a}b", "a{b", "*", "line\nbreak", "x" * 300, "", "a b"])
def test_dedupe_keys_are_validated(bad: str) -> None:
    with pytest.raises(ValidationError):
        validate_dedupe_key(bad)


def test_dedupe_keys_allow_readable_separators() -> None:
    assert validate_dedupe_key("thumb:user42/img-1") == "thumb:user42/img-1"


def test_keys_share_one_hash_tag() -> None:
    k = QueueKeys("images")
    for key in (k.machine, k.ready, k.delayed, k.leases, k.events, k.job("j1"), k.state("queued"), k.owner("u1")):
        assert key.startswith("rjobs:{images}:")


def test_priorities() -> None:
    assert parse_priority("critical") == 10 and parse_priority("low") == 1 and parse_priority(7) == 7
    assert [PRIORITIES[n] for n in ("low", "normal", "high", "urgent", "critical")] == sorted(PRIORITIES.values())
    for bad in (0, 11, 3.5, True, "highest", None):
        with pytest.raises(ValidationError):
            parse_priority(bad)  # type: ignore[arg-type]


def plans() -> QueuePlans:
    return QueuePlans("q", JOB, QueueConfig(max_payload=100), "tester")


@pytest.mark.parametrize(
    "req",
    [
        JobRequest(type="bad type"),
        JobRequest(type="t", params="x" * 200),
        JobRequest(type="t", params=object()),
        JobRequest(type="t", priority=99),
        JobRequest(type="t", user_id="u:1"),
        JobRequest(type="t", delay=-1),
        JobRequest(type="t", delay=1, run_at=2),
        JobRequest(type="t", dedupe_key="a}b"),
        JobRequest(type="t", dedupe="sometimes"),
        JobRequest(type="t", max_attempts=0),
        JobRequest(type="t", depends_on=("a b",)),
        JobRequest(type="t", on_dependency_failure="ignore"),
        JobRequest(type="t", job_id="x:y"),
    ],
)
def test_bad_enqueue_requests_fail_before_redis(req: JobRequest) -> None:
    with pytest.raises(ValidationError):
        plans().spec(req)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ValidationError):
        QueueConfig(retention=Retention(success=-1)).validate()
    with pytest.raises(ValidationError):
        QueueConfig(max_payload=0).validate()


def test_queue_names_round_trip_through_the_machine_key() -> None:
    assert queue_of_machine_key(QueueKeys("img.v2").machine) == "img.v2"
    assert queue_of_machine_key("rjobs:{}:machine") is None and queue_of_machine_key("other:{q}:machine") is None
    assert MACHINE_PATTERN.replace("*", "q") == QueueKeys("q").machine
