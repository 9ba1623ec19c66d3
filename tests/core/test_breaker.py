import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.model import CircuitBreakerPolicy
from proxy.clock import FakeClock
from proxy.core.breaker import (
    CLOSED,
    FORCED_CLOSED,
    FORCED_OPEN,
    HALF_OPEN,
    HALF_OPEN_RETRY_AFTER_S,
    OPEN,
    CircuitBreaker,
    Permit,
    iso_utc,
)
from proxy.core.events import BreakerTransition
from proxy.core.outcomes import CONNECT_FAILURE, STATUS, TIMEOUT

WALL_START = 1_700_000_000.0


def policy(**overrides) -> CircuitBreakerPolicy:
    base = {
        "failure_threshold": 3,
        "recovery_timeout": 10.0,
        "success_threshold": 2,
        "half_open_max_calls": 1,
    }
    return CircuitBreakerPolicy(**{**base, **overrides})


class Harness:
    """A breaker on a fake clock that keeps every transition it emits."""

    def __init__(self, **overrides) -> None:
        self.clock = FakeClock(start=1000.0, wall_start=WALL_START)
        self.events: list[BreakerTransition] = []
        self.breaker = CircuitBreaker(
            "inventory", policy(**overrides), self.clock, self.events.append
        )

    def fail(self, times: int = 1) -> None:
        for _ in range(times):
            self.breaker.record_failure(self.breaker.allow())

    def succeed(self, times: int = 1, duration_s: float = 0.0) -> None:
        for _ in range(times):
            self.breaker.record_success(self.breaker.allow(), duration_s)

    def trip(self) -> None:
        self.fail(self.breaker.policy.failure_threshold)
        assert self.breaker.state is OPEN

    def moves(self) -> list[tuple[str, str, str]]:
        return [(e.from_state, e.to_state, e.reason) for e in self.events]


# -- closed ---------------------------------------------------------------------------------


def test_opens_at_the_failure_threshold():
    h = Harness()
    h.fail(2)
    assert h.breaker.state is CLOSED
    assert h.breaker.stats()["consecutive_failures"] == 2
    h.fail()
    assert h.breaker.state is OPEN
    assert h.moves() == [("closed", "open", "failure_threshold")]
    assert h.events[0] == BreakerTransition(
        "inventory", "closed", "open", WALL_START, "failure_threshold"
    )
    stats = h.breaker.stats()
    assert stats["opened_at"] == "2023-11-14T22:13:20.000Z"
    assert stats["retry_after_s"] == 10.0


def test_a_success_resets_the_consecutive_count():
    h = Harness()
    h.fail(2)
    h.succeed()
    assert h.breaker.stats()["consecutive_failures"] == 0
    h.fail(2)
    assert h.breaker.state is CLOSED
    h.fail()
    assert h.breaker.state is OPEN


def test_closed_permits_are_shared():
    h = Harness()
    assert h.breaker.allow() is h.breaker.allow()


# -- open -----------------------------------------------------------------------------------


def test_open_rejects_with_a_shrinking_retry_after():
    h = Harness()
    h.trip()
    first = h.breaker.allow()
    assert (first.allowed, first.probe, first.shadow_rejected) == (False, False, False)
    assert first.retry_after_s == pytest.approx(10.0)
    h.clock.advance(4.0)
    second = h.breaker.allow()
    assert second.retry_after_s == pytest.approx(6.0)
    assert h.breaker.retry_after_s == pytest.approx(6.0)
    stats = h.breaker.stats()
    assert stats["total_rejections"] == 2
    assert stats["total_calls"] == 3
    assert stats["retry_after_s"] == 6.0


def test_state_reads_half_open_as_soon_as_the_recovery_timeout_passes():
    h = Harness()
    h.trip()
    h.clock.advance(9.999)
    assert h.breaker.state is OPEN
    h.clock.advance(0.001)
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.stats()["retry_after_s"] is None
    assert h.moves() == [
        ("closed", "open", "failure_threshold"),
        ("open", "half_open", "recovery_timeout"),
    ]


def test_a_late_observed_half_open_is_dated_when_it_happened():
    h = Harness()
    h.trip()
    h.clock.advance(25.0)
    assert h.breaker.stats()["state"] == "half_open"
    assert h.events[-1].at_wall == pytest.approx(WALL_START + 10.0)


# -- half_open ------------------------------------------------------------------------------


