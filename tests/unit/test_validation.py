"""Input validation before any Redis call (no server): names cannot forge keys."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from rjobs.client.operations import QueuePlans, to_job_error
from rjobs.config import PRIORITIES, QueueConfig, Retention, parse_priority
from rjobs.errors import ValidationError
from rjobs.machines import JOB
from rjobs.models import JobError, JobRequest, Undecodable
from rjobs.store.codec import MAX_DEPTH, decode_stored, encode_json, json_depth
from rjobs.store.keys import MACHINE_PATTERN, QueueKeys, queue_of_machine_key, validate_dedupe_key, validate_name

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
    for key in (
        k.machine,
        k.lane("t"),
        k.wake("t"),
        k.lanes,
        k.delayed,
        k.leases,
        k.events,
        k.job("j1"),
        k.state("queued"),
        k.owner("u1"),
    ):
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


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class Point(msgspec.Struct):
    x: float


@pytest.mark.parametrize(
    "bad",
    [
        math.nan,
        {"a": [1, None, math.inf]},
        [Point(-math.inf)],
        {"deep": _nested(MAX_DEPTH)},  # one level too many
        _nested(5000),  # would be a RecursionError
        {"text": "lone \ud800 surrogate"},
        {"\udfff": 1},
        object(),
    ],
)
def test_payloads_json_cannot_carry_faithfully_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        encode_json(bad)
    with pytest.raises(ValidationError):
        plans().spec(JobRequest(type="t", params=bad))


def test_payloads_at_the_bounds_and_brackets_in_text_are_fine() -> None:
    assert json_depth(encode_json(_nested(MAX_DEPTH))) == MAX_DEPTH
    assert encode_json({"s": "[" * 500 + "{" * 500, "n": None, "x": 1.5}).startswith(b"{")
    assert encode_json({"k": "é ünïcode ✓"}) == '{"k":"é ünïcode ✓"}'.encode()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, 10**400, -1])
def test_delays_and_times_must_be_finite_and_in_range(value: float) -> None:
    with pytest.raises(ValidationError):
        plans().spec(JobRequest(type="t", delay=value))
    with pytest.raises(ValidationError):
        plans().spec(JobRequest(type="t", run_at=value))


@pytest.mark.parametrize(
    "error",
    [
        {"code": "E", "message": "m", "retry_after_ms": -1},
        {"code": "E", "message": "m", "retry_after_ms": True},
        {"code": "E", "message": "m", "retry_after_ms": "soon"},
        {"code": "E", "message": "m", "extra": 1},
        {"code": "", "message": "m"},
        {"message": "m"},
        JobError(code="E", message="m", retry_after_ms=-5),
    ],
)
def test_structured_errors_from_callers_are_checked(error: object) -> None:
    with pytest.raises(ValidationError):
        to_job_error(error)  # type: ignore[arg-type]


def test_a_good_error_dict_passes() -> None:
    assert to_job_error({"code": "RATE", "message": "m", "retry_after_ms": 0}).retry_after_ms == 0


def test_stored_payloads_that_cannot_be_decoded_are_marked_not_raised() -> None:
    for raw in (b"[" * 990 + b"]" * 990, b"not json", b"\xff\xfe"):
        assert isinstance(decode_stored(raw), Undecodable)
    assert decode_stored(b'{"a": [1]}') == {"a": [1]} and decode_stored(None) is None


def test_exception_text_with_lone_surrogates_can_still_be_recorded() -> None:
    from rjobs.worker.functions import describe_error

    err = describe_error(ValueError("bad \ud800 byte"), traceback="tb \udc80")
    assert b"\\ud800" in encode_json(err) and "\\udc80" in (err.traceback or "")


def test_a_job_enqueued_without_params_gets_the_empty_value_of_its_type() -> None:
    import msgspec

    from rjobs.worker.functions import JobFunction

    class Options(msgspec.Struct):
        size: int = 100

    class Needs(msgspec.Struct):
        size: int

    def fn(ctx: Any, params: Any) -> None:
        return None

    def converted(tp: Any) -> Any:
        return JobFunction(fn, params=tp).convert_params(None)

    assert converted(dict) == {} and converted(dict[str, int]) == {} and converted(list[int]) == []
    assert converted(Options) == Options(size=100) and converted(dict | None) is None
    for no_empty in (Needs, int, str):
        with pytest.raises(msgspec.ValidationError):  # the job fails as invalid_params, no retries
            converted(no_empty)
    assert JobFunction(fn, params=dict).convert_params({"a": 1}) == {"a": 1}
