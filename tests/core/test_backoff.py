from datetime import UTC, datetime
from email.utils import format_datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.model import RetryPolicy
from proxy.core.backoff import RetryPlanner, backoff_delay, parse_retry_after
from proxy.core.outcomes import CONNECT_FAILURE, STATUS, SUCCESS, TIMEOUT

POLICY = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=2.0, jitter=0.25)
ALMOST_ONE = 1.0 - 2.0**-53
NOW_WALL = 1_700_000_000.0


def low() -> float:
    return 0.0


def high() -> float:
    return ALMOST_ONE


def middle() -> float:
    return 0.5


@pytest.mark.parametrize("attempt", range(2, 11))
def test_every_attempt_is_within_its_jittered_bounds(attempt):
    capped = min(0.1 * 2 ** (attempt - 2), 2.0)
    assert backoff_delay(attempt, POLICY, low) == pytest.approx(capped * 0.75)
    assert backoff_delay(attempt, POLICY, high) == pytest.approx(capped * 1.25)
    assert backoff_delay(attempt, POLICY, middle) == pytest.approx(capped)


def test_delays_double_then_stay_at_the_cap():
    delays = [backoff_delay(k, POLICY, middle) for k in range(2, 40)]
    assert delays[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert delays[5:] == pytest.approx([2.0] * len(delays[5:]))
    assert all(a <= b for a, b in pairwise(delays))


def test_huge_attempt_numbers_stay_at_the_cap():
    assert backoff_delay(100_000, POLICY, middle) == pytest.approx(2.0)


def test_the_first_attempt_has_no_delay():
    with pytest.raises(ValueError):
        backoff_delay(1, POLICY, middle)


@given(
    attempt=st.integers(min_value=2, max_value=200),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=60),
    jitter=st.floats(min_value=0, max_value=1),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_jitter_keeps_the_delay_in_range(attempt, base, cap, jitter, draw):
    policy = RetryPolicy(base_delay=base, max_delay=cap, jitter=jitter)
    capped = min(base * 2.0 ** (attempt - 2), cap)
    delay = backoff_delay(attempt, policy, lambda: draw)
    assert capped * (1 - jitter) - 1e-9 <= delay <= capped * (1 + jitter) + 1e-9


# -- Retry-After -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"3", 3.0), ("120", 120.0), (b" 0 ", 0.0), (b"1.5", 1.5)],
)
def test_delta_seconds(value, seconds):
    assert parse_retry_after(value, NOW_WALL) == seconds


def test_http_date_in_the_future():
    when = datetime.fromtimestamp(NOW_WALL + 30, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW_WALL) == pytest.approx(30)


def test_http_date_in_the_past_means_now():
    when = datetime.fromtimestamp(NOW_WALL - 30, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True).encode(), NOW_WALL) == 0.0


@pytest.mark.parametrize("value", [b"-1", b"soon", b"", b"inf", b"nan", b"1e3", b"\xff\xfe"])
def test_garbage_is_ignored(value):
    assert parse_retry_after(value, NOW_WALL) is None


# -- the retry decision ------------------------------------------------------------------


def decide(
    planner: RetryPlanner,
    attempt: int = 1,
    kind=STATUS,
    status: int = 503,
    method: str = "GET",
    *,
    key: bool = False,
    replayable: bool = True,
    retry_after: float | None = None,
    time_left: float | None = None,
):
    return planner.decide(
        attempt,
        kind,
        status,
        method,
        has_idempotency_key=key,
        body_replayable=replayable,
        retry_after=retry_after,
        time_left=time_left,
    )


@pytest.fixture
def planner() -> RetryPlanner:
    return RetryPlanner(POLICY, rand=middle)


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [(CONNECT_FAILURE, 0, "connect-failure"), (TIMEOUT, 0, "timeout"), (STATUS, 502, "status")],
)
def test_retryable_outcomes_retry_with_the_backoff_delay(planner, kind, status, reason):
    decision = decide(planner, 1, kind, status)
    assert (decision.retry, decision.reason) == (True, reason)
    assert decision.delay == pytest.approx(0.1)
    assert decide(planner, 2, kind, status).delay == pytest.approx(0.2)


@pytest.mark.parametrize(("kind", "status"), [(STATUS, 200), (STATUS, 500), (SUCCESS, 0)])
def test_outcomes_outside_retry_on_are_final(planner, kind, status):
    decision = decide(planner, 1, kind, status)
    assert (decision.retry, decision.reason) == (False, "not_retryable_outcome")


def test_max_attempts_counts_the_first_attempt(planner):
    assert decide(planner, 2).retry
    assert decide(planner, 3).reason == "max_attempts"
    single = RetryPlanner(RetryPolicy(max_attempts=1), rand=middle)
    assert decide(single, 1, CONNECT_FAILURE, 0).reason == "max_attempts"


def test_a_post_is_never_retried_on_503_without_an_idempotency_key(planner):
    decision = decide(planner, method="POST")
    assert (decision.retry, decision.reason) == (False, "method_not_idempotent")
    assert decide(planner, kind=TIMEOUT, status=0, method="POST").reason == (
        "method_not_idempotent"
    )


def test_a_post_is_retried_on_connect_failure(planner):
    assert decide(planner, kind=CONNECT_FAILURE, status=0, method="POST").retry


def test_a_post_with_an_idempotency_key_is_retried(planner):
    assert decide(planner, method="POST", key=True).retry


def test_a_put_is_retried_on_503(planner):
    decision = decide(planner, method="PUT")
    assert (decision.retry, decision.reason) == (True, "status")


def test_policy_methods_are_case_insensitive():
    planner = RetryPlanner(RetryPolicy(methods=("get",)), rand=middle)
    assert decide(planner, method="GET").retry


def test_a_streamed_body_is_not_sent_twice(planner):
    decision = decide(planner, method="PUT", replayable=False)
    assert (decision.retry, decision.reason) == (False, "body_not_replayable")
    assert decide(planner, kind=CONNECT_FAILURE, status=0, replayable=False).retry


def test_retry_after_replaces_the_backoff_and_is_only_jittered_up():
    at_low = RetryPlanner(POLICY, rand=low)
    at_high = RetryPlanner(POLICY, rand=high)
    assert decide(at_low, retry_after=1.0).delay == pytest.approx(1.0)
    assert decide(at_high, retry_after=1.0).delay == pytest.approx(1.25)
    assert decide(at_low, retry_after=0.0).delay == 0.0


def test_retry_after_jitter_never_passes_max_delay():
    decision = decide(RetryPlanner(POLICY, rand=high), retry_after=1.9)
    assert decision.delay == pytest.approx(2.0)


def test_retry_after_up_to_max_delay_is_honoured(planner):
    decision = decide(planner, retry_after=2.0)
    assert decision.retry
    assert decision.delay == pytest.approx(2.0)


def test_retry_after_past_max_delay_ends_the_retries(planner):
    decision = decide(planner, retry_after=2.5)
    assert (decision.retry, decision.reason) == (False, "retry_after_too_long")


def test_a_wait_that_reaches_the_deadline_is_not_made(planner):
    assert decide(planner, time_left=0.11).retry
    assert decide(planner, time_left=0.1).reason == "deadline"
    assert decide(planner, time_left=0.0).reason == "deadline"
    assert decide(planner, retry_after=1.0, time_left=0.5).reason == "deadline"