def test_half_open_admits_only_its_probe_slots():
    h = Harness(half_open_max_calls=2)
    h.trip()
    h.clock.advance(10.0)
    first, second, third = h.breaker.allow(), h.breaker.allow(), h.breaker.allow()
    assert first.allowed and first.probe
    assert second.allowed and second.probe
    assert not third.allowed
    assert third.retry_after_s == HALF_OPEN_RETRY_AFTER_S
    assert h.breaker.stats()["half_open_in_flight"] == 2
    h.breaker.release(first)
    assert h.breaker.stats()["half_open_in_flight"] == 1
    assert h.breaker.allow().probe
    assert h.breaker.stats()["total_calls"] == 3


def test_success_threshold_probe_successes_close_it():
    h = Harness(failure_rate_threshold=0.9, minimum_calls=100)
    h.trip()
    h.clock.advance(10.0)
    h.succeed()
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.stats()["half_open_successes"] == 1
    h.succeed()
    assert h.breaker.state is CLOSED
    stats = h.breaker.stats()
    assert (stats["opened_at"], stats["consecutive_failures"], stats["window_calls"]) == (
        None,
        0,
        0,
    )
    assert h.moves()[-1] == ("half_open", "closed", "success_threshold")


def test_a_probe_failure_opens_it_again_with_a_new_timer():
    h = Harness(success_threshold=3)
    h.trip()
    h.clock.advance(12.0)
    h.succeed()
    h.fail()
    assert h.breaker.state is OPEN
    assert h.breaker.retry_after_s == pytest.approx(10.0)
    assert h.breaker.stats()["opened_at"] == iso_utc(WALL_START + 12.0)
    assert h.moves()[-1] == ("half_open", "open", "probe_failure")
    h.clock.advance(10.0)
    assert h.breaker.stats()["half_open_successes"] == 0


def test_released_probes_count_nothing():
    h = Harness()
    h.trip()
    h.clock.advance(10.0)
    before = h.breaker.stats()
    h.breaker.release(h.breaker.allow())
    after = h.breaker.stats()
    assert after["total_calls"] == before["total_calls"]
    assert after["half_open_in_flight"] == 0
    assert after["state"] == "half_open"


# -- forced states and reset ---------------------------------------------------------------


def test_force_open_rejects_until_reset_and_keeps_totals():
    h = Harness()
    h.fail(2)
    h.breaker.force_open()
    h.breaker.force_open()
    h.clock.advance(1000.0)
    assert h.breaker.state is FORCED_OPEN
    permit = h.breaker.allow()
    assert not permit.allowed
    assert permit.retry_after_s == 10.0
    assert h.breaker.retry_after_s == 10.0
    h.breaker.reset()
    stats = h.breaker.stats()
    assert stats["state"] == "closed"
    assert (stats["total_failures"], stats["total_rejections"]) == (2, 1)
    assert stats["consecutive_failures"] == 0
    assert h.moves() == [
        ("closed", "forced_open", "force_open"),
        ("forced_open", "closed", "reset"),
    ]


def test_force_close_admits_through_any_failure():
    h = Harness()
    h.breaker.force_close()
    h.fail(50)
    assert h.breaker.state is FORCED_CLOSED
    assert h.breaker.allow().allowed
    assert h.breaker.stats()["total_failures"] == 50
    h.breaker.force_open()
    assert h.moves() == [
        ("closed", "forced_closed", "force_close"),
        ("forced_closed", "forced_open", "force_open"),
    ]


def test_reset_from_open_and_a_lapsed_timer_reports_each_move():
    h = Harness()
    h.trip()
    h.clock.advance(11.0)
    h.breaker.reset()
    assert h.moves()[1:] == [
        ("open", "half_open", "recovery_timeout"),
        ("half_open", "closed", "reset"),
    ]


def test_reset_while_closed_starts_afresh_without_a_transition():
    h = Harness()
    h.fail(2)
    started_before = h.breaker.allow()
    h.breaker.reset()
    assert h.breaker.stats()["consecutive_failures"] == 0
    h.breaker.record_failure(started_before)
    h.fail(2)
    assert h.breaker.state is CLOSED
    assert h.events == []
    assert h.breaker.stats()["total_failures"] == 5


# -- shadow mode ------------------------------------------------------------------------------


