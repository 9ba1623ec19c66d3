"""Sliding-window arithmetic with explicit times, and its two defining properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.window import (
    ADMIT_ALL,
    LimitCheck,
    RuleResult,
    SlidingLog,
    conclude,
    decide,
    most_restrictive,
)


def rule(name: str = "r", limit: int = 3, window_s: float = 60.0, shadow: bool = False):
    return LimitCheck(name, "k", limit, window_s, shadow)


def entries(*checks: LimitCheck) -> tuple[list[LimitCheck], list[SlidingLog]]:
    """The checks and one fresh log for each, as `decide` takes them."""
    return list(checks), [SlidingLog(c.limit, c.window_s) for c in checks]


def test_log_counts_only_the_window_and_drops_the_boundary():
    log = SlidingLog(limit=2, window_s=10.0)
    log.admit(0.0)
    log.admit(1.0)
    assert (log.check(5.0), log.oldest()) == (2, 0.0)
    assert (log.check(10.0), log.oldest()) == (1, 1.0)  # exactly one window old has left
    assert (log.check(11.0), log.oldest()) == (0, None)


def test_log_keeps_only_the_newest_limit_timestamps():
    log = SlidingLog(limit=2, window_s=10.0)
    for t in (1.0, 2.0, 3.0):
        log.admit(t)
    assert list(log.times) == [2.0, 3.0]


def test_log_is_idle_once_its_newest_timestamp_left_the_window():
    log = SlidingLog(limit=2, window_s=10.0)
    assert log.idle(0.0)
    log.admit(5.0)
    assert not log.idle(14.9)
    assert log.idle(15.0)


def test_reconfigure_keeps_the_newest_timestamps_that_fit():
    log = SlidingLog(limit=3, window_s=10.0)
    for t in (1.0, 2.0, 3.0):
        log.admit(t)
    log.reconfigure(2, 5.0)
    assert (log.limit, log.window_s, list(log.times)) == (2, 5.0, [2.0, 3.0])
    assert (log.check(7.0), log.oldest()) == (1, 3.0)


def test_single_rule_remaining_and_reset_follow_the_oldest_admission():
    pair = entries(rule(limit=3, window_s=60.0))
    seen = []
    for t in (0.0, 10.0, 20.0):
        d = decide(*pair, t)
        assert d.allowed and d.blocking_rule is None and d.retry_after_s == 0.0
        seen.append((d.results[0].remaining, d.results[0].reset_after_s))
    assert seen == [(2, 60.0), (1, 50.0), (0, 40.0)]

    refused = decide(*pair, 30.0)
    assert not refused.allowed
    assert refused.blocking_rule == "r"
    assert refused.retry_after_s == 30.0
    assert refused.results[0] == RuleResult("r", False, False, 3, 60.0, 0, 30.0)

    again = decide(*pair, 60.0)  # the admission at 0 has left the window
    assert again.allowed
    assert (again.results[0].remaining, again.results[0].reset_after_s) == (0, 10.0)


def test_rejection_by_one_rule_records_nothing_in_the_others():
    tight, loose = rule("tight", limit=1), rule("loose", limit=5)
    pair = entries(tight, loose)
    assert decide(*pair, 0.0).allowed
    refused = decide(*pair, 1.0)
    assert not refused.allowed and refused.blocking_rule == "tight"
    assert list(pair[1][1].times) == [0.0]
    assert refused.results[1] == RuleResult("loose", True, False, 5, 60.0, 4, 59.0)


def test_shadow_rule_never_blocks_and_counts_real_traffic():
    pair = entries(rule("enforced", limit=10), rule("shadow", limit=2, shadow=True))
    outcomes = [decide(*pair, float(t)).results[1].outcome for t in range(4)]
    assert outcomes == ["allowed", "allowed", "shadow_limited", "shadow_limited"]
    assert list(pair[1][1].times) == [2.0, 3.0]  # bounded at the limit, newest kept
    assert len(pair[1][0].times) == 4
    last = decide(*pair, 4.0)
    assert last.allowed and last.results[1].remaining == 0


def test_blocking_rule_is_the_refusing_rule_with_the_longest_wait():
    pair = entries(rule("short", limit=1, window_s=10.0), rule("long", limit=1, window_s=60.0))
    decide(*pair, 0.0)
    refused = decide(*pair, 5.0)
    assert (refused.blocking_rule, refused.retry_after_s) == ("long", 55.0)


def test_outcome_labels():
    base = RuleResult("r", True, False, 1, 1.0, 0, 0.0)
    assert base.outcome == "allowed"
    assert RuleResult("r", False, False, 1, 1.0, 0, 1.0).outcome == "limited"
    assert RuleResult("r", False, True, 1, 1.0, 0, 1.0).outcome == "shadow_limited"


def test_most_restrictive_is_fewest_remaining_then_lower_limit():
    a = RuleResult("a", True, False, 100, 60.0, 5, 1.0)
    b = RuleResult("b", True, False, 10, 60.0, 5, 1.0)
    c = RuleResult("c", True, False, 50, 60.0, 7, 1.0)
    assert most_restrictive((c, a, b)) is b
    assert most_restrictive(()) is None


def test_conclude_reads_an_empty_rule_as_nothing_to_free():
    d = conclude([rule(limit=2)], [0], [None], False, 100.0)
    assert d.results[0].reset_after_s == 0.0 and d.results[0].remaining == 2


def test_decide_without_rules_admits():
    assert decide([], [], 0.0) == ADMIT_ALL


# Times are multiples of 1/64 s so every sum and difference below is exact in floating point.
ticks = st.lists(st.integers(0, 64 * 100), min_size=1, max_size=150).map(sorted)


def run(times: list[float], checks: list[LimitCheck]) -> list[bool]:
    pair = entries(*checks)
    return [decide(*pair, t).allowed for t in times]


@settings(max_examples=300, deadline=None)
@given(ticks, st.integers(1, 20), st.integers(1, 64 * 20))
def test_no_interval_of_the_window_admits_more_than_the_limit(raw, limit, raw_window):
    times, window = [t / 64 for t in raw], raw_window / 64
    verdicts = run(times, [rule(limit=limit, window_s=window)])
    admitted = [t for t, ok in zip(times, verdicts, strict=True) if ok]
    for start in admitted:
        assert sum(start <= t < start + window for t in admitted) <= limit


@settings(max_examples=300, deadline=None)
@given(ticks, st.integers(1, 20), st.integers(1, 64 * 20))
def test_never_refused_while_under_the_limit(raw, limit, raw_window):
    times, window = [t / 64 for t in raw], raw_window / 64
    verdicts = run(times, [rule(limit=limit, window_s=window)])
    admitted: list[float] = []
    for t, ok in zip(times, verdicts, strict=True):
        in_window = sum(t - window < a <= t for a in admitted)
        assert ok == (in_window < limit)
        if ok:
            admitted.append(t)


@settings(max_examples=200, deadline=None)
@given(ticks, st.integers(1, 10), st.integers(1, 10), st.integers(1, 64 * 20))
def test_two_rules_count_only_requests_admitted_by_both(raw, limit_a, limit_b, raw_window):
    """A refused request recorded in either rule would make a later verdict disagree."""
    times, window = [t / 64 for t in raw], raw_window / 64
    a = rule("a", limit=limit_a, window_s=window)
    b = rule("b", limit=limit_b, window_s=window * 2)
    verdicts = run(times, [a, b])
    admitted: list[float] = []
    for t, ok in zip(times, verdicts, strict=True):
        in_a = sum(t - a.window_s < x <= t for x in admitted)
        in_b = sum(t - b.window_s < x <= t for x in admitted)
        assert ok == (in_a < limit_a and in_b < limit_b)
        if ok:
            admitted.append(t)