def test_shadow_mode_moves_and_counts_but_never_rejects():
    h = Harness(mode="shadow")
    h.trip()
    permit = h.breaker.allow()
    assert (permit.allowed, permit.shadow_rejected) == (True, True)
    assert permit.retry_after_s == pytest.approx(10.0)
    h.breaker.record_failure(permit)
    h.clock.advance(10.0)
    assert h.breaker.state is HALF_OPEN
    probe, extra = h.breaker.allow(), h.breaker.allow()
    assert probe.probe and not probe.shadow_rejected
    assert extra.allowed and extra.shadow_rejected
    h.breaker.record_success(extra)
    h.breaker.record_success(probe)
    assert h.breaker.state is HALF_OPEN
    h.succeed()
    assert h.breaker.state is CLOSED
    h.breaker.force_open()
    assert h.breaker.allow().allowed
    stats = h.breaker.stats()
    assert stats["total_rejections"] == 0
    assert stats["total_shadow_rejections"] == 3
    assert stats["total_calls"] == 7
    assert stats["mode"] == "shadow"


def test_a_shadow_admitted_failure_while_open_does_not_restart_the_timer():
    h = Harness(mode="shadow")
    h.trip()
    h.clock.advance(6.0)
    h.fail()
    assert h.breaker.retry_after_s == pytest.approx(4.0)


# -- failure rate ------------------------------------------------------------------------------


def rate_harness() -> Harness:
    return Harness(failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=10, window=30.0)


def test_failure_rate_trips_at_the_threshold_once_minimum_calls_are_in():
    h = rate_harness()
    for _ in range(4):
        h.fail()
        h.succeed()
    h.fail()
    assert h.breaker.stats()["window_calls"] == 9
    assert h.breaker.state is CLOSED
    h.succeed()
    assert h.breaker.state is OPEN
    assert h.moves() == [("closed", "open", "failure_rate")]


def test_failure_rate_below_the_threshold_stays_closed():
    h = rate_harness()
    h.fail(4)
    h.succeed(20)
    h.fail(4)
    assert h.breaker.stats()["window_calls"] == 28
    assert h.breaker.state is CLOSED


def test_failures_leave_the_window_with_time():
    h = rate_harness()
    h.fail(9)
    h.clock.advance(30.0)
    assert h.breaker.stats()["window_failures"] == 0
    h.succeed(9)
    h.fail()
    assert h.breaker.state is CLOSED
    assert h.breaker.stats()["window_calls"] == 10


def test_a_zero_rate_threshold_does_not_open_on_successes():
    h = Harness(failure_rate_threshold=0.0, minimum_calls=2)
    h.succeed(5)
    assert h.breaker.state is CLOSED
    h.fail()
    assert h.breaker.state is OPEN


# -- slow calls ------------------------------------------------------------------------------


def test_a_slow_success_counts_as_a_failure():
    h = Harness(slow_call_duration=1.0)
    h.succeed(duration_s=1.0)
    h.succeed(2, duration_s=1.5)
    stats = h.breaker.stats()
    counts = (stats["total_successes"], stats["total_failures"], stats["total_slow_calls"])
    assert counts == (1, 2, 2)
    assert stats["consecutive_failures"] == 2
    h.succeed(duration_s=9.0)
    assert h.breaker.state is OPEN


def test_a_slow_probe_reopens():
    h = Harness(slow_call_duration=1.0)
    h.trip()
    h.clock.advance(10.0)
    h.succeed(duration_s=5.0)
    assert h.breaker.state is OPEN


# -- calls from an earlier epoch ---------------------------------------------------------------


def test_a_late_failure_while_open_counts_but_does_not_restart_the_timer():
    h = Harness()
    started_closed = h.breaker.allow()
    h.trip()
    h.clock.advance(7.0)
    h.breaker.record_failure(started_closed)
    assert h.breaker.retry_after_s == pytest.approx(3.0)
    stats = h.breaker.stats()
    assert stats["total_failures"] == 4
    assert stats["consecutive_failures"] == 3


def test_a_late_success_from_closed_does_not_close_half_open():
    h = Harness(success_threshold=1)
    started_closed = h.breaker.allow()
    h.trip()
    h.clock.advance(10.0)
    probe = h.breaker.allow()
    h.breaker.record_success(started_closed)
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.stats()["total_successes"] == 1
    h.breaker.record_success(probe)
    assert h.breaker.state is CLOSED


def test_a_probe_of_an_earlier_half_open_does_not_touch_the_new_slots():
    h = Harness(half_open_max_calls=3)
    h.trip()
    h.clock.advance(10.0)
    old_probe, released_probe, failing_probe = (h.breaker.allow() for _ in range(3))
    h.breaker.record_failure(failing_probe)
    h.clock.advance(10.0)
    new_probe = h.breaker.allow()
    h.breaker.record_failure(old_probe)
    h.breaker.release(released_probe)
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.stats()["half_open_in_flight"] == 1
    h.breaker.release(new_probe)
    assert h.breaker.stats()["half_open_in_flight"] == 0


def test_a_call_from_before_a_force_close_cannot_trip_after_reset():
    h = Harness(failure_threshold=1)
    started = h.breaker.allow()
    h.breaker.force_close()
    h.breaker.reset()
    h.breaker.record_failure(started)
    assert h.breaker.state is CLOSED


# -- permits misused ---------------------------------------------------------------------------


def test_settling_a_probe_twice_is_refused_and_release_after_it_is_harmless():
    h = Harness()
    h.trip()
    h.clock.advance(10.0)
    probe = h.breaker.allow()
    h.breaker.record_success(probe)
    h.breaker.release(probe)
    with pytest.raises(ValueError, match="already settled"):
        h.breaker.record_success(probe)
    assert h.breaker.stats()["half_open_successes"] == 1


def test_a_rejected_permit_has_nothing_to_record():
    h = Harness()
    h.trip()
    rejected = h.breaker.allow()
    h.breaker.release(rejected)
    with pytest.raises(ValueError, match="rejected"):
        h.breaker.record_failure(rejected)


# -- outcomes, reconfigure, stats --------------------------------------------------------------


def test_record_outcome_judges_by_failure_on():
    h = Harness(failure_on=("timeout", "503"))
    for kind, status in ((CONNECT_FAILURE, 0), (STATUS, 500), (STATUS, 200)):
        h.breaker.record_outcome(h.breaker.allow(), kind, status, 0.1)
    h.breaker.record_outcome(h.breaker.allow(), TIMEOUT, 0, 0.1)
    h.breaker.record_outcome(h.breaker.allow(), STATUS, 503, 0.1)
    stats = h.breaker.stats()
    assert (stats["total_successes"], stats["total_failures"]) == (3, 2)


def test_reconfigure_keeps_state_and_totals_and_applies_new_limits():
    h = Harness()
    h.trip()
    h.clock.advance(4.0)
    h.breaker.reconfigure(policy(recovery_timeout=5.0, failure_threshold=1))
    assert h.breaker.state is OPEN
    assert h.breaker.retry_after_s == pytest.approx(1.0)
    assert h.breaker.stats()["total_failures"] == 3
    h.clock.advance(1.0)
    h.succeed(2)
    assert h.breaker.state is CLOSED
    h.fail()
    assert h.breaker.state is OPEN
    h.breaker.reconfigure(policy(mode="shadow"))
    assert h.breaker.allow().shadow_rejected


def test_reconfigure_keeps_the_window_unless_its_length_changes():
    h = rate_harness()
    h.fail(3)
    h.breaker.reconfigure(policy(failure_threshold=100, failure_rate_threshold=0.9, window=30.0))
    assert h.breaker.stats()["window_failures"] == 3
    h.breaker.reconfigure(policy(failure_threshold=100, window=60.0))
    assert h.breaker.stats()["window_failures"] == 0


def test_stats_hold_the_contract_keys():
    h = Harness()
    h.succeed(3)
    h.fail()
    stats = h.breaker.stats()
    assert {
        "state",
        "total_calls",
        "total_failures",
        "total_successes",
        "failure_rate",
        "total_rejections",
        "consecutive_failures",
        "opened_at",
        "retry_after_s",
    } <= stats.keys()
    assert stats["failure_rate"] == 0.25
    assert (stats["name"], stats["failure_threshold"], stats["recovery_timeout_s"]) == (
        "inventory",
        3,
        10.0,
    )
    assert Harness().breaker.stats()["failure_rate"] == 0.0


def test_a_breaker_without_subscribers_still_moves():
    breaker = CircuitBreaker("redis", policy(failure_threshold=1), FakeClock())
    breaker.record_failure(breaker.allow())
    assert breaker.state is OPEN


# -- invariants under any sequence -------------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                *("allow", "allow", "success", "failure", "slow", "release", "advance"),
                *("force_open", "force_close", "reset"),
            ]
        ),
        st.integers(min_value=0, max_value=50),
        st.floats(min_value=0, max_value=15),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=OPERATIONS,
    max_calls=st.integers(min_value=1, max_value=3),
    success_threshold=st.integers(min_value=1, max_value=3),
    failure_threshold=st.integers(min_value=1, max_value=4),
    rate=st.none() | st.floats(min_value=0.1, max_value=1.0),
    shadow=st.booleans(),
)
def test_invariants_hold_under_any_sequence(
    ops, max_calls, success_threshold, failure_threshold, rate, shadow
):
    clock = FakeClock()
    generation = [0]
    breaker = CircuitBreaker(
        "b",
        policy(
            half_open_max_calls=max_calls,
            success_threshold=success_threshold,
            failure_threshold=failure_threshold,
            failure_rate_threshold=rate,
            minimum_calls=3,
            window=20.0,
            slow_call_duration=1.0,
            mode="shadow" if shadow else "enforce",
        ),
        clock,
        lambda _event: generation.__setitem__(0, generation[0] + 1),
    )
    outstanding: list[tuple[Permit, int]] = []
    successes = failures = rejections = 0
    for name, index, seconds in ops:
        if name == "allow":
            permit = breaker.allow()
            if permit.allowed:
                outstanding.append((permit, generation[0]))
            else:
                rejections += 1
                assert not shadow
                assert permit.retry_after_s is not None and permit.retry_after_s > 0
        elif name == "advance":
            clock.advance(seconds)
        elif name in ("force_open", "force_close", "reset"):
            if index % 5 == 0:
                getattr(breaker, name)()
        elif outstanding:
            permit, _ = outstanding.pop(index % len(outstanding))
            if name == "success":
                breaker.record_success(permit, 0.5)
                successes += 1
            elif name == "slow":
                breaker.record_success(permit, 2.0)
                failures += 1
            elif name == "failure":
                breaker.record_failure(permit)
                failures += 1
            else:
                breaker.release(permit)

        stats = breaker.stats()
        assert stats["total_calls"] == successes + failures
        assert (stats["total_successes"], stats["total_failures"]) == (successes, failures)
        assert 0.0 <= stats["failure_rate"] <= 1.0
        assert stats["total_rejections"] == rejections
        if stats["state"] == "half_open":
            live_probes = sum(1 for p, g in outstanding if p.probe and g == generation[0])
            assert stats["half_open_in_flight"] == live_probes <= max_calls
        else:
            assert stats["half_open_in_flight"] == 0
        if stats["state"] == "open":
            assert 0 <= stats["retry_after_s"] <= 10.0


# -- health probe (CONTRACT 14) ---------------------------------------------------------------


def test_a_successful_health_probe_moves_open_to_half_open_before_the_timeout():
    h = Harness()
    h.trip()
    h.clock.advance(2.0)
    ticket = h.breaker.probe_ticket()
    assert ticket is not None
    h.breaker.probe_succeeded(ticket)
    assert h.breaker.state is HALF_OPEN
    assert h.moves()[-1] == ("open", "half_open", "health_probe")
    assert h.breaker.probe_ticket() is None  # nothing left to probe
    h.succeed(2)  # real calls close it, as after the timeout
    assert h.breaker.state is CLOSED


def test_a_failed_probe_leaves_the_open_timer_alone():
    h = Harness()
    h.trip()
    h.clock.advance(4.0)
    assert h.breaker.probe_ticket() is not None  # asked, and never answered with a success
    assert h.breaker.state is OPEN
    assert h.breaker.retry_after_s == pytest.approx(6.0)


@pytest.mark.parametrize("move", ["force_open", "force_close", "reset", "half_open_and_back"])
def test_a_probe_that_outlived_its_open_state_changes_nothing(move):
    h = Harness()
    h.trip()
    ticket = h.breaker.probe_ticket()
    assert ticket is not None
    if move == "half_open_and_back":
        h.clock.advance(10.0)
        h.fail()  # the half_open probe call fails: open again, a new epoch
        assert h.breaker.state is OPEN
    else:
        getattr(h.breaker, move)()
    before = h.breaker.state
    h.breaker.probe_succeeded(ticket)
    assert h.breaker.state is before


@pytest.mark.parametrize("state", ["closed", "half_open", "forced_open", "forced_closed"])
def test_only_an_open_breaker_is_probed(state):
    h = Harness()
    if state == "half_open":
        h.trip()
        h.clock.advance(10.0)
    elif state == "forced_open":
        h.breaker.force_open()
    elif state == "forced_closed":
        h.breaker.force_close()
    assert h.breaker.state.value == state
    assert h.breaker.probe_ticket() is None
